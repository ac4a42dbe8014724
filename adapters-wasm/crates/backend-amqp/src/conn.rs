//! One AMQP connection with one channel: the blocking driver of [`crate::protocol`] over a
//! [`Transport`] (plain TCP, or TLS from the first byte for `amqps://`; timed reads as in
//! the NATS backend: `set_read_timeout` works on wasm32-wasip2, `connect_timeout` does not).
//!
//! The handshake: protocol header, `start` / `start-ok` (SASL PLAIN), `tune` / `tune-ok`,
//! `open` / `open-ok`, then channel 1 is opened and put in confirm mode. Heartbeats are
//! sent while the client waits for the broker (every half interval without a write), and
//! the connection counts as dead after two intervals without anything from the broker.
//! Writes are queued and sent right before the next read (wasi:sockets cannot turn off
//! Nagle's algorithm, so lone small writes would wait for delayed TCP ACKs).

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::io_error::failed;
use common::Error;
use transport::Transport;

use crate::config::Config;
use crate::protocol::{
    self, Close, FieldValue, Incoming, Method, Properties, Reader, HEARTBEAT, PROTOCOL_HEADER,
};

/// The channel every operation uses.
pub const CHANNEL: u16 = 1;

/// How long the handshake (up to the confirm mode of the channel) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a blocked write may take before the connection counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame this client accepts (and asks for): RabbitMQ's default.
const FRAME_MAX: u32 = 128 * 1024;

/// The longest heartbeat interval this client agrees to, in seconds.
const MAX_HEARTBEAT: u16 = 60;

/// How many bytes one read asks for.
const READ_CHUNK: usize = 64 * 1024;

/// An open connection with channel [`CHANNEL`] in confirm mode.
pub struct Conn {
    /// The socket.
    stream: Transport,
    /// Splits what the broker sends into frames and messages.
    reader: Reader,
    /// Bytes queued for the broker.
    out: Vec<u8>,
    /// The agreed largest frame.
    frame_max: u32,
    /// The agreed heartbeat interval (`None`: no heartbeats).
    heartbeat: Option<Duration>,
    /// When the broker last sent anything.
    last_read: Instant,
    /// When the client last wrote anything.
    last_write: Instant,
    /// The read timeout currently set on the socket.
    read_timeout: Option<Duration>,
    /// Where reads land before the reader takes them.
    buffer: Box<[u8]>,
    /// Why the broker blocked publishing (`connection.blocked`), while it does.
    pub blocked: Option<String>,
    /// True once the connection failed: it cannot be used any more.
    pub broken: bool,
}

impl Conn {
    /// Connects, authenticates and opens the channel; `name` is the connection name the
    /// broker shows (`rabbitmqctl list_connections client_properties`).
    pub fn open(config: &Config, name: &str) -> Result<Self, Error> {
        let mut stream = Transport::connect(&config.address, &config.url, WRITE_TIMEOUT)?;
        if let Some(tls) = &config.tls {
            stream = stream.start_tls(tls, &config.url, HANDSHAKE_TIMEOUT)?;
        }
        let now = Instant::now();
        let mut conn = Self {
            stream,
            reader: Reader::default(),
            out: PROTOCOL_HEADER.to_vec(),
            frame_max: FRAME_MAX,
            heartbeat: None,
            last_read: now,
            last_write: now,
            read_timeout: None,
            buffer: vec![0; READ_CHUNK].into_boxed_slice(),
            blocked: None,
            broken: false,
        };
        let deadline = now + HANDSHAKE_TIMEOUT;
        let late = || {
            Error::connection(format!(
                "{} did not finish the AMQP handshake within {} s (is it an AMQP 0-9-1 broker?)",
                config.url,
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        };
        let start = conn.expect(deadline).map_err(|e| match config.tls {
            None => transport::plaintext_broke_before("connection.start", &config.url, "amqps", e),
            Some(_) => e,
        })?;
        match start.ok_or_else(late)? {
            Method::ConnectionStart { mechanisms, .. } => {
                if !mechanisms.split(|&b| b == b' ').any(|m| m == b"PLAIN") {
                    return Err(Error::other(format!(
                        "{} does not offer the PLAIN login mechanism (it offers {})",
                        config.url,
                        String::from_utf8_lossy(&mechanisms)
                    )));
                }
            }
            other => return Err(unexpected(config, &other)),
        }
        let mut response = vec![0];
        response.extend_from_slice(config.user.as_bytes());
        response.push(0);
        response.extend_from_slice(config.password.as_bytes());
        conn.send(&Method::ConnectionStartOk {
            client_properties: client_properties(name),
            mechanism: "PLAIN".into(),
            response,
            locale: "en_US".into(),
        })?;
        let (channel_max, frame_max, heartbeat) = match conn.expect(deadline)?.ok_or_else(late)? {
            Method::ConnectionTune {
                channel_max,
                frame_max,
                heartbeat,
                ..
            } => (channel_max, frame_max, heartbeat),
            other => return Err(unexpected(config, &other)),
        };
        conn.frame_max = match frame_max {
            0 => FRAME_MAX,
            n => n.clamp(protocol::MIN_FRAME_MAX, FRAME_MAX),
        };
        let heartbeat = match heartbeat {
            0 => MAX_HEARTBEAT,
            n => n.min(MAX_HEARTBEAT),
        };
        conn.heartbeat = Some(Duration::from_secs(u64::from(heartbeat)));
        conn.reader.set_frame_max(conn.frame_max);
        conn.send(&Method::ConnectionTune {
            ok: true,
            channel_max,
            frame_max: conn.frame_max,
            heartbeat,
        })?;
        conn.send(&Method::ConnectionOpen {
            vhost: config.vhost.clone(),
        })?;
        for (method, answer) in [
            (None, (10, 41)),
            (Some(Method::ChannelOpen), (20, 11)),
            (Some(Method::ConfirmSelect), (85, 11)),
        ] {
            if let Some(method) = method {
                conn.send(&method)?;
            }
            match conn.expect(deadline)?.ok_or_else(late)? {
                got if got.ids() == answer => {}
                other => return Err(unexpected(config, &other)),
            }
        }
        Ok(conn)
    }

    /// Reads the next method during the handshake (nothing else can arrive then).
    fn expect(&mut self, deadline: Instant) -> Result<Option<Method>, Error> {
        match self.read(Some(deadline))? {
            Some(Incoming::Method(_, method)) => Ok(Some(method)),
            Some(Incoming::Content(..)) => Err(Error::connection(
                "the broker sent a message during the handshake",
            )),
            Some(Incoming::Heartbeat) | None => Ok(None),
        }
    }

    /// Queues a method on [`CHANNEL`] (channel 0 for `connection.*`).
    pub fn send(&mut self, method: &Method) -> Result<(), Error> {
        let channel = match method.ids().0 {
            10 => 0,
            _ => CHANNEL,
        };
        protocol::encode_method(&mut self.out, channel, method)
            .map_err(|e| Error::other(e.to_string()))
    }

    /// Queues a `basic.publish` with its content.
    pub fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        properties: &Properties,
        body: &[u8],
    ) -> Result<(), Error> {
        let at = self.out.len();
        self.send(&Method::BasicPublish {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            mandatory,
        })?;
        protocol::encode_content(&mut self.out, CHANNEL, properties, body, self.frame_max).map_err(
            |e| {
                self.out.truncate(at);
                Error::other(e.to_string())
            },
        )
    }

    /// The agreed heartbeat interval (`None`: no heartbeats).
    pub fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat
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
        self.last_write = Instant::now();
        result.map_err(|e| self.fail(failed("writing to the broker", &e)))
    }

    /// Sends what is queued, then reads until a method or message arrives, or until
    /// `deadline` passes (`None`). Heartbeats are answered and sent here; `blocked` /
    /// `unblocked` update [`Conn::blocked`]. A `connection.close` or `channel.close`
    /// from the broker is confirmed and becomes an error with its reply text; the
    /// connection is [`Conn::broken`] after any error.
    pub fn read(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, Error> {
        self.write_out()?;
        loop {
            let Some(incoming) = self.read_incoming(deadline)? else {
                return Ok(None);
            };
            match incoming {
                Incoming::Heartbeat => {}
                Incoming::Method(_, Method::ConnectionBlocked { reason }) => {
                    self.blocked = Some(reason);
                }
                Incoming::Method(_, Method::ConnectionUnblocked) => self.blocked = None,
                Incoming::Method(_, Method::ConnectionClose(close)) => {
                    // Best effort: the broker closes the socket either way.
                    let _ = self.send(&Method::ConnectionCloseOk);
                    let _ = self.write_out();
                    return Err(self.fail(close_error("connection", &close)));
                }
                Incoming::Method(_, Method::ChannelClose(close)) => {
                    let _ = self.send(&Method::ChannelCloseOk);
                    let _ = self.write_out();
                    return Err(self.fail(close_error("channel", &close)));
                }
                other => return Ok(Some(other)),
            }
        }
    }

    /// Marks the connection broken and passes `e` on.
    fn fail(&mut self, e: Error) -> Error {
        self.broken = true;
        e
    }

    /// Reads one frame or message, or `None` when `deadline` passes first.
    fn read_incoming(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, Error> {
        loop {
            let next = self.reader.next().map_err(|e| {
                self.broken = true;
                Error::connection(format!("protocol error from the broker: {e}"))
            })?;
            if next.is_some() {
                return Ok(next);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let mut wake = deadline;
            if let Some(interval) = self.heartbeat {
                // After a long handler the broker's heartbeats may wait in the socket
                // unread: look once before calling the connection dead.
                if now >= self.last_read + 2 * interval {
                    if self.receive(Duration::from_millis(1))? {
                        continue;
                    }
                    return Err(self.fail(Error::connection(format!(
                        "the broker sent nothing for {} s (two heartbeat intervals): the connection is dead",
                        2 * interval.as_secs()
                    ))));
                }
                let beat = self.last_write + interval / 2;
                if now >= beat {
                    self.out.extend_from_slice(HEARTBEAT);
                    self.write_out()?;
                    continue;
                }
                wake = Some(wake.map_or(beat, |d| d.min(beat)));
            }
            let timeout = wake.map(|w| {
                w.saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            });
            self.set_read_timeout(timeout)?;
            self.read_some()?;
        }
    }

    /// Reads what arrives within `timeout`; true when something did.
    fn receive(&mut self, timeout: Duration) -> Result<bool, Error> {
        self.set_read_timeout(Some(timeout))?;
        let before = self.last_read;
        self.read_some()?;
        Ok(self.last_read != before)
    }

    /// One read from the socket (with its read timeout) into the reader.
    fn read_some(&mut self) -> Result<(), Error> {
        match self.stream.read(&mut self.buffer) {
            Ok(0) => Err(self.fail(Error::connection("the broker closed the connection"))),
            Ok(n) => {
                self.last_read = Instant::now();
                self.reader.push(&self.buffer[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(self.fail(failed("reading from the broker", &e))),
        }
    }

    /// Sends a heartbeat (with whatever is queued) when a quarter of an interval passed
    /// since the last write. The adapter calls this when it hands out a delivery and
    /// whenever the handler calls into it, so a handler that calls out more often than
    /// once per heartbeat interval keeps its connection: RabbitMQ closes one that sent
    /// nothing for a whole interval it checks (WASI 0.2 gives the adapter no timer to send
    /// heartbeats while the handler computes).
    pub fn heartbeat_if_due(&mut self) -> Result<(), Error> {
        match self.heartbeat {
            Some(interval) if self.last_write.elapsed() >= interval / 4 => {
                self.out.extend_from_slice(HEARTBEAT);
                self.write_out()
            }
            _ => Ok(()),
        }
    }

    /// Sets the socket's read timeout unless it already is `timeout`.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        if self.read_timeout != timeout {
            self.stream
                .set_read_timeout(timeout)
                .map_err(|e| failed("setting a read timeout", &e))?;
            self.read_timeout = timeout;
        }
        Ok(())
    }
}

/// What the client tells the broker about itself: the capabilities it relies on
/// (`connection.blocked`, `basic.nack`, publisher confirms, consumer cancel
/// notifications, an explicit close on failed authentication) and its name.
fn client_properties(name: &str) -> Vec<(String, FieldValue)> {
    let capabilities = [
        "publisher_confirms",
        "consumer_cancel_notify",
        "connection.blocked",
        "basic.nack",
        "authentication_failure_close",
    ]
    .iter()
    .map(|c| (c.to_string(), FieldValue::Bool(true)))
    .collect();
    vec![
        ("product".into(), FieldValue::text("msgplug")),
        (
            "version".into(),
            FieldValue::text(env!("CARGO_PKG_VERSION")),
        ),
        ("platform".into(), FieldValue::text("wasm32-wasip2")),
        ("connection_name".into(), FieldValue::text(name)),
        ("capabilities".into(), FieldValue::Table(capabilities)),
    ]
}

/// The error for a `connection.close` or `channel.close` from the broker: refused access
/// (403 ACCESS_REFUSED, 530 NOT_ALLOWED) is `permission-denied`; a forced close (320) or
/// an internal error (541) is a transient `connection`; the rest (404 NOT_FOUND, 406
/// PRECONDITION_FAILED, ...) are lasting errors of what was asked.
pub fn close_error(what: &str, close: &Close) -> Error {
    let text = format!(
        "the broker closed the {what}: {} ({})",
        close.reply_text, close.reply_code
    );
    match close.reply_code {
        403 | 530 => Error::PermissionDenied(text),
        320 | 541 => Error::connection(text),
        _ => Error::other(text),
    }
}

/// The error for a method the handshake did not expect.
fn unexpected(config: &Config, method: &Method) -> Error {
    Error::connection(format!(
        "{} answered the AMQP handshake with method {}",
        config.url,
        method.name()
    ))
}
