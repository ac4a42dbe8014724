//! Redis over TLS end to end: the example publisher composed with `--broker rediss://...`
//! (the `backend-redis-tls` adapter, rustls inside the component) and run on the real
//! `wasmtime` CLI against a `redis-server` of the test's own serving TLS on a free port, with
//! certificates the tests make (`support::tls`). The same server also listens in plaintext
//! on another port, where a native client checks what arrived. Each failure a user can meet
//! (untrusted, expired or mismatched certificate, no TLS on the server, TLS server reached
//! with `redis://`, a missing client certificate) must be one line naming its cause.

mod support;

use std::path::Path;

use support::app::run;
use support::redis::{connect, Server};
use support::tls::{
    assert_inspect_shows_the_tls_ca, assert_one_connection_error, failure, publisher, Pem, Pki,
};
use support::unique;

/// Publishes two entries to a fresh stream with `component` (composed for Streams mode)
/// and checks over the plaintext port that Redis stored them.
async fn publish_and_check(server: &Server, component: &Path, env: &[(&str, &str)]) {
    let stream = unique("tls");
    let mut all = vec![("TOPIC", stream.as_str()), ("COUNT", "2")];
    all.extend_from_slice(env);
    let (status, stderr) = run(component, &all).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    // `send` returns once XADD was answered: the entries are there now.
    let mut con = connect(&server.url());
    let stored: usize = redis::cmd("XLEN").arg(&stream).query(&mut con).unwrap();
    assert_eq!(stored, 2, "entries in {stream}");
}

/// `url` in Streams mode.
fn streams(url: &str) -> String {
    format!("{url}?mode=streams")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_sends_over_tls_verified_against_the_tls_ca() {
    let pki = Pki::new();
    let server = Server::start_tls(&pki, &pki.server, false, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &streams(&server.tls_url()), &["--tls-ca", ca]);
    publish_and_check(&server, &component, &[]).await;
    assert_inspect_shows_the_tls_ca(&component, "backend-redis-tls");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_takes_the_client_certificate_from_the_environment() {
    let pki = Pki::new();
    let server = Server::start_tls(&pki, &pki.server, true, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &streams(&server.tls_url()), &["--tls-ca", ca]);
    let (cert, key) = (pki.client.cert_text(), pki.client.key_text());
    publish_and_check(
        &server,
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
    let server = Server::start_tls(&pki, &pki.untrusted, false, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let own_ca = publisher(tmp.path(), &server.tls_url(), &["--tls-ca", ca]);
    let stderr = failure(&own_ca, &[]).await;
    assert_one_connection_error(&stderr, "not signed by the `--tls-ca` authority");
    let mozilla = publisher(tmp.path(), &server.tls_url(), &[]);
    let stderr = failure(&mozilla, &[]).await;
    assert_one_connection_error(&stderr, "not signed by a trusted authority");
}

/// The stderr of the publisher, composed with `--tls-ca` (the test CA), failing against a
/// server that serves the certificate `served` picks.
async fn failure_with_served_certificate(served: impl Fn(&Pki) -> &Pem) -> String {
    let pki = Pki::new();
    let server = Server::start_tls(&pki, served(&pki), false, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(tmp.path(), &server.tls_url(), &["--tls-ca", ca]);
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
async fn a_tls_port_reached_with_redis_scheme_says_to_use_rediss() {
    let pki = Pki::new();
    let server = Server::start_tls(&pki, &pki.server, false, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let component = publisher(tmp.path(), &server.plaintext_url_of_tls_port(), &[]);
    let stderr = failure(&component, &[]).await;
    assert_one_connection_error(&stderr, "use a `rediss://` broker URL");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_tls_is_named_as_such() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let url = server.url().replacen("redis://", "rediss://", 1);
    let component = publisher(tmp.path(), &url, &[]);
    let stderr = failure(&component, &[]).await;
    assert_one_connection_error(&stderr, &format!("TLS with {url} failed: "));
    // Redis reads the ClientHello as an inline command: it answers an error once a newline
    // byte came (not TLS), or waits for one (no handshake within the limit).
    let no_tls = [
        "the server did not answer in TLS",
        "no TLS handshake within",
    ];
    assert!(
        no_tls.iter().any(|cause| stderr.contains(cause)),
        "expected the cause, a server that does not speak TLS:\n{stderr}"
    );
}
