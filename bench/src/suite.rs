//! `make bench`: the whole benchmark, on native stacks it starts itself.
//!
//! 1. Start the stack as `make run` does (traces on), but on free ports with a
//!    temporary store and logs in files, from the release binaries.
//! 2. The bare chain on the stack's nats-server: once at its maximum rate
//!    (closed loop), once at half of it (open loop) for its latency.
//! 3. The system in a closed loop, to find its maximum throughput, sampling
//!    the memory of every process of the stack meanwhile.
//! 4. The system in an open loop at half that rate, for its latency.
//! 5. The backlog: stop the email service, place orders until twice as many
//!    email events wait in JetStream, start it again and time how fast it
//!    catches up and how much memory that takes.
//! 6. A second stack with `OTEL_TRACES_SAMPLER=always_off`, closed loop
//!    again: what tracing costs.
//!
//! Every figure goes to a table on stdout and into one JSON file
//! (`bench/results/latest.json` by default).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use e2e::{Stack, StackConfig};
use serde::Serialize;

use crate::bare_chain::{self, BareResult};
use crate::loadgen::{self, LoadResult, Mode, Target, Wait};
use crate::report::{self, Machine, Table};
use crate::rss;

/// How long the suite waits for the orders of a run to complete, and for
/// the backlog to build up or drain.
const DRAIN: Duration = Duration::from_secs(120);
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(600);

/// The sizes of the suite's runs. The defaults keep `make bench` within
/// about ten minutes on two cores.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteOptions {
    /// Items through the bare chain, in each of its two runs.
    pub bare_items: u64,
    /// Closed-loop clients.
    pub clients: usize,
    /// Length of each closed-loop run.
    pub closed_secs: f64,
    /// Length of the open-loop run.
    pub open_secs: f64,
    /// Orders placed while the email service is down; each leaves two email
    /// events waiting.
    pub backlog_orders: u64,
    /// `RUST_LOG` for the services.
    pub rust_log: String,
    /// Keep each stack's state directory (JetStream store and every
    /// process's log) instead of deleting it, to look into a run afterwards.
    pub keep_state: bool,
    /// Where the JSON goes.
    #[serde(skip)]
    pub out: PathBuf,
}

/// The JSON file: the headline figures first, then every run in full.
#[derive(Serialize)]
struct SuiteReport {
    timestamp: String,
    machine: Machine,
    /// Closed-loop completed orders per second, traces on.
    e2e_orders_per_s: f64,
    /// Closed-loop items per second through the bare chain.
    bare_chain_items_per_s: f64,
    /// `e2e_orders_per_s / bare_chain_items_per_s`.
    ratio: f64,
    /// End-to-end latency in the open loop at half the maximum rate.
    p50_ms: f64,
    p99_ms: f64,
    /// The bare chain's latency in the open loop at half its maximum rate.
    bare_chain_p99_ms: f64,
    /// Closed-loop completed orders per second with traces off.
    tracing_off_orders_per_s: f64,
    /// Peak resident memory of each process during the closed loop, in MiB.
    rss_mb: BTreeMap<String, f64>,
    /// Peak resident memory of the email service while it works off the
    /// backlog, in MiB.
    backlog_rss_mb: f64,
    backlog: BacklogResult,
    settings: SuiteOptions,
    runs: Runs,
}

#[derive(Serialize)]
struct Runs {
    bare_chain_max: BareResult,
    bare_chain_half: BareResult,
    closed_loop: LoadResult,
    open_loop: LoadResult,
    closed_loop_tracing_off: LoadResult,
}

/// What the backlog test measured.
#[derive(Debug, Clone, Serialize)]
struct BacklogResult {
    orders_accepted: u64,
    /// Email events waiting in JetStream when the email service restarted.
    pending_events: u64,
    /// From starting the email service to an empty backlog.
    catch_up_secs: f64,
    catch_up_events_per_s: f64,
    email_peak_rss_mb: f64,
}

/// Runs the suite and writes its JSON file.
pub async fn run(options: &SuiteOptions) -> anyhow::Result<()> {
    let machine = Machine::current();
    println!(
        "bench suite on {} ({} cores, {} MiB), results to {}",
        machine.cpu_model,
        machine.nproc,
        machine.memory_mb,
        options.out.display()
    );

    let (mut stack, store) = start_stack("parentbased_always_on", options).await?;
    let target = Target {
        order_url: stack.order_url(),
        nats_url: stack.nats_url(),
    };

    let bare_max =
        bare_chain::run(&target.nats_url, &bare_options(options.bare_items, None)).await?;
    bare_max.print("bare chain, maximum rate");
    anyhow::ensure!(
        bare_max.items_per_s > 0.0,
        "no item went through the bare chain"
    );
    let half = Some(bare_max.items_per_s / 2.0);
    let bare_half =
        bare_chain::run(&target.nats_url, &bare_options(options.bare_items, half)).await?;
    bare_half.print("bare chain, half rate");

    warm_up(&target, options.clients).await?;
    let sampler = rss::Sampler::start(Duration::from_millis(250), &[]);
    let closed = closed_loop(&target, options, "closed loop").await?;
    let rss_mb = sampler.finish();
    closed.print("system, closed loop (traces on)");
    anyhow::ensure!(closed.orders_per_s > 0.0, "no order completed");

    let open = loadgen::run(
        &target,
        &loadgen::Options {
            mode: Mode::Open {
                rate: closed.orders_per_s / 2.0,
                duration: Duration::from_secs_f64(options.open_secs),
            },
            drain_timeout: DRAIN,
            label: "open loop".into(),
        },
    )
    .await?;
    open.print("system, open loop at half the maximum rate");

    let backlog = backlog(&mut stack, &target, options.backlog_orders).await?;
    stack.shutdown().await;
    // Deletes the first stack's store now rather than at the end.
    drop(store);

    let (stack, store) = start_stack("always_off", options).await?;
    let target = Target {
        order_url: stack.order_url(),
        nats_url: stack.nats_url(),
    };
    warm_up(&target, options.clients).await?;
    let untraced = closed_loop(&target, options, "traces off").await?;
    untraced.print("system, closed loop (traces off)");
    stack.shutdown().await;
    drop(store);

    let report = SuiteReport {
        timestamp: report::timestamp(),
        machine,
        e2e_orders_per_s: round(closed.orders_per_s),
        bare_chain_items_per_s: round(bare_max.items_per_s),
        ratio: (closed.orders_per_s / bare_max.items_per_s * 1000.0).round() / 1000.0,
        p50_ms: open.e2e_latency.p50_ms,
        p99_ms: open.e2e_latency.p99_ms,
        bare_chain_p99_ms: bare_half.latency.p99_ms,
        tracing_off_orders_per_s: round(untraced.orders_per_s),
        rss_mb,
        backlog_rss_mb: backlog.email_peak_rss_mb,
        backlog,
        settings: options.clone(),
        runs: Runs {
            bare_chain_max: bare_max,
            bare_chain_half: bare_half,
            closed_loop: closed,
            open_loop: open,
            closed_loop_tracing_off: untraced,
        },
    };
    print_summary(&report);
    report::write_json(&options.out, &report)?;
    println!("\n  written to {}", options.out.display());
    Ok(())
}

/// Starts a stack from the release binaries next to this one, on free ports,
/// with its store in a temporary directory that lives as long as the
/// returned guard.
async fn start_stack(
    sampler: &str,
    options: &SuiteOptions,
) -> anyhow::Result<(Stack, tempfile::TempDir)> {
    let mut store = tempfile::Builder::new()
        .prefix("bench-stack-")
        .tempdir()
        .context("cannot create the stack's state directory")?;
    if options.keep_state {
        store.disable_cleanup(true);
        eprintln!("  state and logs kept in {}", store.path().display());
    }
    let config = StackConfig {
        sampler: sampler.to_owned(),
        rust_log: options.rust_log.clone(),
        // Free ports, a fresh store, logs in files, and the service binaries
        // from the directory of this binary: target/release under `make bench`.
        ..StackConfig::for_tests(store.path().to_path_buf())?
    };
    eprintln!(
        "  starting the stack (OTEL_TRACES_SAMPLER={sampler}, binaries in {})",
        config.bin_dir.display()
    );
    let stack = Stack::start(config).await?;
    Ok((stack, store))
}

fn bare_options(items: u64, rate: Option<f64>) -> bare_chain::Options {
    bare_chain::Options {
        items,
        stages: 4,
        batch: 32,
        concurrency: 32,
        in_flight: 256,
        rate,
        timeout: Duration::from_secs(300),
    }
}

/// A few hundred orders first, so that connection pools, lazily created
/// state and caches are warm before anything is measured.
async fn warm_up(target: &Target, clients: usize) -> anyhow::Result<()> {
    loadgen::run(
        target,
        &loadgen::Options {
            mode: Mode::Closed {
                clients,
                duration: None,
                orders: Some(300),
                wait: Wait::Completed,
            },
            drain_timeout: DRAIN,
            label: "warm-up".into(),
        },
    )
    .await?;
    Ok(())
}

async fn closed_loop(
    target: &Target,
    options: &SuiteOptions,
    label: &str,
) -> anyhow::Result<LoadResult> {
    loadgen::run(
        target,
        &loadgen::Options {
            mode: Mode::Closed {
                clients: options.clients,
                duration: Some(Duration::from_secs_f64(options.closed_secs)),
                orders: None,
                wait: Wait::Completed,
            },
            drain_timeout: DRAIN,
            label: label.into(),
        },
    )
    .await
}

/// Stops the email service, builds a backlog of `2 × orders` email events,
/// restarts it and measures the catch-up.
async fn backlog(stack: &mut Stack, target: &Target, orders: u64) -> anyhow::Result<BacklogResult> {
    let nats = crate::nats::connect(&target.nats_url, "bench-backlog").await?;
    let js = jetstream::new(nats);

    // SIGTERM: the service drains its in-flight messages and exits.
    stack.stop("email").await?;
    let placed = loadgen::run(
        target,
        &loadgen::Options {
            mode: Mode::Closed {
                clients: 32,
                duration: None,
                orders: Some(orders),
                wait: Wait::Accepted,
            },
            // No order can complete without the email service.
            drain_timeout: Duration::ZERO,
            label: "backlog".into(),
        },
    )
    .await?;

    // The confirmation events wait at once; the shipped ones only once
    // payment and shipping have worked through the new orders.
    let expected = 2 * placed.accepted;
    let bar = report::progress(expected, "email backlog");
    let deadline = Instant::now() + BACKLOG_TIMEOUT;
    let mut pending = email_pending(&js).await?;
    while pending < expected && Instant::now() < deadline {
        bar.set_position(pending);
        tokio::time::sleep(Duration::from_millis(250)).await;
        pending = email_pending(&js).await?;
    }
    bar.finish_and_clear();
    if pending < expected {
        eprintln!("  only {pending} of {expected} email events pending after {BACKLOG_TIMEOUT:?}");
    }

    let sampler = rss::Sampler::start(Duration::from_millis(100), &["email"]);
    let started = Instant::now();
    stack.start_service("email").await?;
    stack.wait_ready("email").await?;
    let bar = report::progress(pending, "catch-up");
    let mut left = email_pending(&js).await?;
    while left > 0 && Instant::now() < started + BACKLOG_TIMEOUT {
        bar.set_position(pending.saturating_sub(left));
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = email_pending(&js).await?;
    }
    let catch_up_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    anyhow::ensure!(
        left == 0,
        "{left} email events still pending after {BACKLOG_TIMEOUT:?}"
    );
    // The kernel's high-water mark catches a peak between two samples.
    let high_water = rss::stack_pids()
        .get("email")
        .and_then(|&pid| rss::peak_rss_kib(pid))
        .map_or(0.0, rss::mib);
    let sampled = sampler.finish().get("email").copied().unwrap_or(0.0);
    let result = BacklogResult {
        orders_accepted: placed.accepted,
        pending_events: pending,
        catch_up_secs,
        catch_up_events_per_s: round(pending as f64 / catch_up_secs),
        email_peak_rss_mb: sampled.max(high_water),
    };
    let mut table = Table::new("email backlog", &["", "value"]);
    table
        .row(vec![
            "orders placed".into(),
            result.orders_accepted.to_string(),
        ])
        .row(vec![
            "events pending".into(),
            result.pending_events.to_string(),
        ])
        .row(vec!["catch-up".into(), format!("{catch_up_secs:.1} s")])
        .row(vec![
            "catch-up rate".into(),
            report::per_second(result.catch_up_events_per_s),
        ])
        .row(vec![
            "email peak RSS".into(),
            format!("{:.1} MiB", result.email_peak_rss_mb),
        ]);
    table.print();
    Ok(result)
}

/// Email events waiting for the email service: on each of its durable
/// consumers (taken from the service's own code, so the list stays true),
/// the messages not yet delivered plus those delivered but not acked, which
/// come back if the service dies.
async fn email_pending(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut total = 0;
    for spec in email::consumers() {
        let (stream, durable) = (spec.stream.name, spec.durable);
        let info = js
            .get_stream(stream)
            .await?
            .consumer_info(&durable)
            .await
            .with_context(|| format!("consumer {durable} on {stream}"))?;
        total += info.num_pending + u64::try_from(info.num_ack_pending)?;
    }
    Ok(total)
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn print_summary(r: &SuiteReport) {
    let mut table = Table::new("summary", &["", "value"]);
    table
        .row(vec![
            "system throughput (closed loop, traces on)".into(),
            format!("{:.1} orders/s", r.e2e_orders_per_s),
        ])
        .row(vec![
            "system throughput (closed loop, traces off)".into(),
            format!("{:.1} orders/s", r.tracing_off_orders_per_s),
        ])
        .row(vec![
            "bare chain throughput".into(),
            format!("{:.1} items/s", r.bare_chain_items_per_s),
        ])
        .row(vec![
            "ratio system / bare chain".into(),
            format!("{:.3}", r.ratio),
        ])
        .row(vec![
            "system latency at half load, p50 / p99".into(),
            format!("{:.1} / {:.1} ms", r.p50_ms, r.p99_ms),
        ])
        .row(vec![
            "bare chain latency at half load, p99".into(),
            format!("{:.1} ms", r.bare_chain_p99_ms),
        ])
        .row(vec![
            "email catch-up".into(),
            format!(
                "{} events in {:.1} s ({:.1}/s)",
                r.backlog.pending_events, r.backlog.catch_up_secs, r.backlog.catch_up_events_per_s
            ),
        ]);
    table.print();
    let mut memory = Table::new("peak RSS (MiB)", &["process", "under load", "backlog"]);
    for name in rss::PROCESSES {
        let under_load = r
            .rss_mb
            .get(name)
            .map_or_else(|| "-".into(), |mb| format!("{mb:.1}"));
        let backlog = if name == "email" {
            format!("{:.1}", r.backlog_rss_mb)
        } else {
            String::new()
        };
        memory.row(vec![name.into(), under_load, backlog]);
    }
    memory.print();
}
