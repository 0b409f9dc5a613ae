//! Side-effect guards: at most one charge, shipment or email per key.
//!
//! JetStream delivers at least once, so every handler may see the same event
//! twice (a redelivery after a crash, an ack lost on the wire). A handler
//! whose work has an effect outside the bus records that effect in a
//! key-value bucket under a key naming it (the order id, or order id and email
//! kind) and checks the record before acting again.

use async_nats::jetstream::kv::{self, CreateErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::consumer::HandlerError;

/// Whether a guarded effect happened now or had happened before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    New,
    Repeat,
}

/// Returns the value recorded under `key`, or makes, records and returns a
/// new one. The record is written create-if-absent, so of two concurrent
/// deliveries only one value wins and both return it.
pub async fn once<T, F>(
    store: &kv::Store,
    key: &str,
    make: F,
) -> Result<(T, Freshness), HandlerError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    if let Some(recorded) = recorded(store, key).await? {
        return Ok((recorded, Freshness::Repeat));
    }
    let value = make();
    match record(store, key, &value).await {
        Ok(()) => Ok((value, Freshness::New)),
        Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {
            let recorded = recorded(store, key).await?.ok_or_else(|| {
                HandlerError::Transient(anyhow::anyhow!("record `{key}` vanished"))
            })?;
            Ok((recorded, Freshness::Repeat))
        }
        Err(error) => Err(HandlerError::Transient(error.into())),
    }
}

/// Reads the record under `key`, if any.
pub async fn recorded<T: DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> Result<Option<T>, HandlerError> {
    let bytes = store
        .get(key)
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?;
    bytes
        .map(|b| serde_json::from_slice(&b).map_err(|e| HandlerError::Permanent(e.into())))
        .transpose()
}

/// Records `value` under `key` unless a record exists already.
pub async fn record<T: Serialize>(
    store: &kv::Store,
    key: &str,
    value: &T,
) -> Result<(), kv::CreateError> {
    // Serialising plain records cannot fail; an empty record would still
    // mark the effect as done, which is what matters.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    store.create(key, bytes.into()).await.map(|_| ())
}
