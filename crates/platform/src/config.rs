//! Configuration, read from the environment in one place.
//!
//! Variables read by every service:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `NATS_URL` | `nats://127.0.0.1:4222` | the broker |
//! | `HTTP_ADDR` | `0.0.0.0:<service port>` | health (and, for `order`, the REST API) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http://localhost:4318` | OTLP/HTTP collector (Jaeger), read by the exporter itself |
//! | `OTEL_SERVICE_NAME` | the binary's name | service name in traces |
//! | `OTEL_TRACES_SAMPLER` (+`_ARG`) | `parentbased_always_on` | read by the OpenTelemetry SDK itself |
//! | `RUST_LOG` | `info` | log filter |
//! | `TRACE_CONSUMER_SPANS` | `child` | `child`: a consumer span is a child of the producer span (one trace per order); `link`: it starts a new trace and links to the producer span |
//!
//! Services add their own (for example `SMTP_URL` in `email`); each documents
//! them next to this list in its own `config` section.

use std::env;
use std::net::SocketAddr;

use anyhow::Context as _;

/// Every environment variable the shared plumbing reads. The compose test
/// checks that `docker-compose.yml` sets nothing outside this list and the
/// services' own lists.
pub const ENV_VARS: &[&str] = &[
    "NATS_URL",
    "HTTP_ADDR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "RUST_LOG",
    "TRACE_CONSUMER_SPANS",
];

/// How a consumer span relates to the producer span it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerSpans {
    /// The consumer span is a child of the producer span: one trace per order.
    Child,
    /// The consumer span starts its own trace and carries a span link to the
    /// producer span, the messaging conventions' other option.
    Link,
}

/// The settings shared by every service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The service's name: `order`, `payment`, `shipping` or `email`.
    pub service: &'static str,
    pub nats_url: String,
    pub http_addr: SocketAddr,
    pub consumer_spans: ConsumerSpans,
}

impl Settings {
    /// Reads the shared settings; `default_port` is the service's own port
    /// from the design (8080 for order, 8081.. for the others).
    pub fn from_env(service: &'static str, default_port: u16) -> anyhow::Result<Self> {
        let nats_url = env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let http_addr = match env::var("HTTP_ADDR") {
            Ok(addr) => addr
                .parse()
                .with_context(|| format!("HTTP_ADDR `{addr}` is not a socket address"))?,
            Err(_) => SocketAddr::from(([0, 0, 0, 0], default_port)),
        };
        let consumer_spans = match env::var("TRACE_CONSUMER_SPANS").as_deref() {
            Err(_) | Ok("") | Ok("child") => ConsumerSpans::Child,
            Ok("link") => ConsumerSpans::Link,
            Ok(other) => {
                anyhow::bail!("TRACE_CONSUMER_SPANS must be `child` or `link`, not `{other}`")
            }
        };
        Ok(Self {
            service,
            nats_url,
            http_addr,
            consumer_spans,
        })
    }
}
