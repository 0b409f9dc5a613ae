//! The event store: each order's events on its own subjects in the `ORDERS`
//! stream, read back by replay and appended with optimistic concurrency.
//!
//! Loading an order walks its subjects (`orders.<id>.*`) with direct gets,
//! one small request per event, and folds the events with
//! [`domain::evolve`]. Appending sends the sequence of the last event seen as
//! `Nats-Expected-Last-Subject-Sequence` scoped to the same subjects, so if
//! anyone appended to this order in between, the broker refuses the write and
//! the command is decided again on the fresh state.
//!
//! That same check makes it safe to skip the replay: the store remembers
//! the last state it saw of recently touched orders ([`Recent`]), and a
//! command first decides on that. If the memory is behind (another instance
//! appended since), the append is refused and the command is decided again
//! on a replay; a rejection or a no-op decided on a remembered state is
//! always checked against a replay too, since only an append can prove the
//! state current. A paid order's two commands then need no read at all.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use events::{Envelope, Event, OrderId, streams};
use platform::Bus;
use platform::bus::PublishError;
use time::OffsetDateTime;

use crate::domain::{self, Command, Order, Rejection};

/// How often a command is retried when another writer got in first.
const MAX_ATTEMPTS: usize = 5;

/// How many orders [`Recent`] remembers: a few seconds of orders at full
/// load, longer than an order takes from placed to fulfilled, in about half
/// a megabyte.
const RECENT_ORDERS: usize = 1024;

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
    recent: Arc<Mutex<Recent>>,
}

/// The last state and version this process saw of the most recently touched
/// orders, oldest forgotten first. Only a hint: see the module comment.
#[derive(Default)]
struct Recent {
    states: HashMap<OrderId, (Order, u64)>,
    arrival: VecDeque<OrderId>,
}

impl Recent {
    fn get(&self, order_id: OrderId) -> Option<(Order, u64)> {
        self.states.get(&order_id).cloned()
    }

    /// Remembers `order` at `version` unless a newer version is known (two
    /// handlers of one order may finish in either order).
    fn remember(&mut self, order_id: OrderId, order: Order, version: u64) {
        match self.states.get_mut(&order_id) {
            Some((_, known)) if *known >= version => return,
            Some(entry) => *entry = (order, version),
            None => {
                self.states.insert(order_id, (order, version));
                self.arrival.push_back(order_id);
            }
        }
        while self.arrival.len() > RECENT_ORDERS {
            if let Some(oldest) = self.arrival.pop_front() {
                self.states.remove(&oldest);
            }
        }
    }

    fn forget(&mut self, order_id: OrderId) {
        // Its place in `arrival` stays until it comes round; removing a
        // missing key then is harmless.
        self.states.remove(&order_id);
    }
}

/// The subjects of one order: the aggregate's boundary for concurrency.
pub fn order_subjects(order_id: OrderId) -> String {
    format!("{}.{order_id}.*", streams::ORDERS.prefix)
}

impl EventStore {
    /// Opens the store, creating the `ORDERS` stream if needed.
    pub async fn open(bus: Bus) -> anyhow::Result<Self> {
        let stream = bus.ensure_stream(&streams::ORDERS).await?;
        Ok(Self {
            bus,
            stream,
            recent: Arc::default(),
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // The map is only a hint, and every change to it is a whole
        // operation, so a poisoned lock is still usable.
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, order_id: OrderId, order: Option<&Order>, version: u64) {
        if let Some(order) = order {
            self.recent().remember(order_id, order.clone(), version);
        }
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
            Ok(position) => {
                let order = domain::evolve(None, &event);
                self.remember(order_id, order.as_ref(), position);
                Ok(Outcome {
                    order,
                    position,
                    changed: true,
                })
            }
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
        'attempts: for attempt in 0..MAX_ATTEMPTS {
            let remembered = (attempt == 0)
                .then(|| self.recent().get(order_id))
                .flatten();
            let from_memory = remembered.is_some();
            let (state, version) = match remembered {
                Some((order, version)) => (Some(order), version),
                None => {
                    let loaded = self.load(order_id).await?;
                    self.remember(order_id, loaded.state.as_ref(), loaded.version);
                    (loaded.state, loaded.version)
                }
            };
            let events = match domain::decide(state.as_ref(), command.clone()) {
                Ok(events) if !events.is_empty() => events,
                // Decided on a remembered state that may be behind: only a
                // replay can confirm a rejection or that nothing is left
                // to do.
                _ if from_memory => continue 'attempts,
                Ok(_) => {
                    return Ok(Outcome {
                        order: state,
                        position: version,
                        changed: false,
                    });
                }
                Err(rejection) => return Err(rejection.into()),
            };
            let mut expected = version;
            let mut state = state;
            for event in &events {
                let envelope = Envelope::derived(event, cause);
                match self
                    .bus
                    .append(event, &envelope, &order_subjects(order_id), expected)
                    .await
                {
                    Ok(sequence) => expected = sequence,
                    Err(PublishError::Conflict) => {
                        self.recent().forget(order_id);
                        if !from_memory {
                            tracing::info!(%order_id, "concurrent write, deciding again");
                        }
                        continue 'attempts;
                    }
                    Err(PublishError::Unavailable(error)) => {
                        return Err(StoreError::Unavailable(error.to_string()));
                    }
                }
                state = domain::evolve(state, event);
            }
            self.remember(order_id, state.as_ref(), expected);
            return Ok(Outcome {
                order: state,
                position: expected,
                changed: true,
            });
        }
        Err(StoreError::Contended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(order_id: OrderId) -> Order {
        let placed = crate::domain::tests::placed(order_id);
        domain::evolve(None, &Event::OrderPlaced(placed)).expect("an order")
    }

    #[test]
    fn recent_keeps_the_newest_version_and_forgets_the_oldest_orders() {
        let mut recent = Recent::default();
        let first = OrderId::new();
        recent.remember(first, order(first), 7);
        recent.remember(first, order(first), 5);
        assert_eq!(recent.get(first).map(|(_, v)| v), Some(7), "older lost");

        for _ in 0..RECENT_ORDERS {
            let id = OrderId::new();
            recent.remember(id, order(id), 1);
        }
        assert!(recent.get(first).is_none(), "the oldest order is forgotten");
        assert_eq!(recent.states.len(), RECENT_ORDERS);
        assert_eq!(recent.arrival.len(), RECENT_ORDERS);

        let last = *recent.arrival.back().expect("an order");
        recent.forget(last);
        assert!(recent.get(last).is_none());
    }
}
