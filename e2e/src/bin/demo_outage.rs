//! `make demo-outage`: the email service goes down, orders keep coming, the
//! broker holds the events, and when email comes back it catches up.
//!
//! Starts the native stack on the design's ports (stop `make run` first),
//! then tells the story step by step with figures read from JetStream and
//! Mailpit, and leaves the stack running so the traces and emails can be
//! looked at. Ctrl-C stops everything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use e2e::{Logs, Ports, Stack, StackConfig};
use serde_json::{Value, json};

/// Orders placed while email is down.
const ORDERS: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let config = StackConfig {
        ports: Ports::DEFAULT,
        state_dir: state.path().to_path_buf(),
        logs: Logs::Files,
        ..StackConfig::for_tests(state.path().to_path_buf())?
    };
    println!(
        "Starting the stack (logs in {})...",
        state.path().join("logs").display()
    );
    let mut stack = Stack::start(config)
        .await
        .context("cannot start the stack: is `make run` still running? Stop it first")?;
    let http = reqwest::Client::new();
    let js = async_nats::jetstream::new(stack.connect_admin().await?);

    println!("\n1. Stopping the email service (SIGTERM: it drains and exits).");
    stack.stop("email").await?;

    println!("\n2. Placing {ORDERS} orders while email is down:");
    let mut first = None;
    for i in 0..ORDERS {
        let body = json!({
            "customer_email": format!("outage-{i}@example.com"),
            "items": [{"sku": "book", "quantity": 1, "unit_price_cents": 1500}],
        });
        let answer: Value = http
            .post(format!("{}/orders", stack.order_url()))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        first.get_or_insert_with(|| answer.clone());
        println!(
            "   {}  trace {}",
            answer["order_id"].as_str().unwrap_or("?"),
            answer["trace_id"].as_str().unwrap_or("?")
        );
    }

    println!("\n3. The broker holds the email events. Pending per durable consumer:");
    let pending = e2e::wait_for(
        "the email backlog to build up",
        Duration::from_secs(30),
        || async {
            let pending = pending_counts(&js).await.ok()?;
            let email: u64 = pending
                .iter()
                .filter(|(name, _)| name.starts_with("email-"))
                .map(|(_, n)| n)
                .sum();
            (email >= 2 * ORDERS as u64).then_some(pending)
        },
    )
    .await?;
    print_pending(&pending);
    println!("   Every other service has caught up; email's events wait in JetStream.");

    println!("\n4. Starting email again.");
    let restarted = Instant::now();
    stack.start_service("email").await?;
    stack.wait_ready("email").await?;

    println!("\n5. Catching up:");
    let expected = 2 * ORDERS;
    let last = std::sync::atomic::AtomicUsize::new(usize::MAX);
    let emails = e2e::wait_for(
        "every email to arrive",
        Duration::from_secs(120),
        || async {
            let count = mailpit_count(&http, &stack.mailpit_url()).await.ok()?;
            if last.swap(count, std::sync::atomic::Ordering::Relaxed) != count {
                println!(
                    "   {:>5.1} s  {count:>3}/{expected} emails in Mailpit",
                    restarted.elapsed().as_secs_f64()
                );
            }
            (count >= expected).then_some(count)
        },
    )
    .await?;
    print_pending(&pending_counts(&js).await?);
    println!(
        "\n   Nothing crashed, nothing was lost: {emails}/{expected} emails, caught up in {:.1} s.",
        restarted.elapsed().as_secs_f64()
    );

    if let Some(first) = first {
        println!(
            "\nLook at the first order's trace in Jaeger ({}), trace id {}:\nthe email spans start well after the others, the gap being the outage.\nEmails: {}   NATS: {}/jsz?consumers=true",
            stack.jaeger_url(),
            first["trace_id"].as_str().unwrap_or("?"),
            stack.mailpit_url(),
            stack.nats_monitor_url(),
        );
    }
    println!("\nThe stack keeps running; Ctrl-C stops it.");
    e2e::until_stopped().await;
    stack.shutdown().await;
    Ok(())
}

/// Messages waiting for (or being handled by) each durable consumer.
async fn pending_counts(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<BTreeMap<String, u64>> {
    use futures::StreamExt as _;
    let mut counts = BTreeMap::new();
    for stream in events::streams::ALL {
        let stream = js.get_stream(stream.name).await?;
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = info?;
            if info.name.ends_with("-replay") {
                continue;
            }
            counts.insert(
                info.name.clone(),
                info.num_pending + info.num_ack_pending as u64,
            );
        }
    }
    Ok(counts)
}

fn print_pending(pending: &BTreeMap<String, u64>) {
    for (consumer, count) in pending {
        println!("   {consumer:<32} {count:>4} pending");
    }
}

async fn mailpit_count(http: &reqwest::Client, mailpit: &str) -> anyhow::Result<usize> {
    let body: Value = http
        .get(format!("{mailpit}/api/v1/messages"))
        .query(&[("limit", "1")])
        .send()
        .await?
        .json()
        .await?;
    Ok(body["total"].as_u64().unwrap_or(0) as usize)
}
