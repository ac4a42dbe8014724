//! End to end against NATS: the example apps composed with `--broker nats://...` and run on
//! the real `wasmtime` CLI (`wasmtime run -S inherit-network --env K=V ...`), checked from
//! the outside by an independent native client (async-nats, not the adapter's own codec).
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

#[path = "support/app.rs"]
mod app;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap, Message, Subscriber};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use app::{run, unique, within, App, LIMIT};
use support::compose;

/// The shared server of the ordinary tests.
const SHARED: &str = "nats://127.0.0.1:4222";

/// Connects a native client, failing with advice when no server listens at `url`.
async fn connect(url: &str) -> Client {
    connect_with(url, async_nats::ConnectOptions::new()).await
}

/// Connects a native client with `options`.
async fn connect_with(url: &str, options: async_nats::ConnectOptions) -> Client {
    within("connection to nats-server", options.connect(url))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to {url}: {e}; start a server with \
                 `nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server` (.ci/run does)"
            )
        })
}

/// Returns once the server has processed everything `client` sent before, so the
/// subscriptions made before are live: a message to itself makes a round trip.
async fn round_trip(client: &Client) {
    let subject = unique("sync");
    let mut echo = client.subscribe(subject.clone()).await.expect("subscribe");
    client.publish(subject, "".into()).await.expect("publish");
    within("round trip through the server", echo.next()).await;
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

/// The lines of `stderr` that the example app wrote (`reply: ...`, `requester: ...`),
/// leaving out what the adapter logs.
fn app_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("msgplug"))
        .collect()
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

/// A `nats-server` of the test's own on a free port, with JetStream in a temporary store;
/// killed when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl Server {
    /// Starts a server with `extra` arguments and waits until it is ready.
    async fn start(extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Server {
            child: None,
            port,
            store: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch().await;
        server
    }

    /// The URL of the server.
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (on the same port and store) and waits for `Server is ready`.
    async fn launch(&mut self) {
        let program = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let mut child = Command::new(&program)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{program}`: {e}; install nats-server (`apt-get install \
                     nats-server`) or point $NATS_SERVER at it"
                )
            });
        let mut log = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(LIMIT, async {
            while let Ok(Some(line)) = log.next_line().await {
                let ready = line.contains("Server is ready");
                seen.push(line);
                if ready {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            ready == Ok(true),
            "nats-server on port {} did not start:\n{}",
            self.port,
            seen.join("\n")
        );
        // Keep reading its log so the pipe never fills up.
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        self.child = Some(child);
    }

    /// Stops the server with SIGTERM and waits until it has exited.
    ///
    /// SIGTERM rather than SIGKILL: nats-server 2.9 acknowledges a JetStream publish before
    /// its file store has written it out, so SIGKILL may lose messages the server itself
    /// had accepted; that would test the server, not the app. A SIGTERM still drops every
    /// connection at once, which is the outage the app has to survive.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        let pid = child.id().expect("the server has a pid");
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(killed.success(), "kill -TERM {pid} failed");
        within("exit of nats-server", child.wait())
            .await
            .expect("wait for nats-server");
    }
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

#[tokio::test(flavor = "multi_thread")]
async fn a_composed_publisher_sends_data_content_type_and_metadata_a_native_subscriber_sees() {
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", SHARED]);
    let topic = unique("greetings");
    let nats = connect(SHARED).await;
    let mut inbox = nats.subscribe(topic.clone()).await.unwrap();
    round_trip(&nats).await;

    let (status, stderr) = run(&publisher, &[("COUNT", "3"), ("TOPIC", &topic)]).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    for i in 1..=3 {
        let message = next(&mut inbox).await;
        assert_eq!(message.subject.as_str(), topic);
        assert_eq!(data(&message), format!("hello #{i}"));
        assert_eq!(content_type(&message), Some("text/plain"));
        assert_eq!(header(&message, "seq"), Some(i.to_string().as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_composed_handler_takes_native_messages_and_republishes_them_with_their_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("orders");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", SHARED, "--subscribe", &format!("{base}.*")],
    );
    let nats = connect(SHARED).await;
    let mut upper = nats.subscribe(format!("{base}.*.upper")).await.unwrap();
    round_trip(&nats).await;
    let _app = App::subscribed(&transform, &[]).await;

    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "text/plain");
    headers.insert("id", "7");
    nats.publish_with_headers(format!("{base}.eu"), headers, "hello".into())
        .await
        .unwrap();
    nats.publish(format!("{base}.us"), "hi there".into())
        .await
        .unwrap();

    let first = next(&mut upper).await;
    assert_eq!(first.subject.as_str(), format!("{base}.eu.upper"));
    assert_eq!(data(&first), "HELLO");
    assert_eq!(content_type(&first), Some("text/plain"));
    assert_eq!(header(&first, "id"), Some("7"));
    assert_eq!(header(&first, "transformed-by"), Some("transform"));

    let second = next(&mut upper).await;
    assert_eq!(second.subject.as_str(), format!("{base}.us.upper"));
    assert_eq!(data(&second), "HI THERE");
    assert_eq!(content_type(&second), None);
    assert_eq!(header(&second, "transformed-by"), Some("transform"));
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
async fn a_composed_requester_collects_the_expected_number_of_replies_from_a_native_responder() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &["--broker", SHARED]);
    let topic = unique("greet");
    let nats = connect(SHARED).await;
    let responder = native_responder(&nats, &topic, 2).await;

    let started = Instant::now();
    let env = [
        ("TOPIC", topic.as_str()),
        ("NAME", "Ada"),
        ("EXPECT", "2"),
        ("TIMEOUT_MS", "20000"),
    ];
    let (status, stderr) = run(&requester, &env).await;
    assert!(status.success(), "requester failed:\n{stderr}");
    assert_eq!(
        app_lines(&stderr),
        ["reply: hi, Ada (1/2)", "reply: hi, Ada (2/2)"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "with both replies in, the request returns before its timeout"
    );
    let request = within("responder", responder).await.unwrap();
    assert_eq!(data(&request), "Ada");
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
async fn a_request_nobody_answers_fails_with_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &["--broker", SHARED]);
    let topic = unique("greet");
    let nats = connect(SHARED).await;
    // A subscriber that never replies: the server has a responder, so only the timeout ends it.
    let _silent = nats.subscribe(topic.clone()).await.unwrap();
    round_trip(&nats).await;

    let (status, stderr) = run(&requester, &[("TOPIC", &topic), ("TIMEOUT_MS", "500")]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(app_lines(&stderr), ["requester: request failed: timeout"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_responders_fails_at_once_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &["--broker", SHARED]);
    let topic = unique("nobody");

    let started = Instant::now();
    let (status, stderr) = run(&requester, &[("TOPIC", &topic), ("TIMEOUT_MS", "60000")]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines = app_lines(&stderr);
    assert!(
        lines.len() == 1
            && lines[0].starts_with("requester: request failed: ")
            && lines[0].contains("no responders")
            && lines[0].contains(&topic),
        "expected one error naming `no responders` and the subject:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the server says at once that nobody listens; the request must not wait for its timeout"
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
// Scale-out with a queue group.

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_in_a_queue_group_share_3000_messages_none_lost_none_handled_twice() {
    const TOTAL: usize = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let subject = unique("work");
    let transform = compose(
        tmp.path(),
        "transform",
        &[
            "--broker",
            SHARED,
            "--subscribe",
            &subject,
            "--queue-group",
            "workers",
        ],
    );
    let nats = connect(SHARED).await;
    let mut outputs = nats.subscribe(format!("{subject}.upper")).await.unwrap();
    round_trip(&nats).await;
    let mut apps = Vec::new();
    for name in ["w1", "w2", "w3"] {
        apps.push(App::subscribed(&transform, &[("TRANSFORMED_BY", name)]).await);
    }

    for i in 0..TOTAL {
        nats.publish(subject.clone(), format!("m{i}").into())
            .await
            .unwrap();
    }
    nats.flush().await.unwrap();

    let mut handled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unique_inputs = BTreeSet::new();
    let mut received = 0;
    let collected = tokio::time::timeout(LIMIT * 2, async {
        while unique_inputs.len() < TOTAL {
            let message = outputs.next().await.expect("subscription ended");
            received += 1;
            unique_inputs.insert(data(&message).to_string());
            let by = header(&message, "transformed-by")
                .unwrap_or("?")
                .to_string();
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
        LIMIT * 2
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

/// Chaos: the server goes down and comes back while the app works through a stream.
///
/// Why the check is sound: `transform` publishes its output for input `mN` as `MN` on
/// `jobs.upper`, which stream DONE captures, so the backend publishes it with a JetStream
/// publish ack. The run driver acks an input only after the handler returned and the
/// outbox was flushed, i.e. after that publish ack. So for every input the server accepted
/// (its publish ack reached this test): either the app acked it, and then its output is
/// already stored in DONE, or it did not, and then the durable consumer delivers it again
/// once the app is back. Either way its output reaches DONE: "every accepted input has its
/// output in DONE" is exactly "every accepted message was handled at least once". Only
/// acknowledged publishes count (one whose ack was lost in the restart is sent again);
/// duplicate outputs are allowed (at least once).
#[tokio::test(flavor = "multi_thread")]
async fn after_a_server_restart_every_accepted_message_is_handled_at_least_once() {
    const TOTAL: usize = 2000;
    let mut server = Server::start(&[]).await;
    let url = server.url();
    let options =
        async_nats::ConnectOptions::new().reconnect_delay_callback(|_| Duration::from_millis(100));
    let nats = connect_with(&url, options).await;
    let js = jetstream(&nats);
    create_stream(&js, "JOBS", &["jobs"]).await;
    let done = create_stream(&js, "DONE", &["jobs.upper"]).await;
    let tmp = tempfile::tempdir().unwrap();
    // A delivery in flight when the server goes down comes again after the ack wait.
    let mut args = jetstream_args(&url, "jobs", "JOBS", "worker");
    args.extend(["--option", "ack_wait_ms=3000"]);
    let transform = compose(tmp.path(), "transform", &args);
    let mut app = App::subscribed(&transform, &[]).await;
    let mut first_output = nats.subscribe("jobs.upper").await.unwrap();
    round_trip(&nats).await;

    let mut accepted = BTreeSet::new();
    let mut acks = Vec::new();
    for i in 0..TOTAL / 2 {
        acks.push((i, js.publish("jobs", format!("m{i}").into()).await.unwrap()));
    }
    for (i, ack) in acks.drain(..) {
        within("publish ack", ack.into_future())
            .await
            .expect("publish ack");
        accepted.insert(format!("M{i}"));
    }

    // Mid-stream: the app has handled something, and (most likely) not yet everything.
    next(&mut first_output).await;
    server.stop().await;
    server.launch().await;

    // After the restart, publish the rest; each that gets its ack counts as accepted (a
    // publish whose ack timed out may still be stored: a duplicate input, which is fine).
    for i in TOTAL / 2..TOTAL {
        within("publish ack after the restart", async {
            while js
                .publish("jobs", format!("m{i}").into())
                .await
                .expect("publish")
                .await
                .is_err()
            {}
        })
        .await;
        accepted.insert(format!("M{i}"));
    }

    let mut missing = accepted.clone();
    let all = read_stream(&done, LIMIT, |m| {
        missing.remove(data(&m));
        missing.is_empty()
    })
    .await;
    assert!(
        all,
        "{} of {TOTAL} accepted messages were never handled, e.g. {:?}; app stderr:\n{}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        app.stderr_so_far()
    );
}

// ---------------------------------------------------------------------------------------
// Credentials and outages.

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_the_environment_and_a_wrong_password_is_permission_denied() {
    let server = Server::start(&["--user", "u", "--pass", "p"]).await;
    let url = server.url();
    let options = async_nats::ConnectOptions::new().user_and_password("u".into(), "p".into());
    let nats = connect_with(&url, options).await;
    let topic = unique("secured");
    let mut inbox = nats.subscribe(topic.clone()).await.unwrap();
    round_trip(&nats).await;
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url]);

    let env = [
        ("TOPIC", topic.as_str()),
        ("COUNT", "1"),
        ("NATS_USER", "u"),
        ("NATS_PASSWORD", "p"),
    ];
    let (status, stderr) = run(&publisher, &env).await;
    assert!(status.success(), "publisher failed:\n{stderr}");
    assert_eq!(data(&next(&mut inbox).await), "hello #1");

    let env = [
        ("TOPIC", topic.as_str()),
        ("COUNT", "1"),
        ("NATS_USER", "u"),
        ("NATS_PASSWORD", "wrong"),
    ];
    let (status, stderr) = run(&publisher, &env).await;
    assert!(!status.success(), "a wrong password must fail:\n{stderr}");
    assert!(
        stderr.contains("publisher: send failed: permission denied"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_during_an_outage_fails_with_a_connection_error_instead_of_hanging() {
    let mut server = Server::start(&[]).await;
    let url = server.url();
    let nats = connect(&url).await;
    let topic = unique("outage");
    let mut inbox = nats.subscribe(topic.clone()).await.unwrap();
    round_trip(&nats).await;
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url]);

    // A publisher that would run for hours; the server goes away under it.
    let app = App::start(&publisher, &[("TOPIC", &topic), ("COUNT", "4000000000")]);
    next(&mut inbox).await;
    server.stop().await;
    let (status, stderr) = app.finish_within(LIMIT).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("publisher: send failed: connection"),
        "{stderr}"
    );

    // And with the server still down, a new run fails the same way, saying why in words
    // (no `os error N`: that would be WASI's errno, not the host's).
    let (status, stderr) = run(&publisher, &[("TOPIC", &topic), ("COUNT", "1")]).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "publisher: send failed: connection: cannot connect to {url}: connection refused"
        )) && !stderr.contains("os error"),
        "{stderr}"
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
