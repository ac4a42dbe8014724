//! The [`Backend`] over one MQTT connection.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::{
    log, Backend, Backoff, ConfirmWindow, Deliveries, DeliveryId, Error, Event, MessageData,
    RequestOptions, Settings, Window,
};

use crate::config::{check_topic, Config};
use crate::conn::Conn;
use crate::message;
use crate::protocol::{ClientPacket, Publish, Refusal, ServerPacket, Version};

/// The MQTT backend's component type.
type Component = common::Adapter<Mqtt>;
common::export!(Component);

/// How long `flush` (and a send outside a handler) waits for the broker's `PUBACK`s, and
/// a `SUBSCRIBE` for its `SUBACK`.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The waits between reconnect attempts: 100 ms, doubling up to 5 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// The waits before resuming the session after a handler's `Err`: 100 ms, doubling up to
/// 5 s while handlers keep failing.
const REDELIVERY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Inside a handler, sends are queued and written once this many bytes are queued.
const WRITE_BATCH: usize = 32 * 1024;

/// With the run wrapper, a window is also confirmed once this many bytes are queued. The
/// window is written in one go when it closes (or when the broker's Receive Maximum is
/// reached): writes of one message each would wait for delayed ACKs (Nagle's algorithm,
/// which wasi:sockets cannot turn off).
const WINDOW_BYTES: usize = 1 << 20;

/// What settling a QoS 1 delivery needs: the connection it came on and its packet id.
type Token = Option<(u64, u16)>;

/// The state of the MQTT backend.
pub struct Mqtt {
    /// Where to connect, what to subscribe to.
    config: Config,
    /// The client identifier in use.
    client_id: String,
    /// The connection, or `None` while the broker is unreachable.
    conn: Option<Conn>,
    /// Counts connections: a delivery is acknowledged only on the one it came on.
    generation: u64,
    /// `msgplug/reply/<random>`: the response topics of this instance's requests.
    inbox: String,
    /// True once the response topics are subscribed to (restored on reconnect).
    inbox_subscribed: bool,
    /// The number of the last request.
    last_request: u64,
    /// The last packet id used.
    last_pkid: u16,
    /// True once `next` asked for the subscriptions (restored on reconnect).
    subscribed: bool,
    /// This client's QoS 1 messages awaiting their `PUBACK`: packet id → topic (a window
    /// holds thousands, so neither a fresh packet id nor a `PUBACK` scans them).
    awaiting: HashMap<u16, String>,
    /// Why the broker refused sent messages, since the last `flush`.
    refused: Vec<String>,
    /// True when one of those refusals was for want of permission (`NotAuthorized`):
    /// the confirmation then fails with `permission-denied`.
    refused_permission: bool,
    /// Messages of the current handler whose connection was lost before their `PUBACK`.
    lost: usize,
    /// The `SUBACK` last received.
    suback: Option<(u16, Vec<Option<crate::protocol::Refused>>)>,
    /// Replies received on the response topics, not yet taken by `request`.
    replies: Vec<Publish>,
    /// Messages received but not yet returned by `next`.
    pending: VecDeque<(MessageData, Token)>,
    /// Unsettled deliveries.
    deliveries: Deliveries<Token>,
    /// True between a delivery and its settlement or `flush`: sends are pipelined.
    in_handler: bool,
    /// True after a `nack` of a durable delivery: `next` resumes the session first.
    resume: bool,
    /// The pause before resuming the session after a `nack`.
    redelivery: Backoff,
    /// With the run wrapper: the window of sends outside a handler not yet confirmed.
    /// `None`: each send outside a handler is confirmed before it returns.
    window: Option<Window>,
}

impl Mqtt {
    /// Connects (or reconnects) and restores the subscriptions, unless the broker kept
    /// them in a resumed session.
    fn establish(&mut self) -> Result<(), Error> {
        let conn = Conn::open(&self.config, &self.client_id)?;
        let resumed = conn.session_present;
        let reconnect = self.generation > 0;
        self.conn = Some(conn);
        self.generation += 1;
        if self.inbox_subscribed && !resumed {
            self.subscribe(&[format!("{}/#", self.inbox)])?;
        }
        if self.subscribed && !resumed {
            let filters = self.config.filters.clone();
            self.subscribe(&filters)?;
        }
        if reconnect {
            let session = match resumed {
                true => "; the broker resumed the session",
                false => "",
            };
            log(
                Self::NAME,
                &format!("reconnected to {}{session}", self.config.url),
            );
        }
        Ok(())
    }

    /// Connects if there is no connection: one attempt, for operations that must not wait.
    fn ensure_connected(&mut self) -> Result<(), Error> {
        if self.conn.is_none() {
            self.establish()?;
        }
        Ok(())
    }

    /// Runs `f` on the connection; a connection error or timeout drops the connection.
    fn io<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, Error>) -> Result<T, Error> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::connection(format!("not connected to {}", self.config.url)))?;
        let result = f(conn);
        if result.as_ref().is_err_and(Error::is_transient) {
            self.drop_conn();
        }
        result
    }

    /// Forgets a broken (or closed) connection and what was only known on it. The QoS 1
    /// messages received on it and not yet handled are forgotten too in a persistent
    /// session: the broker sends them again when it resumes.
    fn drop_conn(&mut self) {
        self.conn = None;
        self.lost += std::mem::take(&mut self.awaiting).len();
        self.suback = None;
        if self.config.durable {
            self.pending.retain(|(_, token)| token.is_none());
        }
    }

    /// A fresh packet id, not one awaiting a `PUBACK`.
    fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self.awaiting.contains_key(&self.last_pkid) {
                return self.last_pkid;
            }
        }
    }

    /// Subscribes to `filters` at QoS 1 and waits for the `SUBACK`.
    fn subscribe(&mut self, filters: &[String]) -> Result<(), Error> {
        let pkid = self.next_pkid();
        let packet = ClientPacket::Subscribe {
            pkid,
            filters: filters.to_vec(),
        };
        self.io(|c| c.queue(&packet))?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        let codes = loop {
            if let Some((id, codes)) = self.suback.take() {
                if id == pkid {
                    break codes;
                }
            }
            self.receive_one(Some(deadline))?.ok_or(Error::Timeout)?;
        };
        for (filter, code) in filters.iter().zip(codes) {
            match code {
                None => {}
                Some(refused) if refused.kind == Refusal::Permission => {
                    return Err(Error::PermissionDenied(format!(
                        "the broker refused the subscription to `{filter}`: {}",
                        refused.code
                    )))
                }
                Some(refused) => {
                    return Err(Error::other(format!(
                        "the broker refused the subscription to `{filter}`: {}",
                        refused.code
                    )))
                }
            }
        }
        Ok(())
    }

    /// Reads until the broker acknowledged every QoS 1 message sent but `room` (0 in
    /// `flush`), or `deadline` passes; messages read meanwhile are kept for `next`.
    fn await_pubacks(&mut self, room: usize, deadline: Instant) -> Result<(), Error> {
        while self.awaiting.len() > room {
            self.receive_one(Some(deadline))?.ok_or(Error::Timeout)?;
        }
        Ok(())
    }

    /// Reads one packet (or nothing by `deadline`) and files it; `None` at the deadline.
    fn receive_one(&mut self, deadline: Option<Instant>) -> Result<Option<()>, Error> {
        let Some(packet) = self.io(|c| c.read(deadline))? else {
            return Ok(None);
        };
        match packet {
            ServerPacket::Publish(publish) => self.received(publish)?,
            ServerPacket::PubAck(pkid, refusal) => {
                let topic = self.awaiting.remove(&pkid);
                if let Some(refused) = refusal {
                    let to = topic.map(|t| format!(" to `{t}`")).unwrap_or_default();
                    let text = format!(
                        "the broker did not accept a message sent{to}: {}",
                        refused.code
                    );
                    // A window of sends to one topic is refused once per message: say it once.
                    if !self.refused.contains(&text) {
                        self.refused.push(text);
                    }
                    self.refused_permission |= refused.kind == Refusal::Permission;
                }
            }
            ServerPacket::SubAck(pkid, codes) => self.suback = Some((pkid, codes)),
            ServerPacket::ConnAck(_) => {
                self.drop_conn();
                return Err(Error::connection("the broker sent a second CONNACK"));
            }
            ServerPacket::PingResp | ServerPacket::Disconnect(_) | ServerPacket::Unexpected(_) => {}
        }
        Ok(Some(()))
    }

    /// Files a received `PUBLISH`: a reply to a request, or a delivery for `next`.
    fn received(&mut self, publish: Publish) -> Result<(), Error> {
        let is_reply = publish
            .topic
            .strip_prefix(&self.inbox)
            .is_some_and(|rest| rest.starts_with('/'));
        if is_reply {
            if publish.qos == 1 {
                self.io(|c| c.queue_ack(publish.pkid))?;
            }
            self.replies.push(publish);
            return Ok(());
        }
        let token = (publish.qos == 1).then_some((self.generation, publish.pkid));
        self.pending.push_back((message::received(publish), token));
        Ok(())
    }

    /// Publishes `publish` at the configured QoS; waits for room (one `PUBACK`) when the
    /// broker's Receive Maximum of unacknowledged messages is reached. (Waiting for every
    /// `PUBACK` there instead, to write the next messages in one go, was slower against
    /// Mosquitto: some 28 ms per wait, measured, as it writes `PUBACK`s one by one with
    /// Nagle's algorithm on; a window then slides one message at a time.)
    fn publish(&mut self, mut publish: Publish) -> Result<(), Error> {
        check_topic(&publish.topic)?;
        self.ensure_connected()?;
        publish.qos = self.config.qos;
        if publish.qos == 1 {
            let maximum = self.io(|c| Ok(c.receive_maximum))?;
            if self.awaiting.len() >= maximum {
                self.await_pubacks(maximum - 1, Instant::now() + ACK_TIMEOUT)?;
            }
            publish.pkid = self.next_pkid();
        }
        let (pkid, topic) = match publish.pkid {
            0 => (0, None),
            pkid => (pkid, Some(publish.topic.clone())),
        };
        self.io(|c| c.queue(&ClientPacket::Publish(publish)))?;
        if let Some(topic) = topic {
            self.awaiting.insert(pkid, topic);
        }
        Ok(())
    }

    /// Publishes; outside a handler waits for the `PUBACK` (QoS 1) before it returns, or,
    /// with the run wrapper, when its window is full or old (every `PUBACK` of the
    /// window); inside one only queues (the driver's `flush` waits).
    fn send_publish(&mut self, publish: Publish) -> Result<(), Error> {
        self.publish(publish)?;
        if !self.in_handler {
            let now = Instant::now();
            let queued = self.io(|c| Ok(c.queued()))?;
            let close = self
                .window
                .as_mut()
                .map(|w| w.send(now) || queued >= WINDOW_BYTES);
            return match close {
                None => self.confirm(),
                Some(true) => {
                    let confirmed = self.confirm();
                    let window = self.window.as_mut().expect("checked above");
                    window.confirmed(confirmed)
                }
                Some(false) => Ok(()),
            };
        }
        if self.io(|c| Ok(c.queued()))? >= WRITE_BATCH {
            self.io(Conn::write_out)?;
        }
        Ok(())
    }

    /// Waits for the replies to a request on `response_topic`, as the
    /// `request-reply.request` doc describes.
    fn collect_replies(
        &mut self,
        response_topic: &str,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        let deadline = options
            .timeout_ms
            .map(|ms| Instant::now() + Duration::from_millis(u64::from(ms)));
        let wanted = match (options.expected_replies, options.timeout_ms) {
            (Some(n), _) => Some(n as usize),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        };
        let mut replies = Vec::new();
        let outcome = loop {
            for reply in std::mem::take(&mut self.replies) {
                if reply.topic == response_topic {
                    replies.push(message::received(reply));
                } // else a late reply to an earlier request
            }
            if wanted.is_some_and(|n| replies.len() >= n) {
                break Ok(());
            }
            match self.receive_one(deadline) {
                Ok(Some(())) => {}
                Ok(None) => break Err(Error::Timeout),
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Err(e) if replies.is_empty() => Err(e),
            _ => Ok(replies),
        }
    }

    /// Settles delivery `id`: `PUBACK` a QoS 1 delivery of the current connection. Not
    /// being connected is logged, not an error: the delivery stays unacknowledged, so a
    /// persistent session redelivers it.
    fn puback(&mut self, token: Token) {
        let Some((generation, pkid)) = token else {
            return;
        };
        if generation != self.generation {
            return; // the broker resends it on the new connection
        }
        if let Err(e) = self.io(|c| c.queue_ack(pkid)) {
            log(
                Self::NAME,
                &format!(
                    "could not acknowledge a delivery ({e}); a persistent session redelivers it"
                ),
            );
        }
    }
}

impl Backend for Mqtt {
    const NAME: &'static str = "mqtt";

    fn open(settings: Settings) -> Result<Self, Error> {
        let config = Config::from_settings(&settings, |name| std::env::var(name).ok())?;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("msgplug-{}", common::random_id()));
        let mut mqtt = Self {
            config,
            client_id,
            conn: None,
            generation: 0,
            inbox: format!("msgplug/reply/{}", common::random_id()),
            inbox_subscribed: false,
            last_request: 0,
            last_pkid: 0,
            subscribed: false,
            awaiting: HashMap::new(),
            refused: Vec::new(),
            refused_permission: false,
            lost: 0,
            suback: None,
            replies: Vec::new(),
            pending: VecDeque::new(),
            deliveries: Deliveries::new(),
            in_handler: false,
            resume: false,
            redelivery: REDELIVERY,
            window: ConfirmWindow::from_settings(&settings)?.map(Window::new),
        };
        mqtt.establish()?;
        Ok(mqtt)
    }

    /// Publishes at the configured QoS (`--option qos`, default 1); see
    /// [`Mqtt::send_publish`].
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        self.send_publish(message::outgoing(topic, message, None))
    }

    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        if self.config.version != Version::V5 {
            return Err(Error::other(
                "request-reply is not supported on MQTT 3.1.1 (the broker URL asks for it): it needs MQTT 5's response topic and correlation data",
            ));
        }
        check_topic(topic)?;
        self.ensure_connected()?;
        if !self.inbox_subscribed {
            self.subscribe(&[format!("{}/#", self.inbox)])?;
            self.inbox_subscribed = true;
        }
        self.last_request += 1;
        let response_topic = format!("{}/{}", self.inbox, self.last_request);
        let correlation = self.last_request.to_string().into_bytes();
        self.publish(message::outgoing(
            topic,
            message,
            Some((response_topic.clone(), correlation)),
        ))?;
        self.io(Conn::write_out)?;
        self.collect_replies(&response_topic, options)
    }

    /// Publishes to the request's response topic with its correlation data.
    fn reply(&mut self, reply_to: &str, reply: &MessageData) -> Result<(), Error> {
        let (topic, correlation) = message::parse_reply_to(reply_to);
        self.send_publish(message::outgoing(
            topic,
            reply,
            Some((topic.to_string(), correlation)),
        ))
    }

    /// Waits for the next message. A lost connection is retried here, forever, with
    /// capped exponential backoff; the subscriptions are restored on the new connection
    /// (a resumed persistent session has them already). After a `nack` of a durable
    /// delivery the session is resumed first, so the broker redelivers it.
    fn next(&mut self) -> Result<Event, Error> {
        let mut backoff = RECONNECT;
        if std::mem::take(&mut self.resume) {
            if let Some(conn) = self.conn.take() {
                conn.disconnect();
            }
            self.drop_conn();
            if let Some(pause) = self.redelivery.failed() {
                std::thread::sleep(pause);
            }
        }
        loop {
            if let Some((message, token)) = self.pending.pop_front() {
                self.in_handler = true;
                self.lost = 0;
                return Ok(Event::Delivery(self.deliveries.deliver(token), message));
            }
            let connected = self.conn.is_some();
            let step = match connected {
                false => self.establish(),
                true if !self.subscribed => {
                    self.subscribed = true;
                    let filters = self.config.filters.clone();
                    self.subscribe(&filters).map(|()| {
                        let mode = match self.config.durable {
                            true => format!(", persistent session `{}`", self.client_id),
                            false => String::new(),
                        };
                        for filter in &filters {
                            log(Self::NAME, &format!("subscribed to `{filter}`{mode}"));
                        }
                    })
                }
                true => self.receive_one(None).map(drop),
            };
            match step {
                Ok(()) => backoff.reset(),
                Err(e) if e.is_transient() => {
                    self.drop_conn();
                    backoff.reconnect(Self::NAME, &self.config.url, connected, e)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the `PUBACK` of a QoS 1 delivery (with the next write). The `run` driver
    /// settles each delivery before it asks for the next, so `PUBACK`s go out in the
    /// order the messages arrived, as MQTT requires.
    fn ack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.in_handler = false;
        let token = self.deliveries.settle(id)?;
        self.redelivery.reset();
        self.puback(token);
        Ok(())
    }

    /// MQTT has no negative acknowledgement. With `--durable` the delivery is not
    /// acknowledged and the next `next` resumes the session (after a pause that grows
    /// while handlers keep failing), so the broker sends it again with DUP set, followed
    /// by every later unacknowledged message. Without `--durable` (a clean session,
    /// at-most-once) it is acknowledged and dropped.
    fn nack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.in_handler = false;
        let token = self.deliveries.settle(id)?;
        match (self.config.durable, token) {
            (true, Some((generation, _))) if generation == self.generation => {
                self.resume = true;
            }
            (true, Some(_)) => {} // received on an earlier connection: resent already
            (_, token) => {
                log(
                    Self::NAME,
                    &format!("delivery {id} failed and is dropped: only --durable sessions (at QoS 1) redeliver"),
                );
                self.puback(token);
            }
        }
        Ok(())
    }

    /// Sends `DISCONNECT`, so the broker sees a normal end rather than a lost connection,
    /// and forgets the connection (a later use connects again).
    fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.disconnect();
        }
        self.drop_conn();
    }

    /// Waits until the broker acknowledged every QoS 1 message sent so far (see
    /// [`Mqtt::confirm`]); with the run wrapper, also fails if an earlier window's
    /// confirmation failed.
    fn flush(&mut self) -> Result<(), Error> {
        self.in_handler = false;
        let confirmed = self.confirm();
        Window::flushed(self.window.as_mut(), confirmed)
    }
}

impl Mqtt {
    /// Waits until the broker acknowledged every QoS 1 message sent so far (QoS 0: until
    /// they are written). Fails if a connection was lost before some were acknowledged,
    /// or the broker refused some.
    fn confirm(&mut self) -> Result<(), Error> {
        let result = match self.lost {
            0 if self.conn.is_some() => {
                let deadline = Instant::now() + ACK_TIMEOUT;
                let result = self
                    .io(Conn::write_out)
                    .and_then(|()| self.await_pubacks(0, deadline));
                if result == Err(Error::Timeout) {
                    self.drop_conn();
                }
                result
            }
            0 => Ok(()),
            n => Err(Error::connection(format!(
                "the connection to {} was lost before the broker acknowledged {n} sent message(s)",
                self.config.url
            ))),
        };
        self.lost = 0;
        let refused = std::mem::take(&mut self.refused);
        let permission = std::mem::take(&mut self.refused_permission);
        result?;
        match (refused.is_empty(), permission) {
            (true, _) => Ok(()),
            (false, true) => Err(Error::PermissionDenied(refused.join("; "))),
            (false, false) => Err(Error::Other(refused.join("; "))),
        }
    }
}
