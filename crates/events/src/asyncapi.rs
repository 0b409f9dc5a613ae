//! The event contract as an [AsyncAPI 3.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0)
//! document, built from the types of this crate.
//!
//! Nothing in the document is written twice: channel addresses come from
//! [`EventKind::subject`], header constants from [`EventKind::ce_type`] and
//! [`EventKind::source`], payload schemas from the payload structs (through
//! `schemars`), and the examples are real events run through
//! [`Envelope::to_headers`] and [`Event::to_json`]. A change to the contract
//! therefore changes the document, and the end-to-end tests compare the
//! committed `docs/asyncapi.yaml` with it, so the file cannot drift.
//!
//! The producer of every kind is known here (it owns the stream), so
//! [`document`] lists the `send` operations. Who consumes what is declared by
//! each service's `consumers()`, which this crate cannot see (services depend
//! on it, not the other way round), so the caller passes those in as
//! [`Receiver`]s to [`document_with_receivers`], which adds the `receive`
//! operations.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::streams::StreamDef;
use crate::{
    CONTENT_TYPE, EmailKind, EmailSent, Envelope, Event, EventKind, LineItem, OrderCancelled,
    OrderFulfilled, OrderId, OrderPaid, OrderPlaced, OrderRefunded, OrderShipped, PaymentFailed,
    PaymentProcessed, PaymentRefunded, SPEC_VERSION, ShipmentCancelled, headers,
};

/// The AsyncAPI version the document follows.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// The name of the channel parameter that stands for the order id.
const ORDER_ID_PARAMETER: &str = "orderId";

/// The W3C trace context headers. They are not part of [`Envelope`], because
/// the platform crate injects them from the publishing span, but every
/// consumer reads them to continue the order's trace.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// One durable consumer of a service, as the service declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    /// The consuming service, such as `payment`.
    pub service: String,
    /// The durable consumer's name.
    pub durable: String,
    /// The stream it reads.
    pub stream: &'static StreamDef,
    /// Its subject filters, such as `orders.*.placed` or `orders.>`.
    pub filter_subjects: Vec<String>,
}

/// A consumer whose subject filter takes no kind of event. Such a consumer
/// would never receive anything, which is a bug in its declaration, and the
/// document could not say what it receives, so it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "consumer `{durable}` of `{service}` filters `{filter}` on stream {stream}, \
     which matches no kind of event in that stream"
)]
pub struct UnmatchedFilter {
    pub service: String,
    pub durable: String,
    pub filter: String,
    pub stream: &'static str,
}

/// The document with a `send` operation for the producer of every kind of
/// event and no `receive` operations.
pub fn document() -> Value {
    build(&BTreeMap::new())
}

/// The document with the `send` operations of [`document`] plus a `receive`
/// operation for every service and kind of event one of its consumers takes.
pub fn document_with_receivers(receivers: &[Receiver]) -> Result<Value, UnmatchedFilter> {
    // (service, kind's position in EventKind::ALL) -> durables that take it.
    // A BTreeMap keeps the outcome independent of the order of `receivers`.
    let mut taken: BTreeMap<(String, usize), Vec<String>> = BTreeMap::new();
    for receiver in receivers {
        for filter in &receiver.filter_subjects {
            let mut matched = false;
            for (index, kind) in EventKind::ALL.into_iter().enumerate() {
                // A consumer sees only its own stream, whatever its filter.
                if kind.stream().name == receiver.stream.name && filter_takes_every(filter, kind) {
                    matched = true;
                    let durables = taken.entry((receiver.service.clone(), index)).or_default();
                    if !durables.contains(&receiver.durable) {
                        durables.push(receiver.durable.clone());
                    }
                }
            }
            if !matched {
                return Err(UnmatchedFilter {
                    service: receiver.service.clone(),
                    durable: receiver.durable.clone(),
                    filter: filter.clone(),
                    stream: receiver.stream.name,
                });
            }
        }
    }
    Ok(build(&taken))
}

/// Serialises a document with its keys in a fixed, readable order (the
/// order of the AsyncAPI specification for the keys it knows, alphabetical
/// for the rest). `serde_json::Value` keeps either sorted or insertion
/// order, depending on a cargo feature some other crate of the build may
/// switch on; the committed file must not depend on that.
#[derive(Debug, Clone, Copy)]
pub struct InSpecOrder<'a>(pub &'a Value);

impl Serialize for InSpecOrder<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Ordered(self.0, Keys::Spec).serialize(serializer)
    }
}

/// What the keys of an object are, which decides how they are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// Keywords of AsyncAPI or JSON Schema: in [`KEY_ORDER`].
    Spec,
    /// Names chosen by the document (channel ids, property names): sorted,
    /// whatever they are called, and their values are `Spec` again.
    Names,
    /// An example message: `Spec`, but its headers and payload are `Data`.
    Example,
    /// Example data, all the way down: sorted, whatever it is called, so a
    /// payload field named like a keyword (`items`) does not jump ahead.
    Data,
}

impl Keys {
    fn of_child(self, key: &str) -> Keys {
        match self {
            Keys::Data | Keys::Example => Keys::Data,
            Keys::Names => Keys::Spec,
            Keys::Spec => match key {
                "examples" => Keys::Example,
                "channels" | "operations" | "servers" | "messages" | "schemas" | "parameters"
                | "correlationIds" | "properties" => Keys::Names,
                _ => Keys::Spec,
            },
        }
    }
}

struct Ordered<'a>(&'a Value, Keys);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Ordered(value, keys) = *self;
        match value {
            Value::Object(map) => {
                let rank = |key: &str| match keys {
                    Keys::Spec | Keys::Example => key_rank(key),
                    Keys::Names | Keys::Data => 0,
                };
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then(a.cmp(b)));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Ordered(value, keys.of_child(key)))?;
                }
                out.end()
            }
            // An array's elements are what the array holds, so they keep its kind.
            Value::Array(items) => {
                serializer.collect_seq(items.iter().map(|item| Ordered(item, keys)))
            }
            other => other.serialize(serializer),
        }
    }
}

/// The keys that come first, in this order, in objects of the specification.
const KEY_ORDER: &[&str] = &[
    "asyncapi",
    "info",
    "defaultContentType",
    "servers",
    "channels",
    "operations",
    "components",
    "address",
    "host",
    "protocol",
    "action",
    "channel",
    "name",
    "title",
    "version",
    "summary",
    "description",
    "license",
    "url",
    "contentType",
    "correlationId",
    "location",
    "messages",
    "parameters",
    "headers",
    "payload",
    "examples",
    "tags",
    "schemas",
    "correlationIds",
    "$ref",
    "type",
    "format",
    "const",
    "enum",
    "minimum",
    "maximum",
    "pattern",
    "items",
    "required",
    "properties",
    "allOf",
];

fn key_rank(key: &str) -> usize {
    KEY_ORDER
        .iter()
        .position(|k| *k == key)
        .unwrap_or(KEY_ORDER.len())
}

/// Whether a NATS subject filter takes every event of `kind`, whichever
/// order it is about. `*` matches one token and `>` the rest; a literal in
/// the order id's place matches a single order, which is not "every".
fn filter_takes_every(filter: &str, kind: EventKind) -> bool {
    let mut tokens = filter.split('.');
    for expected in subject_template(kind) {
        match tokens.next() {
            Some(">") => return true,
            Some("*") => {}
            Some(literal) if expected.as_deref() == Some(literal) => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// The tokens of `kind`'s subject, with `None` where the order id goes. It
/// is read off [`EventKind::subject`] itself (with a placeholder id) rather
/// than rebuilt from the prefix and verb, so the two cannot disagree.
fn subject_template(kind: EventKind) -> Vec<Option<String>> {
    let placeholder = OrderId(Uuid::nil()).to_string();
    kind.subject(OrderId(Uuid::nil()))
        .split('.')
        .map(|token| (token != placeholder).then(|| token.to_owned()))
        .collect()
}

/// The channel address, such as `orders.{orderId}.placed`.
fn address(kind: EventKind) -> String {
    subject_template(kind)
        .into_iter()
        .map(|token| token.unwrap_or_else(|| format!("{{{ORDER_ID_PARAMETER}}}")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The payload type of `kind`: its name (which names its message and its
/// schema) and a reference to its schema in `generator`'s definitions. The
/// match is exhaustive, so a new kind cannot be left out of the document.
fn payload(kind: EventKind, generator: &mut SchemaGenerator) -> (String, Value) {
    fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> (String, Value) {
        (
            T::schema_name().into_owned(),
            generator.subschema_for::<T>().to_value(),
        )
    }
    match kind {
        EventKind::OrderPlaced => of::<OrderPlaced>(generator),
        EventKind::OrderPaid => of::<OrderPaid>(generator),
        EventKind::OrderFulfilled => of::<OrderFulfilled>(generator),
        EventKind::OrderCancelled => of::<OrderCancelled>(generator),
        EventKind::OrderRefunded => of::<OrderRefunded>(generator),
        EventKind::PaymentProcessed => of::<PaymentProcessed>(generator),
        EventKind::PaymentFailed => of::<PaymentFailed>(generator),
        EventKind::PaymentRefunded => of::<PaymentRefunded>(generator),
        EventKind::OrderShipped => of::<OrderShipped>(generator),
        EventKind::ShipmentCancelled => of::<ShipmentCancelled>(generator),
        EventKind::EmailSent => of::<EmailSent>(generator),
    }
}

/// The moment every example happens, fixed so the document is reproducible.
fn example_time() -> OffsetDateTime {
    // 2026-01-01T12:00:00Z.
    OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_767_268_800)
}

/// A plausible event of `kind`, for the message's example. The values follow
/// the services' own formats (`pay_…`, `TRK…`, email subjects).
fn example(kind: EventKind) -> Event {
    let order_id = OrderId(Uuid::from_u128(0x3f2c_8a9e_5b1d_4c6e_9a7f_2d8e_1b4c_6a90));
    let at = example_time();
    let email = "ada@example.com".to_owned();
    let payment_id = format!("pay_{}", order_id.as_uuid().simple());
    let refund_id = format!("re_{}", order_id.as_uuid().simple());
    let tracking_number = "TRK5e1c0b7d2a94".to_owned();
    match kind {
        EventKind::OrderPlaced => Event::OrderPlaced(OrderPlaced {
            order_id,
            customer_email: email,
            items: vec![LineItem {
                sku: "book-0451".into(),
                quantity: 2,
                unit_price_cents: 1500,
            }],
            total_cents: 3000,
            payment_token: "tok_visa".into(),
            placed_at: at,
        }),
        EventKind::OrderPaid => Event::OrderPaid(OrderPaid {
            order_id,
            customer_email: email.clone(),
            payment_id,
            amount_cents: 3000,
            paid_at: at,
        }),
        EventKind::OrderFulfilled => Event::OrderFulfilled(OrderFulfilled {
            order_id,
            customer_email: email,
            tracking_number,
            shipped_at: at,
        }),
        EventKind::OrderCancelled => Event::OrderCancelled(OrderCancelled {
            order_id,
            customer_email: email,
            reason: "payment failed: card_declined: the card was declined".into(),
            cancelled_at: at,
        }),
        EventKind::OrderRefunded => Event::OrderRefunded(OrderRefunded {
            order_id,
            refund_id,
            amount_cents: 3000,
            refunded_at: at,
        }),
        EventKind::PaymentProcessed => Event::PaymentProcessed(PaymentProcessed {
            order_id,
            payment_id,
            customer_email: email,
            amount_cents: 3000,
            processed_at: at,
        }),
        EventKind::PaymentFailed => Event::PaymentFailed(PaymentFailed {
            order_id,
            customer_email: email,
            reason: "card_declined: the card was declined".into(),
            failed_at: at,
        }),
        EventKind::PaymentRefunded => Event::PaymentRefunded(PaymentRefunded {
            order_id,
            refund_id,
            payment_id,
            customer_email: email,
            amount_cents: 3000,
            refunded_at: at,
        }),
        EventKind::OrderShipped => Event::OrderShipped(OrderShipped {
            order_id,
            customer_email: email,
            tracking_number,
            shipped_at: at,
        }),
        EventKind::ShipmentCancelled => Event::ShipmentCancelled(ShipmentCancelled {
            order_id,
            tracking_number,
            cancelled_at: at,
        }),
        EventKind::EmailSent => Event::EmailSent(EmailSent {
            order_id,
            kind: EmailKind::OrderConfirmation,
            to: email,
            subject: format!("Order {order_id} confirmed"),
            sent_at: at,
        }),
    }
}

/// The example of `kind`'s message: its headers exactly as a producer sends
/// them and its payload exactly as serialised.
fn message_example(kind: EventKind) -> Value {
    let event = example(kind);
    let mut envelope = Envelope::derived(&event, "asyncapi-example");
    envelope.time = example_time();
    let mut headers: Map<String, Value> = envelope
        .to_headers()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Value::String(value)))
        .collect();
    headers.insert(
        TRACEPARENT.into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    );
    let payload = serde_json::from_slice(&event.to_json()).unwrap_or(Value::Null);
    json!({
        "name": kind.ce_type(),
        "summary": format!("`{}` as the producer publishes it.", kind.ce_type()),
        "headers": headers,
        "payload": payload,
    })
}

/// The schema of one header, or `None` for a header this module does not
/// know (a unit test makes sure every header [`Envelope`] sends is known).
fn header_schema(name: &str) -> Option<Value> {
    Some(match name {
        headers::ID => json!({
            "type": "string",
            "format": "uuid",
            "description": "CloudEvents `id`: unique per event. An event that follows \
                deterministically from another gets a derived (v5) id, so re-running \
                the step republishes the same id and JetStream drops the repeat."
        }),
        headers::MSG_ID => json!({
            "type": "string",
            "format": "uuid",
            "description": "Equal to `ce-id`. JetStream drops a second publish with the \
                same id inside the stream's duplicate window."
        }),
        headers::TYPE => json!({
            "type": "string",
            "description": "CloudEvents `type`: the versioned event type, such as \
                `order.placed.v1`. A breaking change to a payload gets a new version. \
                A consumer dead-letters a type it does not know."
        }),
        headers::SOURCE => json!({
            "type": "string",
            "description": "CloudEvents `source`: the producing service."
        }),
        headers::SPEC_VERSION => json!({
            "const": SPEC_VERSION,
            "description": "CloudEvents `specversion`."
        }),
        headers::TIME => json!({
            "type": "string",
            "format": "date-time",
            "description": "CloudEvents `time`: when the event was published (RFC 3339)."
        }),
        headers::SUBJECT => json!({
            "type": "string",
            "format": "uuid",
            "description": "CloudEvents `subject`: the order id. A consumer dead-letters \
                an event whose payload `order_id` differs."
        }),
        headers::CONTENT_TYPE => json!({
            "const": CONTENT_TYPE,
            "description": "The payload's media type (CloudEvents `datacontenttype` in \
                binary content mode)."
        }),
        _ => return None,
    })
}

/// The headers every event carries, shared by all messages (each message
/// pins `ce-type` and `ce-source` on top).
fn cloudevents_headers() -> Value {
    let sent = Envelope::new(&example(EventKind::OrderPlaced)).to_headers();
    let required: Vec<&str> = sent.iter().map(|(name, _)| *name).collect();
    let mut properties: Map<String, Value> = required
        .iter()
        .map(|name| {
            let schema = header_schema(name).unwrap_or_else(|| json!({ "type": "string" }));
            ((*name).to_owned(), schema)
        })
        .collect();
    properties.insert(
        TRACEPARENT.into(),
        json!({
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C trace context of the publishing span. Consumers continue \
                the trace from it, so one order is one trace across all services. Absent \
                only when the publisher had no span."
        }),
    );
    properties.insert(
        TRACESTATE.into(),
        json!({
            "type": "string",
            "description": "W3C trace state, passed along when the trace has any."
        }),
    );
    json!({
        "type": "object",
        "description": "CloudEvents 1.0 attributes in NATS headers (binary content mode), \
            JetStream's deduplication id and the W3C trace context.",
        "required": required,
        "properties": properties,
    })
}

/// `OrderPlaced` -> `Order placed`.
fn title(type_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in type_name.chars().enumerate() {
        if i > 0 && c.is_uppercase() {
            out.push(' ');
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `OrderPlaced` -> `orderPlaced`, the channel's id.
fn channel_id(type_name: &str) -> String {
    let mut chars = type_name.chars();
    chars
        .next()
        .map(|first| first.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The document, given the kinds each service receives.
fn build(received: &BTreeMap<(String, usize), Vec<String>>) -> Value {
    let mut generator = SchemaSettings::draft07()
        .with(|settings| {
            // The schemas go straight where AsyncAPI keeps reusable schemas,
            // so schemars' `$ref`s point into the document itself.
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator();

    let mut channels = Map::new();
    let mut messages = Map::new();
    let mut operations = Map::new();
    let mut names = Vec::new();
    for kind in EventKind::ALL {
        let (name, payload_ref) = payload(kind, &mut generator);
        let channel = channel_id(&name);
        let stream = kind.stream();
        let producer = kind.source();
        messages.insert(
            name.clone(),
            json!({
                "name": name,
                "title": title(&name),
                "contentType": CONTENT_TYPE,
                "correlationId": { "$ref": "#/components/correlationIds/orderId" },
                "headers": {
                    "type": "object",
                    "allOf": [
                        { "$ref": "#/components/schemas/CloudEventsHeaders" },
                        {
                            "properties": {
                                headers::TYPE: { "const": kind.ce_type() },
                                headers::SOURCE: { "const": producer },
                            }
                        }
                    ]
                },
                "payload": payload_ref,
                "examples": [message_example(kind)],
            }),
        );
        channels.insert(
            channel.clone(),
            json!({
                "address": address(kind),
                "title": title(&name),
                "description": format!(
                    "`{}` events: published by `{producer}` into stream {}.",
                    kind.ce_type(),
                    stream.name
                ),
                "messages": { &name: { "$ref": format!("#/components/messages/{name}") } },
                "parameters": {
                    ORDER_ID_PARAMETER: {
                        "$ref": format!("#/components/parameters/{ORDER_ID_PARAMETER}")
                    }
                },
            }),
        );
        let channel_ref = json!({ "$ref": format!("#/channels/{channel}") });
        let message_refs = json!([{ "$ref": format!("#/channels/{channel}/messages/{name}") }]);
        operations.insert(
            format!("{producer}Sends{name}"),
            json!({
                "action": "send",
                "channel": channel_ref.clone(),
                "messages": message_refs.clone(),
                "title": format!("{producer} publishes {name}"),
                "summary": format!(
                    "`{producer}` publishes `{}` into stream {}.",
                    kind.ce_type(),
                    stream.name
                ),
                "tags": [{ "name": producer }],
                "x-jetstream": { "stream": stream.name },
            }),
        );
        names.push((kind, name, channel_ref, message_refs));
    }
    for ((service, index), durables) in received {
        let Some((kind, name, channel_ref, message_refs)) = names.get(*index) else {
            continue;
        };
        operations.insert(
            format!("{service}Receives{name}"),
            json!({
                "action": "receive",
                "channel": channel_ref,
                "messages": message_refs,
                "title": format!("{service} receives {name}"),
                "summary": format!(
                    "`{service}` consumes `{}` through its durable consumer{} {}.",
                    kind.ce_type(),
                    if durables.len() > 1 { "s" } else { "" },
                    durables
                        .iter()
                        .map(|d| format!("`{d}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "tags": [{ "name": service }],
                "x-jetstream": { "stream": kind.stream().name, "durables": durables },
            }),
        );
    }

    let mut schemas = generator.take_definitions(true);
    schemas.insert("CloudEventsHeaders".into(), cloudevents_headers());

    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Event-driven orders: events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": INFO_DESCRIPTION,
            "license": {
                "name": env!("CARGO_PKG_LICENSE"),
                "url": "https://www.apache.org/licenses/LICENSE-2.0"
            }
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "NATS with JetStream, as `make run` and `docker compose up` \
                    start it. The services take another address from `NATS_URL`."
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "parameters": {
                ORDER_ID_PARAMETER: {
                    "description": "The order id (a UUID). Every subject carries it, so one \
                        order's whole history is one subject filter away."
                }
            },
            "correlationIds": {
                "orderId": {
                    "description": "The order id ties together every event of one order.",
                    "location": format!("$message.header#/{}", headers::SUBJECT)
                }
            }
        }
    })
}

const INFO_DESCRIPTION: &str = "\
The events that the four services (`order`, `payment`, `shipping`, `email`) \
publish on NATS JetStream, and who consumes them. The services never call each \
other: these events are all they share.

Every event is a JSON payload with its CloudEvents 1.0 attributes in NATS \
headers (binary content mode). `Nats-Msg-Id` equals `ce-id`, so JetStream drops \
a duplicate publish. Subjects are `<producer's prefix>.<order id>.<fact>`: one \
order's history is one subject filter away, and each service publishes only \
under its own prefix, which NATS permissions enforce. Each producer owns one \
stream (ORDERS, PAYMENTS, SHIPPING, EMAILS). A consumer that meets an unknown \
or malformed event dead-letters it with the reason (stream DEADLETTERS, \
subjects `deadletter.<service>.<original subject>`).

This document is generated from the `events` crate (`events::asyncapi`) and the \
services' consumer declarations; the end-to-end tests fail when \
`docs/asyncapi.yaml` differs from what the code generates.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, streams};

    fn receiver(service: &str, stream: &'static StreamDef, filters: &[&str]) -> Receiver {
        Receiver {
            service: service.into(),
            durable: format!("{service}-durable"),
            stream,
            filter_subjects: filters.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    #[test]
    fn every_kind_has_a_channel_message_and_send_operation() {
        let doc = document();
        assert_eq!(doc["asyncapi"], ASYNCAPI_VERSION);
        for kind in EventKind::ALL {
            let name = payload(kind, &mut SchemaGenerator::default()).0;
            let channel = &doc["channels"][channel_id(&name)];
            assert_eq!(
                channel["address"],
                kind.subject_filter().replace('*', "{orderId}")
            );
            let message = &doc["components"]["messages"][&name];
            assert_eq!(
                message["payload"]["$ref"],
                format!("#/components/schemas/{name}")
            );
            let pinned = &message["headers"]["allOf"][1]["properties"];
            assert_eq!(pinned[headers::TYPE]["const"], kind.ce_type());
            assert_eq!(pinned[headers::SOURCE]["const"], kind.source());
            let send = &doc["operations"][format!("{}Sends{name}", kind.source())];
            assert_eq!(send["action"], "send", "{name}");
        }
        let receives = doc["operations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, op)| op["action"] == "receive")
            .count();
        assert_eq!(receives, 0);
    }

    #[test]
    fn timestamps_and_ids_have_formats() {
        let doc = document();
        let placed = &doc["components"]["schemas"]["OrderPlaced"];
        assert_eq!(
            placed["properties"]["placed_at"],
            json!({ "type": "string", "format": "date-time" })
        );
        assert_eq!(
            placed["properties"]["order_id"]["$ref"],
            "#/components/schemas/OrderId"
        );
        assert_eq!(
            doc["components"]["schemas"]["OrderId"]["format"],
            json!("uuid")
        );
        assert_eq!(
            doc["components"]["schemas"]["EmailKind"]["enum"],
            json!([
                "order_confirmation",
                "order_cancelled",
                "order_shipped",
                "payment_refunded"
            ])
        );
    }

    #[test]
    fn every_header_a_producer_sends_is_described() {
        let sent = Envelope::new(&example(EventKind::OrderPlaced)).to_headers();
        for (name, _) in sent {
            assert!(
                header_schema(name).is_some(),
                "header `{name}` undocumented"
            );
        }
    }

    #[test]
    fn examples_are_events_the_decoder_accepts() {
        let doc = document();
        for kind in EventKind::ALL {
            let name = payload(kind, &mut SchemaGenerator::default()).0;
            let example = &doc["components"]["messages"][&name]["examples"][0];
            let headers = &example["headers"];
            let payload = serde_json::to_vec(&example["payload"]).expect("serialises");
            let (envelope, event) =
                decode(|h| headers[h].as_str(), &payload).expect("the example decodes");
            assert_eq!(envelope.kind, kind);
            assert_eq!(event, self::example(kind));
        }
    }

    #[test]
    fn receivers_become_receive_operations() {
        let doc = document_with_receivers(&[
            receiver(
                "payment",
                &streams::ORDERS,
                &["orders.*.placed", "orders.*.cancelled"],
            ),
            receiver("order", &streams::ORDERS, &["orders.>"]),
        ])
        .expect("all filters match");
        let ops = &doc["operations"];
        assert_eq!(ops["paymentReceivesOrderPlaced"]["action"], "receive");
        assert_eq!(
            ops["paymentReceivesOrderPlaced"]["x-jetstream"]["durables"],
            json!(["payment-durable"])
        );
        assert!(ops["paymentReceivesOrderCancelled"].is_object());
        assert!(ops["paymentReceivesOrderPaid"].is_null());
        // `orders.>` takes every kind in the ORDERS stream and nothing else.
        for kind in EventKind::ALL {
            let name = payload(kind, &mut SchemaGenerator::default()).0;
            let op = &ops[format!("orderReceives{name}")];
            assert_eq!(
                op.is_object(),
                kind.stream().name == "ORDERS",
                "{name}: {op}"
            );
        }
    }

    #[test]
    fn a_filter_that_matches_nothing_is_refused() {
        for (stream, filter) in [
            (&streams::ORDERS, "orders.*.teleported"),
            // Right subject, wrong stream: the consumer would see nothing.
            (&streams::ORDERS, "payments.*.failed"),
            // One order only is not a consumer of the kind.
            (
                &streams::ORDERS,
                "orders.3f2c8a9e-5b1d-4c6e-9a7f-2d8e1b4c6a90.placed",
            ),
        ] {
            let err = document_with_receivers(&[receiver("x", stream, &[filter])]).unwrap_err();
            assert_eq!(err.filter, filter);
        }
    }

    #[test]
    fn yaml_keys_follow_the_specification_order() {
        let doc = document();
        let json = serde_json::to_string(&InSpecOrder(&doc)).expect("serialises");
        let positions: Vec<_> = ["\"asyncapi\"", "\"info\"", "\"servers\"", "\"channels\""]
            .iter()
            .map(|key| json.find(key).expect("present"))
            .collect();
        assert!(positions.is_sorted(), "{positions:?}");
    }
}
