//! End to end against Mosquitto: the example apps composed with `--broker mqtt://...` and
//! run on the real `wasmtime` CLI, checked from the outside by an independent native client
//! (rumqttc, not the adapter's own codec). Only what is MQTT's own is here (QoS, `+` and `#`
//! filters, retained messages, correlation data, persistent sessions while the app is down,
//! DUP and order of redeliveries, 3.1.1, the wording of errors); what every backend promises
//! (relay, binary data, request-reply, groups, redelivery, broker restarts, outages,
//! credentials) is checked for each MQTT mode by the conformance suite, `tests/conformance/`.
//!
//! Brokers: the shared Mosquitto on 127.0.0.1:1883. Every topic and client id carries a
//! unique part, so the tests run in parallel; persistent sessions on the shared broker expire
//! a minute after the test (`--option session_expiry=60`).
//!
//! Synchronisation: a composed handler logs `subscribed to` on stderr once the broker
//! acknowledged its subscriptions, and the tests publish only after that line; a native
//! client waits for its `SUBACK`s and, where it matters, its `PUBACK`s. Every wait is bounded;
//! every process is killed when its guard drops.

mod support;

use std::path::Path;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;

use support::app::{run, App};
use support::mqtt::{Mosquitto, Native};
use support::{compose, unique};

/// The port of the shared broker.
const SHARED_PORT: u16 = 1883;

/// The broker URL for `port` on this host.
fn url(port: u16) -> String {
    format!("mqtt://127.0.0.1:{port}")
}

/// The topic of `p`.
fn topic(p: &Publish) -> &str {
    std::str::from_utf8(&p.topic).expect("UTF-8 topic")
}

/// The payload of `p` as text.
fn text(p: &Publish) -> &str {
    std::str::from_utf8(&p.payload).expect("UTF-8 payload")
}

/// The user property `key` of `p`.
fn property<'a>(p: &'a Publish, key: &str) -> Option<&'a str> {
    let properties = p.properties.as_ref()?;
    properties
        .user_properties
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The content type of `p`.
fn content_type(p: &Publish) -> Option<&str> {
    p.properties.as_ref()?.content_type.as_deref()
}

/// Properties with a content type and user properties.
fn properties(content_type: Option<&str>, user: &[(&str, &str)]) -> PublishProperties {
    PublishProperties {
        content_type: content_type.map(String::from),
        user_properties: user
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..PublishProperties::default()
    }
}

/// Compose arguments of `transform` on the broker at `port` for `filter`, plus `extra`.
fn transform(dir: &Path, port: u16, filter: &str, extra: &[&str]) -> std::path::PathBuf {
    let url = url(port);
    let mut args = vec!["--broker", url.as_str(), "--subscribe", filter];
    args.extend_from_slice(extra);
    compose(dir, "transform", &args)
}

// ---------------------------------------------------------------------------------------
// Publish and subscribe, metadata, wildcards, retained messages.

#[tokio::test(flavor = "multi_thread")]
async fn a_composed_publisher_sends_data_content_type_and_user_properties_at_qos_1() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url(SHARED_PORT)]);
    let topic_name = format!("{}/greetings", unique("pub"));
    let mut native = Native::connect(SHARED_PORT).await;
    native.subscribe(&topic_name).await;

    let (status, stderr) = run(&publisher, &[("COUNT", "3"), ("TOPIC", &topic_name)]).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    for i in 1..=3 {
        let message = native.next().await;
        assert_eq!(topic(&message), topic_name);
        assert_eq!(text(&message), format!("hello #{i}"));
        assert_eq!(message.qos, QoS::AtLeastOnce);
        assert_eq!(content_type(&message), Some("text/plain"));
        assert_eq!(property(&message, "seq"), Some(i.to_string().as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_composed_handler_on_a_plus_filter_republishes_native_messages_with_their_properties() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("orders");
    let app = transform(tmp.path(), SHARED_PORT, &format!("{base}/+/in"), &[]);
    let mut native = Native::connect(SHARED_PORT).await;
    native.subscribe(&format!("{base}/+/in.upper")).await;
    let _app = App::subscribed(&app, &[]).await;

    let props = properties(Some("text/plain"), &[("id", "7")]);
    native
        .publish(&format!("{base}/eu/in"), "hello", props)
        .await;
    native
        .publish(
            &format!("{base}/us/in"),
            "hi there",
            PublishProperties::default(),
        )
        .await;
    native
        .publish(
            &format!("{base}/us/other"),
            "not subscribed",
            PublishProperties::default(),
        )
        .await;

    let first = native.next().await;
    assert_eq!(topic(&first), format!("{base}/eu/in.upper"));
    assert_eq!(text(&first), "HELLO");
    assert_eq!(content_type(&first), Some("text/plain"));
    assert_eq!(property(&first, "id"), Some("7"));
    assert_eq!(property(&first, "transformed-by"), Some("transform"));
    assert_eq!(property(&first, "mqtt-retain"), None);
    assert_eq!(property(&first, "mqtt-dup"), None);

    let second = native.next().await;
    assert_eq!(topic(&second), format!("{base}/us/in.upper"));
    assert_eq!(text(&second), "HI THERE");
    assert_eq!(content_type(&second), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retained_message_reaches_a_handler_that_subscribes_later_marked_as_retained() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("status");
    let retained = format!("{base}/door/in");
    let mut native = Native::connect(SHARED_PORT).await;
    native.subscribe(&format!("{base}/+/in.upper")).await;
    native
        .client
        .publish(retained.as_str(), QoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    native.confirmed(1).await;

    let app = transform(tmp.path(), SHARED_PORT, &format!("{base}/+/in"), &[]);
    let _app = App::subscribed(&app, &[]).await;
    let output = native.next().await;
    assert_eq!(text(&output), "OPEN");
    assert_eq!(property(&output, "mqtt-retain"), Some("true"));
    assert!(!output.retain, "a handler's send is never retained");

    // Clear the retained message.
    native
        .client
        .publish(retained.as_str(), QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    native.confirmed(1).await;
}

// ---------------------------------------------------------------------------------------
// Request-reply: a composed responder (MQTT 5 response topic + correlation data).

#[tokio::test(flavor = "multi_thread")]
async fn a_composed_responder_on_a_hash_filter_answers_native_requests_with_their_correlation_data()
{
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("greet");
    let responder = compose(
        tmp.path(),
        "responder",
        &[
            "--broker",
            &url(SHARED_PORT),
            "--subscribe",
            &format!("{base}/#"),
        ],
    );
    let _app = App::subscribed(&responder, &[("REPLIES", "2")]).await;
    let mut native = Native::connect(SHARED_PORT).await;
    let reply_topic = format!("{}/replies", unique("inbox"));
    native.subscribe(&reply_topic).await;

    let request = PublishProperties {
        response_topic: Some(reply_topic.clone()),
        correlation_data: Some(Bytes::from_static(b"\x00req-1")),
        ..PublishProperties::default()
    };
    native
        .publish(&format!("{base}/eu/de"), "Ada", request)
        .await;
    for k in 1..=2 {
        let reply = native.next().await;
        assert_eq!(topic(&reply), reply_topic);
        assert_eq!(text(&reply), format!("hello, Ada ({k}/2)"));
        assert_eq!(content_type(&reply), Some("text/plain"));
        let correlation = reply
            .properties
            .as_ref()
            .and_then(|p| p.correlation_data.clone());
        assert_eq!(correlation.as_deref(), Some(&b"\x00req-1"[..]));
    }
}

// ---------------------------------------------------------------------------------------
// Persistent sessions: at-least-once, redelivery on Err.

#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_session_keeps_the_messages_published_while_the_app_was_down() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("jobs");
    let id = unique("worker");
    let app = transform(
        tmp.path(),
        SHARED_PORT,
        &format!("{base}/+/in"),
        &["--durable", &id, "--option", "session_expiry=60"],
    );
    let mut native = Native::connect(SHARED_PORT).await;
    native.subscribe(&format!("{base}/+/in.upper")).await;
    let first = App::subscribed(&app, &[]).await;
    drop(first); // killed: the session stays on the broker

    for i in 0..3 {
        let props = PublishProperties::default();
        native
            .publish(&format!("{base}/a/in"), format!("m{i}"), props)
            .await;
    }
    native.confirmed(3).await;
    let mut second = App::start(&app, &[]);
    let outputs: Vec<String> = {
        let mut outputs = Vec::new();
        for _ in 0..3 {
            outputs.push(text(&native.next().await).to_string());
        }
        outputs
    };
    assert_eq!(outputs, ["M0", "M1", "M2"], "in order, none lost");
    second.wait_for("subscribed to", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_delivery_is_not_acknowledged_and_comes_again_before_the_ones_behind_it() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("jobs");
    let id = unique("worker");
    let filter = format!("{base}/+/in");
    let app = transform(
        tmp.path(),
        SHARED_PORT,
        &filter,
        &["--durable", &id, "--option", "session_expiry=60"],
    );
    let native = Native::connect(SHARED_PORT).await;
    let mut app = App::subscribed(&app, &[]).await;
    native
        .publish(
            &format!("{base}/a/in"),
            vec![0xff, 0xfe],
            PublishProperties::default(),
        )
        .await;
    native
        .publish(
            &format!("{base}/a/in"),
            "fine",
            PublishProperties::default(),
        )
        .await;

    // One bad message was published; failing twice means the broker sent it again.
    app.wait_for("failed: payload is not UTF-8 text", 2).await;
    drop(app);

    // The broker still holds both, unacknowledged, in the session: a native client that
    // resumes it gets the failed one first, marked as a redelivery.
    let mut resumed = Native::connect_as(SHARED_PORT, &id, false).await;
    let bad = resumed.next().await;
    assert_eq!(&bad.payload[..], [0xff, 0xfe]);
    assert!(bad.dup, "a redelivery carries DUP");
    let fine = resumed.next().await;
    assert_eq!(text(&fine), "fine");
}

// ---------------------------------------------------------------------------------------
// Connections: the wording of a refused connection; MQTT 3.1.1.

#[tokio::test(flavor = "multi_thread")]
async fn a_send_while_the_broker_is_down_fails_with_a_connection_error() {
    let tmp = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url(port)]);
    let (status, stderr) = run(&publisher, &[("COUNT", "1")]).await;
    assert!(!status.success());
    assert!(stderr.contains("connection"), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_that_is_done_sends_disconnect_before_it_exits() {
    let mut broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url(broker.port)]);
    let (status, stderr) = run(&publisher, &[("COUNT", "2")]).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    let log = broker.wait_for_log("Received DISCONNECT from msgplug-");
    assert!(
        !log.iter().any(|l| l.contains("closed its connection")),
        "the broker saw the connection end without DISCONNECT:\n{}",
        log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_3_1_1_carries_data_keeps_a_persistent_session_and_refuses_request_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = format!("{}?version=3.1.1", url(SHARED_PORT));
    let base = unique("old");
    let publisher = compose(tmp.path(), "publisher", &["--broker", &broker]);
    let mut native = Native::connect(SHARED_PORT).await;
    native.subscribe(&format!("{base}/#")).await;
    let greetings = format!("{base}/greetings");
    let (status, stderr) = run(&publisher, &[("COUNT", "1"), ("TOPIC", &greetings)]).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    let message = native.next().await;
    assert_eq!(text(&message), "hello #1");
    assert_eq!(content_type(&message), None, "3.1.1 has no properties");

    let id = unique("old-worker");
    let app = transform(
        tmp.path(),
        SHARED_PORT,
        &format!("{base}/+/in"),
        &["--option", "version=3.1.1", "--durable", &id],
    );
    drop(App::subscribed(&app, &[]).await);
    native
        .publish(
            &format!("{base}/a/in"),
            "kept",
            PublishProperties::default(),
        )
        .await;
    let _again = App::start(&app, &[]);
    let output = loop {
        let message = native.next().await;
        if topic(&message).ends_with(".upper") {
            break message;
        }
    };
    assert_eq!(text(&output), "KEPT");
    // A 3.1.1 session never expires: a clean session of the same id ends it.
    drop(_again);
    drop(Native::connect_as(SHARED_PORT, &id, true).await);

    let requester = compose(tmp.path(), "requester", &["--broker", &broker]);
    let (status, stderr) = run(&requester, &[("TOPIC", &greetings)]).await;
    assert!(!status.success());
    assert!(
        stderr.contains("request-reply is not supported on MQTT 3.1.1"),
        "{stderr}"
    );
}
