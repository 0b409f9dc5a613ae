//! `bench`: how fast the order pipeline is, and how far from the limit.
//!
//! One binary, four commands:
//!
//! - `bench closed` / `bench open`: the load generator ([`loadgen`]) against
//!   a running stack (`make run`): orders through `POST /orders`, completion
//!   seen on NATS, POST and end-to-end latency percentiles.
//! - `bench bare-chain`: the same number of JetStream hops with no logic
//!   ([`bare_chain`]), on a running nats-server: the baseline.
//! - `bench suite`: what `make bench` runs ([`suite`]): starts its own stacks
//!   from the release binaries and runs everything above, plus memory
//!   ([`rss`]) and a backlog catch-up, into `bench/results/latest.json`.
//!
//! [`report`] turns measurements into tables, progress bars and JSON;
//! [`nats`] is how the bench logs in to the broker.
//! This file only parses arguments.

mod bare_chain;
mod loadgen;
mod nats;
mod report;
mod rss;
mod suite;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Load generator and benchmark suite for the order pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Closed loop: concurrent clients, each placing its next order once the
    /// previous one shipped and both its emails were sent.
    Closed {
        #[command(flatten)]
        target: TargetArgs,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Stop after this many seconds (30 if neither this nor --orders is
        /// given).
        #[arg(long)]
        secs: Option<f64>,
        /// Stop after this many orders.
        #[arg(long)]
        orders: Option<u64>,
        /// Place the next order as soon as the previous one is accepted
        /// (202) instead of completed: measures the order API's intake while
        /// a backlog builds up behind it.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Open loop: a fixed rate of orders, latency counted from each order's
    /// scheduled send time.
    Open {
        #[command(flatten)]
        target: TargetArgs,
        /// Orders per second.
        #[arg(long)]
        rate: f64,
        /// How long to send, in seconds.
        #[arg(long, default_value_t = 30.0)]
        secs: f64,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The baseline: items through a chain of JetStream streams with relays
    /// that only consume, publish to the next stream and ack.
    BareChain {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Items to push through.
        #[arg(long, default_value_t = 20_000)]
        items: u64,
        /// Streams in the chain (the relays are one fewer).
        #[arg(long, default_value_t = 4)]
        stages: usize,
        /// Messages a relay pulls per batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Messages a relay works on at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Closed loop: the most items in the chain at once.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        /// Open loop instead: items per second.
        #[arg(long)]
        rate: Option<f64>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Everything, on stacks it starts itself (`make bench`).
    Suite {
        /// Items through the bare chain, in each of its two runs.
        #[arg(long, default_value_t = 20_000)]
        bare_items: u64,
        /// Closed-loop clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Length of each closed-loop run, in seconds.
        #[arg(long, default_value_t = 30.0)]
        closed_secs: f64,
        /// Length of the open-loop run, in seconds.
        #[arg(long, default_value_t = 30.0)]
        open_secs: f64,
        /// Orders placed while the email service is down (two email events
        /// each).
        #[arg(long, default_value_t = 5_000)]
        backlog_orders: u64,
        /// `RUST_LOG` for the services.
        #[arg(long, default_value = "info")]
        rust_log: String,
        /// Keep each stack's state directory (JetStream store, logs).
        #[arg(long)]
        keep_state: bool,
        /// Where the JSON result goes.
        #[arg(long, default_value_os_t = e2e::repo_root().join("bench/results/latest.json"))]
        json: PathBuf,
    },
}

/// Where a running stack listens.
#[derive(Args)]
struct TargetArgs {
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:8080")]
    order_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Seconds to wait, once sending stops, for the orders still in flight.
    #[arg(long, default_value_t = 120.0)]
    drain_secs: f64,
}

#[derive(Args)]
struct OutputArgs {
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Closed {
            target,
            clients,
            secs,
            orders,
            no_wait,
            output,
        } => {
            let duration = match (secs, orders) {
                (None, None) => Some(30.0),
                (secs, _) => secs,
            };
            let mode = loadgen::Mode::Closed {
                clients,
                duration: duration.map(Duration::from_secs_f64),
                orders,
                wait: if no_wait {
                    loadgen::Wait::Accepted
                } else {
                    loadgen::Wait::Completed
                },
            };
            let result = load(&target, mode, "closed loop").await?;
            result.print("closed loop");
            save(&output, &result)
        }
        Command::Open {
            target,
            rate,
            secs,
            output,
        } => {
            let mode = loadgen::Mode::Open {
                rate,
                duration: Duration::from_secs_f64(secs),
            };
            let result = load(&target, mode, "open loop").await?;
            result.print("open loop");
            save(&output, &result)
        }
        Command::BareChain {
            nats_url,
            items,
            stages,
            batch,
            concurrency,
            in_flight,
            rate,
            output,
        } => {
            let options = bare_chain::Options {
                items,
                stages,
                batch,
                concurrency,
                in_flight,
                rate,
                timeout: Duration::from_secs(300),
            };
            let result = bare_chain::run(&nats_url, &options).await?;
            result.print("bare chain");
            save(&output, &result)
        }
        Command::Suite {
            bare_items,
            clients,
            closed_secs,
            open_secs,
            backlog_orders,
            rust_log,
            keep_state,
            json,
        } => {
            suite::run(&suite::SuiteOptions {
                bare_items,
                clients,
                closed_secs,
                open_secs,
                backlog_orders,
                rust_log,
                keep_state,
                out: json,
            })
            .await
        }
    }
}

async fn load(
    target: &TargetArgs,
    mode: loadgen::Mode,
    label: &str,
) -> anyhow::Result<loadgen::LoadResult> {
    let options = loadgen::Options {
        mode,
        drain_timeout: Duration::from_secs_f64(target.drain_secs),
        label: label.into(),
    };
    let target = loadgen::Target {
        order_url: target.order_url.clone(),
        nats_url: target.nats_url.clone(),
    };
    loadgen::run(&target, &options).await
}

/// Writes the result, with the machine and the time, if `--json` was given.
fn save(output: &OutputArgs, result: &impl Serialize) -> anyhow::Result<()> {
    if let Some(path) = &output.json {
        let envelope = report::Envelope {
            timestamp: report::timestamp(),
            machine: report::Machine::current(),
            result,
        };
        report::write_json(path, &envelope)?;
        println!("\n  written to {}", path.display());
    }
    Ok(())
}
