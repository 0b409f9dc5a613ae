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

/// The record of an effect that cannot be undone or deduplicated downstream
/// (an email): first claimed, then marked done.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Effect<T> {
    /// A handler is carrying the effect out. `holder` names the process and
    /// `at` (Unix milliseconds) when it claimed it, so a claim left by a
    /// crashed process can be taken over once it is older than the TTL.
    Claimed { holder: String, at: u64 },
    /// The effect happened.
    Done(T),
}

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claim<T> {
    /// The effect happened before; here is its record.
    Done(T),
    /// We hold the claim (at this KV revision): carry the effect out, then
    /// call [`complete`].
    Granted(u64),
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Claims the effect named `key` for `holder`. Fails transiently (so the
/// message comes back later) while someone else holds a fresh claim, and
/// takes over a claim older than `ttl`, whose holder must have died.
pub async fn claim<T: Serialize + DeserializeOwned>(
    store: &kv::Store,
    key: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> Result<Claim<T>, HandlerError> {
    let transient = |e: &dyn std::fmt::Display| HandlerError::Transient(anyhow::anyhow!("{e}"));
    let mine = serde_json::to_vec(&Effect::<T>::Claimed {
        holder: holder.to_owned(),
        at: now_ms(),
    })
    .map_err(|e| HandlerError::Permanent(e.into()))?;
    // Create first, read only if that fails: the first delivery of a key,
    // by far the most common case, then costs one round trip to the broker
    // instead of two. (`create` also succeeds over a released claim.)
    match store.create(key, mine.clone().into()).await {
        Ok(revision) => return Ok(Claim::Granted(revision)),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(transient(&format!("claiming `{key}`: {e}"))),
    }
    let entry = store.entry(key).await.map_err(|e| transient(&e))?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Err(transient(&format!(
            "`{key}` was released while claiming it; trying again later"
        )));
    };
    match serde_json::from_slice::<Effect<T>>(&entry.value) {
        Ok(Effect::Done(record)) => Ok(Claim::Done(record)),
        Ok(Effect::Claimed { holder: other, at })
            if now_ms().saturating_sub(at) < u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) =>
        {
            Err(transient(&format!(
                "`{key}` is being handled by {other}; trying again later"
            )))
        }
        // A stale claim, or a record we cannot read: take it over, unless
        // someone else does so first.
        _ => match store.update(key, mine.into(), entry.revision).await {
            Ok(revision) => Ok(Claim::Granted(revision)),
            Err(e) => Err(transient(&format!("taking over `{key}`: {e}"))),
        },
    }
}

/// Marks a claimed effect as done. Retries for a while, because the effect
/// has happened and forgetting it would repeat it on redelivery.
pub async fn complete<T: Serialize>(
    store: &kv::Store,
    key: &str,
    record: &T,
) -> Result<(), HandlerError> {
    let bytes: bytes::Bytes = serde_json::to_vec(&Effect::Done(record))
        .map_err(|e| HandlerError::Permanent(e.into()))?
        .into();
    let mut delay = std::time::Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match store.put(key, bytes.clone()).await {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(HandlerError::Transient(error.into()));
            }
            Err(error) => {
                tracing::warn!(%error, key, "recording a done effect failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}

/// Gives a claim back after the effect failed, so the next try need not
/// wait for the claim to expire. Best effort: an expired claim is taken over
/// anyway.
pub async fn release(store: &kv::Store, key: &str, revision: u64) {
    if let Err(error) = store.delete_expect_revision(key, Some(revision)).await {
        tracing::debug!(%error, key, "could not release claim; it will expire");
    }
}
