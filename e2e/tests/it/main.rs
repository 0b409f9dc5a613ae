//! End-to-end tests: the real binaries against real nats-server, Jaeger and
//! Mailpit, each test on its own stack with free ports. They need the pinned
//! tools (`make tools`) and the service binaries (`cargo build --workspace
//! --bins`); `make test` does both.

mod asyncapi;
mod bad_input;
mod compose;
mod contract;
mod faults;
mod flow;
mod helpers;
mod props;
mod saga;
mod security;
mod tracing;
