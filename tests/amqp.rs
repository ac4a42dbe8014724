//! End to end against RabbitMQ: the example apps composed with `--broker amqp://...` and run
//! on the real `wasmtime` CLI (`wasmtime run -S inherit-network --env K=V ...`), checked from
//! the outside by an independent native client (lapin, not the adapter's own codec).
//!
//! Broker: the machine's RabbitMQ on 127.0.0.1:5672 with RabbitMQ's default user, which
//! the tests pass explicitly (`AMQP_USERNAME=guest`, `AMQP_PASSWORD=guest`). Every routing
//! key, queue and connection name carries a unique suffix, so the tests run in parallel
//! with each other and with other test binaries. The lost-connection test closes only its
//! own connection (found by its unique connection name with `rabbitmqctl`). No test stops
//! the shared broker, which would disturb every other test using it: the broker restart
//! test runs on a RabbitMQ node of its own ([`support::rabbitmq::Node`], a few seconds to
//! start).
//!
//! Synchronisation: a composed handler logs `subscribed to` on stderr once its consumer is
//! live, and the tests publish only after that line; native queues are declared and bound
//! before anything is published. Every wait is bounded and fails the test when it runs out;
//! every process is killed when its guard drops.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};

use support::app::{app_lines, run, App};
use support::nats::{within, LIMIT};
use support::rabbitmq::{bind_durable, env, listen, native, native_at, publish, Node};
use support::{compose, unique};

/// The machine's broker.
const BROKER: &str = "amqp://127.0.0.1:5672";

/// The next delivery of `consumer`, acked.
async fn next(consumer: &mut Consumer) -> Delivery {
    let delivery = within("message", consumer.next())
        .await
        .expect("consumer ended")
        .expect("delivery");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    delivery
}

/// The string header `name` of a delivery.
fn header(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Headers of string values.
fn headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert((*key).into(), AMQPValue::LongString((*value).into()));
    }
    table
}

/// The payload as text.
fn data(delivery: &Delivery) -> &str {
    std::str::from_utf8(&delivery.data).expect("UTF-8 payload")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_composed_publisher_sends_persistent_messages_with_content_type_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", BROKER]);
    let topic = unique("greetings");
    let (_connection, channel) = native().await;
    let mut inbox = listen(&channel, &topic).await;

    let (status, stderr) = run(&publisher, &env(&[("COUNT", "3"), ("TOPIC", &topic)])).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    for i in 1..=3 {
        let message = next(&mut inbox).await;
        assert_eq!(message.routing_key.as_str(), topic);
        assert_eq!(message.exchange.as_str(), "amq.topic");
        assert_eq!(data(&message), format!("hello #{i}"));
        let content_type = message.properties.content_type().as_ref();
        assert_eq!(content_type.map(|c| c.as_str()), Some("text/plain"));
        assert_eq!(header(&message, "seq"), Some(i.to_string()));
        assert_eq!(*message.properties.delivery_mode(), Some(2), "persistent");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unroutable_send_is_an_error_not_a_silent_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", BROKER]);
    let topic = unique("nobody");
    let (status, stderr) = run(&publisher, &env(&[("COUNT", "1"), ("TOPIC", &topic)])).await;
    assert!(!status.success(), "an unroutable send must fail:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "no queue is bound for `{topic}` on exchange `amq.topic`"
        )) && stderr.contains("NO_ROUTE"),
        "the error names the routing key and the broker's reason:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_never_assumed_and_a_wrong_password_is_permission_denied() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", BROKER]);
    let (status, stderr) = run(&publisher, &[("COUNT", "1")]).await;
    assert!(!status.success());
    assert!(
        stderr.contains("permission denied")
            && stderr.contains("set AMQP_USERNAME and AMQP_PASSWORD"),
        "{stderr}"
    );
    let wrong = [
        ("AMQP_USERNAME", "guest"),
        ("AMQP_PASSWORD", "wrong"),
        ("COUNT", "1"),
    ];
    let (status, stderr) = run(&publisher, &wrong).await;
    assert!(!status.success());
    assert!(
        stderr.contains("permission denied") && stderr.contains("ACCESS_REFUSED"),
        "the broker's reply text comes through as permission-denied:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_while_the_broker_is_unreachable_fails_with_a_connection_error() {
    let tmp = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("amqp://127.0.0.1:{closed}");
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url]);
    let started = Instant::now();
    let (status, stderr) = run(&publisher, &env(&[("COUNT", "1")])).await;
    assert!(!status.success());
    assert!(
        stderr.contains("connection") && stderr.contains("cannot connect"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it does not hang"
    );
}

/// With its memory alarm raised (a watermark of 1 byte), RabbitMQ blocks every connection that
/// publishes and tells it so (`connection.blocked`): a composed publisher's send waits, then
/// fails with a `connection` error that names the block, in bounded time, instead of hanging.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_while_the_broker_blocks_publishers_fails_with_a_connection_error() {
    let node = tokio::task::spawn_blocking(|| {
        Node::start_with_config("vm_memory_high_watermark.absolute = 1\n")
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &node.url()]);
    let started = Instant::now();
    let (status, stderr) = run(&publisher, &env(&[("COUNT", "1")])).await;
    assert!(!status.success(), "the send went through:\n{stderr}");
    assert!(
        stderr.contains("connection") && stderr.contains("blocked publishers"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < LIMIT,
        "the blocked send gave up within its bound"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_composed_handler_takes_native_messages_and_republishes_them_with_their_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("orders");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", BROKER, "--subscribe", &format!("{base}.*")],
    );
    let (_connection, channel) = native().await;
    let mut upper = listen(&channel, &format!("{base}.*.upper")).await;
    let _app = App::subscribed(&transform, &env(&[])).await;

    let properties = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_headers(headers(&[("id", "7")]))
        .with_message_id("m-7".into());
    publish(
        &channel,
        "amq.topic",
        &format!("{base}.eu"),
        b"hello",
        properties,
    )
    .await;
    publish(
        &channel,
        "amq.topic",
        &format!("{base}.us"),
        b"hi there",
        BasicProperties::default(),
    )
    .await;

    let first = next(&mut upper).await;
    assert_eq!(first.routing_key.as_str(), format!("{base}.eu.upper"));
    assert_eq!(data(&first), "HELLO");
    let content_type = first.properties.content_type().as_ref();
    assert_eq!(content_type.map(|c| c.as_str()), Some("text/plain"));
    assert_eq!(header(&first, "id").as_deref(), Some("7"));
    assert_eq!(
        header(&first, "transformed-by").as_deref(),
        Some("transform")
    );
    let message_id = first.properties.message_id().as_ref();
    assert_eq!(
        message_id.map(|m| m.as_str()),
        Some("m-7"),
        "message-id is metadata `amqp-message-id`, which the app copied"
    );

    let second = next(&mut upper).await;
    assert_eq!(second.routing_key.as_str(), format!("{base}.us.upper"));
    assert_eq!(data(&second), "HI THERE");
    assert_eq!(second.properties.content_type(), &None);
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_errors_are_nacked_and_redelivered_while_good_messages_are_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("jobs");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", BROKER, "--subscribe", &base],
    );
    let (_connection, channel) = native().await;
    let mut upper = listen(&channel, &format!("{base}.upper")).await;
    let mut app = App::subscribed(&transform, &env(&[])).await;

    publish(
        &channel,
        "amq.topic",
        &base,
        &[0xff, 0xfe],
        BasicProperties::default(),
    )
    .await;
    publish(
        &channel,
        "amq.topic",
        &base,
        b"fine",
        BasicProperties::default(),
    )
    .await;

    // One bad message was published; failing twice means the broker delivered it again.
    app.wait_for(
        &format!("message on `{base}` failed: payload is not UTF-8 text"),
        2,
    )
    .await;
    assert_eq!(data(&next(&mut upper).await), "FINE");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unroutable_send_in_a_handler_fails_its_flush_and_the_input_is_delivered_again() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("retry");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", BROKER, "--subscribe", &base],
    );
    let (_connection, channel) = native().await;
    let mut app = App::subscribed(&transform, &env(&[])).await;
    publish(
        &channel,
        "amq.topic",
        &base,
        b"again",
        BasicProperties::default(),
    )
    .await;

    // Nothing is bound for the output yet: the driver's flush fails, the input is nacked
    // and delivered again, until a queue is bound.
    app.wait_for(
        &format!("message on `{base}` failed: flushing: no queue is bound for `{base}.upper`"),
        1,
    )
    .await;
    let mut upper = listen(&channel, &format!("{base}.upper")).await;
    let output = next(&mut upper).await;
    assert_eq!(data(&output), "AGAIN");
    assert_eq!(
        header(&output, "amqp-redelivered"),
        None,
        "the redelivered flag is metadata of received messages only, never sent as a header"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_instance_without_a_group_sees_every_message() {
    const TOTAL: usize = 50;
    let tmp = tempfile::tempdir().unwrap();
    let subject = unique("fan");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", BROKER, "--subscribe", &subject],
    );
    let (_connection, channel) = native().await;
    let mut outputs = listen(&channel, &format!("{subject}.upper")).await;
    let _a = App::subscribed(&transform, &env(&[("TRANSFORMED_BY", "a")])).await;
    let _b = App::subscribed(&transform, &env(&[("TRANSFORMED_BY", "b")])).await;
    for i in 0..TOTAL {
        let text = format!("m{i}");
        publish(
            &channel,
            "amq.topic",
            &subject,
            text.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for _ in 0..2 * TOTAL {
        let message = next(&mut outputs).await;
        let by = header(&message, "transformed-by").unwrap_or_default();
        seen.entry(by)
            .or_default()
            .insert(data(&message).to_string());
    }
    let expected: BTreeSet<String> = (0..TOTAL).map(|i| format!("M{i}")).collect();
    assert_eq!(seen.get("a"), Some(&expected));
    assert_eq!(seen.get("b"), Some(&expected));
}

/// `transform` composed to consume `subject` through the durable group queue `group`, with
/// the connection name `name` (to find its connection with `rabbitmqctl`).
struct Group {
    _tmp: tempfile::TempDir,
    subject: String,
    group: String,
    name: String,
    transform: std::path::PathBuf,
}

impl Group {
    /// Composes it for the machine's broker with names made unique from `prefix`.
    fn compose(prefix: &str) -> Group {
        Group::compose_for(BROKER, prefix)
    }

    /// Composes it for the broker at `broker` with names made unique from `prefix`.
    fn compose_for(broker: &str, prefix: &str) -> Group {
        let tmp = tempfile::tempdir().unwrap();
        let subject = unique(prefix);
        let group = unique(&format!("{prefix}_workers"));
        let name = unique(&format!("msgplug-test-{prefix}"));
        let transform = compose(
            tmp.path(),
            "transform",
            &[
                "--broker",
                broker,
                "--subscribe",
                &subject,
                "--queue-group",
                &group,
                "--option",
                &format!("connection_name={name}"),
            ],
        );
        Group {
            _tmp: tmp,
            subject,
            group,
            name,
            transform,
        }
    }

    /// Deletes the durable group queue (once its consumers are gone).
    async fn delete_queue(&self, channel: &Channel) {
        channel
            .queue_delete(self.group.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete the group's durable queue");
    }
}

/// Publishes `m<i>` for each `i` in `numbers` to `key`, persistent and pipelined, and waits
/// for every confirm.
async fn publish_numbered(channel: &Channel, key: &str, numbers: std::ops::Range<usize>) {
    let mut confirms = Vec::new();
    for i in numbers {
        let confirm = channel
            .basic_publish(
                "amq.topic".into(),
                key.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    for confirm in confirms {
        within("publisher confirm", confirm)
            .await
            .expect("confirmed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_in_a_queue_group_share_3000_messages_none_lost_none_handled_twice() {
    const TOTAL: usize = 3000;
    let work = Group::compose("work");
    let (subject, transform) = (&work.subject, &work.transform);
    let (_connection, channel) = native().await;
    let mut outputs = listen(&channel, &format!("{subject}.upper")).await;
    let mut apps = Vec::new();
    for name in ["w1", "w2", "w3"] {
        apps.push(App::subscribed(transform, &env(&[("TRANSFORMED_BY", name)])).await);
    }
    publish_numbered(&channel, subject, 0..TOTAL).await;

    let mut handled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unique_inputs = BTreeSet::new();
    let mut received = 0;
    let collected = tokio::time::timeout(LIMIT * 4, async {
        while unique_inputs.len() < TOTAL {
            let message = outputs
                .next()
                .await
                .expect("consumer ended")
                .expect("delivery");
            message.ack(BasicAckOptions::default()).await.expect("ack");
            received += 1;
            unique_inputs.insert(data(&message).to_string());
            let by = header(&message, "transformed-by").unwrap_or_default();
            handled
                .entry(by)
                .or_default()
                .push(data(&message).to_string());
        }
    })
    .await;
    let shares: BTreeMap<_, _> = handled.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    assert!(
        collected.is_ok(),
        "{} of {TOTAL} messages handled within {:?} (per instance: {shares:?})",
        unique_inputs.len(),
        LIMIT * 4
    );
    assert_eq!(
        received, TOTAL,
        "some messages were handled twice: {shares:?}"
    );
    let expected: BTreeSet<String> = (0..TOTAL).map(|i| format!("M{i}")).collect();
    assert_eq!(unique_inputs, expected);
    assert_eq!(
        shares.keys().map(String::as_str).collect::<Vec<_>>(),
        ["w1", "w2", "w3"],
        "every instance takes a share: {shares:?}"
    );
    drop(apps);
    work.delete_queue(&channel).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_queue_is_consumed_as_it_is_with_option_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = unique("existing");
    let (_connection, channel) = native().await;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    // Published through the default exchange, before the app starts: the queue keeps it.
    publish(&channel, "", &queue, b"queued", BasicProperties::default()).await;
    // The routing key of the delivery is the queue's name; the app republishes to
    // `<queue>.upper`.
    let mut outputs_of_queue = listen(&channel, &format!("{queue}.upper")).await;
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", BROKER, "--option", &format!("queue={queue}")],
    );
    let _app = App::subscribed(&transform, &env(&[])).await;
    let message = next(&mut outputs_of_queue).await;
    assert_eq!(data(&message), "QUEUED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_queue_or_exchange_is_an_error_with_the_brokers_text() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = unique("missing");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", BROKER, "--option", &format!("queue={missing}")],
    );
    let (status, stderr) = run(&transform, &env(&[])).await;
    assert!(!status.success(), "a missing queue ends the run:\n{stderr}");
    assert!(
        stderr.contains("NOT_FOUND") && stderr.contains(&missing),
        "the broker's reply text names the queue:\n{stderr}"
    );

    let publisher = compose(
        tmp.path(),
        "publisher",
        &[
            "--broker",
            BROKER,
            "--option",
            &format!("exchange={missing}"),
        ],
    );
    let (status, stderr) = run(&publisher, &env(&[("COUNT", "1")])).await;
    assert!(!status.success());
    assert!(
        stderr.contains("NOT_FOUND") && stderr.contains(&format!("exchange '{missing}'")),
        "{stderr}"
    );
}

/// The native responder: answers the first request on `key` with `replies` replies to its
/// `reply-to`, through the default exchange, with its correlation id.
async fn native_responder(
    channel: &Channel,
    key: &str,
    replies: u32,
) -> tokio::task::JoinHandle<Delivery> {
    let mut requests = listen(channel, key).await;
    let channel = channel.clone();
    tokio::spawn(async move {
        let request = next(&mut requests).await;
        let reply_to = request
            .properties
            .reply_to()
            .clone()
            .expect("the request has a reply-to");
        let correlation_id = request
            .properties
            .correlation_id()
            .clone()
            .expect("the request has a correlation id");
        for k in 1..=replies {
            let text = format!("hi, {} ({k}/{replies})", data(&request));
            let properties = BasicProperties::default().with_correlation_id(correlation_id.clone());
            publish(&channel, "", reply_to.as_str(), text.as_bytes(), properties).await;
        }
        request
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_composed_requester_collects_the_expected_replies_by_direct_reply_to() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &["--broker", BROKER]);
    let topic = unique("greet");
    let (_connection, channel) = native().await;
    let responder = native_responder(&channel, &topic, 2).await;

    let started = Instant::now();
    let extra = [
        ("TOPIC", topic.as_str()),
        ("NAME", "Ada"),
        ("EXPECT", "2"),
        ("TIMEOUT_MS", "20000"),
    ];
    let (status, stderr) = run(&requester, &env(&extra)).await;
    assert!(status.success(), "requester failed:\n{stderr}");
    assert_eq!(
        app_lines(&stderr),
        ["reply: hi, Ada (1/2)", "reply: hi, Ada (2/2)"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "it returns before its timeout"
    );
    let request = within("responder", responder).await.unwrap();
    assert_eq!(data(&request), "Ada");
    let reply_to = request.properties.reply_to().as_ref().unwrap();
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to"),
        "{reply_to:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_returns_what_came_when_its_timeout_ends_and_fails_with_timeout_if_nothing_did() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &["--broker", BROKER]);
    let topic = unique("slow");
    let (_connection, channel) = native().await;
    let responder = native_responder(&channel, &topic, 1).await;
    let extra = [
        ("TOPIC", topic.as_str()),
        ("EXPECT", "3"),
        ("TIMEOUT_MS", "1500"),
    ];
    let (status, stderr) = run(&requester, &env(&extra)).await;
    assert!(status.success(), "requester failed:\n{stderr}");
    assert_eq!(app_lines(&stderr), ["reply: hi, world (1/1)"]);
    within("responder", responder).await.unwrap();

    // Bound but unanswered: a timeout.
    let silent = unique("silent");
    let _requests = listen(&channel, &silent).await;
    let extra = [("TOPIC", silent.as_str()), ("TIMEOUT_MS", "500")];
    let (status, stderr) = run(&requester, &env(&extra)).await;
    assert!(!status.success());
    assert!(stderr.contains("timeout"), "{stderr}");

    // Unbound: nobody can answer, said at once.
    let nobody = unique("nobody");
    let extra = [("TOPIC", nobody.as_str()), ("TIMEOUT_MS", "20000")];
    let started = Instant::now();
    let (status, stderr) = run(&requester, &env(&extra)).await;
    assert!(!status.success());
    assert!(stderr.contains("no responders on"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_native_requester_gets_every_reply_of_a_composed_responder() {
    let tmp = tempfile::tempdir().unwrap();
    let topic = unique("hello");
    let responder = compose(
        tmp.path(),
        "responder",
        &["--broker", BROKER, "--subscribe", &topic],
    );
    let _app = App::subscribed(&responder, &env(&[("REPLIES", "2")])).await;
    let (_connection, channel) = native().await;
    let mut replies = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume direct reply-to");
    let properties = BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_correlation_id("c-42".into());
    publish(&channel, "amq.topic", &topic, b"Grace", properties).await;
    for k in 1..=2 {
        let reply = within("reply", replies.next()).await.unwrap().unwrap();
        assert_eq!(data(&reply), format!("hello, Grace ({k}/2)"));
        let correlation_id = reply.properties.correlation_id().as_ref();
        assert_eq!(correlation_id.map(|c| c.as_str()), Some("c-42"));
    }
}

/// Closes the broker's connections named `name` (`rabbitmqctl close_connection`); returns
/// how many.
fn close_connections_named(name: &str) -> usize {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("run rabbitmqctl (RabbitMQ's CLI, installed with the broker)");
    let listing = String::from_utf8_lossy(&output.stdout);
    let mut closed = 0;
    for line in listing.lines().filter(|l| l.contains(name)) {
        let pid = line.split_whitespace().next().expect("a pid column");
        let status = std::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "closed by a msgplug test"])
            .status()
            .expect("run rabbitmqctl");
        assert!(
            status.success(),
            "rabbitmqctl close_connection {pid} failed"
        );
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_lost_connection_the_handler_reconnects_declares_again_and_goes_on() {
    let resume = Group::compose("resume");
    let (subject, name, transform) = (&resume.subject, &resume.name, &resume.transform);
    let (_connection, channel) = native().await;
    let mut outputs = listen(&channel, &format!("{subject}.upper")).await;
    let mut app = App::subscribed(transform, &env(&[])).await;
    publish(
        &channel,
        "amq.topic",
        subject,
        b"before",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(data(&next(&mut outputs).await), "BEFORE");

    let closed = tokio::task::spawn_blocking({
        let name = name.clone();
        move || close_connections_named(&name)
    })
    .await
    .unwrap();
    assert_eq!(closed, 1, "the app's one connection, found by its name");
    app.wait_for("reconnected to", 1).await;
    // The durable group queue kept its binding; messages published now are handled.
    publish(
        &channel,
        "amq.topic",
        subject,
        b"after",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(data(&next(&mut outputs).await), "AFTER");
    assert!(
        app.stderr
            .iter()
            .any(|l| l.contains("lost the connection") && l.contains("CONNECTION_FORCED")),
        "the broker's reason is logged:\n{}",
        app.stderr.join("\n")
    );
    drop(app);
    resume.delete_queue(&channel).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_lost_mid_stream_loses_nothing_accepted() {
    const TOTAL: usize = 6000;
    let midstream = Group::compose("midstream");
    let (subject, name, transform) = (&midstream.subject, &midstream.name, &midstream.transform);
    let (_connection, channel) = native().await;
    let mut outputs = listen(&channel, &format!("{subject}.upper")).await;
    let mut app = App::subscribed(transform, &env(&[])).await;
    publish_numbered(&channel, subject, 0..TOTAL).await;
    // Close the app's connection while it works through the queue: deliveries it holds
    // unacked go back to the queue, and acking them on the new connection would be an
    // error or (same tag, other message) a loss.
    let mut seen = BTreeSet::from([data(&next(&mut outputs).await).to_string()]);
    let closer = tokio::task::spawn_blocking({
        let name = name.clone();
        move || close_connections_named(&name)
    });
    let collected = tokio::time::timeout(LIMIT * 4, async {
        while seen.len() < TOTAL {
            let message = next(&mut outputs).await;
            seen.insert(data(&message).to_string());
        }
    })
    .await;
    assert_eq!(
        closer.await.unwrap(),
        1,
        "the app's connection, by its name"
    );
    assert!(
        collected.is_ok(),
        "{} of {TOTAL} messages handled after the connection was lost",
        seen.len()
    );
    app.wait_for("reconnected to", 1).await;
    drop(app);
    midstream.delete_queue(&channel).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_mid_stream_loses_nothing_accepted() {
    const TOTAL: usize = 4000;
    let mut node = tokio::task::spawn_blocking(Node::start).await.unwrap();
    let restart = Group::compose_for(&node.url(), "restart");
    let (subject, transform) = (&restart.subject, &restart.transform);
    // The outputs go to a durable queue too: what the app sent before the restart and the
    // test had not taken yet is still there after it.
    let seen_queue = format!("{subject}.seen");
    let outputs_key = format!("{subject}.upper");
    let (_connection, channel) = native_at(&node.native_url()).await;
    let mut outputs = bind_durable(&channel, &seen_queue, "amq.topic", &outputs_key).await;
    let mut app = App::subscribed(transform, &env(&[])).await;
    publish_numbered(&channel, subject, 0..TOTAL / 2).await;
    // Restart the node while the app works through the queue (after it handled something).
    let mut received = vec![data(&next(&mut outputs).await).to_string()];
    node = tokio::task::spawn_blocking(move || {
        node.stop();
        node.launch();
        node
    })
    .await
    .unwrap();
    let (_connection, channel) = native_at(&node.native_url()).await;
    let mut outputs = bind_durable(&channel, &seen_queue, "amq.topic", &outputs_key).await;
    publish_numbered(&channel, subject, TOTAL / 2..TOTAL).await;

    let mut seen: BTreeSet<String> = received.iter().cloned().collect();
    let collected = tokio::time::timeout(LIMIT * 4, async {
        while seen.len() < TOTAL {
            let message = next(&mut outputs).await;
            seen.insert(data(&message).to_string());
            received.push(data(&message).to_string());
        }
    })
    .await;
    let expected: BTreeSet<String> = (0..TOTAL).map(|i| format!("M{i}")).collect();
    assert!(
        collected.is_ok(),
        "{} of {TOTAL} accepted messages handled across the restart, e.g. missing {:?}; app stderr:\n{}",
        seen.len(),
        expected.difference(&seen).take(5).collect::<Vec<_>>(),
        app.stderr_so_far()
    );
    assert_eq!(seen, expected);
    app.wait_for("reconnected to", 1).await;
    println!(
        "all {TOTAL} accepted messages handled across a broker restart; {} delivered twice",
        received.len() - TOTAL
    );
}

// Long handlers: the connection's heartbeats are what a handler must not starve (issue 15).

/// A node of the test's own whose heartbeat interval is 3 s, the `relay` example composed to
/// consume a fresh subject through a durable group queue on it, running, and a native
/// channel whose durable queues collect what it relays and what it sends between waits
/// (`<subject>.progress`: a send with no queue bound would be returned, failing the handler).
struct SlowRelay {
    _tmp: tempfile::TempDir,
    _node: Node,
    subject: String,
    group: String,
    channel: Channel,
    _connection: lapin::Connection,
    relayed: Consumer,
    _progress: Consumer,
    app: App,
}

impl SlowRelay {
    /// Starts it all and publishes one message whose handler works as the relay's metadata
    /// `sleep-ms` says.
    async fn start(sleep_ms: &str) -> SlowRelay {
        let node = tokio::task::spawn_blocking(|| Node::start_with_config("heartbeat = 3\n"))
            .await
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let subject = unique("slow");
        let group = unique("slow_workers");
        let relay = compose(
            tmp.path(),
            "relay",
            &[
                "--broker",
                &node.url(),
                "--subscribe",
                &subject,
                "--queue-group",
                &group,
            ],
        );
        let (connection, channel) = native_at(&node.native_url()).await;
        let relayed_key = format!("{subject}.relayed");
        let relayed = bind_durable(&channel, &relayed_key, "amq.topic", &relayed_key).await;
        let progress_key = format!("{subject}.progress");
        let progress = bind_durable(&channel, &progress_key, "amq.topic", &progress_key).await;
        let app = App::subscribed(&relay, &env(&[])).await;
        let properties =
            BasicProperties::default().with_headers(headers(&[("sleep-ms", sleep_ms)]));
        publish(&channel, "amq.topic", &subject, b"slow job", properties).await;
        SlowRelay {
            _tmp: tmp,
            _node: node,
            subject,
            group,
            channel,
            _connection: connection,
            relayed,
            _progress: progress,
            app,
        }
    }
}

/// A handler of 7.5 s (more than two 3 s heartbeat intervals) that sends every 1.5 s keeps
/// its connection: each send heartbeats when one is due. Its message is handled once: relayed
/// once, not redelivered, and a marker published after it is relayed next (a requeued
/// message would come first), with no reconnect.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_handler_that_sends_as_it_goes_keeps_its_connection_and_message() {
    let mut slow = SlowRelay::start("1500,1500,1500,1500,1500").await;
    let first = next(&mut slow.relayed).await;
    assert_eq!(data(&first), "slow job");
    assert_eq!(header(&first, "amqp-redelivered"), None, "a redelivery");
    publish(
        &slow.channel,
        "amq.topic",
        &slow.subject,
        b"marker",
        BasicProperties::default(),
    )
    .await;
    let after = next(&mut slow.relayed).await;
    let stderr = slow.app.stderr_so_far();
    assert_eq!(
        data(&after),
        "marker",
        "the slow message came again; app stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("reconnected to") && !stderr.contains("was lost"),
        "{stderr}"
    );
}

/// A handler of 10 s that never calls out starves the connection of heartbeats for more
/// than three 3 s intervals: RabbitMQ closes it and requeues the message. The adapter says
/// why the message comes again, and the message is not lost: once the instance is gone it
/// is in the group's queue, marked redelivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_handler_that_starves_the_heartbeat_says_so_and_its_message_stays_queued() {
    let mut slow = SlowRelay::start("10000").await;
    slow.app
        .wait_for(
            "came on a connection that was lost while its handler ran",
            1,
        )
        .await;
    let stderr = slow.app.stderr_so_far();
    assert!(
        stderr.contains("two heartbeat intervals (6 s)")
            && stderr.contains("have the handler send more often"),
        "{stderr}"
    );
    drop(slow.app);
    let mut queue = slow
        .channel
        .basic_consume(
            slow.group.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume the group's queue");
    let kept = next(&mut queue).await;
    assert_eq!(data(&kept), "slow job");
    assert!(kept.redelivered, "the message was delivered before");
}
