//! The plumbing every service shares, so that each service's own crate holds
//! only its domain: what it does when an event arrives.
//!
//! Read it in this order:
//!
//! - [`config`]: every environment variable a service reads, in one place.
//! - [`telemetry`]: `tracing` + OpenTelemetry set up once; W3C trace context
//!   carried in NATS headers; log lines that carry trace and span ids.
//! - [`bus`]: the connection to NATS JetStream, stream set-up, and
//!   [`bus::Bus::publish`], which wraps every event in its CloudEvents envelope
//!   inside a PRODUCER span and waits for the broker's ack.
//! - [`consumer`]: the durable pull-consumer loop. It decodes each message into
//!   a typed event (or dead-letters it), opens a CONSUMER span joined to the
//!   producer's trace, calls the service's handler and acks, naks with a delay
//!   or terminates according to the handler's verdict.
//! - [`health`]: `/healthz`, `/readyz` and the `healthcheck` subcommand used by
//!   container health checks.
//! - [`shutdown`]: one cancellation token that SIGINT/SIGTERM trips; every loop
//!   watches it and drains.
//! - [`service`]: the `main` every service shares.

pub mod bus;
pub mod config;
pub mod consumer;
pub mod guard;
pub mod health;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use bus::Bus;
pub use config::Settings;
pub use consumer::{ConsumerSpec, Delivery, HandlerError};
