//! Pipelined sends outside a handler (issue 14 item 1): the `publisher` example (its own
//! `fn main`, so `--trigger none`) is composed with the run wrapper, which flushes the
//! backend's outbox after the app's run; the NATS, MQTT (QoS 1), AMQP (publisher
//! confirms), Kafka (produce per window) and SQS (`SendMessageBatch`) backends then let
//! `send` return once the message is queued and confirm sends in windows. Run on the real
//! `wasmtime` CLI against real brokers, checked from the outside with native clients
//! (`async-nats`, rumqttc, lapin, rskafka, moto's HTTP API).
//!
//! What a user relies on: every message arrives, in order; a failure that only a later
//! confirmation finds (a permissions violation, a JetStream stream or a RabbitMQ queue that
//! refuses more messages, a message no queue takes) makes the process exit non-zero with
//! one line saying why, even when every `send` had returned `Ok`.
//!
//! Servers: the NATS and AMQP cases use the shared `nats-server` on 127.0.0.1:4222 and
//! RabbitMQ on 127.0.0.1:5672 (unique subjects, routing keys and queues); the NATS failure
//! cases start their own server (an authorization config, a JetStream stream in a
//! temporary store), the MQTT cases their own Mosquitto (one with an ACL; one that queues
//! without limit for a subscriber, which the shared broker's default of 1,000 would not);
//! Kafka uses tansu on 127.0.0.1:9092 (a tansu of its own with a schema for the refusal),
//! SQS a moto server of its own. Every wait is bounded.

mod support;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use support::app::run;
use support::mqtt::{Mosquitto, Native};
use support::nats::{connect_with, round_trip, within, Server};
use support::rabbitmq;
use support::{compose, unique};

/// The shared server of the ordinary tests.
const SHARED: &str = "nats://127.0.0.1:4222";

/// The line the run wrapper prints when the final flush failed.
const NOT_CONFIRMED: &str = "msgplug: the broker did not confirm every message the app sent: ";

/// More messages than one default window (4,096) holds, and not a multiple of it: whole
/// windows are confirmed by sends, the rest by the final flush.
const COUNT: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn every_pipelined_send_arrives_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", SHARED]);
    let inspected = support::msgplug()
        .arg("inspect")
        .arg(&publisher)
        .output()
        .expect("run msgplug inspect");
    let inspected = String::from_utf8_lossy(&inspected.stdout).into_owned();
    assert!(
        inspected.contains("backend-nats + driver-wrap"),
        "{inspected}"
    );

    let client = connect_with(SHARED, async_nats::ConnectOptions::new()).await;
    let topic = unique("pipelined");
    let mut subscriber = client.subscribe(topic.clone()).await.expect("subscribe");
    round_trip(&client).await;

    let count = COUNT.to_string();
    let (status, stderr) = run(&publisher, &[("TOPIC", &topic), ("COUNT", &count)]).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    // Everything was confirmed before the process exited, so it is all on its way here.
    for expected in 1..=COUNT {
        let message = within(&format!("message #{expected}"), subscriber.next())
            .await
            .expect("subscription open");
        let seq = message
            .headers
            .as_ref()
            .and_then(|h| h.get("seq"))
            .map(|v| v.as_str().to_string());
        assert_eq!(seq, Some(expected.to_string()), "out of order or lost");
    }
}

/// A server where user `app` may publish anywhere but on `forbidden.>`.
async fn server_denying_forbidden() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auth.conf");
    std::fs::write(
        &config,
        r#"authorization {
  users = [
    { user: app, password: secret, permissions: { publish: { deny: ["forbidden.>"] } } }
  ]
}
"#,
    )
    .unwrap();
    let server = Server::start(&["-c", config.to_str().unwrap()]).await;
    (server, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permissions_violation_found_after_every_send_returned_fails_the_run() {
    let (server, _config) = server_denying_forbidden().await;
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &server.url()]);
    let credentials = [("NATS_USER", "app"), ("NATS_PASSWORD", "secret")];

    // Fewer sends than a window: each returns `Ok` once queued, so the app's run succeeds,
    // and only the wrapper's final flush hears the server's `-ERR`.
    let topic = format!("forbidden.{}", unique("late"));
    let env = [
        credentials[0],
        credentials[1],
        ("TOPIC", &topic),
        ("COUNT", "5"),
    ];
    let (status, stderr) = run(&publisher, &env).await;
    assert!(
        !status.success(),
        "a refused message went unreported:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with(NOT_CONFIRMED))
        .unwrap_or_else(|| panic!("no line saying what was not confirmed:\n{stderr}"));
    assert!(
        line.contains("permission denied") && line.contains(&topic),
        "{line}"
    );

    // A window of one: the first send itself is confirmed, and fails.
    let tmp = tempfile::tempdir().unwrap();
    let one_by_one = compose(
        tmp.path(),
        "publisher",
        &["--broker", &server.url(), "--option", "confirm_window=1"],
    );
    let (status, stderr) = run(&one_by_one, &env).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("publisher: send failed: permission denied") && stderr.contains(&topic),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_refusing_messages_after_the_sends_returned_fails_the_run() {
    let server = Server::start(&[]).await;
    let client = connect_with(&server.url(), async_nats::ConnectOptions::new()).await;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client.clone());
    let subject = unique("capped");
    let mut stream = js
        .create_stream(stream::Config {
            name: "CAPPED".to_string(),
            subjects: vec![subject.clone()],
            max_messages: 2,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .expect("create stream");

    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &server.url()]);
    let (status, stderr) = run(&publisher, &[("TOPIC", &subject), ("COUNT", "5")]).await;
    assert!(
        !status.success(),
        "messages the stream refused went unreported:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with(NOT_CONFIRMED))
        .unwrap_or_else(|| panic!("no line saying what was not confirmed:\n{stderr}"));
    assert!(
        line.contains(&format!(
            "JetStream did not store the message sent to `{subject}`"
        )),
        "{line}"
    );
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 2, "the stream keeps what it accepted");
}

/// The one line the run wrapper printed, which must exist.
fn not_confirmed_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with(NOT_CONFIRMED))
        .unwrap_or_else(|| panic!("no line saying what was not confirmed:\n{stderr}"))
}

// ---------------------------------------------------------------------------------------
// MQTT (QoS 1: a window is confirmed by the `PUBACK`s of its messages).

#[tokio::test(flavor = "multi_thread")]
async fn every_pipelined_mqtt_send_arrives_in_order() {
    // The shared broker drops QoS 1 messages beyond 1,000 queued for a subscriber that
    // falls behind (`max_queued_messages`); this one queues them all.
    let broker = Mosquitto::start_with(|_| "max_queued_messages 0\n".to_string());
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &broker.url()]);
    let topic = format!("{}/pipelined", unique("mqtt"));
    let mut native = Native::connect(broker.port).await;
    native.subscribe(&topic).await;

    let count = COUNT.to_string();
    let (status, stderr) = run(&publisher, &[("TOPIC", &topic), ("COUNT", &count)]).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    for expected in 1..=COUNT {
        let message = native.next().await;
        let seq = message.properties.as_ref().and_then(|p| {
            p.user_properties
                .iter()
                .find(|(k, _)| k == "seq")
                .map(|(_, v)| v.clone())
        });
        assert_eq!(seq, Some(expected.to_string()), "out of order or lost");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mqtt_refusal_found_after_every_send_returned_fails_the_run() {
    // Anonymous clients may use `open/#` only: a publish elsewhere gets a `PUBACK` with
    // reason code 0x87, NotAuthorized.
    let broker = Mosquitto::start_with(|dir| {
        let acl = dir.join("acl");
        std::fs::write(&acl, "topic readwrite open/#\n").expect("write the ACL");
        format!("acl_file {}\n", acl.display())
    });
    let topic = format!("{}/denied", unique("mqtt"));
    let env = [("TOPIC", topic.as_str()), ("COUNT", "5")];

    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &broker.url()]);
    let (status, stderr) = run(&publisher, &env).await;
    assert!(
        !status.success(),
        "a refused message went unreported:\n{stderr}"
    );
    assert!(
        !stderr.contains("publisher: send failed"),
        "every send returned Ok (a window):\n{stderr}"
    );
    let line = not_confirmed_line(&stderr);
    assert!(
        line.contains("permission denied")
            && line.contains("NotAuthorized")
            && line.contains(&topic),
        "{line}"
    );

    // A window of one: the first send itself is confirmed, and fails.
    let one_by_one = compose(
        tmp.path(),
        "publisher",
        &["--broker", &broker.url(), "--option", "confirm_window=1"],
    );
    let (status, stderr) = run(&one_by_one, &env).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("publisher: send failed: permission denied")
            && stderr.contains("NotAuthorized")
            && stderr.contains(&topic),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// AMQP (publisher confirms: a window is confirmed by the broker's `basic.ack`s).

#[tokio::test(flavor = "multi_thread")]
async fn every_pipelined_amqp_send_arrives_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", AMQP_BROKER]);
    let topic = unique("pipelined");
    let (_connection, channel) = rabbitmq::native().await;
    let mut inbox = rabbitmq::listen(&channel, &topic).await;

    let count = COUNT.to_string();
    let env = rabbitmq::env(&[("TOPIC", &topic), ("COUNT", &count)]);
    let (status, stderr) = run(&publisher, &env).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    for expected in 1..=COUNT {
        let delivery = within(&format!("message #{expected}"), inbox.next())
            .await
            .expect("consumer open")
            .expect("delivery");
        let seq = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get("seq") {
                Some(AMQPValue::LongString(text)) => Some(text.to_string()),
                _ => None,
            });
        assert_eq!(seq, Some(expected.to_string()), "out of order or lost");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

/// The machine's RabbitMQ, as the adapter's broker URL (credentials from the environment).
const AMQP_BROKER: &str = "amqp://127.0.0.1:5672";

#[tokio::test(flavor = "multi_thread")]
async fn an_amqp_refusal_found_after_every_send_returned_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", AMQP_BROKER]);
    let (_connection, channel) = rabbitmq::native().await;

    // A queue that takes two messages and refuses more (`basic.nack`); nobody consumes it.
    let topic = unique("capped");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(2));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let queue = unique("capped");
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, arguments)
        .await
        .expect("declare");
    channel
        .queue_bind(
            queue.as_str().into(),
            "amq.topic".into(),
            topic.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let env = rabbitmq::env(&[("TOPIC", &topic), ("COUNT", "5")]);
    let (status, stderr) = run(&publisher, &env).await;
    assert!(
        !status.success(),
        "messages the queue refused went unreported:\n{stderr}"
    );
    assert!(
        !stderr.contains("publisher: send failed"),
        "every send returned Ok (a window):\n{stderr}"
    );
    let line = not_confirmed_line(&stderr);
    assert!(
        line.contains("basic.nack") && line.contains(&format!("`{topic}`")),
        "{line}"
    );
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let kept = channel
        .queue_declare(queue.as_str().into(), passive, FieldTable::default())
        .await
        .expect("queue info");
    assert_eq!(kept.message_count(), 2, "the queue keeps what it accepted");

    // A mandatory message no queue takes comes back (`basic.return`).
    let nobody = unique("nobody");
    let env = rabbitmq::env(&[("TOPIC", &nobody), ("COUNT", "5")]);
    let (status, stderr) = run(&publisher, &env).await;
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("publisher: send failed"), "{stderr}");
    let line = not_confirmed_line(&stderr);
    assert!(
        line.contains(&format!("no queue is bound for `{nobody}`")),
        "{line}"
    );

    // A window of one: the first send itself is confirmed, and fails.
    let one_by_one = compose(
        tmp.path(),
        "publisher",
        &["--broker", AMQP_BROKER, "--option", "confirm_window=1"],
    );
    let (status, stderr) = run(&one_by_one, &env).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "publisher: send failed: no queue is bound for `{nobody}`"
        )),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Kafka: sends outside a handler are produced in windows, batched per partition
// (tansu; read back with rskafka).

/// Reads `topic`'s `partitions` from the start with rskafka until `count` records came or
/// [`support::nats::LIMIT`] passed; returns, per record, its partition and `seq` header.
async fn read_kafka(
    client: &rskafka::client::Client,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<(i32, u64)> {
    let mut clients = Vec::new();
    for p in 0..partitions {
        clients.push(support::kafka::partition(client, topic, p).await);
    }
    let mut offsets = vec![0i64; partitions as usize];
    let mut read = Vec::new();
    let deadline = std::time::Instant::now() + support::nats::LIMIT;
    while read.len() < count && std::time::Instant::now() < deadline {
        for (p, pc) in clients.iter().enumerate() {
            let fetched = within("fetch", pc.fetch_records(offsets[p], 1..4_000_000, 100))
                .await
                .unwrap_or_else(|e| panic!("fetch {topic}/{p}: {e}"));
            for r in fetched.0 {
                offsets[p] = r.offset + 1;
                let seq = r
                    .record
                    .headers
                    .get("seq")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or_else(|| panic!("a record without a `seq` header: {r:?}"));
                read.push((p as i32, seq));
            }
        }
    }
    read
}

#[tokio::test(flavor = "multi_thread")]
async fn every_pipelined_send_to_kafka_arrives_once_in_order_per_partition() {
    let kafka = support::kafka::client("127.0.0.1:9092").await;
    let topic = unique("pipelined");
    support::kafka::create_topic(&kafka, &topic, 3).await;
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(
        tmp.path(),
        "publisher",
        &["--broker", "kafka://127.0.0.1:9092"],
    );

    let count = COUNT.to_string();
    let (status, stderr) = run(&publisher, &[("TOPIC", &topic), ("COUNT", &count)]).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    // Every window was produced (acks=all) before the process exited.
    let read = read_kafka(&kafka, &topic, 3, COUNT).await;
    let mut seqs: Vec<u64> = read.iter().map(|&(_, seq)| seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=COUNT as u64).collect::<Vec<_>>(),
        "lost or duplicated"
    );
    for p in 0..3 {
        let in_partition: Vec<u64> = read
            .iter()
            .filter(|&&(q, _)| q == p)
            .map(|&(_, s)| s)
            .collect();
        assert!(!in_partition.is_empty(), "partition {p} got nothing");
        assert!(
            in_partition.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_kafka_refuses_after_every_send_returned_fail_the_run() {
    // A tansu of the test's own whose schema registry holds a JSON schema for the topic:
    // it refuses the publisher's text records with `INVALID_RECORD`, but only when they
    // are produced, which with the run wrapper is after the sends returned.
    // tansu reads a `file://` registry relative to its working directory: a directory
    // under the target dir, named from here.
    let registry = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let topic = unique("schema");
    std::fs::write(
        registry.path().join(format!("{topic}.json")),
        r#"{"type": "object", "properties": {"value": {"type": "object"}}}"#,
    )
    .unwrap();
    let port = support::free_port();
    let listener = format!("tcp://127.0.0.1:{port}");
    let cwd = std::env::current_dir().expect("working directory");
    let relative = registry.path().strip_prefix(&cwd).unwrap_or_else(|_| {
        panic!(
            "the target dir {} is not under the working directory {}",
            registry.path().display(),
            cwd.display()
        )
    });
    let schemas = format!("file://./{}", relative.display());
    let mut tansu = support::kafka::Process::start(
        &support::kafka::tansu(),
        &[
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
            "--schema-registry",
            &schemas,
        ],
        &[],
    );
    tansu.wait_for_log("ready in").await;
    let address = format!("127.0.0.1:{port}");
    let kafka = support::kafka::client(&address).await;
    support::kafka::create_topic(&kafka, &topic, 1).await;

    let tmp = tempfile::tempdir().unwrap();
    let broker = format!("kafka://{address}");
    let publisher = compose(tmp.path(), "publisher", &["--broker", &broker]);
    // Fewer sends than a window: each returns `Ok` once queued, so the app's run succeeds,
    // and only the wrapper's final flush hears the broker refuse them.
    let env = [("TOPIC", topic.as_str()), ("COUNT", "5")];
    let (status, stderr) = run(&publisher, &env).await;
    assert_eq!(
        status.code(),
        Some(1),
        "refused records went unreported:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with(NOT_CONFIRMED))
        .unwrap_or_else(|| panic!("no line saying what was not confirmed:\n{stderr}"));
    assert!(
        line.contains("INVALID_RECORD") && line.contains(&topic),
        "{line}"
    );
    assert!(
        !stderr.contains("publisher: send failed"),
        "every send returned Ok:\n{stderr}"
    );

    // A window of one: the first send itself is produced, and fails.
    let one_by_one = compose(
        tmp.path(),
        "publisher",
        &["--broker", &broker, "--option", "confirm_window=1"],
    );
    let (status, stderr) = run(&one_by_one, &env).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("publisher: send failed: ") && stderr.contains("INVALID_RECORD"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// SQS: sends outside a handler go in `SendMessageBatch` requests, window by window (moto,
// read back with the tests' own SQS client).

/// Fewer than [`COUNT`]: moto's sends and receives slow down with the messages a queue
/// holds (on a loaded machine: 500 sent in 14 s, then 1.4 s per receive of 10).
const SQS_COUNT: usize = 200;

/// Fewer still for a FIFO queue: moto's FIFO sends slow down with every message the queue
/// holds (measured: ~1.3 s per batch of 10 with 300 messages in the queue).
const FIFO_COUNT: usize = 100;

/// Runs the publisher composed for SQS with `extra` compose arguments, sending `count`
/// messages to `queue`, and returns the `seq` attributes of what arrived there, in order.
fn publish_to_sqs(
    moto: &support::moto::Moto,
    queue: &str,
    url: &str,
    count: usize,
    extra: &[&str],
) -> Vec<usize> {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["--broker", "sqs://us-east-1"];
    args.extend_from_slice(extra);
    let publisher = compose(tmp.path(), "publisher", &args);
    let count_text = count.to_string();
    let env = moto.env_with(&[("TOPIC", queue), ("COUNT", &count_text)]);
    let output = support::run_http(&publisher, &env);
    let stderr = support::text(&output.stderr);
    assert!(output.status.success(), "publisher failed:\n{stderr}");
    moto.take(url, count)
        .iter()
        .map(|m| {
            m["MessageAttributes"]["seq"]["StringValue"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no `seq` attribute: {m}"))
        })
        .collect()
}

#[test]
fn every_pipelined_send_to_sqs_arrives_once() {
    let moto = support::moto::Moto::start();
    let url = moto.create_queue("pipelined", serde_json::json!({}));
    // Windows of 64: three closed by sends, the last 8 sent by the final flush.
    let extra = ["--option", "confirm_window=64"];
    let mut seqs = publish_to_sqs(&moto, "pipelined", &url, SQS_COUNT, &extra);
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=SQS_COUNT).collect::<Vec<_>>(),
        "lost or duplicated"
    );
}

#[test]
fn every_pipelined_send_to_a_fifo_queue_arrives_once_in_order() {
    let moto = support::moto::Moto::start();
    let url = moto.create_queue("pipelined.fifo", serde_json::json!({"FifoQueue": "true"}));
    // Windows of 25: four windows of three batches each (10, 10, 5).
    let extra = ["--option", "confirm_window=25"];
    let seqs = publish_to_sqs(&moto, "pipelined.fifo", &url, FIFO_COUNT, &extra);
    assert_eq!(
        seqs,
        (1..=FIFO_COUNT).collect::<Vec<_>>(),
        "lost, duplicated or out of order"
    );
}

#[test]
fn messages_sqs_refuses_after_every_send_returned_fail_the_run() {
    let moto = support::moto::Moto::start();
    moto.create_queue("small", serde_json::json!({"MaximumMessageSize": "1024"}));
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", "sqs://us-east-1"]);
    // Fewer sends than a window: each returns `Ok` once queued, so the app's run succeeds,
    // and only the wrapper's final flush hears that SQS refused them.
    let env = moto.env_with(&[("TOPIC", "small"), ("COUNT", "5"), ("SIZE", "2000")]);
    let output = support::run_http(&publisher, &env);
    let stderr = support::text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "refused messages went unreported:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with(NOT_CONFIRMED))
        .unwrap_or_else(|| panic!("no line saying what was not confirmed:\n{stderr}"));
    assert!(
        line.contains("SQS did not take 5 of 5 sent message(s)")
            && line.contains("`small`")
            && line.contains("shorter than 1024 bytes"),
        "{line}"
    );
    assert!(
        !stderr.contains("publisher: send failed"),
        "every send returned Ok:\n{stderr}"
    );

    // A window of one: the first send itself is sent, and fails.
    let one_by_one = compose(
        tmp.path(),
        "publisher",
        &[
            "--broker",
            "sqs://us-east-1",
            "--option",
            "confirm_window=1",
        ],
    );
    let output = support::run_http(&one_by_one, &env);
    let stderr = support::text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("publisher: send failed: SQS did not take 1 of 1"),
        "{stderr}"
    );
}

/// A proxy in front of moto that takes the entry with `Id` `1` out of every
/// `SendMessageBatch` and answers for it with a failed entry (`SenderFault`), as SQS does
/// when a batch partly fails (moto itself fails entries only for a bad `DelaySeconds`);
/// every other request goes to moto unchanged. Returns its endpoint; it serves until the
/// test ends.
fn proxy_failing_the_second_entry_of_each_batch(moto: &support::moto::Moto) -> String {
    use serde_json::Value;
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind a loopback port");
    let endpoint = format!(
        "http://{}",
        server.server_addr().to_ip().expect("an IP address")
    );
    let (upstream, agent) = (moto.endpoint.clone(), moto.agent.clone());
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            std::io::Read::read_to_end(request.as_reader(), &mut body).expect("body");
            let header = |name: &str| {
                request
                    .headers()
                    .iter()
                    .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                    .map(|h| h.value.as_str().to_string())
            };
            let batch = header("X-Amz-Target").as_deref() == Some("AmazonSQS.SendMessageBatch");
            let mut failed = None;
            if batch {
                let mut input: Value = serde_json::from_slice(&body).expect("JSON");
                let entries = input["Entries"].as_array_mut().expect("entries");
                if let Some(at) = entries.iter().position(|e| e["Id"] == "1") {
                    entries.remove(at);
                    failed = Some(serde_json::json!({
                        "Id": "1",
                        "SenderFault": true,
                        "Code": "InvalidParameterValue",
                        "Message": "refused by the test's proxy",
                    }));
                }
                body = serde_json::to_vec(&input).expect("JSON");
            }
            let mut forwarded = agent.post(&upstream);
            for name in [
                "Content-Type",
                "X-Amz-Target",
                "X-Amz-Date",
                "Authorization",
            ] {
                if let Some(value) = header(name) {
                    forwarded = forwarded.header(name, value);
                }
            }
            let mut answer = forwarded.send(&body[..]).expect("forward to moto");
            let status = answer.status().as_u16();
            let mut text = answer.body_mut().read_to_string().expect("moto's body");
            if let Some(failed) = failed {
                let mut output: Value = serde_json::from_str(&text).expect("JSON answer");
                output["Failed"]
                    .as_array_mut()
                    .expect("a Failed list")
                    .push(failed);
                text = output.to_string();
            }
            let response = tiny_http::Response::from_string(text).with_status_code(status);
            let _ = request.respond(response);
        }
    });
    endpoint
}

#[test]
fn a_batch_that_partly_fails_reports_its_failed_entries() {
    let moto = support::moto::Moto::start();
    let queue = moto.create_queue("greetings", serde_json::json!({}));
    let proxy = proxy_failing_the_second_entry_of_each_batch(&moto);
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", "sqs://us-east-1"]);
    let mut env = moto.env_with(&[("COUNT", "3")]);
    env[0].1 = &proxy;
    let output = support::run_http(&publisher, &env);
    let stderr = support::text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with(NOT_CONFIRMED))
        .unwrap_or_else(|| panic!("no line saying what was not confirmed:\n{stderr}"));
    assert_eq!(
        line,
        format!(
            "{NOT_CONFIRMED}SQS did not take 1 of 3 sent message(s): SQS SendMessageBatch on \
             `greetings` did not take a message: InvalidParameterValue: refused by the test's proxy"
        )
    );
    let bodies: Vec<String> = moto
        .take(&queue, 2)
        .iter()
        .map(|m| m["Body"].as_str().expect("a body").to_string())
        .collect();
    assert_eq!(bodies, ["hello #1", "hello #3"], "the others were sent");
}
