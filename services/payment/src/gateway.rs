//! A simulated card gateway with Stripe's test tokens.
//!
//! `tok_visa`, `tok_mastercard` and `tok_amex` are approved;
//! `tok_chargeDeclined` is declined; anything else is declined as an unknown
//! token. Like a real gateway it takes an idempotency key (the order id) and
//! derives the payment id from it, so asking twice for the same order yields
//! the same payment, never a second charge.

use events::OrderId;
use serde::{Deserialize, Serialize};

/// What the gateway answered for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Charge {
    Approved {
        payment_id: String,
        amount_cents: u64,
    },
    Declined {
        reason: String,
    },
    /// The order was cancelled before it was charged: it never will be.
    Voided,
}

/// A refund of an approved charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub amount_cents: u64,
}

/// Refunds a charge, once per order: the refund id derives from the order,
/// so asking twice names the same refund.
pub fn refund(order_id: OrderId, amount_cents: u64) -> Refund {
    Refund {
        refund_id: format!("re_{}", order_id.as_uuid().simple()),
        amount_cents,
    }
}

/// Charges `amount_cents` to the card behind `token`, once per order.
pub fn charge(order_id: OrderId, token: &str, amount_cents: u64) -> Charge {
    match token {
        "tok_visa" | "tok_mastercard" | "tok_amex" => Charge::Approved {
            payment_id: format!("pay_{}", order_id.as_uuid().simple()),
            amount_cents,
        },
        "tok_chargeDeclined" => Charge::Declined {
            reason: "card_declined: the card was declined".into(),
        },
        _ => Charge::Declined {
            reason: "invalid_token: the payment token is not known".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tokens_behave_like_stripe() {
        let id = OrderId::new();
        assert!(matches!(
            charge(id, "tok_visa", 100),
            Charge::Approved {
                amount_cents: 100,
                ..
            }
        ));
        assert!(matches!(
            charge(id, "tok_chargeDeclined", 100),
            Charge::Declined { .. }
        ));
        assert!(matches!(
            charge(id, "tok_bogus", 100),
            Charge::Declined { .. }
        ));
    }

    #[test]
    fn the_same_order_gets_the_same_payment() {
        let id = OrderId::new();
        assert_eq!(charge(id, "tok_visa", 5), charge(id, "tok_visa", 5));
        assert_ne!(
            charge(id, "tok_visa", 5),
            charge(OrderId::new(), "tok_visa", 5)
        );
    }
}
