//! Liveness and readiness, and the `healthcheck` subcommand.
//!
//! `GET /healthz` answers 200 while the process runs. `GET /readyz` answers
//! 200 only while the service is connected to the broker and its streams are
//! set up, so an orchestrator sends no work to (and a test does not start
//! using) a service that cannot do any. Container images have no curl, so
//! each binary's `healthcheck` subcommand asks its own `/readyz` instead.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::bus::Bus;

/// Whether a service can do its work right now.
#[derive(Clone)]
pub struct Readiness {
    bus: Bus,
    set_up: Arc<AtomicBool>,
    /// Durable consumers not yet bound on the broker. A service is ready only
    /// once all exist, so that events published from then on are kept for
    /// it even if it goes down straight away.
    unbound: Arc<AtomicUsize>,
}

impl Readiness {
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            set_up: Arc::new(AtomicBool::new(false)),
            unbound: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Marks the start-up work (streams, buckets) as done, with `consumers`
    /// durable consumers still to bind.
    pub fn mark_set_up(&self, consumers: usize) {
        self.unbound.fetch_add(consumers, Ordering::AcqRel);
        self.set_up.store(true, Ordering::Release);
    }

    /// Notes that one durable consumer exists on the broker.
    pub fn consumer_bound(&self) {
        let _ = self
            .unbound
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn is_ready(&self) -> bool {
        self.set_up.load(Ordering::Acquire)
            && self.unbound.load(Ordering::Acquire) == 0
            && self.bus.is_connected()
    }
}

/// `/healthz` and `/readyz`.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the broker",
        )
    }
}

/// The `healthcheck` subcommand: asks the service listening on `addr` for
/// `/readyz` and reports whether it answered 200. Plain HTTP/1.0 over a TCP
/// socket, so the runtime image needs no HTTP client.
pub fn probe(addr: SocketAddr) -> bool {
    let target = if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    };
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}
