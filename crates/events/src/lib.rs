//! The event contract: the only types that cross service boundaries.
//!
//! Services never depend on each other's crates. Everything one service may
//! tell another is declared here, once:
//!
//! - [`Event`] is the closed set of facts the system publishes. Each variant
//!   has a versioned CloudEvents type (`order.placed.v1`), a subject under its
//!   producer's prefix that carries the order id (`orders.<id>.placed`), and a
//!   JSON payload struct.
//! - [`Envelope`] holds the CloudEvents 1.0 attributes that travel in NATS
//!   headers (binary content mode), so the payload stays plain JSON.
//! - [`streams`] names the JetStream streams and the subjects each one owns.
//! - [`decode`] turns raw headers and bytes into a typed event or a
//!   [`DecodeError`] that says exactly what was wrong, which the consumer
//!   dead-letters instead of crashing.
//! - [`asyncapi`] describes all of the above as an AsyncAPI 3.0 document,
//!   generated from these very types so that it cannot drift from them.
//!
//! The crate deliberately knows nothing about NATS: it is pure data, so it can
//! be unit-tested, fuzzed and shared without dragging a client library along.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub mod asyncapi;
pub mod streams;

/// The CloudEvents specification version every event is published with.
pub const SPEC_VERSION: &str = "1.0";

/// The content type of every payload.
pub const CONTENT_TYPE: &str = "application/json";

/// Names of the NATS headers that carry the CloudEvents attributes.
pub mod headers {
    pub const ID: &str = "ce-id";
    pub const TYPE: &str = "ce-type";
    pub const SOURCE: &str = "ce-source";
    pub const SPEC_VERSION: &str = "ce-specversion";
    pub const TIME: &str = "ce-time";
    pub const SUBJECT: &str = "ce-subject";
    pub const CONTENT_TYPE: &str = "content-type";
    /// JetStream drops a second publish with the same id inside its
    /// duplicate window, which is what makes re-publishing safe.
    pub const MSG_ID: &str = "Nats-Msg-Id";
}

/// Namespace for the deterministic (v5) event ids derived from other ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_722d_6576_656e_7473_2d76_3100);

/// The identity of an order; every event carries one and every subject
/// contains it, so an order's whole history is one subject filter away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    /// A fresh random order id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// An order id derived from a client's idempotency key, so a repeated
    /// request maps to the same order without any lookup table.
    pub fn from_idempotency_key(key: &str) -> Self {
        Self(Uuid::new_v5(
            &ID_NAMESPACE,
            format!("idempotency/{key}").as_bytes(),
        ))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OrderId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Written by hand because the derive would describe the wrapper, while on
/// the wire an order id is just its UUID string (`#[serde(transparent)]`).
impl JsonSchema for OrderId {
    fn schema_name() -> Cow<'static, str> {
        "OrderId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "uuid",
            "description": "The identity of an order. Every event carries one and every subject contains it."
        })
    }
}

/// The schema of a timestamp field. The fields are written with
/// `time::serde::rfc3339`, which schemars cannot see through (it would take
/// the module path for a type), so each one names this function instead.
fn rfc3339(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time"
    })
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

/// A customer placed an order. Published by `order`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_email: String,
    pub items: Vec<LineItem>,
    pub total_cents: u64,
    /// A token standing for the customer's card at the payment gateway,
    /// never card data itself.
    pub payment_token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub placed_at: OffsetDateTime,
}

/// The order service recorded the payment for an order. Published by `order`.
/// Shipping ships on this event rather than on payment's own
/// `PaymentProcessed`: by then the order's history holds the payment, so the
/// shipment can never overtake it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPaid {
    pub order_id: OrderId,
    /// Carried along so that shipping, which ships on this event, needs no
    /// lookup of its own.
    pub customer_email: String,
    pub payment_id: String,
    pub amount_cents: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub paid_at: OffsetDateTime,
}

/// The order service recorded the shipment of an order. Published by `order`.
/// The shipping email follows this event rather than shipping's own
/// `OrderShipped`, so the customer hears "shipped" only for an order whose
/// history says so (never for one cancelled in the meantime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderFulfilled {
    pub order_id: OrderId,
    pub customer_email: String,
    pub tracking_number: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub shipped_at: OffsetDateTime,
}

/// The order was cancelled, by the customer or because its payment was
/// declined. Published by `order`; payment refunds and shipping recalls in
/// answer (the saga's compensation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub customer_email: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub cancelled_at: OffsetDateTime,
}

/// The order service recorded a refund of a cancelled order. Published by
/// `order`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderRefunded {
    pub order_id: OrderId,
    pub refund_id: String,
    pub amount_cents: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub refunded_at: OffsetDateTime,
}

/// The gateway charged the customer. Published by `payment`.
///
/// It carries the customer's address so that downstream services need no
/// lookup of their own (event-carried state transfer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentProcessed {
    pub order_id: OrderId,
    pub payment_id: String,
    pub customer_email: String,
    pub amount_cents: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub processed_at: OffsetDateTime,
}

/// The gateway declined the charge. Published by `payment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentFailed {
    pub order_id: OrderId,
    pub customer_email: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub failed_at: OffsetDateTime,
}

/// The charge of a cancelled order was refunded. Published by `payment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRefunded {
    pub order_id: OrderId,
    pub refund_id: String,
    pub payment_id: String,
    pub customer_email: String,
    pub amount_cents: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub refunded_at: OffsetDateTime,
}

/// A shipment was scheduled for a paid order. Published by `shipping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderShipped {
    pub order_id: OrderId,
    pub customer_email: String,
    pub tracking_number: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub shipped_at: OffsetDateTime,
}

/// A scheduled shipment was called back because its order was cancelled.
/// Published by `shipping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentCancelled {
    pub order_id: OrderId,
    pub tracking_number: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub cancelled_at: OffsetDateTime,
}

/// Which email the customer got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    OrderConfirmation,
    OrderCancelled,
    OrderShipped,
    PaymentRefunded,
}

impl EmailKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::OrderConfirmation => "order_confirmation",
            Self::OrderCancelled => "order_cancelled",
            Self::OrderShipped => "order_shipped",
            Self::PaymentRefunded => "payment_refunded",
        }
    }
}

/// An email went out. Published by `email`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EmailSent {
    pub order_id: OrderId,
    pub kind: EmailKind,
    pub to: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(schema_with = "rfc3339")]
    pub sent_at: OffsetDateTime,
}

/// Every fact the system publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    OrderPlaced(OrderPlaced),
    OrderPaid(OrderPaid),
    OrderFulfilled(OrderFulfilled),
    OrderCancelled(OrderCancelled),
    OrderRefunded(OrderRefunded),
    PaymentProcessed(PaymentProcessed),
    PaymentFailed(PaymentFailed),
    PaymentRefunded(PaymentRefunded),
    OrderShipped(OrderShipped),
    ShipmentCancelled(ShipmentCancelled),
    EmailSent(EmailSent),
}

/// The kind of an event without its data: its type, subject and producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    OrderPlaced,
    OrderPaid,
    OrderFulfilled,
    OrderCancelled,
    OrderRefunded,
    PaymentProcessed,
    PaymentFailed,
    PaymentRefunded,
    OrderShipped,
    ShipmentCancelled,
    EmailSent,
}

impl EventKind {
    /// Every kind, for catalogues and tests.
    pub const ALL: [EventKind; 11] = [
        Self::OrderPlaced,
        Self::OrderPaid,
        Self::OrderFulfilled,
        Self::OrderCancelled,
        Self::OrderRefunded,
        Self::PaymentProcessed,
        Self::PaymentFailed,
        Self::PaymentRefunded,
        Self::OrderShipped,
        Self::ShipmentCancelled,
        Self::EmailSent,
    ];

    /// The versioned CloudEvents type. A breaking change to a payload gets a
    /// new version (and a new variant) so old and new can coexist on the bus.
    pub fn ce_type(&self) -> &'static str {
        match self {
            Self::OrderPlaced => "order.placed.v1",
            Self::OrderPaid => "order.paid.v1",
            Self::OrderFulfilled => "order.fulfilled.v1",
            Self::OrderCancelled => "order.cancelled.v1",
            Self::OrderRefunded => "order.refunded.v1",
            Self::PaymentProcessed => "payment.processed.v1",
            Self::PaymentFailed => "payment.failed.v1",
            Self::PaymentRefunded => "payment.refunded.v1",
            Self::OrderShipped => "shipping.shipped.v1",
            Self::ShipmentCancelled => "shipping.cancelled.v1",
            Self::EmailSent => "email.sent.v1",
        }
    }

    /// Looks a kind up by its CloudEvents type.
    pub fn from_ce_type(ce_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.ce_type() == ce_type)
    }

    /// The stream this kind of event lives in.
    pub fn stream(&self) -> &'static streams::StreamDef {
        match self {
            Self::OrderPlaced
            | Self::OrderPaid
            | Self::OrderFulfilled
            | Self::OrderCancelled
            | Self::OrderRefunded => &streams::ORDERS,
            Self::PaymentProcessed | Self::PaymentFailed | Self::PaymentRefunded => {
                &streams::PAYMENTS
            }
            Self::OrderShipped | Self::ShipmentCancelled => &streams::SHIPPING,
            Self::EmailSent => &streams::EMAILS,
        }
    }

    /// The last token of the subject, naming the fact.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::OrderPlaced => "placed",
            Self::OrderPaid => "paid",
            Self::OrderFulfilled => "fulfilled",
            Self::OrderCancelled => "cancelled",
            Self::OrderRefunded => "refunded",
            Self::PaymentProcessed => "processed",
            Self::PaymentFailed => "failed",
            Self::PaymentRefunded => "refunded",
            Self::OrderShipped => "shipped",
            Self::ShipmentCancelled => "cancelled",
            Self::EmailSent => "sent",
        }
    }

    /// The subject for this kind of event about one order, such as
    /// `orders.<id>.placed`. The producer's prefix comes first so NATS
    /// permissions can restrict each service to its own prefix.
    pub fn subject(&self, order_id: OrderId) -> String {
        format!("{}.{order_id}.{}", self.stream().prefix, self.verb())
    }

    /// The subject filter matching this kind of event for every order.
    pub fn subject_filter(&self) -> String {
        format!("{}.*.{}", self.stream().prefix, self.verb())
    }

    /// The CloudEvents `source` of this kind: the producing service.
    pub fn source(&self) -> &'static str {
        self.stream().producer
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ce_type())
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::OrderPlaced(_) => EventKind::OrderPlaced,
            Self::OrderPaid(_) => EventKind::OrderPaid,
            Self::OrderFulfilled(_) => EventKind::OrderFulfilled,
            Self::OrderCancelled(_) => EventKind::OrderCancelled,
            Self::OrderRefunded(_) => EventKind::OrderRefunded,
            Self::PaymentRefunded(_) => EventKind::PaymentRefunded,
            Self::ShipmentCancelled(_) => EventKind::ShipmentCancelled,
            Self::PaymentProcessed(_) => EventKind::PaymentProcessed,
            Self::PaymentFailed(_) => EventKind::PaymentFailed,
            Self::OrderShipped(_) => EventKind::OrderShipped,
            Self::EmailSent(_) => EventKind::EmailSent,
        }
    }

    pub fn order_id(&self) -> OrderId {
        match self {
            Self::OrderPlaced(e) => e.order_id,
            Self::OrderPaid(e) => e.order_id,
            Self::OrderFulfilled(e) => e.order_id,
            Self::OrderCancelled(e) => e.order_id,
            Self::OrderRefunded(e) => e.order_id,
            Self::PaymentRefunded(e) => e.order_id,
            Self::ShipmentCancelled(e) => e.order_id,
            Self::PaymentProcessed(e) => e.order_id,
            Self::PaymentFailed(e) => e.order_id,
            Self::OrderShipped(e) => e.order_id,
            Self::EmailSent(e) => e.order_id,
        }
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        self.kind().subject(self.order_id())
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail: they hold no maps with
        // non-string keys and no types with fallible `Serialize` impls.
        let result = match self {
            Self::OrderPlaced(e) => serde_json::to_vec(e),
            Self::OrderPaid(e) => serde_json::to_vec(e),
            Self::OrderFulfilled(e) => serde_json::to_vec(e),
            Self::OrderCancelled(e) => serde_json::to_vec(e),
            Self::OrderRefunded(e) => serde_json::to_vec(e),
            Self::PaymentRefunded(e) => serde_json::to_vec(e),
            Self::ShipmentCancelled(e) => serde_json::to_vec(e),
            Self::PaymentProcessed(e) => serde_json::to_vec(e),
            Self::PaymentFailed(e) => serde_json::to_vec(e),
            Self::OrderShipped(e) => serde_json::to_vec(e),
            Self::EmailSent(e) => serde_json::to_vec(e),
        };
        result.unwrap_or_default()
    }

    /// Parses a payload of a known kind.
    pub fn from_json(kind: EventKind, payload: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            EventKind::OrderPlaced => Self::OrderPlaced(serde_json::from_slice(payload)?),
            EventKind::OrderPaid => Self::OrderPaid(serde_json::from_slice(payload)?),
            EventKind::OrderFulfilled => Self::OrderFulfilled(serde_json::from_slice(payload)?),
            EventKind::OrderCancelled => Self::OrderCancelled(serde_json::from_slice(payload)?),
            EventKind::OrderRefunded => Self::OrderRefunded(serde_json::from_slice(payload)?),
            EventKind::PaymentRefunded => Self::PaymentRefunded(serde_json::from_slice(payload)?),
            EventKind::ShipmentCancelled => {
                Self::ShipmentCancelled(serde_json::from_slice(payload)?)
            }
            EventKind::PaymentProcessed => Self::PaymentProcessed(serde_json::from_slice(payload)?),
            EventKind::PaymentFailed => Self::PaymentFailed(serde_json::from_slice(payload)?),
            EventKind::OrderShipped => Self::OrderShipped(serde_json::from_slice(payload)?),
            EventKind::EmailSent => Self::EmailSent(serde_json::from_slice(payload)?),
        })
    }
}

/// The CloudEvents 1.0 attributes of one published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `ce-id`, also sent as `Nats-Msg-Id` for broker-side deduplication.
    pub id: Uuid,
    pub kind: EventKind,
    /// `ce-source`: the producing service.
    pub source: String,
    pub time: OffsetDateTime,
    /// `ce-subject`: the order id.
    pub subject: String,
}

impl Envelope {
    /// The envelope for a brand-new fact, with a random id.
    pub fn new(event: &Event) -> Self {
        Self::with_id(event, Uuid::new_v4())
    }

    /// The envelope for a fact that follows deterministically from something
    /// already identified (an event, an order id and a step). Re-running the
    /// same step yields the same id, so JetStream drops the repeat publish as a
    /// duplicate instead of storing the fact twice.
    pub fn derived(event: &Event, cause: &str) -> Self {
        let name = format!("{cause}/{}", event.kind().ce_type());
        Self::with_id(event, Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()))
    }

    fn with_id(event: &Event, id: Uuid) -> Self {
        let kind = event.kind();
        Self {
            id,
            kind,
            source: kind.source().to_owned(),
            time: OffsetDateTime::now_utc(),
            subject: event.order_id().to_string(),
        }
    }

    /// The headers to publish, in binary content mode.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let time = self
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        vec![
            (headers::ID, self.id.to_string()),
            (headers::MSG_ID, self.id.to_string()),
            (headers::TYPE, self.kind.ce_type().to_owned()),
            (headers::SOURCE, self.source.clone()),
            (headers::SPEC_VERSION, SPEC_VERSION.to_owned()),
            (headers::TIME, time),
            (headers::SUBJECT, self.subject.clone()),
            (headers::CONTENT_TYPE, CONTENT_TYPE.to_owned()),
        ]
    }
}

/// Why an incoming message is not a valid event. Every variant is permanent:
/// redelivering the same bytes can never succeed, so the consumer
/// dead-letters the message with this reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("missing CloudEvents header `{0}`")]
    MissingHeader(&'static str),
    #[error("unsupported CloudEvents specversion `{0}` (expected 1.0)")]
    UnsupportedSpecVersion(String),
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("header `{header}` is malformed: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: String,
    },
    #[error("payload of `{ce_type}` is not valid: {reason}")]
    MalformedPayload {
        ce_type: &'static str,
        reason: String,
    },
    #[error("ce-subject `{header}` does not match the payload's order id `{payload}`")]
    SubjectMismatch { header: String, payload: String },
}

/// Parses a message into its envelope and typed event. `header` looks up a
/// header value by name; the function never panics, whatever the input.
pub fn decode<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    payload: &[u8],
) -> Result<(Envelope, Event), DecodeError> {
    let required = |name: &'static str| header(name).ok_or(DecodeError::MissingHeader(name));

    let spec = required(headers::SPEC_VERSION)?;
    if spec != SPEC_VERSION {
        return Err(DecodeError::UnsupportedSpecVersion(spec.to_owned()));
    }
    let ce_type = required(headers::TYPE)?;
    let kind =
        EventKind::from_ce_type(ce_type).ok_or_else(|| DecodeError::UnknownType(ce_type.into()))?;
    let id = Uuid::parse_str(required(headers::ID)?).map_err(|e| DecodeError::MalformedHeader {
        header: headers::ID,
        reason: e.to_string(),
    })?;
    let time = OffsetDateTime::parse(
        required(headers::TIME)?,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| DecodeError::MalformedHeader {
        header: headers::TIME,
        reason: e.to_string(),
    })?;
    let source = required(headers::SOURCE)?.to_owned();
    let subject = required(headers::SUBJECT)?.to_owned();

    let event = Event::from_json(kind, payload).map_err(|e| DecodeError::MalformedPayload {
        ce_type: kind.ce_type(),
        reason: e.to_string(),
    })?;
    if event.order_id().to_string() != subject {
        return Err(DecodeError::SubjectMismatch {
            header: subject,
            payload: event.order_id().to_string(),
        });
    }
    Ok((
        Envelope {
            id,
            kind,
            source,
            time,
            subject,
        },
        event,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn placed() -> Event {
        Event::OrderPlaced(OrderPlaced {
            order_id: OrderId::new(),
            customer_email: "ada@example.com".into(),
            items: vec![LineItem {
                sku: "book".into(),
                quantity: 2,
                unit_price_cents: 1500,
            }],
            total_cents: 3000,
            payment_token: "tok_visa".into(),
            placed_at: OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        })
    }

    fn headers_of(envelope: &Envelope) -> HashMap<&'static str, String> {
        envelope.to_headers().into_iter().collect()
    }

    #[test]
    fn round_trips_through_headers_and_json() {
        let event = placed();
        let envelope = Envelope::new(&event);
        let headers = headers_of(&envelope);
        let (decoded_env, decoded) =
            decode(|k| headers.get(k).map(String::as_str), &event.to_json()).expect("decodes");
        assert_eq!(decoded, event);
        assert_eq!(decoded_env.id, envelope.id);
        assert_eq!(decoded_env.kind, EventKind::OrderPlaced);
        assert_eq!(headers[headers::MSG_ID], headers[headers::ID]);
    }

    #[test]
    fn subjects_carry_the_order_id_under_the_producers_prefix() {
        let id = OrderId::new();
        assert_eq!(
            EventKind::OrderPlaced.subject(id),
            format!("orders.{id}.placed")
        );
        assert_eq!(
            EventKind::PaymentFailed.subject(id),
            format!("payments.{id}.failed")
        );
        assert_eq!(
            EventKind::OrderShipped.subject(id),
            format!("shipping.{id}.shipped")
        );
        for kind in EventKind::ALL {
            assert!(kind.subject(id).starts_with(kind.stream().prefix));
            assert!(kind.ce_type().ends_with(".v1"));
            assert_eq!(EventKind::from_ce_type(kind.ce_type()), Some(kind));
        }
    }

    #[test]
    fn derived_ids_are_deterministic() {
        let event = placed();
        assert_eq!(
            Envelope::derived(&event, "x").id,
            Envelope::derived(&event, "x").id
        );
        assert_ne!(
            Envelope::derived(&event, "x").id,
            Envelope::derived(&event, "y").id
        );
    }

    #[test]
    fn unknown_type_and_bad_payload_are_reported() {
        let event = placed();
        let mut headers = headers_of(&Envelope::new(&event));
        headers.insert(headers::TYPE, "order.placed.v9".into());
        let err = decode(|k| headers.get(k).map(String::as_str), &event.to_json()).unwrap_err();
        assert_eq!(err, DecodeError::UnknownType("order.placed.v9".into()));

        headers.insert(headers::TYPE, "order.placed.v1".into());
        let err = decode(|k| headers.get(k).map(String::as_str), b"{not json").unwrap_err();
        assert!(matches!(err, DecodeError::MalformedPayload { .. }), "{err}");

        headers.remove(headers::ID);
        let err = decode(|k| headers.get(k).map(String::as_str), &event.to_json()).unwrap_err();
        assert_eq!(err, DecodeError::MissingHeader(headers::ID));
    }

    #[test]
    fn subject_must_match_payload() {
        let event = placed();
        let mut headers = headers_of(&Envelope::new(&event));
        headers.insert(headers::SUBJECT, OrderId::new().to_string());
        let err = decode(|k| headers.get(k).map(String::as_str), &event.to_json()).unwrap_err();
        assert!(matches!(err, DecodeError::SubjectMismatch { .. }));
    }
}
