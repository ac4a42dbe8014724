//! One NATS connection: the blocking driver of [`crate::protocol`] over `std::net::TcpStream`,
//! plain or TLS ([`Transport`]; TLS starts after the server's `INFO`, or before it with
//! `tls_first`).
//!
//! Timed reads use `TcpStream::set_read_timeout`, which works on wasm32-wasip2 (wasi-libc
//! polls the socket's pollable together with a clock; checked on wasmtime 49: a read
//! returns `WouldBlock` when the timeout passes and the stream stays usable).
//! `TcpStream::connect_timeout` does not work there (it reports success for refused
//! ports), so connecting uses plain `connect`. wasi:sockets cannot turn off Nagle's
//! algorithm (`set_nodelay` has no effect), so the client writes only right before it
//! reads an answer (or when much is queued): a lone small write would make the next
//! one wait for the server's delayed TCP ACK (~40 ms).

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::Error;
use serde::Deserialize;
use serde_json::json;
use transport::{TlsSettings, Transport};

use crate::config::{Auth, Config};
use crate::protocol::{self, Msg, Parser, ServerOp};
use common::io_error::failed;

/// How long the `INFO` / `CONNECT` / `PONG` handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a blocked write may take before the connection counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After this long without reading anything, the client sends a keepalive `PING`.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// The connection is dead when this many `PING`s go unanswered.
const MAX_PINGS_OUT: u64 = 2;

/// How many bytes one read asks for.
const READ_CHUNK: usize = 64 * 1024;

/// The fields of the server's `INFO` the client uses.
#[derive(Debug, Deserialize)]
pub struct ServerInfo {
    /// The largest message (headers and payload) the server accepts.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// Whether the server understands `HPUB` / `HMSG`.
    #[serde(default)]
    pub headers: bool,
    /// Whether the server only accepts TLS connections.
    #[serde(default)]
    pub tls_required: bool,
    /// What an NKey must sign in `CONNECT`, if the server asks for one.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Whether the server accepts TLS connections (and plain ones).
    #[serde(default)]
    pub tls_available: bool,
}

/// The `max_payload` of a server that does not say (the server's default, 1 MiB).
fn default_max_payload() -> usize {
    1 << 20
}

/// What a read found.
pub enum Incoming {
    /// A message for a subscription.
    Msg(Msg),
    /// A `PONG`: the server has processed everything sent before the matching `PING`.
    Pong,
}

/// An open, authenticated connection.
pub struct Conn {
    /// The socket, plain or TLS.
    stream: Transport,
    /// Splits what the server sends into operations.
    parser: Parser,
    /// Bytes queued for the server; [`Conn::write_out`] sends them.
    out: Vec<u8>,
    /// What the server said about itself.
    pub info: ServerInfo,
    /// `PING`s sent so far (keepalive and round trips).
    pings_sent: u64,
    /// `PONG`s received so far.
    pongs_received: u64,
    /// When the last bytes arrived (or the last keepalive `PING` went out).
    last_activity: Instant,
    /// The read timeout currently set on the socket.
    read_timeout: Option<Duration>,
    /// Where reads land before the parser takes them.
    buffer: Box<[u8]>,
}

impl Conn {
    /// Connects to `config.address`, reads `INFO` (TLS: starts TLS after it, or before it
    /// with `tls_first`), sends `CONNECT` and checks it was accepted with a `PING` / `PONG`
    /// round trip, so bad credentials fail here.
    pub fn open(config: &Config) -> Result<Self, Error> {
        let mut stream = Transport::connect(&config.address, &config.url, WRITE_TIMEOUT)?;
        if let (Some(tls), true) = (&config.tls, config.tls_first) {
            stream = stream.start_tls(tls, &config.url, HANDSHAKE_TIMEOUT)?;
        }
        let mut conn = Self {
            stream,
            parser: Parser::default(),
            out: Vec::new(),
            info: ServerInfo {
                max_payload: default_max_payload(),
                headers: false,
                tls_required: false,
                nonce: None,
                tls_available: false,
            },
            pings_sent: 0,
            pongs_received: 0,
            last_activity: Instant::now(),
            read_timeout: None,
            buffer: vec![0; READ_CHUNK].into_boxed_slice(),
        };
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let info = match conn.read_op(Some(deadline)) {
            Ok(Some(ServerOp::Info(json))) => json,
            Ok(Some(_)) => {
                return Err(Error::connection(format!(
                    "{} did not start with INFO (is it a NATS server?)",
                    config.url
                )))
            }
            Ok(None) => {
                return Err(Error::connection(format!(
                    "{} sent no INFO within {} s ({})",
                    config.url,
                    HANDSHAKE_TIMEOUT.as_secs(),
                    no_info_hint(config)
                )))
            }
            Err(Error::Connection(text)) => {
                return Err(Error::connection(format!(
                    "{}: {text} before sending INFO ({})",
                    config.url,
                    no_info_hint(config)
                )))
            }
            Err(e) => return Err(e),
        };
        conn.info = serde_json::from_str(&info)
            .map_err(|e| Error::connection(format!("{}: unreadable INFO: {e}", config.url)))?;
        if let Some(tls) = conn.tls_after_info(config)? {
            conn.stream = conn.stream.start_tls(tls, &config.url, HANDSHAKE_TIMEOUT)?;
            // The handshake set its own read timeout on the socket.
            conn.read_timeout = None;
        }
        protocol::encode_connect(
            &mut conn.out,
            &connect_json(
                &config.auth,
                conn.info.nonce.as_deref(),
                config.tls.is_some(),
            ),
        );
        let target = conn.ping()?;
        conn.await_pong(target, deadline).map_err(|e| match e {
            Error::Timeout => Error::connection(format!(
                "{} did not answer CONNECT within {} s",
                config.url,
                HANDSHAKE_TIMEOUT.as_secs()
            )),
            e => e,
        })?;
        Ok(conn)
    }

    /// Whether to start TLS now that `INFO` came (the TLS settings), as the URL and the
    /// server ask: a plaintext URL to a server that requires TLS, or a TLS URL to one that
    /// offers none, is an error naming the fix.
    fn tls_after_info<'c>(&self, config: &'c Config) -> Result<Option<&'c TlsSettings>, Error> {
        let offers_tls = self.info.tls_required || self.info.tls_available;
        match &config.tls {
            None if self.info.tls_required => Err(Error::connection(format!(
                "{} requires TLS: use a `tls://` broker URL",
                config.url
            ))),
            None => Ok(None),
            Some(_) if config.tls_first => Ok(None),
            Some(_) if !offers_tls => Err(Error::connection(format!(
                "{} does not offer TLS (its INFO says neither `tls_required` nor `tls_available`): use a `nats://` broker URL, or enable TLS on the server",
                config.url
            ))),
            Some(tls) => Ok(Some(tls)),
        }
    }

    /// Queues bytes for the server (sent by the next [`Conn::write_out`]).
    pub fn queue(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// How many bytes are queued.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Sends everything queued.
    pub fn write_out(&mut self) -> Result<(), Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        result.map_err(|e| failed("writing to the server", &e))
    }

    /// Queues a `PING` and sends everything queued; returns the number of the `PONG`
    /// that answers it (see [`Conn::await_pong`]).
    pub fn ping(&mut self) -> Result<u64, Error> {
        self.out.extend_from_slice(protocol::PING);
        self.pings_sent += 1;
        self.write_out()?;
        Ok(self.pings_sent)
    }

    /// Reads until `PONG` number `target` arrives; only for the handshake, when nothing
    /// is subscribed yet (so no message can arrive meanwhile).
    fn await_pong(&mut self, target: u64, deadline: Instant) -> Result<(), Error> {
        while self.pongs_received < target {
            match self.read(Some(deadline))? {
                Some(_) => {}
                None => return Err(Error::Timeout),
            }
        }
        Ok(())
    }

    /// True once `PONG` number `target` arrived.
    pub fn answered(&self, target: u64) -> bool {
        self.pongs_received >= target
    }

    /// Sends what is queued, then reads until a message or a `PONG` arrives, or until
    /// `deadline` passes (`None`). Answers the server's `PING`s, and keeps the
    /// connection alive with its own when idle: the connection is dead (an error) when
    /// [`MAX_PINGS_OUT`] of them go unanswered. A `-ERR` from the server is an error.
    pub fn read(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, Error> {
        self.write_out()?;
        loop {
            let Some(op) = self.read_op(deadline)? else {
                return Ok(None);
            };
            match op {
                ServerOp::Msg(msg) => return Ok(Some(Incoming::Msg(msg))),
                ServerOp::Pong => {
                    self.pongs_received += 1;
                    return Ok(Some(Incoming::Pong));
                }
                ServerOp::Ping => {
                    self.out.extend_from_slice(protocol::PONG);
                    self.write_out()?;
                }
                ServerOp::Ok | ServerOp::Info(_) => {}
                ServerOp::Err(text) => return Err(server_error(&text)),
            }
        }
    }

    /// Reads one operation, or `None` when `deadline` passes first; sends keepalive
    /// `PING`s while it waits.
    fn read_op(&mut self, deadline: Option<Instant>) -> Result<Option<ServerOp>, Error> {
        loop {
            if let Some(op) = self
                .parser
                .next_op()
                .map_err(|e| Error::connection(format!("protocol error from the server: {e}")))?
            {
                return Ok(Some(op));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let keepalive = self.last_activity + PING_INTERVAL;
            if now >= keepalive {
                if self.pings_sent - self.pongs_received >= MAX_PINGS_OUT {
                    return Err(Error::connection(format!(
                        "the server did not answer {MAX_PINGS_OUT} pings in {} s: the connection is dead",
                        MAX_PINGS_OUT * PING_INTERVAL.as_secs()
                    )));
                }
                self.last_activity = now;
                self.ping()?;
                continue;
            }
            let wake = deadline.map_or(keepalive, |d| d.min(keepalive));
            self.set_read_timeout(
                wake.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            )?;
            match self.stream.read(&mut self.buffer) {
                Ok(0) => return Err(Error::connection("the server closed the connection")),
                Ok(n) => {
                    self.last_activity = Instant::now();
                    self.parser.push(&self.buffer[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(failed("reading from the server", &e)),
            }
        }
    }

    /// Sets the socket's read timeout unless it already is `timeout`.
    fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        if self.read_timeout != Some(timeout) {
            self.stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| failed("setting a read timeout", &e))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }
}

/// What may be wrong when the server sent no `INFO`: a server with `handshake_first` sends
/// it only after a TLS handshake the client has to start.
fn no_info_hint(config: &Config) -> &'static str {
    match (&config.tls, config.tls_first) {
        (Some(_), true) => "is it a NATS server?",
        (Some(_), false) => {
            "is it a NATS server? one with `handshake_first` wants TLS before INFO: add `--option tls_first=true`"
        }
        (None, _) => {
            "is it a NATS server? one with `handshake_first` wants TLS before INFO: use a `tls://` broker URL with `--option tls_first=true`"
        }
    }
}

/// The `CONNECT` options: no `+OK`s, headers and no-responders on, TLS or not, the
/// credentials (with an NKey, its signature of the server's `nonce`).
fn connect_json(auth: &Auth, nonce: Option<&str>, tls: bool) -> String {
    let mut options = json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": tls,
        "name": "msgplug",
        "lang": "rust-wasi",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "headers": true,
        "no_responders": true,
    });
    if let Some(user) = &auth.user {
        options["user"] = json!(user);
    }
    if let Some(pass) = &auth.pass {
        options["pass"] = json!(pass);
    }
    if let Some(token) = &auth.token {
        options["auth_token"] = json!(token);
    }
    if let Some(signer) = &auth.signer {
        signer.sign_connect(&mut options, nonce);
    }
    options.to_string()
}

/// Maps a server's `-ERR` text onto an [`Error`].
fn server_error(text: &str) -> Error {
    let lower = text.to_ascii_lowercase();
    if lower.contains("authorization violation") || lower.contains("authentication") {
        Error::PermissionDenied(format!(
            "the server refused the credentials ({text}); set NATS_USER and NATS_PASSWORD, NATS_TOKEN, NATS_NKEY (a user NKey seed) or NATS_CREDS (a .creds file's content)"
        ))
    } else if lower.starts_with("permissions violation") {
        Error::PermissionDenied(format!("the server says: {text}"))
    } else {
        Error::connection(format!("the server says: {text}"))
    }
}
