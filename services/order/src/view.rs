//! The read model (CQRS): one JSON document per order in the `orders_view`
//! key-value bucket, kept by the projection consumer and served by
//! `GET /orders/{id}` without touching the event store.
//!
//! The projection replays the order from the event store for every event and
//! writes the result only if it is newer than what the bucket holds (compare
//! `position`, write with the entry's revision). That makes it indifferent to
//! redeliveries and to events of one order being handled out of order or in
//! parallel, and it means the bucket can always be rebuilt from the events.

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use events::{LineItem, OrderId};
use platform::HandlerError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{Order, Status};

/// The bucket holding the read model.
pub const VIEWS_BUCKET: &str = "orders_view";

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderView {
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    #[schema(value_type = crate::api::openapi::OrderStatus)]
    pub status: Status,
    pub customer_email: String,
    #[schema(value_type = Vec<crate::api::openapi::LineItem>)]
    pub items: Vec<LineItem>,
    pub total_cents: u64,
    pub payment_id: Option<String>,
    pub tracking_number: Option<String>,
    pub cancellation_reason: Option<String>,
    /// `pending`, `paid`, `refunded` or `none` (declined or never charged).
    pub payment_status: String,
    pub refund_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub placed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub shipped_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cancelled_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub refunded_at: Option<OffsetDateTime>,
    /// The stream sequence of the last event this view reflects.
    pub position: u64,
}

impl OrderView {
    pub fn new(order: &Order, position: u64) -> Self {
        Self {
            order_id: order.order_id,
            status: order.status,
            customer_email: order.customer_email.clone(),
            items: order.items.clone(),
            total_cents: order.total_cents,
            payment_id: order.payment_id.clone(),
            tracking_number: order.tracking_number.clone(),
            cancellation_reason: order.cancellation_reason.clone(),
            payment_status: payment_status(order).to_owned(),
            refund_id: order.refund_id.clone(),
            placed_at: order.placed_at,
            paid_at: order.paid_at,
            shipped_at: order.shipped_at,
            cancelled_at: order.cancelled_at,
            refunded_at: order.refunded_at,
            position,
        }
    }
}

/// The payment's part of the order's story, in one word.
fn payment_status(order: &Order) -> &'static str {
    match (order.status, &order.payment_id, &order.refund_id) {
        (_, _, Some(_)) => "refunded",
        (_, Some(_), None) => "paid",
        (Status::Placed, None, None) => "pending",
        // Cancelled before a payment was recorded: declined, or cancelled by
        // the customer first (a charge that crossed it is refunded later).
        _ => "none",
    }
}

/// Reads one order's view.
pub async fn get(views: &kv::Store, order_id: OrderId) -> anyhow::Result<Option<OrderView>> {
    let Some(bytes) = views.get(order_id.to_string()).await? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_slice(&bytes)?))
}

/// Reads every view. One request per order: fine for a reference system's
/// list page; a real one would project into a store that can filter and page
/// (the projection is the only writer, so swapping the store is local).
pub async fn all(views: &kv::Store) -> anyhow::Result<Vec<OrderView>> {
    use futures::TryStreamExt as _;
    let keys: Vec<String> = views.keys().await?.try_collect().await?;
    let mut all = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(bytes) = views.get(&key).await? {
            all.push(serde_json::from_slice(&bytes)?);
        }
    }
    Ok(all)
}

/// Writes `view` unless the bucket already holds a view at least as new.
pub async fn upsert(views: &kv::Store, view: &OrderView) -> Result<(), HandlerError> {
    let key = view.order_id.to_string();
    let bytes: bytes::Bytes = serde_json::to_vec(view)
        .map_err(|e| HandlerError::Permanent(e.into()))?
        .into();
    // A handful of tries is plenty: each retry means someone else wrote a
    // newer view, so we usually stop at the position check.
    for _ in 0..5 {
        let entry = views
            .entry(&key)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))?;
        match entry {
            None => match views.create(&key, bytes.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                Err(e) => return Err(HandlerError::Transient(e.into())),
            },
            Some(entry) => {
                let current: Option<OrderView> = serde_json::from_slice(&entry.value).ok();
                if current.is_some_and(|c| c.position >= view.position) {
                    return Ok(());
                }
                match views.update(&key, bytes.clone(), entry.revision).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(HandlerError::Transient(e.into())),
                }
            }
        }
    }
    Err(HandlerError::Transient(anyhow::anyhow!(
        "view of {key} kept changing under the projection"
    )))
}
