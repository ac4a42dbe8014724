//! NATS over TLS end to end: the example apps composed with `--broker tls://...` (the
//! `backend-nats-tls` adapter, rustls inside the component) and run on the real `wasmtime`
//! CLI against a `nats-server` of the test's own serving TLS on a free port, with
//! certificates the tests make (`support::tls`); checked from the outside by a native
//! client (async-nats over its own TLS). Each failure a user can meet (untrusted, expired
//! or mismatched certificate, no TLS on the server, TLS server reached with `nats://`, a
//! missing client certificate) must be one line naming its cause, never a hang.
//!
//! The machine's nats-server is 2.9, which has no `handshake_first`: the `tls_first=true`
//! test runs nats-server 2.15.1 from `$MSGPLUG_NATS_SERVER_NEW` (`.ci/setup` installs it)
//! and fails, saying so, when that is missing.

mod support;

use std::path::Path;

use async_nats::{Client, ConnectOptions};
use futures_util::StreamExt;

use support::app::run;
use support::nats::{connect_with, round_trip, within, Server};
use support::tls::{
    assert_inspect_shows_the_tls_ca, assert_one_connection_error, failure, publisher, Pem, Pki,
};
use support::unique;

/// Starts a nats-server serving TLS with `cert`; `mutual` requires client certificates.
async fn tls_server(pki: &Pki, cert: &Pem, mutual: bool) -> Server {
    let config = pki.nats_config(cert, mutual);
    Server::start(&["-c", config.to_str().expect("UTF-8 path")]).await
}

/// The `tls://` URL of `server` at 127.0.0.1 (the test certificates name it).
fn tls_url(server: &Server) -> String {
    format!("tls://127.0.0.1:{}", server.port)
}

/// A native client over TLS, trusting the test CA and presenting the client certificate.
async fn native(pki: &Pki, server: &Server) -> Client {
    // Two providers are compiled into the tests' rustls (by different dependencies): pick
    // one for async-nats. Another test may have installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client.cert.clone(), pki.client.key.clone());
    connect_with(&tls_url(server), options).await
}

/// Publishes `count` messages on `topic` with the publisher over TLS and checks that the
/// native client receives them.
async fn publish_and_receive(client: &Client, component: &Path, env: &[(&str, &str)]) {
    let topic = unique("tls");
    let mut subscriber = client.subscribe(topic.clone()).await.expect("subscribe");
    round_trip(client).await;
    let mut all = vec![("TOPIC", topic.as_str()), ("COUNT", "2")];
    all.extend_from_slice(env);
    let (status, stderr) = run(component, &all).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    for i in 1..=2 {
        let message = within("message over TLS", subscriber.next())
            .await
            .expect("subscription open");
        assert_eq!(message.payload.as_ref(), format!("hello #{i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_sends_over_tls_verified_against_the_tls_ca() {
    let pki = Pki::new();
    let server = tls_server(&pki, &pki.server, false).await;
    let client = native(&pki, &server).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &tls_url(&server), &["--tls-ca", ca]);
    publish_and_receive(&client, &component, &[]).await;
    assert_inspect_shows_the_tls_ca(&component, "backend-nats-tls");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_takes_the_client_certificate_from_the_environment() {
    let pki = Pki::new();
    let server = tls_server(&pki, &pki.server, true).await;
    let client = native(&pki, &server).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &tls_url(&server), &["--tls-ca", ca]);
    let (cert, key) = (pki.client.cert_text(), pki.client.key_text());
    // The server maps the certificate's subject to its only user (`verify_and_map`).
    publish_and_receive(
        &client,
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

    let stderr = failure(&component, &[("MSGPLUG_TLS_CERT", &cert)]).await;
    assert!(
        stderr.contains("MSGPLUG_TLS_CERT is set but MSGPLUG_TLS_KEY is not"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_is_refused_naming_the_trust_it_lacks() {
    let pki = Pki::new();
    let server = tls_server(&pki, &pki.untrusted, false).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let own_ca = publisher(tmp.path(), &tls_url(&server), &["--tls-ca", ca]);
    let stderr = failure(&own_ca, &[]).await;
    assert_one_connection_error(&stderr, "not signed by the `--tls-ca` authority");
    let mozilla = publisher(tmp.path(), &tls_url(&server), &[]);
    let stderr = failure(&mozilla, &[]).await;
    assert_one_connection_error(&stderr, "not signed by a trusted authority");
    assert!(stderr.contains("--tls-ca FILE"), "{stderr}");
}

/// The stderr of the publisher, composed with `--tls-ca` (the test CA), failing against a
/// server that serves the certificate `served` picks.
async fn failure_with_served_certificate(served: impl Fn(&Pki) -> &Pem) -> String {
    let pki = Pki::new();
    let server = tls_server(&pki, served(&pki), false).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &tls_url(&server), &["--tls-ca", ca]);
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
async fn a_tls_server_reached_with_nats_scheme_says_to_use_tls() {
    let pki = Pki::new();
    let server = tls_server(&pki, &pki.server, false).await;
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", server.port);
    let component = publisher(tmp.path(), &url, &[]);
    let stderr = failure(&component, &[]).await;
    assert_one_connection_error(&stderr, "requires TLS: use a `tls://` broker URL");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_tls_is_named_as_such() {
    let server = Server::start(&[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let component = publisher(tmp.path(), &tls_url(&server), &[]);
    let stderr = failure(&component, &[]).await;
    assert_one_connection_error(&stderr, "does not offer TLS");
    // TLS first: the server's plaintext INFO is not a TLS answer.
    let component = publisher(
        tmp.path(),
        &tls_url(&server),
        &["--option", "tls_first=true"],
    );
    let stderr = failure(&component, &[]).await;
    assert_one_connection_error(&stderr, "the server did not answer in TLS");
}

#[test]
fn compose_refuses_a_tls_ca_that_is_missing_or_not_a_certificate() {
    let pki = Pki::new();
    let compose_with_ca = |ca: &Path| {
        let output = support::msgplug()
            .arg("compose")
            .arg(support::example("publisher"))
            .arg("-o")
            .arg(pki.dir().join("never.wasm"))
            .args(["--broker", "tls://127.0.0.1:4222", "--tls-ca"])
            .arg(ca)
            .output()
            .expect("run msgplug");
        assert!(!output.status.success());
        support::text(&output.stderr)
    };
    let missing = compose_with_ca(&pki.dir().join("missing.pem"));
    assert!(missing.contains("--tls-ca: cannot read"), "{missing}");
    let key = compose_with_ca(&pki.client.key);
    assert!(key.contains("--tls-ca: it holds a"), "{key}");
    assert!(key.contains("a private key must never be baked"), "{key}");
    let junk = pki.dir().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let junk = compose_with_ca(&junk);
    assert!(
        junk.contains("--tls-ca: no PEM certificate in it"),
        "{junk}"
    );
}

/// The nats-server 2.10+ (`handshake_first`) that `.ci/setup` installs and names in
/// `$MSGPLUG_NATS_SERVER_NEW`; fails the test when it is missing.
fn nats_server_with_handshake_first() -> String {
    let program = std::env::var("MSGPLUG_NATS_SERVER_NEW").unwrap_or_default();
    assert!(
        !program.is_empty() && Path::new(&program).is_file(),
        "MSGPLUG_NATS_SERVER_NEW={program:?} is not a nats-server binary: the TLS-first test \
         needs nats-server 2.10+ (`handshake_first`); `source .ci/setup` installs 2.15.1 and \
         sets it"
    );
    program
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_first_reaches_a_server_that_wants_the_handshake_first() {
    let pki = Pki::new();
    let config = pki.dir().join("nats-handshake-first.conf");
    let text = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n  handshake_first: true\n}}\n",
        pki.server.cert.display(),
        pki.server.key.display()
    );
    std::fs::write(&config, text).expect("write nats-server config");
    let program = nats_server_with_handshake_first();
    let server =
        Server::start_program(&program, &["-c", config.to_str().expect("UTF-8 path")]).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = ConnectOptions::new()
        .require_tls(true)
        .tls_first()
        .add_root_certificates(pki.ca.clone());
    let client = connect_with(&tls_url(&server), options).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let tls_first = publisher(
        tmp.path(),
        &tls_url(&server),
        &["--tls-ca", ca, "--option", "tls_first=true"],
    );
    publish_and_receive(&client, &tls_first, &[]).await;

    // Without the option the adapter waits for the server's INFO, which such a server
    // sends only after the TLS handshake: the error says which option is missing.
    let info_first = publisher(tmp.path(), &tls_url(&server), &["--tls-ca", ca]);
    let stderr = failure(&info_first, &[]).await;
    assert_one_connection_error(&stderr, "add `--option tls_first=true`");
    // `nats://` meets the same silence: the error names the scheme and the option.
    let plaintext = publisher(tmp.path(), &server.url(), &[]);
    let stderr = failure(&plaintext, &[]).await;
    assert_one_connection_error(
        &stderr,
        "use a `tls://` broker URL with `--option tls_first=true`",
    );
}
