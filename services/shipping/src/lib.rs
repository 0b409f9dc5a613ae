//! The shipping service: schedules one shipment for each paid order.
//!
//! It consumes the order's `OrderPaid` and publishes `OrderShipped` with a
//! tracking number; it consumes `OrderCancelled` and makes sure the order
//! never ships, recalling a scheduled shipment (`ShipmentCancelled`). One
//! key-value record per order, written create-if-absent before anything is
//! announced, decides between the two, so a redelivered payment never ships
//! twice and a cancelled order never ships at all.

use std::sync::Arc;

use async_nats::jetstream::kv;
use events::EventKind;
use events::streams;
use platform::consumer::{ConsumerSpec, Handler};
use platform::health::{self, Readiness};
use platform::service;
use platform::{Bus, Delivery, HandlerError, Settings};
use tokio_util::sync::CancellationToken;

mod on_order_cancelled;
mod on_order_paid;

pub const SERVICE: &str = "shipping";
pub const DEFAULT_PORT: u16 = 8082;

/// The bucket holding one shipment per order id.
pub const SHIPMENTS_BUCKET: &str = "shipping_shipments";

/// Environment variables this service reads beyond the shared ones.
pub const ENV_VARS: &[&str] = &[];

/// What shipping decided for an order, recorded once.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Record {
    Scheduled {
        tracking_number: String,
        #[serde(with = "time::serde::rfc3339")]
        scheduled_at: time::OffsetDateTime,
    },
    /// The cancellation arrived before the payment: never ship.
    Cancelled {
        #[serde(with = "time::serde::rfc3339")]
        cancelled_at: time::OffsetDateTime,
    },
}

/// The service's state, shared by its handlers.
pub struct Shipping {
    bus: Bus,
    shipments: kv::Store,
}

impl Handler for Shipping {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        match &delivery.event {
            events::Event::OrderPaid(paid) => on_order_paid::handle(self, paid).await,
            events::Event::OrderCancelled(cancelled) => {
                on_order_cancelled::handle(self, cancelled).await
            }
            other => Err(HandlerError::unexpected(other)),
        }
    }
}

/// The consumers this service runs.
pub fn consumers() -> Vec<ConsumerSpec> {
    // One consumer for both facts: they live on the same order's subjects in
    // one stream, so for each order the payment is seen before a later
    // cancellation.
    vec![ConsumerSpec {
        stream: &streams::ORDERS,
        durable: "shipping-on-order-events".into(),
        filter_subjects: vec![
            EventKind::OrderPaid.subject_filter(),
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
        service::ensure_streams(&bus, &[streams::SHIPPING]).await?;
        bus.ensure_bucket(SHIPMENTS_BUCKET).await
    })
    .await;
    if let Some(shipments) = set_up {
        let shipping = Arc::new(Shipping {
            bus: bus.clone(),
            shipments,
        });
        service::consume(
            &bus,
            &settings,
            &shutdown,
            &readiness,
            shipping,
            consumers(),
        )
        .await;
    }
    http.await?
}
