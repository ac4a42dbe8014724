//! End to end against NATS: the example apps composed with `--broker nats://...` and run on
//! the real `wasmtime` CLI (`wasmtime run -S inherit-network --env K=V ...`), checked from
//! the outside by an independent native client (async-nats, not the adapter's own codec).
//! Only what is NATS's own is here (subject wildcards, JetStream streams and durables,
//! core resubscription, host names, the wording of errors); what every backend promises
//! (relay, binary data, request-reply, groups, redelivery, restarts, outages, credentials)
//! is checked for NATS by the conformance suite, `tests/conformance/`.
//!
//! Servers: tests of core NATS use the shared `nats-server` on 127.0.0.1:4222. Tests that stop
//! the server, need authentication or use JetStream start their own `nats-server` (`-a
//! 127.0.0.1 -p PORT -js -sd TMPDIR`) on a free port: JetStream state lives on disk, so a
//! failed test leaves no stream behind on the shared server. Every subject carries a unique
//! suffix, so the tests run in parallel with each other and with other test binaries.
//!
//! Synchronisation: a composed handler logs `subscribed to` on stderr once its subscriptions
//! are live, and the tests publish only after that line; a native subscription is made live
//! by a round trip through the server. Every wait is bounded and fails the test when it
//! runs out; every process is killed when its guard drops, so a failing test leaves none.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap, Message, Subscriber};
use futures_util::StreamExt;

use support::app::{app_lines, run, App};
use support::nats::{connect_with, round_trip, within, Operator, Server, LIMIT};
use support::{compose, unique};

/// The shared server of the ordinary tests.
const SHARED: &str = "nats://127.0.0.1:4222";

/// Connects a native client, failing with advice when no server listens at `url`.
async fn connect(url: &str) -> Client {
    connect_with(url, async_nats::ConnectOptions::new()).await
}

/// The next message on `subscriber`, failing the test when none comes in time.
async fn next(subscriber: &mut Subscriber) -> Message {
    within("message", subscriber.next())
        .await
        .expect("subscription ended")
}

/// The value of header `name` (metadata), matched exactly.
fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// The message's content-type, read from the `Content-Type` header in any letter case.
fn content_type(message: &Message) -> Option<&str> {
    let headers = message.headers.as_ref()?;
    headers
        .iter()
        .find(|(name, _)| name.to_string().eq_ignore_ascii_case("content-type"))
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str())
}

/// The payload as text.
fn data(message: &Message) -> &str {
    std::str::from_utf8(&message.payload).expect("UTF-8 payload")
}

/// Composes example `name` with `args` like [`compose`], and returns the `-S` flags of the
/// `wasmtime` command that `msgplug compose` printed after `Run it with` (on stderr).
fn compose_printing_flags(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, Vec<String>) {
    let out = dir.join(format!("{name}.composed.wasm"));
    let output = support::msgplug()
        .arg("compose")
        .arg(support::example(name))
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .expect("run msgplug");
    let stderr = support::text(&output.stderr);
    assert!(output.status.success(), "compose {name} failed:\n{stderr}");
    let command = stderr
        .lines()
        .find_map(|line| line.split_once("Run it with "))
        .unwrap_or_else(|| panic!("compose printed no `Run it with` line:\n{stderr}"))
        .1;
    let words: Vec<&str> = command.split_whitespace().collect();
    let flags = words
        .windows(2)
        .filter(|pair| pair[0] == "-S")
        .flat_map(|pair| pair.iter().map(|w| w.to_string()))
        .collect();
    (out, flags)
}

/// A JetStream context on `client` whose requests (and publish acks) time out after 5 s.
fn jetstream(client: &Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client.clone())
}

/// Creates stream `name` capturing `subjects` (file storage, so it survives a restart).
async fn create_stream(js: &jetstream::Context, name: &str, subjects: &[&str]) -> stream::Stream {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create stream {name}: {e}"))
}

/// Publishes `payload` on `subject` through JetStream and waits for the publish ack.
async fn js_publish(js: &jetstream::Context, subject: &str, payload: Vec<u8>) {
    js.publish(subject.to_string(), payload.into())
        .await
        .expect("publish")
        .await
        .expect("publish ack");
}

/// Feeds the messages of `stream`, from its start and as they arrive, to `take` until it
/// returns true (everything expected was seen). Returns false if `limit` ran out first.
async fn read_stream(
    stream: &stream::Stream,
    limit: Duration,
    mut take: impl FnMut(Message) -> bool,
) -> bool {
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut messages = reader.messages().await.expect("ordered messages");
    tokio::time::timeout(limit, async {
        while let Some(message) = messages.next().await {
            if take(message.expect("reading the stream").message) {
                return;
            }
        }
        panic!("the stream reader ended");
    })
    .await
    .is_ok()
}

// ---------------------------------------------------------------------------------------
// Core NATS: publish and subscribe.

/// Subject wildcards (`*` and `>`) are NATS's own; what goes through a subscription
/// (content type, metadata, binary data) is checked by `tests/conformance/`.
#[tokio::test(flavor = "multi_thread")]
async fn a_handler_subscribed_with_a_wildcard_takes_every_subject_it_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("orders");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", SHARED, "--subscribe", &format!("{base}.*")],
    );
    let nats = connect(SHARED).await;
    let mut upper = nats.subscribe(format!("{base}.>")).await.unwrap();
    round_trip(&nats).await;
    let _app = App::subscribed(&transform, &[]).await;

    for subject in ["eu", "eu.north", "us"] {
        nats.publish(format!("{base}.{subject}"), subject.into())
            .await
            .unwrap();
    }

    // What the app sends, in order (the inputs come by too); `eu.north` has two tokens
    // after the base, so `*` does not match it.
    let mut outputs = Vec::new();
    while outputs.len() < 2 {
        let message = next(&mut upper).await;
        if message.subject.ends_with(".upper") {
            outputs.push((message.subject.to_string(), data(&message).to_string()));
        }
    }
    assert_eq!(
        outputs,
        [
            (format!("{base}.eu.upper"), "EU".to_string()),
            (format!("{base}.us.upper"), "US".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_handler_built_with_componentize_py_runs_unchanged_against_nats() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("texts");
    let app = support::compose_app(
        tmp.path(),
        support::python_example(),
        &["--broker", SHARED, "--subscribe", &format!("{base}.>")],
    );
    let nats = connect(SHARED).await;
    let mut counted = nats.subscribe(format!("{base}.*.counted")).await.unwrap();
    round_trip(&nats).await;
    let _app = App::subscribed(&app, &[]).await;

    let mut headers = HeaderMap::new();
    headers.insert("lang", "en");
    nats.publish_with_headers(format!("{base}.a"), headers, "three small words".into())
        .await
        .unwrap();

    let out = next(&mut counted).await;
    assert_eq!(out.subject.as_str(), format!("{base}.a.counted"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.payload).expect("JSON payload"),
        serde_json::json!({"topic": format!("{base}.a"), "words": 3})
    );
    assert_eq!(content_type(&out), Some("application/json"));
    assert_eq!(header(&out, "lang"), Some("en"));
}

// ---------------------------------------------------------------------------------------
// Request-reply in both directions.

/// Answers the first request on `subject` with `replies` replies `hi, <data> (k/replies)`
/// and returns that request; subscribed (and live) before it returns.
async fn native_responder(
    nats: &Client,
    subject: &str,
    replies: u32,
) -> tokio::task::JoinHandle<Message> {
    let mut requests = nats.subscribe(subject.to_string()).await.unwrap();
    round_trip(nats).await;
    let nats = nats.clone();
    tokio::spawn(async move {
        let request = next(&mut requests).await;
        let reply_to = request
            .reply
            .clone()
            .expect("the request has a reply subject");
        for k in 1..=replies {
            let text = format!("hi, {} ({k}/{replies})", data(&request));
            nats.publish(reply_to.clone(), text.into()).await.unwrap();
        }
        nats.flush().await.unwrap();
        request
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_returns_the_replies_that_came_when_its_timeout_ends_first() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &["--broker", SHARED]);
    let topic = unique("greet");
    let nats = connect(SHARED).await;
    let _responder = native_responder(&nats, &topic, 2).await;

    let env = [
        ("TOPIC", topic.as_str()),
        ("NAME", "Bo"),
        ("EXPECT", "3"),
        ("TIMEOUT_MS", "1500"),
    ];
    let (status, stderr) = run(&requester, &env).await;
    assert!(status.success(), "requester failed:\n{stderr}");
    assert_eq!(
        app_lines(&stderr),
        ["reply: hi, Bo (1/2)", "reply: hi, Bo (2/2)"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_native_requester_gets_every_reply_of_a_composed_responder() {
    let tmp = tempfile::tempdir().unwrap();
    let topic = unique("greet");
    let responder = compose(
        tmp.path(),
        "responder",
        &["--broker", SHARED, "--subscribe", &topic],
    );
    let _app = App::subscribed(&responder, &[("REPLIES", "2")]).await;
    let nats = connect(SHARED).await;

    // Several replies to one request: our own inbox, as `request` keeps only the first.
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.unwrap();
    nats.publish_with_reply(topic.clone(), inbox, "Ada".into())
        .await
        .unwrap();
    for k in 1..=2 {
        let reply = next(&mut replies).await;
        assert_eq!(data(&reply), format!("hello, Ada ({k}/2)"));
        assert_eq!(content_type(&reply), Some("text/plain"));
    }

    let reply = within("reply", nats.request(topic, "Bo".into()))
        .await
        .expect("request");
    assert_eq!(data(&reply), "hello, Bo (1/2)");
}

// ---------------------------------------------------------------------------------------
// JetStream (each test on its own server: streams live on disk).

/// Compose arguments for `transform` consuming `subject` through durable `durable` on
/// stream `stream`.
fn jetstream_args<'a>(
    url: &'a str,
    subject: &'a str,
    stream: &'a str,
    durable: &'a str,
) -> Vec<&'a str> {
    vec![
        "--broker",
        url,
        "--subscribe",
        subject,
        "--jetstream",
        stream,
        "--durable",
        durable,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_handler_errors_are_redelivered_while_good_messages_are_handled() {
    let server = Server::start(&[]).await;
    let url = server.url();
    let nats = connect(&url).await;
    let js = jetstream(&nats);
    let done = create_stream(&js, "DONE", &["jobs.upper"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut args = jetstream_args(&url, "jobs", "JOBS", "worker");
    args.push("--create-stream");
    let transform = compose(tmp.path(), "transform", &args);
    let mut app = App::subscribed(&transform, &[]).await;

    js_publish(&js, "jobs", vec![0xff, 0xfe]).await;
    js_publish(&js, "jobs", b"fine".to_vec()).await;

    // One bad message was published; failing twice means the broker delivered it again.
    app.wait_for("message on `jobs` failed: payload is not UTF-8 text", 2)
        .await;
    let mut outputs = Vec::new();
    let output = read_stream(&done, LIMIT, |m| {
        outputs.push(data(&m).to_string());
        true
    });
    assert!(output.await, "the good message was not handled");
    assert_eq!(outputs, ["FINE"]);
    let info = js
        .get_stream("JOBS")
        .await
        .expect("--create-stream made stream JOBS")
        .consumer_info("worker")
        .await
        .expect("durable consumer `worker`");
    assert!(
        info.num_redelivered >= 1,
        "the server counts a redelivery: {info:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_without_create_stream_a_missing_stream_is_a_clear_error_naming_it() {
    let server = Server::start(&[]).await;
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let transform = compose(
        tmp.path(),
        "transform",
        &jetstream_args(&url, "jobs", "NOSUCHSTREAM", "worker"),
    );
    let (status, stderr) = run(&transform, &[]).await;
    assert!(
        !status.success(),
        "a missing stream must end the run:\n{stderr}"
    );
    assert!(
        stderr.contains("NOSUCHSTREAM") && stderr.contains("--create-stream"),
        "the error names the stream and how to create it:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_with_the_same_durable_share_the_work() {
    const TOTAL: usize = 1000;
    let server = Server::start(&[]).await;
    let url = server.url();
    let nats = connect(&url).await;
    let js = jetstream(&nats);
    create_stream(&js, "JOBS", &["jobs"]).await;
    let done = create_stream(&js, "DONE", &["jobs.upper"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let transform = compose(
        tmp.path(),
        "transform",
        &jetstream_args(&url, "jobs", "JOBS", "shared"),
    );
    let _a = App::subscribed(&transform, &[("TRANSFORMED_BY", "a")]).await;
    let _b = App::subscribed(&transform, &[("TRANSFORMED_BY", "b")]).await;

    let mut acks = Vec::new();
    for i in 0..TOTAL {
        acks.push(js.publish("jobs", format!("m{i}").into()).await.unwrap());
    }
    for ack in acks {
        within("publish ack", ack.into_future())
            .await
            .expect("publish ack");
    }

    let mut handled = BTreeSet::new();
    let mut shares = BTreeMap::new();
    let mut outputs = 0;
    let all = read_stream(&done, LIMIT * 2, |m| {
        outputs += 1;
        handled.insert(data(&m).to_string());
        let by = header(&m, "transformed-by").unwrap_or("?").to_string();
        *shares.entry(by).or_insert(0) += 1;
        handled.len() == TOTAL
    })
    .await;
    assert!(
        all,
        "{} of {TOTAL} messages handled: {shares:?}",
        handled.len()
    );
    assert_eq!(
        outputs, TOTAL,
        "some messages were handled twice: {shares:?}"
    );
    assert_eq!(
        shares.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"],
        "both instances take a share: {shares:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Long handlers: the ack wait is each delivery's lease (issue 15).

/// Two `relay` instances on durable `shared` of stream JOBS (`jobs`), with stream DONE
/// keeping what they relay (`jobs.relayed`), composed with `extra` options; returns once
/// both pull.
struct LeaseCase {
    _server: Server,
    js: jetstream::Context,
    done: stream::Stream,
    a: App,
    b: App,
    _tmp: tempfile::TempDir,
}

impl LeaseCase {
    async fn start(extra: &[&str]) -> LeaseCase {
        let server = Server::start(&[]).await;
        let url = server.url();
        let js = jetstream(&connect(&url).await);
        create_stream(&js, "JOBS", &["jobs"]).await;
        let done = create_stream(&js, "DONE", &["jobs.relayed"]).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut args = jetstream_args(&url, "jobs", "JOBS", "shared");
        args.extend(extra);
        let relay = compose(tmp.path(), "relay", &args);
        let a = App::subscribed(&relay, &[]).await;
        let b = App::subscribed(&relay, &[]).await;
        LeaseCase {
            _server: server,
            js,
            done,
            a,
            b,
            _tmp: tmp,
        }
    }

    /// Publishes one job whose handler works as the relay's metadata `sleep-ms` says.
    async fn publish_slow_job(&self, sleep_ms: &str) {
        let mut headers = HeaderMap::new();
        headers.insert("sleep-ms", sleep_ms);
        self.js
            .publish_with_headers("jobs", headers, "slow job".into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    /// Waits until the one job was acknowledged, then checks that JetStream delivered it
    /// exactly once (no redelivery to either instance) and that it was relayed once.
    async fn assert_handled_once(&mut self) {
        let relayed = read_stream(&self.done, LIMIT, |m| data(&m) == "slow job").await;
        assert!(relayed, "the job was not relayed within {LIMIT:?}");
        let mut consumer: consumer::PullConsumer = self
            .js
            .get_consumer_from_stream("shared", "JOBS")
            .await
            .expect("durable consumer `shared`");
        let acked = within("the job's ack", async {
            loop {
                let info = consumer.info().await.expect("consumer info");
                if info.ack_floor.stream_sequence == 1 {
                    return info.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert_eq!(
            acked.delivered.consumer_sequence, 1,
            "JetStream delivered the job more than once: {acked:?}"
        );
        let done = self.done.get_info().await.expect("stream DONE info");
        assert_eq!(done.state.messages, 1, "the job was relayed more than once");
        for app in [&mut self.a, &mut self.b] {
            let stderr = app.stderr_so_far();
            assert!(
                !stderr.contains("since its lease was last renewed"),
                "no lease ran out:\n{stderr}"
            );
        }
    }
}

/// The case: a handler of 4 s, two instances on one durable. With
/// `handler_timeout_ms` above the handler's run, the ack wait holds the job until the ack.
#[tokio::test(flavor = "multi_thread")]
async fn a_handler_slower_than_the_default_ack_wait_is_handled_once_with_handler_timeout_ms() {
    let mut case = LeaseCase::start(&["--option", "handler_timeout_ms=6000"]).await;
    case.publish_slow_job("4000").await;
    case.assert_handled_once().await;
}

/// A handler of 4.5 s with a 2 s ack wait keeps its job when it sends every 1.5 s: each
/// send renews the ack wait (`+WPI`).
#[tokio::test(flavor = "multi_thread")]
async fn a_long_handler_that_sends_as_it_goes_keeps_its_job_past_the_ack_wait() {
    let mut case = LeaseCase::start(&["--option", "ack_wait_ms=2000"]).await;
    case.publish_slow_job("1500,1500,1500").await;
    case.assert_handled_once().await;
}

/// Without `handler_timeout_ms` a handler of 4 s outlives a 2 s ack wait: JetStream delivers
/// the job again, and the instance whose handler overran says so when it acks.
#[tokio::test(flavor = "multi_thread")]
async fn a_handler_that_overran_its_ack_wait_says_so_when_it_acks() {
    let mut case = LeaseCase::start(&["--option", "ack_wait_ms=2000"]).await;
    case.publish_slow_job("4000").await;
    let overran = "since its lease was last renewed, longer than the ack wait of 2.0 s";
    let (a, b) = (&mut case.a, &mut case.b);
    tokio::select! {
        () = a.wait_for(overran, 1) => {}
        () = b.wait_for(overran, 1) => {}
    }
    let stderr = format!("{}\n{}", a.stderr_so_far(), b.stderr_so_far());
    let line = stderr
        .lines()
        .find(|l| l.contains(overran))
        .expect("the line waited for");
    assert!(
        line.starts_with("msgplug[nats]: the handler of a message from `jobs` ran ")
            && line.contains("--option handler_timeout_ms"),
        "the line names the subject and the option to set: {line}"
    );
}

// ---------------------------------------------------------------------------------------
// Outages and restarts.

/// A send during an outage fails with `connection` (checked by `tests/conformance/`); here
/// the NATS backend's wording: the broker and the cause in words.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_server_down_a_publish_says_connection_refused_in_words() {
    let mut server = Server::start(&[]).await;
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url]);
    server.stop().await;

    // No `os error N`: that would be WASI's errno, not the host's.
    let (status, stderr) = run(&publisher, &[("TOPIC", "down"), ("COUNT", "1")]).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "publisher: send failed: connection: cannot connect to {url}: connection refused"
        )) && !stderr.contains("os error"),
        "{stderr}"
    );
}

/// A send to a subject whose stream stops answering fails instead of counting as sent:
/// JetStream's 503 (no stream there now) is not a publish ack. Deleting the stream makes it
/// answer so; a stopping server does the same for a moment while it still takes acks, which
/// lost messages in the soak (`tests/soak.rs`) until such a send failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_to_a_stream_that_stops_answering_fails_instead_of_counting_as_stored() {
    let server = Server::start(&[]).await;
    let url = server.url();
    let nats = connect(&url).await;
    let js = jetstream(&nats);
    let stream = create_stream(&js, "OUT", &["out"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url]);
    let app = App::start(&publisher, &[("TOPIC", "out"), ("COUNT", "4000000000")]);
    within("a message stored in OUT", async {
        while stream.get_info().await.map_or(0, |i| i.state.messages) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    js.delete_stream("OUT").await.expect("delete stream OUT");

    let (status, stderr) = app.finish_within(LIMIT).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    // Sends after the deletion get JetStream's 503. A message the stream took just as it
    // was deleted is never acknowledged at all (seen in 1 run of 3): its window then fails
    // with `timeout` first. Either way the send fails; none counts as stored.
    let lines = app_lines(&stderr);
    assert!(
        lines == ["publisher: send failed: connection: no JetStream stream stored the message sent to `out` \
                   (status 503: the stream is gone, or the server is stopping or starting)"]
            || lines == ["publisher: send failed: timeout"],
        "one failed send, from the 503 or from an ack that never came:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_subscription_resumes_after_a_server_restart() {
    let mut server = Server::start(&[]).await;
    let url = server.url();
    let options =
        async_nats::ConnectOptions::new().reconnect_delay_callback(|_| Duration::from_millis(100));
    let nats = connect_with(&url, options).await;
    let mut outputs = nats.subscribe("events.upper").await.unwrap();
    round_trip(&nats).await;
    let tmp = tempfile::tempdir().unwrap();
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", &url, "--subscribe", "events"],
    );
    let mut app = App::subscribed(&transform, &[]).await;
    nats.publish("events", "before".into()).await.unwrap();
    assert_eq!(data(&next(&mut outputs).await), "BEFORE");

    server.stop().await;
    server.launch().await;
    // Both clients are back with their subscriptions: the native one once a round trip
    // passes, the app once it says so (it has then re-subscribed, confirmed by the server).
    round_trip(&nats).await;
    app.wait_for("reconnected to", 1).await;
    nats.publish("events", "after".into()).await.unwrap();
    let output = within("output after the restart", outputs.next()).await;
    assert_eq!(
        output.as_ref().map(data),
        Some("AFTER"),
        "app stderr:\n{}",
        app.stderr_so_far()
    );
}

// ---------------------------------------------------------------------------------------
// Brokers given by host name.

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_given_by_host_name_works_with_the_flags_compose_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, flags) = compose_printing_flags(tmp.path(), "publisher", &["--broker", SHARED]);
    assert_eq!(
        flags,
        ["-S", "inherit-network"],
        "an IP address needs no lookup"
    );
    let by_name = SHARED.replace("127.0.0.1", "localhost");
    let (publisher, flags) =
        compose_printing_flags(tmp.path(), "publisher", &["--broker", &by_name]);
    assert_eq!(
        flags,
        ["-S", "inherit-network", "-S", "allow-ip-name-lookup"]
    );

    let topic = unique("named");
    let nats = connect(SHARED).await;
    let mut inbox = nats.subscribe(topic.clone()).await.unwrap();
    round_trip(&nats).await;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = App::start_with(&flags, &publisher, &[("TOPIC", &topic), ("COUNT", "1")]);
    let (status, stderr) = app.finish_within(LIMIT).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    assert_eq!(data(&next(&mut inbox).await), "hello #1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_name_without_allow_ip_name_lookup_fails_with_an_error_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let by_name = SHARED.replace("127.0.0.1", "localhost");
    let publisher = compose(tmp.path(), "publisher", &["--broker", &by_name]);
    let topic = unique("named");
    let (status, stderr) = run(&publisher, &[("TOPIC", &topic), ("COUNT", "1")]).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to {by_name}"))
            && stderr.contains("`-S allow-ip-name-lookup`"),
        "the error names the broker and the missing flag:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// NKey and JWT (`.creds`) authentication: the adapter signs the server's nonce.

/// A server of the test's own started with `config` (a nats-server configuration file).
async fn server_with_config(dir: &Path, config: &str) -> Server {
    let path = dir.join("nats-server.conf");
    std::fs::write(&path, config).expect("write the server configuration");
    Server::start(&["-c", path.to_str().expect("a UTF-8 path")]).await
}

/// Runs `publisher` (composed for `url`) with `env`; returns its status and stderr.
async fn publish_one(publisher: &Path, topic: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut all = vec![("TOPIC", topic), ("COUNT", "1")];
    all.extend_from_slice(env);
    let (status, stderr) = run(publisher, &all).await;
    (status.success(), stderr)
}

/// Asserts that a refused publish says `permission denied` with the server's own text,
/// and shows no part of `secret`.
fn assert_refused(ok: bool, stderr: &str, secret: &str) {
    assert!(
        !ok,
        "the publisher succeeded with refused credentials:\n{stderr}"
    );
    assert!(
        stderr.contains("publisher: send failed: permission denied")
            && stderr.contains("Authorization Violation"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(secret),
        "the secret was printed:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nkey_user_publishes_with_the_seed_from_nats_nkey_and_a_wrong_seed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let config = format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    );
    let server = server_with_config(tmp.path(), &config).await;
    let publisher = compose(tmp.path(), "publisher", &["--broker", &server.url()]);
    let nats = connect_with(
        &server.url(),
        async_nats::ConnectOptions::with_nkey(seed.clone()),
    )
    .await;
    let topic = unique("nkey");
    let mut inbox = nats.subscribe(topic.clone()).await.unwrap();
    round_trip(&nats).await;

    let (ok, stderr) = publish_one(&publisher, &topic, &[("NATS_NKEY", &seed)]).await;
    assert!(ok, "publisher failed:\n{stderr}");
    assert_eq!(data(&next(&mut inbox).await), "hello #1");

    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let (ok, stderr) = publish_one(&publisher, &topic, &[("NATS_NKEY", &stranger)]).await;
    assert_refused(ok, &stderr, &stranger);
    // Nothing signed, nothing accepted.
    let (ok, stderr) = publish_one(&publisher, &topic, &[]).await;
    assert!(!ok && stderr.contains("permission denied"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_user_from_nats_creds_handles_messages_and_a_user_of_another_issuer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let operator = Operator::generate();
    let server = server_with_config(tmp.path(), &operator.server_config()).await;
    let url = server.url();
    let nats = connect_with(
        &url,
        async_nats::ConnectOptions::with_credentials(&operator.creds()).unwrap(),
    )
    .await;
    let base = unique("creds");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", &url, "--subscribe", &format!("{base}.*")],
    );
    let mut upper = nats.subscribe(format!("{base}.*.upper")).await.unwrap();
    round_trip(&nats).await;
    let creds = operator.creds();
    let _app = App::subscribed(&transform, &[("NATS_CREDS", &creds)]).await;
    nats.publish(format!("{base}.eu"), "hi".into())
        .await
        .unwrap();
    let message = next(&mut upper).await;
    assert_eq!(
        (message.subject.as_str(), data(&message)),
        (format!("{base}.eu.upper").as_str(), "HI")
    );

    // A user JWT that the account did not sign.
    let forged = operator.creds_signed_by(&nkeys::KeyPair::new_account());
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url]);
    let (ok, stderr) = publish_one(&publisher, &base, &[("NATS_CREDS", &forged)]).await;
    let seed = forged
        .lines()
        .find(|l| l.starts_with("SU"))
        .expect("a seed line");
    assert_refused(ok, &stderr, seed);
    // Not a `.creds` file: the adapter says so before it connects.
    let (ok, stderr) = publish_one(&publisher, &base, &[("NATS_CREDS", "SUAB")]).await;
    assert!(
        !ok && stderr.contains("NATS_CREDS has no user JWT") && !stderr.contains("SUAB"),
        "{stderr}"
    );
}

/// The push path: `wasmtime serve` with `--max-instance-reuse-count` (the flag compose's
/// note suggests for the http trigger) hands one instance many requests, and the NATS backend
/// keeps its connection across them: 20 POSTs open one client connection per instance on the
/// server (its monitoring `varz`), not 20. On a wasmtime whose `serve` lacks the flag (36.0.9) there
/// is nothing to check.
#[tokio::test(flavor = "multi_thread")]
async fn a_reused_serve_instance_keeps_one_broker_connection_across_requests() {
    const REQUESTS: u64 = 20;
    let help = support::wasmtime()
        .args(["serve", "--help"])
        .output()
        .expect("wasmtime serve --help");
    if !support::text(&help.stdout).contains("--max-instance-reuse-count") {
        eprintln!("skipped: this wasmtime's `serve` has no --max-instance-reuse-count");
        return;
    }
    let monitor = support::free_port();
    let server = Server::start(&["-m", &monitor.to_string()]).await;
    let tmp = tempfile::tempdir().unwrap();
    let subject = unique("reuse");
    let out = compose(
        tmp.path(),
        "transform",
        &["--broker", &server.url(), "--trigger", "http"],
    );
    let port = support::free_port();
    let mut serve = support::wasmtime()
        .args(["serve", "-S", "cli", "-S", "inherit-network"])
        .args(["--max-instance-reuse-count", "1000", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wasmtime serve");
    let stderr = support::lines(serve.stderr.take().expect("piped stderr"));
    let opened = tokio::task::spawn_blocking(move || {
        let ready = format!("Serving HTTP on http://127.0.0.1:{port}/");
        while !stderr
            .recv_timeout(LIMIT)
            .expect("wasmtime serve did not start")
            .contains(&ready)
        {}
        let connections = || -> u64 {
            let varz = ureq::get(&format!("http://127.0.0.1:{monitor}/varz"))
                .call()
                .expect("nats-server varz")
                .into_body()
                .read_to_string()
                .expect("varz body");
            serde_json::from_str::<serde_json::Value>(&varz).expect("varz JSON")
                ["total_connections"]
                .as_u64()
                .expect("total_connections")
        };
        let before = connections();
        for i in 0..REQUESTS {
            let response = ureq::post(&format!("http://127.0.0.1:{port}/{subject}"))
                .send(format!("m{i}"))
                .expect("POST to wasmtime serve");
            assert_eq!(response.status().as_u16(), 204, "request {i}");
        }
        connections() - before
    })
    .await
    .expect("requests");
    let _ = serve.kill();
    let _ = serve.wait();
    // One connection per instance: wasmtime keeps idle instances in a pool and starts another
    // when a request arrives before the previous one's instance is back in it (seen here
    // under load: 2 for 20 requests). Without instance reuse it is one per request.
    assert!(
        (1..=3).contains(&opened),
        "{REQUESTS} requests on reused instances opened {opened} broker connections"
    );
}
