//! The order aggregate: pure decision logic, no I/O.
//!
//! An order's state is never stored; it is the left fold of its events with
//! [`evolve`]. Every change is a [`Command`] that [`decide`] turns into the
//! events it causes, given the current state. Deciding twice on the same
//! command yields no new events the second time, which is what makes the
//! handlers that call it idempotent.

use events::{
    Event, LineItem, OrderCancelled, OrderFulfilled, OrderId, OrderPaid, OrderPlaced, OrderRefunded,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The state of an order that exists, as folded from its events: what the
/// commands decide on and what the read model shows. (The payment token
/// stays in `OrderPlaced`; nothing decided here needs it.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: OrderId,
    pub status: Status,
    pub customer_email: String,
    pub items: Vec<LineItem>,
    pub total_cents: u64,
    pub payment_id: Option<String>,
    pub tracking_number: Option<String>,
    pub cancellation_reason: Option<String>,
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
}

/// Something asked of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Place a new order (from `POST /orders`).
    Place(OrderPlaced),
    /// Payment went through (from `PaymentProcessed`).
    RecordPayment {
        payment_id: String,
        amount_cents: u64,
        at: OffsetDateTime,
    },
    /// Cancel the order (from `PaymentFailed`, or the customer's
    /// `POST /orders/{id}/cancel`).
    Cancel { reason: String, at: OffsetDateTime },
    /// The charge was refunded (from `PaymentRefunded`).
    RecordRefund {
        refund_id: String,
        amount_cents: u64,
        at: OffsetDateTime,
    },
    /// The parcel left (from `OrderShipped`).
    RecordShipment {
        tracking_number: String,
        at: OffsetDateTime,
    },
}

/// Why a command cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the order already exists")]
    AlreadyExists,
    #[error("the order does not exist")]
    NotFound,
    /// The command is valid but arrived before the fact it builds on (a
    /// shipment before the payment was recorded): retry it later.
    #[error("the order is {0}, not ready for this yet")]
    NotYet(&'static str),
    /// The order has moved past the point where this is possible (cancelling
    /// a shipped order).
    #[error("the order is already {0}")]
    TooLate(&'static str),
}

/// Applies one event to the state. Events are facts: they are applied
/// whatever they say, and ones that do not fit are ignored rather than
/// failing a replay.
pub fn evolve(state: Option<Order>, event: &Event) -> Option<Order> {
    match (state, event) {
        (None, Event::OrderPlaced(e)) => Some(Order {
            order_id: e.order_id,
            status: Status::Placed,
            customer_email: e.customer_email.clone(),
            items: e.items.clone(),
            total_cents: e.total_cents,
            payment_id: None,
            tracking_number: None,
            cancellation_reason: None,
            refund_id: None,
            placed_at: e.placed_at,
            paid_at: None,
            shipped_at: None,
            cancelled_at: None,
            refunded_at: None,
        }),
        (Some(mut order), Event::OrderPaid(e)) => {
            order.status = Status::Paid;
            order.payment_id = Some(e.payment_id.clone());
            order.paid_at = Some(e.paid_at);
            Some(order)
        }
        (Some(mut order), Event::OrderFulfilled(e)) => {
            order.status = Status::Shipped;
            order.tracking_number = Some(e.tracking_number.clone());
            order.shipped_at = Some(e.shipped_at);
            Some(order)
        }
        (Some(mut order), Event::OrderCancelled(e)) => {
            order.status = Status::Cancelled;
            order.cancellation_reason = Some(e.reason.clone());
            order.cancelled_at = Some(e.cancelled_at);
            Some(order)
        }
        (Some(mut order), Event::OrderRefunded(e)) => {
            order.refund_id = Some(e.refund_id.clone());
            order.refunded_at = Some(e.refunded_at);
            Some(order)
        }
        (state, _) => state,
    }
}

/// Decides which events a command causes. An empty list means the command
/// has been carried out before (or is moot), so there is nothing to do.
pub fn decide(state: Option<&Order>, command: Command) -> Result<Vec<Event>, Rejection> {
    use Status::*;
    let Some(order) = state else {
        return match command {
            Command::Place(placed) => Ok(vec![Event::OrderPlaced(placed)]),
            _ => Err(Rejection::NotFound),
        };
    };
    let order_id = order.order_id;
    match command {
        Command::Place(_) => Err(Rejection::AlreadyExists),
        Command::RecordPayment {
            payment_id,
            amount_cents,
            at,
        } => match order.status {
            Placed => Ok(vec![Event::OrderPaid(OrderPaid {
                order_id,
                customer_email: order.customer_email.clone(),
                payment_id,
                amount_cents,
                paid_at: at,
            })]),
            // Paid or shipped: recorded already. Cancelled: the payment
            // crossed the cancellation; payment refunds it on `OrderCancelled`.
            Paid | Shipped | Cancelled => Ok(vec![]),
        },
        Command::Cancel { reason, at } => match order.status {
            Placed | Paid => Ok(vec![Event::OrderCancelled(OrderCancelled {
                order_id,
                customer_email: order.customer_email.clone(),
                reason,
                cancelled_at: at,
            })]),
            Shipped => Err(Rejection::TooLate(Shipped.as_str())),
            Cancelled => Ok(vec![]),
        },
        Command::RecordRefund {
            refund_id,
            amount_cents,
            at,
        } => match (order.status, &order.refund_id) {
            (Cancelled, None) => Ok(vec![Event::OrderRefunded(OrderRefunded {
                order_id,
                refund_id,
                amount_cents,
                refunded_at: at,
            })]),
            _ => Ok(vec![]),
        },
        Command::RecordShipment {
            tracking_number,
            at,
        } => match order.status {
            Paid => Ok(vec![Event::OrderFulfilled(OrderFulfilled {
                order_id,
                customer_email: order.customer_email.clone(),
                tracking_number,
                shipped_at: at,
            })]),
            // Shipping saw the payment before we did; wait for it.
            Placed => Err(Rejection::NotYet(Placed.as_str())),
            // Cancelled: the cancellation won; shipping recalls the parcel
            // when it sees `OrderCancelled`.
            Shipped | Cancelled => Ok(vec![]),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A placed order, for this module's tests and the store's and view's.
    pub(crate) fn placed(order_id: OrderId) -> OrderPlaced {
        OrderPlaced {
            order_id,
            customer_email: "ada@example.com".into(),
            items: vec![LineItem {
                sku: "book".into(),
                quantity: 1,
                unit_price_cents: 1500,
            }],
            total_cents: 1500,
            payment_token: "tok_visa".into(),
            placed_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// Runs a command against the state and folds its events in.
    fn apply(state: Option<Order>, command: Command) -> (Option<Order>, usize) {
        let events = decide(state.as_ref(), command).expect("accepted");
        let n = events.len();
        (events.iter().fold(state, evolve), n)
    }

    fn pay() -> Command {
        Command::RecordPayment {
            payment_id: "pay_1".into(),
            amount_cents: 1500,
            at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn ship() -> Command {
        Command::RecordShipment {
            tracking_number: "TRK1".into(),
            at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn happy_path_goes_placed_paid_shipped() {
        let id = OrderId::new();
        let (state, _) = apply(None, Command::Place(placed(id)));
        assert_eq!(state.as_ref().map(|o| o.status), Some(Status::Placed));
        let (state, _) = apply(state, pay());
        assert_eq!(state.as_ref().map(|o| o.status), Some(Status::Paid));
        let (state, _) = apply(state, ship());
        let order = state.expect("exists");
        assert_eq!(order.status, Status::Shipped);
        assert_eq!(order.tracking_number.as_deref(), Some("TRK1"));
        assert_eq!(order.payment_id.as_deref(), Some("pay_1"));
    }

    #[test]
    fn repeated_commands_cause_nothing() {
        let (state, _) = apply(None, Command::Place(placed(OrderId::new())));
        let (state, first) = apply(state, pay());
        let (state, second) = apply(state, pay());
        assert_eq!((first, second), (1, 0));
        let (state, first) = apply(state, ship());
        let (_, second) = apply(state, ship());
        assert_eq!((first, second), (1, 0));
    }

    #[test]
    fn declined_payment_cancels_once() {
        let cancel = || Command::Cancel {
            reason: "card_declined".into(),
            at: OffsetDateTime::UNIX_EPOCH,
        };
        let (state, _) = apply(None, Command::Place(placed(OrderId::new())));
        let (state, first) = apply(state, cancel());
        let (state, second) = apply(state, cancel());
        assert_eq!((first, second), (1, 0));
        assert_eq!(state.as_ref().map(|o| o.status), Some(Status::Cancelled));
        // A cancelled order never ships.
        let (state, n) = apply(state, ship());
        assert_eq!(n, 0);
        assert_eq!(state.map(|o| o.status), Some(Status::Cancelled));
    }

    #[test]
    fn placing_twice_or_acting_on_nothing_is_rejected() {
        let id = OrderId::new();
        let (state, _) = apply(None, Command::Place(placed(id)));
        assert_eq!(
            decide(state.as_ref(), Command::Place(placed(id))),
            Err(Rejection::AlreadyExists)
        );
        assert_eq!(decide(None, pay()), Err(Rejection::NotFound));
    }

    #[test]
    fn a_paid_order_can_be_cancelled_and_refunded_once_but_a_shipped_one_cannot() {
        let cancel = || Command::Cancel {
            reason: "customer".into(),
            at: OffsetDateTime::UNIX_EPOCH,
        };
        let refund = || Command::RecordRefund {
            refund_id: "re_1".into(),
            amount_cents: 1500,
            at: OffsetDateTime::UNIX_EPOCH,
        };
        let (state, _) = apply(None, Command::Place(placed(OrderId::new())));
        let (state, _) = apply(state, pay());
        let (state, n) = apply(state, cancel());
        assert_eq!(n, 1);
        // The payment and the shipment that crossed the cancellation change nothing.
        let (state, n) = apply(state, pay());
        assert_eq!(n, 0);
        let (state, n) = apply(state, ship());
        assert_eq!(n, 0);
        let (state, first) = apply(state, refund());
        let (state, second) = apply(state, refund());
        assert_eq!((first, second), (1, 0));
        let order = state.expect("exists");
        assert_eq!(order.status, Status::Cancelled);
        assert_eq!(order.refund_id.as_deref(), Some("re_1"));

        let (state, _) = apply(None, Command::Place(placed(OrderId::new())));
        let (state, _) = apply(state, pay());
        let (state, _) = apply(state, ship());
        assert_eq!(
            decide(state.as_ref(), cancel()),
            Err(Rejection::TooLate("shipped"))
        );
    }

    #[test]
    fn a_shipment_before_the_payment_waits() {
        let (state, _) = apply(None, Command::Place(placed(OrderId::new())));
        assert_eq!(
            decide(state.as_ref(), ship()),
            Err(Rejection::NotYet("placed"))
        );
    }
}
