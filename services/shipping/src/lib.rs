//! The shipping service: schedules one shipment for each paid order.
//!
//! It consumes `PaymentProcessed` and publishes `OrderShipped` with a
//! tracking number. A key-value bucket records each order's shipment before
//! it is announced, so a redelivered payment never ships twice.

use std::sync::Arc;

use async_nats::jetstream::kv;
use events::EventKind;
use events::streams;
use platform::consumer::{ConsumerSpec, Handler};
use platform::health::{self, Readiness};
use platform::service;
use platform::{Bus, Delivery, HandlerError, Settings};
use tokio_util::sync::CancellationToken;

mod on_payment_processed;

pub const SERVICE: &str = "shipping";
pub const DEFAULT_PORT: u16 = 8082;

/// The bucket holding one shipment per order id.
pub const SHIPMENTS_BUCKET: &str = "shipping_shipments";

/// Environment variables this service reads beyond the shared ones.
pub const ENV_VARS: &[&str] = &[];

/// The service's state, shared by its handlers.
pub struct Shipping {
    bus: Bus,
    shipments: kv::Store,
}

impl Handler for Shipping {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        match &delivery.event {
            events::Event::PaymentProcessed(paid) => on_payment_processed::handle(self, paid).await,
            other => Err(HandlerError::unexpected(other)),
        }
    }
}

/// The consumers this service runs.
pub fn consumers() -> Vec<ConsumerSpec> {
    vec![ConsumerSpec {
        stream: &streams::PAYMENTS,
        durable: "shipping-on-payment-processed".into(),
        filter_subjects: vec![EventKind::PaymentProcessed.subject_filter()],
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
        service::ensure_streams(&bus, &[streams::SHIPPING]).await?;
        bus.ensure_bucket(SHIPMENTS_BUCKET).await
    })
    .await;
    if let Some(shipments) = set_up {
        readiness.mark_set_up();
        let shipping = Arc::new(Shipping {
            bus: bus.clone(),
            shipments,
        });
        service::consume(&bus, &settings, &shutdown, shipping, consumers()).await;
    }
    http.await?
}
