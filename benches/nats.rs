//! NATS bench (`cargo bench --bench nats`, or `benches/nats.sh`): the example apps composed
//! with the NATS backend and run on the `wasmtime` CLI, next to a native Rust client
//! (async-nats) doing the same work on the same server in the same run. Prints one table:
//!
//! * publish, messages/s: the composed `publisher` (its own `run`, so compose adds the run
//!   wrapper and the backend confirms sends in windows, see the README's "Pipelined sends")
//!   against two native loops. The first confirms each message with a round trip, what the
//!   backend does outside a handler without the wrapper (async-nats has no public ping: it
//!   publishes to its own subscription and waits for that echo, a little more work than a
//!   `PING`). The second publishes as an async-nats user does by default: the client
//!   writes when its buffer fills, and one flush at the end. Rate = messages received by a
//!   native subscriber, from the first to the last, so wasmtime's start-up is not counted.
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
//! Every phase ends by itself: a message that has not arrived [`QUIET_LIMIT`] after the
//! last progress, or by the end of the phase ([`PHASE_LIMIT`]), counts as lost (and as late
//! if it arrives after all); a request without an answer within [`REQUEST_LIMIT`] counts as
//! failed. Every subscription the bench makes is confirmed by the server (a round trip on
//! the subscribing connection) before anything is published to it: async-nats's
//! `subscribe` and `flush` return before the server has processed the `SUB`, and publishing
//! from another connection right after them lost a message or got `NoResponders`.
//!
//! The bench starts its own `nats-server` on a free port (`tests/support/nats.rs`: with
//! JetStream but no stream, so the backend's sends are core NATS after it asked once per
//! subject whether a stream captures it), so other traffic on 127.0.0.1:4222 does not
//! skew it. Counts are bounded: `BENCH_MESSAGES` (default 20000), `BENCH_REQUESTS`
//! (default 2000).
//!
//! With `BENCH_TLS=1` the server serves TLS only (a test CA made by `support::tls`), the
//! apps are composed with `tls://` and `--tls-ca` (the `backend-nats-tls` adapter) and the
//! native client speaks TLS too, so the table compares TLS with TLS. A line above the table
//! gives what connecting with TLS costs the composed app: the `publisher` sending one
//! message, start to exit, median of 5, over TLS and against a plaintext server.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, HeaderMap, Subscriber};
use futures_util::StreamExt;
use support::app::App;
use support::nats::{connect_with, round_trip, within, Server};
use support::tls::Pki;

/// How long one measurement may take; what has not arrived by then counts as lost.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// How long without progress before the messages awaited count as lost.
const QUIET_LIMIT: Duration = Duration::from_secs(3);

/// How long one request may wait for its reply before it counts as failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(2);

/// Messages in flight at most in the consume → handle → publish measurement.
const WINDOW: usize = 256;

/// Requests made before measuring the round trip.
const WARM_UP: usize = 100;

fn main() {
    let messages = common::count("BENCH_MESSAGES", 20_000);
    let requests = common::count("BENCH_REQUESTS", 2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(messages, requests));
}

/// The bench's server, and the certificates it serves when it serves TLS.
struct Broker {
    /// Kept running for the bench.
    server: Server,
    /// The test certificates (`BENCH_TLS=1`).
    pki: Option<Pki>,
}

impl Broker {
    /// Starts a nats-server of the bench's own, serving TLS only when `pki` is given.
    async fn start(pki: Option<Pki>) -> Broker {
        let server = match &pki {
            None => Server::start(&[]).await,
            Some(pki) => {
                let config = pki.nats_config(&pki.server, false);
                Server::start(&["-c", config.to_str().expect("UTF-8 path")]).await
            }
        };
        Broker { server, pki }
    }

    /// `compose` arguments reaching the server, followed by `more`.
    fn compose(&self, dir: &Path, example: &str, more: &[&str]) -> std::path::PathBuf {
        let url = self.server.url();
        let tls_url = url.replace("nats://", "tls://");
        let mut args = match &self.pki {
            None => vec!["--broker", url.as_str()],
            Some(pki) => vec![
                "--broker",
                tls_url.as_str(),
                "--tls-ca",
                pki.ca.to_str().expect("UTF-8 path"),
            ],
        };
        args.extend_from_slice(more);
        support::compose(dir, example, &args)
    }

    /// Connects a native client (over TLS when the server serves it).
    async fn connect(&self) -> Client {
        let mut options = ConnectOptions::new();
        if let Some(pki) = &self.pki {
            // Two rustls providers are compiled in (by different dependencies): pick one.
            let _ = rustls::crypto::ring::default_provider().install_default();
            options = options
                .require_tls(true)
                .add_root_certificates(pki.ca.clone());
        }
        connect_with(&self.server.url(), options).await
    }
}

/// The median time of the composed `publisher` sending one message, start to exit.
async fn one_message_time(broker: &Broker, dir: &Path) -> Duration {
    let dir = dir.join(support::unique("one"));
    std::fs::create_dir(&dir).expect("make dir");
    let publisher = broker.compose(&dir, "publisher", &[]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let (status, stderr) = App::start(&publisher, &[("TOPIC", "bench.one"), ("COUNT", "1")])
            .finish_within(PHASE_LIMIT)
            .await;
        assert!(status.success(), "bench: the publisher failed: {stderr}");
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

async fn bench(messages: usize, requests: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let tls = std::env::var("BENCH_TLS").is_ok_and(|v| v == "1");
    let broker = Broker::start(tls.then(Pki::new)).await;
    let nats = broker.connect().await;
    if tls {
        let plain = Broker::start(None).await;
        let with_tls = one_message_time(&broker, tmp.path()).await;
        let without = one_message_time(&plain, tmp.path()).await;
        println!(
            "composed publisher sending 1 message (start to exit, median of 5): {:.1} ms over \
             TLS, {:.1} ms plaintext (TLS connect ~{:.1} ms)",
            with_tls.as_secs_f64() * 1e3,
            without.as_secs_f64() * 1e3,
            (with_tls.as_secs_f64() - without.as_secs_f64()) * 1e3
        );
    }

    let publisher = broker.compose(tmp.path(), "publisher", &[]);
    let composed = publish_composed(&nats, &publisher, messages).await;
    let confirmed = Row {
        name: "publish; native confirms each, msgs/s",
        composed: Value::Rate(composed),
        native: Value::Rate(publish_native(&nats, &broker, messages, true).await),
    };
    let buffered = Row {
        name: "publish; native flushes at end, msgs/s",
        composed: Value::Rate(composed),
        native: Value::Rate(publish_native(&nats, &broker, messages, false).await),
    };

    let transform = broker.compose(tmp.path(), "transform", &["--subscribe", "bench.in"]);
    let composed = {
        let _app = App::subscribed(&transform, &[]).await;
        pipeline(&nats, "bench.in", messages).await
    };
    let native = {
        let handler = broker.connect().await;
        let inputs = subscribed(&handler, "bench.nin").await;
        let task = tokio::spawn(native_transform(handler, inputs));
        let rate = pipeline(&nats, "bench.nin", messages).await;
        task.abort();
        rate
    };
    let consume = Row {
        name: "consume -> handle -> publish, msgs/s",
        composed: Value::Rate(composed),
        native: Value::Rate(native),
    };

    let responder = broker.compose(tmp.path(), "responder", &["--subscribe", "bench.rr"]);
    let composed = {
        let _app = App::subscribed(&responder, &[]).await;
        round_trips(&nats, "bench.rr", requests).await
    };
    let native = {
        let handler = broker.connect().await;
        let incoming = subscribed(&handler, "bench.nrr").await;
        let task = tokio::spawn(native_responder(handler, incoming));
        let times = round_trips(&nats, "bench.nrr", requests).await;
        task.abort();
        times
    };
    let p50 = Row {
        name: "request-reply p50",
        composed: composed.percentile(50),
        native: native.percentile(50),
    };
    let p99 = Row {
        name: "request-reply p99",
        composed: composed.percentile(99),
        native: native.percentile(99),
    };

    let title = format!(
        "NATS bench{}: {messages} messages, {requests} requests, own nats-server, {}",
        if tls { " over TLS" } else { "" },
        common::wasmtime_version()
    );
    let table = [confirmed, buffered, consume, p50, p99];
    let rows: Vec<(&str, &dyn fmt::Display, &dyn fmt::Display)> = table
        .iter()
        .map(|row| (row.name, &row.composed as _, &row.native as _))
        .collect();
    common::print_table(&title, "async-nats", &rows);
}

/// One measurement, composed and native.
struct Row {
    name: &'static str,
    composed: Value,
    native: Value,
}

/// A measured value.
enum Value {
    /// Messages per second, and what did not arrive.
    Rate(Throughput),
    /// A round-trip time (`None`: no request was answered), and the failed requests.
    Latency(Option<Duration>, usize),
}

/// Messages per second over the messages that arrived, and how many did not.
#[derive(Clone, Copy)]
struct Throughput {
    rate: f64,
    /// Not arrived by the end of the phase (or [`QUIET_LIMIT`] after the last progress).
    lost: usize,
    /// Counted lost, then arrived after all.
    late: usize,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = match self {
            Value::Rate(measured) => format!("{:.0}", measured.rate),
            Value::Latency(Some(time), _) => format!("{:.3} ms", time.as_secs_f64() * 1e3),
            Value::Latency(None, _) => "no reply".to_string(),
        };
        match self {
            Value::Rate(Throughput { lost, late, .. }) if *lost > 0 => {
                text += &format!(" ({lost} lost, {late} late)")
            }
            Value::Latency(_, failed) if *failed > 0 => text += &format!(" ({failed} failed)"),
            _ => {}
        }
        f.pad(&text)
    }
}

/// Subscribes `client` to `subject` and returns once the server has the subscription, so
/// a message published right after, from any connection, reaches it.
async fn subscribed(client: &Client, subject: &str) -> Subscriber {
    let subscriber = client
        .subscribe(subject.to_string())
        .await
        .expect("subscribe");
    round_trip(client).await;
    subscriber
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

/// Receives up to `n` messages on `subscriber` within the phase; returns the rate from the
/// first to the last, and how many did not arrive.
async fn receive_rate(subscriber: &mut Subscriber, n: usize) -> Throughput {
    let phase_end = Instant::now() + PHASE_LIMIT;
    let mut span: Option<(Instant, Instant)> = None;
    let mut received = 0;
    while received < n {
        // Until the first message arrives the phase limit applies (wasmtime starting up).
        let deadline = match span {
            None => phase_end,
            Some(_) => phase_end.min(Instant::now() + QUIET_LIMIT),
        };
        match tokio::time::timeout_at(deadline.into(), subscriber.next()).await {
            Ok(Some(_)) => {
                received += 1;
                let now = Instant::now();
                span = Some((span.map_or(now, |(first, _)| first), now));
            }
            Ok(None) => panic!("bench: the subscription ended"),
            Err(_) => break,
        }
    }
    let rate = match span {
        Some((first, last)) if received > 1 => (received - 1) as f64 / (last - first).as_secs_f64(),
        _ => 0.0,
    };
    Throughput {
        rate,
        lost: n - received,
        late: 0,
    }
}

/// The composed `publisher` sending `n` messages; rate seen by a native subscriber.
async fn publish_composed(nats: &Client, publisher: &Path, n: usize) -> Throughput {
    let mut subscriber = subscribed(nats, "bench.pub").await;
    let count = n.to_string();
    let run = App::start(publisher, &[("TOPIC", "bench.pub"), ("COUNT", &count)]);
    let measured = receive_rate(&mut subscriber, n).await;
    let (status, stderr) = run.finish_within(PHASE_LIMIT).await;
    if !status.success() {
        eprintln!("bench: the composed publisher failed: {stderr}");
    }
    measured
}

/// A native client on its own connection publishing `n` messages as the publisher example
/// does, each `confirmed` by a round trip, or buffered by the client and flushed once at
/// the end; rate seen by a subscriber.
async fn publish_native(nats: &Client, broker: &Broker, n: usize, confirmed: bool) -> Throughput {
    let subject = match confirmed {
        true => "bench.npub",
        false => "bench.npub.buffered",
    };
    let mut subscriber = subscribed(nats, subject).await;
    let publisher = broker.connect().await;
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
            if confirmed {
                echo.round_trip().await;
            }
        }
        publisher.flush().await.expect("flush");
    });
    let measured = receive_rate(&mut subscriber, n).await;
    if tokio::time::timeout(QUIET_LIMIT, sender).await.is_err() {
        eprintln!("bench: the native publisher did not finish");
    }
    measured
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

/// Publishes `n` messages `message <i>` on `subject` with at most [`WINDOW`] awaiting
/// their output (`MESSAGE <i>`) on `<subject>.upper`; returns outputs per second from the
/// first publish to the last output. When nothing arrives for [`QUIET_LIMIT`], the
/// messages awaited count as lost (and as late if their output comes after all).
async fn pipeline(nats: &Client, subject: &str, n: usize) -> Throughput {
    let mut outputs = subscribed(nats, &format!("{subject}.upper")).await;
    let started = Instant::now();
    let phase_end = started + PHASE_LIMIT;
    let mut last_output = started;
    let mut awaited = HashSet::new();
    let (mut sent, mut done, mut lost, mut late) = (0, 0, 0, 0);
    while (sent < n || !awaited.is_empty()) && Instant::now() < phase_end {
        if sent < n && awaited.len() < WINDOW {
            while sent < n && awaited.len() < WINDOW {
                let data = format!("message {sent}");
                nats.publish(subject.to_string(), data.into())
                    .await
                    .expect("publish");
                awaited.insert(sent);
                sent += 1;
            }
            nats.flush().await.expect("flush");
        }
        let deadline = phase_end.min(Instant::now() + QUIET_LIMIT);
        match tokio::time::timeout_at(deadline.into(), outputs.next()).await {
            Ok(Some(output)) => {
                let index = std::str::from_utf8(&output.payload)
                    .ok()
                    .and_then(|text| text.strip_prefix("MESSAGE "))
                    .and_then(|i| i.parse::<usize>().ok());
                match index.filter(|i| awaited.remove(i)) {
                    Some(_) => {
                        done += 1;
                        last_output = Instant::now();
                    }
                    None => late += 1,
                }
            }
            Ok(None) => panic!("bench: the subscription ended"),
            Err(_) => lost += std::mem::take(&mut awaited).len(),
        }
    }
    Throughput {
        rate: done as f64 / (last_output - started).as_secs_f64().max(f64::MIN_POSITIVE),
        lost: lost + awaited.len() + (n - sent),
        late,
    }
}

/// Round-trip times of answered requests, sorted, and how many requests failed.
struct RoundTrips {
    times: Vec<Duration>,
    failed: usize,
}

impl RoundTrips {
    /// The `p`th percentile, with the failed requests.
    fn percentile(&self, p: usize) -> Value {
        let index = (self.times.len() * p / 100).min(self.times.len().saturating_sub(1));
        Value::Latency(self.times.get(index).copied(), self.failed)
    }
}

/// Makes `n` sequential requests on `subject` after a warm-up, each waiting at most
/// [`REQUEST_LIMIT`], all within [`PHASE_LIMIT`]; requests not answered (or not made in
/// time) count as failed.
async fn round_trips(nats: &Client, subject: &str, n: usize) -> RoundTrips {
    let phase_end = Instant::now() + PHASE_LIMIT;
    let request = |data: String| {
        tokio::time::timeout(
            REQUEST_LIMIT,
            nats.request(subject.to_string(), data.into()),
        )
    };
    for _ in 0..WARM_UP {
        let _ = request("warm".into()).await;
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        if Instant::now() >= phase_end {
            break;
        }
        let started = Instant::now();
        if let Ok(Ok(_)) = request(format!("r{i}")).await {
            times.push(started.elapsed());
        }
    }
    times.sort();
    RoundTrips {
        failed: n - times.len(),
        times,
    }
}
