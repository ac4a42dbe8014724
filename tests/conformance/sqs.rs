//! AWS SQS: a moto server of the case's own on a free port (`support::moto`), reached by
//! the composed apps over `wasmtime run -S http` and checked with the test's own SQS
//! JSON-protocol client. The topic `a.b` is the queue `a-b`, as the backend maps it; an
//! input is the queue named in the broker URL. Moto keeps queues in memory and checks no
//! signatures, so a restart and wrong credentials cannot be tested here (the signer is
//! checked against botocore in `tests/sqs.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::support::moto::{Moto, REGION};
use msgplug::adapters::Mode;

use crate::{Backend, Broker, Credentials, Input, Msg, LIMIT};

/// The SQS backend.
pub struct Sqs;

impl Backend for Sqs {
    fn adapter(&self) -> &'static str {
        "backend-sqs"
    }

    fn start(&self, _mode: &Mode) -> Box<dyn Broker> {
        Box::new(MotoBroker {
            moto: Arc::new(Moto::start()),
            queues: HashMap::new(),
            received: HashMap::new(),
            attributes: json!({}),
        })
    }
}

struct MotoBroker {
    moto: Arc<Moto>,
    /// Queue URLs by topic.
    queues: HashMap<String, String>,
    /// Messages received while looking for others, by topic.
    received: HashMap<String, VecDeque<Msg>>,
    /// The attributes of the queues created from now on.
    attributes: Value,
}

/// The queue name of `topic`.
fn queue_name(topic: &str) -> String {
    topic.replace('.', "-")
}

/// The message an SQS message holds, decoded as the backend encodes it.
fn msg(message: &Value) -> Msg {
    let mut attributes: BTreeMap<String, String> = message["MessageAttributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v["StringValue"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let body = message["Body"].as_str().expect("a body");
    let data = match attributes.remove("content-transfer-encoding").as_deref() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("a base64 body"),
        _ => body.as_bytes().to_vec(),
    };
    Msg {
        data,
        content_type: attributes.remove("content-type"),
        metadata: attributes,
    }
}

/// `SendMessage` input for `message` to the queue at `url`.
fn send_input(url: &str, message: &Msg) -> Value {
    let mut attributes = message.metadata.clone();
    let body = match std::str::from_utf8(&message.data) {
        Ok(text) => text.to_string(),
        Err(_) => {
            attributes.insert("content-transfer-encoding".into(), "base64".into());
            base64::engine::general_purpose::STANDARD.encode(&message.data)
        }
    };
    if let Some(content_type) = &message.content_type {
        attributes.insert("content-type".into(), content_type.clone());
    }
    let mut input = json!({"QueueUrl": url, "MessageBody": body});
    if !attributes.is_empty() {
        input["MessageAttributes"] = attributes
            .into_iter()
            .map(|(k, v)| (k, json!({"DataType": "String", "StringValue": v})))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    input
}

impl MotoBroker {
    /// The URL of the queue for `topic`, created on first use.
    fn queue(&mut self, topic: &str) -> String {
        let moto = &self.moto;
        self.queues
            .entry(topic.to_string())
            .or_insert_with(|| moto.create_queue(&queue_name(topic), self.attributes.clone()))
            .clone()
    }
}

impl Broker for MotoBroker {
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String> {
        let url = match input {
            Some(input) => {
                self.queue(input.topic);
                format!("sqs://{REGION}/{}", queue_name(input.topic))
            }
            None => format!("sqs://{REGION}"),
        };
        vec!["--broker".into(), url]
    }

    fn wasmtime_args(&mut self, _receiving: bool) -> Vec<String> {
        vec!["run".into(), "-S".into(), "http".into()]
    }

    fn run_env(&self, _: Credentials) -> Vec<(String, String)> {
        self.moto
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ready_line(&self) -> Option<&'static str> {
        // Messages wait in the queue until the app polls: nothing to wait for.
        None
    }

    fn listen(&mut self, topic: &str) {
        self.queue(topic);
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        let url = self.queue(topic);
        self.moto.call("SendMessage", send_input(&url, message));
    }

    fn publish_all(&mut self, topic: &str, messages: &[Msg]) {
        let url = self.queue(topic);
        for batch in messages.chunks(10) {
            let entries: Vec<Value> = batch
                .iter()
                .enumerate()
                .map(|(i, message)| {
                    let mut entry = send_input(&url, message);
                    entry["Id"] = i.to_string().into();
                    entry.as_object_mut().expect("an object").remove("QueueUrl");
                    entry
                })
                .collect();
            let sent = self.moto.call(
                "SendMessageBatch",
                json!({"QueueUrl": url, "Entries": entries}),
            );
            assert_eq!(sent["Failed"].as_array().map_or(0, Vec::len), 0, "{sent}");
        }
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        let url = self.queue(topic);
        let deadline = Instant::now() + limit;
        let pending = self.received.entry(topic.to_string()).or_default();
        while pending.is_empty() && Instant::now() < deadline {
            pending.extend(self.moto.receive(&url).iter().map(msg));
        }
        pending.pop_front()
    }

    fn respond(&mut self, topic: &str, replies: usize) {
        let url = self.queue(topic);
        if replies == 0 {
            return;
        }
        let moto = self.moto.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + LIMIT;
            while Instant::now() < deadline {
                let Some(request) = moto.receive(&url).into_iter().next() else {
                    continue;
                };
                let reply_to = request["MessageAttributes"]["reply-to"]["StringValue"]
                    .as_str()
                    .expect("a request has `reply-to`")
                    .to_string();
                let data = msg(&request).text();
                for k in 1..=replies {
                    let reply = Msg::data(format!("hi, {data} ({k}/{replies})"));
                    moto.call("SendMessage", send_input(&reply_to, &reply));
                }
                return;
            }
        });
    }

    fn can_stop(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn stop(&mut self) {
        self.moto.stop();
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        Err("moto keeps its queues in memory: a restart would lose them (a test of moto, not of the backend)")
    }

    fn restart(&mut self) {
        unreachable!("can_restart says no")
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Err("moto checks no credentials (the SigV4 signer is checked against botocore in tests/sqs.rs)")
    }

    fn take_over_unsettled(&mut self) {
        self.attributes = json!({"VisibilityTimeout": "5"});
    }
}
