//! NATS bench (`cargo bench --bench nats`, or `benches/nats.sh`): the example apps composed
//! with the NATS backend and run on the `wasmtime` CLI, next to a native Rust client
//! (async-nats) doing the same work on the same server in the same run. Prints one table:
//!
//! * publish, messages/s: the composed `publisher` against a native loop doing the same.
//!   Outside a handler the NATS backend's `producer.send` returns once the server has
//!   processed the message (a `PING`/`PONG` round trip), so the native loop confirms each
//!   message with a round trip too (async-nats has no public ping: it publishes to its own
//!   subscription and waits for that echo, a little more work than a `PING`). A second
//!   row shows native publishing without confirmation (publish, then flush the socket
//!   buffer), the price of that guarantee. Rate = messages received by a native
//!   subscriber, from the first to the last, so wasmtime's start-up is not counted.
//! * consume → handle → publish, messages/s: the composed `transform` against a native
//!   task on its own connection that upper-cases each message, republishes it with its
//!   headers and confirms it by a round trip before taking the next (what the run
//!   driver's `flush` before the ack waits for). A native driver keeps at most `WINDOW`
//!   messages in flight (so neither side is made a slow consumer) and times from its
//!   first publish to the last output.
//! * request-reply round trip, p50 and p99: sequential requests of a native requester to
//!   the composed `responder` and to a native responder on its own connection (after a
//!   warm-up).
//!
//! The bench starts its own `nats-server` (no JetStream) on a free port, so other traffic
//! on 127.0.0.1:4222 does not skew it. With `BENCH_TLS=1` the server serves TLS only (a test
//! CA made by `support::tls`), the apps are composed with `tls://` and `--tls-ca` (the
//! `backend-nats-tls` adapter) and the native client speaks TLS too, so the table compares
//! TLS with TLS; the line above the table then gives the composed TLS connect time (the
//! `publisher` sending one message, minus the same over plaintext). Counts are bounded (`BENCH_MESSAGES`, default
//! 20000; `BENCH_REQUESTS`, default 2000) and so is every phase (`PHASE_LIMIT`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap, Subscriber};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long one measurement may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(180);

/// Messages in flight at most in the consume → handle → publish measurement.
const WINDOW: usize = 256;

/// Requests made before measuring the round trip.
const WARM_UP: usize = 100;

fn main() {
    let messages = count("BENCH_MESSAGES", 20_000);
    let requests = count("BENCH_REQUESTS", 2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(messages, requests));
}

/// Reads a count above 1 from the environment variable `key`, or `default`.
fn count(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Err(_) => default,
        Ok(value) => value
            .parse()
            .ok()
            .filter(|&n| n > 1)
            .unwrap_or_else(|| panic!("{key}=`{value}`: expected an integer above 1")),
    }
}

/// Awaits `future`, aborting the bench with `what` after [`PHASE_LIMIT`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PHASE_LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("bench: {what} took longer than {PHASE_LIMIT:?}"))
}

/// The bench's server: its URLs and, with `BENCH_TLS=1`, the certificates it serves.
struct Broker {
    /// `nats://127.0.0.1:PORT`.
    url: String,
    /// The test certificates, when the server serves TLS.
    pki: Option<support::tls::Pki>,
}

impl Broker {
    /// The `compose` arguments that reach the server.
    fn compose_args<'a>(&'a self, more: &[&'a str]) -> Vec<String> {
        let mut args = match &self.pki {
            None => vec!["--broker".to_string(), self.url.clone()],
            Some(pki) => vec![
                "--broker".to_string(),
                self.url.replace("nats://", "tls://"),
                "--tls-ca".to_string(),
                pki.ca.to_str().expect("UTF-8 path").to_string(),
            ],
        };
        args.extend(more.iter().map(|a| a.to_string()));
        args
    }

    /// Composes example `name` for the server.
    fn compose(&self, dir: &Path, name: &str, more: &[&str]) -> std::path::PathBuf {
        let args = self.compose_args(more);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::compose(dir, name, &args)
    }
}

/// Connects a native client (over TLS when the server serves it).
async fn connect(broker: &Broker) -> Client {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(pki) = &broker.pki {
        // Two rustls providers are compiled in (by different dependencies): pick one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        options = options
            .require_tls(true)
            .add_root_certificates(pki.ca.clone());
    }
    within("connect", options.connect(&broker.url))
        .await
        .expect("connect to the bench's nats-server")
}

async fn bench(messages: usize, requests: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let tls = std::env::var("BENCH_TLS").is_ok_and(|v| v == "1");
    let pki = tls.then(support::tls::Pki::new);
    let (_server, url) = start_server(pki.as_ref()).await;
    let broker = Broker { url, pki };
    let nats = connect(&broker).await;
    if tls {
        let (_plain_server, url) = start_server(None).await;
        let plain = Broker { url, pki: None };
        let with_tls = one_message_time(&broker, tmp.path()).await;
        let without = one_message_time(&plain, tmp.path()).await;
        println!(
            "composed publisher sending 1 message (start to exit, median of 5): {:.1} ms over TLS, {:.1} ms plaintext (TLS connect ~{:.1} ms)",
            with_tls.as_secs_f64() * 1e3,
            without.as_secs_f64() * 1e3,
            (with_tls.as_secs_f64() - without.as_secs_f64()) * 1e3
        );
    }

    let publisher = broker.compose(tmp.path(), "publisher", &[]);
    let publish = Row {
        name: "publish, each confirmed, messages/s",
        composed: Value::Rate(publish_composed(&nats, &publisher, messages).await),
        native: Value::Rate(publish_native(&nats, &broker, messages, true).await),
    };
    let unconfirmed = Row {
        name: "publish, unconfirmed, messages/s",
        composed: Value::Missing("(always confirms)"),
        native: Value::Rate(publish_native(&nats, &broker, messages, false).await),
    };

    let transform = broker.compose(tmp.path(), "transform", &["--subscribe", "bench.in"]);
    let composed = {
        let _app = App::subscribed(&transform, &[]).await;
        pipeline(&nats, "bench.in", messages).await
    };
    let native = {
        let handler = connect(&broker).await;
        let inputs = handler.subscribe("bench.nin").await.expect("subscribe");
        let task = tokio::spawn(native_transform(handler, inputs));
        let rate = pipeline(&nats, "bench.nin", messages).await;
        task.abort();
        rate
    };
    let consume = Row {
        name: "consume -> handle -> publish, messages/s",
        composed: Value::Rate(composed),
        native: Value::Rate(native),
    };

    let responder = broker.compose(tmp.path(), "responder", &["--subscribe", "bench.rr"]);
    let composed = {
        let _app = App::subscribed(&responder, &[]).await;
        round_trips(&nats, "bench.rr", requests).await
    };
    let native = {
        let handler = connect(&broker).await;
        let incoming = handler.subscribe("bench.nrr").await.expect("subscribe");
        let task = tokio::spawn(native_responder(handler, incoming));
        let times = round_trips(&nats, "bench.nrr", requests).await;
        task.abort();
        times
    };
    let p50 = Row {
        name: "request-reply round trip, p50",
        composed: Value::Latency(percentile(&composed, 50)),
        native: Value::Latency(percentile(&native, 50)),
    };
    let p99 = Row {
        name: "request-reply round trip, p99",
        composed: Value::Latency(percentile(&composed, 99)),
        native: Value::Latency(percentile(&native, 99)),
    };

    let wasmtime = support::wasmtime()
        .arg("--version")
        .output()
        .map(|o| support::text(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let transport = if tls { "TLS" } else { "plaintext" };
    println!("NATS bench ({transport}): {messages} messages, {requests} requests, own nats-server, {wasmtime}");
    print_table(&[publish, unconfirmed, consume, p50, p99]);
}

/// One measurement, composed and native.
struct Row {
    name: &'static str,
    composed: Value,
    native: Value,
}

/// A measured value.
enum Value {
    /// Messages per second.
    Rate(f64),
    /// A duration.
    Latency(Duration),
    /// Not measured, and why.
    Missing(&'static str),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Value::Rate(rate) => format!("{rate:.0}"),
            Value::Latency(time) => format!("{:.3} ms", time.as_secs_f64() * 1e3),
            Value::Missing(why) => why.to_string(),
        };
        f.pad(&text)
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "| {:<40} | {:>18} | {:>20} |",
        "measurement", "composed (wasm)", "native (async-nats)"
    );
    println!("|{:-<42}|{:->20}|{:->22}|", "", "", "");
    for row in rows {
        println!(
            "| {:<40} | {:>18} | {:>20} |",
            row.name, row.composed, row.native
        );
    }
}

/// The median time of 5 runs of the composed `publisher` sending one message to `broker`,
/// from the start of `wasmtime run` to its exit (a new connection each time).
async fn one_message_time(broker: &Broker, dir: &Path) -> Duration {
    let dir = dir.join(if broker.pki.is_some() { "tls" } else { "plain" });
    std::fs::create_dir_all(&dir).expect("make dir");
    let publisher = broker.compose(&dir, "publisher", &[]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let (status, stderr) = support::app::run(&publisher, &[("COUNT", "1")]).await;
        assert!(status.success(), "publisher failed:\n{stderr}");
        times.push(start.elapsed());
    }
    times.sort();
    times[2]
}

/// Starts `nats-server` on a free port (serving TLS with `pki`'s server certificate when
/// given); returns the process (killed on drop) and its URL.
async fn start_server(pki: Option<&support::tls::Pki>) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let program = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let config = pki.map(|pki| pki.nats_config(&pki.server, false));
    let tls_args = match &config {
        Some(config) => vec!["-c", config.to_str().expect("UTF-8 path")],
        None => Vec::new(),
    };
    let mut child = Command::new(&program)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(tls_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e}; install nats-server"));
    let mut log = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    within("nats-server start", async {
        while let Some(line) = log.next_line().await.expect("read nats-server log") {
            if line.contains("Server is ready") {
                return;
            }
        }
        panic!("nats-server exited at start");
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    (child, format!("nats://127.0.0.1:{port}"))
}

/// A composed component on `wasmtime run -S inherit-network`, killed on drop.
struct App {
    _child: Child,
}

impl App {
    /// Starts `component` and waits until it logs `subscribed to`.
    async fn subscribed(component: &Path, env: &[(&str, &str)]) -> App {
        let mut child = Command::from(wasmtime_net(component, env))
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wasmtime");
        let mut log = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        within("subscription of the composed app", async {
            while let Some(line) = log.next_line().await.expect("read app stderr") {
                if line.contains("subscribed to") {
                    return;
                }
            }
            panic!("the composed app exited before subscribing");
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        App { _child: child }
    }
}

/// `wasmtime run -S inherit-network --env K=V... component`, stdin and stdout closed.
fn wasmtime_net(component: &Path, env: &[(&str, &str)]) -> std::process::Command {
    let mut command = support::wasmtime();
    command.args(["run", "-S", "inherit-network"]);
    for (key, value) in env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command
        .arg(component)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// Confirms that the server processed what a client sent: a message to the client's own
/// subscription, and its echo.
struct Echo {
    client: Client,
    subject: String,
    echoes: Subscriber,
}

impl Echo {
    /// Subscribes `client` to a fresh inbox.
    async fn new(client: &Client) -> Echo {
        let subject = client.new_inbox();
        let echoes = client.subscribe(subject.clone()).await.expect("subscribe");
        Echo {
            client: client.clone(),
            subject,
            echoes,
        }
    }

    /// Returns once the server has processed everything sent before.
    async fn round_trip(&mut self) {
        self.client
            .publish(self.subject.clone(), "".into())
            .await
            .expect("publish");
        within("round trip", self.echoes.next())
            .await
            .expect("echo subscription");
    }
}

/// Receives `n` messages on `subscriber`; returns the rate from the first to the last.
async fn receive_rate(subscriber: &mut Subscriber, n: usize) -> f64 {
    within("receiving the published messages", async {
        subscriber.next().await.expect("subscription");
        let first = Instant::now();
        for _ in 1..n {
            subscriber.next().await.expect("subscription");
        }
        (n - 1) as f64 / first.elapsed().as_secs_f64()
    })
    .await
}

/// The composed `publisher` sending `n` messages; rate seen by a native subscriber.
async fn publish_composed(nats: &Client, publisher: &Path, n: usize) -> f64 {
    let mut subscriber = nats.subscribe("bench.pub").await.expect("subscribe");
    Echo::new(nats).await.round_trip().await;
    let count = n.to_string();
    let mut run = Command::from(wasmtime_net(
        publisher,
        &[("TOPIC", "bench.pub"), ("COUNT", &count)],
    ));
    run.kill_on_drop(true);
    let run = tokio::spawn(async move { run.output().await.expect("run publisher") });
    let rate = receive_rate(&mut subscriber, n).await;
    let output = within("publisher exit", run).await.expect("publisher task");
    assert!(
        output.status.success(),
        "publisher failed: {}",
        support::text(&output.stderr)
    );
    rate
}

/// A native client on its own connection publishing `n` messages as the publisher example
/// does, each `confirmed` by a round trip or just flushed; rate seen by a subscriber.
async fn publish_native(nats: &Client, broker: &Broker, n: usize, confirmed: bool) -> f64 {
    let subject = match confirmed {
        true => "bench.npub",
        false => "bench.npub.unconfirmed",
    };
    let mut subscriber = nats.subscribe(subject).await.expect("subscribe");
    Echo::new(nats).await.round_trip().await;
    let publisher = connect(broker).await;
    let mut echo = Echo::new(&publisher).await;
    let sender = tokio::spawn(async move {
        for i in 1..=n {
            let mut headers = HeaderMap::new();
            headers.insert("Content-Type", "text/plain");
            headers.insert("seq", i.to_string().as_str());
            let data = format!("hello #{i}");
            publisher
                .publish_with_headers(subject, headers, data.into())
                .await
                .expect("publish");
            match confirmed {
                true => echo.round_trip().await,
                false => publisher.flush().await.expect("flush"),
            }
        }
    });
    let rate = receive_rate(&mut subscriber, n).await;
    within("native publisher", sender)
        .await
        .expect("publisher task");
    rate
}

/// What `transform` and the run driver do, natively: upper-case, keep the headers, add
/// `transformed-by`, publish to `<subject>.upper`, confirm, then take the next message.
async fn native_transform(nats: Client, mut inputs: Subscriber) {
    let mut echo = Echo::new(&nats).await;
    while let Some(message) = inputs.next().await {
        let text = String::from_utf8(message.payload.to_vec()).expect("UTF-8");
        let mut headers = message.headers.unwrap_or_default();
        headers.insert("transformed-by", "transform");
        nats.publish_with_headers(
            format!("{}.upper", message.subject),
            headers,
            text.to_uppercase().into(),
        )
        .await
        .expect("publish");
        echo.round_trip().await;
    }
}

/// What `responder` and the run driver do, natively: reply `hello, <data>` as
/// text/plain, confirm, then take the next request.
async fn native_responder(nats: Client, mut requests: Subscriber) {
    let mut echo = Echo::new(&nats).await;
    while let Some(request) = requests.next().await {
        let Some(reply_to) = request.reply else {
            continue;
        };
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", "text/plain");
        let text = format!("hello, {}", String::from_utf8_lossy(&request.payload));
        nats.publish_with_headers(reply_to, headers, text.into())
            .await
            .expect("reply");
        echo.round_trip().await;
    }
}

/// Publishes `n` messages on `subject` with at most [`WINDOW`] awaiting their output on
/// `<subject>.upper`; returns outputs per second from the first publish to the last output.
async fn pipeline(nats: &Client, subject: &str, n: usize) -> f64 {
    let mut outputs = nats
        .subscribe(format!("{subject}.upper"))
        .await
        .expect("subscribe");
    Echo::new(nats).await.round_trip().await;
    within("consume -> handle -> publish", async {
        let started = Instant::now();
        let (mut sent, mut done) = (0, 0);
        while done < n {
            if sent < n && sent - done < WINDOW {
                while sent < n && sent - done < WINDOW {
                    let data = format!("message {sent}");
                    nats.publish(subject.to_string(), data.into())
                        .await
                        .expect("publish");
                    sent += 1;
                }
                nats.flush().await.expect("flush");
            }
            outputs.next().await.expect("subscription");
            done += 1;
        }
        n as f64 / started.elapsed().as_secs_f64()
    })
    .await
}

/// Makes `n` sequential requests on `subject` after a warm-up; returns the sorted times.
async fn round_trips(nats: &Client, subject: &str, n: usize) -> Vec<Duration> {
    within("request-reply", async {
        for _ in 0..WARM_UP {
            nats.request(subject.to_string(), "warm".into())
                .await
                .expect("request");
        }
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let started = Instant::now();
            nats.request(subject.to_string(), format!("r{i}").into())
                .await
                .expect("request");
            times.push(started.elapsed());
        }
        times.sort();
        times
    })
    .await
}

/// The `p`th percentile of `sorted`.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
