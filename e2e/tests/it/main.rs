//! End-to-end tests: the real binaries against real nats-server, Jaeger and
//! Mailpit, each test on its own stack with free ports. They need the pinned
//! tools (`make tools`) and the service binaries (`cargo build --workspace
//! --bins`); `make test` does both.

mod bad_input;
mod compose;
mod faults;
mod flow;
mod helpers;
mod saga;
mod tracing;
