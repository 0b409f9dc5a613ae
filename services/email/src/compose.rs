//! What each email says. Pure functions, so the wording is unit-tested.

use events::{EmailKind, Event, OrderId};

/// An email ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub order_id: OrderId,
    pub kind: EmailKind,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The email an event calls for, if any. Every subject carries the order id
/// so the customer (and a test) can match the email to the order.
pub fn for_event(event: &Event) -> Option<Email> {
    let (order_id, kind, to, subject, body) = match event {
        Event::OrderPlaced(e) => {
            let lines: Vec<String> = e
                .items
                .iter()
                .map(|i| {
                    format!(
                        "  {} x {} at {}",
                        i.quantity,
                        i.sku,
                        money(i.unit_price_cents)
                    )
                })
                .collect();
            (
                e.order_id,
                EmailKind::OrderConfirmation,
                &e.customer_email,
                format!("Order {} confirmed", e.order_id),
                format!(
                    "Thank you for your order {}.\n\n{}\n\nTotal: {}\n\nWe will email you again when it ships.\n",
                    e.order_id,
                    lines.join("\n"),
                    money(e.total_cents)
                ),
            )
        }
        Event::OrderCancelled(e) => (
            e.order_id,
            EmailKind::OrderCancelled,
            &e.customer_email,
            format!("Order {} cancelled", e.order_id),
            format!(
                "Your order {} was cancelled: {}.\n\nIf you were charged, the refund follows in a separate email.\n",
                e.order_id, e.reason
            ),
        ),
        Event::PaymentRefunded(e) => (
            e.order_id,
            EmailKind::PaymentRefunded,
            &e.customer_email,
            format!("Order {} refunded", e.order_id),
            format!(
                "We refunded {} for your cancelled order {} (refund {}).\n",
                money(e.amount_cents),
                e.order_id,
                e.refund_id
            ),
        ),
        Event::OrderFulfilled(e) => (
            e.order_id,
            EmailKind::OrderShipped,
            &e.customer_email,
            format!("Order {} shipped", e.order_id),
            format!(
                "Your order {} is on its way.\n\nTracking number: {}\n",
                e.order_id, e.tracking_number
            ),
        ),
        _ => return None,
    };
    Some(Email {
        order_id,
        kind,
        to: to.clone(),
        subject,
        body,
    })
}

fn money(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{LineItem, OrderPlaced};
    use time::OffsetDateTime;

    #[test]
    fn confirmation_names_the_order_and_the_total() {
        let id = OrderId::new();
        let email = for_event(&Event::OrderPlaced(OrderPlaced {
            order_id: id,
            customer_email: "ada@example.com".into(),
            items: vec![LineItem {
                sku: "book".into(),
                quantity: 2,
                unit_price_cents: 1505,
            }],
            total_cents: 3010,
            payment_token: "tok_visa".into(),
            placed_at: OffsetDateTime::UNIX_EPOCH,
        }))
        .expect("an email");
        assert_eq!(email.kind, EmailKind::OrderConfirmation);
        assert_eq!(email.to, "ada@example.com");
        assert!(email.subject.contains(&id.to_string()));
        assert!(email.body.contains("$30.10"), "{}", email.body);
        assert!(email.body.contains("2 x book at $15.05"), "{}", email.body);
    }
}
