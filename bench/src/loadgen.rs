//! The load generator: places orders through `POST /orders`, the door a
//! customer uses, and watches each one travel through the system on NATS.
//!
//! Two ways to apply load:
//!
//! - **Closed loop** ([`Mode::Closed`]): `clients` concurrent clients, each
//!   placing its next order as soon as its previous one is done. "Done" is by
//!   default the whole flow (the order shipped and both emails sent), so at
//!   most `clients` orders are in the system and the completion rate is a
//!   rate the system sustains, not one that only lasts while a backlog grows.
//!   With [`Wait::Accepted`] a client moves on after the 202 instead, which
//!   measures how fast the order API takes orders while the backlog behind
//!   it grows.
//! - **Open loop** ([`Mode::Open`]): orders leave at a fixed rate whatever
//!   the system does, as real customers do. Each latency is measured from the
//!   time the order was *scheduled* to be sent, not from when it actually was,
//!   so a stall that delays later sends shows up in their latencies instead
//!   of being hidden ("coordinated omission").
//!
//! Two latencies per order: the POST's (until the 202), and the end-to-end
//! one, until the last of `OrderShipped` and the two `EmailSent` events
//! (`order_confirmation`, `order_shipped`) was published. The generator sees
//! those events live through a plain core-NATS subscription to
//! `shipping.*.shipped` and `emails.*.sent`: JetStream captures the same
//! messages into its streams, so nothing is polled and the system does no
//! extra work for being watched. The order id is the subject's middle token.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use events::{EmailKind, EventKind, OrderId};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::report::{self, Latency, LatencySummary, Table};

/// How long a closed-loop client waits for one order to complete before it
/// counts the order as lost and places the next one.
const ORDER_TIMEOUT: Duration = Duration::from_secs(60);

/// The most open-loop requests in flight at once. Only reached when the
/// system stalls; the schedule then slips, but latencies still count from
/// the scheduled times, so the stall is measured, not hidden.
const MAX_IN_FLIGHT: usize = 4096;

/// Where the system under test listens.
#[derive(Debug, Clone)]
pub struct Target {
    /// The order service's base URL, such as `http://127.0.0.1:8080`.
    pub order_url: String,
    pub nats_url: String,
}

/// When a closed-loop client places its next order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// After the previous order shipped and both its emails were sent.
    Completed,
    /// As soon as the previous order was accepted (202).
    Accepted,
}

/// How load is applied.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Concurrent clients, each with one order at a time, until `duration`
    /// passes or `orders` have been placed, whichever comes first.
    Closed {
        clients: usize,
        duration: Option<Duration>,
        orders: Option<u64>,
        wait: Wait,
    },
    /// `rate` orders per second for `duration`.
    Open { rate: f64, duration: Duration },
}

/// One run of the load generator.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// How long to wait, once sending stops, for the orders still in the
    /// system to complete. Zero skips the wait (for the backlog test, where
    /// the email service is stopped on purpose).
    pub drain_timeout: Duration,
    /// Shown in front of the progress bar.
    pub label: String,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// `closed` or `open`.
    pub mode: &'static str,
    pub clients: Option<usize>,
    /// Whether closed-loop clients waited for each order to complete.
    pub wait_for_completion: Option<bool>,
    /// The open-loop rate asked for, in orders per second.
    pub target_rate: Option<f64>,
    /// POSTs sent, accepted with 202, and failed (any other answer or none).
    pub sent: u64,
    pub accepted: u64,
    pub failed: u64,
    /// Failures by kind (`HTTP 503`, `timeout`, `not completed in 60 s`...).
    pub failures: BTreeMap<String, u64>,
    /// Accepted orders whose shipment and both emails were seen.
    pub completed: u64,
    pub incomplete: u64,
    /// From the first send to the last send.
    pub send_secs: f64,
    /// From the first send to the last completion.
    pub elapsed_secs: f64,
    /// Accepted orders per second of sending: the order API's intake.
    pub accepted_per_s: f64,
    /// Completed orders per second, first send to last completion: the
    /// throughput of the whole system.
    pub orders_per_s: f64,
    pub post_latency: LatencySummary,
    pub e2e_latency: LatencySummary,
}

impl LoadResult {
    /// Prints the run's figures as two tables.
    pub fn print(&self, title: &str) {
        let mut counts = Table::new(title, &["", "value"]);
        let how = match (self.mode, self.clients, self.target_rate) {
            ("closed", Some(clients), _) => format!("closed loop, {clients} clients"),
            (_, _, Some(rate)) => format!("open loop, {rate:.1} orders/s"),
            _ => self.mode.to_owned(),
        };
        counts
            .row(vec!["mode".into(), how])
            .row(vec!["sent".into(), self.sent.to_string()])
            .row(vec!["accepted".into(), self.accepted.to_string()])
            .row(vec!["failed".into(), self.failed.to_string()])
            .row(vec!["completed".into(), self.completed.to_string()])
            .row(vec!["incomplete".into(), self.incomplete.to_string()])
            .row(vec![
                "accepted (POST) rate".into(),
                report::per_second(self.accepted_per_s),
            ])
            .row(vec![
                "completed (e2e) rate".into(),
                report::per_second(self.orders_per_s),
            ]);
        for (kind, n) in &self.failures {
            counts.row(vec![format!("failure: {kind}"), n.to_string()]);
        }
        counts.print();
        let mut latency = Table::new(&format!("{title}: latency"), &Table::LATENCY_HEADER);
        latency
            .latency_row("POST /orders", &self.post_latency)
            .latency_row("end to end", &self.e2e_latency);
        latency.print();
    }
}

/// Runs the load generator once against a running system.
pub async fn run(target: &Target, options: &Options) -> anyhow::Result<LoadResult> {
    let shared = Arc::new(Shared::new(target)?);
    // Subscribe before the first order goes out, so no event is missed.
    let observer = observe(&target.nats_url, shared.clone()).await?;

    let began = Instant::now();
    let (length, by_time) = match options.mode {
        Mode::Closed {
            orders: Some(n), ..
        } => (n, false),
        Mode::Closed { duration, .. } => (duration.map_or(0, |d| d.as_secs()), true),
        Mode::Open { rate, duration } => ((rate * duration.as_secs_f64()).round() as u64, false),
    };
    let bar = report::progress(length, &options.label);
    let ticker = {
        let (shared, bar) = (shared.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                let position = if by_time {
                    began.elapsed().as_secs()
                } else {
                    shared.sent.load(Relaxed)
                };
                bar.set_position(position.min(length));
                bar.set_message(shared.status());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    match options.mode {
        Mode::Closed {
            clients,
            duration,
            orders,
            wait,
        } => closed(&shared, clients, duration, orders, wait).await,
        Mode::Open { rate, duration } => open(&shared, rate, duration).await?,
    }
    let send_secs = began.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();

    drain(&shared, options.drain_timeout, &options.label).await;
    observer.abort();

    let accepted = shared.accepted.load(Relaxed);
    let completed = shared.tracker.completed.load(Relaxed);
    let state = shared.tracker.lock();
    let elapsed_secs = state
        .last_completion
        .map_or(0.0, |t| t.saturating_duration_since(began).as_secs_f64());
    let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let (clients, wait_for_completion, target_rate) = match options.mode {
        Mode::Closed { clients, wait, .. } => (Some(clients), Some(wait == Wait::Completed), None),
        Mode::Open { rate, .. } => (None, None, Some(rate)),
    };
    Ok(LoadResult {
        mode: match options.mode {
            Mode::Closed { .. } => "closed",
            Mode::Open { .. } => "open",
        },
        clients,
        wait_for_completion,
        target_rate,
        sent: shared.sent.load(Relaxed),
        accepted,
        failed: shared.failed.load(Relaxed),
        failures: lock(&shared.failures).clone(),
        completed,
        incomplete: accepted.saturating_sub(completed),
        send_secs,
        elapsed_secs,
        accepted_per_s: rate(accepted, send_secs),
        orders_per_s: rate(completed, elapsed_secs),
        post_latency: lock(&shared.post_latency).summary(),
        e2e_latency: state.e2e.summary(),
    })
}

/// `clients` tasks, each placing one order at a time.
async fn closed(
    shared: &Arc<Shared>,
    clients: usize,
    duration: Option<Duration>,
    orders: Option<u64>,
    wait: Wait,
) {
    let deadline = duration.map(|d| Instant::now() + d);
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..clients.max(1) {
        let (shared, issued) = (shared.clone(), issued.clone());
        tasks.spawn(async move {
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = issued.fetch_add(1, Relaxed);
                if orders.is_some_and(|max| n >= max) {
                    break;
                }
                shared.place(n, Instant::now(), wait).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One order every `1 / rate` seconds, each in its own task so a slow answer
/// never delays the next send.
async fn open(shared: &Arc<Shared>, rate: f64, duration: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0.0, "the open-loop rate must be positive");
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for n in 0..total {
        let scheduled = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let shared = shared.clone();
        tasks.spawn(async move {
            shared.place(n, scheduled, Wait::Accepted).await;
            drop(permit);
        });
        // Reap finished requests so the set stays as small as the number in
        // flight.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Waits, with a progress bar, until every accepted order completed or
/// `timeout` passed.
async fn drain(shared: &Shared, timeout: Duration, label: &str) {
    let accepted = shared.accepted.load(Relaxed);
    let completed = || shared.tracker.completed.load(Relaxed);
    if timeout.is_zero() || completed() >= accepted {
        return;
    }
    let bar = report::progress(accepted, &format!("{label} drain"));
    let deadline = Instant::now() + timeout;
    // This loop reads our own counters, which the NATS observer advances: it
    // polls nothing in the system under test.
    while completed() < accepted && Instant::now() < deadline {
        bar.set_position(completed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
}

/// Everything the tasks of one run share.
struct Shared {
    http: reqwest::Client,
    orders_url: String,
    tracker: Tracker,
    sent: AtomicU64,
    accepted: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    post_latency: Mutex<Latency>,
}

/// The part of the order service's 202 answer we need.
#[derive(Deserialize)]
struct Accepted {
    order_id: OrderId,
}

impl Shared {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            orders_url: format!("{}/orders", target.order_url.trim_end_matches('/')),
            tracker: Tracker::default(),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            post_latency: Mutex::new(Latency::new()),
        })
    }

    /// Places order number `n`, whose clock started at `start` (when it was
    /// sent, or scheduled to be), and with [`Wait::Completed`] waits until it
    /// completed.
    async fn place(&self, n: u64, start: Instant, wait: Wait) {
        self.sent.fetch_add(1, Relaxed);
        match self.post(n).await {
            Ok(order_id) => {
                lock(&self.post_latency).record(start.elapsed());
                self.accepted.fetch_add(1, Relaxed);
                if wait == Wait::Completed {
                    let (done, completed) = oneshot::channel();
                    self.tracker.started(order_id, start, Some(done));
                    if tokio::time::timeout(ORDER_TIMEOUT, completed)
                        .await
                        .is_err()
                    {
                        self.fail(format!("not completed in {} s", ORDER_TIMEOUT.as_secs()));
                    }
                } else {
                    self.tracker.started(order_id, start, None);
                }
            }
            Err(kind) => {
                self.failed.fetch_add(1, Relaxed);
                self.fail(kind);
            }
        }
    }

    /// One `POST /orders`; the error is a short description of what went
    /// wrong, used to count failures by kind.
    async fn post(&self, n: u64) -> Result<OrderId, String> {
        // One line of one item, like the README's example order.
        let body = serde_json::json!({
            "customer_email": format!("bench+{n}@example.com"),
            "items": [{"sku": "book", "quantity": 1, "unit_price_cents": 1500}],
            "payment_token": "tok_visa",
        });
        let response = self
            .http
            .post(&self.orders_url)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout".to_owned()
                } else if e.is_connect() {
                    "connection refused".to_owned()
                } else {
                    "request failed".to_owned()
                }
            })?;
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        response
            .json::<Accepted>()
            .await
            .map(|a| a.order_id)
            .map_err(|_| "unreadable 202 body".to_owned())
    }

    fn fail(&self, kind: String) {
        *lock(&self.failures).entry(kind).or_default() += 1;
    }

    /// The progress bar's message.
    fn status(&self) -> String {
        format!(
            "accepted {}  completed {}  failed {}",
            self.accepted.load(Relaxed),
            self.tracker.completed.load(Relaxed),
            self.failed.load(Relaxed),
        )
    }
}

/// Locks a mutex even if a task panicked while holding it: the counters
/// inside stay meaningful, and a benchmark should report what it has.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which orders have reached which milestone, and the end-to-end latency of
/// those that completed.
#[derive(Default)]
struct Tracker {
    state: Mutex<TrackerState>,
    completed: AtomicU64,
}

#[derive(Default)]
struct TrackerState {
    orders: HashMap<OrderId, Progress>,
    e2e: Latency,
    last_completion: Option<Instant>,
}

/// One order's milestones. Its events can arrive before the POST's answer
/// does (the 202 and the first events race), so every field is optional and
/// the order completes when the last of them is filled in, in any order.
#[derive(Default)]
struct Progress {
    started: Option<Instant>,
    shipped: Option<Instant>,
    confirmation_email: Option<Instant>,
    shipped_email: Option<Instant>,
    /// Told when the order completes, for a closed-loop client waiting on it.
    done: Option<oneshot::Sender<()>>,
}

impl Progress {
    /// The end-to-end latency, once every milestone is in.
    fn latency(&self) -> Option<(Instant, Duration)> {
        let last = self
            .shipped?
            .max(self.confirmation_email?)
            .max(self.shipped_email?);
        Some((last, last.saturating_duration_since(self.started?)))
    }
}

/// An event the observer saw for an order.
enum Milestone {
    Shipped,
    Email(EmailKind),
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        lock(&self.state)
    }

    /// The POST for `order_id` was accepted; its clock started at `at`.
    fn started(&self, order_id: OrderId, at: Instant, done: Option<oneshot::Sender<()>>) {
        let mut state = self.lock();
        let progress = state.orders.entry(order_id).or_default();
        progress.started = Some(at);
        progress.done = done;
        self.settle(&mut state, order_id);
    }

    /// The observer saw `milestone` for `order_id` at `at`.
    fn observed(&self, order_id: OrderId, milestone: Milestone, at: Instant) {
        let mut state = self.lock();
        let progress = state.orders.entry(order_id).or_default();
        let slot = match milestone {
            Milestone::Shipped => &mut progress.shipped,
            Milestone::Email(EmailKind::OrderConfirmation) => &mut progress.confirmation_email,
            Milestone::Email(EmailKind::OrderShipped) => &mut progress.shipped_email,
            // The other emails (a cancellation, a refund) belong to orders
            // that never ship; the generator only uses a card that succeeds,
            // so they do not happen.
            Milestone::Email(_) => return,
        };
        // A redelivered event must not move the milestone later.
        slot.get_or_insert(at);
        self.settle(&mut state, order_id);
    }

    /// Records the order's latency and forgets it if it is complete.
    fn settle(&self, state: &mut TrackerState, order_id: OrderId) {
        let Some((at, latency)) = state.orders.get(&order_id).and_then(Progress::latency) else {
            return;
        };
        if let Some(progress) = state.orders.remove(&order_id)
            && let Some(done) = progress.done
        {
            // The client may have given up waiting; then nobody listens.
            let _ = done.send(());
        }
        state.e2e.record(latency);
        state.last_completion = Some(state.last_completion.map_or(at, |t| t.max(at)));
        self.completed.fetch_add(1, Relaxed);
    }
}

/// Subscribes to the events that mark an order's milestones and feeds them to
/// the tracker until the returned task is aborted.
async fn observe(
    nats_url: &str,
    shared: Arc<Shared>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = crate::nats::connect(nats_url, "bench-observer").await?;
    let shipped = client
        .subscribe(EventKind::OrderShipped.subject_filter())
        .await?;
    let emails = client
        .subscribe(EventKind::EmailSent.subject_filter())
        .await?;
    // The subscriptions are in place on the server once the flush returns.
    client.flush().await?;
    let mut events = futures::stream::select(shipped, emails);
    Ok(tokio::spawn(async move {
        // The client moves into the task so the connection lives as long as
        // the subscriptions.
        let _client = client;
        while let Some(message) = events.next().await {
            let at = Instant::now();
            if let Some((order_id, milestone)) = milestone(&message) {
                shared.tracker.observed(order_id, milestone, at);
            }
        }
    }))
}

/// The `kind` of an `EmailSent` payload; the other fields are not needed.
#[derive(Deserialize)]
struct EmailSentKind {
    kind: EmailKind,
}

/// Reads the order id from the subject (`<prefix>.<order id>.<verb>`) and,
/// for an email, its kind from the payload. Anything else is ignored.
fn milestone(message: &async_nats::Message) -> Option<(OrderId, Milestone)> {
    let mut tokens = message.subject.split('.');
    let (_prefix, id, verb) = (tokens.next()?, tokens.next()?, tokens.next()?);
    let order_id = id.parse::<OrderId>().ok()?;
    if verb == EventKind::OrderShipped.verb() {
        Some((order_id, Milestone::Shipped))
    } else if verb == EventKind::EmailSent.verb() {
        let email: EmailSentKind = serde_json::from_slice(&message.payload).ok()?;
        Some((order_id, Milestone::Email(email.kind)))
    } else {
        None
    }
}
