//! AMQP over TLS end to end: the publisher example composed with `--broker amqps://...`
//! (the `backend-amqp-tls` adapter, rustls inside the component; PLAIN login inside TLS)
//! and run on the real `wasmtime` CLI against a RabbitMQ node of the test's own with a TLS
//! listener on a free port that requires a client certificate (`Node::start_tls`), with
//! certificates the test makes (`support::tls`); checked from the outside by a native
//! client (lapin) on the same node's plaintext port. Each failure a user can meet
//! (untrusted, expired or mismatched certificate, no TLS on the port, TLS port reached with
//! `amqp://`, a missing client certificate, wrong credentials) must be one line naming its
//! cause, never a hang. RabbitMQ nodes take seconds to start, so one test runs every case
//! on one node: the node serves the expired certificate to clients that ask for
//! `localhost` by SNI and listens on 127.0.0.2 too, which its certificate does not name.

mod support;

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;

use support::app::App;
use support::nats::LIMIT;
use support::rabbitmq::{env, listen, native_at, Node};
use support::tls::{
    assert_inspect_shows_the_tls_ca, assert_one_connection_error, failure, publisher, Pki,
};
use support::unique;

#[tokio::test(flavor = "multi_thread")]
async fn amqps_publishes_with_mutual_tls_and_names_each_failure() {
    let pki = Pki::new();
    let (node, pki) = tokio::task::spawn_blocking(move || (Node::start_tls(&pki, true), pki))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let (cert, key) = (pki.client.cert_text(), pki.client.key_text());
    let identity = [
        ("MSGPLUG_TLS_CERT", cert.as_str()),
        ("MSGPLUG_TLS_KEY", &key),
    ];

    // Publish over mutual TLS, PLAIN login inside it; a native client on the plaintext port
    // receives the messages.
    let component = publisher(tmp.path(), &node.tls_url("127.0.0.1"), &["--tls-ca", ca]);
    assert_inspect_shows_the_tls_ca(&component, "backend-amqp-tls");
    let (_connection, channel) = native_at(&node.native_url()).await;
    let topic = unique("tls");
    let mut consumer = listen(&channel, &topic).await;
    let mut all = env(&identity);
    all.extend([("TOPIC", topic.as_str()), ("COUNT", "2")]);
    let (status, stderr) = support::app::run(&component, &all).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    for i in 1..=2 {
        let delivery = support::nats::within("message over TLS", consumer.next())
            .await
            .expect("consumer open")
            .expect("delivery");
        assert_eq!(delivery.data, format!("hello #{i}").as_bytes());
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }

    // Wrong credentials inside TLS are still `permission-denied`.
    let wrong = [
        ("AMQP_USERNAME", "guest"),
        ("AMQP_PASSWORD", "wrong"),
        identity[0],
        identity[1],
    ];
    let stderr = failure(&component, &wrong).await;
    assert!(
        stderr.contains("send failed: permission denied: "),
        "{stderr}"
    );

    // No client certificate: the node refuses the handshake, and the line says where the
    // certificate comes from.
    let stderr = failure(&component, &env(&[])).await;
    assert_one_connection_error(&stderr, "refused the client certificate");
    assert!(
        stderr.contains("MSGPLUG_TLS_CERT and MSGPLUG_TLS_KEY"),
        "{stderr}"
    );

    // The Mozilla roots do not trust the test CA.
    let mozilla = publisher(tmp.path(), &node.tls_url("127.0.0.1"), &[]);
    let stderr = failure(&mozilla, &env(&identity)).await;
    assert_one_connection_error(&stderr, "not signed by a trusted authority");
    assert!(stderr.contains("--tls-ca FILE"), "{stderr}");

    // 127.0.0.2 reaches the same listener, whose certificate names only 127.0.0.1 and
    // `localhost`.
    let other_host = publisher(tmp.path(), &node.tls_url("127.0.0.2"), &["--tls-ca", ca]);
    let stderr = failure(&other_host, &env(&identity)).await;
    assert_one_connection_error(&stderr, "not valid for the host name `127.0.0.2`");

    // Asked for `localhost` by SNI, the node serves the expired certificate (a host name:
    // wasmtime must be allowed to look it up).
    let expired = publisher(tmp.path(), &node.tls_url("localhost"), &["--tls-ca", ca]);
    let mut all = env(&identity);
    all.extend([("TOPIC", "tls.failure"), ("COUNT", "1")]);
    let lookup = ["-S", "inherit-network", "-S", "allow-ip-name-lookup"];
    let (status, stderr) = App::start_with(&lookup, &expired, &all)
        .finish_within(LIMIT)
        .await;
    assert!(
        !status.success(),
        "the publisher should have failed:\n{stderr}"
    );
    assert_one_connection_error(&stderr, "the server's certificate has expired");

    // `amqp://` to the TLS port, `amqps://` to the plaintext port.
    let tls_port_with_amqp = node.tls_url("127.0.0.1").replacen("amqps://", "amqp://", 1);
    let plain_to_tls = publisher(tmp.path(), &tls_port_with_amqp, &[]);
    let stderr = failure(&plain_to_tls, &env(&[])).await;
    assert_one_connection_error(&stderr, "use a `amqps://` broker URL");
    let tls_to_plain = publisher(
        tmp.path(),
        &node.url().replacen("amqp://", "amqps://", 1),
        &["--tls-ca", ca],
    );
    let stderr = failure(&tls_to_plain, &env(&identity)).await;
    assert_one_connection_error(&stderr, "TLS with amqps://");
}
