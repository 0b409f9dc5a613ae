//! The payment service: charges each placed order once.
//!
//! It consumes `OrderPlaced` and publishes `PaymentProcessed` or
//! `PaymentFailed`; it consumes `OrderCancelled` and refunds a charged order
//! once (`PaymentRefunded`), or voids one not charged yet. The charge goes to a simulated gateway ([`gateway`]) that
//! behaves like Stripe's test mode. A key-value bucket records each order's
//! outcome before it is published, so a redelivered `OrderPlaced` republishes
//! the recorded outcome instead of charging again.

use std::sync::Arc;

use async_nats::jetstream::kv;
use events::EventKind;
use events::streams;
use platform::consumer::{ConsumerSpec, Handler};
use platform::health::{self, Readiness};
use platform::service;
use platform::{Bus, Delivery, HandlerError, Settings};
use tokio_util::sync::CancellationToken;

pub mod gateway;
mod on_order_cancelled;
mod on_order_placed;

pub const SERVICE: &str = "payment";
pub const DEFAULT_PORT: u16 = 8081;

/// The bucket holding one charge outcome per order id.
pub const CHARGES_BUCKET: &str = "payment_charges";
/// The bucket holding one refund per order id.
pub const REFUNDS_BUCKET: &str = "payment_refunds";

/// Environment variables this service reads beyond the shared ones.
pub const ENV_VARS: &[&str] = &[];

/// The service's state, shared by its handlers.
pub struct Payment {
    bus: Bus,
    charges: kv::Store,
    refunds: kv::Store,
}

impl Handler for Payment {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        match &delivery.event {
            events::Event::OrderPlaced(placed) => on_order_placed::handle(self, placed).await,
            events::Event::OrderCancelled(cancelled) => {
                on_order_cancelled::handle(self, cancelled).await
            }
            other => Err(HandlerError::unexpected(other)),
        }
    }
}

/// The consumers this service runs.
pub fn consumers() -> Vec<ConsumerSpec> {
    vec![ConsumerSpec {
        stream: &streams::ORDERS,
        durable: "payment-on-order-events".into(),
        filter_subjects: vec![
            EventKind::OrderPlaced.subject_filter(),
            EventKind::OrderCancelled.subject_filter(),
        ],
        concurrency: 32,
    }]
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = Bus::connect(&settings).await?;
    let readiness = Readiness::new(bus.clone());
    let http = tokio::spawn(service::serve_http(
        settings.http_addr,
        health::router(readiness.clone()),
        shutdown.clone(),
    ));
    let set_up = service::until_set_up(&shutdown, || async {
        service::ensure_streams(&bus, &[streams::PAYMENTS]).await?;
        let charges = bus.ensure_bucket(CHARGES_BUCKET).await?;
        let refunds = bus.ensure_bucket(REFUNDS_BUCKET).await?;
        Ok((charges, refunds))
    })
    .await;
    if let Some((charges, refunds)) = set_up {
        let payment = Arc::new(Payment {
            bus: bus.clone(),
            charges,
            refunds,
        });
        service::consume(&bus, &settings, &shutdown, &readiness, payment, consumers()).await;
    }
    http.await?
}
