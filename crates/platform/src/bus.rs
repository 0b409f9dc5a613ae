//! The connection to NATS JetStream and the one way events are published.
//!
//! Every publish goes through [`Bus::publish`]: it wraps the event in its
//! CloudEvents envelope (attributes in headers, JSON payload), sets
//! `Nats-Msg-Id` to the event id so the broker drops duplicates, opens a
//! PRODUCER span and injects its context as `traceparent`, then waits for the
//! broker's acknowledgement. The first `await` sends the message, the second
//! awaits the ack: only an acked event is durably stored.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, kv, stream};
use async_nats::{Client, HeaderMap};
use events::streams::StreamDef;
use events::{Envelope, Event};
use tracing::Instrument as _;

use crate::config::{NatsAuth, Settings};
use crate::telemetry;

/// How long a JetStream request (a publish ack, a KV read) may take before
/// it fails. Bounded so that a request never hangs while the broker is away:
/// the caller gets an error it can turn into a 503 or a delayed redelivery.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Header for optimistic concurrency: the append only succeeds if the last
/// message on the subjects matching the filter below has this sequence.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// The subject filter the expected sequence is checked against, so all of an
/// order's subjects (`orders.<id>.*`) count as one aggregate.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Someone appended to the aggregate since we read it.
    #[error("concurrent append: the order changed since it was read")]
    Conflict,
    /// The broker did not durably take the event (down, slow or unreachable).
    #[error("the broker did not acknowledge the event: {0}")]
    Unavailable(#[source] async_nats::jetstream::context::PublishError),
}

/// Connection options that log in as `auth` (anonymously for `None`), with
/// replies under the user's own inbox prefix. The services and the
/// `ops` tool connect through this.
pub fn connect_options(auth: Option<&NatsAuth>) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new();
    match auth {
        Some(auth) => options
            .user_and_password(auth.user.clone(), auth.password.clone())
            .custom_inbox_prefix(auth.inbox_prefix()),
        None => options,
    }
}

/// A JetStream connection shared by a service's tasks. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: Client,
    js: jetstream::Context,
    service: &'static str,
}

impl Bus {
    /// Connects to NATS. The first connection is retried in the background, so
    /// a service started before the broker comes up instead of crashing, and
    /// `/readyz` reports when it is connected.
    ///
    /// With credentials (`NATS_USER`), it logs in as that user and takes its
    /// replies under the user's own inbox prefix, the only one
    /// `deploy/nats.conf` lets it subscribe to. A refused login is retried
    /// like an absent broker, and shows in the log as an authorization
    /// violation.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let client = connect_options(settings.nats_auth.as_ref())
            .name(settings.service)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .event_callback(|event| async move {
                tracing::info!(%event, "nats connection event");
            })
            .connect(&settings.nats_url)
            .await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        Ok(Self {
            client,
            js,
            service: settings.service,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The name of the service this connection belongs to.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Whether the client is connected to the broker right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates the stream if it does not exist, and otherwise leaves it as it
    /// is. File storage, so events survive a broker restart; a two-minute
    /// duplicate window for `Nats-Msg-Id`; direct gets enabled so an
    /// aggregate can be replayed by subject cheaply.
    pub async fn ensure_stream(&self, def: &StreamDef) -> anyhow::Result<stream::Stream> {
        let config = stream::Config {
            name: def.name.to_owned(),
            subjects: vec![def.subjects()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        };
        let stream = self.js.get_or_create_stream(config).await?;
        Ok(stream)
    }

    /// Opens a key-value bucket, creating it (file storage, one revision
    /// kept per key) if it does not exist yet.
    pub async fn ensure_bucket(&self, bucket: &str) -> anyhow::Result<kv::Store> {
        if let Ok(store) = self.js.get_key_value(bucket).await {
            return Ok(store);
        }
        let store = self
            .js
            .create_key_value(kv::Config {
                bucket: bucket.to_owned(),
                history: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        Ok(store)
    }

    /// Publishes an event and waits until the broker has stored it.
    pub async fn publish(&self, event: &Event, envelope: &Envelope) -> Result<u64, PublishError> {
        self.publish_with_headers(event, envelope, HeaderMap::new())
            .await
    }

    /// Appends an event to an event-sourced aggregate with optimistic
    /// concurrency: the broker rejects it unless the last event on any of the
    /// aggregate's subjects (`filter`) still has sequence `expected` (0 when
    /// the aggregate has no events yet).
    pub async fn append(
        &self,
        event: &Event,
        envelope: &Envelope,
        filter: &str,
        expected: u64,
    ) -> Result<u64, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, filter);
        self.publish_with_headers(event, envelope, headers).await
    }

    async fn publish_with_headers(
        &self,
        event: &Event,
        envelope: &Envelope,
        mut headers: HeaderMap,
    ) -> Result<u64, PublishError> {
        let kind = event.kind();
        let subject = event.subject();
        let span = tracing::info_span!(
            "publish",
            otel.name = format!("send {}", kind.subject_filter()),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "nats",
            messaging.destination.name = %subject,
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.message.id = %envelope.id,
            cloudevents.event_type = kind.ce_type(),
            messaging.nats.duplicate = tracing::field::Empty,
            messaging.nats.stream.sequence = tracing::field::Empty,
        );
        for (name, value) in envelope.to_headers() {
            headers.insert(name, value.as_str());
        }
        telemetry::inject(&span, &mut headers);
        let payload = event.to_json().into();

        async {
            let result = async {
                // First await: the message is handed to the connection.
                let ack = self
                    .js
                    .publish_with_headers(subject, headers, payload)
                    .await?;
                // Second await: the broker confirms it stored the message.
                ack.await
            }
            .await;
            let span = tracing::Span::current();
            match result {
                Ok(ack) => {
                    span.record("messaging.nats.duplicate", ack.duplicate);
                    span.record("messaging.nats.stream.sequence", ack.sequence);
                    if ack.duplicate {
                        tracing::debug!("broker dropped a duplicate publish");
                    }
                    Ok(ack.sequence)
                }
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    span.record("otel.status_code", "ERROR");
                    Err(PublishError::Conflict)
                }
                Err(error) => {
                    span.record("otel.status_code", "ERROR");
                    tracing::warn!(%error, "publish failed");
                    Err(PublishError::Unavailable(error))
                }
            }
        }
        .instrument(span)
        .await
    }
}
