//! The email service: tells the customer what happened to their order.
//!
//! It consumes `OrderPlaced`, `OrderCancelled` and `OrderFulfilled` (the
//! order's own record of the shipment, so a cancelled order never gets a
//! "shipped" email) and `PaymentRefunded`, sends one email for each over real
//! SMTP, and publishes `EmailSent`. A key-value
//! bucket remembers which (order, kind) pairs were sent, so a redelivered
//! event does not email the customer again. When the SMTP server is down the
//! handler fails transiently and the broker redelivers later: the emails are
//! late, never lost.
//!
//! Configuration beyond the shared variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SMTP_URL` | `smtp://127.0.0.1:1025` | the SMTP server: `smtp://[user:password@]host[:port]`, `?tls=required` or `?tls=opportunistic` for STARTTLS, `smtps://` for TLS from the start (see [`smtp`]) |
//! | `EMAIL_FROM` | `Orders <orders@example.com>` | the sender |

use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use events::EventKind;
use events::streams;
use lettre::message::Mailbox;
use platform::consumer::{ConsumerSpec, Handler};
use platform::health::{self, Readiness};
use platform::service;
use platform::{Bus, Delivery, HandlerError, Settings};
use tokio_util::sync::CancellationToken;

mod compose;
mod send;
pub mod smtp;

pub const SERVICE: &str = "email";
pub const DEFAULT_PORT: u16 = 8083;

/// The bucket holding one record per email sent, keyed `<order id>.<kind>`.
pub const SENT_BUCKET: &str = "email_sent";

/// SMTP connections kept open, and order emails handled at once. With
/// Nagle's algorithm off (see [`smtp`]) an SMTP exchange with a local server
/// takes about a millisecond, and the claim, the record and the `EmailSent`
/// around it a few more, so 16 handlers carry a few thousand emails a
/// second; more would only hold more memory.
pub const SMTP_CONNECTIONS: usize = 16;

/// Environment variables this service reads beyond the shared ones.
pub const ENV_VARS: &[&str] = &["SMTP_URL", "EMAIL_FROM"];

/// The service's state, shared by its handlers.
pub struct Email {
    bus: Bus,
    sent: kv::Store,
    smtp: smtp::Mailer,
    from: Mailbox,
    /// Names this process in the claims it writes.
    holder: String,
    local: send::Local,
}

impl Handler for Email {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let Some(email) = compose::for_event(&delivery.event) else {
            return Err(HandlerError::unexpected(&delivery.event));
        };
        send::once(self, email).await
    }
}

/// The consumers this service runs: one per stream it reads from.
pub fn consumers() -> Vec<ConsumerSpec> {
    vec![
        ConsumerSpec {
            stream: &streams::ORDERS,
            durable: "email-on-order-events".into(),
            filter_subjects: vec![
                EventKind::OrderPlaced.subject_filter(),
                EventKind::OrderCancelled.subject_filter(),
                EventKind::OrderFulfilled.subject_filter(),
            ],
            concurrency: SMTP_CONNECTIONS,
        },
        ConsumerSpec {
            stream: &streams::PAYMENTS,
            durable: "email-on-payment-refunded".into(),
            filter_subjects: vec![EventKind::PaymentRefunded.subject_filter()],
            concurrency: 8,
        },
    ]
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let smtp_url = std::env::var("SMTP_URL").unwrap_or_else(|_| "smtp://127.0.0.1:1025".into());
    let target = smtp::Target::from_url(&smtp_url)
        .with_context(|| format!("SMTP_URL `{smtp_url}` is not a valid SMTP URL"))?;
    let smtp = smtp::Mailer::new(target, SMTP_CONNECTIONS);
    let from = std::env::var("EMAIL_FROM")
        .unwrap_or_else(|_| "Orders <orders@example.com>".into())
        .parse::<Mailbox>()
        .context("EMAIL_FROM is not a valid mailbox")?;

    let bus = Bus::connect(&settings).await?;
    let readiness = Readiness::new(bus.clone());
    let http = tokio::spawn(service::serve_http(
        settings.http_addr,
        health::router(readiness.clone()),
        shutdown.clone(),
    ));
    let set_up = service::until_set_up(&shutdown, || async {
        service::ensure_streams(&bus, &[streams::EMAILS]).await?;
        bus.ensure_bucket(SENT_BUCKET).await
    })
    .await;
    if let Some(sent) = set_up {
        let email = Arc::new(Email {
            bus: bus.clone(),
            sent,
            smtp,
            from,
            holder: format!(
                "email pid {} started {}",
                std::process::id(),
                time::OffsetDateTime::now_utc()
            ),
            local: send::Local::default(),
        });
        service::consume(&bus, &settings, &shutdown, &readiness, email, consumers()).await;
    }
    http.await?
}
