//! The event store: each order's events on its own subjects in the `ORDERS`
//! stream, read back by replay and appended with optimistic concurrency.
//!
//! Loading an order walks its subjects (`orders.<id>.*`) with direct gets,
//! one small request per event, and folds the events with
//! [`domain::evolve`]. Appending sends the sequence of the last event seen as
//! `Nats-Expected-Last-Subject-Sequence` scoped to the same subjects, so if
//! anyone appended to this order in between, the broker refuses the write and
//! the command is decided again on the fresh state.

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use events::{Envelope, Event, OrderId, streams};
use platform::Bus;
use platform::bus::PublishError;
use time::OffsetDateTime;

use crate::domain::{self, Command, Order, Rejection};

/// How often a command is retried when another writer got in first.
const MAX_ATTEMPTS: usize = 5;

/// One stored event with its position.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub sequence: u64,
    pub envelope: Envelope,
    pub event: Event,
    pub subject: String,
    /// The trace the event was published in, from its `traceparent`.
    pub trace_id: Option<String>,
    /// When the broker stored it.
    pub stored_at: OffsetDateTime,
}

/// An order as replayed from its events.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub state: Option<Order>,
    /// The stream sequence of the order's last event; 0 if it has none.
    pub version: u64,
    pub history: Vec<Recorded>,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored event is unreadable (sequence {sequence}): {reason}")]
    Corrupt { sequence: u64, reason: String },
    #[error("gave up after {MAX_ATTEMPTS} concurrent writes to the same order")]
    Contended,
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The state after the command.
    pub order: Option<Order>,
    /// The stream sequence of the order's last event after the command: a
    /// read of the view at this position or later sees the command's effect.
    pub position: u64,
    /// Whether new events were appended; `false` means the command had been
    /// carried out before.
    pub changed: bool,
}

#[derive(Clone)]
pub struct EventStore {
    bus: Bus,
    stream: Stream,
}

/// The subjects of one order: the aggregate's boundary for concurrency.
pub fn order_subjects(order_id: OrderId) -> String {
    format!("{}.{order_id}.*", streams::ORDERS.prefix)
}

impl EventStore {
    /// Opens the store, creating the `ORDERS` stream if needed.
    pub async fn open(bus: Bus) -> anyhow::Result<Self> {
        let stream = bus.ensure_stream(&streams::ORDERS).await?;
        Ok(Self { bus, stream })
    }

    /// Replays an order from its events.
    pub async fn load(&self, order_id: OrderId) -> Result<Loaded, StoreError> {
        let subjects = order_subjects(order_id);
        let mut loaded = Loaded::default();
        loop {
            let from = (loaded.version > 0).then_some(loaded.version + 1);
            let message = match self
                .stream
                .direct_get_next_for_subject(&subjects, from)
                .await
            {
                Ok(message) => message,
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => break,
                Err(error) => return Err(StoreError::Unavailable(error.to_string())),
            };
            let headers = &message.headers;
            let (envelope, event) = events::decode(
                |name| headers.get(name).map(|v| v.as_str()),
                &message.payload,
            )
            .map_err(|e| StoreError::Corrupt {
                sequence: message.sequence,
                reason: e.to_string(),
            })?;
            loaded.state = domain::evolve(loaded.state.take(), &event);
            loaded.version = message.sequence;
            loaded.history.push(Recorded {
                sequence: message.sequence,
                trace_id: headers
                    .get("traceparent")
                    .and_then(|tp| tp.as_str().split('-').nth(1))
                    .map(str::to_owned),
                subject: message.subject.to_string(),
                stored_at: message.time,
                envelope,
                event,
            });
        }
        Ok(loaded)
    }

    /// Places a brand-new order whose id nobody can know yet (a random one),
    /// skipping the replay that would only find nothing: one round trip to
    /// the broker instead of two. The append still expects an empty history,
    /// so even a colliding id could not overwrite an order.
    pub async fn create(&self, placed: events::OrderPlaced) -> Result<Outcome, StoreError> {
        let order_id = placed.order_id;
        let event = events::Event::OrderPlaced(placed);
        let envelope = Envelope::derived(&event, &order_id.to_string());
        match self
            .bus
            .append(&event, &envelope, &order_subjects(order_id), 0)
            .await
        {
            Ok(position) => Ok(Outcome {
                order: domain::evolve(None, &event),
                position,
                changed: true,
            }),
            Err(PublishError::Conflict) => Err(StoreError::Rejected(Rejection::AlreadyExists)),
            Err(PublishError::Unavailable(error)) => {
                Err(StoreError::Unavailable(error.to_string()))
            }
        }
    }

    /// Decides `command` on the current state of the order and appends the
    /// resulting events, retrying on concurrent writes. `cause` names what
    /// triggered the command (an incoming event id, or the order id for a
    /// placement); the appended events' ids derive from it, so a repeat of
    /// the same cause can never be stored twice.
    pub async fn execute(
        &self,
        order_id: OrderId,
        command: Command,
        cause: &str,
    ) -> Result<Outcome, StoreError> {
        'attempts: for _ in 0..MAX_ATTEMPTS {
            let loaded = self.load(order_id).await?;
            let events = domain::decide(loaded.state.as_ref(), command.clone())?;
            if events.is_empty() {
                return Ok(Outcome {
                    order: loaded.state,
                    position: loaded.version,
                    changed: false,
                });
            }
            let mut expected = loaded.version;
            let mut state = loaded.state;
            for event in &events {
                let envelope = Envelope::derived(event, cause);
                match self
                    .bus
                    .append(event, &envelope, &order_subjects(order_id), expected)
                    .await
                {
                    Ok(sequence) => expected = sequence,
                    Err(PublishError::Conflict) => {
                        tracing::info!(%order_id, "concurrent write, deciding again");
                        continue 'attempts;
                    }
                    Err(PublishError::Unavailable(error)) => {
                        return Err(StoreError::Unavailable(error.to_string()));
                    }
                }
                state = domain::evolve(state, event);
            }
            return Ok(Outcome {
                order: state,
                position: expected,
                changed: true,
            });
        }
        Err(StoreError::Contended)
    }
}
