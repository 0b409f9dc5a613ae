//! `OrderCancelled` → refund once → `PaymentRefunded` (the saga's
//! compensation), or make sure the order is never charged.

use events::{Envelope, Event, OrderCancelled, PaymentRefunded};
use platform::HandlerError;
use platform::guard;
use time::OffsetDateTime;

use crate::Payment;
use crate::gateway::{self, Charge};

pub async fn handle(payment: &Payment, cancelled: &OrderCancelled) -> Result<(), HandlerError> {
    let order_id = cancelled.order_id;
    // The same create-if-absent record as the charge: if `OrderPlaced` has
    // not been handled yet, this voids the order so it is never charged; if
    // it has, this returns the charge to refund. Of the two handlers racing on
    // one order, exactly one writes the record.
    let (charge, _) =
        guard::once(&payment.charges, &order_id.to_string(), || Charge::Voided).await?;
    let Charge::Approved {
        payment_id,
        amount_cents,
    } = charge
    else {
        tracing::info!(%order_id, "nothing was charged, nothing to refund");
        return Ok(());
    };
    let (refund, _) = guard::once(&payment.refunds, &order_id.to_string(), || {
        let _span = tracing::info_span!("gateway refund", amount_cents).entered();
        gateway::refund(order_id, amount_cents)
    })
    .await?;
    let event = Event::PaymentRefunded(PaymentRefunded {
        order_id,
        refund_id: refund.refund_id,
        payment_id,
        customer_email: cancelled.customer_email.clone(),
        amount_cents: refund.amount_cents,
        refunded_at: OffsetDateTime::now_utc(),
    });
    let envelope = Envelope::derived(&event, &format!("refund/{order_id}"));
    payment.bus.publish(&event, &envelope).await?;
    Ok(())
}
