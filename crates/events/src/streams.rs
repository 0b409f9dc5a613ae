//! The JetStream streams: one per bounded context, each owned (created and
//! written) by exactly one service, plus the shared dead-letter stream.

/// A stream and the subjects it captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDef {
    /// The JetStream stream name.
    pub name: &'static str,
    /// The first subject token of every event in the stream.
    pub prefix: &'static str,
    /// The service that publishes into this stream (its CloudEvents source).
    pub producer: &'static str,
}

impl StreamDef {
    /// The subject filter the stream captures: `<prefix>.>`.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.prefix)
    }
}

/// The order aggregate's events: the source of truth for every order.
pub const ORDERS: StreamDef = StreamDef {
    name: "ORDERS",
    prefix: "orders",
    producer: "order",
};

/// Payment outcomes.
pub const PAYMENTS: StreamDef = StreamDef {
    name: "PAYMENTS",
    prefix: "payments",
    producer: "payment",
};

/// Shipments.
pub const SHIPPING: StreamDef = StreamDef {
    name: "SHIPPING",
    prefix: "shipping",
    producer: "shipping",
};

/// Emails sent.
pub const EMAILS: StreamDef = StreamDef {
    name: "EMAILS",
    prefix: "emails",
    producer: "email",
};

/// Messages a consumer could not handle, with the reason, published as
/// `deadletter.<service>.<original subject>`.
pub const DEAD_LETTERS: StreamDef = StreamDef {
    name: "DEADLETTERS",
    prefix: "deadletter",
    producer: "any",
};

/// Dead letters sent back for another try, to one consumer only, as
/// `replay.<consumer>.<original subject>`. Every consumer also reads its own
/// slice of this stream, so a replay reaches the consumer that gave up and no
/// other, and the event streams stay an untouched record of what happened.
pub const REPLAYS: StreamDef = StreamDef {
    name: "REPLAYS",
    prefix: "replay",
    producer: "ops",
};

/// Every event stream, in the order of the flow.
pub const ALL: [StreamDef; 4] = [ORDERS, PAYMENTS, SHIPPING, EMAILS];
