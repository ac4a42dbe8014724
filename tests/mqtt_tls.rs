//! MQTT over TLS end to end: the publisher example composed with `--broker mqtts://...`
//! (the `backend-mqtt-tls` adapter, rustls inside the component) and run on the real
//! `wasmtime` CLI against a Mosquitto of the test's own with a TLS listener on a free port,
//! with certificates the tests make (`support::tls`); checked from the outside by a native
//! client (rumqttc) on the same broker's plaintext listener. Each failure a user can meet
//! (untrusted, expired or mismatched certificate, no TLS on the port, TLS port reached with
//! `mqtt://`, a missing client certificate) must be one line naming its cause, never a hang.

mod support;

use std::path::Path;

use support::mqtt::{Mosquitto, Native};
use support::tls::{assert_one_connection_error, failure, publisher, Pem, Pki};
use support::unique;

/// The `mqtts://` URL of the TLS listener on `port` at 127.0.0.1 (the certificates name it).
fn tls_url(port: u16) -> String {
    format!("mqtts://127.0.0.1:{port}")
}

/// Publishes two messages with `component` (given `env`) and checks that a native client
/// on the plaintext listener of `broker` receives them.
async fn publish_and_receive(broker: &Mosquitto, component: &Path, env: &[(&str, &str)]) {
    let topic = unique("tls");
    let mut native = Native::connect(broker.port).await;
    native.subscribe(&topic).await;
    let mut all = vec![("TOPIC", topic.as_str()), ("COUNT", "2")];
    all.extend_from_slice(env);
    let (status, stderr) = support::app::run(component, &all).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    for i in 1..=2 {
        let message = native.next().await;
        assert_eq!(message.payload.as_ref(), format!("hello #{i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_sends_over_tls_verified_against_the_tls_ca() {
    let pki = Pki::new();
    let (broker, tls_port) = Mosquitto::start_tls(&pki, &pki.server, false);
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &tls_url(tls_port), &["--tls-ca", ca]);
    publish_and_receive(&broker, &component, &[]).await;

    let inspect = support::msgplug()
        .arg("inspect")
        .arg(&component)
        .output()
        .expect("run msgplug inspect");
    let text = support::text(&inspect.stdout);
    assert!(text.contains("backend-mqtt-tls"), "{text}");
    assert!(
        text.contains("TLS trusts:        only the `--tls-ca` CA (1 PEM certificate(s)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_takes_the_client_certificate_from_the_environment() {
    let pki = Pki::new();
    let (broker, tls_port) = Mosquitto::start_tls(&pki, &pki.server, true);
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &tls_url(tls_port), &["--tls-ca", ca]);
    let (cert, key) = (pki.client.cert_text(), pki.client.key_text());
    publish_and_receive(
        &broker,
        &component,
        &[("MSGPLUG_TLS_CERT", &cert), ("MSGPLUG_TLS_KEY", &key)],
    )
    .await;

    let stderr = failure(&component, &[]).await;
    assert_one_connection_error(&stderr, "refused the client certificate");
    assert!(
        stderr.contains("MSGPLUG_TLS_CERT and MSGPLUG_TLS_KEY"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_is_refused_naming_the_trust_it_lacks() {
    let pki = Pki::new();
    let (_broker, tls_port) = Mosquitto::start_tls(&pki, &pki.untrusted, false);
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let own_ca = publisher(tmp.path(), &tls_url(tls_port), &["--tls-ca", ca]);
    let stderr = failure(&own_ca, &[]).await;
    assert_one_connection_error(&stderr, "not signed by the `--tls-ca` authority");
    let mozilla = publisher(tmp.path(), &tls_url(tls_port), &[]);
    let stderr = failure(&mozilla, &[]).await;
    assert_one_connection_error(&stderr, "not signed by a trusted authority");
    assert!(stderr.contains("--tls-ca FILE"), "{stderr}");
}

/// The stderr of the publisher, composed with `--tls-ca` (the test CA), failing against a
/// TLS listener that serves the certificate `served` picks.
async fn failure_with_served_certificate(served: impl Fn(&Pki) -> &Pem) -> String {
    let pki = Pki::new();
    let (_broker, tls_port) = Mosquitto::start_tls(&pki, served(&pki), false);
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &tls_url(tls_port), &["--tls-ca", ca]);
    failure(&component, &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_host_is_a_host_name_mismatch() {
    let stderr = failure_with_served_certificate(|pki| &pki.other_host).await;
    assert_one_connection_error(&stderr, "not valid for the host name `127.0.0.1`");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate_is_named_expired() {
    let stderr = failure_with_served_certificate(|pki| &pki.expired).await;
    assert_one_connection_error(&stderr, "the server's certificate has expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_listener_reached_with_mqtt_scheme_says_to_use_mqtts() {
    let pki = Pki::new();
    let (_broker, tls_port) = Mosquitto::start_tls(&pki, &pki.server, false);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{tls_port}");
    let component = publisher(tmp.path(), &url, &[]);
    let stderr = failure(&component, &[]).await;
    assert_one_connection_error(&stderr, "use a `mqtts://` broker URL");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_without_tls_is_named_as_such() {
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let component = publisher(tmp.path(), &tls_url(broker.port), &[]);
    let stderr = failure(&component, &[]).await;
    assert_one_connection_error(&stderr, "does the server speak TLS on this port?");
}
