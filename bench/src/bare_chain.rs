//! The bare baseline: the same number of JetStream hops as an order's
//! critical path, with no logic in between. It is the physical limit our
//! pipeline is compared with: whatever the services add on top (decoding,
//! tracing, KV guards, the event store, SMTP) shows as the distance between
//! the two.
//!
//! The chain has `stages` streams (`BARE_1` … `BARE_4`, capturing
//! `bare.s1.>` … `bare.s4.>`) on the stack's own nats-server, configured like
//! the services' streams (file storage, two-minute duplicate window). The
//! driver publishes each item to `bare.s1.<n>`; for every stream but the last
//! a relay runs a durable pull consumer that, per message, publishes it to the
//! next stage, awaits the publish ack, then acks, exactly what a service does
//! minus the work. The driver sees an item arrive by a core-NATS subscription
//! to the last stage's subjects, so four stages mean four stored publishes
//! and three consume-publish-ack cycles: the path from `OrderPlaced` through
//! payment and shipping to the email service's `EmailSent`.
//!
//! Messages look like the real ones: an `OrderPlaced` JSON payload with the
//! CloudEvents headers, `Nats-Msg-Id` and a `traceparent`, so the broker
//! stores, deduplicates and copies the same bytes.
//!
//! Two ways to drive it, like the load generator: at most `in_flight` items
//! in the chain at once (closed loop, for the maximum rate), or a fixed rate
//! with each latency counted from the item's scheduled send time (open loop).

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, stream};
use events::{Envelope, Event, LineItem, OrderId, OrderPlaced};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::report::{self, Latency, LatencySummary, Table};

/// The header JetStream deduplicates on.
const MSG_ID: &str = events::headers::MSG_ID;

/// How the chain is built and driven.
#[derive(Debug, Clone)]
pub struct Options {
    /// Items to push through the chain.
    pub items: u64,
    /// Streams in the chain; the relays are one fewer.
    pub stages: usize,
    /// Messages a relay pulls per batch.
    pub batch: usize,
    /// Messages a relay works on at once (the services use 32).
    pub concurrency: usize,
    /// Closed loop: the most items in the chain at once.
    pub in_flight: usize,
    /// Open loop: items per second; `None` runs the closed loop.
    pub rate: Option<f64>,
    /// How long to wait for every item to arrive.
    pub timeout: Duration,
}

/// What one run of the chain measured.
#[derive(Debug, Clone, Serialize)]
pub struct BareResult {
    pub items: u64,
    pub stages: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub in_flight: Option<usize>,
    pub target_rate: Option<f64>,
    pub payload_bytes: usize,
    /// The size of the headers on the wire (`NATS/1.0` line included).
    pub header_bytes: usize,
    /// Items that reached the last stage.
    pub completed: u64,
    /// Publishes the broker did not acknowledge (driver and relays).
    pub publish_failures: u64,
    /// From the first publish to the last arrival.
    pub elapsed_secs: f64,
    pub items_per_s: f64,
    pub latency: LatencySummary,
}

impl BareResult {
    pub fn print(&self, title: &str) {
        let how = match self.target_rate {
            Some(rate) => format!("open loop, {rate:.1} items/s"),
            None => format!(
                "closed loop, {} in flight",
                self.in_flight.unwrap_or_default()
            ),
        };
        let mut table = Table::new(title, &["", "value"]);
        table
            .row(vec!["mode".into(), how])
            .row(vec![
                "chain".into(),
                format!(
                    "{} streams, batch {}, {} at once per relay",
                    self.stages, self.batch, self.concurrency
                ),
            ])
            .row(vec![
                "message".into(),
                format!(
                    "{} B payload + {} B headers",
                    self.payload_bytes, self.header_bytes
                ),
            ])
            .row(vec![
                "completed".into(),
                format!("{} of {}", self.completed, self.items),
            ])
            .row(vec![
                "publish failures".into(),
                self.publish_failures.to_string(),
            ])
            .row(vec!["rate".into(), report::per_second(self.items_per_s)]);
        table.print();
        let mut latency = Table::new(&format!("{title}: latency"), &Table::LATENCY_HEADER);
        latency.latency_row("first publish to last stage", &self.latency);
        latency.print();
    }
}

fn stream_name(stage: usize) -> String {
    format!("BARE_{stage}")
}

fn subject(stage: usize, item: &str) -> String {
    format!("bare.s{stage}.{item}")
}

/// Builds the chain, pushes `options.items` through it, tears it down.
pub async fn run(nats_url: &str, options: &Options) -> anyhow::Result<BareResult> {
    anyhow::ensure!(options.stages >= 2, "a chain needs at least two stages");
    let client = crate::nats::connect(nats_url, "bench-bare-driver").await?;
    let js = jetstream::new(client.clone());
    // Every run starts from empty streams, so nothing from an earlier run
    // arrives in this one.
    for stage in 1..=options.stages {
        recreate_stream(&js, stage).await?;
    }

    let last = options.stages;
    let arrivals = client.subscribe(subject(last, ">")).await?;
    client.flush().await?;

    let failures = Arc::new(AtomicU64::new(0));
    let mut relays = JoinSet::new();
    for stage in 1..last {
        // One connection per relay, as each service has its own.
        let relay_client =
            crate::nats::connect(nats_url, &format!("bench-bare-relay-{stage}")).await?;
        let (options, failures) = (options.clone(), failures.clone());
        relays.spawn(relay(relay_client, stage, options, failures));
    }

    let outcome = drive(&js, arrivals, options, &failures).await;
    // Dropping the relays (aborting their tasks) is fine: the streams they
    // read are deleted next.
    relays.abort_all();
    while let Some(joined) = relays.join_next().await {
        if let Ok(Err(error)) = joined {
            eprintln!("bare chain relay failed: {error:#}");
        }
    }
    for stage in 1..=options.stages {
        // Leave the broker as we found it; a failure only leaves disk used.
        let _ = js.delete_stream(stream_name(stage)).await;
    }
    outcome
}

/// Publishes the items and collects their arrivals.
async fn drive(
    js: &jetstream::Context,
    mut arrivals: async_nats::Subscriber,
    options: &Options,
    failures: &Arc<AtomicU64>,
) -> anyhow::Result<BareResult> {
    let (payload, headers) = sample_message();
    let header_bytes = wire_size(&headers);
    let items = options.items;

    // When each item was sent (or scheduled to be), as nanoseconds after
    // `base` plus one, so that zero means "not yet": lock-free, because the
    // driver writes and the collector reads them concurrently.
    let base = Instant::now();
    let starts: Arc<Vec<AtomicU64>> = Arc::new((0..items).map(|_| AtomicU64::new(0)).collect());
    // Closed loop: one permit per item allowed in the chain; the collector
    // returns a permit for every arrival.
    let window = Arc::new(Semaphore::new(options.in_flight.max(1)));

    let bar = report::progress(items, "bare chain");
    let deadline = tokio::time::Instant::now() + options.timeout;
    let collector = {
        let (starts, window, bar) = (starts.clone(), window.clone(), bar.clone());
        tokio::spawn(async move {
            let mut latency = Latency::new();
            let mut last_arrival = None;
            while latency.count() < items {
                let Ok(Some(message)) = tokio::time::timeout_at(deadline, arrivals.next()).await
                else {
                    break;
                };
                let now = Instant::now();
                let started = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| starts.get(n))
                    .map(|s| s.load(Relaxed))
                    .filter(|&nanos| nanos > 0);
                if let Some(nanos) = started {
                    let sent = base + Duration::from_nanos(nanos - 1);
                    latency.record(now.saturating_duration_since(sent));
                    last_arrival = Some(now);
                    window.add_permits(1);
                    bar.set_position(latency.count());
                }
            }
            (latency, last_arrival)
        })
    };

    let first = Instant::now();
    let mut acks = FuturesUnordered::new();
    for n in 0..items {
        let started = match options.rate {
            Some(rate) => {
                let scheduled = first + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(scheduled.into()).await;
                scheduled
            }
            None => {
                window.acquire().await?.forget();
                Instant::now()
            }
        };
        let index = usize::try_from(n)?;
        let nanos = u64::try_from(started.saturating_duration_since(base).as_nanos())?;
        starts[index].store(nanos + 1, Relaxed);
        let mut headers = headers.clone();
        headers.insert(MSG_ID, uuid::Uuid::new_v4().to_string().as_str());
        // The first await hands the message to the connection; its ack is
        // awaited alongside the next publishes, as the order service's
        // concurrent requests do.
        match js
            .publish_with_headers(subject(1, &n.to_string()), headers, payload.clone())
            .await
        {
            Ok(ack) => acks.push(ack.into_future()),
            Err(_) => {
                failures.fetch_add(1, Relaxed);
            }
        }
        // Collect the acks that are in, so the set stays small.
        while let Some(Some(ack)) = futures::FutureExt::now_or_never(acks.next()) {
            if ack.is_err() {
                failures.fetch_add(1, Relaxed);
            }
        }
    }
    while let Some(ack) = acks.next().await {
        if ack.is_err() {
            failures.fetch_add(1, Relaxed);
        }
    }

    let (latency, last_arrival) = collector.await.context("the collector task failed")?;
    bar.finish_and_clear();
    let elapsed_secs =
        last_arrival.map_or(0.0, |t| t.saturating_duration_since(first).as_secs_f64());
    let completed = latency.count();
    Ok(BareResult {
        items,
        stages: options.stages,
        batch: options.batch,
        concurrency: options.concurrency,
        in_flight: options.rate.is_none().then_some(options.in_flight),
        target_rate: options.rate,
        payload_bytes: payload.len(),
        header_bytes,
        completed,
        publish_failures: failures.load(Relaxed),
        elapsed_secs,
        items_per_s: if elapsed_secs > 0.0 {
            completed as f64 / elapsed_secs
        } else {
            0.0
        },
        latency: latency.summary(),
    })
}

/// One relay: consumes a stage, forwards each message to the next one.
async fn relay(
    client: async_nats::Client,
    stage: usize,
    options: Options,
    failures: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let js = jetstream::new(client);
    let stream = js.get_stream(stream_name(stage)).await?;
    let durable = format!("bare-stage-{stage}");
    // The services' consumer settings (platform::consumer), minus the
    // redelivery back-off, which never comes into play here.
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: 8,
        max_ack_pending: i64::try_from(options.concurrency.saturating_mul(4))?,
        ..Default::default()
    };
    let consumer: PullConsumer = stream.get_or_create_consumer(&durable, config).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(options.batch.max(1))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        // A free slot first, then a message, as the services do: nothing is
        // pulled that cannot be worked on straight away.
        let permit = permits.clone().acquire_owned().await?;
        let message = messages
            .next()
            .await
            .context("the message stream ended")??;
        let (js, failures) = (js.clone(), failures.clone());
        tasks.spawn(async move {
            if forward(&js, stage, message).await.is_err() {
                // Left unacked: the broker redelivers it after `ack_wait`.
                failures.fetch_add(1, Relaxed);
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
}

/// Publishes a message to the next stage, waits until the broker stored it,
/// then acks it on this stage.
async fn forward(
    js: &jetstream::Context,
    stage: usize,
    message: jetstream::Message,
) -> anyhow::Result<()> {
    let item = message
        .subject
        .rsplit('.')
        .next()
        .context("subject without item")?
        .to_owned();
    let mut headers = message.headers.clone().unwrap_or_default();
    // A fresh id per hop, as every event the services publish has its own.
    headers.insert(MSG_ID, uuid::Uuid::new_v4().to_string().as_str());
    // The first await sends, the second awaits the broker's ack.
    js.publish_with_headers(subject(stage + 1, &item), headers, message.payload.clone())
        .await?
        .await?;
    message
        .ack()
        .await
        .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    Ok(())
}

/// Deletes the stage's stream if it exists and creates it afresh, configured
/// like the services' streams (`platform::bus::Bus::ensure_stream`).
async fn recreate_stream(js: &jetstream::Context, stage: usize) -> anyhow::Result<()> {
    let name = stream_name(stage);
    // Absent on a fresh broker, which is fine.
    let _ = js.delete_stream(&name).await;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject(stage, ">")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create stream {name}"))?;
    Ok(())
}

/// A message like the order service's `OrderPlaced`: the same JSON payload
/// (one line item) and the same headers, with a `traceparent` as the
/// services' tracing adds.
fn sample_message() -> (bytes::Bytes, HeaderMap) {
    let event = Event::OrderPlaced(OrderPlaced {
        order_id: OrderId::new(),
        customer_email: "bench+1000000@example.com".into(),
        items: vec![LineItem {
            sku: "book".into(),
            quantity: 1,
            unit_price_cents: 1500,
        }],
        total_cents: 1500,
        payment_token: "tok_visa".into(),
        placed_at: time::OffsetDateTime::now_utc(),
    });
    let mut headers = HeaderMap::new();
    for (name, value) in Envelope::new(&event).to_headers() {
        headers.insert(name, value.as_str());
    }
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    (event.to_json().into(), headers)
}

/// The bytes the headers take on the wire: the `NATS/1.0` line, one
/// `name: value` line each, and the blank line.
fn wire_size(headers: &HeaderMap) -> usize {
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            values
                .iter()
                .map(|v| AsRef::<str>::as_ref(name).len() + 2 + v.as_str().len() + 2)
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}
