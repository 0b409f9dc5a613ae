//! Configuration, read from the environment in one place.
//!
//! Variables read by every service:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `NATS_URL` | `nats://127.0.0.1:4222` | the broker |
//! | `NATS_USER` | unset (anonymous) | the service's NATS user; `deploy/nats.conf` has one per service |
//! | `NATS_PASSWORD` | unset | its password |
//! | `NATS_PASSWORD_FILE` | unset | a file holding the password instead (a compose secret); trailing line ends are ignored |
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
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_PASSWORD_FILE",
    "HTTP_ADDR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
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
    /// Who to log in to NATS as; `None` connects anonymously, which the
    /// project's `deploy/nats.conf` refuses.
    pub nats_auth: Option<NatsAuth>,
    pub http_addr: SocketAddr,
    pub consumer_spans: ConsumerSpans,
}

impl Settings {
    /// Reads the shared settings; `default_port` is the service's own port
    /// from the design (8080 for order, 8081.. for the others).
    pub fn from_env(service: &'static str, default_port: u16) -> anyhow::Result<Self> {
        let nats_url = env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let nats_auth = NatsAuth::from_env()?;
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
            nats_auth,
            http_addr,
            consumer_spans,
        })
    }
}

/// A NATS user and its password, from `NATS_USER` and `NATS_PASSWORD` or
/// `NATS_PASSWORD_FILE`. Its `Debug` output never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl NatsAuth {
    /// Reads the credentials from the environment: none when `NATS_USER` is
    /// unset, and an error when it is set without exactly one of
    /// `NATS_PASSWORD` and `NATS_PASSWORD_FILE` (or the other way round).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let var = |name: &str| env::var(name).ok().filter(|v| !v.is_empty());
        Self::from_parts(
            var("NATS_USER"),
            var("NATS_PASSWORD"),
            var("NATS_PASSWORD_FILE"),
        )
    }

    fn from_parts(
        user: Option<String>,
        password: Option<String>,
        password_file: Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        let password = match (password, password_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set NATS_PASSWORD or NATS_PASSWORD_FILE, not both")
            }
            (Some(password), None) => Some(password),
            (None, Some(path)) => Some(read_password_file(&path)?),
            (None, None) => None,
        };
        match (user, password) {
            (Some(user), Some(password)) => Ok(Some(Self { user, password })),
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!("NATS_USER is set without a password"),
            (None, Some(_)) => anyhow::bail!("a NATS password is set without NATS_USER"),
        }
    }

    /// The prefix of this user's reply subjects. Each user has its own, so
    /// `deploy/nats.conf` can let it subscribe to its own replies only and no
    /// user can read another's (the answers to its KV reads, for example).
    pub fn inbox_prefix(&self) -> String {
        format!("_INBOX_{}", self.user)
    }
}

/// Reads a password from a file such as a compose secret, without the line
/// end that editors add.
pub fn read_password_file(path: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the NATS password file `{path}`"))?;
    let password = text.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(
        !password.is_empty(),
        "the NATS password file `{path}` is empty"
    );
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_in_pairs() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(NatsAuth::from_parts(None, None, None).ok(), Some(None));
        assert_eq!(
            NatsAuth::from_parts(s("order"), s("secret"), None).ok(),
            Some(Some(NatsAuth {
                user: "order".into(),
                password: "secret".into()
            }))
        );
        assert!(NatsAuth::from_parts(s("order"), None, None).is_err());
        assert!(NatsAuth::from_parts(None, s("secret"), None).is_err());
        assert!(NatsAuth::from_parts(s("order"), s("a"), s("/dev/null")).is_err());
    }

    #[test]
    fn a_password_file_loses_its_line_end_only() {
        let path = std::env::temp_dir().join(format!("nats-pw-{}", std::process::id()));
        std::fs::write(&path, " dev-pass word \n").expect("written");
        let path = path.to_string_lossy().into_owned();
        let auth = NatsAuth::from_parts(Some("email".into()), None, Some(path.clone()))
            .expect("readable")
            .expect("credentials");
        assert_eq!(auth.password, " dev-pass word ");
        assert_eq!(auth.inbox_prefix(), "_INBOX_email");
        assert!(!format!("{auth:?}").contains("dev-pass"), "Debug hides it");
        std::fs::write(&path, "\n").expect("written");
        assert!(read_password_file(&path).is_err(), "empty is refused");
        let _ = std::fs::remove_file(&path);
        assert!(read_password_file("/nonexistent/password").is_err());
    }
}
