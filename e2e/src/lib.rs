//! The native stack: the same system `docker compose up` starts, as plain
//! processes on this machine.
//!
//! [`Stack::start`] launches nats-server, Jaeger and Mailpit from the pinned
//! tools in `.tools/bin`, waits until each is healthy, then starts the four
//! service binaries with the environment that `docker-compose.yml` gives
//! them (only the host names differ) and waits for every `/readyz`.
//!
//! Two users: `make run` (the `stack` binary: the design's ports, logs on the
//! console with each process's name in front) and the end-to-end tests (free
//! ports, a temporary store, logs to files), so the tests exercise exactly
//! what a person runs. [`Stack::service_env`] is the single description of a
//! service's configuration, and a test holds `docker-compose.yml` to it.
//!
//! NATS requires a login (`deploy/nats.conf`). The stack hands nats-server
//! every user's password and each service its own, from the
//! development-only files in `deploy/secrets/` that compose mounts as
//! secrets. Tests, the load generator and tools log in with
//! [`Stack::connect_admin`] (full rights) or [`Stack::connect_as`] (one
//! user's rights), or build their own connection from [`nats_options`].

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The four services, in the order of the flow.
pub const SERVICES: [&str; 4] = ["order", "payment", "shipping", "email"];

/// Mailpit's settings, the same as its `environment:` in compose: keep every
/// message (the tests count them, and a long demo should not lose its first
/// emails), and allow SMTP fault injection through its chaos API
/// (`PUT /api/v1/chaos`), a switch a person can flip while the system runs.
pub const MAILPIT_ENV: [(&str, &str); 2] = [("MP_MAX_MESSAGES", "0"), ("MP_ENABLE_CHAOS", "true")];

/// nats-server's settings, the same as its `environment:` in compose: a
/// memory budget for the broker's Go heap. Under the bench's load the live
/// heap is 110 to 130 MB: the write caches of the streams being written (a
/// buffer of up to 8 MB each), the subject index (about 2.3 KB per order:
/// every order adds a dozen subjects across the streams and buckets, and the
/// index grows with the store), and the two-minute duplicate window. Go's
/// default lets the heap grow to twice that. At 160 MiB the collector runs
/// more often instead, for little CPU. (At 128 MiB it ran almost without
/// pause once the store held some 20,000 orders, and the broker's latency
/// went from tens of milliseconds to a second.) The limit is soft: once the
/// live heap outgrows it, after very roughly 20,000 more orders in the
/// store, Go caps the collector at half the CPU and lets the heap grow; raise
/// it (or `make clean-stack`) before that.
pub const NATS_ENV: [(&str, &str); 1] = [("GOMEMLIMIT", "160MiB")];

/// Jaeger's settings, the same as its `environment:` in compose: what it
/// holds is bounded by `max_traces` in `deploy/jaeger.yaml`, so a collector
/// that runs when the heap grows by half instead of doubling keeps it near
/// 75 MB under full load for a few percent more of its small CPU share.
pub const JAEGER_ENV: [(&str, &str); 1] = [("GOGC", "50")];

/// Every NATS user `deploy/nats.conf` knows: one per service, `ops` for the
/// `ops` tool and `admin` for tests and the load generator.
pub const NATS_USERS: [&str; 6] = ["order", "payment", "shipping", "email", "ops", "admin"];

/// The file holding a NATS user's development-only password; compose mounts
/// the same file as the secret `nats-<user>-password`.
pub fn nats_password_file(user: &str) -> PathBuf {
    repo_root()
        .join("deploy/secrets")
        .join(format!("dev-nats-{user}-password.txt"))
}

/// A NATS user's development credentials.
pub fn nats_credentials(user: &str) -> anyhow::Result<platform::config::NatsAuth> {
    let path = nats_password_file(user);
    Ok(platform::config::NatsAuth {
        user: user.to_owned(),
        password: platform::config::read_password_file(&path.to_string_lossy())?,
    })
}

/// Connection options that log in as `user` with its development password,
/// replies under its own inbox prefix: how tests and the load generator
/// connect (`nats_options("admin")?.connect(url)`).
pub fn nats_options(user: &str) -> anyhow::Result<async_nats::ConnectOptions> {
    let auth = nats_credentials(user)?;
    Ok(platform::bus::connect_options(Some(&auth)).name(format!("{user} (e2e)")))
}

/// The environment nats-server needs: `NATS_<USER>_PASSWORD` for every user,
/// which `deploy/nats.conf` refers to (compose's `deploy/nats-entrypoint.sh`
/// does the same from the secrets).
pub fn nats_server_env() -> anyhow::Result<Vec<(String, String)>> {
    NATS_USERS
        .iter()
        .map(|user| {
            let var = format!("NATS_{}_PASSWORD", user.to_uppercase());
            Ok((var, nats_credentials(user)?.password))
        })
        .collect()
}

/// Every port the stack listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub nats: u16,
    pub nats_monitor: u16,
    pub jaeger_ui: u16,
    pub jaeger_otlp_grpc: u16,
    pub jaeger_otlp_http: u16,
    pub jaeger_query_grpc: u16,
    pub jaeger_health: u16,
    pub mailpit_ui: u16,
    pub mailpit_smtp: u16,
    pub order: u16,
    pub payment: u16,
    pub shipping: u16,
    pub email: u16,
}

impl Ports {
    /// The design's ports, the same as in `docker-compose.yml`.
    pub const DEFAULT: Ports = Ports {
        nats: 4222,
        nats_monitor: 8222,
        jaeger_ui: 16686,
        jaeger_otlp_grpc: 4317,
        jaeger_otlp_http: 4318,
        jaeger_query_grpc: 16685,
        jaeger_health: 13133,
        mailpit_ui: 8025,
        mailpit_smtp: 1025,
        order: 8080,
        payment: 8081,
        shipping: 8082,
        email: 8083,
    };

    /// Ports the operating system says are free right now, so that tests can
    /// run side by side and next to a running `make run`.
    pub fn free() -> anyhow::Result<Ports> {
        // Hold every listener until all ports are chosen so none repeats.
        let listeners = (0..13)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ports {
            nats: ports[0],
            nats_monitor: ports[1],
            jaeger_ui: ports[2],
            jaeger_otlp_grpc: ports[3],
            jaeger_otlp_http: ports[4],
            jaeger_query_grpc: ports[5],
            jaeger_health: ports[6],
            mailpit_ui: ports[7],
            mailpit_smtp: ports[8],
            order: ports[9],
            payment: ports[10],
            shipping: ports[11],
            email: ports[12],
        })
    }

    /// The HTTP port of a service.
    pub fn service(&self, name: &str) -> u16 {
        match name {
            "order" => self.order,
            "payment" => self.payment,
            "shipping" => self.shipping,
            _ => self.email,
        }
    }
}

/// Where process output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logs {
    /// To this process's stdout, each line prefixed with the process name,
    /// and to the log file.
    Console,
    /// To `<state dir>/logs/<name>.log` only.
    Files,
}

/// How to run the stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub ports: Ports,
    /// Holds the JetStream store and the logs.
    pub state_dir: PathBuf,
    pub logs: Logs,
    /// `child` or `link` (`TRACE_CONSUMER_SPANS`).
    pub consumer_spans: String,
    /// `OTEL_TRACES_SAMPLER` for the services.
    pub sampler: String,
    /// `RUST_LOG` for the services.
    pub rust_log: String,
    /// The directory holding the service binaries (`target/debug` or
    /// `target/release`).
    pub bin_dir: PathBuf,
}

impl StackConfig {
    /// A configuration for tests: free ports, a fresh state directory,
    /// logs in files, and the service binaries next to the test binary.
    pub fn for_tests(state_dir: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            ports: Ports::free()?,
            state_dir,
            logs: Logs::Files,
            consumer_spans: "child".into(),
            sampler: "parentbased_always_on".into(),
            rust_log: "info".into(),
            bin_dir: target_dir_of_current_exe()?,
        })
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `target/<profile>` for the running executable, whether it is the `stack`
/// binary (`target/<profile>/stack`) or a test (`target/<profile>/deps/it-…`).
pub fn target_dir_of_current_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    Ok(dir.to_path_buf())
}

/// Finds a pinned tool in `.tools/bin`, falling back to `PATH`.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let pinned = repo_root().join(".tools/bin").join(name);
    if pinned.is_file() {
        return Ok(pinned);
    }
    let on_path = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    on_path.flatten().with_context(|| {
        format!("`{name}` is not installed: run `make tools` (scripts/install-tools.sh)")
    })
}

/// Polls `check` until it returns `Some` or `timeout` passes. The way every
/// wait in the stack and the tests is written: a condition and a deadline,
/// never a bare sleep.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The environment a service runs with: the native twin of its
/// `environment:` block in `docker-compose.yml`, which a test holds to it.
pub fn service_env(config: &StackConfig, name: &str) -> BTreeMap<&'static str, String> {
    let p = config.ports;
    let mut env = BTreeMap::from([
        ("HTTP_ADDR", format!("127.0.0.1:{}", p.service(name))),
        ("NATS_URL", format!("nats://127.0.0.1:{}", p.nats)),
        // Each service logs in as its own NATS user; compose mounts the same
        // password file as a secret.
        ("NATS_USER", name.to_owned()),
        (
            "NATS_PASSWORD_FILE",
            nats_password_file(name).display().to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", p.jaeger_otlp_http),
        ),
        ("OTEL_SERVICE_NAME", name.to_owned()),
        ("OTEL_TRACES_SAMPLER", config.sampler.clone()),
        ("TRACE_CONSUMER_SPANS", config.consumer_spans.clone()),
        ("RUST_LOG", config.rust_log.clone()),
    ]);
    if name == "email" {
        env.insert("SMTP_URL", format!("smtp://127.0.0.1:{}", p.mailpit_smtp));
        env.insert("EMAIL_FROM", "orders@example.com".to_owned());
    }
    env
}

/// Waits for Ctrl-C or SIGTERM. The stack's processes run in process groups
/// of their own, so neither reaches them directly: the launcher stops them in
/// order (services first) when this returns.
pub async fn until_stopped() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm => {}
    }
}

/// One running process of the stack.
struct Process {
    child: Child,
}

/// The running stack. Dropping it kills every process.
pub struct Stack {
    pub config: StackConfig,
    processes: BTreeMap<String, Process>,
    http: reqwest::Client,
}

impl Stack {
    /// Starts infrastructure and services and waits until all are ready.
    pub async fn start(config: StackConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(config.state_dir.join("logs"))?;
        let mut stack = Stack {
            config,
            processes: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        stack.start_infrastructure().await?;
        for name in SERVICES {
            stack.start_service(name).await?;
        }
        for name in SERVICES {
            stack.wait_ready(name).await?;
        }
        Ok(stack)
    }

    async fn start_infrastructure(&mut self) -> anyhow::Result<()> {
        self.start_nats().await?;
        let p = self.config.ports;
        let jaeger_env = [
            ("JAEGER_HOST", "127.0.0.1".to_owned()),
            ("JAEGER_OTLP_GRPC_PORT", p.jaeger_otlp_grpc.to_string()),
            ("JAEGER_OTLP_HTTP_PORT", p.jaeger_otlp_http.to_string()),
            ("JAEGER_UI_PORT", p.jaeger_ui.to_string()),
            ("JAEGER_QUERY_GRPC_PORT", p.jaeger_query_grpc.to_string()),
            ("JAEGER_HEALTH_PORT", p.jaeger_health.to_string()),
            ("JAEGER_METRICS_LEVEL", "none".to_owned()),
        ];
        let config = repo_root().join("deploy/jaeger.yaml");
        let mut jaeger = Command::new(tool("jaeger")?);
        jaeger
            .arg("--config")
            .arg(config)
            .envs(jaeger_env)
            .envs(JAEGER_ENV);
        self.spawn("jaeger", jaeger)?;

        let mut mailpit = Command::new(tool("mailpit")?);
        mailpit
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", p.mailpit_ui))
            .arg("--smtp")
            .arg(format!("127.0.0.1:{}", p.mailpit_smtp))
            .envs(MAILPIT_ENV);
        self.spawn("mailpit", mailpit)?;

        let health = format!("http://127.0.0.1:{}/status", p.jaeger_health);
        self.wait_http("jaeger", &health).await?;
        let ready = format!("http://127.0.0.1:{}/readyz", p.mailpit_ui);
        self.wait_http("mailpit", &ready).await?;
        Ok(())
    }

    /// Starts nats-server on the stack's store; also used to bring the
    /// broker back after [`Stack::kill`] in fault tests.
    pub async fn start_nats(&mut self) -> anyhow::Result<()> {
        let p = self.config.ports;
        let store = self.config.state_dir.join("nats");
        let mut nats = Command::new(tool("nats-server")?);
        nats.arg("-c")
            .arg(repo_root().join("deploy/nats.conf"))
            .args(["-a", "127.0.0.1"])
            .args(["-p", &p.nats.to_string()])
            .args(["-m", &p.nats_monitor.to_string()])
            .arg("-sd")
            .arg(store)
            .envs(NATS_ENV)
            .envs(nats_server_env()?);
        self.spawn("nats", nats)?;
        let health = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            p.nats_monitor
        );
        self.wait_http("nats", &health).await
    }

    /// The environment a service runs with; see [`service_env`].
    pub fn service_env(&self, name: &str) -> BTreeMap<&'static str, String> {
        service_env(&self.config, name)
    }

    /// Starts one service binary (without waiting for it to be ready).
    pub async fn start_service(&mut self, name: &str) -> anyhow::Result<()> {
        let binary = self.config.bin_dir.join(name);
        if !binary.is_file() {
            bail!(
                "{} does not exist: build the services first (`cargo build --workspace --bins`)",
                binary.display()
            );
        }
        let mut command = Command::new(binary);
        command.env_clear();
        // Keep PATH and HOME for anything the binary may need; every setting
        // it reads comes from `service_env`.
        for keep in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(keep) {
                command.env(keep, value);
            }
        }
        command.envs(self.service_env(name));
        self.spawn(name, command)
    }

    /// Waits until a service answers `/readyz` with 200.
    pub async fn wait_ready(&self, name: &str) -> anyhow::Result<()> {
        let url = format!(
            "http://127.0.0.1:{}/readyz",
            self.config.ports.service(name)
        );
        self.wait_http(name, &url).await
    }

    async fn wait_http(&self, name: &str, url: &str) -> anyhow::Result<()> {
        let http = &self.http;
        wait_for(
            &format!("{name} at {url}"),
            Duration::from_secs(60),
            || async move {
                let response = http.get(url).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await
        .with_context(|| self.log_tail(name))
    }

    fn spawn(&mut self, name: &str, mut command: Command) -> anyhow::Result<()> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A process group of its own, so that Ctrl-C in the terminal
            // reaches only the launcher, which then stops the services before
            // the broker and Jaeger they drain into.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let log_file = self.log_path(name);
        for output in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(forward(
                name.to_owned(),
                output,
                self.config.logs.clone(),
                log_file.clone(),
            ));
        }
        self.processes.insert(name.to_owned(), Process { child });
        Ok(())
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.config
            .state_dir
            .join("logs")
            .join(format!("{name}.log"))
    }

    /// The last lines a process logged, for error messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("last lines of {name}'s log:\n{tail}")
    }

    /// Sends `signal` to a process (SIGTERM to stop, SIGKILL to crash,
    /// SIGSTOP/SIGCONT to freeze and thaw).
    pub fn signal(&self, name: &str, sig: Signal) -> anyhow::Result<()> {
        let process = self
            .processes
            .get(name)
            .with_context(|| format!("{name} is not running"))?;
        let pid = process
            .child
            .id()
            .with_context(|| format!("{name} has exited"))?;
        let pid = i32::try_from(pid)?;
        signal::kill(Pid::from_raw(pid), sig)?;
        Ok(())
    }

    /// Stops a process with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self, name: &str) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(name, Signal::SIGTERM)?;
        self.reap(name, Duration::from_secs(30)).await
    }

    /// Kills a process with SIGKILL and waits for it to be gone.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, Signal::SIGKILL)?;
        self.reap(name, Duration::from_secs(10)).await.map(|_| ())
    }

    async fn reap(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let mut process = self
            .processes
            .remove(name)
            .with_context(|| format!("{name} is not running"))?;
        match tokio::time::timeout(timeout, process.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                process.child.start_kill()?;
                bail!("{name} did not exit within {timeout:?}")
            }
        }
    }

    /// Stops everything: services first (so they drain and flush spans while
    /// the broker and Jaeger are still up), then the infrastructure.
    pub async fn shutdown(mut self) {
        for name in SERVICES.iter().rev() {
            if self.processes.contains_key(*name)
                && let Err(error) = self.stop(name).await
            {
                eprintln!("stopping {name}: {error:#}");
            }
        }
        for name in ["mailpit", "jaeger", "nats"] {
            if self.processes.contains_key(name) {
                let _ = self.stop(name).await;
            }
        }
    }

    pub fn order_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.ports.order)
    }

    pub fn jaeger_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.ports.jaeger_ui)
    }

    pub fn mailpit_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.ports.mailpit_ui)
    }

    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.config.ports.nats)
    }

    /// A connection logged in as one of [`NATS_USERS`], with exactly that
    /// user's rights.
    pub async fn connect_as(&self, user: &str) -> anyhow::Result<async_nats::Client> {
        nats_options(user)?
            .connect(self.nats_url())
            .await
            .with_context(|| format!("cannot connect to NATS as `{user}`"))
    }

    /// A connection with full rights, for reading JetStream state and for
    /// publishing what no service may (forged events in fault tests).
    pub async fn connect_admin(&self) -> anyhow::Result<async_nats::Client> {
        self.connect_as("admin").await
    }

    pub fn nats_monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.ports.nats_monitor)
    }
}

/// Copies a process's output, line by line, to its log file and, for
/// `make run`, to the console with the process's name in front.
async fn forward(
    name: String,
    output: Box<dyn AsyncRead + Send + Unpin>,
    logs: Logs,
    file: PathBuf,
) {
    use tokio::io::AsyncWriteExt as _;
    let mut lines = BufReader::new(output).lines();
    let mut sink = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .await
        .ok();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(file) = sink.as_mut() {
            let _ = file.write_all(format!("{line}\n").as_bytes()).await;
        }
        if logs == Logs::Console {
            println!("{name:>8} | {line}");
        }
    }
}
