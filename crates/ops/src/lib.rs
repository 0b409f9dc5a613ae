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
    let subject = format!(
        "{}.{}.{}",
        streams::REPLAYS.prefix,
        letter.consumer,
        letter.subject
    );
    js.publish_with_headers(subject.clone(), headers, letter.payload.clone())
        .await?
        .await?;
    Ok(subject)
}
