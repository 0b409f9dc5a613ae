//! The read model (CQRS): one JSON document per order in the `orders_view`
//! key-value bucket, kept by the projection consumer and served by
//! `GET /orders/{id}` without touching the event store.
//!
//! The projection keeps each view equal to the fold of the order's events up
//! to `position`. Usually it can do that with the event in hand: the broker
//! stored every order event with the sequence of the order's previous event
//! (the optimistic-concurrency precondition of its append), so when the
//! stored view is at exactly that sequence, [`advance`] applies the event to
//! it with [`domain::evolve`](crate::domain::evolve). Otherwise (a view
//! behind by more than one event, an event handled out of order, a replay,
//! a lost race) it replays the order from the event store and writes the
//! result with [`upsert`] if it is newer than what the bucket holds. Writes
//! go with the entry's revision, so neither path can overwrite a newer view.
//! That makes the projection indifferent to redeliveries and to events of
//! one order being handled out of order or in parallel, and the bucket can
//! always be rebuilt from the events.

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use events::{LineItem, OrderId};
use platform::HandlerError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{self, Order, Status};

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

impl OrderView {
    /// The order state this view shows (the inverse of [`OrderView::new`]),
    /// to apply the order's next event to.
    pub fn state(&self) -> Order {
        Order {
            order_id: self.order_id,
            status: self.status,
            customer_email: self.customer_email.clone(),
            items: self.items.clone(),
            total_cents: self.total_cents,
            payment_id: self.payment_id.clone(),
            tracking_number: self.tracking_number.clone(),
            cancellation_reason: self.cancellation_reason.clone(),
            refund_id: self.refund_id.clone(),
            placed_at: self.placed_at,
            paid_at: self.paid_at,
            shipped_at: self.shipped_at,
            cancelled_at: self.cancelled_at,
            refunded_at: self.refunded_at,
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

/// Applies the event stored at `position` to the order's view if the view is
/// at `previous`, the order's event before it (0: the event is the first).
/// Returns `false` when it cannot tell the result would be right (the view
/// is further behind, or another writer got in first): the caller replays.
pub async fn advance(
    views: &kv::Store,
    event: &events::Event,
    previous: u64,
    position: u64,
) -> Result<bool, HandlerError> {
    let key = event.order_id().to_string();
    let (current, revision) = read(views, &key).await?;
    let state = match &current {
        Some(view) if view.position >= position => return Ok(true),
        Some(view) if view.position == previous => Some(view.state()),
        None if previous == 0 => None,
        _ => return Ok(false),
    };
    let Some(order) = domain::evolve(state, event) else {
        return Ok(false);
    };
    write(views, &key, &OrderView::new(&order, position), revision).await
}

/// Writes `view` unless the bucket already holds a view at least as new.
pub async fn upsert(views: &kv::Store, view: &OrderView) -> Result<(), HandlerError> {
    let key = view.order_id.to_string();
    // A handful of tries is plenty: each retry means someone else wrote a
    // newer view, so we usually stop at the position check.
    for _ in 0..5 {
        let (current, revision) = read(views, &key).await?;
        if current.is_some_and(|c| c.position >= view.position) {
            return Ok(());
        }
        if write(views, &key, view, revision).await? {
            return Ok(());
        }
    }
    Err(HandlerError::Transient(anyhow::anyhow!(
        "view of {key} kept changing under the projection"
    )))
}

/// The view stored under `key` and the entry's revision. A deleted or purged
/// entry (`ops views rebuild`) has a revision but no view.
async fn read(
    views: &kv::Store,
    key: &str,
) -> Result<(Option<OrderView>, Option<u64>), HandlerError> {
    let entry = views
        .entry(key)
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?;
    Ok(match entry {
        None => (None, None),
        Some(entry) => (
            serde_json::from_slice(&entry.value).ok(),
            Some(entry.revision),
        ),
    })
}

/// Writes `view` if the entry is still at `revision` (`None`: there is no
/// entry yet). `false` means another writer got in first.
async fn write(
    views: &kv::Store,
    key: &str,
    view: &OrderView,
    revision: Option<u64>,
) -> Result<bool, HandlerError> {
    let bytes: bytes::Bytes = serde_json::to_vec(view)
        .map_err(|e| HandlerError::Permanent(e.into()))?
        .into();
    match revision {
        None => match views.create(key, bytes).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(HandlerError::Transient(e.into())),
        },
        Some(revision) => match views.update(key, bytes, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(HandlerError::Transient(e.into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use events::{Event, OrderCancelled, OrderFulfilled, OrderPaid, OrderRefunded};
    use time::OffsetDateTime;

    use super::*;

    /// Every event an order can go through, in an order the saga allows.
    fn history() -> Vec<Event> {
        let order_id = OrderId::from_idempotency_key("view-test");
        let at = OffsetDateTime::UNIX_EPOCH;
        let email = "ada@example.com".to_owned();
        vec![
            Event::OrderPlaced(crate::domain::tests::placed(order_id)),
            Event::OrderPaid(OrderPaid {
                order_id,
                customer_email: email.clone(),
                payment_id: "pay_1".into(),
                amount_cents: 1500,
                paid_at: at,
            }),
            Event::OrderCancelled(OrderCancelled {
                order_id,
                customer_email: email.clone(),
                reason: "changed my mind".into(),
                cancelled_at: at,
            }),
            Event::OrderRefunded(OrderRefunded {
                order_id,
                refund_id: "re_1".into(),
                amount_cents: 1500,
                refunded_at: at,
            }),
        ]
    }

    /// The incremental projection is only right if a view turns back into
    /// the exact state it was made from: then applying the next event to it
    /// equals replaying the order.
    #[test]
    fn a_view_holds_the_whole_state_it_was_made_from() {
        let mut replayed = None;
        for (position, event) in (1..).zip(history()) {
            replayed = domain::evolve(replayed, &event);
            let order = replayed.clone().expect("an order after its first event");
            assert_eq!(OrderView::new(&order, position).state(), order);
        }
        let shipped = OrderFulfilled {
            order_id: history()[0].order_id(),
            customer_email: "ada@example.com".into(),
            tracking_number: "TRK1".into(),
            shipped_at: OffsetDateTime::UNIX_EPOCH,
        };
        let paid = domain::evolve(None, &history()[0])
            .and_then(|o| domain::evolve(Some(o), &history()[1]))
            .expect("paid");
        let from_view = OrderView::new(&paid, 2).state();
        assert_eq!(
            domain::evolve(Some(from_view), &Event::OrderFulfilled(shipped.clone())),
            domain::evolve(Some(paid), &Event::OrderFulfilled(shipped)),
        );
    }
}
