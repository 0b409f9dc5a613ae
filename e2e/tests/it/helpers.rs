//! Test helpers: a fresh stack per test and typed doors into it.
//!
//! Tests only use what a person uses: the REST API, Mailpit's API, Jaeger's
//! query API and JetStream's own state. Every wait is a condition with a
//! deadline ([`e2e::wait_for`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::{Stack, StackConfig, wait_for};
use serde_json::{Value, json};

/// How long an order may take to reach its final state.
pub const FLOW_DEADLINE: Duration = Duration::from_secs(30);
/// How long spans may take to reach Jaeger: the SDK batches them for up to
/// five seconds before exporting.
pub const TRACE_DEADLINE: Duration = Duration::from_secs(40);

/// A running stack for one test, with its own ports and store.
pub struct TestApp {
    pub stack: Stack,
    pub http: reqwest::Client,
    _state: tempfile::TempDir,
}

/// Starts a fresh stack with the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a fresh stack after `adjust` has changed its configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut StackConfig)) -> TestApp {
    let state = tempfile::tempdir().expect("temporary directory");
    let mut config =
        StackConfig::for_tests(state.path().to_path_buf()).expect("test configuration");
    adjust(&mut config);
    let stack = Stack::start(config).await.expect("the stack starts");
    TestApp {
        stack,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client"),
        _state: state,
    }
}

/// A unique customer address, so that a test's emails are its own.
pub fn customer() -> String {
    format!("c-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A valid order body.
pub fn order_body(email: &str, token: &str) -> Value {
    json!({
        "customer_email": email,
        "items": [
            {"sku": "book", "quantity": 2, "unit_price_cents": 1500},
            {"sku": "pen", "quantity": 1, "unit_price_cents": 250}
        ],
        "payment_token": token
    })
}

/// What `POST /orders` answered for an accepted order.
#[derive(Debug, Clone)]
pub struct Placed {
    pub order_id: String,
    pub trace_id: String,
}

/// One email as Mailpit lists it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
}

/// One span as Jaeger returns it, with its service.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub kind: String,
    pub span_id: String,
    pub trace_id: String,
    pub parent_span_id: Option<String>,
    pub attributes: BTreeMap<String, Value>,
    /// `(trace id, span id)` of each link.
    pub links: Vec<(String, String)>,
}

impl Span {
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes
            .get(key)
            .and_then(|v| v.get("stringValue"))
            .and_then(Value::as_str)
    }
}

impl TestApp {
    pub async fn post_order_raw(
        &self,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/orders", self.stack.order_url()));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
            .body(body)
            .send()
            .await
            .expect("POST /orders answered")
    }

    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.post_order_raw(Some("application/json"), body.to_string())
            .await
    }

    /// Places a valid order and checks the 202 answer.
    pub async fn place_order(&self, email: &str, token: &str) -> Placed {
        let response = self.post_order(&order_body(email, token)).await;
        assert_eq!(
            response.status(),
            202,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("a Location header");
        let body: Value = response.json().await.expect("JSON body");
        let order_id = body["order_id"].as_str().expect("order_id").to_owned();
        assert_eq!(body["status"], "placed");
        assert_eq!(location, format!("/orders/{order_id}"));
        let trace_id = body["trace_id"].as_str().expect("trace_id").to_owned();
        assert_eq!(trace_id.len(), 32, "a W3C trace id: {trace_id}");
        Placed { order_id, trace_id }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.stack.order_url()))
            .send()
            .await
            .expect("GET answered")
    }

    /// Waits until the read model shows the order in `status`.
    pub async fn wait_for_status(&self, order_id: &str, status: &str) -> Value {
        let path = format!("/orders/{order_id}");
        let result = wait_for(
            &format!("order {order_id} to be {status}"),
            FLOW_DEADLINE,
            || async {
                let response = self.get(&path).await;
                if !response.status().is_success() {
                    return None;
                }
                let view: Value = response.json().await.ok()?;
                (view["status"] == status).then_some(view)
            },
        )
        .await;
        match result {
            Ok(view) => view,
            Err(error) => {
                let last = self.get(&path).await.text().await.unwrap_or_default();
                panic!("{error:#}; last view: {last}");
            }
        }
    }

    /// Every email Mailpit holds for `address`.
    pub async fn emails_to(&self, address: &str) -> Vec<Mail> {
        let url = format!("{}/api/v1/search", self.stack.mailpit_url());
        let response = self
            .http
            .get(url)
            .query(&[
                ("query", format!("to:\"{address}\"")),
                ("limit", "1000".into()),
            ])
            .send()
            .await
            .expect("Mailpit answered");
        let body: Value = response.json().await.expect("Mailpit JSON");
        body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| Mail {
                to: m["To"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["Address"].as_str().map(str::to_owned))
                    .collect(),
                subject: m["Subject"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Waits until Mailpit holds at least `count` emails for `address`.
    pub async fn wait_for_emails(&self, address: &str, count: usize) -> Vec<Mail> {
        wait_for(
            &format!("{count} emails to {address}"),
            FLOW_DEADLINE,
            || async {
                let mails = self.emails_to(address).await;
                (mails.len() >= count).then_some(mails)
            },
        )
        .await
        .expect("the emails arrive")
    }

    /// The spans Jaeger holds for a trace (empty if it has none yet). The
    /// query names both time bounds: Jaeger's api/v3 otherwise searches a
    /// default window that can miss the trace.
    pub async fn trace(&self, trace_id: &str) -> Vec<Span> {
        let url = format!("{}/api/v3/traces/{trace_id}", self.stack.jaeger_url());
        let (start, end) = time_window();
        let Ok(response) = self
            .http
            .get(url)
            .query(&[("start_time", start), ("end_time", end)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let Ok(body) = response.json::<Value>().await else {
            return Vec::new();
        };
        parse_otlp(&body["result"])
    }

    /// Every span of every trace that `service` took part in lately.
    pub async fn traces_of(&self, service: &str) -> Vec<Span> {
        let url = format!("{}/api/v3/traces", self.stack.jaeger_url());
        let (start, end) = time_window();
        let Ok(response) = self
            .http
            .get(url)
            .query(&[
                ("query.service_name", service.to_owned()),
                ("query.start_time_min", start),
                ("query.start_time_max", end),
                ("query.num_traces", "100".to_owned()),
            ])
            .send()
            .await
        else {
            return Vec::new();
        };
        let Ok(body) = response.json::<Value>().await else {
            return Vec::new();
        };
        parse_otlp(&body["result"])
    }

    /// Waits until the trace holds a consumer span of each `consumer_groups`
    /// entry (counted: a group listed twice must appear twice), then returns
    /// every span of it.
    pub async fn wait_for_trace(&self, trace_id: &str, consumer_groups: &[&str]) -> Vec<Span> {
        let wanted = count(consumer_groups.iter().map(|g| g.to_string()));
        let result =
            wait_for(
                &format!("trace {trace_id} to be complete"),
                TRACE_DEADLINE,
                || async {
                    let spans = self.trace(trace_id).await;
                    let groups = count(spans.iter().filter(|s| s.kind == "consumer").filter_map(
                        |s| {
                            s.attr_str("messaging.consumer.group.name")
                                .map(str::to_owned)
                        },
                    ));
                    wanted
                        .iter()
                        .all(|(group, n)| groups.get(group).copied().unwrap_or(0) >= *n)
                        .then_some(spans)
                },
            )
            .await;
        match result {
            Ok(spans) => spans,
            Err(error) => {
                let spans = self.trace(trace_id).await;
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{}: {}", s.service, s.name))
                    .collect();
                panic!("{error:#}; spans so far: {names:#?}");
            }
        }
    }
}

fn count(items: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

/// From an hour ago to a minute from now, in RFC 3339.
fn time_window() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let format = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    (
        format(now - time::Duration::hours(1)),
        format(now + time::Duration::minutes(1)),
    )
}

/// Flattens OTLP JSON (`resourceSpans` → `scopeSpans` → `spans`).
fn parse_otlp(result: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource in result["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let kind = match span["kind"]
                    .as_u64()
                    .or_else(|| span["kind"].as_str().map(kind_number))
                {
                    Some(1) => "internal",
                    Some(2) => "server",
                    Some(3) => "client",
                    Some(4) => "producer",
                    Some(5) => "consumer",
                    _ => "unspecified",
                };
                let parent = span["parentSpanId"]
                    .as_str()
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned);
                spans.push(Span {
                    service: service.clone(),
                    name: span["name"].as_str().unwrap_or_default().to_owned(),
                    kind: kind.to_owned(),
                    span_id: span["spanId"].as_str().unwrap_or_default().to_owned(),
                    trace_id: span["traceId"].as_str().unwrap_or_default().to_owned(),
                    parent_span_id: parent,
                    attributes: span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| Some((a["key"].as_str()?.to_owned(), a["value"].clone())))
                        .collect(),
                    links: span["links"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| {
                            Some((
                                l["traceId"].as_str()?.to_owned(),
                                l["spanId"].as_str()?.to_owned(),
                            ))
                        })
                        .collect(),
                });
            }
        }
    }
    spans
}

fn kind_number(kind: &str) -> u64 {
    match kind {
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        _ => 0,
    }
}

/// The services that appear in a set of spans.
pub fn services(spans: &[Span]) -> BTreeSet<String> {
    spans.iter().map(|s| s.service.clone()).collect()
}

/// The types of an order's events, oldest first, from its history.
pub async fn history_types(app: &TestApp, order_id: &str) -> Vec<String> {
    let history: Value = app
        .get(&format!("/orders/{order_id}/events"))
        .await
        .json()
        .await
        .expect("history JSON");
    history["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

/// How many messages a stream holds per subject matching `filter`.
pub async fn subject_counts(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
) -> BTreeMap<String, usize> {
    use futures::StreamExt as _;
    let Ok(stream) = js.get_stream(stream).await else {
        return BTreeMap::new();
    };
    let mut counts = BTreeMap::new();
    if let Ok(mut subjects) = stream.info_with_subjects(filter).await {
        while let Some(Ok((subject, count))) = subjects.next().await {
            counts.insert(subject, count);
        }
    }
    counts
}
