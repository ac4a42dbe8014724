//! Pipelined sends outside a handler (issue 14 item 1): the `publisher` example (its own
//! `fn main`, so `--trigger none`) is composed with the run wrapper, which flushes the
//! backend's outbox after the app's run; the NATS backend then lets `send` return once the
//! message is queued and confirms sends in windows. Run on the real `wasmtime` CLI against
//! a real `nats-server`, checked from the outside with `async-nats`.
//!
//! What a user relies on: every message arrives; a failure that only a later confirmation
//! finds (a permissions violation, a JetStream stream that refuses more messages) makes the
//! process exit non-zero with one line saying why, even when every `send` had returned `Ok`.
//!
//! Servers: the ordinary case uses the shared `nats-server` on 127.0.0.1:4222 (unique
//! subjects); the failure cases start their own (an authorization config, a JetStream
//! stream in a temporary store). Every wait is bounded.

mod support;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

use support::app::run;
use support::nats::{connect_with, round_trip, within, Server};
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
