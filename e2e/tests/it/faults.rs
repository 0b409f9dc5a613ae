//! The fault matrix: a service or the broker goes down in the middle of a
//! burst of orders, and afterwards nothing is lost and nothing is doubled.
//!
//! Every cell places a burst of orders the way a careful client does (each
//! order with its own `Idempotency-Key`, retried until the API answers 202),
//! breaks something while the burst runs, heals it, and then checks through
//! the public doors that
//! - every accepted order reached its final status;
//! - JetStream holds each fact exactly once: one `OrderPlaced`, one payment
//!   outcome, at most one shipment, no subject stored twice;
//! - Mailpit holds exactly the right two emails per order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::wait_for;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, subject_counts};

/// Orders per cell, as the issue asks.
const BURST: usize = 200;
/// Clients posting at once.
const CLIENTS: usize = 16;
/// How long the whole system may take to settle after the fault is healed.
const SETTLE: Duration = Duration::from_secs(180);

/// A burst of orders in flight.
struct Burst {
    /// `(order id, declined?)` of every order the API accepted with a 202.
    accepted: Arc<Mutex<Vec<(String, bool)>>>,
    clients: tokio::task::JoinSet<()>,
}

impl Burst {
    /// Starts posting `BURST` orders; every tenth uses a declined card.
    fn start(app: &TestApp) -> Self {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            let (accepted, next) = (accepted.clone(), next.clone());
            let http = app.http.clone();
            let url = format!("{}/orders", app.stack.order_url());
            clients.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= BURST {
                        return;
                    }
                    let declined = i % 10 == 9;
                    let order_id = place_until_accepted(&http, &url, i, declined).await;
                    if let Some(order_id) = order_id {
                        lock(&accepted).push((order_id, declined));
                    }
                }
            });
        }
        Self { accepted, clients }
    }

    fn accepted_count(&self) -> usize {
        lock(&self.accepted).len()
    }

    /// Waits until at least `n` orders were accepted.
    async fn wait_accepted(&self, n: usize) {
        wait_for(
            &format!("{n} accepted orders"),
            Duration::from_secs(60),
            || async { (self.accepted_count() >= n).then_some(()) },
        )
        .await
        .expect("the burst makes progress");
    }

    /// Waits for every client to finish and returns the accepted orders.
    async fn finish(mut self) -> Vec<(String, bool)> {
        while self.clients.join_next().await.is_some() {}
        let accepted = lock(&self.accepted).clone();
        assert_eq!(accepted.len(), BURST, "every order was accepted in the end");
        accepted
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Posts one order until the API accepts it, the way a client that must not
/// lose or double an order does: the same `Idempotency-Key` on every try, and
/// a short pause after a 503 or a dropped connection.
async fn place_until_accepted(
    http: &reqwest::Client,
    url: &str,
    i: usize,
    declined: bool,
) -> Option<String> {
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "customer_email": format!("burst-{i}@example.com"),
        "items": [{"sku": format!("sku-{i}"), "quantity": 1, "unit_price_cents": 1000 + i}],
        "payment_token": if declined { "tok_chargeDeclined" } else { "tok_visa" },
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(body.to_string())
            .send()
            .await;
        if let Ok(response) = response {
            let status = response.status();
            if status == 202 {
                let answer: Value = response.json().await.ok()?;
                return answer["order_id"].as_str().map(str::to_owned);
            }
            assert!(
                status == 503,
                "only 503 may refuse a valid order, got {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        // Client-side back-off between retries, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Every email Mailpit holds, as subjects.
async fn all_email_subjects(app: &TestApp) -> Vec<String> {
    let url = format!("{}/api/v1/messages", app.stack.mailpit_url());
    let Ok(response) = app.http.get(url).query(&[("limit", "100000")]).send().await else {
        return Vec::new();
    };
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["Subject"].as_str().map(str::to_owned))
        .collect()
}

/// The email service's durable consumer of order events, as JetStream holds it.
async fn email_order_consumer(app: &TestApp) -> async_nats::jetstream::consumer::PullConsumer {
    let client = app.stack.connect_admin().await.expect("connect");
    async_nats::jetstream::new(client)
        .get_stream("ORDERS")
        .await
        .expect("ORDERS")
        .get_consumer("email-on-order-events")
        .await
        .expect("email's durable consumer exists")
}

/// The check every cell ends with: 0 lost, 0 doubled.
async fn assert_nothing_lost_or_doubled(app: &TestApp, accepted: &[(String, bool)]) {
    // 1. Every accepted order reaches its final status.
    let pending = Mutex::new(accepted.to_vec());
    let result = wait_for("every order to settle", SETTLE, || {
        let pending = &pending;
        async move {
            let mut still = Vec::new();
            let unsettled = std::mem::take(&mut *lock(pending));
            for (id, declined) in unsettled {
                let want = if declined { "cancelled" } else { "shipped" };
                let view: Option<Value> = app.get(&format!("/orders/{id}")).await.json().await.ok();
                if view.is_none_or(|v| v["status"] != want) {
                    still.push((id, declined));
                }
            }
            let done = still.is_empty();
            *lock(pending) = still;
            done.then_some(())
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "orders never settled: {:?}\n{}",
        lock(&pending),
        app.stack.log_tail("order")
    );

    // 2. JetStream holds each fact once.
    let client = app.stack.connect_admin().await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let emails = wait_for("an EmailSent pair for every order", SETTLE, || async {
        let counts = subject_counts(&js, "EMAILS", "emails.>").await;
        accepted
            .iter()
            .all(|(id, _)| counts.get(&format!("emails.{id}.sent")) == Some(&2))
            .then_some(counts)
    })
    .await;
    assert!(
        emails.is_ok(),
        "emails missing: {}",
        app.stack.log_tail("email")
    );

    let orders = subject_counts(&js, "ORDERS", "orders.>").await;
    let payments = subject_counts(&js, "PAYMENTS", "payments.>").await;
    let shipping = subject_counts(&js, "SHIPPING", "shipping.>").await;
    for (subjects, name) in [
        (&orders, "ORDERS"),
        (&payments, "PAYMENTS"),
        (&shipping, "SHIPPING"),
    ] {
        let doubled: Vec<_> = subjects.iter().filter(|(_, n)| **n != 1).collect();
        assert!(doubled.is_empty(), "{name} holds facts twice: {doubled:?}");
    }
    for (id, declined) in accepted {
        let has = |map: &BTreeMap<String, usize>, subject: String| map.contains_key(&subject);
        assert!(has(&orders, format!("orders.{id}.placed")), "{id} placed");
        let outcomes = ["processed", "failed"]
            .iter()
            .filter(|v| has(&payments, format!("payments.{id}.{v}")))
            .count();
        assert_eq!(outcomes, 1, "{id}: exactly one payment outcome");
        assert_eq!(
            has(&payments, format!("payments.{id}.failed")),
            *declined,
            "{id}"
        );
        assert_eq!(
            has(&shipping, format!("shipping.{id}.shipped")),
            !declined,
            "{id}"
        );
        assert_eq!(
            has(&orders, format!("orders.{id}.cancelled")),
            *declined,
            "{id}"
        );
        assert_eq!(
            has(&orders, format!("orders.{id}.fulfilled")),
            !declined,
            "{id}"
        );
    }

    // 3. Mailpit holds exactly the right two emails per order.
    let expected = accepted.len() * 2;
    let subjects = wait_for(&format!("{expected} emails"), SETTLE, || async {
        let subjects = all_email_subjects(app).await;
        (subjects.len() >= expected).then_some(subjects)
    })
    .await
    .expect("every email arrives");
    assert_eq!(subjects.len(), expected, "no email twice");
    let mut per_order: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for subject in &subjects {
        let words: Vec<&str> = subject.split(' ').collect();
        if let [_, id, what] = words[..] {
            per_order.entry(id).or_default().push(what);
        }
    }
    for (id, declined) in accepted {
        let mut kinds = per_order.remove(id.as_str()).unwrap_or_default();
        kinds.sort_unstable();
        let last = if *declined { "cancelled" } else { "shipped" };
        let mut want = vec!["confirmed", last];
        want.sort_unstable();
        assert_eq!(kinds, want, "emails of {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn email_down_during_the_burst_catches_up_after() {
    let mut app = spawn_app().await;
    app.stack.kill("email").await.expect("email stops");

    let accepted = Burst::start(&app).finish().await;
    // The broker holds the email events meanwhile.
    // The durable consumer outlives its service.
    let consumer = email_order_consumer(&app).await;
    let pending = wait_for("pending email events", Duration::from_secs(30), || async {
        let info = consumer.get_info().await.ok()?;
        (info.num_pending as usize >= BURST).then_some(info.num_pending)
    })
    .await
    .expect("the backlog is held by the broker");
    assert!(pending as usize >= BURST);

    app.stack
        .start_service("email")
        .await
        .expect("email restarts");
    assert_nothing_lost_or_doubled(&app, &accepted).await;
}

/// Kills `service` with SIGKILL a third into the burst, restarts it two
/// thirds in, and checks the outcome.
async fn crash_mid_burst(service: &str) {
    let mut app = spawn_app().await;
    let burst = Burst::start(&app);
    burst.wait_accepted(BURST / 3).await;
    app.stack.kill(service).await.expect("killed");
    if service != "order" {
        // Orders keep coming in while the service is down.
        burst.wait_accepted(2 * BURST / 3).await;
    }
    app.stack.start_service(service).await.expect("restarted");
    app.stack.wait_ready(service).await.expect("ready again");
    let accepted = burst.finish().await;
    assert_nothing_lost_or_doubled(&app, &accepted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_crash_mid_burst() {
    crash_mid_burst("payment").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shipping_crash_mid_burst() {
    crash_mid_burst("shipping").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn order_crash_mid_burst() {
    crash_mid_burst("order").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_email_past_ack_wait_sends_each_email_once() {
    let app = spawn_app().await;
    let burst = Burst::start(&app);
    burst.wait_accepted(BURST / 4).await;
    // SIGSTOP freezes email with messages in hand. Past ack_wait the broker
    // redelivers them, so when it thaws, redeliveries arrive while the first
    // handlings still run.
    app.stack.signal("email", Signal::SIGSTOP).expect("frozen");
    let accepted = burst.finish().await;
    let frozen_for = platform::consumer::ACK_WAIT + Duration::from_secs(3);
    let consumer = email_order_consumer(&app).await;
    let started = tokio::time::Instant::now();
    // Wait until the broker has given up on the frozen deliveries and
    // redelivered at least one (redelivered count > 0), or ack_wait passed.
    let _ = wait_for(
        "a redelivery",
        frozen_for + Duration::from_secs(10),
        || async {
            let info = consumer.get_info().await.ok()?;
            (info.num_redelivered > 0 && started.elapsed() >= frozen_for).then_some(())
        },
    )
    .await;
    app.stack.signal("email", Signal::SIGCONT).expect("thawed");
    assert_nothing_lost_or_doubled(&app, &accepted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_crash_mid_burst_loses_nothing() {
    let mut app = spawn_app().await;
    let burst = Burst::start(&app);
    burst.wait_accepted(BURST / 3).await;
    app.stack.kill("nats").await.expect("nats killed");
    app.stack
        .start_nats()
        .await
        .expect("nats restarted on the same store");
    let accepted = burst.finish().await;
    assert_nothing_lost_or_doubled(&app, &accepted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flaky_smtp_delays_emails_but_never_loses_or_doubles_them() {
    let app = spawn_app().await;
    let chaos = format!("{}/api/v1/chaos", app.stack.mailpit_url());
    let set_chaos = |probability: u32| {
        let body = json!({"Recipient": {"ErrorCode": 451, "Probability": probability}});
        app.http.put(&chaos).json(&body).send()
    };
    let response = set_chaos(50).await.expect("chaos API answers");
    assert!(response.status().is_success(), "chaos enabled");

    let burst = Burst::start(&app);
    burst.wait_accepted(BURST / 2).await;
    let accepted = burst.finish().await;
    // Failures happened and were retried: some emails are still missing.
    set_chaos(0).await.expect("chaos healed");
    assert_nothing_lost_or_doubled(&app, &accepted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_events_are_dead_lettered_and_the_flow_goes_on() {
    let app = spawn_app().await;
    let client = app.stack.connect_admin().await.expect("connect");
    let js = async_nats::jetstream::new(client);

    // Two events no consumer can handle, published by hand onto a consumed
    // subject: a known type with a broken payload, and an unknown type. The
    // second is appended the way the order service appends, with the
    // broker checking the last sequence of an aggregate's subjects: such a
    // precondition stays in the stored headers and must not be checked again
    // when the message is copied to the dead-letter stream.
    let poison = |ce_type: &str, id: &str| {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in [
            ("ce-id", uuid::Uuid::new_v4().to_string()),
            ("ce-type", ce_type.to_owned()),
            ("ce-source", "intruder".to_owned()),
            ("ce-specversion", "1.0".to_owned()),
            ("ce-time", "2026-01-01T00:00:00Z".to_owned()),
            ("ce-subject", id.to_owned()),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            ),
        ] {
            headers.insert(name, value.as_str());
        }
        headers
    };
    let broken = uuid::Uuid::new_v4().to_string();
    let unknown = uuid::Uuid::new_v4().to_string();
    let first = js
        .publish_with_headers(
            format!("orders.{broken}.placed"),
            poison("order.placed.v1", &broken),
            "{\"order_id\": 42".into(),
        )
        .await
        .expect("published")
        .await
        .expect("stored");
    let mut appended = poison("order.exploded.v9", &unknown);
    appended.insert(
        platform::bus::EXPECTED_LAST_SUBJECT_SEQUENCE,
        first.sequence.to_string().as_str(),
    );
    appended.insert(
        platform::bus::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
        format!("orders.{broken}.*").as_str(),
    );
    js.publish_with_headers(format!("orders.{unknown}.placed"), appended, "{}".into())
        .await
        .expect("published")
        .await
        .expect("stored");

    // The flow goes on.
    let email = crate::helpers::customer();
    let placed = app.place_order(&email, "tok_visa").await;
    app.wait_for_status(&placed.order_id, "shipped").await;
    app.wait_for_emails(&email, 2).await;

    // Each consumer of `orders.*.placed` dead-lettered both, with the reason.
    let letters = wait_for("six dead letters", Duration::from_secs(30), || async {
        let letters = ops::list(&js).await.ok()?;
        (letters.len() >= 6).then_some(letters)
    })
    .await
    .expect("dead letters arrive");
    assert_eq!(letters.len(), 6, "{letters:#?}");
    for consumer in [
        "payment-on-order-events",
        "email-on-order-events",
        "order-projection",
    ] {
        let of = |id: &str| {
            letters
                .iter()
                .find(|l| l.consumer == consumer && l.subject == format!("orders.{id}.placed"))
                .unwrap_or_else(|| {
                    panic!("{consumer} dead-lettered orders.{id}.placed: {letters:#?}")
                })
        };
        assert!(
            of(&broken).reason.contains("is not valid"),
            "{:?}",
            of(&broken).reason
        );
        assert!(
            of(&unknown)
                .reason
                .contains("unknown event type `order.exploded.v9`")
        );
        assert_eq!(of(&unknown).deliveries, "1", "poison is not retried");
        assert!(
            of(&unknown).headers.get("traceparent").is_some(),
            "trace context travels along"
        );
        assert_eq!(
            of(&unknown).payload.as_ref(),
            b"{}",
            "the original payload is kept"
        );
    }

    // A replay goes back to the one consumer that gave up, which fails on it
    // again and says so.
    let letter = letters
        .iter()
        .find(|l| l.consumer == "payment-on-order-events" && l.subject.contains(&unknown))
        .expect("payment's letter");
    let subject = ops::replay(&js, letter).await.expect("replayed");
    assert_eq!(
        subject,
        format!("replay.payment-on-order-events.orders.{unknown}.placed")
    );
    let again = wait_for(
        "the replay to be dead-lettered again",
        Duration::from_secs(30),
        || async {
            let letters = ops::list(&js).await.ok()?;
            letters.into_iter().find(|l| l.subject == subject)
        },
    )
    .await
    .expect("the replayed letter comes back");
    assert_eq!(again.consumer, "payment-on-order-events-replay");
    // Replaying that one goes back to the same consumer, not to a replay of a replay.
    let subject = ops::replay(&js, &again).await.expect("replayed again");
    assert_eq!(
        subject,
        format!("replay.payment-on-order-events.orders.{unknown}.placed")
    );

    // A dead letter that names another service's consumer than the one that
    // published it (the headers are the publisher's word, the subject is the
    // broker's) is never replayed.
    let mut forged = again.clone();
    forged.published_by = "email".into();
    let refused = ops::replay(&js, &forged).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("refusing")));
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_answers_503_then_recovers() {
    let mut app = spawn_app().await;
    app.stack.kill("nats").await.expect("nats down");

    let response = app
        .post_order(&crate::helpers::order_body(
            &crate::helpers::customer(),
            "tok_visa",
        ))
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let readyz = format!("http://127.0.0.1:{}/readyz", app.stack.config.ports.order);
    let not_ready = wait_for(
        "order to report not ready",
        Duration::from_secs(10),
        || async {
            let response = app.http.get(&readyz).send().await.ok()?;
            (response.status() == 503).then_some(())
        },
    )
    .await;
    assert!(not_ready.is_ok(), "/readyz reports the broker outage");

    app.stack.start_nats().await.expect("nats back");
    for service in e2e::SERVICES {
        app.stack.wait_ready(service).await.expect("ready again");
    }
    let email = crate::helpers::customer();
    let placed = app.place_order(&email, "tok_visa").await;
    app.wait_for_status(&placed.order_id, "shipped").await;
    app.wait_for_emails(&email, 2).await;
}
