//! The [`Backend`] over one AMQP connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{
    log, Backend, Backoff, ConfirmWindow, Deliveries, DeliveryId, Error, Event, MessageData,
    RequestOptions, Settings, Window,
};

use crate::config::{Config, Source};
use crate::conn::Conn;
use crate::message;
use crate::protocol::{Content, Incoming, Method};

/// The AMQP backend's component type.
type Component = common::Adapter<Amqp>;
common::export!(Component);

/// The consumer tag of the subscription.
const CONSUMER_TAG: &str = "msgplug";

/// The consumer tag of the direct reply-to consumer.
const REPLY_TAG: &str = "msgplug.reply";

/// RabbitMQ's direct reply-to pseudo-queue.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// How long a synchronous method (declare, bind, consume) waits for its answer.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `flush` (and a send outside a handler) waits for the broker's confirms.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a send waits while the broker blocks publishers (`connection.blocked`).
const BLOCKED_TIMEOUT: Duration = Duration::from_secs(10);

/// The waits between reconnect attempts: 100 ms, doubling up to 5 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Inside a handler, publishes are queued and written once this many bytes are queued
/// (and at `flush`).
const WRITE_BATCH: usize = 32 * 1024;

/// With the run wrapper, a window is also confirmed once this many bytes are queued. The
/// window is written in one go when it closes: writes of one message each would wait for
/// delayed ACKs (Nagle's algorithm, which wasi:sockets cannot turn off).
const WINDOW_BYTES: usize = 1 << 20;

/// A delivery: the connection it came on (its number) and its delivery tag there.
type Tag = (u64, u64);

/// The state of the AMQP backend.
pub struct Amqp {
    /// Where to connect, what to consume.
    config: Config,
    /// The connection name the broker shows.
    name: String,
    /// The connection, or `None` while the broker is unreachable.
    conn: Option<Conn>,
    /// The number of the current connection (counts connections made).
    epoch: u64,
    /// True once `next` asked for the subscription (it is restored on reconnect).
    consuming: bool,
    /// True once the queue, bindings and consumer exist on this connection.
    topology_ready: bool,
    /// True once the subscription was logged.
    announced: bool,
    /// True once the direct reply-to consumer exists on this connection.
    reply_consumer: bool,
    /// Deliveries received but not yet returned by `next`.
    pending: VecDeque<(Tag, MessageData)>,
    /// Unsettled deliveries.
    deliveries: Deliveries<Tag>,
    /// True between a delivery and its settlement or `flush`: publishes are pipelined.
    in_handler: bool,
    /// The publish sequence number of the next publish on this connection's channel.
    next_seq: u64,
    /// Publishes the broker has not confirmed yet: sequence number (ascending) and routing
    /// key.
    unconfirmed: VecDeque<(u64, String)>,
    /// Publishes whose connection was lost before the broker confirmed them.
    lost: u64,
    /// Why published messages were refused (nacks, returns), since the last `flush`.
    refused: Vec<String>,
    /// The correlation id of the request waiting for replies, and the replies so far.
    request: Option<(String, Vec<MessageData>)>,
    /// The heartbeat interval agreed on the last connection.
    heartbeat: Option<Duration>,
    /// When `next` handed out the last delivery.
    handed_out: Instant,
    /// With the run wrapper: the window of sends outside a handler not yet confirmed.
    /// `None`: each send outside a handler is confirmed before it returns.
    window: Option<Window>,
}

impl Amqp {
    /// Connects (or reconnects); the topology is declared again by the next `next`.
    fn establish(&mut self) -> Result<(), Error> {
        let conn = Conn::open(&self.config, &self.name)?;
        self.heartbeat = conn.heartbeat();
        self.conn = Some(conn);
        self.epoch += 1;
        self.next_seq = 1;
        self.topology_ready = false;
        self.reply_consumer = false;
        if self.epoch > 1 {
            log(Self::NAME, &format!("reconnected to {}", self.config.url));
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

    /// Runs `f` on the connection; a broken connection is dropped afterwards.
    fn io<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, Error>) -> Result<T, Error> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::connection(format!("not connected to {}", self.config.url)))?;
        let result = f(conn);
        if conn.broken {
            self.drop_conn();
        }
        result
    }

    /// Forgets a broken connection and what was only known on it. Its unsettled
    /// deliveries stay unacknowledged: the broker delivers them again.
    fn drop_conn(&mut self) {
        self.conn = None;
        self.lost += self.unconfirmed.len() as u64;
        self.unconfirmed.clear();
        self.topology_ready = false;
        self.reply_consumer = false;
        self.pending.clear();
    }

    /// Reads one thing from the broker (until `deadline`) and files it; false when the
    /// deadline passed first.
    fn pump(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        match self.io(|c| c.read(deadline))? {
            Some(incoming) => {
                self.dispatch(incoming)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Files what the broker sent: confirms, returns, deliveries, replies.
    fn dispatch(&mut self, incoming: Incoming) -> Result<(), Error> {
        match incoming {
            Incoming::Method(
                _,
                Method::BasicAck {
                    delivery_tag,
                    multiple,
                },
            ) => {
                self.confirmed(delivery_tag, multiple, false);
            }
            Incoming::Method(
                _,
                Method::BasicNack {
                    delivery_tag,
                    multiple,
                    ..
                },
            ) => {
                self.confirmed(delivery_tag, multiple, true);
            }
            Incoming::Method(_, Method::BasicCancel { consumer_tag, .. }) => {
                let text = format!(
                    "the broker cancelled consumer `{consumer_tag}` (its queue was deleted?)"
                );
                self.drop_conn();
                return Err(Error::connection(text));
            }
            Incoming::Method(..) | Incoming::Heartbeat => {}
            Incoming::Content(_, content) => self.content(content),
        }
        Ok(())
    }

    /// Removes the publishes a confirm (`basic.ack`, or with `refused` `basic.nack`)
    /// covers; a refusal is filed under [`Amqp::refused`] with the routing keys. The
    /// sequence numbers are in ascending order, so a window of thousands is not scanned
    /// once per confirm.
    fn confirmed(&mut self, tag: u64, multiple: bool, refused: bool) {
        let at = self.unconfirmed.partition_point(|&(seq, _)| seq < tag);
        let found = self.unconfirmed.get(at).is_some_and(|&(seq, _)| seq == tag);
        let range = match (multiple, found) {
            (true, _) => 0..at + usize::from(found),
            (false, true) => at..at + 1,
            (false, false) => return,
        };
        if !refused {
            self.unconfirmed.drain(range);
            return;
        }
        let keys: Vec<String> = self.unconfirmed.drain(range).map(|(_, key)| key).collect();
        for routing_key in keys {
            self.refuse(format!(
                "the broker refused a message sent to `{routing_key}` (basic.nack: a full queue that rejects publishes, or an internal error)"
            ));
        }
    }

    /// Files why a published message was refused, once (a window of sends to one topic
    /// may be refused message by message); always while a request waits, which looks for
    /// a new refusal.
    fn refuse(&mut self, why: String) {
        if self.request.is_some() || !self.refused.contains(&why) {
            self.refused.push(why);
        }
    }

    /// Files a delivered or returned message.
    fn content(&mut self, content: Content) {
        let Content {
            method,
            properties,
            body,
        } = content;
        match method {
            Method::BasicReturn {
                reply_code,
                reply_text,
                exchange,
                routing_key,
            } => self.refuse(format!(
                "no queue is bound for `{routing_key}` on exchange `{exchange}`, so the broker returned the message ({reply_text}, {reply_code})"
            )),
            Method::BasicDeliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                routing_key,
                ..
            } => {
                if consumer_tag == REPLY_TAG {
                    let Some((id, replies)) = &mut self.request else {
                        return; // a late reply to a finished request
                    };
                    if properties.correlation_id.as_deref() == Some(id.as_str()) {
                        replies.push(message::received(routing_key, properties, body, false));
                    }
                    return;
                }
                let message = message::received(routing_key, properties, body, redelivered);
                self.pending
                    .push_back(((self.epoch, delivery_tag), message));
            }
            _ => {}
        }
    }

    /// Sends `method` and waits for the answer `answer` accepts, filing what else comes.
    fn rpc(&mut self, method: Method, answer: fn(&Method) -> bool) -> Result<Method, Error> {
        self.io(|c| c.send(&method))?;
        let deadline = Instant::now() + RPC_TIMEOUT;
        loop {
            match self.io(|c| c.read(Some(deadline)))? {
                Some(Incoming::Method(_, got)) if answer(&got) => return Ok(got),
                Some(other) => self.dispatch(other)?,
                None => {
                    self.drop_conn();
                    return Err(Error::connection(format!(
                        "the broker did not answer method {} within {} s",
                        method.name(),
                        RPC_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    }

    /// Declares the queue and its bindings (unless consuming an existing queue), sets the
    /// prefetch and starts the consumer.
    fn declare_topology(&mut self) -> Result<(), Error> {
        let prefetch_count = self.config.prefetch;
        self.rpc(Method::BasicQos { prefetch_count }, |m| {
            matches!(m, Method::BasicQosOk)
        })?;
        let exchange = self.config.exchange.clone();
        let (queue, keys) = match self.config.source.clone() {
            Source::Existing(queue) => (queue, Vec::new()),
            Source::Own(keys) => (self.declare("", false)?, keys),
            Source::Group(group, keys) => (self.declare(&group, true)?, keys),
        };
        for key in &keys {
            self.rpc(
                Method::QueueBind {
                    queue: queue.clone(),
                    exchange: exchange.clone(),
                    routing_key: key.clone(),
                },
                |m| matches!(m, Method::QueueBindOk),
            )?;
        }
        self.rpc(
            Method::BasicConsume {
                queue: queue.clone(),
                consumer_tag: CONSUMER_TAG.into(),
                no_ack: false,
                exclusive: false,
            },
            |m| matches!(m, Method::BasicConsumeOk { .. }),
        )?;
        self.topology_ready = true;
        if !self.announced {
            self.announced = true;
            match keys.is_empty() {
                true => log(Self::NAME, &format!("subscribed to queue `{queue}`")),
                false => {
                    for key in &keys {
                        log(
                            Self::NAME,
                            &format!(
                                "subscribed to `{key}` on exchange `{exchange}` (queue `{queue}`)"
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Declares a queue: `name` durable and shared, or (empty `name`) an exclusive,
    /// auto-delete one the broker names. Returns its name.
    fn declare(&mut self, name: &str, durable: bool) -> Result<String, Error> {
        match self.rpc(
            Method::QueueDeclare {
                queue: name.to_string(),
                passive: false,
                durable,
                exclusive: !durable,
                auto_delete: !durable,
            },
            |m| matches!(m, Method::QueueDeclareOk { .. }),
        )? {
            Method::QueueDeclareOk { queue, .. } => Ok(queue),
            _ => unreachable!("rpc returns what the filter accepts"),
        }
    }

    /// Queues a publish (mandatory unless it is a reply), waiting while the broker blocks
    /// publishers.
    fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        message: &MessageData,
        correlation_id: Option<&str>,
        reply_to: Option<&str>,
    ) -> Result<(), Error> {
        let properties =
            message::properties(message, correlation_id, reply_to).map_err(Error::Other)?;
        self.ensure_connected()?;
        self.wait_unblocked()?;
        let mandatory = !exchange.is_empty();
        self.io(|c| c.publish(exchange, routing_key, mandatory, &properties, &message.data))?;
        self.unconfirmed
            .push_back((self.next_seq, routing_key.to_string()));
        self.next_seq += 1;
        Ok(())
    }

    /// Waits while the broker blocks publishers, at most [`BLOCKED_TIMEOUT`].
    fn wait_unblocked(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + BLOCKED_TIMEOUT;
        loop {
            let Some(reason) = self.conn.as_ref().and_then(|c| c.blocked.clone()) else {
                return Ok(());
            };
            if !self.pump(Some(deadline))? && Instant::now() >= deadline {
                return Err(Error::connection(format!(
                    "the broker has blocked publishers ({reason}) for more than {} s",
                    BLOCKED_TIMEOUT.as_secs()
                )));
            }
        }
    }

    /// Publishes `message` to `exchange` with `routing_key`: pipelined inside a handler;
    /// outside one confirmed before it returns, or, with the run wrapper, when its window
    /// is full or old (the publisher confirms of the whole window).
    fn send_to(
        &mut self,
        exchange: &str,
        routing_key: &str,
        message: &MessageData,
        correlation_id: Option<&str>,
    ) -> Result<(), Error> {
        self.publish(exchange, routing_key, message, correlation_id, None)?;
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
        self.io(Conn::heartbeat_if_due)
    }

    /// Starts the direct reply-to consumer on this connection if it is not there yet.
    fn ensure_reply_consumer(&mut self) -> Result<(), Error> {
        if !self.reply_consumer {
            self.rpc(
                Method::BasicConsume {
                    queue: DIRECT_REPLY_TO.into(),
                    consumer_tag: REPLY_TAG.into(),
                    no_ack: true,
                    exclusive: false,
                },
                |m| matches!(m, Method::BasicConsumeOk { .. }),
            )?;
            self.reply_consumer = true;
        }
        Ok(())
    }

    /// Publishes a request and collects its replies until enough came or the deadline
    /// passed.
    fn exchange_request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<(), Error> {
        self.ensure_connected()?;
        self.ensure_reply_consumer()?;
        let id = common::random_id();
        let exchange = self.config.exchange.clone();
        let refused_before = self.refused.len();
        self.publish(&exchange, topic, message, Some(&id), Some(DIRECT_REPLY_TO))?;
        self.request = Some((id, Vec::new()));
        let deadline = options
            .timeout_ms
            .map(|ms| Instant::now() + Duration::from_millis(u64::from(ms)));
        let wanted = match (options.expected_replies, options.timeout_ms) {
            (Some(n), _) => n as usize,
            (None, None) => 1,
            (None, Some(_)) => usize::MAX,
        };
        loop {
            let got = self.request.as_ref().map_or(0, |(_, r)| r.len());
            if got >= wanted {
                return Ok(());
            }
            if self.refused.len() > refused_before {
                let why = self.refused.split_off(refused_before).join("; ");
                return Err(Error::other(format!("no responders on `{topic}`: {why}")));
            }
            if !self.pump(deadline)? {
                return match got {
                    0 => Err(Error::Timeout),
                    _ => Ok(()),
                };
            }
        }
    }
}

impl Backend for Amqp {
    const NAME: &'static str = "amqp";

    fn open(settings: Settings) -> Result<Self, Error> {
        let config = Config::from_settings(&settings, |name| std::env::var(name).ok())?;
        let name = settings
            .options
            .get("connection_name")
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| "msgplug".to_string());
        let mut amqp = Self {
            config,
            name,
            conn: None,
            epoch: 0,
            consuming: false,
            topology_ready: false,
            announced: false,
            reply_consumer: false,
            pending: VecDeque::new(),
            deliveries: Deliveries::new(),
            in_handler: false,
            next_seq: 1,
            unconfirmed: VecDeque::new(),
            lost: 0,
            refused: Vec::new(),
            request: None,
            heartbeat: None,
            handed_out: Instant::now(),
            window: ConfirmWindow::from_settings(&settings)?.map(Window::new),
        };
        amqp.establish()?;
        Ok(amqp)
    }

    /// Publishes to the exchange with the topic as routing key, persistent and mandatory:
    /// outside a handler it returns once the broker confirmed it (a `basic.nack` or a
    /// `basic.return` is an error); inside one the driver's `flush` waits for that.
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        let exchange = self.config.exchange.clone();
        self.send_to(&exchange, topic, message, None)
    }

    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        let outcome = self.exchange_request(topic, message, options);
        let replies = self.request.take().map(|(_, r)| r).unwrap_or_default();
        outcome.map(|()| replies)
    }

    /// Publishes to the requester's `reply-to` queue through the default exchange, with
    /// the request's correlation id.
    fn reply(&mut self, reply_to: &str, reply: &MessageData) -> Result<(), Error> {
        let (queue, correlation_id) = message::parse_reply_address(reply_to);
        self.send_to("", queue, reply, correlation_id)
    }

    /// Waits for the next delivery. A lost connection is retried here, forever, with
    /// capped exponential backoff; the topology is declared again on the new connection.
    fn next(&mut self) -> Result<Event, Error> {
        self.consuming = true;
        let mut backoff = RECONNECT;
        loop {
            if let Some((tag, message)) = self.pending.pop_front() {
                // The handler's first call-out may be a heartbeat interval away. A failed
                // write drops the connection with this delivery: the broker delivers it again.
                if self.conn.is_some() && self.io(Conn::heartbeat_if_due).is_err() {
                    continue;
                }
                self.in_handler = true;
                self.handed_out = Instant::now();
                self.lost = 0;
                return Ok(Event::Delivery(self.deliveries.deliver(tag), message));
            }
            let connected = self.conn.is_some();
            let step = match (connected, self.topology_ready) {
                (false, _) => self.establish(),
                (true, false) => self.declare_topology(),
                (true, true) => self.pump(None).map(drop),
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
        self.settle(id, |delivery_tag| Method::BasicAck {
            delivery_tag,
            multiple: false,
        })
    }

    fn nack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.settle(id, |delivery_tag| Method::BasicNack {
            delivery_tag,
            multiple: false,
            requeue: true,
        })
    }

    /// Waits until the broker confirmed every publish so far (see [`Amqp::confirm`]); with
    /// the run wrapper, also fails if an earlier window's confirmation failed.
    fn flush(&mut self) -> Result<(), Error> {
        self.in_handler = false;
        let confirmed = self.confirm();
        Window::flushed(self.window.as_mut(), confirmed)
    }
}

impl Amqp {
    /// Waits until the broker confirmed every publish so far. Fails if it refused some
    /// (`basic.nack`, or `basic.return` of a mandatory message without a queue), or a
    /// connection was lost before it confirmed them.
    fn confirm(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        let mut outcome = Ok(());
        while !self.unconfirmed.is_empty() && self.conn.is_some() {
            match self.pump(Some(deadline)) {
                Ok(true) => {}
                Ok(false) => {
                    // A broker that blocked the connection after reading a publish never
                    // confirms it while the block lasts: say so rather than a bare timeout.
                    outcome = Err(match self.conn.as_ref().and_then(|c| c.blocked.clone()) {
                        Some(reason) => Error::connection(format!(
                            "the broker has blocked publishers ({reason}); {} sent message(s) \
                             not confirmed within {} s",
                            self.unconfirmed.len(),
                            CONFIRM_TIMEOUT.as_secs()
                        )),
                        None => Error::Timeout,
                    });
                    break;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.unconfirmed.clear();
        let lost = std::mem::take(&mut self.lost);
        let refused = std::mem::take(&mut self.refused);
        outcome?;
        if lost > 0 {
            return Err(Error::connection(format!(
                "the connection to {} was lost before the broker confirmed {lost} sent message(s)",
                self.config.url
            )));
        }
        match refused.is_empty() {
            true => Ok(()),
            false => Err(Error::Other(refused.join("; "))),
        }
    }
}

impl Amqp {
    /// Queues the ack or nack `method` makes for a delivery on its connection; it goes
    /// out with the next write. A delivery from a lost connection is not settled (the
    /// broker delivers it again); that is logged, not an error.
    fn settle(&mut self, id: DeliveryId, method: fn(u64) -> Method) -> Result<(), Error> {
        self.in_handler = false;
        let (epoch, tag) = self.deliveries.settle(id)?;
        match &mut self.conn {
            Some(conn) if epoch == self.epoch => conn.send(&method(tag)),
            _ => {
                let ran = self.handed_out.elapsed();
                let why = match self.heartbeat {
                    Some(interval) if ran > 2 * interval => format!(
                        ": RabbitMQ closes a connection that sent nothing for two heartbeat intervals ({} s), and the adapter can send heartbeats only when the handler calls into it; have the handler send more often (each send heartbeats when one is due) or raise the broker's `heartbeat`",
                        2 * interval.as_secs()
                    ),
                    _ => String::new(),
                };
                log(
                    Self::NAME,
                    &format!(
                        "delivery {id} came on a connection that was lost while its handler ran ({} s); the broker delivers it again (perhaps to another instance), so it may be handled twice{why}",
                        common::Seconds(ran)
                    ),
                );
                Ok(())
            }
        }
    }
}
