//! `OrderPlaced` → charge once → `PaymentProcessed` or `PaymentFailed`.

use events::{Envelope, Event, OrderPlaced, PaymentFailed, PaymentProcessed};
use platform::HandlerError;
use platform::guard::{self, Freshness};
use time::OffsetDateTime;

use crate::Payment;
use crate::gateway::{self, Charge};

pub async fn handle(payment: &Payment, placed: &OrderPlaced) -> Result<(), HandlerError> {
    let charge = charge_once(payment, placed).await?;
    let now = OffsetDateTime::now_utc();
    let event = match charge {
        Charge::Voided => {
            tracing::info!(order_id = %placed.order_id, "cancelled before payment, not charging");
            return Ok(());
        }
        Charge::Approved {
            payment_id,
            amount_cents,
        } => Event::PaymentProcessed(PaymentProcessed {
            order_id: placed.order_id,
            payment_id,
            customer_email: placed.customer_email.clone(),
            amount_cents,
            processed_at: now,
        }),
        Charge::Declined { reason } => Event::PaymentFailed(PaymentFailed {
            order_id: placed.order_id,
            customer_email: placed.customer_email.clone(),
            reason,
            failed_at: now,
        }),
    };
    // One payment outcome per order: the id derives from the order, so a
    // republish after a redelivery is dropped by the broker.
    let envelope = Envelope::derived(&event, &format!("payment/{}", placed.order_id));
    payment.bus.publish(&event, &envelope).await?;
    Ok(())
}

/// Returns the order's recorded charge, charging the gateway only if there
/// is none yet.
async fn charge_once(payment: &Payment, placed: &OrderPlaced) -> Result<Charge, HandlerError> {
    let (charge, freshness) = guard::once(&payment.charges, &placed.order_id.to_string(), || {
        let _span =
            tracing::info_span!("gateway charge", amount_cents = placed.total_cents).entered();
        gateway::charge(placed.order_id, &placed.payment_token, placed.total_cents)
    })
    .await?;
    if freshness == Freshness::Repeat {
        tracing::info!(order_id = %placed.order_id, "already charged, republishing the outcome");
    }
    Ok(charge)
}
