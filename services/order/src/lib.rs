//! The order service: the front door and the order's memory.
//!
//! - [`api`]: `POST /orders` validates a request and appends `OrderPlaced`;
//!   `GET /orders/{id}` serves the read model; `GET /orders/{id}/events` the
//!   order's history from the event store.
//! - [`domain`]: the aggregate's pure `decide` and `evolve`.
//! - [`store`]: the event store on JetStream (replay, optimistic appends).
//! - [`view`]: the read model in a key-value bucket (CQRS).
//! - [`handlers`]: payment and shipping outcomes move the order along
//!   (`PaymentFailed` cancels it: the saga's compensation), and every order
//!   event refreshes the read model.

use std::sync::{Arc, OnceLock};

use async_nats::jetstream::kv;
use events::EventKind;
use events::streams;
use platform::consumer::{ConsumerSpec, Handler};
use platform::health::{self, Readiness};
use platform::service;
use platform::{Bus, Delivery, HandlerError, Settings};
use tokio_util::sync::CancellationToken;

pub mod api;
pub mod domain;
mod handlers;
pub mod store;
pub mod view;

use store::EventStore;

pub const SERVICE: &str = "order";
pub const DEFAULT_PORT: u16 = 8080;

/// Environment variables this service reads beyond the shared ones.
pub const ENV_VARS: &[&str] = &[];

/// The durable name of the projection consumer.
pub const PROJECTION: &str = "order-projection";

/// The service's state, shared by the HTTP handlers and the consumers.
pub struct Order {
    bus: Bus,
    /// Set once the broker is reachable and the stream and bucket exist;
    /// until then the API answers 503 and `/readyz` says not ready.
    ready: OnceLock<(EventStore, kv::Store)>,
}

impl Order {
    fn store(&self) -> Result<&EventStore, HandlerError> {
        self.ready
            .get()
            .map(|(store, _)| store)
            .ok_or_else(|| HandlerError::Transient(anyhow::anyhow!("not set up yet")))
    }

    fn views(&self) -> Result<&kv::Store, HandlerError> {
        self.ready
            .get()
            .map(|(_, views)| views)
            .ok_or_else(|| HandlerError::Transient(anyhow::anyhow!("not set up yet")))
    }
}

impl Handler for Order {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        match delivery.event.kind() {
            EventKind::OrderPlaced
            | EventKind::OrderPaid
            | EventKind::OrderFulfilled
            | EventKind::OrderCancelled
            | EventKind::OrderRefunded => handlers::project(self, &delivery).await,
            _ => handlers::on_outcome(self, &delivery).await,
        }
    }
}

/// The consumers this service runs.
pub fn consumers() -> Vec<ConsumerSpec> {
    vec![
        ConsumerSpec {
            stream: &streams::PAYMENTS,
            durable: "order-on-payment-outcome".into(),
            filter_subjects: vec![
                EventKind::PaymentProcessed.subject_filter(),
                EventKind::PaymentFailed.subject_filter(),
                EventKind::PaymentRefunded.subject_filter(),
            ],
            concurrency: 32,
        },
        ConsumerSpec {
            stream: &streams::SHIPPING,
            durable: "order-on-order-shipped".into(),
            filter_subjects: vec![EventKind::OrderShipped.subject_filter()],
            concurrency: 32,
        },
        ConsumerSpec {
            stream: &streams::ORDERS,
            durable: PROJECTION.into(),
            filter_subjects: vec![streams::ORDERS.subjects()],
            concurrency: 32,
        },
    ]
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = Bus::connect(&settings).await?;
    let readiness = Readiness::new(bus.clone());
    let order = Arc::new(Order {
        bus: bus.clone(),
        ready: OnceLock::new(),
    });
    let router = api::router(order.clone()).merge(health::router(readiness.clone()));
    let http = tokio::spawn(service::serve_http(
        settings.http_addr,
        router,
        shutdown.clone(),
    ));
    let set_up = service::until_set_up(&shutdown, || async {
        service::ensure_streams(&bus, &[]).await?;
        let store = EventStore::open(bus.clone()).await?;
        let views = bus.ensure_bucket(view::VIEWS_BUCKET).await?;
        Ok((store, views))
    })
    .await;
    if let Some(ready) = set_up {
        // `set` fails only if called twice, and this is the one call.
        let _ = order.ready.set(ready);
        service::consume(&bus, &settings, &shutdown, &readiness, order, consumers()).await;
    }
    http.await?
}
