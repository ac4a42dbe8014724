//! AMQP 0-9-1: the machine's RabbitMQ (127.0.0.1:5672, user `guest`), checked with lapin, an
//! independent native client.
//!
//! The broker is shared, so each case gets a topic exchange of its own (`--option
//! exchange=...`, deleted when the case ends): the cases' fixed topics (`in`, `greet`, ...)
//! do not meet across cases running at the same time. What the apps send is observed
//! through an exclusive queue bound to the topic. A durable input is a shared durable queue
//! (`--queue-group`). The broker is not stopped or restarted: that would disturb every
//! other test using it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use msgplug::adapters::Mode;
use tokio::runtime::Runtime;

use crate::support::rabbitmq::{bind, native, publish, GUEST};
use crate::support::unique;
use crate::{Backend, Broker, Credentials, Input, Msg};

/// The AMQP backend.
pub struct Amqp;

impl Backend for Amqp {
    fn adapter(&self) -> &'static str {
        "backend-amqp"
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
        let exchange = unique("conformance");
        let (connection, channel) = runtime.block_on(async {
            let (connection, channel) = native().await;
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("declare the case's exchange");
            (connection, channel)
        });
        Box::new(AmqpBroker {
            exchange,
            group_mode,
            groups: Vec::new(),
            outputs: HashMap::new(),
            channel,
            _connection: connection,
            runtime,
        })
    }
}

/// The case's exchange and queues on the shared broker; the runtime is dropped last.
struct AmqpBroker {
    exchange: String,
    /// Whether the case runs the `group` mode: a receiving app without a group of its own
    /// gets one (a durable queue shared by name).
    group_mode: bool,
    /// Durable group queues made for the case, deleted at the end.
    groups: Vec<String>,
    outputs: HashMap<String, Consumer>,
    channel: Channel,
    _connection: Connection,
    runtime: Runtime,
}

impl Drop for AmqpBroker {
    fn drop(&mut self) {
        let (channel, exchange, groups) = (
            self.channel.clone(),
            self.exchange.clone(),
            self.groups.clone(),
        );
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
        let mut args = vec![
            "--broker".to_string(),
            "amqp://127.0.0.1:5672".to_string(),
            "--option".to_string(),
            format!("exchange={}", self.exchange),
        ];
        if let Some(input) = input {
            args.extend(["--subscribe".into(), input.topic.into()]);
            let group = match (input.group, self.group_mode) {
                (Some(group), _) => Some(format!("{}_{group}", self.exchange)),
                (None, true) => Some(format!("{}_durable", self.exchange)),
                (None, false) => None,
            };
            if let Some(group) = group {
                self.groups.push(group.clone());
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
        let (channel, exchange) = (self.channel.clone(), self.exchange.clone());
        let consumer = self
            .runtime
            .block_on(async move { bind(&channel, &exchange, topic).await });
        self.outputs.insert(topic.to_string(), consumer);
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        let (channel, exchange) = (self.channel.clone(), self.exchange.clone());
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
        let (channel, exchange) = (self.channel.clone(), self.exchange.clone());
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

    fn can_stop(&self) -> Result<(), &'static str> {
        Err("the machine's RabbitMQ is shared by every test running; stopping it would disturb them (tests/amqp.rs closes its own connection instead)")
    }

    fn stop(&mut self) {
        unreachable!("can_stop says no")
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        self.can_stop()
    }

    fn restart(&mut self) {
        unreachable!("can_restart says no")
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Ok(())
    }
}
