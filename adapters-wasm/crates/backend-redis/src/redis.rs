//! The [`Backend`] over one Redis connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{
    log, Backend, Backoff, Deliveries, DeliveryId, Error, Event, Lease, MessageData,
    RequestOptions, Settings, SET_HANDLER_TIMEOUT,
};

use crate::config::{Config, Streams};
use crate::conn::{reply_error, Conn, Expect};
use crate::envelope;
use crate::protocol::{Cmd, Value};

/// The Redis backend's component type.
type Component = common::Adapter<Redis>;
common::export!(Component);

/// The prefix of every reply address (a list key).
const REPLY_PREFIX: &str = "msgplug:reply:";

/// How long a reply list lives when nobody takes the replies.
const REPLY_TTL_MS: &str = "60000";

/// The longest single `BLPOP` / `XREADGROUP BLOCK` (shorter than the keepalive interval, so a
/// blocked connection is never mistaken for a dead one).
const MAX_BLOCK: Duration = Duration::from_secs(5);

/// How long past its `BLOCK` a blocking command may take to answer.
const BLOCK_GRACE: Duration = Duration::from_secs(5);

/// How long `flush` (and a send outside a handler) waits for the server.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How many entries one `XREADGROUP` or `XAUTOCLAIM` takes.
const BATCH: &str = "32";

/// The metadata key of a stream entry's delivery count (1 on the first delivery).
const DELIVERY_COUNT: &str = "redis-delivery-count";

/// The metadata key of a stream entry's id.
const ENTRY_ID: &str = "redis-entry-id";

/// Inside a handler, sends are queued and written once this many bytes are queued
/// (and at `flush`).
const WRITE_BATCH: usize = 32 * 1024;

/// The waits between reconnect attempts: 100 ms, doubling up to 5 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// A stream entry to acknowledge: the stream and the entry id.
type EntryRef = (String, String);

/// A stream entry this consumer holds (pending for it in the group).
struct Held {
    /// The entry.
    entry: EntryRef,
    /// `claim_after_ms` from when it was read or last renewed: after that, another
    /// instance of the group may claim it.
    lease: Lease,
}

/// A received message waiting for `next`.
enum Pending {
    /// A message, with its stream entry in Streams mode.
    Message(MessageData, Option<Held>),
    /// Input that could not be made into a message: why.
    Rejected(String),
}

/// The state of the Redis backend.
pub struct Redis {
    /// Where to connect, what to subscribe to.
    config: Config,
    /// The connection, or `None` while the server is unreachable.
    conn: Option<Conn>,
    /// True once a connection was made (later ones are reconnects).
    connected_before: bool,
    /// `msgplug:reply:<random>:`: this instance's reply keys start with it.
    reply_prefix: String,
    /// The number of the last request.
    last_request: u64,
    /// True once `next` asked for the subscriptions (they are restored on reconnect).
    subscribed: bool,
    /// Pub/sub: subscription confirmations still due on this connection.
    unconfirmed_subscriptions: usize,
    /// True once the subscriptions were live and logged.
    announced: bool,
    /// Streams: true once the groups were checked on this connection.
    groups_ready: bool,
    /// Streams: when pending entries were last claimed.
    last_claim: Option<Instant>,
    /// Messages received but not yet returned by `next`.
    pending: VecDeque<Pending>,
    /// Unsettled deliveries, with their stream entry in Streams mode.
    deliveries: Deliveries<Option<Held>>,
    /// True between a delivery and its settlement or `flush`: sends are batched.
    in_handler: bool,
    /// Messages sent since the server last confirmed everything.
    unconfirmed: u64,
    /// Messages of the current handler whose connection was lost before confirmation.
    lost: u64,
}

impl Redis {
    /// Connects (or reconnects) and restores the subscriptions.
    fn establish(&mut self) -> Result<(), Error> {
        let conn = Conn::open(&self.config)?;
        self.conn = Some(conn);
        self.groups_ready = false;
        if self.subscribed {
            self.queue_subscriptions();
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

    /// Runs `f` on the connection (connecting first); a connection error or timeout
    /// drops the connection.
    fn io<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, Error>) -> Result<T, Error> {
        let result = self.ensure_connected().and_then(f);
        if result.as_ref().is_err_and(Error::is_transient) {
            self.drop_conn();
        }
        result
    }

    /// Sends `cmd` and returns its reply; an error reply is an [`Error`].
    fn call(&mut self, cmd: Cmd, deadline: Option<Instant>) -> Result<Value, Error> {
        let name = cmd.name();
        match self.io(|c| c.call_until(cmd, deadline))? {
            Value::Error(text) => Err(reply_error(&name, &text)),
            reply => Ok(reply),
        }
    }

    /// Forgets a broken connection and what was only known on it.
    fn drop_conn(&mut self) {
        self.conn = None;
        self.lost += std::mem::take(&mut self.unconfirmed);
        self.groups_ready = false;
    }

    /// Pub/sub: queues `SUBSCRIBE` for channels and `PSUBSCRIBE` for glob patterns.
    fn queue_subscriptions(&mut self) {
        if self.config.streams.is_some() {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let (patterns, channels): (Vec<_>, Vec<_>) = self
            .config
            .subscribe
            .iter()
            .partition(|s| s.contains(['*', '?', '[']));
        // Confirmations are pushes, not replies.
        if !channels.is_empty() {
            let cmd = channels.iter().fold(Cmd::new("SUBSCRIBE"), |c, s| c.arg(s));
            cmd.encode(conn.queue_raw());
        }
        if !patterns.is_empty() {
            let cmd = patterns
                .iter()
                .fold(Cmd::new("PSUBSCRIBE"), |c, s| c.arg(s));
            cmd.encode(conn.queue_raw());
        }
        self.unconfirmed_subscriptions = self.config.subscribe.len();
    }

    /// Files a push frame: a pub/sub message, or a subscription confirmation.
    fn dispatch(&mut self, push: Vec<Value>) {
        let kind = push.first().and_then(Value::text).unwrap_or_default();
        let (channel, payload) = match (kind, push.as_slice()) {
            ("message", [_, channel, payload]) | ("pmessage", [_, _, channel, payload]) => {
                (channel, payload)
            }
            ("subscribe" | "psubscribe", _) => {
                self.unconfirmed_subscriptions = self.unconfirmed_subscriptions.saturating_sub(1);
                return;
            }
            _ => return,
        };
        let (Some(channel), Some(payload)) = (channel.text(), payload.bytes()) else {
            self.pending.push_back(Pending::Rejected(
                "a pub/sub message whose channel is not UTF-8 text".into(),
            ));
            return;
        };
        let message = envelope::unwrap(channel.to_string(), payload.to_vec());
        self.pending.push_back(Pending::Message(message, None));
    }

    /// Pub/sub: makes the subscriptions (first `next`) and waits for one push.
    fn receive_pushes(&mut self) -> Result<(), Error> {
        if !self.subscribed {
            self.subscribed = true;
            self.queue_subscriptions();
        }
        let deadline = Instant::now() + MAX_BLOCK;
        if let Some(push) = self.io(|c| c.take_push(Some(deadline)))? {
            self.dispatch(push);
        }
        if !self.announced && self.unconfirmed_subscriptions == 0 {
            if let Some(group) = &self.config.queue_group {
                log(
                    Self::NAME,
                    &format!("--queue-group `{group}` has no effect on Redis pub/sub: every instance gets every message; use `?mode=streams` to share the work"),
                );
            }
            for subject in &self.config.subscribe {
                let how = match subject.contains(['*', '?', '[']) {
                    true => "pattern",
                    false => "channel",
                };
                log(
                    Self::NAME,
                    &format!("subscribed to `{subject}` (Redis pub/sub {how}, at-most-once)"),
                );
            }
            self.announced = true;
        }
        Ok(())
    }

    /// Streams: creates the groups if needed, claims entries pending too long, then
    /// reads new entries.
    fn receive_entries(&mut self) -> Result<(), Error> {
        let (streams, group) = self.config.consuming()?;
        let (streams, group) = (streams.clone(), group.to_string());
        if !self.groups_ready {
            for stream in self.config.subscribe.clone() {
                let create = Cmd::new("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(&group)
                    .arg("0")
                    .arg("MKSTREAM");
                match self.call(create, None) {
                    Ok(_) => {}
                    Err(Error::Other(text)) if text.contains("BUSYGROUP") => {}
                    Err(e) => return Err(e),
                }
            }
            self.groups_ready = true;
            if !self.announced {
                for stream in &self.config.subscribe {
                    log(
                        Self::NAME,
                        &format!(
                            "subscribed to `{stream}` (Redis stream, consumer group `{group}`, consumer `{}`)",
                            streams.consumer
                        ),
                    );
                }
                self.announced = true;
            }
        }
        let claim_every = Duration::from_millis(streams.claim_after_ms / 2)
            .clamp(Duration::from_millis(50), MAX_BLOCK);
        let now = Instant::now();
        if self.last_claim.is_none_or(|t| now >= t + claim_every) {
            self.last_claim = Some(now);
            for stream in self.config.subscribe.clone() {
                let claimed = self.claim(&stream, &group, &streams);
                self.check_group(claimed)?;
            }
            if !self.pending.is_empty() {
                return Ok(());
            }
        }
        let next_claim = self.last_claim.map_or(now, |t| t + claim_every);
        let block = next_claim
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let mut read = Cmd::new("XREADGROUP")
            .arg("GROUP")
            .arg(&group)
            .arg(&streams.consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(block.as_millis().to_string())
            .arg("STREAMS");
        for stream in &self.config.subscribe {
            read = read.arg(stream);
        }
        for _ in &self.config.subscribe {
            read = read.arg(">");
        }
        let read = self.call(read, Some(Instant::now() + block + BLOCK_GRACE));
        let Some(reply) = self.check_group(read)? else {
            return Ok(());
        };
        // A map (RESP3) of stream name to entries, flattened: name, entries, ...
        let items = reply.array().unwrap_or_default();
        for pair in items.chunks(2) {
            let [name, entries] = pair else { continue };
            let Some(stream) = name.text() else { continue };
            for entry in entries.array().unwrap_or_default() {
                self.file_entry(stream, entry, 1);
            }
        }
        Ok(())
    }

    /// Passes `result` on, except that a missing group or stream (`NOGROUP`, or `UNBLOCKED`
    /// for a blocked read: deleted while the app ran) is `None` and makes the next read
    /// create them again.
    fn check_group<T>(&mut self, result: Result<T, Error>) -> Result<Option<T>, Error> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(Error::Other(text)) if text.contains("NOGROUP") || text.contains("UNBLOCKED") => {
                log(
                    Self::NAME,
                    &format!("{text}; creating the consumer group again"),
                );
                self.groups_ready = false;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Claims the entries of `stream` pending longer than `claim_after_ms`, moving those
    /// delivered `max_deliveries` times to the dead-letter stream.
    fn claim(&mut self, stream: &str, group: &str, streams: &Streams) -> Result<(), Error> {
        let autoclaim = Cmd::new("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(&streams.consumer)
            .arg(streams.claim_after_ms.to_string())
            .arg("0-0")
            .arg("COUNT")
            .arg(BATCH);
        let reply = self.call(autoclaim, None)?;
        let entries: Vec<Value> = match reply.array() {
            Some([_, entries, ..]) => entries.array().unwrap_or_default().to_vec(),
            _ => return Err(Error::other("XAUTOCLAIM: unexpected reply")),
        };
        let ids: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.array()?.first()?.text())
            .collect();
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(());
        };
        // The delivery counts (XAUTOCLAIM has counted this delivery already).
        let pending = Cmd::new("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(first)
            .arg(last)
            .arg(ids.len().to_string())
            .arg(&streams.consumer);
        let counts: Vec<(String, u64)> = self
            .call(pending, None)?
            .array()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| match p.array()? {
                [id, _, _, count, ..] => Some((id.text()?.to_string(), count.int()? as u64)),
                _ => None,
            })
            .collect();
        for entry in &entries {
            let id = entry
                .array()
                .and_then(|e| e.first()?.text())
                .unwrap_or_default();
            let count = counts
                .iter()
                .find_map(|(pending, count)| (pending == id).then_some(*count))
                .unwrap_or(2);
            match streams.max_deliveries {
                Some(max) if count > max => self.dead_letter(stream, group, entry, count - 1)?,
                _ => self.file_entry(stream, entry, count),
            }
        }
        Ok(())
    }

    /// Moves `entry` of `stream` to the dead-letter stream `<stream>:dead-letter` (its
    /// fields plus `original-stream`, `original-id` and `deliveries`) and acknowledges it.
    fn dead_letter(
        &mut self,
        stream: &str,
        group: &str,
        entry: &Value,
        deliveries: u64,
    ) -> Result<(), Error> {
        let Some([id, fields]) = entry.array() else {
            return Ok(());
        };
        let id = id.text().unwrap_or_default().to_string();
        let dead = format!("{stream}:dead-letter");
        let mut add = Cmd::new("XADD").arg(&dead).arg("*");
        for field in fields.array().unwrap_or_default() {
            add = add.arg(field.bytes().unwrap_or_default());
        }
        add = add
            .arg("original-stream")
            .arg(stream)
            .arg("original-id")
            .arg(&id)
            .arg("deliveries")
            .arg(deliveries.to_string());
        self.call(add, Some(Instant::now() + FLUSH_TIMEOUT))?;
        self.call(
            Cmd::new("XACK").arg(stream).arg(group).arg(&id),
            Some(Instant::now() + FLUSH_TIMEOUT),
        )?;
        log(
            Self::NAME,
            &format!(
                "entry {id} of `{stream}` failed {deliveries} time(s): moved to the dead-letter stream `{dead}`"
            ),
        );
        Ok(())
    }

    /// Files a stream entry (`[id, [field, value, ...]]`) delivered `count` times.
    fn file_entry(&mut self, stream: &str, entry: &Value, count: u64) {
        let Some([id, fields]) = entry.array() else {
            return;
        };
        let Some(id) = id.text() else { return };
        let entry_ref = (stream.to_string(), id.to_string());
        let Some(fields) = fields.array() else {
            // Deleted while pending: nothing to handle, nothing to keep pending.
            self.queue_ack(&entry_ref);
            return;
        };
        let fields = fields
            .chunks(2)
            .filter_map(|pair| match pair {
                [name, value] => Some((name.bytes()?.to_vec(), value.bytes()?.to_vec())),
                _ => None,
            })
            .collect();
        let mut message = envelope::from_fields(stream, fields);
        message
            .metadata
            .insert(DELIVERY_COUNT.into(), count.to_string());
        message.metadata.insert(ENTRY_ID.into(), id.to_string());
        let lasts = self
            .config
            .streams
            .as_ref()
            .map_or(Duration::ZERO, |s| Duration::from_millis(s.claim_after_ms));
        let held = Held {
            entry: entry_ref,
            lease: Lease::new(Instant::now(), lasts),
        };
        self.pending
            .push_back(Pending::Message(message, Some(held)));
    }

    /// Renews every entry held (handed to the handler or waiting in `pending`) whose
    /// renewal is due, with `XCLAIM` to this consumer (`JUSTID`: the idle time starts
    /// again and the delivery count stays). WASI 0.2 gives the backend no timer, so this
    /// runs when the handler calls the backend (send, request, reply) and before `next`
    /// hands out an entry. An entry whose `claim_after_ms` passed already is left alone:
    /// another instance may have claimed it, and claiming it back would have it handled
    /// twice at once; the ack reports it. Without a connection nothing is renewed.
    fn renew_leases(&mut self) {
        let Ok((streams, group)) = self.config.consuming() else {
            return;
        };
        let (consumer, group) = (streams.consumer.clone(), group.to_string());
        let now = Instant::now();
        let held = self
            .deliveries
            .unsettled_mut()
            .filter_map(|(_, held)| held.as_mut())
            .chain(self.pending.iter_mut().filter_map(|p| match p {
                Pending::Message(_, held) => held.as_mut(),
                Pending::Rejected(_) => None,
            }))
            .filter(|held| held.lease.renewal_due(now) && held.lease.overrun(now).is_none());
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut renewed = Vec::new();
        for held in held {
            let (stream, id) = &held.entry;
            let claim = Cmd::new("XCLAIM")
                .arg(stream)
                .arg(&group)
                .arg(&consumer)
                .arg("0")
                .arg(id)
                .arg("JUSTID");
            conn.queue(&claim, Expect::Ignored);
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
                    &format!("could not renew the entries held ({e}); another instance claims them after claim_after_ms"),
                );
                self.drop_conn();
            }
        }
    }

    /// Takes the next pending message for `next`: renews what is held first, and skips
    /// an entry whose `claim_after_ms` passed while it waited behind earlier handlers
    /// (another instance claims it; handling this copy would make a duplicate).
    fn next_pending(&mut self) -> Option<Event> {
        self.renew_leases();
        while let Some(item) = self.pending.pop_front() {
            return Some(match item {
                Pending::Message(_, Some(held)) if held.lease.overrun(Instant::now()).is_some() => {
                    log(
                        Self::NAME,
                        &format!(
                            "skipped entry {} of `{}` whose claim_after_ms of {} s passed while it waited behind earlier handlers: another instance claims it; set --option handler_timeout_ms higher",
                            held.entry.1,
                            held.entry.0,
                            common::Seconds(held.lease.lasts())
                        ),
                    );
                    continue;
                }
                Pending::Message(message, held) => {
                    let id = self.deliveries.deliver(held);
                    self.in_handler = true;
                    self.lost = 0;
                    Event::Delivery(id, message)
                }
                Pending::Rejected(reason) => Event::Rejected(reason),
            });
        }
        None
    }

    /// Queues the `XACK` of an entry; it goes out with the next command. A lost `XACK`
    /// means a redelivery after `claim_after_ms`, so at-least-once holds either way.
    fn queue_ack(&mut self, (stream, id): &EntryRef) {
        let Ok((_, group)) = self.config.consuming() else {
            return; // only consuming makes entries to acknowledge
        };
        let group = group.to_string();
        match self.ensure_connected() {
            Ok(conn) => conn.queue(
                &Cmd::new("XACK").arg(stream).arg(group).arg(id),
                Expect::Ignored,
            ),
            Err(e) => log(
                Self::NAME,
                &format!("could not acknowledge entry {id} of `{stream}` ({e}); it is delivered again after claim_after_ms"),
            ),
        }
    }

    /// The command that sends `message` to `topic`: `XADD` in Streams mode, else `PUBLISH`
    /// (of the envelope when asked for, or when there is a reply address).
    fn send_cmd(&self, topic: &str, message: &MessageData, reply_to: Option<&str>) -> Cmd {
        if self.config.streams.is_some() {
            let mut cmd = Cmd::new("XADD").arg(topic);
            if let Some(maxlen) = self.config.maxlen {
                cmd = cmd.arg("MAXLEN").arg("~").arg(maxlen.to_string());
            }
            cmd = cmd.arg("*");
            for (name, value) in envelope::to_fields(message, reply_to) {
                cmd = cmd.arg(name).arg(value);
            }
            return cmd;
        }
        let payload = match self.config.envelope || reply_to.is_some() {
            true => envelope::wrap(message, reply_to),
            false => message.data.clone(),
        };
        Cmd::new("PUBLISH").arg(topic).arg(payload)
    }

    /// Queues `cmd`, whose error reply `flush` reports; outside a handler, flushes.
    fn queue_send(&mut self, cmd: Cmd, what: String) -> Result<(), Error> {
        let queued = self.io(|c| {
            c.queue(&cmd, Expect::Checked(what));
            Ok(c.queued())
        })?;
        self.unconfirmed += 1;
        if !self.in_handler {
            return self.flush();
        }
        if queued >= WRITE_BATCH {
            self.io(Conn::write_out)?;
        }
        Ok(())
    }

    /// Waits for replies on `key` as the `request-reply.request` doc describes.
    fn await_replies(
        &mut self,
        key: &str,
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
        while wanted.is_none_or(|n| replies.len() < n) {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            let block = deadline
                .map_or(MAX_BLOCK, |d| {
                    d.saturating_duration_since(now).min(MAX_BLOCK)
                })
                .max(Duration::from_millis(10));
            let pop = Cmd::new("BLPOP").arg(key).arg(seconds(block));
            let reply = self.call(pop, Some(now + block + BLOCK_GRACE))?;
            if let Some([_, payload]) = reply.array() {
                let payload = payload.bytes().unwrap_or_default().to_vec();
                let mut reply = envelope::unwrap(key.to_string(), payload);
                reply.topic = None;
                replies.push(reply);
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.queue(&Cmd::new("DEL").arg(key), Expect::Ignored);
        }
        match replies.is_empty() {
            true => Err(Error::Timeout),
            false => Ok(replies),
        }
    }
}

/// `duration` in seconds with three decimals, as `BLPOP` takes it (without the float
/// formatting code that `{:.3}` would pull in).
fn seconds(duration: Duration) -> String {
    let ms = duration.as_millis();
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

impl Backend for Redis {
    const NAME: &'static str = "redis";

    fn open(settings: Settings) -> Result<Self, Error> {
        let config = Config::from_settings(
            &settings,
            |name| std::env::var(name).ok(),
            || common::random_id()[..12].to_string(),
        )?;
        let mut redis = Self {
            config,
            conn: None,
            connected_before: false,
            reply_prefix: format!("{REPLY_PREFIX}{}:", common::random_id()),
            last_request: 0,
            subscribed: false,
            unconfirmed_subscriptions: 0,
            announced: false,
            groups_ready: false,
            last_claim: None,
            pending: VecDeque::new(),
            deliveries: Deliveries::new(),
            in_handler: false,
            unconfirmed: 0,
            lost: 0,
        };
        redis.establish()?;
        Ok(redis)
    }

    /// `PUBLISH` (pub/sub; how many received it does not matter) or `XADD` (Streams);
    /// returns once Redis answered (inside a handler, the next `flush` does).
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        self.renew_leases();
        let cmd = self.send_cmd(topic, message, None);
        let what = format!("{} to `{topic}`", cmd.name());
        self.queue_send(cmd, what)
    }

    /// Sends `message` with a fresh reply key and collects the replies from it; in
    /// pub/sub mode a request nobody subscribes to fails at once.
    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        self.renew_leases();
        self.last_request += 1;
        let key = format!("{}{}", self.reply_prefix, self.last_request);
        let cmd = self.send_cmd(topic, message, Some(&key));
        let pubsub = self.config.streams.is_none();
        let receivers = self.call(cmd, Some(Instant::now() + FLUSH_TIMEOUT))?;
        if pubsub && receivers.int() == Some(0) {
            return Err(Error::other(format!(
                "no responders: no subscribers on channel `{topic}`"
            )));
        }
        self.await_replies(&key, options)
    }

    /// `RPUSH`es the reply (as a JSON envelope) to the reply key, which expires after
    /// 60 s; only `msgplug:reply:` keys are reply addresses.
    fn reply(&mut self, reply_to: &str, reply: &MessageData) -> Result<(), Error> {
        if !reply_to.starts_with(REPLY_PREFIX) {
            return Err(Error::other(format!(
                "reply address `{reply_to}` is not a msgplug reply key (`{REPLY_PREFIX}...`)"
            )));
        }
        self.renew_leases();
        let push = Cmd::new("RPUSH")
            .arg(reply_to)
            .arg(envelope::wrap(reply, None));
        self.queue_send(push, format!("reply to `{reply_to}`"))?;
        // The expiry is set after the push, which creates the list.
        self.io(|c| {
            c.queue(
                &Cmd::new("PEXPIRE").arg(reply_to).arg(REPLY_TTL_MS),
                Expect::Ignored,
            );
            Ok(())
        })
    }

    /// Waits for the next message. A lost connection is retried here, forever, with
    /// capped exponential backoff; the subscriptions are restored on the new connection.
    fn next(&mut self) -> Result<Event, Error> {
        let mut backoff = RECONNECT;
        loop {
            if let Some(event) = self.next_pending() {
                return Ok(event);
            }
            let connected = self.conn.is_some();
            let step = match (connected, self.config.streams.is_some()) {
                (false, _) => self.establish(),
                (true, false) => self.receive_pushes(),
                (true, true) => self.receive_entries(),
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

    fn ack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.in_handler = false;
        if let Some(held) = self.deliveries.settle(id)? {
            let (stream, _) = &held.entry;
            let note = held.lease.overrun_note(
                Instant::now(),
                stream,
                "claim_after_ms",
                SET_HANDLER_TIMEOUT,
            );
            if let Some(note) = note {
                log(Self::NAME, &note);
            }
            self.queue_ack(&held.entry);
        }
        Ok(())
    }

    /// Leaves a stream entry pending: it is claimed again after `claim_after_ms`.
    fn nack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.in_handler = false;
        self.deliveries.settle(id).map(drop)
    }

    /// Waits until Redis answered every command sent so far (a `PING` round trip: replies
    /// come in order), and fails if it refused some, or the connection was lost first.
    fn flush(&mut self) -> Result<(), Error> {
        self.in_handler = false;
        if self.unconfirmed == 0 && self.lost == 0 {
            return Ok(());
        }
        let result = match self.lost {
            0 => self
                .call(Cmd::new("PING"), Some(Instant::now() + FLUSH_TIMEOUT))
                .map(drop),
            n => Err(Error::connection(format!(
                "the connection to {} was lost before the server confirmed {n} sent message(s)",
                self.config.url
            ))),
        };
        self.unconfirmed = 0;
        self.lost = 0;
        result?;
        let failures = self
            .conn
            .as_mut()
            .map(Conn::take_failures)
            .unwrap_or_default();
        match failures.is_empty() {
            true => Ok(()),
            false => Err(Error::Other(failures.join("; "))),
        }
    }
}
