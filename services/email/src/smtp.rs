//! The SMTP client: a small pool of lettre connections over sockets with
//! Nagle's algorithm turned off.
//!
//! Why not lettre's own pooled `AsyncSmtpTransport`: it opens its sockets
//! without `TCP_NODELAY`, and lettre writes a message's body and its closing
//! `<CRLF>.<CRLF>` as two writes. Nagle's algorithm holds the second, tiny
//! write until the server acknowledges the first, and the server delays that
//! acknowledgement (40 ms on Linux) because it is waiting for the rest of the
//! message. Every email took 44 ms, nearly all of it waiting on that stall;
//! Jaeger's `smtp send` spans showed it, and lettre has since fixed it
//! upstream (lettre/lettre#1159, not in a release yet). Here the socket is
//! ours, so we set `TCP_NODELAY` and hand it to lettre's connection, which
//! still speaks the protocol: an email now takes about a millisecond. Delete
//! this module once a lettre release sets the option itself.
//!
//! Timeouts apply to each read and each write on the socket, not to a whole
//! send: see [`Socket`].
//!
//! `SMTP_URL` takes the form `smtp://[user:password@]host[:port][?tls=…]`:
//! `tls=required` upgrades with STARTTLS or fails, `tls=opportunistic`
//! upgrades when the server offers it, no `tls` stays in plain text (right
//! for Mailpit, wrong across a network). `smtps://` (TLS from the first
//! byte) also works, through lettre's own socket, so it keeps the stall
//! and has no read or write timeout.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

/// The longest a connection attempt may take, and the longest the server may
/// stay silent while we wait for it to take or answer a read or a write.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A connection idle for longer is checked with `NOOP` before it is reused:
/// servers close idle sessions, and a stale one would fail a send.
const CHECK_AFTER: Duration = Duration::from_secs(10);

/// A connection idle for longer is closed instead of reused.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// How the connection is secured.
#[derive(Clone)]
enum Security {
    Plain,
    StartTls {
        parameters: TlsParameters,
        required: bool,
    },
    Implicit(TlsParameters),
}

/// Where and how to connect, from `SMTP_URL`.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
}

impl Target {
    /// Parses `SMTP_URL`.
    pub fn from_url(text: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(text).context("not a URL")?;
        let host = url.host_str().context("the URL names no host")?.to_owned();
        let tls = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let parameters = || TlsParameters::new(host.clone()).context("TLS set-up failed");
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None | Some("none")) => (Security::Plain, 25),
            ("smtp", Some("required")) => (
                Security::StartTls {
                    parameters: parameters()?,
                    required: true,
                },
                587,
            ),
            ("smtp", Some("opportunistic")) => (
                Security::StartTls {
                    parameters: parameters()?,
                    required: false,
                },
                587,
            ),
            ("smtps", None) => (Security::Implicit(parameters()?), 465),
            ("smtp" | "smtps", Some(other)) => {
                bail!("tls={other}: expected required, opportunistic or none")
            }
            (scheme, _) => bail!("scheme {scheme}: expected smtp or smtps"),
        };
        let credentials = (!url.username().is_empty()).then(|| {
            Credentials::new(
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            )
        });
        Ok(Self {
            port: url.port().unwrap_or(default_port),
            host,
            security,
            credentials,
        })
    }
}

/// User names and passwords in a URL are percent-encoded (and, unlike a
/// form's fields, may hold a literal `+`).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A pool of at most `size` SMTP connections, opened on demand and reused.
pub struct Mailer {
    target: Target,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    slots: Semaphore,
}

impl Mailer {
    pub fn new(target: Target, size: usize) -> Self {
        Self {
            target,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Semaphore::new(size),
        }
    }

    /// Sends one message on a pooled connection. A connection that failed is
    /// closed, never reused; the caller decides whether to try again.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> anyhow::Result<()> {
        let _slot = self.slots.acquire().await?;
        let mut connection = match self.reusable().await {
            Some(connection) => connection,
            None => tokio::time::timeout(TIMEOUT, self.connect())
                .await
                .context("connecting to the SMTP server timed out")??,
        };
        // No deadline around the whole send: the socket times out each
        // operation instead (see `Socket`).
        match connection.send(envelope, message).await {
            Ok(_) if !connection.has_broken() => {
                self.lock_idle().push((connection, Instant::now()));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(error) => {
                connection.abort().await;
                Err(error.into())
            }
        }
    }

    /// An idle connection that is still good, if there is one.
    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut connection, since) = self.lock_idle().pop()?;
            let idle = since.elapsed();
            if idle > MAX_IDLE {
                connection.abort().await;
                continue;
            }
            if idle > CHECK_AFTER && !connection.test_connected().await {
                continue;
            }
            return Some(connection);
        }
    }

    async fn connect(&self) -> anyhow::Result<AsyncSmtpConnection> {
        let t = &self.target;
        let mut connection = match &t.security {
            Security::Implicit(parameters) => {
                AsyncSmtpConnection::connect_tokio1(
                    (t.host.as_str(), t.port),
                    Some(TIMEOUT),
                    &self.hello,
                    Some(parameters.clone()),
                    None,
                )
                .await?
            }
            Security::Plain | Security::StartTls { .. } => {
                let socket = TcpStream::connect((t.host.as_str(), t.port))
                    .await
                    .with_context(|| format!("cannot reach {}:{}", t.host, t.port))?;
                socket.set_nodelay(true)?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(Socket::new(socket)),
                    &self.hello,
                )
                .await?
            }
        };
        if let Security::StartTls {
            parameters,
            required,
        } = &t.security
            && (*required || connection.can_starttls())
        {
            connection.starttls(parameters.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &t.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        // A panic while holding this lock cannot leave the list half-changed
        // (push and pop are whole operations), so a poisoned lock is usable.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An SMTP socket: TCP with Nagle's algorithm off, and a timeout on each
/// read and each write instead of a deadline over a whole send.
///
/// A deadline over the send also expires for a process that was only paused
/// (SIGSTOP, a suspended VM) while the server took the message and
/// answered: on waking, the deadline has passed, the send counts as failed
/// although the email went out, and the retry sends it a second time (the
/// fault test `frozen_email_past_ack_wait_sends_each_email_once` caught
/// exactly that). A per-operation timeout starts when the operation starts
/// waiting and is checked only after the socket itself, so an answer that
/// arrived during the pause is read, and only a server that stays silent
/// for [`TIMEOUT`] while we wait fails the send.
#[derive(Debug)]
struct Socket(Pin<Box<TimeoutStream<TcpStream>>>);

impl Socket {
    fn new(tcp: TcpStream) -> Self {
        let mut stream = TimeoutStream::new(tcp);
        stream.set_read_timeout(Some(TIMEOUT));
        stream.set_write_timeout(Some(TIMEOUT));
        Self(Box::pin(stream))
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Socket {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TimeoutStream::get_ref(&self.0).peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_url_forms() {
        let plain = Target::from_url("smtp://mailpit:1025").expect("plain");
        assert_eq!((plain.host.as_str(), plain.port), ("mailpit", 1025));
        assert!(matches!(plain.security, Security::Plain));
        assert!(plain.credentials.is_none());

        let starttls =
            Target::from_url("smtp://ada:p%40s+s@mail.example.com?tls=required").expect("starttls");
        assert_eq!(starttls.port, 587);
        assert!(matches!(
            starttls.security,
            Security::StartTls { required: true, .. }
        ));
        // Credentials has no Debug (it would print the password).
        assert!(starttls.credentials == Some(Credentials::new("ada".into(), "p@s+s".into())));

        let implicit = Target::from_url("smtps://mail.example.com").expect("smtps");
        assert_eq!(implicit.port, 465);
        assert!(matches!(implicit.security, Security::Implicit(_)));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "mailpit:1025",
            "http://mailpit",
            "smtp://mailpit?tls=maybe",
            "smtp://",
        ] {
            assert!(Target::from_url(bad).is_err(), "{bad} was accepted");
        }
    }
}
