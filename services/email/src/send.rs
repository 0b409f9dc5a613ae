//! Sending one email at most once per order and kind.
//!
//! SMTP cannot deduplicate, so the email service guards every send itself,
//! with a record per (order, kind) in the `email_sent` bucket:
//!
//! 1. Only one handling of a key runs in this process at a time; a
//!    redelivery that arrives while the first handling still runs (the
//!    process was frozen past `ack_wait`) is sent back for later.
//! 2. Claim the key in the bucket (create-if-absent). A record saying "done"
//!    means the email went out before: skip to step 5. A fresh claim by
//!    another process means it is sending right now: try later. A claim older
//!    than [`CLAIM_TTL`] belonged to a process that died: take it over.
//! 3. Send over SMTP. On failure, release the claim and let the broker
//!    redeliver with a delay.
//! 4. Mark the key done, retrying through a broker outage. If that still
//!    fails, remember the send in memory so the redelivery skips SMTP.
//! 5. Publish `EmailSent` with an id derived from (order, kind).
//!
//! The one window left: the process dies between SMTP's "250 OK" and the
//! write in step 4, a few milliseconds. The claim then expires and the email
//! is sent a second time. Closing that would need the mail server to
//! deduplicate by Message-ID, which SMTP does not promise.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use events::{EmailSent, Envelope, Event};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use platform::HandlerError;
use platform::guard::{self, Claim};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::compose;

/// How long a claim protects a send in progress. Against a server that
/// answers at all, a send takes milliseconds; each of its steps may wait up
/// to 10 s for a silent server before it fails. So in practice only a dead
/// holder's claim expires (a server that answers every step just short of
/// 10 s could outlast it, and its email could go out twice).
pub const CLAIM_TTL: Duration = platform::consumer::ACK_WAIT;

/// The record of a sent email.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    subject: String,
    #[serde(with = "time::serde::rfc3339")]
    sent_at: OffsetDateTime,
}

/// What this process knows beyond the bucket.
#[derive(Debug, Default)]
pub struct Local {
    /// Keys being handled right now.
    in_flight: Mutex<HashSet<String>>,
    /// Emails sent whose "done" record could not be written yet.
    unrecorded: Mutex<HashMap<String, Sent>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes a key from the in-flight set when its handling ends, however it
/// ends.
struct InFlight<'a> {
    local: &'a Local,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.local.in_flight).remove(&self.key);
    }
}

impl Local {
    fn enter(&self, key: &str) -> Option<InFlight<'_>> {
        lock(&self.in_flight)
            .insert(key.to_owned())
            .then(|| InFlight {
                local: self,
                key: key.to_owned(),
            })
    }
}

pub async fn once(service: &crate::Email, email: compose::Email) -> Result<(), HandlerError> {
    let key = format!("{}.{}", email.order_id, email.kind.as_str());
    let _in_flight = service.local.enter(&key).ok_or_else(|| {
        HandlerError::Transient(anyhow::anyhow!(
            "an earlier delivery of `{key}` is still being handled"
        ))
    })?;

    let unrecorded = lock(&service.local.unrecorded).get(&key).cloned();
    let sent = match unrecorded {
        Some(sent) => {
            guard::complete(&service.sent, &key, &sent).await?;
            lock(&service.local.unrecorded).remove(&key);
            sent
        }
        None => {
            match guard::claim::<Sent>(&service.sent, &key, &service.holder, CLAIM_TTL).await? {
                Claim::Done(sent) => {
                    tracing::info!(%key, "already sent, not sending again");
                    sent
                }
                Claim::Granted(revision) => {
                    if let Err(error) = smtp_send(service, &email).await {
                        guard::release(&service.sent, &key, revision).await;
                        return Err(error);
                    }
                    let sent = Sent {
                        subject: email.subject.clone(),
                        sent_at: OffsetDateTime::now_utc(),
                    };
                    if let Err(error) = guard::complete(&service.sent, &key, &sent).await {
                        lock(&service.local.unrecorded).insert(key.clone(), sent);
                        return Err(error);
                    }
                    sent
                }
            }
        }
    };

    let event = Event::EmailSent(EmailSent {
        order_id: email.order_id,
        kind: email.kind,
        to: email.to,
        subject: sent.subject,
        sent_at: sent.sent_at,
    });
    let envelope = Envelope::derived(&event, &format!("email/{key}"));
    service.bus.publish(&event, &envelope).await?;
    Ok(())
}

async fn smtp_send(service: &crate::Email, email: &compose::Email) -> Result<(), HandlerError> {
    let to: Mailbox = email.to.parse().map_err(|e| {
        HandlerError::Permanent(anyhow::anyhow!(
            "recipient `{}` is not a valid address: {e}",
            email.to
        ))
    })?;
    let message = Message::builder()
        .from(service.from.clone())
        .to(to)
        .subject(email.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(email.body.clone())
        .map_err(|e| HandlerError::Permanent(e.into()))?;
    let span = tracing::info_span!(
        "smtp send",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        email.kind = email.kind.as_str(),
        network.protocol.name = "smtp",
    );
    async {
        match service
            .smtp
            .send(message.envelope(), &message.formatted())
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::Span::current().record("otel.status_code", "ERROR");
                tracing::warn!(%error, "SMTP send failed");
                // A permanent SMTP rejection (5xx) for one message is still
                // worth a few retries: Mailpit's chaos mode and real servers
                // under load answer 5xx too. The consumer dead-letters it once
                // its deliveries run out.
                Err(HandlerError::Transient(error))
            }
        }
    }
    .instrument(span)
    .await
}
