//! How the bench logs in to NATS.
//!
//! The broker refuses anonymous clients (`deploy/nats.conf`), and each
//! service's user may only touch its own subjects. The bench needs more than
//! any one service: it watches the shipping and email events, builds its
//! own streams for the bare chain and reads the email service's consumers.
//! So it logs in as `admin`, the user the broker keeps for tests and the load
//! generator, with the development password from `deploy/secrets/`, the
//! same way the end-to-end tests do (`e2e::nats_options`).

use anyhow::Context as _;

/// The NATS user the bench logs in as.
pub const USER: &str = "admin";

/// Connects to `url` as [`USER`]; `name` shows in the broker's connection
/// list (`/connz`), so the bench's connections are easy to tell apart.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    e2e::nats_options(USER)?
        .name(name)
        // Room for bursts while this process is busy elsewhere: a message
        // dropped for lack of room would be an order or item never seen to
        // arrive.
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url} as `{USER}`"))
}
