//! End to end against Redis: the example apps composed with `--broker redis://...` (pub/sub)
//! and `--broker 'redis://...?mode=streams'` (Streams with a consumer group), run on the
//! real `wasmtime` CLI, checked from the outside by an independent native client (the sync
//! `redis` crate, not the adapter's own codec).
//!
//! Servers: ordinary tests use the shared `redis-server` on 127.0.0.1:6379, with a unique
//! channel or stream name per test, so tests run in parallel with each other and with other
//! test binaries. Tests that restart the broker or need a password start their own
//! `redis-server` on a free port (AOF on, fsync always, so an entry Redis accepted survives
//! `kill -9`).
//!
//! Synchronisation: a composed handler logs `subscribed to` on stderr once its subscriptions
//! (or consumer groups) are live, and the tests publish only after that line. Every wait is
//! bounded and fails the test when it runs out; every process is killed when its guard
//! drops. The helpers up to the first test are broker-agnostic or Redis-only plumbing, kept
//! apart so the conformance suite can take them over.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis::{Connection, FromRedisValue};
use support::redis::{connect, Server};
use support::{compose, unique};

/// The shared server of the ordinary tests.
const SHARED: &str = "redis://127.0.0.1:6379";

/// How long any single wait may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// A composed component running on `wasmtime run -S inherit-network`, killed when dropped.
struct App {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl App {
    /// Starts `component` with `--env` pairs, stdin closed and stderr read line by line.
    fn start(component: &Path, env: &[(&str, &str)]) -> App {
        let mut command = support::wasmtime();
        command.args(["run", "-S", "inherit-network"]);
        for (key, value) in env {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        let mut child = command
            .arg(component)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmtime");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        App {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Starts `component` and waits until it logs `subscribed to`.
    fn subscribed(component: &Path, env: &[(&str, &str)]) -> App {
        let mut app = App::start(component, env);
        app.wait_for("subscribed to", 1);
        app
    }

    /// Waits until `count` stderr lines (counted since the start) contain `needle`.
    fn wait_for(&mut self, needle: &str, count: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.stderr.iter().filter(|l| l.contains(needle)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stderr.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the app did not log `{needle}` {count} time(s) within {LIMIT:?}; stderr:\n{}",
                    self.stderr.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "the app exited before logging `{needle}` {count} time(s); stderr:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// The first stderr line so far that contains `needle`, reading what is ready now.
    fn logged(&mut self, needle: &str) -> Option<String> {
        self.stderr.extend(self.lines.try_iter());
        self.stderr.iter().find(|l| l.contains(needle)).cloned()
    }

    /// Waits (at most [`LIMIT`]) for the app to exit; returns its status and whole stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for wasmtime") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.stderr.push(line);
                }
                return (status, self.stderr.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "the app ran longer than {LIMIT:?}"
            );
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.stderr.push(line);
            }
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `component` to its end; returns its status and stderr.
fn run(component: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
    App::start(component, env).finish()
}

/// Polls `check` every 20 ms until it returns `Some`, failing with `what` after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "no {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Redis plumbing: the native client and servers of the tests' own.

/// Runs a command on the native connection.
fn query<T: FromRedisValue>(con: &mut Connection, args: &[&[u8]]) -> T {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(args[0])))
}

/// One stream entry as the native client reads it: the id and its fields.
struct Entry {
    id: String,
    fields: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    /// A field as text.
    fn text(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(|v| std::str::from_utf8(v).expect("UTF-8 field"))
    }
}

/// Every entry of `stream` (`XRANGE stream - +`).
fn entries(con: &mut Connection, stream: &str) -> Vec<Entry> {
    let raw: Vec<(String, Vec<Vec<u8>>)> = query(con, &[b"XRANGE", stream.as_bytes(), b"-", b"+"]);
    raw.into_iter()
        .map(|(id, flat)| Entry {
            id,
            fields: flat
                .chunks(2)
                .map(|p| (String::from_utf8_lossy(&p[0]).into_owned(), p[1].clone()))
                .collect(),
        })
        .collect()
}

/// Waits until `stream` has at least `count` entries and returns them.
fn wait_for_entries(con: &mut Connection, stream: &str, count: usize) -> Vec<Entry> {
    eventually(&format!("{count} entries in `{stream}`"), LIMIT, || {
        let found = entries(con, stream);
        (found.len() >= count).then_some(found)
    })
}

/// Appends an entry with `fields` to `stream`.
fn xadd(con: &mut Connection, stream: &str, fields: &[(&str, &[u8])]) {
    let mut args: Vec<&[u8]> = vec![b"XADD", stream.as_bytes(), b"*"];
    for (name, value) in fields {
        args.push(name.as_bytes());
        args.push(value);
    }
    let _: String = query(con, &args);
}

/// Appends `count` entries `data=<prefix><i>` to `stream` in one pipeline.
fn add_numbered(con: &mut Connection, stream: &str, prefix: &str, count: usize) {
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("data")
            .arg(format!("{prefix}{i}"))
            .ignore();
    }
    let () = pipe.query(con).expect("XADD pipeline");
}

/// Waits until the `data` fields of `stream`'s entries are exactly `expected` (each at
/// least once: at-least-once delivery may add duplicates).
fn wait_for_data(con: &mut Connection, stream: &str, expected: &BTreeSet<String>) {
    eventually(
        &format!("every expected entry in `{stream}`"),
        LIMIT,
        || {
            let seen: BTreeSet<String> = entries(con, stream)
                .iter()
                .filter_map(|e| e.text("data").map(String::from))
                .collect();
            (&seen == expected).then_some(())
        },
    );
}

/// A native pub/sub subscriber: a thread of its own reads its connection.
struct Subscriber {
    messages: mpsc::Receiver<(String, Vec<u8>)>,
}

impl Subscriber {
    /// Subscribes to glob `pattern` on the server at `url`; live when this returns.
    fn pattern(url: &str, pattern: &str) -> Subscriber {
        let mut con = connect(url);
        let (live, is_live) = mpsc::channel();
        let (tx, messages) = mpsc::channel();
        let pattern = pattern.to_string();
        std::thread::spawn(move || {
            con.set_read_timeout(Some(LIMIT)).expect("read timeout");
            let mut pubsub = con.as_pubsub();
            pubsub.psubscribe(&pattern).expect("psubscribe");
            live.send(()).expect("the test waits");
            while let Ok(message) = pubsub.get_message() {
                let item = (
                    message.get_channel_name().to_string(),
                    message.get_payload_bytes().to_vec(),
                );
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        is_live
            .recv_timeout(LIMIT)
            .expect("the subscription is live");
        Subscriber { messages }
    }

    /// The next message: its channel and payload.
    fn next(&mut self) -> (String, Vec<u8>) {
        self.messages
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("no message within {LIMIT:?}: {e}"))
    }
}

/// The broker URL of Streams mode on `url`.
fn streams(url: &str) -> String {
    format!("{url}?mode=streams")
}

// ---------------------------------------------------------------------------------------
// Pub/sub (at-most-once).

#[test]
fn a_composed_publisher_publishes_bare_payloads_and_with_envelope_json_the_whole_message() {
    let tmp = tempfile::tempdir().unwrap();
    let topic = unique("greetings");
    let mut subscriber = Subscriber::pattern(SHARED, &topic);

    let plain = compose(tmp.path(), "publisher", &["--broker", SHARED]);
    let (status, stderr) = run(&plain, &[("COUNT", "2"), ("TOPIC", &topic)]);
    assert!(status.success(), "publisher failed:\n{stderr}");
    for i in 1..=2 {
        assert_eq!(
            subscriber.next(),
            (topic.clone(), format!("hello #{i}").into_bytes())
        );
    }

    let dir = tmp.path().join("envelope");
    std::fs::create_dir(&dir).unwrap();
    let wrapped = compose(
        &dir,
        "publisher",
        &["--broker", SHARED, "--option", "envelope=json"],
    );
    let (status, stderr) = run(&wrapped, &[("COUNT", "1"), ("TOPIC", &topic)]);
    assert!(status.success(), "publisher failed:\n{stderr}");
    let (_, payload) = subscriber.next();
    let json: serde_json::Value = serde_json::from_slice(&payload).expect("a JSON envelope");
    assert_eq!(
        json,
        serde_json::json!({"msgplug": 1, "data": "hello #1", "content_type": "text/plain", "metadata": {"seq": "1"}})
    );
}

#[test]
fn a_composed_handler_takes_binary_safe_payloads_on_pattern_subscriptions() {
    let tmp = tempfile::tempdir().unwrap();
    let base = unique("orders");
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", SHARED, "--subscribe", &format!("{base}.*.in")],
    );
    let mut outputs = Subscriber::pattern(SHARED, &format!("{base}.*"));
    let _app = App::subscribed(&transform, &[]);
    let mut con = connect(SHARED);

    // CR LF and NUL in the payload: the length-prefixed codec must carry them unchanged.
    let payload = b"line one\r\nline\0two".to_vec();
    let _: i64 = query(
        &mut con,
        &[b"PUBLISH", format!("{base}.eu.in").as_bytes(), &payload],
    );
    let _: i64 = query(
        &mut con,
        &[b"PUBLISH", format!("{base}.not-matched").as_bytes(), b"x"],
    );
    let _: i64 = query(
        &mut con,
        &[b"PUBLISH", format!("{base}.us.in").as_bytes(), b"hi"],
    );

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (channel, data) = outputs.next();
        if channel.ends_with(".upper") {
            seen.push((channel, data));
        }
    }
    assert_eq!(
        seen,
        [
            (
                format!("{base}.eu.in.upper"),
                b"LINE ONE\r\nLINE\0TWO".to_vec()
            ),
            (format!("{base}.us.in.upper"), b"HI".to_vec()),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Request-reply, in both modes.

/// Compose arguments for mode `mode` (`pubsub` or `streams`) on `url`.
fn mode_broker(url: &str, mode: &str) -> String {
    match mode {
        "streams" => streams(url),
        _ => url.to_string(),
    }
}

#[test]
fn a_composed_requester_collects_the_replies_of_a_composed_responder_in_both_modes() {
    for mode in ["pubsub", "streams"] {
        let tmp = tempfile::tempdir().unwrap();
        let topic = unique("greet");
        let broker = mode_broker(SHARED, mode);
        let responder_dir = tmp.path().join("responder");
        std::fs::create_dir(&responder_dir).unwrap();
        let responder = compose(
            &responder_dir,
            "responder",
            &[
                "--broker",
                &broker,
                "--subscribe",
                &topic,
                "--queue-group",
                "responders",
            ],
        );
        let requester = compose(tmp.path(), "requester", &["--broker", &broker]);
        let mut responder = App::subscribed(&responder, &[("REPLIES", "2")]);
        if mode == "pubsub" {
            responder.wait_for("`responders` has no effect on Redis pub/sub", 1);
        }
        let (status, stderr) = run(
            &requester,
            &[
                ("TOPIC", &topic),
                ("NAME", "Bo"),
                ("EXPECT", "2"),
                ("TIMEOUT_MS", "10000"),
            ],
        );
        assert!(status.success(), "{mode}: requester failed:\n{stderr}");
        let replies: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("reply: "))
            .collect();
        assert_eq!(
            replies,
            ["reply: hello, Bo (1/2)", "reply: hello, Bo (2/2)"],
            "{mode}"
        );
    }
}

#[test]
fn a_native_requester_gets_the_reply_of_a_composed_responder_on_its_reply_key() {
    let tmp = tempfile::tempdir().unwrap();
    let topic = unique("greet");
    let responder = compose(
        tmp.path(),
        "responder",
        &["--broker", SHARED, "--subscribe", &topic],
    );
    let _app = App::subscribed(&responder, &[]);
    let mut con = connect(SHARED);
    let key = format!("msgplug:reply:{}", unique("native"));
    let request = serde_json::json!({"msgplug": 1, "data": "Al", "reply_to": key}).to_string();
    let receivers: i64 = query(
        &mut con,
        &[b"PUBLISH", topic.as_bytes(), request.as_bytes()],
    );
    assert_eq!(receivers, 1);
    let (_, reply): (String, Vec<u8>) = query(&mut con, &[b"BLPOP", key.as_bytes(), b"30"]);
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("a JSON envelope");
    assert_eq!(
        reply,
        serde_json::json!({"msgplug": 1, "data": "hello, Al", "content_type": "text/plain"})
    );
    let ttl: i64 = query(&mut con, &[b"PTTL", key.as_bytes()]);
    assert!(ttl == -2 || ttl > 0, "the reply key expires: {ttl}");
}

#[test]
fn a_pubsub_request_nobody_subscribes_to_fails_at_once_and_one_nobody_answers_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &["--broker", SHARED]);
    let (status, stderr) = run(&requester, &[("TOPIC", &unique("nobody"))]);
    assert!(!status.success());
    assert!(stderr.contains("no subscribers on channel"), "{stderr}");

    let dir = tmp.path().join("streams");
    std::fs::create_dir(&dir).unwrap();
    let requester = compose(&dir, "requester", &["--broker", &streams(SHARED)]);
    let stream = unique("unanswered");
    let (status, stderr) = run(&requester, &[("TOPIC", &stream), ("TIMEOUT_MS", "300")]);
    assert!(!status.success());
    assert!(stderr.contains("timeout"), "{stderr}");
    let mut con = connect(SHARED);
    let sent = entries(&mut con, &stream);
    assert_eq!(sent.len(), 1);
    assert!(sent[0]
        .text("reply-to")
        .is_some_and(|r| r.starts_with("msgplug:reply:")));
    let _: i64 = query(&mut con, &[b"DEL", stream.as_bytes()]);
}

// ---------------------------------------------------------------------------------------
// Streams (at-least-once).

/// Compose arguments for `transform` consuming `stream` in group `group` with `extra`.
fn streams_args<'a>(
    broker: &'a str,
    stream: &'a str,
    group: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--broker",
        broker,
        "--subscribe",
        stream,
        "--queue-group",
        group,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_database_in_the_url_is_selected_and_a_server_that_is_down_is_a_connection_error() {
    let tmp = tempfile::tempdir().unwrap();
    let stream = unique("db3");
    let publisher = compose(
        tmp.path(),
        "publisher",
        &["--broker", "redis://127.0.0.1:6379/3?mode=streams"],
    );
    let (status, stderr) = run(&publisher, &[("COUNT", "2"), ("TOPIC", &stream)]);
    assert!(status.success(), "{stderr}");
    let mut db3 = connect("redis://127.0.0.1:6379/3");
    let sent = entries(&mut db3, &stream);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].text("data"), Some("hello #2"));
    assert_eq!(sent[1].text("content-type"), Some("text/plain"));
    assert_eq!(sent[1].text("meta:seq"), Some("2"));
    assert!(
        entries(&mut connect(SHARED), &stream).is_empty(),
        "not in db 0"
    );
    let _: i64 = query(&mut db3, &[b"DEL", stream.as_bytes()]);

    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let down = format!("redis://127.0.0.1:{free}");
    let (status, stderr) = run(&publisher, &[("MSGPLUG_BROKER", &down), ("COUNT", "1")]);
    assert!(!status.success());
    assert!(
        stderr.contains("connection: cannot connect to redis://127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn three_instances_in_a_group_share_3000_entries_none_lost_none_handled_twice() {
    const TOTAL: usize = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let stream = unique("work");
    let broker = streams(SHARED);
    let transform = compose(
        tmp.path(),
        "transform",
        &streams_args(&broker, &stream, "workers", &[]),
    );
    let mut apps = Vec::new();
    for name in ["w1", "w2", "w3"] {
        apps.push(App::subscribed(&transform, &[("TRANSFORMED_BY", name)]));
    }
    let mut con = connect(SHARED);
    add_numbered(&mut con, &stream, "m", TOTAL);

    let output = format!("{stream}.upper");
    let handled = wait_for_entries(&mut con, &output, TOTAL);
    let mut shares: BTreeMap<String, usize> = BTreeMap::new();
    let mut inputs = BTreeSet::new();
    for entry in &handled {
        *shares
            .entry(entry.text("meta:transformed-by").unwrap_or("?").to_string())
            .or_default() += 1;
        inputs.insert(entry.text("data").expect("data field").to_string());
    }
    let expected: BTreeSet<String> = (0..TOTAL).map(|i| format!("M{i}")).collect();
    assert_eq!(inputs, expected);
    assert_eq!(
        handled.len(),
        TOTAL,
        "some entries were handled twice: {shares:?}"
    );
    assert_eq!(shares.len(), 3, "every instance takes a share: {shares:?}");
    let pending: Vec<redis::Value> = query(&mut con, &[b"XPENDING", stream.as_bytes(), b"workers"]);
    assert_eq!(
        pending.first(),
        Some(&redis::Value::Int(0)),
        "everything acknowledged"
    );
    let _: i64 = query(&mut con, &[b"DEL", stream.as_bytes(), output.as_bytes()]);
}

#[test]
fn failed_entries_are_redelivered_with_their_count_then_dead_lettered_good_ones_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let stream = unique("jobs");
    let broker = streams(SHARED);
    let transform = compose(
        tmp.path(),
        "transform",
        &streams_args(
            &broker,
            &stream,
            "g",
            &[
                "--option",
                "claim_after_ms=200",
                "--option",
                "max_deliveries=3",
            ],
        ),
    );
    let mut app = App::subscribed(&transform, &[]);
    let mut con = connect(SHARED);
    xadd(
        &mut con,
        &stream,
        &[("data", &[0xff, 0xfe]), ("meta:id", b"bad")],
    );
    xadd(
        &mut con,
        &stream,
        &[("data", b"fine"), ("content-type", b"text/plain")],
    );

    app.wait_for("failed: payload is not UTF-8 text", 3);
    app.wait_for("moved to the dead-letter stream", 1);
    let dead = wait_for_entries(&mut con, &format!("{stream}:dead-letter"), 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].fields["data"], [0xff, 0xfe]);
    assert_eq!(dead[0].text("meta:id"), Some("bad"));
    assert_eq!(dead[0].text("original-stream"), Some(stream.as_str()));
    let bad_id = entries(&mut con, &stream)[0].id.clone();
    assert_eq!(dead[0].text("original-id"), Some(bad_id.as_str()));
    assert_eq!(dead[0].text("deliveries"), Some("3"));
    let out = wait_for_entries(&mut con, &format!("{stream}.upper"), 1);
    assert_eq!(out[0].text("data"), Some("FINE"));
    assert_eq!(out[0].text("content-type"), Some("text/plain"));
    assert_eq!(out[0].text("meta:redis-delivery-count"), Some("1"));
    let pending: Vec<redis::Value> = query(&mut con, &[b"XPENDING", stream.as_bytes(), b"g"]);
    assert_eq!(
        pending.first(),
        Some(&redis::Value::Int(0)),
        "nothing left pending"
    );
    let dead_key = format!("{stream}:dead-letter");
    let out_key = format!("{stream}.upper");
    let _: i64 = query(
        &mut con,
        &[
            b"DEL",
            stream.as_bytes(),
            dead_key.as_bytes(),
            out_key.as_bytes(),
        ],
    );
}

#[test]
fn entries_a_dead_consumer_left_pending_are_claimed_by_another_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let stream = unique("orphans");
    let mut con = connect(SHARED);
    let _: String = query(
        &mut con,
        &[
            b"XGROUP",
            b"CREATE",
            stream.as_bytes(),
            b"g",
            b"0",
            b"MKSTREAM",
        ],
    );
    for i in 0..5 {
        xadd(&mut con, &stream, &[("data", format!("o{i}").as_bytes())]);
    }
    // A consumer that reads and then dies: its entries stay pending, unacknowledged.
    let _: redis::Value = query(
        &mut con,
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"crashed",
            b"COUNT",
            b"5",
            b"STREAMS",
            stream.as_bytes(),
            b">",
        ],
    );

    let broker = streams(SHARED);
    let transform = compose(
        tmp.path(),
        "transform",
        &streams_args(&broker, &stream, "g", &["--option", "claim_after_ms=300"]),
    );
    let _app = App::subscribed(&transform, &[("MSGPLUG_REDIS_CONSUMER", "survivor")]);
    let out = wait_for_entries(&mut con, &format!("{stream}.upper"), 5);
    let data: BTreeSet<&str> = out.iter().filter_map(|e| e.text("data")).collect();
    assert_eq!(data, BTreeSet::from(["O0", "O1", "O2", "O3", "O4"]));
    assert!(
        out.iter()
            .all(|e| e.text("meta:redis-delivery-count") == Some("2")),
        "a claimed entry is on its second delivery"
    );
    let out_key = format!("{stream}.upper");
    let _: i64 = query(&mut con, &[b"DEL", stream.as_bytes(), out_key.as_bytes()]);
}

// Long handlers: `claim_after_ms` (or `handler_timeout_ms`) is each entry's lease (issue 15).

/// Two `relay` instances in group `g` on a fresh stream, composed with `extra` options, and
/// one entry whose handler works as the relay's metadata `sleep-ms` says; returns the
/// stream's name and the instances.
fn slow_entry(
    con: &mut Connection,
    tmp: &Path,
    extra: &[&str],
    sleep_ms: &str,
) -> (String, [App; 2]) {
    let stream = unique("slow");
    let broker = streams(SHARED);
    let relay = compose(tmp, "relay", &streams_args(&broker, &stream, "g", extra));
    let apps = [App::subscribed(&relay, &[]), App::subscribed(&relay, &[])];
    xadd(
        con,
        &stream,
        &[
            ("data", b"slow job"),
            ("meta:sleep-ms", sleep_ms.as_bytes()),
        ],
    );
    (stream, apps)
}

/// Checks that the slow entry of `stream` was handled by one handler run: relayed once,
/// acknowledged, and never delivered a second time (with `max_deliveries=1` a second
/// delivery, had another instance claimed the entry while it was handled, would have moved
/// it to the dead-letter stream before the ack; after the ack nothing is left to claim).
fn assert_handled_once(con: &mut Connection, stream: &str, mut apps: [App; 2]) {
    let relayed = wait_for_entries(con, &format!("{stream}.relayed"), 1);
    assert_eq!(relayed[0].text("data"), Some("slow job"));
    assert_eq!(relayed[0].text("meta:redis-delivery-count"), Some("1"));
    eventually("the entry's ack", LIMIT, || {
        let pending: Vec<redis::Value> = query(con, &[b"XPENDING", stream.as_bytes(), b"g"]);
        (pending.first() == Some(&redis::Value::Int(0))).then_some(())
    });
    assert!(
        entries(con, &format!("{stream}:dead-letter")).is_empty(),
        "a second delivery"
    );
    assert_eq!(entries(con, &format!("{stream}.relayed")).len(), 1);
    for app in &mut apps {
        assert_eq!(app.logged("since its lease was last renewed"), None);
    }
    drop(apps); // before the stream is deleted: a running instance would create it again
    let keys = [
        format!("{stream}.relayed"),
        format!("{stream}.progress"),
        stream.to_string(),
    ];
    let _: i64 = query(
        con,
        &[
            b"DEL",
            keys[0].as_bytes(),
            keys[1].as_bytes(),
            keys[2].as_bytes(),
        ],
    );
}

/// The case on Redis Streams: a handler of 4 s, two instances in one group.
/// `handler_timeout_ms` is the `claim_after_ms`: no instance claims the entry while it is
/// handled.
#[test]
fn a_handler_slower_than_the_default_claim_time_is_handled_once_with_handler_timeout_ms() {
    let tmp = tempfile::tempdir().unwrap();
    let mut con = connect(SHARED);
    let extra = [
        "--option",
        "handler_timeout_ms=6000",
        "--option",
        "max_deliveries=1",
    ];
    let (stream, apps) = slow_entry(&mut con, tmp.path(), &extra, "4000");
    assert_handled_once(&mut con, &stream, apps);
}

/// A handler of 4.5 s keeps its entry past a 2 s `claim_after_ms` when it sends every 1.5 s:
/// each send renews it (`XCLAIM` to itself, which restarts the idle time).
#[test]
fn a_long_handler_that_sends_as_it_goes_keeps_its_entry_past_claim_after_ms() {
    let tmp = tempfile::tempdir().unwrap();
    let mut con = connect(SHARED);
    let extra = [
        "--option",
        "claim_after_ms=2000",
        "--option",
        "max_deliveries=1",
    ];
    let (stream, apps) = slow_entry(&mut con, tmp.path(), &extra, "1500,1500,1500");
    assert_handled_once(&mut con, &stream, apps);
}

/// A handler of 4 s outlives a 2 s `claim_after_ms`: another instance claims the entry, and
/// the instance whose handler overran says so when it acknowledges.
#[test]
fn a_handler_that_overran_claim_after_ms_says_so_when_it_acks() {
    let tmp = tempfile::tempdir().unwrap();
    let mut con = connect(SHARED);
    let extra = ["--option", "claim_after_ms=2000"];
    let (stream, mut apps) = slow_entry(&mut con, tmp.path(), &extra, "4000");
    let overran = "longer than claim_after_ms of 2.0 s";
    let line = eventually("overrun line", LIMIT, || {
        apps.iter_mut().find_map(|app| app.logged(overran))
    });
    assert!(
        line.starts_with(&format!(
            "msgplug[redis]: the handler of a message from `{stream}` ran "
        )) && line.contains("--option handler_timeout_ms"),
        "{line}"
    );
    drop(apps);
    let keys = [format!("{stream}.relayed"), stream.clone()];
    let _: i64 = query(&mut con, &[b"DEL", keys[0].as_bytes(), keys[1].as_bytes()]);
}

#[test]
fn a_killed_instances_pending_entries_are_handled_by_another_instance() {
    // Enough that the first instance is still at work when it is killed (~0.5 s of work).
    const TOTAL: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let stream = unique("killed");
    let output = format!("{stream}.upper");
    let broker = streams(SHARED);
    let transform = compose(
        tmp.path(),
        "transform",
        &streams_args(&broker, &stream, "g", &["--option", "claim_after_ms=300"]),
    );
    let mut con = connect(SHARED);
    let first = App::subscribed(&transform, &[("MSGPLUG_REDIS_CONSUMER", "first")]);
    add_numbered(&mut con, &stream, "k", TOTAL);
    // Killed mid-stream: it has read a batch it has not acknowledged yet.
    wait_for_entries(&mut con, &output, 1);
    drop(first);
    let pending: Vec<redis::Value> = query(&mut con, &[b"XPENDING", stream.as_bytes(), b"g"]);
    let orphaned = match pending.first() {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("XPENDING: {other:?}"),
    };
    assert!(
        orphaned > 0,
        "the first instance was killed with entries pending"
    );

    let _second = App::subscribed(&transform, &[("MSGPLUG_REDIS_CONSUMER", "second")]);
    let expected: BTreeSet<String> = (0..TOTAL).map(|i| format!("K{i}")).collect();
    wait_for_data(&mut con, &output, &expected);
    eventually("nothing pending", LIMIT, || {
        let pending: Vec<redis::Value> = query(&mut con, &[b"XPENDING", stream.as_bytes(), b"g"]);
        (pending.first() == Some(&redis::Value::Int(0))).then_some(())
    });
    let _: i64 = query(&mut con, &[b"DEL", stream.as_bytes(), output.as_bytes()]);
}

#[test]
fn a_stream_deleted_while_the_app_runs_is_created_again_with_its_group() {
    let tmp = tempfile::tempdir().unwrap();
    let stream = unique("deleted");
    let broker = streams(SHARED);
    let transform = compose(
        tmp.path(),
        "transform",
        &streams_args(&broker, &stream, "g", &[]),
    );
    let mut app = App::subscribed(&transform, &[]);
    let mut con = connect(SHARED);
    let _: i64 = query(&mut con, &[b"DEL", stream.as_bytes()]);
    app.wait_for("creating the consumer group again", 1);
    xadd(&mut con, &stream, &[("data", b"again")]);
    let out = wait_for_entries(&mut con, &format!("{stream}.upper"), 1);
    assert_eq!(out[0].text("data"), Some("AGAIN"));
    let out_key = format!("{stream}.upper");
    let _: i64 = query(&mut con, &[b"DEL", stream.as_bytes(), out_key.as_bytes()]);
}

// ---------------------------------------------------------------------------------------
// Broker restarts and credentials (servers of the tests' own).

#[test]
fn after_a_kill_9_and_restart_every_entry_redis_accepted_is_handled() {
    let mut server = Server::start(&[]);
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let broker = streams(&url);
    // Entries read (or acknowledged) just before the kill stay pending on the restarted
    // server: they are claimed again after `claim_after_ms`.
    let transform = compose(
        tmp.path(),
        "transform",
        &streams_args(&broker, "jobs", "g", &["--option", "claim_after_ms=500"]),
    );
    let mut app = App::subscribed(&transform, &[]);
    let mut con = connect(&url);
    add_numbered(&mut con, "jobs", "a", 50);
    server.kill();
    server.launch();
    app.wait_for("reconnected to", 1);
    let mut con = connect(&url);
    add_numbered(&mut con, "jobs", "b", 50);
    let expected: BTreeSet<String> = (0..50)
        .flat_map(|i| [format!("A{i}"), format!("B{i}")])
        .collect();
    wait_for_data(&mut con, "jobs.upper", &expected);
}

#[test]
fn a_pubsub_subscription_resumes_after_a_server_restart() {
    let mut server = Server::start(&[]);
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let transform = compose(
        tmp.path(),
        "transform",
        &["--broker", &url, "--subscribe", "in"],
    );
    let mut app = App::subscribed(&transform, &[]);
    server.kill();
    server.launch();
    app.wait_for("reconnected to", 1);
    let mut con = connect(&url);
    // The re-subscription is live once Redis counts a subscriber on the channel.
    eventually("the re-subscription", LIMIT, || {
        let counts: Vec<redis::Value> = query(&mut con, &[b"PUBSUB", b"NUMSUB", b"in"]);
        (counts.get(1) == Some(&redis::Value::Int(1))).then_some(())
    });
    let mut outputs = Subscriber::pattern(&url, "in.upper");
    let _: i64 = query(&mut con, &[b"PUBLISH", b"in", b"again"]);
    assert_eq!(outputs.next(), ("in.upper".to_string(), b"AGAIN".to_vec()));
}

#[test]
fn credentials_come_from_the_environment_and_a_wrong_password_is_permission_denied() {
    let server = Server::start(&[
        "--requirepass",
        "s3cret",
        "--user",
        "alice",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
    ]);
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let publisher = compose(tmp.path(), "publisher", &["--broker", &url]);
    let (status, stderr) = run(&publisher, &[("REDIS_PASSWORD", "s3cret"), ("COUNT", "1")]);
    assert!(status.success(), "{stderr}");
    let alice = [
        ("REDIS_USERNAME", "alice"),
        ("REDIS_PASSWORD", "pw"),
        ("COUNT", "1"),
    ];
    let (status, stderr) = run(&publisher, &alice);
    assert!(status.success(), "an ACL user: {stderr}");
    let (status, stderr) = run(&publisher, &[("REDIS_PASSWORD", "wrong"), ("COUNT", "1")]);
    assert!(!status.success());
    assert!(stderr.contains("permission denied"), "{stderr}");
    let (status, stderr) = run(&publisher, &[("COUNT", "1")]);
    assert!(!status.success());
    assert!(stderr.contains("REDIS_PASSWORD"), "{stderr}");
}

#[test]
fn a_password_in_the_url_is_baked_only_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p.wasm");
    let output = support::msgplug()
        .arg("compose")
        .arg(support::example("publisher"))
        .args(["--broker", "redis://:pw@127.0.0.1:6379", "-o"])
        .arg(&out)
        .output()
        .expect("run msgplug");
    let stderr = support::text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("warning"), "{stderr}");
    assert!(stderr.contains("REDIS_PASSWORD"), "{stderr}");
}
