//! Sending one email at most once per order and kind.
//!
//! The order of steps is what keeps the promise:
//! 1. if the (order, kind) record exists, the email went out before: skip;
//! 2. send over SMTP (a transient failure naks the event for a later retry);
//! 3. record (order, kind) in the bucket;
//! 4. publish `EmailSent` with an id derived from (order, kind).
//!
//! A crash between 2 and 3 is the one window left: the event is redelivered
//! and the email sent a second time. It is as small as one KV write, and
//! closing it entirely would need the SMTP server to deduplicate by
//! Message-ID, which SMTP does not promise.

use events::{EmailSent, Envelope, Event};
use lettre::AsyncTransport as _;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use platform::HandlerError;
use platform::guard;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::compose;

/// The record of a sent email.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sent {
    subject: String,
    #[serde(with = "time::serde::rfc3339")]
    sent_at: OffsetDateTime,
}

pub async fn once(service: &crate::Email, email: compose::Email) -> Result<(), HandlerError> {
    let key = format!("{}.{}", email.order_id, email.kind.as_str());
    let sent = match guard::recorded::<Sent>(&service.sent, &key).await? {
        Some(sent) => {
            tracing::info!(%key, "already sent, not sending again");
            sent
        }
        None => {
            smtp_send(service, &email).await?;
            let sent = Sent {
                subject: email.subject.clone(),
                sent_at: OffsetDateTime::now_utc(),
            };
            if let Err(error) = guard::record(&service.sent, &key, &sent).await {
                // The email is out; failing here would send it again on
                // redelivery, so only log (a concurrent record is fine too).
                tracing::warn!(%error, %key, "could not record the sent email");
            }
            sent
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
    service
        .bus
        .publish(&event, &envelope)
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?;
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
        match service.smtp.send(message).await {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::Span::current().record("otel.status_code", "ERROR");
                tracing::warn!(%error, "SMTP send failed");
                // A permanent SMTP rejection (5xx) for one message is still
                // worth a few retries: Mailpit's chaos mode and real servers
                // under load answer 5xx too. The consumer dead-letters it once
                // its deliveries run out.
                Err(HandlerError::Transient(error.into()))
            }
        }
    }
    .instrument(span)
    .await
}
