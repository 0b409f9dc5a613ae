//! The durable pull-consumer loop every service runs.
//!
//! A service describes what it consumes with a [`ConsumerSpec`] and what it
//! does with a [`Handler`]; this module does the rest, the same way for all:
//!
//! 1. Create the durable consumer if it is missing (explicit ack, `ack_wait`,
//!    `max_deliver` with a back-off schedule, bounded `max_ack_pending`).
//! 2. Pull messages and hand each to a task, at most `concurrency` at a time,
//!    so memory stays flat however long the backlog is.
//! 3. For each message: open a CONSUMER span joined to the producer's trace,
//!    decode it into a typed event, call the handler, then
//!    - `Ok` → ack;
//!    - [`HandlerError::Transient`] → nak with a growing delay, until the
//!      deliveries run out;
//!    - [`HandlerError::Permanent`], an undecodable message, or the last
//!      delivery failing → publish it to the dead-letter stream with the
//!      reason, then `term` so it is never redelivered.
//! 4. If the message stream breaks (broker restart, consumer deleted), start
//!    over from step 1 after a short pause; on shutdown stop pulling and wait
//!    for in-flight handlers to finish and ack.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use events::streams::{self, StreamDef};
use events::{Envelope, Event};
use futures::StreamExt as _;
use opentelemetry::trace::TraceContextExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::bus::Bus;
use crate::config::ConsumerSpans;
use crate::health::Readiness;
use crate::telemetry;

/// How long the broker waits for an ack before redelivering. Long enough for
/// a slow SMTP server; a handler that takes longer is assumed dead.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// How many times a message is delivered before it is dead-lettered. With
/// [`nak_delay`] capped at a minute, a dependency may be down for more than
/// ten minutes before its messages go to the dead-letter stream (from where
/// `ops dead-letters replay` sends them back).
pub const MAX_DELIVER: i64 = 20;

/// Redelivery delays after an ack timeout. JetStream uses the first entry in
/// place of `ack_wait`, so it must not be shorter than a slow handling.
const ACK_TIMEOUT_BACKOFF: [Duration; 4] = [
    ACK_WAIT,
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(300),
];

/// What a service consumes.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The stream to consume from.
    pub stream: &'static StreamDef,
    /// The durable consumer's name; the broker remembers its position under
    /// this name while the service is down.
    pub durable: String,
    /// Subject filters, such as `orders.*.placed`.
    pub filter_subjects: Vec<String>,
    /// How many messages this consumer handles at once.
    pub concurrency: usize,
}

/// One decoded message, as handed to a [`Handler`].
#[derive(Debug, Clone)]
pub struct Delivery {
    pub envelope: Envelope,
    pub event: Event,
    /// The NATS subject it arrived on.
    pub subject: String,
    /// 1 on first delivery, more on redelivery.
    pub delivered: i64,
    /// Its sequence in the stream.
    pub stream_sequence: u64,
    /// For an event appended to an aggregate with optimistic concurrency
    /// ([`crate::Bus::append`]): the stream sequence of the aggregate's
    /// previous event (0 for its first), which the broker checked before it
    /// stored this one and keeps in its `Nats-Expected-Last-Subject-Sequence`
    /// header. `None` for everything else, and for replays.
    pub previous_sequence: Option<u64>,
}

/// A handler's verdict on a message it could not handle.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (SMTP down, broker slow, concurrent write): redeliver.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Can never work (an event this consumer does not expect, invalid data):
    /// dead-letter it.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    /// The verdict for an event a consumer received but has no use for, which
    /// means its subject filter and its handler disagree.
    pub fn unexpected(event: &Event) -> Self {
        Self::Permanent(anyhow::anyhow!(
            "this consumer does not handle `{}`",
            event.kind()
        ))
    }
}

/// A publish the broker did not acknowledge (or refused as a concurrent
/// write) might succeed on redelivery, so every handler can simply `?` it.
impl From<crate::bus::PublishError> for HandlerError {
    fn from(error: crate::bus::PublishError) -> Self {
        Self::Transient(error.into())
    }
}

/// What a service does with each event it consumes.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl ConsumerSpec {
    /// The consumer of this consumer's replays: dead letters an operator
    /// sent back to it (`replay.<durable>.>`), handled the same way.
    pub fn replays(&self) -> ConsumerSpec {
        ConsumerSpec {
            stream: &streams::REPLAYS,
            durable: format!("{}-replay", self.durable),
            filter_subjects: vec![replay_filter(&self.durable)],
            concurrency: 1,
        }
    }
}

/// The subjects of the replays meant for one consumer.
pub fn replay_filter(durable: &str) -> String {
    format!("{}.{durable}.>", streams::REPLAYS.prefix)
}

/// Runs the consumer, and the consumer of its replays, until `shutdown` is
/// cancelled, recovering from broker outages on their own.
pub async fn run<H: Handler>(
    bus: Bus,
    spec: ConsumerSpec,
    handler: Arc<H>,
    spans: ConsumerSpans,
    shutdown: CancellationToken,
    readiness: Readiness,
) {
    let replays = spec.replays();
    tokio::join!(
        run_one(
            bus.clone(),
            spec,
            handler.clone(),
            spans,
            shutdown.clone(),
            readiness.clone()
        ),
        run_one(bus, replays, handler, spans, shutdown, readiness),
    );
}

async fn run_one<H: Handler>(
    bus: Bus,
    spec: ConsumerSpec,
    handler: Arc<H>,
    spans: ConsumerSpans,
    shutdown: CancellationToken,
    readiness: Readiness,
) {
    // Readiness counts each consumer once, when it first exists.
    let mut bound = Some(readiness);
    while !shutdown.is_cancelled() {
        match consume(&bus, &spec, &handler, spans, &shutdown, &mut bound).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(
                    consumer = spec.durable,
                    error = format!("{error:#}"),
                    "consumer interrupted, restarting"
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }
    tracing::info!(consumer = %spec.durable, "consumer drained");
}

/// The pull consumer's configuration.
pub fn consumer_config(spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subjects: spec.filter_subjects.clone(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: MAX_DELIVER,
        backoff: ACK_TIMEOUT_BACKOFF.to_vec(),
        // Bounds the messages handed out but not yet acked, across restarts of
        // this service: the broker holds the rest of the backlog.
        max_ack_pending: i64::try_from(spec.concurrency.saturating_mul(4)).unwrap_or(1024),
        ..Default::default()
    }
}

async fn consume<H: Handler>(
    bus: &Bus,
    spec: &ConsumerSpec,
    handler: &Arc<H>,
    spans: ConsumerSpans,
    shutdown: &CancellationToken,
    bound: &mut Option<Readiness>,
) -> anyhow::Result<()> {
    let stream = bus.jetstream().get_stream(spec.stream.name).await?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(&spec.durable, consumer_config(spec))
        .await?;
    if let Some(readiness) = bound.take() {
        readiness.consumer_bound();
    }
    let batch = spec.concurrency.max(1);
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    tracing::info!(
        consumer = spec.durable,
        stream = spec.stream.name,
        "consuming"
    );

    let permits = Arc::new(Semaphore::new(batch));
    let mut tasks = JoinSet::new();
    let outcome = loop {
        // Wait for a free slot first, so no message is pulled that cannot be
        // worked on straight away.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit?,
            () = shutdown.cancelled() => break Ok(()),
        };
        let next = tokio::select! {
            next = messages.next() => next,
            () = shutdown.cancelled() => break Ok(()),
        };
        match next {
            Some(Ok(message)) => {
                let bus = bus.clone();
                let handler = handler.clone();
                let durable = spec.durable.clone();
                tasks.spawn(async move {
                    handle_message(&bus, &durable, &*handler, spans, message).await;
                    drop(permit);
                });
            }
            Some(Err(error)) => break Err(anyhow::Error::new(error).context("pulling messages")),
            None => break Err(anyhow::anyhow!("the message stream ended")),
        }
        // Reap finished tasks so the set does not grow with the backlog.
        while tasks.try_join_next().is_some() {}
    };
    // Whatever happened, let the handlers already running finish and ack.
    while tasks.join_next().await.is_some() {}
    outcome
}

async fn handle_message<H: Handler>(
    bus: &Bus,
    durable: &str,
    handler: &H,
    spans: ConsumerSpans,
    message: async_nats::jetstream::Message,
) {
    let (delivered, stream_sequence) = match message.info() {
        Ok(info) => (info.delivered, info.stream_sequence),
        Err(_) => (1, 0),
    };
    let span = tracing::info_span!(
        "consume",
        // Renamed to `process <subject filter>` once the event type is known;
        // span names stay low-cardinality, the full subject is an attribute.
        otel.name = format!("process {}", durable),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.destination.name = %message.subject,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.consumer.group.name = durable,
        messaging.message.id = tracing::field::Empty,
        messaging.nats.delivery_count = delivered,
        messaging.nats.stream.sequence = stream_sequence,
        cloudevents.event_type = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let producer = telemetry::extract(message.headers.as_ref());
    match spans {
        ConsumerSpans::Child => {
            // Fails only if the span is disabled by the filter: then there
            // is nothing to join.
            let _ = span.set_parent(producer);
        }
        ConsumerSpans::Link => span.add_link(producer.span().span_context().clone()),
    }

    async {
        let headers = message.headers.as_ref();
        let decoded = events::decode(
            |name| {
                headers
                    .and_then(|h| h.get(name))
                    .map(|value| value.as_str())
            },
            &message.payload,
        );
        let verdict = match decoded {
            Err(error) => Err(HandlerError::Permanent(anyhow::Error::new(error))),
            Ok((envelope, event)) => {
                let span = tracing::Span::current();
                span.record("messaging.message.id", envelope.id.to_string());
                span.record("cloudevents.event_type", envelope.kind.ce_type());
                span.record(
                    "otel.name",
                    format!("process {}", envelope.kind.subject_filter()),
                );
                let delivery = Delivery {
                    envelope,
                    event,
                    subject: message.subject.to_string(),
                    delivered,
                    stream_sequence,
                    previous_sequence: headers
                        .and_then(|h| h.get(crate::bus::EXPECTED_LAST_SUBJECT_SEQUENCE))
                        .and_then(|value| value.as_str().parse().ok()),
                };
                handler.handle(delivery).await
            }
        };
        settle(bus, durable, &message, delivered, verdict).await;
    }
    .instrument(span)
    .await
}

/// Acks, naks or dead-letters a message according to the verdict.
async fn settle(
    bus: &Bus,
    durable: &str,
    message: &async_nats::jetstream::Message,
    delivered: i64,
    verdict: Result<(), HandlerError>,
) {
    let span = tracing::Span::current();
    let ack = match verdict {
        Ok(()) => {
            span.record("outcome", "ack");
            AckKind::Ack
        }
        Err(HandlerError::Transient(error)) if delivered < MAX_DELIVER => {
            let delay = nak_delay(delivered);
            span.record("outcome", "nak");
            tracing::warn!(
                error = format!("{error:#}"),
                delivered,
                ?delay,
                "handling failed, will retry"
            );
            AckKind::Nak(Some(delay))
        }
        Err(error) => {
            span.record("outcome", "dead-letter");
            span.record("otel.status_code", "ERROR");
            let reason = match &error {
                HandlerError::Transient(error) => {
                    format!("gave up after {delivered} deliveries: {error:#}")
                }
                HandlerError::Permanent(error) => format!("{error:#}"),
            };
            tracing::error!(%reason, "dead-lettering message");
            if let Err(error) =
                dead_letter_with_retries(bus, durable, message, delivered, &reason).await
            {
                // Not terminated: unless this was the last delivery, the
                // broker redelivers it and the dead-lettering is tried again.
                tracing::error!(
                    error = format!("{error:#}"),
                    "dead-lettering failed, leaving the message unacked"
                );
                return;
            }
            AckKind::Term
        }
    };
    if let Err(error) = message.ack_with(ack).await {
        // The broker will redeliver after `ack_wait`; handlers are idempotent.
        tracing::warn!(%error, "ack failed");
    }
}

/// Delay before a nak'ed message comes back: 0.1 s doubling up to a minute.
/// The first retries come quickly because many transient failures (a write
/// that lost an optimistic-concurrency race, a claim held by a handling that
/// is just finishing) resolve within milliseconds; the later ones back off so
/// that a dependency that is really down is not hammered.
pub fn nak_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 11) - 1).unwrap_or(0);
    Duration::from_millis(100 * 2u64.pow(exponent)).min(Duration::from_secs(60))
}

/// Header names on a dead letter.
pub mod dead_letter_headers {
    pub const SERVICE: &str = "Deadletter-Service";
    pub const CONSUMER: &str = "Deadletter-Consumer";
    pub const SUBJECT: &str = "Deadletter-Subject";
    pub const REASON: &str = "Deadletter-Reason";
    pub const DELIVERIES: &str = "Deadletter-Deliveries";
    pub const STREAM_SEQUENCE: &str = "Deadletter-Stream-Sequence";
}

/// Dead-letters a message, retrying for a while: on its last delivery the
/// broker will not hand the message out again, so this is its last chance.
async fn dead_letter_with_retries(
    bus: &Bus,
    durable: &str,
    message: &async_nats::jetstream::Message,
    delivered: i64,
    reason: &str,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match dead_letter(bus, durable, message, delivered, reason).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= 10 => return Err(error),
            Err(error) => {
                attempt += 1;
                tracing::warn!(
                    error = format!("{error:#}"),
                    attempt,
                    "dead-lettering failed, retrying"
                );
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
        }
    }
}

/// A message's headers minus the broker's publish preconditions. An event
/// appended with optimistic concurrency keeps its
/// `Nats-Expected-Last-Subject-Sequence` in the stream; copied as it is, the
/// broker would check it again against the dead-letter stream, where it can
/// never hold, and refuse the letter.
fn without_preconditions(original: Option<&async_nats::HeaderMap>) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (name, values) in original.into_iter().flat_map(|h| h.iter()) {
        let name: &str = name.as_ref();
        if name.to_ascii_lowercase().starts_with("nats-expected-") {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    headers
}

/// Copies a message, headers (but its publish preconditions) and payload, to
/// `deadletter.<service>.<original subject>` with the reason beside it.
async fn dead_letter(
    bus: &Bus,
    durable: &str,
    message: &async_nats::jetstream::Message,
    delivered: i64,
    reason: &str,
) -> anyhow::Result<()> {
    use dead_letter_headers as h;
    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mut headers = without_preconditions(message.headers.as_ref());
    let service = bus.service();
    headers.insert(h::SERVICE, service);
    headers.insert(h::CONSUMER, durable);
    headers.insert(h::SUBJECT, message.subject.as_str());
    // Header values cannot hold line breaks.
    headers.insert(h::REASON, reason.replace(['\r', '\n'], " ").as_str());
    headers.insert(h::DELIVERIES, delivered.to_string().as_str());
    headers.insert(h::STREAM_SEQUENCE, sequence.to_string().as_str());
    // One dead letter per consumer and original message, however often the
    // dead-lettering itself is retried.
    let id = format!("deadletter/{durable}/{}/{sequence}", message.subject);
    headers.insert(events::headers::MSG_ID, id.as_str());

    let subject = format!(
        "{}.{service}.{}",
        streams::DEAD_LETTERS.prefix,
        message.subject
    );
    let span = tracing::info_span!(
        "dead-letter",
        otel.name = format!("send {}.{service}", streams::DEAD_LETTERS.prefix),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.destination.name = %subject,
        messaging.operation.type = "send",
        messaging.message.id = %id,
        reason,
    );
    telemetry::inject(&span, &mut headers);
    async {
        let ack = bus
            .jetstream()
            .publish_with_headers(subject, headers, message.payload.clone())
            .await?;
        ack.await?;
        anyhow::Ok(())
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delay_grows_and_is_capped() {
        assert_eq!(nak_delay(1), Duration::from_millis(100));
        assert_eq!(nak_delay(2), Duration::from_millis(200));
        assert_eq!(nak_delay(3), Duration::from_millis(400));
        assert_eq!(nak_delay(100), Duration::from_secs(60));
        let patience: Duration = (1..MAX_DELIVER).map(nak_delay).sum();
        assert!(patience > Duration::from_secs(600), "{patience:?}");
        assert!(nak_delay(0) > Duration::ZERO);
    }

    #[test]
    fn the_first_ack_timeout_is_the_ack_wait() {
        assert_eq!(ACK_TIMEOUT_BACKOFF[0], ACK_WAIT);
        assert!(usize::try_from(MAX_DELIVER).unwrap_or(0) > ACK_TIMEOUT_BACKOFF.len());
    }
}
