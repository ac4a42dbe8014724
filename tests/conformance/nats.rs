//! NATS: a `nats-server` of the case's own on a free port (JetStream in a temporary store,
//! user `u` / password `p`), checked with async-nats, an independent native client. The TLS
//! variant (`backend-nats-tls`) runs every case again with the server serving TLS only
//! (certificates made by `support::tls`), the apps composed with `tls://` and `--tls-ca`.
//!
//! What the apps send is observed through a JetStream stream capturing the topic (read with
//! an ordered consumer from the last message seen), so nothing the server stored is missed
//! across a restart. In the `jetstream` mode an input is a stream capturing the input topic,
//! consumed by the app with `--jetstream STREAM --durable NAME`; the native client publishes
//! to it with a publish ack.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap};
use futures_util::StreamExt;
use msgplug::adapters::Mode;
use tokio::runtime::Runtime;

use crate::support::nats::{connect_with, round_trip, within, Server};
use crate::support::tls::Pki;

use crate::{run_with_network, Backend, Broker, Credentials, Input, Msg};

/// The NATS backend: plaintext (`backend-nats`) or over TLS (`backend-nats-tls`).
pub struct Nats {
    /// Whether the server serves TLS only, and the apps use `tls://`.
    pub tls: bool,
}

impl Backend for Nats {
    fn adapter(&self) -> &'static str {
        match self.tls {
            false => "backend-nats",
            true => "backend-nats-tls",
        }
    }

    fn start(&self, mode: &Mode) -> Box<dyn Broker> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let pki = self.tls.then(Pki::new);
        let (server, client, js) = runtime.block_on(async {
            let mut args = vec!["--user", "u", "--pass", "p"];
            let config = pki.as_ref().map(|pki| pki.nats_config(&pki.server, false));
            if let Some(config) = &config {
                args.extend(["-c", config.to_str().expect("UTF-8 path")]);
            }
            let server = Server::start(&args).await;
            let mut options = async_nats::ConnectOptions::new()
                .user_and_password("u".into(), "p".into())
                .reconnect_delay_callback(|_| Duration::from_millis(100));
            if let Some(pki) = &pki {
                // Two rustls providers are compiled into the tests: pick one for async-nats.
                let _ = rustls::crypto::ring::default_provider().install_default();
                options = options
                    .require_tls(true)
                    .add_root_certificates(pki.ca.clone());
            }
            let client = connect_with(&server.url(), options).await;
            let js = jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(5))
                .build(client.clone());
            (server, client, js)
        });
        Box::new(NatsBroker {
            pki,
            server,
            client,
            js,
            jetstream: mode.name == "jetstream",
            streams: 0,
            durable_inputs: Vec::new(),
            outputs: HashMap::new(),
            runtime,
        })
    }
}

/// A stream the test reads what the apps sent from.
struct Output {
    stream: String,
    /// The last stream sequence read.
    seen: u64,
    messages: Option<consumer::pull::Ordered>,
}

/// The server and the native client; the runtime they run on is dropped last.
struct NatsBroker {
    /// The certificates of the TLS variant.
    pki: Option<Pki>,
    server: Server,
    client: Client,
    js: jetstream::Context,
    /// Apps receive through JetStream.
    jetstream: bool,
    streams: usize,
    durable_inputs: Vec<String>,
    outputs: HashMap<String, Output>,
    runtime: Runtime,
}

impl NatsBroker {
    /// Creates a stream capturing `subject` and returns its name.
    fn stream(&mut self, subject: &str) -> String {
        self.streams += 1;
        let name = format!("S{}", self.streams);
        let js = self.js.clone();
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![subject.to_string()],
            ..Default::default()
        };
        self.runtime.block_on(async move {
            within("stream creation", js.create_stream(config))
                .await
                .unwrap_or_else(|e| panic!("create stream for {subject}: {e}"));
        });
        name
    }
}

/// A native message as the suite sees it: `Content-Type` is the content type, other
/// headers (but the server's `Nats-*`) are the metadata.
fn msg(message: &async_nats::Message) -> Msg {
    let mut out = Msg::data(message.payload.to_vec());
    let mut metadata = BTreeMap::new();
    for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
        let name = name.to_string();
        let value = values
            .first()
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        if name.eq_ignore_ascii_case("content-type") {
            out.content_type = Some(value);
        } else if !name.starts_with("Nats-") {
            metadata.insert(name, value);
        }
    }
    out.metadata = metadata;
    out
}

fn headers(message: &Msg) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(content_type) = &message.content_type {
        headers.insert("Content-Type", content_type.as_str());
    }
    for (key, value) in &message.metadata {
        headers.insert(key.as_str(), value.as_str());
    }
    headers
}

impl Broker for NatsBroker {
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String> {
        let mut args = match &self.pki {
            None => vec!["--broker".to_string(), self.server.url()],
            Some(pki) => vec![
                "--broker".to_string(),
                format!("tls://127.0.0.1:{}", self.server.port),
                "--tls-ca".to_string(),
                pki.ca.to_str().expect("UTF-8 path").to_string(),
            ],
        };
        if let Some(input) = input {
            args.extend(["--subscribe".into(), input.topic.into()]);
            if let Some(group) = input.group {
                args.extend(["--queue-group".into(), group.into()]);
            }
            if self.jetstream {
                let stream = self.stream(input.topic);
                self.durable_inputs.push(input.topic.to_string());
                // A delivery in flight when the server goes down comes again after 3 s.
                args.extend([
                    "--jetstream".into(),
                    stream,
                    "--durable".into(),
                    "worker".into(),
                    "--option".into(),
                    "ack_wait_ms=3000".into(),
                ]);
            }
        }
        args
    }

    fn wasmtime_args(&mut self, _receiving: bool) -> Vec<String> {
        run_with_network()
    }

    fn run_env(&self, credentials: Credentials) -> Vec<(String, String)> {
        vec![
            ("NATS_USER".into(), "u".into()),
            ("NATS_PASSWORD".into(), credentials.password().into()),
        ]
    }

    fn ready_line(&self) -> Option<&'static str> {
        Some("subscribed to")
    }

    fn listen(&mut self, topic: &str) {
        let stream = self.stream(topic);
        self.outputs.insert(
            topic.to_string(),
            Output {
                stream,
                seen: 0,
                messages: None,
            },
        );
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        let (client, js) = (self.client.clone(), self.js.clone());
        let durable = self.durable_inputs.iter().any(|t| t == topic);
        let (topic, headers, payload) = (topic.to_string(), headers(message), message.data.clone());
        self.runtime.block_on(async move {
            if durable {
                // Until the server acknowledges it (it may be restarting).
                within("a publish ack", async {
                    loop {
                        let sent = js
                            .publish_with_headers(
                                topic.clone(),
                                headers.clone(),
                                payload.clone().into(),
                            )
                            .await;
                        if let Ok(ack) = sent {
                            if ack.await.is_ok() {
                                return;
                            }
                        }
                    }
                })
                .await;
            } else {
                client
                    .publish_with_headers(topic, headers, payload.into())
                    .await
                    .expect("publish");
                within("flush", client.flush()).await.expect("flush");
            }
        });
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        let js = self.js.clone();
        let output = self
            .outputs
            .get_mut(topic)
            .unwrap_or_else(|| panic!("listen to `{topic}` first"));
        self.runtime.block_on(async move {
            tokio::time::timeout(limit, async {
                loop {
                    if output.messages.is_none() {
                        // (Re)open the reader after the last message seen.
                        let Ok(stream) = js.get_stream(&output.stream).await else {
                            continue;
                        };
                        let config = consumer::pull::OrderedConfig {
                            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                                start_sequence: output.seen + 1,
                            },
                            ..Default::default()
                        };
                        let Ok(reader) = stream.create_consumer(config).await else {
                            continue;
                        };
                        let Ok(messages) = reader.messages().await else {
                            continue;
                        };
                        output.messages = Some(messages);
                    }
                    let messages = output.messages.as_mut().expect("opened above");
                    match messages.next().await {
                        Some(Ok(message)) => {
                            let sequence = message.info().map(|i| i.stream_sequence);
                            output.seen = sequence.expect("a stream message has info");
                            return msg(&message.message);
                        }
                        Some(Err(_)) | None => output.messages = None,
                    }
                }
            })
            .await
            .ok()
        })
    }

    fn respond(&mut self, topic: &str, replies: usize) {
        let client = self.client.clone();
        let topic = topic.to_string();
        self.runtime.block_on(async {
            let mut requests = client.subscribe(topic).await.expect("subscribe");
            round_trip(&client).await;
            let client = client.clone();
            tokio::spawn(async move {
                let Some(request) = requests.next().await else {
                    return;
                };
                let reply_to = request.reply.clone().expect("a reply subject");
                let data = String::from_utf8_lossy(&request.payload).into_owned();
                for k in 1..=replies {
                    let text = format!("hi, {data} ({k}/{replies})");
                    client.publish(reply_to.clone(), text.into()).await.ok();
                }
                client.flush().await.ok();
                // Keep listening (without answering) until the broker goes.
                while requests.next().await.is_some() {}
            });
        });
    }

    fn can_stop(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn stop(&mut self) {
        self.runtime.block_on(self.server.stop());
        for output in self.outputs.values_mut() {
            output.messages = None;
        }
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn restart(&mut self) {
        self.runtime.block_on(self.server.launch());
        let client = self.client.clone();
        // The native client is back (with its subscriptions) once a round trip passes.
        self.runtime
            .block_on(async move { round_trip(&client).await });
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Ok(())
    }
}
