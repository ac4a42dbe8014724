//! Redis, in its three modes: `pubsub` (bare payloads), `envelope` (pub/sub with
//! `--option envelope=json`) and `streams` (`?mode=streams` with a consumer group). Every case
//! starts a `redis-server` of its own on a free port (password `p`, AOF with fsync always, so
//! a restart keeps every entry Redis accepted), checked with the sync `redis` crate, an
//! independent native client. The TLS variant (`backend-redis-tls`) runs every case again
//! with the server also serving TLS (certificates made by `support::tls`), the apps
//! composed with `rediss://` and `--tls-ca`; the native client stays on the plaintext port.
//!
//! Pub/sub: what the apps send is observed by a native subscriber (a thread of its own per
//! topic, live before [`Broker::listen`] returns); messages go out bare in `pubsub` and in
//! the JSON envelope in `envelope`, and an envelope received is unwrapped in both, as the
//! adapter does. Streams: inputs are `XADD`ed (fields `data`, `content-type`, `meta:KEY`),
//! outputs read with `XREAD` from the last entry seen, so nothing stored is missed across a
//! restart; the metadata the adapter adds on receipt (`redis-delivery-count`,
//! `redis-entry-id`, relayed as `meta:redis-*`) is the broker's own and left out, like NATS's
//! `Nats-*` headers.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use ::redis::{Connection, RedisResult, Value};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use msgplug::adapters::Mode;
use serde_json::{json, Map};

use crate::support::redis::{connect, Server};
use crate::support::tls::Pki;
use crate::{run_with_network, Backend, Broker, Credentials, Input, Msg, LIMIT};

/// The Redis backend: plaintext (`backend-redis`) or over TLS (`backend-redis-tls`).
pub struct Redis {
    /// Whether the apps use `rediss://` to the server's TLS port.
    pub tls: bool,
}

impl Backend for Redis {
    fn adapter(&self) -> &'static str {
        match self.tls {
            false => "backend-redis",
            true => "backend-redis-tls",
        }
    }

    fn start(&self, mode: &Mode) -> Box<dyn Broker> {
        let kind = match mode.name {
            "pubsub" => Kind::PubSub { envelope: false },
            "envelope" => Kind::PubSub { envelope: true },
            "streams" => Kind::Streams,
            other => panic!("no conformance hook for Redis mode `{other}`"),
        };
        let password = Credentials::Right.password();
        let pki = self.tls.then(Pki::new);
        let requirepass = ["--requirepass", password];
        let server = match &pki {
            None => Server::start(&requirepass),
            Some(pki) => Server::start_tls(pki, &pki.server, false, &requirepass),
        };
        let native = server
            .url()
            .replace("redis://", &format!("redis://:{password}@"));
        Box::new(RedisBroker {
            pki,
            con: connect(&native),
            server,
            native,
            kind,
            outputs: HashMap::new(),
        })
    }
}

/// How the apps of a case use Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Pub/sub, sending bare payloads or (`envelope`) the JSON envelope.
    PubSub { envelope: bool },
    /// Streams with a consumer group.
    Streams,
}

/// Where the test reads what the apps sent to one topic.
enum Output {
    /// A native subscriber's messages.
    Subscriber(Receiver<Msg>),
    /// A stream: the last entry id read, and entries read but not yet taken.
    Stream { last: String, read: VecDeque<Msg> },
}

/// The server and the native client.
struct RedisBroker {
    /// The certificates of the TLS variant.
    pki: Option<Pki>,
    server: Server,
    /// The native client's URL (with the password).
    native: String,
    con: Connection,
    kind: Kind,
    outputs: HashMap<String, Output>,
}

/// The JSON envelope of `message` (text data as `data`, other data as `data_base64`).
fn envelope(message: &Msg) -> Vec<u8> {
    let mut object = Map::new();
    object.insert("msgplug".into(), json!(1));
    match std::str::from_utf8(&message.data) {
        Ok(text) => object.insert("data".into(), json!(text)),
        Err(_) => object.insert("data_base64".into(), json!(STANDARD.encode(&message.data))),
    };
    if let Some(content_type) = &message.content_type {
        object.insert("content_type".into(), json!(content_type));
    }
    if !message.metadata.is_empty() {
        object.insert("metadata".into(), json!(message.metadata));
    }
    serde_json::to_vec(&object).expect("an envelope serialises")
}

/// A pub/sub payload as a message: the envelope unwrapped (with its `reply_to`), any other
/// payload as the data.
fn unwrap(payload: &[u8]) -> (Msg, Option<String>) {
    let parsed: Option<Map<String, serde_json::Value>> = serde_json::from_slice(payload).ok();
    let Some(object) = parsed.filter(|o| o.get("msgplug") == Some(&json!(1))) else {
        return (Msg::data(payload), None);
    };
    let text = |key: &str| object.get(key).and_then(|v| v.as_str()).map(String::from);
    let data = match (text("data"), text("data_base64")) {
        (Some(data), _) => data.into_bytes(),
        (None, Some(base64)) => STANDARD
            .decode(base64)
            .expect("valid base64 in the envelope"),
        (None, None) => panic!(
            "an envelope without data: {}",
            String::from_utf8_lossy(payload)
        ),
    };
    let metadata = object
        .get("metadata")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let message = Msg {
        data,
        content_type: text("content_type"),
        metadata,
    };
    (message, text("reply_to"))
}

/// The `XADD` fields of `message`.
fn fields(message: &Msg) -> Vec<(String, Vec<u8>)> {
    let mut fields = vec![("data".to_string(), message.data.clone())];
    if let Some(content_type) = &message.content_type {
        fields.push(("content-type".into(), content_type.clone().into_bytes()));
    }
    for (key, value) in &message.metadata {
        fields.push((format!("meta:{key}"), value.clone().into_bytes()));
    }
    fields
}

/// A stream entry's fields as a message (the adapter's `redis-*` metadata left out), with
/// its `reply-to`.
fn entry(flat: &[Vec<u8>]) -> (Msg, Option<String>) {
    let mut message = Msg::default();
    let mut reply_to = None;
    for pair in flat.chunks(2) {
        let name = String::from_utf8_lossy(&pair[0]);
        let text = || String::from_utf8_lossy(&pair[1]).into_owned();
        match name.as_ref() {
            "data" => message.data = pair[1].clone(),
            "content-type" => message.content_type = Some(text()),
            "reply-to" => reply_to = Some(text()),
            _ => {
                if let Some(key) = name.strip_prefix("meta:") {
                    if !key.starts_with("redis-") {
                        message.metadata.insert(key.to_string(), text());
                    }
                }
            }
        }
    }
    (message, reply_to)
}

/// What `XREAD` returns: per stream, its entries (id, flat fields); `None` when it timed out.
type XRead = Option<Vec<(String, Vec<(String, Vec<Vec<u8>>)>)>>;

/// Subscribes to `topic` on a connection of its own and hands every message to `each` in a
/// thread of its own, until `each` returns false or the connection ends; live when this
/// returns.
fn subscribe(
    url: &str,
    topic: &str,
    mut each: impl FnMut(Msg, Option<String>) -> bool + Send + 'static,
) {
    let mut con = connect(url);
    let topic = topic.to_string();
    let (live, is_live) = mpsc::channel();
    std::thread::spawn(move || {
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(&topic).expect("subscribe");
        live.send(()).expect("the case waits");
        while let Ok(message) = pubsub.get_message() {
            let (message, reply_to) = unwrap(message.get_payload_bytes());
            if !each(message, reply_to) {
                break;
            }
        }
    });
    is_live
        .recv_timeout(LIMIT)
        .expect("the subscription is live");
}

/// Answers one request with `replies` replies `hi, DATA (k/N)` on its reply key, as the
/// adapter's `reply` does (an envelope per reply, `RPUSH`ed).
fn answer(url: &str, request: &Msg, reply_to: Option<String>, replies: usize) {
    let reply_to = reply_to.expect("a request carries its reply key");
    let mut con = connect(url);
    for k in 1..=replies {
        let reply = Msg::data(format!("hi, {} ({k}/{replies})", request.text()));
        ::redis::cmd("RPUSH")
            .arg(&reply_to)
            .arg(envelope(&reply))
            .query::<()>(&mut con)
            .expect("RPUSH a reply");
    }
}

impl RedisBroker {
    /// After a failed command: waits a moment and connects again if the server is back.
    fn reconnect(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(con) = ::redis::Client::open(self.native.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        {
            self.con = con;
        }
    }

    /// Runs `command` on the native connection, reconnecting and trying again until it
    /// succeeds (the server may be restarting), within [`LIMIT`].
    fn retry<T>(
        &mut self,
        what: &str,
        mut command: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> T {
        let deadline = Instant::now() + LIMIT;
        loop {
            match command(&mut self.con) {
                Ok(value) => return value,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "{what} failed for {LIMIT:?}: {e}"
                    );
                    self.reconnect();
                }
            }
        }
    }
}

impl Broker for RedisBroker {
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String> {
        let (url, mut args) = match &self.pki {
            None => (self.server.url(), vec![]),
            Some(pki) => {
                let ca = pki.ca.to_str().expect("UTF-8 path").to_string();
                (self.server.tls_url(), vec!["--tls-ca".to_string(), ca])
            }
        };
        args.push("--broker".to_string());
        match self.kind {
            Kind::PubSub { envelope } => {
                args.push(url);
                if envelope {
                    args.extend(["--option".into(), "envelope=json".into()]);
                }
            }
            Kind::Streams => {
                args.push(format!("{url}?mode=streams"));
                // A failed entry, or one whose XACK a restart lost, comes again after 2 s.
                args.extend(["--option".into(), "claim_after_ms=2000".into()]);
            }
        }
        if let Some(input) = input {
            args.extend(["--subscribe".into(), input.topic.into()]);
            let group = match (self.kind, input.group) {
                (_, Some(group)) => Some(group),
                // Streams mode consumes with a consumer group only.
                (Kind::Streams, None) => Some("app"),
                (Kind::PubSub { .. }, None) => None,
            };
            if let Some(group) = group {
                args.extend(["--queue-group".into(), group.into()]);
            }
        }
        args
    }

    fn wasmtime_args(&mut self, _receiving: bool) -> Vec<String> {
        run_with_network()
    }

    fn run_env(&self, credentials: Credentials) -> Vec<(String, String)> {
        vec![("REDIS_PASSWORD".into(), credentials.password().into())]
    }

    fn ready_line(&self) -> Option<&'static str> {
        Some("subscribed to")
    }

    fn listen(&mut self, topic: &str) {
        let output = match self.kind {
            Kind::PubSub { .. } => {
                let (tx, rx) = mpsc::channel();
                subscribe(&self.native, topic, move |message, _| {
                    tx.send(message).is_ok()
                });
                Output::Subscriber(rx)
            }
            Kind::Streams => Output::Stream {
                last: "0-0".into(),
                read: VecDeque::new(),
            },
        };
        self.outputs.insert(topic.to_string(), output);
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        self.publish_all(topic, std::slice::from_ref(message));
    }

    fn publish_all(&mut self, topic: &str, messages: &[Msg]) {
        let mut pipe = ::redis::pipe();
        for message in messages {
            match self.kind {
                Kind::PubSub { envelope: false } => {
                    pipe.cmd("PUBLISH").arg(topic).arg(&message.data)
                }
                Kind::PubSub { envelope: true } => {
                    pipe.cmd("PUBLISH").arg(topic).arg(envelope(message))
                }
                Kind::Streams => pipe.cmd("XADD").arg(topic).arg("*").arg(fields(message)),
            };
        }
        // Until Redis accepted them all (it may be restarting; XADD is durable with AOF).
        self.retry("publishing", |con| pipe.query::<Vec<Value>>(con));
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        let deadline = Instant::now() + limit;
        loop {
            let output = self
                .outputs
                .get_mut(topic)
                .unwrap_or_else(|| panic!("listen to `{topic}` first"));
            let (last, read) = match output {
                Output::Subscriber(messages) => return messages.recv_timeout(limit).ok(),
                Output::Stream { last, read } => (last, read),
            };
            if let Some(message) = read.pop_front() {
                return Some(message);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let block = left.min(Duration::from_secs(1)).as_millis().max(1);
            let mut xread = ::redis::cmd("XREAD");
            xread.arg("COUNT").arg(500).arg("BLOCK").arg(block as u64);
            xread.arg("STREAMS").arg(topic).arg(last.as_str());
            let reply: XRead = match xread.query(&mut self.con) {
                Ok(reply) => reply,
                // The server is restarting: connect again (or wait and try again).
                Err(_) => {
                    self.reconnect();
                    continue;
                }
            };
            let Some(Output::Stream { last, read }) = self.outputs.get_mut(topic) else {
                unreachable!("a stream output, above");
            };
            for (id, flat) in reply.into_iter().flatten().flat_map(|(_, entries)| entries) {
                read.push_back(entry(&flat).0);
                *last = id;
            }
        }
    }

    fn respond(&mut self, topic: &str, replies: usize) {
        let url = self.native.clone();
        match self.kind {
            Kind::PubSub { .. } => {
                let mut answered = false;
                subscribe(&self.native, topic, move |request, reply_to| {
                    // Keep listening (without answering) after the first request.
                    if !answered && replies > 0 {
                        answer(&url, &request, reply_to, replies);
                    }
                    answered = true;
                    true
                });
            }
            // Nobody to listen for: a stream takes entries whether anyone reads them or not.
            Kind::Streams if replies == 0 => {}
            Kind::Streams => {
                let mut con = connect(&url);
                let topic = topic.to_string();
                // Reads from the stream's start, so it is live at once.
                std::thread::spawn(move || {
                    let mut xread = ::redis::cmd("XREAD");
                    xread
                        .arg("COUNT")
                        .arg(1)
                        .arg("BLOCK")
                        .arg(LIMIT.as_millis() as u64);
                    xread.arg("STREAMS").arg(&topic).arg("0-0");
                    let reply: XRead = xread.query(&mut con).expect("XREAD a request");
                    let entries = reply.into_iter().flatten().flat_map(|(_, entries)| entries);
                    if let Some((_, flat)) = entries.into_iter().next() {
                        let (request, reply_to) = entry(&flat);
                        answer(&url, &request, reply_to, replies);
                    }
                });
            }
        }
    }

    fn can_stop(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn stop(&mut self) {
        self.server.kill();
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn restart(&mut self) {
        self.server.launch();
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Ok(())
    }
}
