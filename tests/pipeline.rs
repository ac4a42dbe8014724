//! Pipelined sends outside a handler (issue 14 item 1): the `publisher` example (its own
//! `fn main`, so `--trigger none`) is composed with the run wrapper, which flushes the
//! backend's outbox after the app's run; the NATS, MQTT (QoS 1) and AMQP (publisher
//! confirms) backends then let `send` return once the message is queued and confirm sends
//! in windows. Run on the real `wasmtime` CLI against real brokers, checked from the
//! outside with native clients (`async-nats`, rumqttc, lapin).
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
//! without limit for a subscriber, which the shared broker's default of 1,000 would not).
//! Every wait is bounded.

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
