//! One MQTT connection: the blocking driver of [`crate::protocol`] over a [`Transport`]
//! (plain TCP, or TLS from the first byte for `mqtts://`).
//!
//! Timed reads use the socket's read timeout, which works on wasm32-wasip2 (see the
//! NATS backend's `conn`).

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::io_error::failed;
use common::Error;
use transport::Transport;

use crate::config::Config;
use crate::protocol::{self, ClientPacket, Connect, Parser, Refusal, ServerPacket};

/// How long connecting (TCP, `CONNECT` / `CONNACK`) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many bytes one read asks for.
const READ_CHUNK: usize = 64 * 1024;

/// How many QoS 1 messages the broker may send before this client acknowledged them: one.
/// The run driver handles one message at a time anyway, and with more in flight the broker
/// streams the next messages while the client waits for the `PUBACK` of a handler's send:
/// the client's TCP stack delays its ACK of those (it has nothing to send), and Mosquitto's
/// Nagle algorithm (on by default) then holds the small `PUBACK` back until that ACK
/// comes, some 40 ms per message. (wasi:sockets cannot change TCP options on either side.)
const RECEIVE_MAXIMUM: u16 = 1;

/// One connection to the broker, after a successful `CONNACK`.
pub struct Conn {
    /// The socket, plain or TLS.
    stream: Transport,
    /// Decodes what the broker sends.
    parser: Parser,
    /// Bytes queued for the broker.
    out: Vec<u8>,
    /// `PUBACK`s queued for the broker, written after `out`: the broker then acknowledges
    /// a handler's sends before it sends the next message (see [`RECEIVE_MAXIMUM`]).
    acks: Vec<u8>,
    /// The version spoken.
    version: protocol::Version,
    /// The broker resumed a stored session.
    pub session_present: bool,
    /// How many of this client's QoS 1 messages may await a `PUBACK` at once.
    pub receive_maximum: usize,
    /// The largest packet the broker accepts, if it said.
    pub max_packet_size: Option<u32>,
    /// The keep-alive interval (zero: none).
    keep_alive: Duration,
    /// When the client last sent something.
    last_sent: Instant,
    /// When the unanswered `PINGREQ` was sent, if one is.
    ping_sent: Option<Instant>,
    /// The socket's read timeout, as last set.
    read_timeout: Option<Duration>,
    /// The read buffer.
    buffer: Box<[u8]>,
}

impl Conn {
    /// Connects, sends `CONNECT` and waits for the `CONNACK`; a refusal is an error
    /// (bad credentials and not authorised: `permission-denied`).
    pub fn open(config: &Config, client_id: &str) -> Result<Self, Error> {
        let mut stream = Transport::connect(&config.address, &config.url, WRITE_TIMEOUT)?;
        if let Some(tls) = &config.tls {
            stream = stream.start_tls(tls, &config.url, HANDSHAKE_TIMEOUT)?;
        }
        let mut conn = Self {
            stream,
            parser: Parser::new(config.version),
            out: Vec::new(),
            acks: Vec::new(),
            version: config.version,
            session_present: false,
            receive_maximum: usize::from(u16::MAX),
            max_packet_size: None,
            keep_alive: Duration::from_secs(config.keep_alive.into()),
            last_sent: Instant::now(),
            ping_sent: None,
            read_timeout: None,
            buffer: vec![0; READ_CHUNK].into_boxed_slice(),
        };
        let connect = Connect {
            client_id: client_id.to_string(),
            clean_start: !config.durable,
            session_expiry: if config.durable {
                config.session_expiry
            } else {
                0
            },
            keep_alive: config.keep_alive,
            receive_maximum: RECEIVE_MAXIMUM,
            username: config.username.clone(),
            password: config.password.clone(),
        };
        conn.queue(&ClientPacket::Connect(connect))?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let answer = conn.read(Some(deadline)).map_err(|e| match config.tls {
            None => transport::plaintext_broke_before("CONNACK", &config.url, "mqtts", e),
            Some(_) => e,
        })?;
        let ack = match answer {
            Some(ServerPacket::ConnAck(ack)) => ack,
            Some(_) => {
                return Err(Error::connection(format!(
                    "{} did not answer CONNECT with CONNACK (is it an MQTT broker?)",
                    config.url
                )))
            }
            None => {
                return Err(Error::connection(format!(
                    "{} did not answer CONNECT within {} s (is it an MQTT broker?)",
                    config.url,
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
        };
        if let Some(refused) = ack.refused {
            let why = match &ack.reason {
                Some(reason) => format!("{} ({reason})", refused.code),
                None => refused.code.clone(),
            };
            let text = format!("{} refused the connection: {why}", config.url);
            return Err(match refused.kind {
                Refusal::Permission => {
                    Error::PermissionDenied(format!("{text}; set MQTT_USERNAME and MQTT_PASSWORD"))
                }
                Refusal::Transient => Error::connection(text),
                Refusal::Version => Error::other(format!(
                    "{text}; an MQTT 3.1.1 broker needs `?version=3.1.1` on the broker URL"
                )),
                Refusal::Other => Error::other(text),
            });
        }
        conn.session_present = ack.session_present;
        if let Some(n) = ack.receive_maximum {
            conn.receive_maximum = usize::from(n.max(1));
        }
        conn.max_packet_size = ack.max_packet_size;
        if let Some(seconds) = ack.server_keep_alive {
            conn.keep_alive = Duration::from_secs(seconds.into());
        }
        Ok(conn)
    }

    /// Queues a packet (sent by the next write); a message larger than the broker's
    /// Maximum Packet Size is an error.
    pub fn queue(&mut self, packet: &ClientPacket) -> Result<(), Error> {
        let start = self.out.len();
        protocol::encode(self.version, packet, &mut self.out)
            .map_err(|e| Error::other(format!("cannot encode a packet: {e}")))?;
        let size = self.out.len() - start;
        if let Some(max) = self.max_packet_size {
            if size > max as usize {
                self.out.truncate(start);
                let what = match packet {
                    ClientPacket::Publish(p) => format!("message to `{}`", p.topic),
                    _ => "packet".to_string(),
                };
                return Err(Error::other(format!(
                    "{what} is {size} bytes, more than the broker's Maximum Packet Size of {max} bytes"
                )));
            }
        }
        Ok(())
    }

    /// Queues the `PUBACK` of a received message (sent after the other packets queued).
    pub fn queue_ack(&mut self, pkid: u16) -> Result<(), Error> {
        protocol::encode(self.version, &ClientPacket::PubAck(pkid), &mut self.acks)
            .map_err(|e| Error::other(format!("cannot encode a packet: {e}")))
    }

    /// How many bytes are queued.
    pub fn queued(&self) -> usize {
        self.out.len() + self.acks.len()
    }

    /// Sends everything queued, `PUBACK`s last.
    pub fn write_out(&mut self) -> Result<(), Error> {
        if self.queued() == 0 {
            return Ok(());
        }
        self.out.append(&mut self.acks);
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        self.last_sent = Instant::now();
        result.map_err(|e| failed("writing to the broker", &e))
    }

    /// Sends `DISCONNECT` (normal disconnection; a persistent session stays) and closes.
    pub fn disconnect(mut self) {
        // Best effort: the connection ends either way.
        let _ = self
            .queue(&ClientPacket::Disconnect)
            .and_then(|()| self.write_out());
    }

    /// Sends what is queued, then reads until a packet arrives or `deadline` passes
    /// (`None`). Keeps the connection alive with `PINGREQ`s (a `PINGRESP` is not
    /// returned); the connection is dead (an error) when one goes unanswered for a
    /// keep-alive interval. A `DISCONNECT` from the broker is an error.
    pub fn read(&mut self, deadline: Option<Instant>) -> Result<Option<ServerPacket>, Error> {
        self.write_out()?;
        loop {
            let packet = self
                .parser
                .next_packet()
                .map_err(|e| Error::connection(format!("protocol error from the broker: {e}")))?;
            match packet {
                Some(ServerPacket::PingResp) => {
                    self.ping_sent = None;
                    continue;
                }
                Some(ServerPacket::Disconnect(reason)) => {
                    return Err(Error::connection(format!(
                        "the broker disconnected: {reason}"
                    )))
                }
                Some(ServerPacket::Unexpected(name)) => {
                    return Err(Error::connection(format!(
                        "the broker sent an unexpected {name}"
                    )))
                }
                Some(packet) => return Ok(Some(packet)),
                None => {}
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let mut wake = deadline;
            if !self.keep_alive.is_zero() {
                let due = match self.ping_sent {
                    Some(sent) => {
                        if now >= sent + self.keep_alive {
                            return Err(Error::connection(format!(
                                "the broker did not answer a PINGREQ within {} s: the connection is dead",
                                self.keep_alive.as_secs()
                            )));
                        }
                        sent + self.keep_alive
                    }
                    None => {
                        let due = self.last_sent + self.keep_alive / 2;
                        if now >= due {
                            self.queue(&ClientPacket::PingReq)?;
                            self.write_out()?;
                            self.ping_sent = Some(now);
                            continue;
                        }
                        due
                    }
                };
                wake = Some(wake.map_or(due, |d| d.min(due)));
            }
            let timeout = wake.map(|w| {
                w.saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            });
            self.set_read_timeout(timeout)?;
            match self.stream.read(&mut self.buffer) {
                Ok(0) => return Err(Error::connection("the broker closed the connection")),
                Ok(n) => self.parser.push(&self.buffer[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(failed("reading from the broker", &e)),
            }
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
