//! `OrderPaid` → schedule one shipment → `OrderShipped`.

use events::{Envelope, Event, OrderId, OrderPaid, OrderShipped};
use platform::HandlerError;
use platform::guard::{self, Freshness};
use time::OffsetDateTime;

use crate::{Record, Shipping};

pub async fn handle(shipping: &Shipping, paid: &OrderPaid) -> Result<(), HandlerError> {
    let order_id = paid.order_id;
    // One record per order decides between shipping and not: whichever of
    // this handler and the `OrderCancelled` handler writes it first wins.
    let (record, freshness) = guard::once(&shipping.shipments, &order_id.to_string(), || {
        Record::Scheduled {
            tracking_number: tracking_number(order_id),
            scheduled_at: OffsetDateTime::now_utc(),
        }
    })
    .await?;
    let (tracking_number, scheduled_at) = match record {
        Record::Scheduled {
            tracking_number,
            scheduled_at,
        } => (tracking_number, scheduled_at),
        Record::Cancelled { .. } => {
            tracing::info!(%order_id, "the order was cancelled first, not shipping");
            return Ok(());
        }
    };
    if freshness == Freshness::Repeat {
        tracing::info!(%order_id, "already scheduled, republishing the shipment");
    }
    let event = Event::OrderShipped(OrderShipped {
        order_id,
        customer_email: paid.customer_email.clone(),
        tracking_number,
        shipped_at: scheduled_at,
    });
    let envelope = Envelope::derived(&event, &format!("shipment/{order_id}"));
    shipping.bus.publish(&event, &envelope).await?;
    Ok(())
}

/// The carrier's tracking number for an order: derived from the order id, so
/// scheduling the same order twice can only ever name one parcel.
pub fn tracking_number(order_id: OrderId) -> String {
    let hex = order_id.as_uuid().simple().to_string().to_uppercase();
    format!("TRK{}", &hex[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_numbers_are_stable_per_order() {
        let id = OrderId::new();
        assert_eq!(tracking_number(id), tracking_number(id));
        assert!(tracking_number(id).starts_with("TRK"));
        assert_eq!(tracking_number(id).len(), 15);
        assert_ne!(tracking_number(id), tracking_number(OrderId::new()));
    }
}
