//! Kafka: a tansu broker of each case's own (tests/support/kafka.rs), checked with rskafka,
//! an independent native client.
//!
//! The cases use fixed topic names (`in`, `greet`, ...), also in the apps' environment, so a
//! case cannot share a broker with the cases running beside it: each starts its own tansu
//! on a free port, with tansu's memory storage (which a restart forgets; the restart case
//! says why it does not apply, and tests/kafka.rs restarts a tansu storing in S3).
//!
//! Kafka consumes only in a consumer group, so every receiving app gets one (`--queue-group`
//! the case's group, or a group of its own), with `auto_offset_reset=earliest` (the broker is
//! fresh: earliest is everything the case publishes) and a short session timeout (tansu's
//! first join takes about half of it). Input topics get three partitions, so three group
//! members each have a share: [`Broker::publish`] writes to partition 0 (its order is kept),
//! [`Broker::publish_all`] round-robin over the three. Outputs and requests are read from
//! partition 0 of a one-partition topic made by [`Broker::listen`] / [`Broker::respond`].
//!
//! The TLS variant (`backend-kafka-tls`) runs every case again against a tansu behind a TLS
//! front (tansu 0.6 cannot serve TLS itself; see tests/support/kafka.rs) that advertises the
//! front, with certificates made by `support::tls`: the apps use `kafka+ssl://` and
//! `--tls-ca`, and the native client speaks TLS too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use msgplug::adapters::Mode;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::client::Client;
use rskafka::record::Record;
use tokio::runtime::Runtime;

use crate::support::kafka::{client, create_topic, partition, tls_client, Tansu};
use crate::support::tls::Pki;
use crate::support::unique;
use crate::{run_with_network, Backend, Broker, Credentials, Input, Msg};

/// Partitions of every input topic: one per member of the three-instance group case.
const INPUT_PARTITIONS: i32 = 3;

/// The Kafka backend: plaintext (`backend-kafka`) or over TLS (`backend-kafka-tls`).
pub struct Kafka {
    /// Whether the apps use `kafka+ssl://` to a broker reached only over TLS.
    pub tls: bool,
}

impl Backend for Kafka {
    fn adapter(&self) -> &'static str {
        match self.tls {
            false => "backend-kafka",
            true => "backend-kafka-tls",
        }
    }

    fn start(&self, _mode: &Mode) -> Box<dyn Broker> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let pki = self.tls.then(Pki::new);
        let (tansu, client) = runtime.block_on(async {
            match &pki {
                None => {
                    let tansu = Tansu::in_memory().await;
                    let client = Arc::new(client(&tansu.address()).await);
                    (tansu, client)
                }
                Some(pki) => {
                    let tansu = Tansu::behind_tls(&pki.server, None, "127.0.0.1", false).await;
                    let client = Arc::new(tls_client(&tansu.tls_address(), &pki.ca).await);
                    (tansu, client)
                }
            }
        });
        Box::new(KafkaBroker {
            pki,
            tansu,
            client,
            prefix: unique("conformance"),
            outputs: HashMap::new(),
            next_partition: 0,
            runtime,
        })
    }
}

/// A case's tansu and native client; the runtime is dropped last.
struct KafkaBroker {
    /// The certificates of the TLS variant.
    pki: Option<Pki>,
    tansu: Tansu,
    client: Arc<Client>,
    /// Names the case's consumer groups.
    prefix: String,
    /// Per listened topic: its partition 0, the next offset and records read ahead.
    outputs: HashMap<String, (PartitionClient, i64, VecDeque<Msg>)>,
    /// The partition of the next record of [`Broker::publish_all`].
    next_partition: i32,
    runtime: Runtime,
}

impl KafkaBroker {
    fn client(&self) -> Arc<Client> {
        self.client.clone()
    }

    /// Produces `records` to `topic`'s `part` (acks=all), uncompressed.
    fn produce(&self, topic: &str, part: i32, records: Vec<Record>) {
        let client = self.client();
        self.runtime.block_on(async move {
            let pc = partition(&client, topic, part).await;
            pc.produce(records, Compression::NoCompression)
                .await
                .unwrap_or_else(|e| panic!("produce to {topic}/{part}: {e}"));
        });
    }

    /// Creates `topic` with `partitions` partitions unless it exists.
    fn ensure_topic(&self, topic: &str, partitions: i32) {
        let client = self.client();
        self.runtime.block_on(async move {
            let topics = client.list_topics().await.expect("list topics");
            if !topics.iter().any(|t| t.name == topic) {
                create_topic(&client, topic, partitions).await;
            }
        });
    }
}

/// A native record of `message`: content type and metadata as headers.
fn record(message: &Msg) -> Record {
    let mut headers: BTreeMap<String, Vec<u8>> = message
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    if let Some(content_type) = &message.content_type {
        headers.insert("content-type".into(), content_type.clone().into_bytes());
    }
    Record {
        key: None,
        value: Some(message.data.clone()),
        headers,
        timestamp: chrono::Utc::now(),
    }
}

/// A record as the suite sees it.
fn msg(record: &Record) -> Msg {
    let mut metadata: BTreeMap<String, String> = record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    Msg {
        data: record.value.clone().unwrap_or_default(),
        content_type: metadata.remove("content-type"),
        metadata,
    }
}

impl Broker for KafkaBroker {
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String> {
        let mut args = match &self.pki {
            None => vec![
                "--broker".to_string(),
                format!("kafka://{}", self.tansu.address()),
            ],
            Some(pki) => vec![
                "--broker".to_string(),
                format!("kafka+ssl://{}", self.tansu.tls_address()),
                "--tls-ca".to_string(),
                pki.ca.to_str().expect("UTF-8 path").to_string(),
            ],
        };
        if let Some(input) = input {
            self.ensure_topic(input.topic, INPUT_PARTITIONS);
            let group = format!("{}_{}", self.prefix, input.group.unwrap_or("own"));
            args.extend([
                "--subscribe".into(),
                input.topic.into(),
                "--queue-group".into(),
                group,
                "--option".into(),
                "auto_offset_reset=earliest".into(),
                "--option".into(),
                "session_timeout_ms=6000".into(),
            ]);
        }
        args
    }

    fn wasmtime_args(&mut self, _receiving: bool) -> Vec<String> {
        run_with_network()
    }

    fn run_env(&self, _credentials: Credentials) -> Vec<(String, String)> {
        Vec::new()
    }

    fn ready_line(&self) -> Option<&'static str> {
        Some("subscribed to")
    }

    fn listen(&mut self, topic: &str) {
        self.ensure_topic(topic, 1);
        let client = self.client();
        let pc = self
            .runtime
            .block_on(async move { partition(&client, topic, 0).await });
        self.outputs
            .insert(topic.to_string(), (pc, 0, VecDeque::new()));
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        self.produce(topic, 0, vec![record(message)]);
    }

    fn publish_all(&mut self, topic: &str, messages: &[Msg]) {
        let mut parts: Vec<Vec<Record>> = vec![Vec::new(); INPUT_PARTITIONS as usize];
        for message in messages {
            parts[self.next_partition as usize].push(record(message));
            self.next_partition = (self.next_partition + 1) % INPUT_PARTITIONS;
        }
        for (part, records) in parts.into_iter().enumerate() {
            if !records.is_empty() {
                self.produce(topic, part as i32, records);
            }
        }
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        let (pc, offset, ahead) = self
            .outputs
            .get_mut(topic)
            .unwrap_or_else(|| panic!("listen to `{topic}` first"));
        let deadline = Instant::now() + limit;
        while ahead.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let wait = left.min(Duration::from_millis(500)).as_millis() as i32;
            let fetched = self
                .runtime
                .block_on(async {
                    tokio::time::timeout(
                        left + Duration::from_secs(5),
                        pc.fetch_records(*offset, 1..50_000_000, wait),
                    )
                    .await
                })
                .ok()?;
            let Ok((records, _)) = fetched else {
                panic!("fetch from {topic}: {fetched:?}");
            };
            let from = *offset;
            for r in records.into_iter().filter(|r| r.offset >= from) {
                *offset = r.offset + 1;
                ahead.push_back(msg(&r.record));
            }
        }
        ahead.pop_front()
    }

    fn respond(&mut self, topic: &str, replies: usize) {
        self.ensure_topic(topic, 1);
        let client = self.client();
        let topic = topic.to_string();
        self.runtime.block_on(async move {
            let requests = partition(&client, &topic, 0).await;
            tokio::spawn(async move {
                let request = loop {
                    match requests.fetch_records(0, 1..50_000_000, 500).await {
                        Ok((records, _)) if !records.is_empty() => break records[0].clone(),
                        Ok(_) => {}
                        Err(_) => return,
                    }
                };
                let header = |name: &str| request.record.headers.get(name).cloned();
                let reply_to = String::from_utf8(header("reply-to").expect("a reply-to"))
                    .expect("a UTF-8 reply-to");
                let data =
                    String::from_utf8_lossy(request.record.value.as_deref().unwrap_or_default())
                        .into_owned();
                let out = partition(&client, &reply_to, 0).await;
                for k in 1..=replies {
                    let mut headers = BTreeMap::new();
                    if let Some(id) = header("correlation-id") {
                        headers.insert("correlation-id".to_string(), id);
                    }
                    let reply = Record {
                        key: None,
                        value: Some(format!("hi, {data} ({k}/{replies})").into_bytes()),
                        headers,
                        timestamp: chrono::Utc::now(),
                    };
                    out.produce(vec![reply], Compression::NoCompression)
                        .await
                        .expect("produce a reply");
                }
            });
        });
    }

    fn can_stop(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn stop(&mut self) {
        self.runtime.block_on(self.tansu.kill());
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        Err(
            "tansu's memory storage forgets everything in a restart, and its S3 storage on \
             moto_server (each produce an object) handles about 10 records a second through \
             the app, too slow for 2,000 within the case's bound; tests/kafka.rs restarts an \
             S3-backed tansu mid-stream with 300 records",
        )
    }

    fn restart(&mut self) {
        unreachable!("can_restart says no")
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Err(
            "the case's tansu runs without SASL, since tansu 0.6 cannot be given a user once \
             it requires authentication (and keeps none added before); tests/kafka.rs checks \
             that a tansu requiring SASL refuses a SCRAM login with permission-denied",
        )
    }
}
