//! AMQP 0-9-1: the machine's RabbitMQ (127.0.0.1:5672, user `guest`), checked with lapin, an
//! independent native client.
//!
//! The broker is shared, so each case gets a topic exchange of its own (`--option
//! exchange=...`, durable, deleted when the case ends): the cases' fixed topics (`in`,
//! `greet`, ...) do not meet across cases running at the same time. What the apps send is
//! observed through a durable queue of the case's bound to the topic. A durable input is a
//! shared durable queue (`--queue-group`).
//!
//! The shared broker is never stopped: that would disturb every other test using it. A case
//! that stops or restarts the broker asks [`Broker::can_stop`] before anything else, and that
//! is where it gets a RabbitMQ node of its own ([`Node`], a few seconds to start); every other
//! case stays on the shared broker, which it starts using at its first call.
//!
//! The TLS variant (`backend-amqp-tls`) runs every case again with the apps composed with
//! `amqps://` and `--tls-ca` (certificates made by `support::tls`); the native client stays
//! on the plaintext port of the same node. The machine's broker has no TLS listener, so the
//! variant's "shared broker" is one node with a TLS listener ([`Node::start_tls`]) that the
//! first case starts and every case shares (exchanges of their own keep them apart, as on
//! the machine's broker); [`stop_shared_tls_node`] stops it after the last case. A case that
//! stops the broker gets a TLS node of its own.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use msgplug::adapters::Mode;
use tokio::runtime::Runtime;

use crate::support::rabbitmq::{bind, bind_durable, native_at, publish, Node, GUEST, SHARED};
use crate::support::tls::Pki;
use crate::support::unique;
use crate::{Backend, Broker, Credentials, Input, Msg};

/// The AMQP backend: plaintext (`backend-amqp`) or over TLS (`backend-amqp-tls`).
pub struct Amqp {
    /// Whether the apps use `amqps://` to a node's TLS listener.
    pub tls: bool,
}

/// The node the TLS variant's cases share, with its certificates; started by the first
/// case that needs it.
static SHARED_TLS: Mutex<Option<(Node, Pki)>> = Mutex::new(None);

/// Stops the node the TLS variant's cases shared, if one was started: call it once every
/// case has ended.
pub fn stop_shared_tls_node() {
    let shared = SHARED_TLS.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(shared);
}

/// Where a case's apps and native client reach the broker it runs on.
struct Place {
    /// lapin's URL (plaintext, with credentials).
    native_url: String,
    /// The apps' `--broker` URL.
    app_url: String,
    /// The `--tls-ca` file, in the TLS variant.
    tls_ca: Option<String>,
}

impl Place {
    /// The plaintext `node`, or (`tls_ca` given) its TLS listener.
    fn of(node: &Node, tls_ca: Option<&Pki>) -> Place {
        Place {
            native_url: node.native_url(),
            app_url: match tls_ca {
                Some(_) => node.tls_url("127.0.0.1"),
                None => node.url(),
            },
            tls_ca: tls_ca.map(|pki| pki.ca.to_str().expect("UTF-8 path").to_string()),
        }
    }
}

impl Backend for Amqp {
    fn adapter(&self) -> &'static str {
        match self.tls {
            false => "backend-amqp",
            true => "backend-amqp-tls",
        }
    }

    fn start(&self, mode: &Mode) -> Box<dyn Broker> {
        let group_mode = match mode.name {
            "own-queue" => false,
            "group" => true,
            other => panic!("no conformance hook for AMQP mode `{other}`"),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Box::new(AmqpBroker {
            exchange: unique("conformance"),
            tls: self.tls,
            group_mode,
            queues: Vec::new(),
            outputs: HashMap::new(),
            on: OnceCell::new(),
            runtime,
        })
    }
}

/// The case's exchange and queues, on the shared broker or a node of the case's own; the
/// runtime is dropped last.
struct AmqpBroker {
    exchange: String,
    /// Whether the apps use TLS (the TLS variant).
    tls: bool,
    /// Whether the case runs the `group` mode: a receiving app without a group of its own
    /// gets one (a durable queue shared by name).
    group_mode: bool,
    /// Durable queues made for the case (groups, outputs), deleted at the end.
    queues: Vec<String>,
    /// The consumer of each listened topic's durable queue.
    outputs: HashMap<String, Consumer>,
    /// The broker the case runs on, chosen at its first use.
    on: OnceCell<On>,
    runtime: Runtime,
}

/// A broker in use: the case's own node (`None`: the shared broker) with its certificates
/// in the TLS variant, where the apps reach it, and the native client's connection to it.
struct On {
    node: Option<(Node, Option<Pki>)>,
    place: Place,
    channel: Channel,
    _connection: Connection,
}

impl AmqpBroker {
    /// The broker the case runs on; the shared one unless [`Broker::can_stop`] chose a node
    /// of the case's own first.
    fn on(&self) -> &On {
        self.on.get_or_init(|| self.connect(None))
    }

    /// Where the shared broker is: the machine's, or in the TLS variant the shared TLS node
    /// (started here if no case has yet).
    fn shared_place(&self) -> Place {
        if !self.tls {
            return Place {
                native_url: SHARED.to_string(),
                app_url: "amqp://127.0.0.1:5672".to_string(),
                tls_ca: None,
            };
        }
        let mut shared = SHARED_TLS.lock().unwrap_or_else(|e| e.into_inner());
        let (node, pki) = shared.get_or_insert_with(|| {
            let pki = Pki::new();
            (Node::start_tls(&pki, false), pki)
        });
        Place::of(node, Some(pki))
    }

    /// A node of the case's own (with a TLS listener in the TLS variant), started here.
    fn own_node(&self) -> (Node, Option<Pki>) {
        match self.tls {
            false => (Node::start(), None),
            true => {
                let pki = Pki::new();
                (Node::start_tls(&pki, false), Some(pki))
            }
        }
    }

    /// Connects the native client to `node` (`None`: the shared broker) and declares the
    /// case's exchange there, durable so that a restart keeps it and its bindings.
    fn connect(&self, node: Option<(Node, Option<Pki>)>) -> On {
        let place = match &node {
            Some((node, pki)) => Place::of(node, pki.as_ref()),
            None => self.shared_place(),
        };
        let (connection, channel) = self.runtime.block_on(async {
            let (connection, channel) = native_at(&place.native_url).await;
            channel
                .exchange_declare(
                    self.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare the case's exchange");
            (connection, channel)
        });
        On {
            node,
            place,
            channel,
            _connection: connection,
        }
    }

    /// The durable queue that keeps what is sent to `topic` for [`Broker::next`].
    fn output_queue(&self, topic: &str) -> String {
        format!("{}.{topic}", self.exchange)
    }

    /// Consumes the durable queue of `topic`, declared and bound if missing.
    fn consume(&self, topic: &str) -> Consumer {
        let (channel, exchange) = (self.on().channel.clone(), self.exchange.clone());
        let queue = self.output_queue(topic);
        self.runtime
            .block_on(async move { bind_durable(&channel, &queue, &exchange, topic).await })
    }

    /// The case's own node.
    fn node(&mut self) -> &mut Node {
        self.on
            .get_mut()
            .and_then(|on| on.node.as_mut())
            .map(|(node, _)| node)
            .expect("can_stop chose a node of the case's own")
    }
}

impl Drop for AmqpBroker {
    fn drop(&mut self) {
        let Some(On {
            node: None,
            channel,
            ..
        }) = self.on.get()
        else {
            return; // unused, or a node of the case's own, which goes with everything on it
        };
        let (channel, exchange, groups) =
            (channel.clone(), self.exchange.clone(), self.queues.clone());
        self.runtime.block_on(async move {
            for group in groups {
                let _ = channel
                    .queue_delete(group.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        });
    }
}

/// A native message as the suite sees it: the `content-type` property and the string
/// headers.
fn msg(delivery: &lapin::message::Delivery) -> Msg {
    let mut metadata = BTreeMap::new();
    if let Some(headers) = delivery.properties.headers() {
        for (key, value) in headers.inner() {
            if let AMQPValue::LongString(text) = value {
                metadata.insert(key.to_string(), text.to_string());
            }
        }
    }
    Msg {
        data: delivery.data.clone(),
        content_type: delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.to_string()),
        metadata,
    }
}

/// The properties of a native message.
fn properties(message: &Msg) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (key, value) in &message.metadata {
        headers.insert(
            key.as_str().into(),
            AMQPValue::LongString(value.as_str().into()),
        );
    }
    let mut properties = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2);
    if let Some(content_type) = &message.content_type {
        properties = properties.with_content_type(content_type.as_str().into());
    }
    properties
}

impl Broker for AmqpBroker {
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String> {
        let place = &self.on().place;
        let mut args = vec![
            "--broker".to_string(),
            place.app_url.clone(),
            "--option".to_string(),
            format!("exchange={}", self.exchange),
        ];
        if let Some(ca) = &place.tls_ca {
            args.extend(["--tls-ca".to_string(), ca.clone()]);
        }
        if let Some(input) = input {
            args.extend(["--subscribe".into(), input.topic.into()]);
            let group = match (input.group, self.group_mode) {
                (Some(group), _) => Some(format!("{}_{group}", self.exchange)),
                (None, true) => Some(format!("{}_durable", self.exchange)),
                (None, false) => None,
            };
            if let Some(group) = group {
                self.queues.push(group.clone());
                args.extend(["--queue-group".into(), group]);
            }
        }
        args
    }

    fn wasmtime_args(&mut self, _receiving: bool) -> Vec<String> {
        vec!["run".into(), "-S".into(), "inherit-network".into()]
    }

    fn run_env(&self, credentials: Credentials) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = GUEST
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if credentials == Credentials::Wrong {
            env[1].1 = "wrong".into();
        }
        env
    }

    fn ready_line(&self) -> Option<&'static str> {
        Some("subscribed to")
    }

    fn listen(&mut self, topic: &str) {
        let consumer = self.consume(topic);
        self.queues.push(self.output_queue(topic));
        self.outputs.insert(topic.to_string(), consumer);
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        let (channel, exchange) = (self.on().channel.clone(), self.exchange.clone());
        let properties = properties(message);
        self.runtime.block_on(async move {
            publish(&channel, &exchange, topic, &message.data, properties).await;
        });
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        let consumer = self
            .outputs
            .get_mut(topic)
            .unwrap_or_else(|| panic!("listen to `{topic}` first"));
        self.runtime.block_on(async move {
            let delivery = tokio::time::timeout(limit, consumer.next())
                .await
                .ok()??
                .expect("a delivery");
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
            Some(msg(&delivery))
        })
    }

    fn respond(&mut self, topic: &str, replies: usize) {
        let (channel, exchange) = (self.on().channel.clone(), self.exchange.clone());
        let topic = topic.to_string();
        self.runtime.block_on(async move {
            let mut requests = bind(&channel, &exchange, &topic).await;
            tokio::spawn(async move {
                let Some(Ok(request)) = requests.next().await else {
                    return;
                };
                request.ack(BasicAckOptions::default()).await.ok();
                let reply_to = request.properties.reply_to().clone().expect("a reply-to");
                let correlation_id = request.properties.correlation_id().clone();
                let data = String::from_utf8_lossy(&request.data).into_owned();
                for k in 1..=replies {
                    let text = format!("hi, {data} ({k}/{replies})");
                    let mut properties = BasicProperties::default();
                    if let Some(id) = &correlation_id {
                        properties = properties.with_correlation_id(id.clone());
                    }
                    publish(&channel, "", reply_to.as_str(), text.as_bytes(), properties).await;
                }
                // Keep listening (without answering) until the case ends.
                while let Some(Ok(request)) = requests.next().await {
                    request.ack(BasicAckOptions::default()).await.ok();
                }
            });
        });
    }

    /// Yes, on a node of the case's own, started here unless the case already uses the
    /// shared broker.
    fn can_stop(&self) -> Result<(), &'static str> {
        let on = self.on.get_or_init(|| self.connect(Some(self.own_node())));
        match on.node {
            Some(_) => Ok(()),
            None => Err("the case used the shared broker (the machine's RabbitMQ, or the TLS variant's shared node) before asking; stopping it would disturb every other case"),
        }
    }

    fn stop(&mut self) {
        self.node().stop();
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        self.can_stop()
    }

    /// Starts the node again (same ports and data), connects the native client again and
    /// consumes the durable queues of the listened topics again.
    fn restart(&mut self) {
        let mut on = self.on.take().expect("a node of the case's own");
        let (node, _) = on.node.as_mut().expect("a node of the case's own");
        node.launch();
        self.on.get_or_init(|| self.connect(on.node.take()));
        let topics: Vec<String> = self.outputs.keys().cloned().collect();
        for topic in topics {
            let consumer = self.consume(&topic);
            self.outputs.insert(topic, consumer);
        }
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Ok(())
    }
}
