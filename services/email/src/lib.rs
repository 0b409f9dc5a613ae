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
//! | `SMTP_URL` | `smtp://127.0.0.1:1025` | the SMTP server (lettre URL syntax; `smtps://` or `?tls=required` for TLS) |
//! | `EMAIL_FROM` | `Orders <orders@example.com>` | the sender |

use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use events::EventKind;
use events::streams;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use platform::consumer::{ConsumerSpec, Handler};
use platform::health::{self, Readiness};
use platform::service;
use platform::{Bus, Delivery, HandlerError, Settings};
use tokio_util::sync::CancellationToken;

mod compose;
mod send;

pub const SERVICE: &str = "email";
pub const DEFAULT_PORT: u16 = 8083;

/// The bucket holding one record per email sent, keyed `<order id>.<kind>`.
pub const SENT_BUCKET: &str = "email_sent";

/// SMTP connections kept open, and order emails handled at once. An SMTP
/// conversation takes tens of milliseconds, almost all of it waiting for the
/// server, so the email service's throughput is this number divided by that
/// time: it was the whole pipeline's bottleneck at lettre's default of 10.
pub const SMTP_CONNECTIONS: usize = 64;

/// Environment variables this service reads beyond the shared ones.
pub const ENV_VARS: &[&str] = &["SMTP_URL", "EMAIL_FROM"];

/// The service's state, shared by its handlers.
pub struct Email {
    bus: Bus,
    sent: kv::Store,
    smtp: AsyncSmtpTransport<Tokio1Executor>,
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
    let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp_url)
        .with_context(|| format!("SMTP_URL `{smtp_url}` is not a valid SMTP URL"))?
        .timeout(Some(std::time::Duration::from_secs(10)))
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(SMTP_CONNECTIONS as u32))
        .build();
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
