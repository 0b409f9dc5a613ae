//! What the order service does with the events it consumes. Each arm turns
//! an event into a command on the aggregate, or, for the projection, into a
//! fresh view. The same shape as every other service's handlers.

use events::Event;
use platform::{Delivery, HandlerError};

use crate::Order;
use crate::domain::{Command, Rejection};
use crate::store::{Outcome, StoreError};
use crate::view::{self, OrderView};

/// `PaymentProcessed` → `OrderPaid`; `PaymentFailed` → `OrderCancelled`;
/// `PaymentRefunded` → `OrderRefunded`; `OrderShipped` → `OrderFulfilled`.
pub async fn on_outcome(service: &Order, delivery: &Delivery) -> Result<(), HandlerError> {
    let order_id = delivery.event.order_id();
    let command = match &delivery.event {
        Event::PaymentProcessed(e) => Command::RecordPayment {
            payment_id: e.payment_id.clone(),
            amount_cents: e.amount_cents,
            at: e.processed_at,
        },
        Event::PaymentFailed(e) => Command::Cancel {
            reason: format!("payment failed: {}", e.reason),
            at: e.failed_at,
        },
        Event::OrderShipped(e) => Command::RecordShipment {
            tracking_number: e.tracking_number.clone(),
            at: e.shipped_at,
        },
        Event::PaymentRefunded(e) => Command::RecordRefund {
            refund_id: e.refund_id.clone(),
            amount_cents: e.amount_cents,
            at: e.refunded_at,
        },
        other => return Err(HandlerError::unexpected(other)),
    };
    let cause = delivery.envelope.id.to_string();
    match service.store()?.execute(order_id, command, &cause).await {
        Ok(Outcome { changed: true, .. }) => {
            tracing::debug!(%order_id, "order updated");
            Ok(())
        }
        Ok(Outcome { changed: false, .. }) => {
            tracing::debug!(%order_id, "nothing to record");
            Ok(())
        }
        Err(error @ (StoreError::Unavailable(_) | StoreError::Contended)) => {
            Err(HandlerError::Transient(error.into()))
        }
        Err(error @ StoreError::Rejected(Rejection::NotYet(_))) => {
            Err(HandlerError::Transient(error.into()))
        }
        Err(error) => Err(HandlerError::Permanent(error.into())),
    }
}

/// Any order event → the order's view: the event applied to the view when
/// the view is at the order's previous event, else the order replayed from
/// the event store (see [`view`]).
pub async fn project(service: &Order, delivery: &Delivery) -> Result<(), HandlerError> {
    if let Some(previous) = delivery.previous_sequence
        && view::advance(
            service.views()?,
            &delivery.event,
            previous,
            delivery.stream_sequence,
        )
        .await?
    {
        return Ok(());
    }
    let order_id = delivery.event.order_id();
    let loaded = service
        .store()?
        .load(order_id)
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?;
    let Some(state) = loaded.state else {
        return Err(HandlerError::Permanent(anyhow::anyhow!(
            "order {order_id} has events but no OrderPlaced"
        )));
    };
    view::upsert(service.views()?, &OrderView::new(&state, loaded.version)).await
}
