//! `OrderCancelled` → make sure the order never ships, or recall a shipment
//! already scheduled → `ShipmentCancelled` (the saga's compensation).

use events::{Envelope, Event, OrderCancelled, ShipmentCancelled};
use platform::HandlerError;
use platform::guard;
use time::OffsetDateTime;

use crate::{Record, Shipping};

pub async fn handle(shipping: &Shipping, cancelled: &OrderCancelled) -> Result<(), HandlerError> {
    let order_id = cancelled.order_id;
    let (record, _) = guard::once(&shipping.shipments, &order_id.to_string(), || {
        Record::Cancelled {
            cancelled_at: OffsetDateTime::now_utc(),
        }
    })
    .await?;
    let Record::Scheduled {
        tracking_number, ..
    } = record
    else {
        tracing::info!(%order_id, "nothing scheduled; the order will never ship");
        return Ok(());
    };
    // The shipment was scheduled before the cancellation reached us; the
    // order service accepted the cancellation, so the parcel is called back.
    let event = Event::ShipmentCancelled(ShipmentCancelled {
        order_id,
        tracking_number,
        cancelled_at: OffsetDateTime::now_utc(),
    });
    let envelope = Envelope::derived(&event, &format!("recall/{order_id}"));
    shipping.bus.publish(&event, &envelope).await?;
    Ok(())
}
