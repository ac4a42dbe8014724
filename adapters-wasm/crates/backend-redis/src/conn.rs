//! One Redis connection in RESP3: the blocking driver of [`crate::protocol`] over
//! `std::net::TcpStream`, plain or TLS ([`Transport`]; TLS starts right after connecting).
//!
//! RESP3 lets one connection both subscribe and run commands: pub/sub messages arrive
//! as push frames between the replies, which come in the order of the commands. So
//! commands are queued with what their reply is for ([`Expect`]), pipelined, and the
//! replies matched in order; pushes are kept for the caller. As in the NATS backend,
//! bytes are written only right before a read (wasi:sockets cannot turn off Nagle's
//! algorithm), timed reads use `set_read_timeout`, and connecting uses plain `connect`.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::Error;

use transport::Transport;

use crate::config::Config;
use crate::protocol::{Cmd, Parser, Value};
use common::io_error::failed;

/// How long `HELLO` (and `SELECT`) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a blocked write may take before the connection counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After this long without reading anything, the client sends a keepalive `PING`; when
/// nothing arrives for as long again, the connection is dead.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How many bytes one read asks for.
const READ_CHUNK: usize = 64 * 1024;

/// What a queued command's reply is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The caller waits for it ([`Conn::call_until`]).
    Wanted,
    /// An error reply is remembered for [`Conn::take_failures`]; the text says what
    /// the command did.
    Checked(String),
    /// Nothing: a keepalive, an acknowledgement that is retried by redelivery anyway.
    Ignored,
}

/// An open, authenticated RESP3 connection.
pub struct Conn {
    /// The socket, plain or TLS.
    stream: Transport,
    /// Splits what the server sends into values.
    parser: Parser,
    /// Bytes queued for the server.
    out: Vec<u8>,
    /// Per command sent and not answered yet, what its reply is for.
    expected: VecDeque<Expect>,
    /// Push frames read while waiting for a reply.
    pushes: VecDeque<Vec<Value>>,
    /// Error replies of [`Expect::Checked`] commands.
    failures: Vec<String>,
    /// When the last bytes arrived.
    last_activity: Instant,
    /// When the keepalive `PING` went out, if one is unanswered.
    ping_sent: Option<Instant>,
    /// The read timeout currently set on the socket.
    read_timeout: Option<Duration>,
    /// Where reads land before the parser takes them.
    buffer: Box<[u8]>,
}

impl Conn {
    /// Connects to `config.address` (and starts TLS for a `rediss://` URL), says `HELLO 3`
    /// (with the credentials), then `SELECT`s the database, so bad credentials fail here.
    pub fn open(config: &Config) -> Result<Self, Error> {
        let mut stream = Transport::connect(&config.address, &config.url, WRITE_TIMEOUT)?;
        if let Some(tls) = &config.tls {
            stream = stream.start_tls(tls, &config.url, HANDSHAKE_TIMEOUT)?;
        }
        let mut conn = Self {
            stream,
            parser: Parser::default(),
            out: Vec::new(),
            expected: VecDeque::new(),
            pushes: VecDeque::new(),
            failures: Vec::new(),
            last_activity: Instant::now(),
            ping_sent: None,
            read_timeout: None,
            buffer: vec![0; READ_CHUNK].into_boxed_slice(),
        };
        let deadline = Some(Instant::now() + HANDSHAKE_TIMEOUT);
        let mut hello = Cmd::new("HELLO").arg("3");
        if let Some(pass) = &config.auth.pass {
            let user = config.auth.user.as_deref().unwrap_or("default");
            hello = hello.arg("AUTH").arg(user).arg(pass);
        }
        hello = hello.arg("SETNAME").arg("msgplug");
        let timeout = |e| {
            match e {
            Error::Timeout => Error::connection(format!(
                "{} did not answer HELLO within {} s (is it a Redis server?)",
                config.url,
                HANDSHAKE_TIMEOUT.as_secs()
            )),
            // A TLS-only server drops a client whose first bytes are not a TLS handshake.
            Error::Connection(_) if config.tls.is_none() => Error::connection(format!(
                "{} closed the connection instead of answering HELLO: if it serves TLS only, use a `rediss://` broker URL",
                config.url
            )),
            e => e,
        }
        };
        match conn.call_until(hello, deadline).map_err(timeout)? {
            Value::Error(text)
                if text.starts_with("NOPROTO") || text.contains("unknown command") =>
            {
                return Err(Error::other(format!(
                    "{} does not speak RESP3 ({text}); msgplug needs Redis 6 or newer",
                    config.url
                )))
            }
            Value::Error(text) if text.starts_with("NOAUTH") => {
                return Err(Error::PermissionDenied(format!(
                    "{} needs a password ({text}); set REDIS_PASSWORD (and REDIS_USERNAME)",
                    config.url
                )))
            }
            Value::Error(text) => return Err(reply_error("HELLO", &text)),
            _ => {}
        }
        if let Some(db) = config.db {
            let select = Cmd::new("SELECT").arg(db.to_string());
            if let Value::Error(text) = conn.call_until(select, deadline).map_err(timeout)? {
                return Err(reply_error("SELECT", &text));
            }
        }
        Ok(conn)
    }

    /// Queues `cmd` (sent by the next read or [`Conn::write_out`]).
    pub fn queue(&mut self, cmd: &Cmd, expect: Expect) {
        cmd.encode(&mut self.out);
        self.expected.push_back(expect);
    }

    /// The queue of bytes for the server, for commands answered by pushes alone
    /// (`SUBSCRIBE`, `PSUBSCRIBE`).
    pub fn queue_raw(&mut self) -> &mut Vec<u8> {
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

    /// Sends `cmd` (after everything queued) and returns its reply, or fails with
    /// [`Error::Timeout`] when `deadline` passes first; replies to the commands queued
    /// before are settled on the way, pushes kept for [`Conn::take_push`].
    pub fn call_until(&mut self, cmd: Cmd, deadline: Option<Instant>) -> Result<Value, Error> {
        self.queue(&cmd, Expect::Wanted);
        loop {
            match self.read_value(deadline)? {
                None => return Err(Error::Timeout),
                Some(Value::Push(push)) => self.pushes.push_back(push),
                Some(reply) => {
                    if let Some(reply) = self.settle(reply) {
                        return Ok(reply);
                    }
                }
            }
        }
    }

    /// Returns a push frame: one read before, or the next to arrive until `deadline`
    /// (`None` when it passes first). Replies that arrive meanwhile are settled.
    pub fn take_push(&mut self, deadline: Option<Instant>) -> Result<Option<Vec<Value>>, Error> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(Some(push));
        }
        loop {
            match self.read_value(deadline)? {
                None => return Ok(None),
                Some(Value::Push(push)) => return Ok(Some(push)),
                // Only `call_until` waits for a reply, and a connection it gave up on
                // is dropped, so a reply here is never wanted.
                Some(reply) => drop(self.settle(reply)),
            }
        }
    }

    /// The error replies of [`Expect::Checked`] commands since the last call.
    pub fn take_failures(&mut self) -> Vec<String> {
        std::mem::take(&mut self.failures)
    }

    /// Matches a reply with the oldest command waiting; returns it when the caller
    /// waits for it.
    fn settle(&mut self, reply: Value) -> Option<Value> {
        match self.expected.pop_front() {
            Some(Expect::Wanted) => Some(reply),
            Some(Expect::Checked(what)) => {
                if let Value::Error(text) = reply {
                    self.failures.push(format!("{what}: {text}"));
                }
                None
            }
            Some(Expect::Ignored) | None => None,
        }
    }

    /// Sends what is queued, then reads one value, or `None` once `deadline` passes.
    /// Sends a keepalive `PING` when the connection was idle for [`PING_INTERVAL`], and
    /// fails when it stays silent as long again.
    fn read_value(&mut self, deadline: Option<Instant>) -> Result<Option<Value>, Error> {
        self.write_out()?;
        loop {
            if let Some(value) = self
                .parser
                .next_value()
                .map_err(|e| Error::connection(format!("protocol error from the server: {e}")))?
            {
                return Ok(Some(value));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let silent_since = self.ping_sent.unwrap_or(self.last_activity);
            if now >= silent_since + PING_INTERVAL {
                if self.ping_sent.is_some() {
                    return Err(Error::connection(format!(
                        "the server did not answer a ping in {} s: the connection is dead",
                        PING_INTERVAL.as_secs()
                    )));
                }
                self.ping_sent = Some(now);
                self.queue(&Cmd::new("PING"), Expect::Ignored);
                self.write_out()?;
                continue;
            }
            let wake = deadline.map_or(silent_since + PING_INTERVAL, |d| {
                d.min(silent_since + PING_INTERVAL)
            });
            self.set_read_timeout(
                wake.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            )?;
            match self.stream.read(&mut self.buffer) {
                Ok(0) => return Err(Error::connection("the server closed the connection")),
                Ok(n) => {
                    self.last_activity = Instant::now();
                    self.ping_sent = None;
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

/// Maps an error reply to `command` onto an [`Error`].
pub fn reply_error(command: &str, text: &str) -> Error {
    let code = text.split(' ').next().unwrap_or_default();
    match code {
        "WRONGPASS" => Error::PermissionDenied(format!(
            "the server refused the credentials ({text}); set REDIS_USERNAME and REDIS_PASSWORD"
        )),
        "NOAUTH" | "NOPERM" => Error::PermissionDenied(format!("{command}: {text}")),
        _ => Error::other(format!("{command} failed: {text}")),
    }
}
