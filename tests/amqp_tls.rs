//! AMQP over TLS end to end: the publisher example composed with `--broker amqps://...`
//! (the `backend-amqp-tls` adapter, rustls inside the component; PLAIN login inside TLS)
//! and run on the real `wasmtime` CLI against a RabbitMQ node of the test's own with a TLS
//! listener on a free port that requires a client certificate, with certificates the test
//! makes (`support::tls`); checked from the outside by a native client (lapin) on the same
//! node's plaintext port. RabbitMQ nodes take seconds to start, so one test runs every case
//! on one node. The certificate errors (expired, other host) are the shared transport's and
//! proven against nats-server and Mosquitto (`tests/nats_tls.rs`, `tests/mqtt_tls.rs`).

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;

use support::rabbitmq::{env, listen, native_at, Node};
use support::tls::{assert_one_connection_error, failure, publisher, Pki};
use support::unique;

/// Waits (at most 60 s) until `port` on 127.0.0.1 accepts TCP connections.
fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_publishes_with_mutual_tls_and_names_each_failure() {
    let pki = Pki::new();
    let tls_port = support::free_port();
    let config = format!(
        "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
         ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
         ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
        pki.ca.display(),
        pki.server.cert.display(),
        pki.server.key.display(),
    );
    let node = tokio::task::spawn_blocking(move || Node::start_with_config(&config))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || wait_until_listening(tls_port))
        .await
        .unwrap();
    let tls_url = format!("amqps://127.0.0.1:{tls_port}");
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let (cert, key) = (pki.client.cert_text(), pki.client.key_text());
    let identity = [
        ("MSGPLUG_TLS_CERT", cert.as_str()),
        ("MSGPLUG_TLS_KEY", &key),
    ];

    // Publish over mutual TLS, PLAIN login inside it; a native client on the plaintext port
    // receives the messages.
    let component = publisher(tmp.path(), &tls_url, &["--tls-ca", ca]);
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

    // No client certificate: the node refuses the handshake.
    let stderr = failure(&component, &env(&[])).await;
    assert_one_connection_error(&stderr, "refused the client certificate");

    // The Mozilla roots do not trust the test CA.
    let mozilla = publisher(tmp.path(), &tls_url, &[]);
    let stderr = failure(&mozilla, &env(&identity)).await;
    assert_one_connection_error(&stderr, "not signed by a trusted authority");

    // `amqp://` to the TLS port, `amqps://` to the plaintext port.
    let plain_to_tls = publisher(tmp.path(), &format!("amqp://127.0.0.1:{tls_port}"), &[]);
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
