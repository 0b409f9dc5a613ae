//! Rebuilding the read model from the event store.
//!
//! The read model is a projection: throw it away and replay every event, and
//! the same views come back. This is done the JetStream way: purge the
//! `orders_view` bucket, then replace the projection's durable consumer with
//! a fresh one that starts at the first event of `ORDERS`. The order service
//! (whose consumer loop picks up the new consumer by name) replays the whole
//! history through its ordinary projection code.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::TryStreamExt as _;

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    /// Views dropped.
    pub dropped: usize,
    /// Events replayed (the stream's length when the rebuild began).
    pub events: u64,
}

/// Drops every view and replays every order event into the read model, then
/// waits (up to `timeout`) until the projection has caught up.
pub async fn rebuild(js: &jetstream::Context, timeout: Duration) -> anyhow::Result<Rebuilt> {
    let views = js
        .get_key_value(order::view::VIEWS_BUCKET)
        .await
        .context("the read model bucket does not exist: is the order service set up?")?;
    let keys: Vec<String> = views.keys().await?.try_collect().await?;
    for key in &keys {
        views.purge(key).await?;
    }

    let stream = js.get_stream(events::streams::ORDERS.name).await?;
    let events = stream.get_info().await?.state.last_sequence;
    let spec = order::consumers()
        .into_iter()
        .find(|c| c.durable == order::PROJECTION)
        .context("the order service has a projection consumer")?;
    // Deleting may race with nothing to delete (first rebuild on an empty
    // system); either way a fresh consumer is created from the first event.
    let _ = stream.delete_consumer(order::PROJECTION).await;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            order::PROJECTION,
            platform::consumer::consumer_config(&spec),
        )
        .await?;

    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let info = consumer.get_info().await?;
        if info.delivered.stream_sequence >= events
            && info.num_ack_pending == 0
            && info.num_pending == 0
        {
            return Ok(Rebuilt {
                dropped: keys.len(),
                events,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the projection has not caught up after {timeout:?} ({} of {events} events): is the order service running?",
                info.delivered.stream_sequence
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
