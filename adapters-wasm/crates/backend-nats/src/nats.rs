//! The [`Backend`] over one NATS connection.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::{
    log, Backend, Backoff, ConfirmWindow, Deliveries, DeliveryId, Error, Event, Lease, MessageData,
    RequestOptions, Settings, Window, SET_HANDLER_TIMEOUT,
};

use crate::config::{Config, JetStream};
use crate::conn::{Conn, Incoming};
use crate::headers;
use crate::jetstream::{self, PubAck, Pulled, Pulls, StreamCheck};
use crate::protocol::{self, Msg};

/// The NATS backend's component type.
type Component = common::Adapter<Nats>;
common::export!(Component);

/// The subscription id of `<inbox prefix>.*`, where request replies arrive.
const INBOX_SID: u64 = 1;

/// The subscription id of the JetStream pull inbox.
const PULL_SID: u64 = 2;

/// The subscription id of the first `--subscribe` subject (the others follow).
const FIRST_SID: u64 = 3;

/// How long `flush` waits for the server's `PONG`.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a JetStream API request waits for its answer.
const API_TIMEOUT_MS: u32 = 5_000;

/// The waits between reconnect attempts: 100 ms, doubling up to 5 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// How long the answer to "does a stream capture this subject?" is trusted.
const CAPTURE_TTL: Duration = Duration::from_secs(60);

/// How many subjects' answers are remembered (all are forgotten when it is full).
const MAX_CAPTURE_ANSWERS: usize = 1024;

/// The body that acknowledges a JetStream delivery.
const ACK: &[u8] = b"+ACK";

/// The body that renews a JetStream delivery's ack wait ("work in progress").
const PROGRESS: &[u8] = b"+WPI";

/// Inside a handler, sends are queued and written once this many bytes are queued
/// (and at `flush`).
const WRITE_BATCH: usize = 32 * 1024;

/// What JetStream needs to settle or renew one delivery from a pull.
struct Held {
    /// The subject `+ACK`, `-NAK` and `+WPI` go to.
    ack: String,
    /// The subject the message was published on, for log lines.
    subject: String,
    /// The ack wait, from when the message arrived or was last renewed with `+WPI`.
    lease: Lease,
}

/// With the run wrapper, a window is also confirmed once this many bytes are queued. The
/// window is written in one go, right before the `PING` that confirms it is read: an
/// earlier partial write would make the `PING`'s wait for the server's delayed TCP ACK
/// (Nagle's algorithm, which wasi:sockets cannot turn off; ~40 ms per window, measured).
const WINDOW_BYTES: usize = 1 << 20;

/// A received message waiting for `next`.
enum Pending {
    /// A message, with what settles it if it came from a pull.
    Message(MessageData, Option<Held>),
    /// A message that could not be decoded: why.
    Rejected(String),
}

/// The state of the NATS backend.
pub struct Nats {
    /// Where to connect, what to subscribe to.
    config: Config,
    /// The connection, or `None` while the server is unreachable.
    conn: Option<Conn>,
    /// True once a connection was made (later ones are reconnects).
    connected_before: bool,
    /// `_INBOX.<random>`: this instance's reply subjects start with it and a `.`.
    inbox_prefix: String,
    /// The number of the last request (the last token of its inbox).
    last_request: u64,
    /// True once `next` asked for the subscriptions (they are restored on reconnect).
    subscribed: bool,
    /// True once the subscriptions were confirmed and logged.
    announced: bool,
    /// JetStream: true once the stream and the durable consumer were checked on this
    /// connection.
    consumer_ready: bool,
    /// JetStream: the outstanding pull request.
    pulls: Pulls,
    /// Messages received but not yet returned by `next`.
    pending: VecDeque<Pending>,
    /// Unsettled deliveries, with what settles those from a pull.
    deliveries: Deliveries<Option<Held>>,
    /// True between a delivery and its settlement or `flush`: sends are batched.
    in_handler: bool,
    /// Messages sent since the server last confirmed everything (by a `PONG`).
    unconfirmed: u64,
    /// Messages of the current handler whose connection was lost before confirmation.
    lost: u64,
    /// Whether to ask JetStream which subjects its streams capture (false when the
    /// server has no JetStream or the credentials may not ask).
    ask_streams: bool,
    /// Per subject: whether a stream captures it, and when that was asked.
    captured: HashMap<String, (bool, Instant)>,
    /// Reply subjects of sends to streams' subjects that JetStream has not acknowledged
    /// yet, with the subject sent to.
    pub_acks: HashMap<String, String>,
    /// Why JetStream refused to store sent messages, since the last `flush`.
    refused: Vec<String>,
    /// Sends to streams' subjects that no stream answered (status 503), since the last
    /// `flush`: a `connection` error, as the server is most likely stopping.
    unstored: Vec<String>,
    /// With the run wrapper: the window of sends outside a handler not yet confirmed.
    /// `None`: each such send is confirmed before it returns.
    window: Option<Window>,
}

impl Nats {
    /// Connects (or reconnects) and restores the subscriptions; the server has them
    /// (a `PING` / `PONG` round trip) before this returns once they were announced.
    fn establish(&mut self) -> Result<(), Error> {
        let mut conn = Conn::open(&self.config)?;
        protocol::encode_subscribe(
            conn.queue(),
            &format!("{}.*", self.inbox_prefix),
            None,
            INBOX_SID,
        );
        self.conn = Some(conn);
        self.consumer_ready = false;
        self.pulls.clear();
        self.ask_streams = true;
        self.captured.clear();
        if self.subscribed {
            self.queue_subscriptions();
        }
        if self.announced {
            self.round_trip()?;
        }
        if self.connected_before {
            log(Self::NAME, &format!("reconnected to {}", self.config.url));
        }
        self.connected_before = true;
        Ok(())
    }

    /// Connects if there is no connection: one attempt, for operations that must not wait.
    fn ensure_connected(&mut self) -> Result<&mut Conn, Error> {
        if self.conn.is_none() {
            self.establish()?;
        }
        Ok(self
            .conn
            .as_mut()
            .expect("`establish` succeeded, so there is a connection"))
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

    /// Forgets a broken connection and what was only known on it.
    fn drop_conn(&mut self) {
        self.conn = None;
        self.lost += std::mem::take(&mut self.unconfirmed);
        self.pub_acks.clear();
        self.consumer_ready = false;
        self.pulls.clear();
    }

    /// Queues the `SUB`s of the subscriptions: the `--subscribe` subjects, or the pull
    /// inbox in JetStream mode.
    fn queue_subscriptions(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if self.config.jetstream.is_some() {
            let inbox = pull_inbox(&self.inbox_prefix);
            protocol::encode_subscribe(conn.queue(), &inbox, None, PULL_SID);
            return;
        }
        let group = self.config.queue_group.as_deref();
        for (sid, subject) in (FIRST_SID..).zip(&self.config.subscribe) {
            protocol::encode_subscribe(conn.queue(), subject, group, sid);
        }
    }

    /// Sends everything queued with a `PING` and waits for the `PONG`: the server has
    /// then processed all of it. Messages read meanwhile are kept for `next`.
    fn round_trip(&mut self) -> Result<(), Error> {
        let target = self.io(Conn::ping)?;
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        loop {
            if self.io(|c| Ok(c.answered(target)))? {
                return Ok(());
            }
            match self.io(|c| c.read(Some(deadline)))? {
                Some(Incoming::Msg(msg)) => self.dispatch(msg)?,
                Some(Incoming::Pong) => {}
                None => {
                    self.drop_conn();
                    return Err(Error::Timeout);
                }
            }
        }
    }

    /// Files a message that is not the answer being waited for.
    fn dispatch(&mut self, msg: Msg) -> Result<(), Error> {
        match msg.sid {
            INBOX_SID => {
                if let Some(subject) = self.pub_acks.remove(&msg.subject) {
                    self.pub_acked(subject, msg);
                } // else a late reply to a finished request
            }
            PULL_SID => self.pulled(msg)?,
            // Our own inbox, seen by a wide subscription such as `>`.
            _ if msg
                .subject
                .strip_prefix(&self.inbox_prefix)
                .is_some_and(|rest| rest.starts_with('.')) => {}
            _ => {
                let reply = msg.reply.clone();
                self.pending.push_back(match message_from(msg, reply) {
                    Ok(message) => Pending::Message(message, None),
                    Err(reason) => Pending::Rejected(reason),
                });
            }
        }
        Ok(())
    }

    /// Handles the answer to a send that a stream captures.
    fn pub_acked(&mut self, subject: String, msg: Msg) {
        let status = msg
            .headers
            .as_deref()
            .and_then(|block| headers::decode(block).ok())
            .and_then(|h| h.status);
        match jetstream::pub_ack(status, &msg.payload) {
            PubAck::Stored => {}
            PubAck::NoStream => {
                // Sends there keep waiting for JetStream (and fail like this one while no
                // stream answers) until the capture is asked again: one that is back
                // stores them, and a stream deleted for good makes the subject core NATS
                // again after [`CAPTURE_TTL`]. Counting it as sent would lose every message
                // sent while a stopping server has shut the stream down but still takes
                // the acks of the deliveries that made them.
                self.captured
                    .insert(subject.clone(), (true, Instant::now()));
                push_once(
                    &mut self.unstored,
                    format!(
                        "no JetStream stream stored the message sent to `{subject}` (status \
                         503: the stream is gone, or the server is stopping or starting)"
                    ),
                );
            }
            PubAck::Refused(why) => push_once(
                &mut self.refused,
                format!("JetStream did not store the message sent to `{subject}`: {why}"),
            ),
            PubAck::Other => {
                self.pub_acks.insert(msg.subject, subject);
            }
        }
    }

    /// Waits until JetStream answered every send to a stream's subject.
    fn await_pub_acks(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while !self.pub_acks.is_empty() {
            match self.io(|c| c.read(Some(deadline)))? {
                Some(Incoming::Msg(msg)) => self.dispatch(msg)?,
                Some(Incoming::Pong) => {}
                None => return Err(Error::Timeout),
            }
        }
        Ok(())
    }

    /// Whether a stream captures `subject` (asked once a minute per subject): a send there
    /// waits for JetStream's acknowledgement, not only for the server's.
    /// `now` is the time of the send (one clock read per send: it is a host call).
    fn captured_by_stream(&mut self, subject: &str, now: Instant) -> Result<bool, Error> {
        if !self.ask_streams {
            return Ok(false);
        }
        if let Some(&(captured, asked)) = self.captured.get(subject) {
            if now.saturating_duration_since(asked) < CAPTURE_TTL {
                return Ok(captured);
            }
        }
        let body = jetstream::stream_names_body(subject);
        let captured = match self.api(jetstream::stream_names_subject(), body) {
            Ok(answer) => match jetstream::captured(answer.as_ref()) {
                Some(captured) => captured,
                // No JetStream on the server or for this account.
                None => {
                    self.ask_streams = false;
                    return Ok(false);
                }
            },
            Err(Error::PermissionDenied(why)) => {
                log(
                    Self::NAME,
                    &format!(
                        "cannot ask JetStream which streams capture `{subject}` ({why}); sends are confirmed by the server, not by JetStream"
                    ),
                );
                self.ask_streams = false;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if self.captured.len() >= MAX_CAPTURE_ANSWERS {
            self.captured.clear();
        }
        self.captured.insert(subject.to_string(), (captured, now));
        Ok(captured)
    }

    /// Makes a fresh reply subject, `<inbox prefix>.<n>`.
    fn new_inbox(&mut self) -> String {
        self.last_request += 1;
        format!("{}.{}", self.inbox_prefix, self.last_request)
    }

    /// Publishes `message` on `topic`; a send to a stream's subject (when `ask_streams`)
    /// is acknowledged by JetStream. Inside a handler the message is only queued (written
    /// in batches; the `flush` the driver makes before it acks confirms it); outside one
    /// it is confirmed before this returns, or, with the run wrapper, when its window is
    /// full or old (a `PING` / `PONG` round trip and the JetStream acks of the window).
    fn send_to(
        &mut self,
        topic: &str,
        message: &MessageData,
        ask_streams: bool,
    ) -> Result<(), Error> {
        check_publish_subject(topic)?;
        let now = Instant::now();
        let pub_ack_inbox = match ask_streams && self.captured_by_stream(topic, now)? {
            true => Some(self.new_inbox()),
            false => None,
        };
        self.publish(topic, pub_ack_inbox.as_deref(), message)?;
        if let Some(inbox) = pub_ack_inbox {
            self.pub_acks.insert(inbox, topic.to_string());
        }
        self.unconfirmed += 1;
        if !self.in_handler {
            let queued = self.io(|c| Ok(c.queued()))?;
            match self
                .window
                .as_mut()
                .map(|w| w.send(now) || queued >= WINDOW_BYTES)
            {
                None => return self.flush(),
                Some(true) => {
                    let confirmed = self.confirm();
                    let window = self.window.as_mut().expect("checked above");
                    return window.confirmed(confirmed);
                }
                Some(false) => return Ok(()),
            }
        }
        if self.io(|c| Ok(c.queued()))? >= WRITE_BATCH {
            self.io(Conn::write_out)?;
        }
        Ok(())
    }

    /// Publishes `message` on `topic` with a fresh reply subject and collects the replies
    /// as the `request-reply.request` doc describes; `None` when nobody subscribes to
    /// `topic` (the server's no-responders status).
    fn exchange(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Option<Vec<MessageData>>, Error> {
        let inbox = self.new_inbox();
        self.publish(topic, Some(&inbox), message)?;
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
            if wanted.is_some_and(|n| replies.len() >= n) {
                break Ok(());
            }
            let msg = match self.io(|c| c.read(deadline)) {
                Ok(Some(Incoming::Msg(msg))) => msg,
                Ok(Some(Incoming::Pong)) => continue,
                Ok(None) => break Err(Error::Timeout),
                Err(e) => break Err(e),
            };
            if msg.sid != INBOX_SID || msg.subject != inbox {
                match self.dispatch(msg) {
                    Ok(()) => continue,
                    Err(e) => break Err(e),
                }
            }
            let no_responders = msg
                .headers
                .as_deref()
                .is_some_and(|block| headers::decode(block).is_ok_and(|h| h.status == Some(503)));
            if no_responders && replies.is_empty() {
                return Ok(None);
            }
            let reply_to = msg.reply.clone();
            match message_from(msg, reply_to) {
                Ok(reply) => replies.push(reply),
                Err(reason) => break Err(Error::Other(reason)),
            }
        };
        match outcome {
            Err(e) if replies.is_empty() => Err(e),
            _ => Ok(Some(replies)),
        }
    }

    /// Handles a message on the pull inbox: a delivery or a status from JetStream.
    fn pulled(&mut self, msg: Msg) -> Result<(), Error> {
        let (status, description) = match msg.headers.as_deref().map(headers::decode) {
            Some(Ok(h)) => (h.status, h.description),
            _ => (None, String::new()),
        };
        let shown = || format!("{} {description}", status.unwrap_or_default());
        match self.pulls.pulled(status) {
            Pulled::Delivery => {
                let lasts = Duration::from_millis(self.jetstream().ack_wait_ms);
                let held = msg.reply.clone().map(|ack| Held {
                    ack,
                    subject: msg.subject.clone(),
                    lease: Lease::new(Instant::now(), lasts),
                });
                self.pending.push_back(match message_from(msg, None) {
                    Ok(message) => Pending::Message(message, held),
                    Err(reason) => Pending::Rejected(reason),
                });
            }
            Pulled::Heartbeat | Pulled::Ended => {}
            Pulled::Restart => {
                log(
                    Self::NAME,
                    &format!("JetStream ended a pull: {}; pulling again", shown()),
                );
                self.consumer_ready = false;
            }
            Pulled::Refused => {
                let js = self.jetstream();
                return Err(Error::other(format!(
                    "JetStream refused a pull from durable consumer `{}` of stream `{}`: {}",
                    js.durable,
                    js.stream,
                    shown()
                )));
            }
        }
        Ok(())
    }

    /// The JetStream settings (only called in JetStream mode).
    fn jetstream(&self) -> &JetStream {
        self.config
            .jetstream
            .as_ref()
            .expect("only called in JetStream mode")
    }

    /// Queues a publish of `message` on `subject`, checking it fits the server's limits.
    fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        message: &MessageData,
    ) -> Result<(), Error> {
        let headers = headers::encode(message).map_err(Error::Other)?;
        let conn = self.ensure_connected()?;
        if headers.is_some() && !conn.info.headers {
            return Err(Error::other(
                "the server does not support message headers, which carry content type and metadata; use nats-server 2.2 or newer",
            ));
        }
        let size = message.data.len() + headers.as_ref().map_or(0, Vec::len);
        if size > conn.info.max_payload {
            return Err(Error::other(format!(
                "message of {size} bytes (payload and headers) on `{subject}` is larger than the server's max_payload of {} bytes",
                conn.info.max_payload
            )));
        }
        protocol::encode_publish(
            conn.queue(),
            subject,
            reply,
            headers.as_deref(),
            &message.data,
        );
        Ok(())
    }

    /// Makes the subscriptions (first `next`), checks the JetStream consumer, and keeps
    /// a pull outstanding; then waits for one thing from the server.
    fn receive(&mut self) -> Result<(), Error> {
        if !self.subscribed {
            self.subscribed = true;
            self.queue_subscriptions();
        }
        if self.config.jetstream.is_some() {
            if !self.consumer_ready {
                self.setup_consumer()?;
            }
            if self.pulls.due(Instant::now()) {
                self.request_pull()?;
            }
        } else if !self.announced {
            self.round_trip()?;
            let group = match &self.config.queue_group {
                Some(group) => format!(" (queue group `{group}`)"),
                None => String::new(),
            };
            for subject in &self.config.subscribe {
                log(Self::NAME, &format!("subscribed to `{subject}`{group}"));
            }
            self.announced = true;
        }
        let deadline = self.pulls.deadline();
        match self.io(|c| c.read(deadline))? {
            Some(Incoming::Msg(msg)) => self.dispatch(msg),
            Some(Incoming::Pong) | None => Ok(()),
        }
    }

    /// Checks the stream (creating it if asked) and creates or updates the durable
    /// pull consumer.
    fn setup_consumer(&mut self) -> Result<(), Error> {
        let js = self.jetstream().clone();
        let info = self.js_api(&jetstream::stream_info_subject(&js.stream), Vec::new())?;
        let check = jetstream::check_stream(&info, &js, &self.config.subscribe, &self.config.url)?;
        if check == StreamCheck::Create {
            let body = jetstream::stream_create_body(&js.stream, &self.config.subscribe);
            let created = self.js_api(&jetstream::stream_create_subject(&js.stream), body)?;
            // `false`: another instance created it first.
            if jetstream::stream_created(&created, &js.stream)? {
                log(
                    Self::NAME,
                    &format!(
                        "created JetStream stream `{}` for `{}`",
                        js.stream,
                        self.config.subscribe.join("`, `")
                    ),
                );
            }
        }
        let body = jetstream::consumer_create_body(&js, &self.config.subscribe);
        let created = self.js_api(&jetstream::consumer_create_subject(&js), body)?;
        jetstream::consumer_created(&created, &js)?;
        self.consumer_ready = true;
        if !self.announced {
            for subject in &self.config.subscribe {
                log(
                    Self::NAME,
                    &format!(
                        "subscribed to `{subject}` (JetStream stream `{}`, durable consumer `{}`)",
                        js.stream, js.durable
                    ),
                );
            }
            self.announced = true;
        }
        Ok(())
    }

    /// Makes a JetStream API request and parses the answer; `None` when nothing answers
    /// (the server has no JetStream).
    fn api(
        &mut self,
        subject: &str,
        body: Vec<u8>,
    ) -> Result<Option<jetstream::ApiResponse>, Error> {
        let options = RequestOptions {
            timeout_ms: Some(API_TIMEOUT_MS),
            expected_replies: Some(1),
        };
        let Some(replies) = self.exchange(subject, &MessageData::new(body), options)? else {
            return Ok(None);
        };
        let reply = replies.first().ok_or(Error::Timeout)?;
        jetstream::parse_response(&reply.data)
            .map(Some)
            .map_err(|e| Error::other(format!("`{subject}`: {e}")))
    }

    /// Makes a JetStream API request that needs JetStream, and parses the answer.
    fn js_api(&mut self, subject: &str, body: Vec<u8>) -> Result<jetstream::ApiResponse, Error> {
        self.api(subject, body)?.ok_or_else(|| {
            Error::other(format!(
                "JetStream is not enabled on {} (no responders on `{subject}`); start nats-server with -js",
                self.config.url
            ))
        })
    }

    /// Publishes a pull request for the next batch.
    fn request_pull(&mut self) -> Result<(), Error> {
        let js = self.jetstream();
        let subject = jetstream::pull_subject(js);
        let inbox = pull_inbox(&self.inbox_prefix);
        let conn = self.ensure_connected()?;
        protocol::encode_publish(
            conn.queue(),
            &subject,
            Some(&inbox),
            None,
            &jetstream::pull_body(),
        );
        self.pulls.requested(Instant::now());
        Ok(())
    }

    /// Queues `body` (`+ACK`, `-NAK`) for a delivery's ack subject; it goes out with the
    /// next write, which always comes before the next read (a lone small write would
    /// make the one after it wait for a delayed TCP ACK: wasi:sockets cannot turn Nagle's
    /// algorithm off). Not being connected is logged, not an error: the delivery stays
    /// unacknowledged, so JetStream redelivers it after the ack wait, and at-least-once
    /// delivery holds either way (the same holds when the connection breaks before the
    /// queued ack is written).
    fn settle(&mut self, id: DeliveryId, body: &[u8]) -> Result<(), Error> {
        self.in_handler = false;
        let Some(held) = self.deliveries.settle(id)? else {
            return Ok(()); // core NATS: nothing to settle
        };
        match self.ensure_connected() {
            Ok(conn) => protocol::encode_publish(conn.queue(), &held.ack, None, None, body),
            Err(e) => log(
                Self::NAME,
                &format!(
                    "could not settle delivery {id} ({e}); JetStream redelivers it after the ack wait"
                ),
            ),
        }
        if body == ACK {
            // JetStream takes the ack of a delivery whose ack wait passed as long as the
            // message is still pending, so the ack still goes; the log line explains a
            // second copy handled meanwhile.
            let note = held.lease.overrun_note(
                Instant::now(),
                &held.subject,
                "the ack wait",
                SET_HANDLER_TIMEOUT,
            );
            if let Some(note) = note {
                log(Self::NAME, &note);
            }
        }
        Ok(())
    }

    /// Renews the lease of every JetStream delivery held (handed to the handler or
    /// waiting in `pending`) whose renewal is due, with `+WPI` ("work in progress": the
    /// ack wait starts again). WASI 0.2 gives the backend no timer, so this runs when the
    /// handler calls the backend (send, request, reply) and before `next` hands out a
    /// delivery. A lease that ran out already is left alone: JetStream may have delivered
    /// the message again, and the ack reports it. The `+WPI`s are written out at once
    /// (a handler may compute for long after a send that is only queued); without a
    /// connection there is nothing to renew on, and the ack wait runs on.
    fn renew_leases(&mut self) {
        let now = Instant::now();
        let due = |held: &Held| held.lease.renewal_due(now) && held.lease.overrun(now).is_none();
        let held = self
            .deliveries
            .unsettled_mut()
            .filter_map(|(_, held)| held.as_mut())
            .chain(self.pending.iter_mut().filter_map(|p| match p {
                Pending::Message(_, held) => held.as_mut(),
                Pending::Rejected(_) => None,
            }))
            .filter(|held| due(held));
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut renewed = Vec::new();
        for held in held {
            protocol::encode_publish(conn.queue(), &held.ack, None, None, PROGRESS);
            renewed.push(&mut held.lease);
        }
        if renewed.is_empty() {
            return;
        }
        match conn.write_out() {
            Ok(()) => {
                for lease in renewed {
                    lease.renewed(now);
                }
            }
            Err(e) => {
                drop(renewed);
                log(
                    Self::NAME,
                    &format!("could not renew the ack wait of the deliveries held ({e}); JetStream redelivers them if it passes"),
                );
                if e.is_transient() {
                    self.drop_conn();
                }
            }
        }
    }

    /// Takes the next pending message for `next`: renews what is held first, and skips a
    /// delivery whose ack wait passed while it waited behind earlier handlers (JetStream
    /// delivers it again; handling this copy would make a duplicate).
    fn next_pending(&mut self) -> Option<Event> {
        self.renew_leases();
        while let Some(item) = self.pending.pop_front() {
            return Some(match item {
                Pending::Message(_, Some(held)) if held.lease.overrun(Instant::now()).is_some() => {
                    log(
                        Self::NAME,
                        &format!(
                            "skipped a message from `{}` whose ack wait of {} s passed while it waited behind earlier handlers: JetStream delivers it again; lower the prefetch by handling faster or set --option handler_timeout_ms higher",
                            held.subject,
                            common::Seconds(held.lease.lasts())
                        ),
                    );
                    continue;
                }
                Pending::Message(message, held) => {
                    self.in_handler = true;
                    self.lost = 0;
                    Event::Delivery(self.deliveries.deliver(held), message)
                }
                Pending::Rejected(reason) => Event::Rejected(reason),
            });
        }
        None
    }
}

/// Turns a received message into [`MessageData`], or says why its headers are unreadable.
fn message_from(msg: Msg, reply_to: Option<String>) -> Result<MessageData, String> {
    let headers = match &msg.headers {
        Some(block) => headers::decode(block)
            .map_err(|e| format!("message on `{}` has unreadable headers: {e}", msg.subject))?,
        None => headers::Headers::default(),
    };
    Ok(MessageData {
        topic: Some(msg.subject),
        data: msg.payload,
        content_type: headers.content_type,
        metadata: headers.metadata,
        reply_to,
    })
}

/// The subject JetStream delivers pulled messages to (outside `<inbox prefix>.*`).
fn pull_inbox(inbox_prefix: &str) -> String {
    format!("{inbox_prefix}.jetstream.pull")
}

impl Backend for Nats {
    const NAME: &'static str = "nats";

    fn open(settings: Settings) -> Result<Self, Error> {
        let config = Config::from_settings(&settings, |name| std::env::var(name).ok())?;
        let window = ConfirmWindow::from_settings(&settings)?.map(Window::new);
        let mut nats = Self {
            config,
            conn: None,
            connected_before: false,
            inbox_prefix: format!("_INBOX.{}", common::random_id()),
            last_request: 0,
            subscribed: false,
            announced: false,
            consumer_ready: false,
            pulls: Pulls::default(),
            pending: VecDeque::new(),
            deliveries: Deliveries::new(),
            in_handler: false,
            unconfirmed: 0,
            lost: 0,
            ask_streams: true,
            captured: HashMap::new(),
            pub_acks: HashMap::new(),
            refused: Vec::new(),
            unstored: Vec::new(),
            window,
        };
        nats.establish()?;
        Ok(nats)
    }

    /// See [`Nats::send_to`]: a send to a subject a JetStream stream captures returns (or,
    /// inside a handler, the next `flush` does) once JetStream stored it; any other once
    /// the server processed it (a `PING` / `PONG` round trip).
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        self.renew_leases();
        self.send_to(topic, message, true)
    }

    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        check_publish_subject(topic)?;
        self.renew_leases();
        self.exchange(topic, message, options)?
            .ok_or_else(|| Error::other(format!("no responders on `{topic}`")))
    }

    /// Like `send`, but reply subjects are inboxes, so JetStream is not asked about them.
    fn reply(&mut self, reply_to: &str, reply: &MessageData) -> Result<(), Error> {
        self.renew_leases();
        self.send_to(reply_to, reply, false)
    }

    /// Waits for the next message. A lost connection is retried here, forever, with
    /// capped exponential backoff; the subscriptions (or the JetStream pull) are
    /// restored on the new connection.
    fn next(&mut self) -> Result<Event, Error> {
        let mut backoff = RECONNECT;
        loop {
            if let Some(event) = self.next_pending() {
                return Ok(event);
            }
            let connected = self.conn.is_some();
            let step = match connected {
                true => self.receive(),
                false => self.establish(),
            };
            match step {
                Ok(()) => {}
                Err(e) if e.is_transient() => {
                    self.drop_conn();
                    backoff.reconnect(Self::NAME, &self.config.url, connected, e)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn ack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.settle(id, ACK)
    }

    fn nack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.settle(id, b"-NAK")
    }

    /// Confirms every message sent so far (see [`Nats::confirm`]); with the run wrapper,
    /// also fails if an earlier window's confirmation failed.
    fn flush(&mut self) -> Result<(), Error> {
        self.in_handler = false;
        let confirmed = self.confirm();
        Window::flushed(self.window.as_mut(), confirmed)
    }
}

impl Nats {
    /// Confirms every message sent so far: a `PING` / `PONG` round trip (the server has
    /// processed them; a `-ERR` it sent for one of them, such as a permissions violation,
    /// arrives before the `PONG` and is returned), then JetStream's acknowledgements of
    /// those sent to streams' subjects. Fails if a connection was lost before it confirmed
    /// some, or JetStream refused to store some or no stream answered for some.
    fn confirm(&mut self) -> Result<(), Error> {
        if self.unconfirmed == 0 && self.lost == 0 {
            return Ok(());
        }
        let result = match self.lost {
            0 => self.round_trip().and_then(|()| self.await_pub_acks()),
            n => Err(Error::connection(format!(
                "the connection to {} was lost before the server confirmed {n} sent message(s)",
                self.config.url
            ))),
        };
        self.unconfirmed = 0;
        self.lost = 0;
        self.pub_acks.clear();
        let refused = std::mem::take(&mut self.refused);
        let unstored = std::mem::take(&mut self.unstored);
        result?;
        if !refused.is_empty() {
            return Err(Error::Other(refused.join("; ")));
        }
        match unstored.is_empty() {
            true => Ok(()),
            false => Err(Error::connection(unstored.join("; "))),
        }
    }
}

/// Adds `reason` to `reasons` unless it is there already: a window of sends confirmed
/// together can fail thousands of times for the same subject and the same reason, and the
/// error that reports them says each once.
fn push_once(reasons: &mut Vec<String>, reason: String) {
    if !reasons.contains(&reason) {
        reasons.push(reason);
    }
}

/// Checks that `subject` can be published to.
fn check_publish_subject(subject: &str) -> Result<(), Error> {
    protocol::check_subject(subject, false)
        .map_err(|e| Error::other(format!("cannot publish: {e}")))
}
