//! Kafka over TLS end to end: the example apps composed with `--broker kafka+ssl://...` (the
//! `backend-kafka-tls` adapter, rustls inside the component) and run on the real `wasmtime`
//! CLI against a tansu broker reached only over TLS, with certificates the tests make
//! (`support::tls`), checked by an independent native client (rskafka over TLS).
//!
//! tansu 0.6 cannot serve TLS itself (its `--cert` and `--key` flags exclude each other; see
//! `support::kafka`), so each test starts a tansu of its own behind a TLS front that serves
//! the test's certificate and relays to it; tansu advertises the front, so the bootstrap
//! broker, the partition leaders and the group coordinator are all reached over TLS. Each
//! failure a user can meet (untrusted, expired or mismatched certificate, a leader whose
//! advertised host the certificate does not name, no TLS on the server, a TLS server
//! reached with `kafka://`, a missing client certificate) must be one line naming its
//! cause.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rskafka::client::Client;

use std::path::Path;

use support::app::{run, App};
use support::kafka::{create_topic, partition, tls_client, Tansu};
use support::nats::{within, LIMIT};
use support::tls::{
    assert_inspect_shows_the_tls_ca, assert_one_connection_error, publisher, Pem, Pki,
};
use support::unique;

/// The `wasmtime run` flags for a cluster that advertises `localhost`: the network, and
/// name lookups.
const RESOLVING: &[&str] = &["-S", "inherit-network", "-S", "allow-ip-name-lookup"];

/// How long a failing publisher may run: its send gives up with `connection` only after the
/// adapter's retries (about 16 s of pauses, plus each try), and the tests run side by side
/// on a machine that may be slow.
const FAILURE_LIMIT: Duration = Duration::from_secs(90);

/// Runs `component` on `wasmtime run FLAGS` expecting it to fail (within
/// [`FAILURE_LIMIT`]); returns its stderr.
async fn failure(component: &Path, flags: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec![("TOPIC", "tls.failure"), ("COUNT", "1")];
    all.extend_from_slice(env);
    let (status, stderr) = App::start_with(flags, component, &all)
        .finish_within(FAILURE_LIMIT)
        .await;
    assert!(
        !status.success(),
        "the publisher should have failed:\n{stderr}"
    );
    stderr
}

/// The flags of an app reaching brokers by IP address.
const NETWORK: &[&str] = &["-S", "inherit-network"];

/// The values of the records in `topic`'s `partitions` partitions, once there are `count`
/// of them or `limit` has passed.
async fn values(
    client: &Client,
    topic: &str,
    partitions: i32,
    count: usize,
    limit: Duration,
) -> Vec<String> {
    let mut clients = Vec::new();
    for p in 0..partitions {
        clients.push(partition(client, topic, p).await);
    }
    let mut offsets = vec![0i64; clients.len()];
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    while out.len() < count && Instant::now() < deadline {
        for (p, pc) in clients.iter().enumerate() {
            let (records, _) = within("fetch", pc.fetch_records(offsets[p], 1..1_000_000, 100))
                .await
                .unwrap_or_else(|e| panic!("fetch {topic}/{p}: {e}"));
            for r in records {
                offsets[p] = r.offset + 1;
                let value = r.record.value.unwrap_or_default();
                out.push(String::from_utf8_lossy(&value).into_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_round_trip_over_tls_to_leaders_at_their_advertised_host() {
    let pki = Pki::new();
    // The URL names 127.0.0.1, the cluster advertises `localhost`: the leaders and the
    // coordinator are checked against `localhost` (the certificate names both).
    let broker = Tansu::behind_tls(&pki.server, None, "localhost", false).await;
    let kafka = tls_client(&broker.tls_address(), &pki.ca).await;
    let topic = unique("tls");
    let out = format!("{topic}.upper");
    create_topic(&kafka, &topic, 3).await;
    create_topic(&kafka, &out, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("kafka+ssl://{}", broker.tls_address());
    let ca = pki.ca.to_str().unwrap();

    let component = publisher(dir.path(), &url, &["--tls-ca", ca]);
    let (status, stderr) =
        App::start_with(RESOLVING, &component, &[("TOPIC", &topic), ("COUNT", "5")])
            .finish_within(LIMIT)
            .await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    assert_inspect_shows_the_tls_ca(&component, "backend-kafka-tls");
    // Every send returned after its produce response: all 5 are there.
    let sent = values(&kafka, &topic, 3, 5, Duration::from_secs(5)).await;
    assert_eq!(sent.len(), 5, "{sent:?}");

    let transform = support::compose(
        dir.path(),
        "transform",
        &[
            "--broker",
            &url,
            "--tls-ca",
            ca,
            "--subscribe",
            &topic,
            "--queue-group",
            &unique("g"),
            "--option",
            "auto_offset_reset=earliest",
            "--option",
            "session_timeout_ms=6000",
        ],
    );
    let _app = App::subscribed_with(RESOLVING, &transform, &[]).await;
    let upper = values(&kafka, &out, 3, 5, Duration::from_secs(60)).await;
    let expected: BTreeSet<String> = sent.iter().map(|v| v.to_uppercase()).collect();
    assert_eq!(upper.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(upper.len(), 5, "each record once: {upper:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_runs_over_tls() {
    // tansu 0.6 keeps no user once it requires SASL, so the exchange can only be refused:
    // the refusal shows that SCRAM travelled over the TLS connection to the broker.
    let pki = Pki::new();
    let broker = Tansu::behind_tls(&pki.server, None, "127.0.0.1", true).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("kafka+ssl://{}", broker.tls_address());
    let ca = pki.ca.to_str().unwrap();
    let component = publisher(
        dir.path(),
        &url,
        &["--tls-ca", ca, "--option", "sasl_mechanism=SCRAM-SHA-256"],
    );
    let (status, stderr) = run(
        &component,
        &[
            ("COUNT", "1"),
            ("KAFKA_USERNAME", "alice"),
            ("KAFKA_PASSWORD", "the-password"),
        ],
    )
    .await;
    assert!(!status.success(), "tansu accepted an unknown user");
    assert!(
        stderr.contains(&format!(
            "publisher: send failed: permission denied: SASL SCRAM-SHA-256 authentication as `alice` with {}: the server refused the credentials",
            broker.tls_address()
        )) && !stderr.contains("the-password"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_takes_the_client_certificate_from_the_environment() {
    let pki = Pki::new();
    let broker = Tansu::behind_tls(&pki.server, Some(&pki.ca), "127.0.0.1", false).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("kafka+ssl://{}", broker.tls_address());
    let component = publisher(dir.path(), &url, &["--tls-ca", pki.ca.to_str().unwrap()]);
    let (cert, key) = (pki.client.cert_text(), pki.client.key_text());
    let env = [
        ("TOPIC", "mutual"),
        ("COUNT", "2"),
        ("MSGPLUG_TLS_CERT", cert.as_str()),
        ("MSGPLUG_TLS_KEY", key.as_str()),
    ];
    let (status, stderr) = run(&component, &env).await;
    // A send returns Ok only after the broker acknowledged the produce (acks=all).
    assert!(status.success(), "publisher failed:\n{stderr}");

    let stderr = failure(&component, NETWORK, &[]).await;
    assert_one_connection_error(&stderr, "refused the client certificate");
    assert!(
        stderr.contains("MSGPLUG_TLS_CERT and MSGPLUG_TLS_KEY"),
        "{stderr}"
    );
}

/// The stderr of the publisher, composed for `kafka+ssl://` with `extra` arguments, failing
/// against a broker whose TLS front serves the certificate `served` picks and which
/// advertises `advertised_host`.
async fn failure_with_served_certificate(
    served: impl Fn(&Pki) -> &Pem,
    advertised_host: &str,
    own_ca: bool,
) -> (String, String) {
    let pki = Pki::new();
    let broker = Tansu::behind_tls(served(&pki), None, advertised_host, false).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("kafka+ssl://{}", broker.tls_address());
    let ca = pki.ca.to_str().unwrap();
    let extra: &[&str] = if own_ca { &["--tls-ca", ca] } else { &[] };
    let component = publisher(dir.path(), &url, extra);
    (
        failure(&component, NETWORK, &[]).await,
        broker.tls_address(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_naming_the_trust_it_lacks() {
    let (stderr, _) =
        failure_with_served_certificate(|pki| &pki.untrusted, "127.0.0.1", true).await;
    assert_one_connection_error(&stderr, "not signed by the `--tls-ca` authority");
    let (stderr, _) =
        failure_with_served_certificate(|pki| &pki.untrusted, "127.0.0.1", false).await;
    assert_one_connection_error(&stderr, "not signed by a trusted authority");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_a_host_name_mismatch() {
    let (stderr, address) =
        failure_with_served_certificate(|pki| &pki.other_host, "127.0.0.1", true).await;
    assert_one_connection_error(
        &stderr,
        &format!("TLS with Kafka broker {address} failed: the server's certificate is not valid for the host name `127.0.0.1`"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_checked_against_its_advertised_host_not_the_urls() {
    // The certificate names 127.0.0.1 only: the bootstrap connection (to the URL's
    // 127.0.0.1) passes and asks for the metadata (the broker creates the topic), the
    // leader's (to the advertised `localhost`) must fail.
    let pki = Pki::new();
    let broker = Tansu::behind_tls(&pki.ip_only, None, "localhost", false).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("kafka+ssl://{}", broker.tls_address());
    let component = publisher(dir.path(), &url, &["--tls-ca", pki.ca.to_str().unwrap()]);
    let stderr = failure(&component, RESOLVING, &[]).await;
    let port = broker.tls_address().rsplit_once(':').unwrap().1.to_string();
    // The publisher runs behind the run wrapper: its send returns once the record is held
    // for the window, and the window's produce (at the final flush) is what meets the
    // leader, so the wrapper's one line says why.
    assert!(!stderr.contains("send failed"), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.starts_with("msgplug: the broker did not confirm every message the app sent: ")
        })
        .collect();
    assert!(
        lines.len() == 1
            && lines[0].ends_with(&format!(
                "sent: connection: producing 1 sent record(s): TLS with Kafka broker \
                 localhost:{port} failed: the server's certificate is not valid for the host \
                 name `localhost` of the URL (host-name mismatch)"
            )),
        "expected the wrapper's line naming the leader's host-name mismatch once:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_named_expired() {
    let (stderr, _) = failure_with_served_certificate(|pki| &pki.expired, "127.0.0.1", true).await;
    assert_one_connection_error(&stderr, "the server's certificate has expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_port_reached_with_the_kafka_scheme_says_to_use_kafka_ssl() {
    let pki = Pki::new();
    let broker = Tansu::behind_tls(&pki.server, None, "127.0.0.1", false).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("kafka://{}", broker.tls_address());
    let component = publisher(dir.path(), &url, &[]);
    let stderr = failure(&component, NETWORK, &[]).await;
    assert_one_connection_error(&stderr, "use a `kafka+ssl://` broker URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_tls_is_named_as_such() {
    let broker = Tansu::in_memory().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("kafka+ssl://{}", broker.address());
    let component = publisher(dir.path(), &url, &[]);
    // tansu reads the ClientHello as the size of a ~350 MB request and waits for the rest,
    // so each try ends with the handshake timeout (10 s) and the send fails only after the
    // retries (about 100 s; a broker that closes such a connection fails fast). The cause
    // is logged with the first try: that is what is checked.
    let mut app = App::start(&component, &[("TOPIC", "tls.failure"), ("COUNT", "1")]);
    let failed = format!("TLS with Kafka broker {} failed: ", broker.address());
    app.wait_for_within(&failed, 1, FAILURE_LIMIT).await;
    let stderr = app.stderr_so_far();
    let line = stderr
        .lines()
        .find(|l| l.contains(&failed))
        .expect("the line waited for");
    let no_tls = [
        "the server did not answer in TLS",
        "the server closed the connection during the TLS handshake",
        "no TLS handshake within",
    ];
    assert!(
        line.starts_with("msgplug[kafka]: ") && no_tls.iter().any(|cause| line.contains(cause)),
        "expected the cause, a server that does not speak TLS:\n{stderr}"
    );
}
