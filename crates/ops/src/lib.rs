//! Operator tools: the dead-letter stream, and rebuilding the read model
//! ([`views`]).
//!
//! A consumer that cannot handle a message (undecodable, unknown type, or
//! out of deliveries) copies it to `deadletter.<service>.<original subject>`
//! with `Deadletter-*` headers saying who gave up and why, then terminates
//! it. [`list`] reads those back; [`replay`] sends chosen ones to
//! `replay.<consumer>.<original subject>`, which only the consumer that gave
//! up reads, so a fixed bug or a healed dependency gets a second chance
//! without touching the event streams or the other consumers.

pub mod views;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use events::streams;
use platform::consumer::dead_letter_headers as dl;

/// One dead letter as stored.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub sequence: u64,
    pub time: String,
    /// The service that published the dead letter, from its subject
    /// (`deadletter.<service>.…`): unlike the `Deadletter-*` headers, this is
    /// enforced by the broker's permissions.
    pub published_by: String,
    pub service: String,
    pub consumer: String,
    pub subject: String,
    pub reason: String,
    pub deliveries: String,
    pub headers: HeaderMap,
    pub payload: bytes::Bytes,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// Reads every dead letter, oldest first.
pub async fn list(js: &jetstream::Context) -> anyhow::Result<Vec<DeadLetter>> {
    let stream = js.get_stream(streams::DEAD_LETTERS.name).await?;
    let filter = streams::DEAD_LETTERS.subjects();
    let mut letters = Vec::new();
    let mut next = None;
    loop {
        let message = match stream.direct_get_next_for_subject(&filter, next).await {
            Ok(message) => message,
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => break,
            Err(error) => return Err(error.into()),
        };
        next = Some(message.sequence + 1);
        letters.push(DeadLetter {
            sequence: message.sequence,
            time: message.time.to_string(),
            published_by: message
                .subject
                .split('.')
                .nth(1)
                .unwrap_or_default()
                .to_owned(),
            service: header(&message.headers, dl::SERVICE),
            consumer: header(&message.headers, dl::CONSUMER),
            subject: header(&message.headers, dl::SUBJECT),
            reason: header(&message.headers, dl::REASON),
            deliveries: header(&message.headers, dl::DELIVERIES),
            headers: message.headers,
            payload: message.payload,
        });
    }
    Ok(letters)
}

/// Sends a dead letter back to the consumer that gave up on it, with its
/// original headers (trace context included) and payload.
pub async fn replay(js: &jetstream::Context, letter: &DeadLetter) -> anyhow::Result<String> {
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        if AsRef::<str>::as_ref(name).starts_with("Deadletter-") {
            continue;
        }
        for value in values {
            headers.append(AsRef::<str>::as_ref(name), value.as_str());
        }
    }
    // A replay of the same dead letter within the broker's duplicate window
    // is dropped, so a double-typed command does not replay twice.
    let id = format!("replay/{}", letter.sequence);
    headers.insert(events::headers::MSG_ID, id.as_str());
    // The headers are the dead-lettering service's word; the subject is the
    // broker's. A service may only dead-letter for its own consumers (their
    // names start with the service's), so a forged letter cannot be replayed
    // into another service.
    if !letter
        .consumer
        .starts_with(&format!("{}-", letter.published_by))
    {
        anyhow::bail!(
            "dead letter {} names consumer `{}` but was published by `{}`: refusing to replay it",
            letter.sequence,
            letter.consumer,
            letter.published_by
        );
    }
    // A replay that failed again was dead-lettered by the replay consumer:
    // send it back to the same place, not to a replay of a replay.
    let consumer = letter
        .consumer
        .strip_suffix("-replay")
        .unwrap_or(&letter.consumer);
    let replay_prefix = format!("{}.{consumer}.", streams::REPLAYS.prefix);
    let original = letter
        .subject
        .strip_prefix(&replay_prefix)
        .unwrap_or(&letter.subject);
    let subject = format!("{replay_prefix}{original}");
    js.publish_with_headers(subject.clone(), headers, letter.payload.clone())
        .await?
        .await?;
    Ok(subject)
}
