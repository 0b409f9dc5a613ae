//! `PaymentProcessed` → schedule one shipment → `OrderShipped`.

use events::{Envelope, Event, OrderId, OrderShipped, PaymentProcessed};
use platform::HandlerError;
use platform::guard::{self, Freshness};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Shipping;

/// The record of a scheduled shipment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shipment {
    tracking_number: String,
    #[serde(with = "time::serde::rfc3339")]
    scheduled_at: OffsetDateTime,
}

pub async fn handle(shipping: &Shipping, paid: &PaymentProcessed) -> Result<(), HandlerError> {
    let shipment = schedule_once(shipping, paid.order_id).await?;
    let event = Event::OrderShipped(OrderShipped {
        order_id: paid.order_id,
        customer_email: paid.customer_email.clone(),
        tracking_number: shipment.tracking_number,
        shipped_at: shipment.scheduled_at,
    });
    let envelope = Envelope::derived(&event, &format!("shipment/{}", paid.order_id));
    shipping
        .bus
        .publish(&event, &envelope)
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?;
    Ok(())
}

/// The carrier's tracking number for an order: derived from the order id, so
/// scheduling the same order twice can only ever name one parcel.
pub fn tracking_number(order_id: OrderId) -> String {
    let hex = order_id.as_uuid().simple().to_string().to_uppercase();
    format!("TRK{}", &hex[..12])
}

/// Returns the order's shipment, scheduling it only if none is recorded.
async fn schedule_once(shipping: &Shipping, order_id: OrderId) -> Result<Shipment, HandlerError> {
    let (shipment, freshness) =
        guard::once(&shipping.shipments, &order_id.to_string(), || Shipment {
            tracking_number: tracking_number(order_id),
            scheduled_at: OffsetDateTime::now_utc(),
        })
        .await?;
    if freshness == Freshness::Repeat {
        tracing::info!(%order_id, "already scheduled, republishing the shipment");
    }
    Ok(shipment)
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
