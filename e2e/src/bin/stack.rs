//! `make run`: the whole system on this machine, no Docker needed.
//!
//! Starts nats-server, Jaeger and Mailpit (pinned, from `.tools/bin`) and the
//! four services on the design's ports, prints where to look, streams every
//! process's log with its name in front, and stops everything on Ctrl-C.
//! JetStream's store lives in `.stack/nats`, so orders survive a restart;
//! `make clean-stack` wipes it.

use std::time::Instant;

use e2e::{Logs, Ports, Stack, StackConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let config = StackConfig {
        ports: Ports::DEFAULT,
        state_dir: e2e::repo_root().join(".stack"),
        logs: Logs::Console,
        consumer_spans: std::env::var("TRACE_CONSUMER_SPANS").unwrap_or_else(|_| "child".into()),
        sampler: std::env::var("OTEL_TRACES_SAMPLER")
            .unwrap_or_else(|_| "parentbased_always_on".into()),
        rust_log: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        bin_dir: e2e::target_dir_of_current_exe()?,
    };
    let stack = Stack::start(config).await?;
    let o = stack.order_url();
    println!(
        r#"
  The stack is up ({:.1} s). Ctrl-C stops it.

  Order API      {o}      POST /orders, GET /orders, GET /orders/{{id}},
                                           POST /orders/{{id}}/cancel, GET /orders/{{id}}/events
  API docs       {o}/docs (OpenAPI: {o}/openapi.json)
  Jaeger         {}     traces (service `order`; natively the query API only, see README)
  Mailpit        {}      emails (API: /api/v1/messages)
  NATS monitor   {}      /jsz?consumers=true

  Try:
    curl -si {o}/orders -H 'content-type: application/json' \
      -d '{{"customer_email":"ada@example.com","items":[{{"sku":"book","quantity":1,"unit_price_cents":1500}}]}}'
"#,
        started.elapsed().as_secs_f64(),
        stack.jaeger_url(),
        stack.mailpit_url(),
        stack.nats_monitor_url(),
    );
    e2e::until_stopped().await;
    println!("\n  stopping: services drain first, then the infrastructure");
    stack.shutdown().await;
    Ok(())
}
