//! The `main` every service shares.
//!
//! A service's binary is one line: `platform::service::main(NAME, PORT, run)`.
//! This function parses the command line (`healthcheck` or nothing), reads
//! the settings, sets up telemetry, trips a shutdown token on SIGINT/SIGTERM,
//! runs the service until it returns, and flushes spans before exiting.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::Settings;
use crate::{health, shutdown, telemetry};

/// How long a service may take to drain after SIGTERM before it exits anyway.
/// Shorter than compose's `stop_grace_period` (30 s), so the spans of the
/// drain are flushed before the container is killed.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Runs a service's `run` function as the process's main.
pub async fn main<F, Fut>(service: &'static str, default_port: u16, run: F) -> ExitCode
where
    F: FnOnce(Settings, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = match Settings::from_env(service, default_port) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{service}: invalid configuration: {error:#}");
            return ExitCode::from(2);
        }
    };
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("healthcheck") => {
            return if health::probe(settings.http_addr) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Some(other) => {
            eprintln!(
                "usage: {service} [healthcheck]\n\nunknown argument `{other}`; configuration comes from the environment (see ARCHITECTURE.md)"
            );
            return ExitCode::from(2);
        }
    }

    let telemetry = match telemetry::init(service) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{service}: cannot set up telemetry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = shutdown::on_signal();
    tracing::info!(http_addr = %settings.http_addr, nats_url = %settings.nats_url, "starting {service}");
    let deadline = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_DEADLINE).await;
        }
    };
    let result = tokio::select! {
        result = run(settings, shutdown) => result,
        () = deadline => {
            // Whatever is still running is abandoned unacked, so the broker
            // redelivers it to the next instance: late, not lost.
            tracing::warn!(?DRAIN_DEADLINE, "drain deadline passed, exiting with work in flight");
            Ok(())
        }
    };
    let code = match result {
        Ok(()) => {
            tracing::info!("{service} stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{service} failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}

/// Retries start-up work that needs the broker (creating streams and
/// buckets) until it succeeds or shutdown is requested, so services can be
/// started in any order. Returns `None` on shutdown.
pub async fn until_set_up<T, F, Fut>(shutdown: &CancellationToken, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "broker not ready, retrying set-up"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Serves `router` on `addr` until shutdown, then finishes open requests.
pub async fn serve_http(
    addr: std::net::SocketAddr,
    router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// Creates the dead-letter and replay streams and the given event streams.
pub async fn ensure_streams(bus: &Bus, defs: &[events::streams::StreamDef]) -> anyhow::Result<()> {
    bus.ensure_stream(&events::streams::DEAD_LETTERS).await?;
    bus.ensure_stream(&events::streams::REPLAYS).await?;
    for def in defs {
        bus.ensure_stream(def).await?;
    }
    Ok(())
}

/// Runs every consumer of a service with one shared handler until shutdown,
/// then returns once all of them have drained.
///
/// Marks the service set up, and `/readyz` turns ready once every durable
/// consumer (and its replay twin) is bound on the broker.
pub async fn consume<H: crate::consumer::Handler>(
    bus: &Bus,
    settings: &Settings,
    shutdown: &CancellationToken,
    readiness: &health::Readiness,
    handler: std::sync::Arc<H>,
    specs: Vec<crate::ConsumerSpec>,
) {
    readiness.mark_set_up(2 * specs.len());
    let mut consumers = tokio::task::JoinSet::new();
    for spec in specs {
        consumers.spawn(crate::consumer::run(
            bus.clone(),
            spec,
            handler.clone(),
            settings.consumer_spans,
            shutdown.clone(),
            readiness.clone(),
        ));
    }
    while consumers.join_next().await.is_some() {}
}
