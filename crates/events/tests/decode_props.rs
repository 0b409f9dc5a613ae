//! Property tests for [`events::decode`], the door every message comes
//! through: whatever a publisher (or an intruder with publish rights) puts in
//! the headers and the payload, `decode` answers with a typed event or a
//! reason, never a panic; what it accepts is consistent; and every event the
//! services publish comes back out unchanged.

use std::collections::BTreeMap;

use events::{
    DecodeError, EmailKind, EmailSent, Envelope, Event, EventKind, LineItem, OrderCancelled,
    OrderFulfilled, OrderId, OrderPaid, OrderPlaced, OrderRefunded, OrderShipped, PaymentFailed,
    PaymentProcessed, PaymentRefunded, ShipmentCancelled, decode, headers,
};
use proptest::prelude::*;
use proptest::sample::select;
use time::OffsetDateTime;
use uuid::Uuid;

/// The headers `decode` requires.
const REQUIRED: [&str; 6] = [
    headers::SPEC_VERSION,
    headers::TYPE,
    headers::ID,
    headers::TIME,
    headers::SOURCE,
    headers::SUBJECT,
];

fn order_id() -> impl Strategy<Value = OrderId> {
    any::<u128>().prop_map(|n| {
        Uuid::from_u128(n)
            .to_string()
            .parse()
            .unwrap_or_else(|_| OrderId::new())
    })
}

/// Any instant RFC 3339 can write: years 1970 to 9999, to the nanosecond.
fn instant() -> impl Strategy<Value = OffsetDateTime> {
    (0i64..=253_402_300_799, 0u32..1_000_000_000).prop_map(|(secs, nanos)| {
        OffsetDateTime::from_unix_timestamp(secs)
            .and_then(|t| t.replace_nanosecond(nanos))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    })
}

fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn email_kind() -> impl Strategy<Value = EmailKind> {
    prop_oneof![
        Just(EmailKind::OrderConfirmation),
        Just(EmailKind::OrderCancelled),
        Just(EmailKind::OrderShipped),
        Just(EmailKind::PaymentRefunded),
    ]
}

/// Any event of `kind`, with arbitrary field values. The match has no
/// wildcard, so a new kind of event does not compile until it is covered.
fn event_of(kind: EventKind) -> BoxedStrategy<Event> {
    match kind {
        EventKind::OrderPlaced => (
            order_id(),
            text(),
            prop::collection::vec(
                (text(), any::<u32>(), any::<u64>()).prop_map(|(sku, quantity, price)| LineItem {
                    sku,
                    quantity,
                    unit_price_cents: price,
                }),
                0..4,
            ),
            any::<u64>(),
            text(),
            instant(),
        )
            .prop_map(|(order_id, customer_email, items, total, token, at)| {
                Event::OrderPlaced(OrderPlaced {
                    order_id,
                    customer_email,
                    items,
                    total_cents: total,
                    payment_token: token,
                    placed_at: at,
                })
            })
            .boxed(),
        EventKind::OrderPaid => (order_id(), text(), text(), any::<u64>(), instant())
            .prop_map(
                |(order_id, customer_email, payment_id, amount_cents, paid_at)| {
                    Event::OrderPaid(OrderPaid {
                        order_id,
                        customer_email,
                        payment_id,
                        amount_cents,
                        paid_at,
                    })
                },
            )
            .boxed(),
        EventKind::OrderFulfilled => (order_id(), text(), text(), instant())
            .prop_map(|(order_id, customer_email, tracking_number, shipped_at)| {
                Event::OrderFulfilled(OrderFulfilled {
                    order_id,
                    customer_email,
                    tracking_number,
                    shipped_at,
                })
            })
            .boxed(),
        EventKind::OrderCancelled => (order_id(), text(), text(), instant())
            .prop_map(|(order_id, customer_email, reason, cancelled_at)| {
                Event::OrderCancelled(OrderCancelled {
                    order_id,
                    customer_email,
                    reason,
                    cancelled_at,
                })
            })
            .boxed(),
        EventKind::OrderRefunded => (order_id(), text(), any::<u64>(), instant())
            .prop_map(|(order_id, refund_id, amount_cents, refunded_at)| {
                Event::OrderRefunded(OrderRefunded {
                    order_id,
                    refund_id,
                    amount_cents,
                    refunded_at,
                })
            })
            .boxed(),
        EventKind::PaymentProcessed => (order_id(), text(), text(), any::<u64>(), instant())
            .prop_map(
                |(order_id, payment_id, customer_email, amount_cents, processed_at)| {
                    Event::PaymentProcessed(PaymentProcessed {
                        order_id,
                        payment_id,
                        customer_email,
                        amount_cents,
                        processed_at,
                    })
                },
            )
            .boxed(),
        EventKind::PaymentFailed => (order_id(), text(), text(), instant())
            .prop_map(|(order_id, customer_email, reason, failed_at)| {
                Event::PaymentFailed(PaymentFailed {
                    order_id,
                    customer_email,
                    reason,
                    failed_at,
                })
            })
            .boxed(),
        EventKind::PaymentRefunded => (order_id(), text(), text(), text(), any::<u64>(), instant())
            .prop_map(
                |(order_id, refund_id, payment_id, customer_email, amount_cents, refunded_at)| {
                    Event::PaymentRefunded(PaymentRefunded {
                        order_id,
                        refund_id,
                        payment_id,
                        customer_email,
                        amount_cents,
                        refunded_at,
                    })
                },
            )
            .boxed(),
        EventKind::OrderShipped => (order_id(), text(), text(), instant())
            .prop_map(|(order_id, customer_email, tracking_number, shipped_at)| {
                Event::OrderShipped(OrderShipped {
                    order_id,
                    customer_email,
                    tracking_number,
                    shipped_at,
                })
            })
            .boxed(),
        EventKind::ShipmentCancelled => (order_id(), text(), instant())
            .prop_map(|(order_id, tracking_number, cancelled_at)| {
                Event::ShipmentCancelled(ShipmentCancelled {
                    order_id,
                    tracking_number,
                    cancelled_at,
                })
            })
            .boxed(),
        EventKind::EmailSent => (order_id(), email_kind(), text(), text(), instant())
            .prop_map(|(order_id, kind, to, subject, sent_at)| {
                Event::EmailSent(EmailSent {
                    order_id,
                    kind,
                    to,
                    subject,
                    sent_at,
                })
            })
            .boxed(),
    }
}

/// Any event of any kind.
fn event() -> impl Strategy<Value = Event> {
    select(EventKind::ALL.to_vec()).prop_flat_map(event_of)
}

/// Any event with an envelope as a service would publish it (an arbitrary
/// id, time and source; type and subject follow from the event).
fn published() -> impl Strategy<Value = (Envelope, Event)> {
    (event(), any::<u128>(), instant(), text()).prop_map(|(event, id, time, source)| {
        let envelope = Envelope {
            id: Uuid::from_u128(id),
            kind: event.kind(),
            source,
            time,
            subject: event.order_id().to_string(),
        };
        (envelope, event)
    })
}

fn headers_of(envelope: &Envelope) -> BTreeMap<String, String> {
    envelope
        .to_headers()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

fn decode_with(
    headers: &BTreeMap<String, String>,
    payload: &[u8],
) -> Result<(Envelope, Event), DecodeError> {
    decode(|name| headers.get(name).map(String::as_str), payload)
}

/// A header value that is sometimes right, sometimes nearly right and
/// sometimes anything at all, so the search reaches every check in `decode`.
fn header_value(name: &'static str) -> BoxedStrategy<String> {
    let valid: BoxedStrategy<String> = match name {
        headers::SPEC_VERSION => Just("1.0".to_owned()).boxed(),
        headers::TYPE => select(EventKind::ALL.to_vec())
            .prop_map(|k| k.ce_type().to_owned())
            .boxed(),
        headers::ID | headers::SUBJECT => any::<u128>()
            .prop_map(|n| Uuid::from_u128(n).to_string())
            .boxed(),
        headers::TIME => instant()
            .prop_map(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            })
            .boxed(),
        _ => text().boxed(),
    };
    prop_oneof![
        3 => valid,
        1 => text(),
        1 => "[0-9a-f.:TZ+-]{0,40}",
    ]
    .boxed()
}

/// Arbitrary headers: each required header present or not, with a value of
/// any quality, plus some noise.
fn any_headers() -> impl Strategy<Value = BTreeMap<String, String>> {
    let required: Vec<BoxedStrategy<Option<(String, String)>>> = REQUIRED
        .iter()
        .map(|&name| {
            prop::option::weighted(
                0.9,
                header_value(name).prop_map(move |v| (name.to_owned(), v)),
            )
            .boxed()
        })
        .collect();
    (required, prop::collection::btree_map(text(), text(), 0..3)).prop_map(|(required, noise)| {
        let mut headers = noise;
        headers.extend(required.into_iter().flatten());
        headers
    })
}

/// Payload bytes: JSON of a real event (of any kind), JSON-ish text, or
/// arbitrary bytes.
fn any_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => event().prop_map(|e| e.to_json()),
        1 => text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => r#"\{("[a-z_]{1,12}": ?("[^"]{0,8}"|[0-9-]{1,20}|null|\[\]|\{\}),? ?){0,6}\}"#
            .prop_map(String::into_bytes),
    ]
}

/// One change to a valid message.
#[derive(Debug, Clone)]
enum Mutation {
    Remove(&'static str),
    Replace(&'static str, String),
    Truncate(usize),
    Payload(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let name = || select(REQUIRED.to_vec());
    prop_oneof![
        name().prop_map(Mutation::Remove),
        name().prop_flat_map(|n| header_value(n).prop_map(move |v| Mutation::Replace(n, v))),
        any::<usize>().prop_map(Mutation::Truncate),
        any_payload().prop_map(Mutation::Payload),
    ]
}

/// A message as a service would publish it, with up to three things changed
/// (or none): most of these decode, or fail in exactly one check.
fn nearly_valid() -> impl Strategy<Value = (BTreeMap<String, String>, Vec<u8>)> {
    (published(), prop::collection::vec(mutation(), 0..3)).prop_map(
        |((envelope, event), mutations)| {
            let mut headers = headers_of(&envelope);
            let mut payload = event.to_json();
            for mutation in mutations {
                match mutation {
                    Mutation::Remove(name) => {
                        headers.remove(name);
                    }
                    Mutation::Replace(name, value) => {
                        headers.insert(name.to_owned(), value);
                    }
                    Mutation::Truncate(at) => payload.truncate(at % (payload.len() + 1)),
                    Mutation::Payload(bytes) => payload = bytes,
                }
            }
            (headers, payload)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every event the services can publish decodes to itself.
    #[test]
    fn every_valid_event_round_trips((envelope, event) in published()) {
        let headers = headers_of(&envelope);
        let (decoded_envelope, decoded) = decode_with(&headers, &event.to_json())
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(decoded, event);
        prop_assert_eq!(decoded_envelope, envelope);
        prop_assert_eq!(&headers[headers::MSG_ID], &headers[headers::ID]);
    }

    /// Whatever arrives, `decode` answers instead of panicking, and what it
    /// accepts agrees with itself: the payload's order is the `ce-subject`
    /// and its kind is the `ce-type`.
    #[test]
    fn arbitrary_messages_never_panic_and_accepted_ones_are_consistent(
        (headers, payload) in prop_oneof![(any_headers(), any_payload()), nearly_valid()],
    ) {
        if let Ok((envelope, event)) = decode_with(&headers, &payload) {
            prop_assert_eq!(event.kind(), envelope.kind);
            prop_assert_eq!(&headers[headers::TYPE], envelope.kind.ce_type());
            prop_assert_eq!(&headers[headers::SUBJECT], &event.order_id().to_string());
            prop_assert_eq!(&envelope.subject, &event.order_id().to_string());
            prop_assert_eq!(&headers[headers::SPEC_VERSION], "1.0");
            prop_assert_eq!(&headers[headers::SOURCE], &envelope.source);
        }
    }

    /// A valid event without one of its required headers is refused, naming
    /// the missing header.
    #[test]
    fn a_missing_header_is_named((envelope, event) in published(), missing in select(REQUIRED.to_vec())) {
        let mut headers = headers_of(&envelope);
        headers.remove(missing);
        prop_assert_eq!(
            decode_with(&headers, &event.to_json()).err(),
            Some(DecodeError::MissingHeader(missing))
        );
    }

    /// A valid event's headers with a payload that is not that event are
    /// refused: arbitrary bytes, or the payload of another order.
    #[test]
    fn a_foreign_or_broken_payload_is_refused(
        (envelope, event) in published(),
        other in event(),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let headers = headers_of(&envelope);
        if other.order_id() != event.order_id() {
            prop_assert!(decode_with(&headers, &other.to_json()).is_err());
        }
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
            let refused = decode_with(&headers, &bytes);
            prop_assert!(
                matches!(refused, Err(DecodeError::MalformedPayload { .. })),
                "{:?}", refused
            );
        }
    }
}
