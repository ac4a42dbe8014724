//! The push path bench (`cargo bench --bench http`): requests/s of the `http` trigger, the
//! `transform` example composed with `--trigger http` and a TCP backend and served by the
//! real `wasmtime serve -S cli -S inherit-network`, against a native HTTP-to-broker gateway
//! (hyper 1 and the broker's native Rust client, in this file) doing the same work with
//! the same delivery semantics, on the same broker in the same run. Prints one table.
//!
//! The work, per request: `POST /<topic>` with the text body `message <i>`; upper-case it
//! and publish it to `<topic>.upper` with its content type and the metadata
//! `transformed-by=transform`; answer 204 once the broker confirmed the publish (the
//! composed app: the backend's `send` from a pushed message confirms before it returns,
//! the http driver then flushes the outbox and answers 204; a failure is a 500 or 502).
//! Confirmation per backend, composed and native alike:
//!
//! * NATS: a round trip on the publishing connection after the `PUB` (the backend's
//!   `PING` / `PONG`; natively an echo through the gateway's own subscription, as
//!   `benches/nats.rs` does, since async-nats's `flush` only writes its buffer). The
//!   bench's own nats-server has JetStream but no stream, so the publish is core NATS; the
//!   composed backend asks JetStream once per subject and instance whether a stream
//!   captures it (one more round trip, which a fresh instance pays on every request).
//! * Redis (pub/sub, the default mode): `PUBLISH` and its reply (the gateway keeps one
//!   connection per client).
//!
//! Each backend is measured three ways, each with `CLIENTS` concurrent keep-alive clients
//! (1 and 8 by default): composed on a fresh instance per request (`wasmtime serve`'s
//! default for WASIp2 components, which opens a broker connection per request), composed
//! with `--max-instance-reuse-count 1000` (the flag compose's note suggests; skipped on a
//! wasmtime whose `serve` lacks it), and native. The clients post `BENCH_MESSAGES`
//! requests (default 2000) together, after a warm-up, within `PHASE_LIMIT`; a request
//! that fails, gets no answer within `REQUEST_LIMIT` or a non-2xx status counts as failed,
//! and a message answered with 2xx that a native subscriber on `<topic>.upper` did not
//! receive within `QUIET_LIMIT` after the last arrival counts as lost. Rates are 2xx
//! responses per second of the load phase; p50/p99 are of the 2xx responses' latency.
//! For NATS the table also gives the broker connections each variant opened (nats-server's
//! monitoring `/varz`, `total_connections`).
//!
//! Set `BENCH_HTTP_BACKENDS` to a subset of "nats redis" (default both).
//!
//! # Where the time goes
//!
//! One run (2026-12-01, `BENCH_MESSAGES=1000`, wasmtime 49.0.3, the shared 2-core machine
//! at load 13; the README's Benchmarks section has the table):
//!
//! * A fresh instance per request is what costs. nats-server's `varz` counted 1020
//!   connections for 1020 requests (1000 and 20 warm-up) with one client, 1160 for 1160
//!   with eight (1000 and 8 × 20): one per request. Every request pays instance
//!   creation, a TCP connect, `INFO` / `CONNECT` / `PING`, the JetStream question whether a
//!   stream captures the subject, then the publish and its round trip. That is 0.8–1.0 ms
//!   per request alone (about 900 req/s for NATS, 1200 for Redis, whose handshake is one
//!   `HELLO 3` and which has no stream question) and it does not scale with clients: 8
//!   clients got no more than 1 (0.06–0.15× native).
//! * With `--max-instance-reuse-count 1000` serve keeps one instance per concurrent
//!   request (WASIp2 instances take one request at a time): 2 connections for one client,
//!   8–9 for eight clients (two runs), so the broker connection, the stream answer and the
//!   instance are paid once per instance. NATS went from 907 to 4114 req/s with one client (0.52×
//!   native; p50 0.22 ms against 0.08 ms) and to 6199 with eight (0.41×). Redis went to
//!   2331 and 14459 req/s.
//! * What is left per request on a reused instance is serve's own work (hyper, the
//!   `wasi:http` resources: request, headers, body stream and response each cross the
//!   component boundary), the driver parsing the request, and the broker round trip,
//!   which the native gateway pays too. The native NATS gateway confirms with an echo on
//!   one connection shared by all clients, so its round trips overlap; the composed one
//!   has one connection per instance and each waits for its own `PONG`.
//! * The native Redis gateway uses the synchronous `redis` crate on `spawn_blocking`, one
//!   connection per client (the dev-dependency has no async feature), which is slower than
//!   an async client would be with eight clients: there the composed reused path measured
//!   1.35× "native", a bound on the gateway, not a win.
//! * Not measured: the CPU per request (both sides share the same 2 busy cores, so rates
//!   move by up to 2× between runs: compare columns of one row).
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// How long the load of one measurement may take; requests not made by then count as failed.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// How long without an arrival before the messages still awaited count as lost.
const QUIET_LIMIT: Duration = Duration::from_secs(3);

/// How long one request may wait for its response before it counts as failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// Concurrent keep-alive clients, one measurement each.
const CLIENTS: [usize; 2] = [1, 8];

/// Requests each client makes before a measurement (on a topic nobody subscribes to).
const WARM_UP: usize = 20;

/// The serve flag that hands one instance many requests.
const REUSE: [&str; 2] = ["--max-instance-reuse-count", "1000"];

fn main() {
    let messages = common::count("BENCH_MESSAGES", 2_000);
    let backends = std::env::var("BENCH_HTTP_BACKENDS").unwrap_or_else(|_| "nats redis".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(messages, &backends));
}

/// Measures each backend of `backends` with each client count and prints the table.
async fn bench(messages: usize, backends: &str) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let reuse_supported = support::text(
        &support::wasmtime()
            .args(["serve", "--help"])
            .output()
            .expect("wasmtime serve --help")
            .stdout,
    )
    .contains(REUSE[0]);
    let mut rows = Vec::new();
    for backend in backends.split_whitespace() {
        let broker = match backend {
            "nats" => Broker::nats().await,
            "redis" => Broker::redis(),
            other => panic!("BENCH_HTTP_BACKENDS: unknown backend `{other}`: expected nats, redis"),
        };
        let dir = tmp.path().join(backend);
        std::fs::create_dir(&dir).expect("make dir");
        let composed = support::compose(
            &dir,
            "transform",
            &["--broker", &broker.url(), "--trigger", "http"],
        );
        for clients in CLIENTS {
            let measure = |variant: &str| {
                format!(
                    "bench.http.{backend}.{clients}.{variant}.{}",
                    std::process::id()
                )
            };
            let fresh = {
                let topic = measure("fresh");
                let opened = broker.connections();
                let served = Serve::start(&composed, &[]).await;
                let load = phase(&broker, served.port, &topic, clients, messages).await;
                (load, broker.connections().zip(opened).map(|(a, b)| a - b))
            };
            let reused = match reuse_supported {
                false => None,
                true => {
                    let topic = measure("reused");
                    let opened = broker.connections();
                    let served = Serve::start(&composed, &REUSE).await;
                    let load = phase(&broker, served.port, &topic, clients, messages).await;
                    Some((load, broker.connections().zip(opened).map(|(a, b)| a - b)))
                }
            };
            let native = {
                let topic = measure("native");
                let opened = broker.connections();
                let gateway = Gateway::start(&broker, clients).await;
                let load = phase(&broker, gateway.port, &topic, clients, messages).await;
                drop(gateway);
                (load, broker.connections().zip(opened).map(|(a, b)| a - b))
            };
            rows.extend(Row::all(broker.name(), clients, fresh, reused, native));
        }
    }
    let title = format!(
        "http trigger bench: {messages} POSTs per measurement, transform on `wasmtime serve` \
         (fresh instance per request / --max-instance-reuse-count 1000) vs a native hyper \
         gateway, own brokers, {}",
        common::wasmtime_version()
    );
    let table: Vec<(&str, &dyn fmt::Display, &dyn fmt::Display)> = rows
        .iter()
        .map(|row| (row.name.as_str(), &row.composed as _, &row.native as _))
        .collect();
    common::print_table(&title, "hyper + async-nats / redis", &table);
}

/// A broker of the bench's own, with a native subscriber's connection.
#[allow(clippy::large_enum_variant)] // one per backend, made once and never moved in a loop
enum Broker {
    /// nats-server with monitoring on `monitor`.
    Nats {
        server: support::nats::Server,
        monitor: u16,
        client: Client,
    },
    /// redis-server without persistence.
    Redis(support::redis::Server),
}

impl Broker {
    /// Starts a nats-server with monitoring.
    async fn nats() -> Broker {
        let monitor = support::free_port();
        let server = support::nats::Server::start(&["-m", &monitor.to_string()]).await;
        let client = support::nats::connect_with(&server.url(), Default::default()).await;
        Broker::Nats {
            server,
            monitor,
            client,
        }
    }

    /// Starts a redis-server without persistence.
    fn redis() -> Broker {
        Broker::Redis(support::redis::Server::start(&["--appendonly", "no"]))
    }

    /// The name in the table.
    fn name(&self) -> &'static str {
        match self {
            Broker::Nats { .. } => "NATS",
            Broker::Redis(_) => "Redis",
        }
    }

    /// The URL for `--broker` and the native clients.
    fn url(&self) -> String {
        match self {
            Broker::Nats { server, .. } => server.url(),
            Broker::Redis(server) => server.url(),
        }
    }

    /// Client connections the server has accepted so far, where it counts them.
    fn connections(&self) -> Option<u64> {
        let Broker::Nats { monitor, .. } = self else {
            return None;
        };
        let varz = ureq::get(&format!("http://127.0.0.1:{monitor}/varz"))
            .call()
            .ok()?
            .into_body()
            .read_to_string()
            .ok()?;
        serde_json::from_str::<serde_json::Value>(&varz).ok()?["total_connections"].as_u64()
    }

    /// Subscribes to `topic` and returns, once the subscription is live, the indices `i`
    /// of the messages `MESSAGE <i>` that arrive on it.
    async fn arrivals(&self, topic: &str) -> mpsc::UnboundedReceiver<usize> {
        let (tx, rx) = mpsc::unbounded_channel();
        let index = |payload: &[u8]| {
            std::str::from_utf8(payload)
                .ok()
                .and_then(|text| text.strip_prefix("MESSAGE "))
                .and_then(|i| i.parse::<usize>().ok())
        };
        match self {
            Broker::Nats { client, .. } => {
                let mut subscriber = client
                    .subscribe(topic.to_string())
                    .await
                    .expect("subscribe");
                support::nats::round_trip(client).await;
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        if let Some(i) = index(&message.payload) {
                            let _ = tx.send(i);
                        }
                    }
                });
            }
            Broker::Redis(server) => {
                let mut connection = support::redis::connect(&server.url());
                let (live, subscribed) = oneshot::channel();
                let topic = topic.to_string();
                std::thread::spawn(move || {
                    let mut pubsub = connection.as_pubsub();
                    pubsub.subscribe(&topic).expect("SUBSCRIBE");
                    pubsub
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .expect("read timeout");
                    let _ = live.send(());
                    // Ends once the receiver is dropped and the next read times out.
                    while !tx.is_closed() {
                        if let Ok(message) = pubsub.get_message() {
                            if let Some(i) = index(message.get_payload_bytes()) {
                                let _ = tx.send(i);
                            }
                        }
                    }
                });
                subscribed.await.expect("the subscriber thread failed");
            }
        }
        rx
    }
}

/// A composed component served by `wasmtime serve` on a free loopback port; killed when
/// dropped.
struct Serve {
    child: tokio::process::Child,
    port: u16,
}

impl Serve {
    /// Serves `component` with `-S cli -S inherit-network` and `extra` flags, and waits
    /// until it accepts requests.
    async fn start(component: &Path, extra: &[&str]) -> Serve {
        let port = support::free_port();
        let program: PathBuf = std::env::var("WASMTIME")
            .unwrap_or_else(|_| "wasmtime".into())
            .into();
        let mut child = tokio::process::Command::new(program)
            .args(["serve", "-S", "cli", "-S", "inherit-network"])
            .args(extra)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg(component)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wasmtime serve");
        let mut log = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let ready = format!("Serving HTTP on http://127.0.0.1:{port}/");
        let mut seen = Vec::new();
        let started = tokio::time::timeout(PHASE_LIMIT, async {
            while let Ok(Some(line)) = log.next_line().await {
                let done = line.contains(&ready);
                seen.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            started == Ok(true),
            "wasmtime serve did not start:\n{}",
            seen.join("\n")
        );
        // Keep reading its log (a failed request logs a line) so the pipe never fills up.
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        Serve { child, port }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The native HTTP-to-broker gateway: hyper 1 on a free loopback port; stops when dropped.
struct Gateway {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Connects the native publisher(s) and starts serving.
    async fn start(broker: &Broker, clients: usize) -> Gateway {
        let publisher = Arc::new(Publisher::connect(broker, clients).await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        let port = listener.local_addr().expect("gateway address").port();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let publisher = publisher.clone();
                let service = hyper::service::service_fn(move |request| {
                    let publisher = publisher.clone();
                    async move { Ok::<_, Infallible>(handle(&publisher, request).await) }
                });
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Gateway { port, task }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the composed `transform` and the http driver do for one request, natively.
async fn handle(publisher: &Publisher, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    let topic = request.uri().path().trim_start_matches('/').to_string();
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return respond(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")),
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "payload is not UTF-8 text\n".into(),
        );
    };
    let upper = text.to_uppercase();
    match publisher
        .publish(&format!("{topic}.upper"), upper, content_type)
        .await
    {
        Ok(()) => respond(StatusCode::NO_CONTENT, String::new()),
        Err(e) => respond(StatusCode::BAD_GATEWAY, format!("publishing failed: {e}\n")),
    }
}

/// The gateway's native broker client.
#[allow(clippy::large_enum_variant)] // one per gateway, made once behind an `Arc`
enum Publisher {
    /// One async-nats connection, and the echoes that confirm its publishes.
    Nats { client: Client, echo: Echo },
    /// One Redis connection per client, each used by one request at a time.
    Redis(Arc<Mutex<Vec<redis::Connection>>>),
}

impl Publisher {
    /// Connects to `broker`, with a connection per client where the client is synchronous.
    async fn connect(broker: &Broker, clients: usize) -> Publisher {
        match broker {
            Broker::Nats { server, .. } => {
                let client = support::nats::connect_with(&server.url(), Default::default()).await;
                let echo = Echo::start(&client).await;
                Publisher::Nats { client, echo }
            }
            Broker::Redis(server) => Publisher::Redis(Arc::new(Mutex::new(
                (0..clients)
                    .map(|_| support::redis::connect(&server.url()))
                    .collect(),
            ))),
        }
    }

    /// Publishes `data` to `topic` and returns once the broker confirmed it.
    async fn publish(
        &self,
        topic: &str,
        data: String,
        content_type: Option<String>,
    ) -> Result<(), String> {
        match self {
            Publisher::Nats { client, echo } => {
                let mut headers = HeaderMap::new();
                if let Some(content_type) = content_type {
                    headers.insert("content-type", content_type.as_str());
                }
                headers.insert("transformed-by", "transform");
                client
                    .publish_with_headers(topic.to_string(), headers, data.into())
                    .await
                    .map_err(|e| e.to_string())?;
                echo.round_trip().await
            }
            Publisher::Redis(pool) => {
                let pool = pool.clone();
                let topic = topic.to_string();
                tokio::task::spawn_blocking(move || {
                    let mut connection = pool
                        .lock()
                        .expect("pool")
                        .pop()
                        .ok_or("more concurrent requests than connections")?;
                    let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(&topic)
                        .arg(data)
                        .query(&mut connection);
                    pool.lock().expect("pool").push(connection);
                    published.map(drop).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    }
}

/// The requests waiting for their echo, by echo number.
type Waiters = Arc<Mutex<std::collections::HashMap<u64, oneshot::Sender<()>>>>;

/// Round trips on a NATS connection: a message to the connection's own subscription
/// returns once the server processed everything the connection sent before it. Each
/// waiter gets its own subject under one wildcard subscription, so concurrent requests
/// wait for their own echo.
struct Echo {
    client: Client,
    prefix: String,
    next: AtomicU64,
    waiting: Waiters,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    /// Subscribes `client` to a fresh inbox wildcard, confirmed by the server.
    async fn start(client: &Client) -> Echo {
        let prefix = client.new_inbox();
        let mut echoes = client
            .subscribe(format!("{prefix}.*"))
            .await
            .expect("subscribe");
        support::nats::round_trip(client).await;
        let waiting = Waiters::default();
        let dispatch = waiting.clone();
        let task = tokio::spawn(async move {
            while let Some(echo) = echoes.next().await {
                let n = echo.subject.rsplit('.').next().and_then(|n| n.parse().ok());
                if let Some(waiter) = n.and_then(|n| dispatch.lock().expect("echoes").remove(&n)) {
                    let _ = waiter.send(());
                }
            }
        });
        Echo {
            client: client.clone(),
            prefix,
            next: AtomicU64::new(0),
            waiting,
            task,
        }
    }

    /// Returns once the server has processed everything sent before.
    async fn round_trip(&self) -> Result<(), String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("echoes").insert(n, tx);
        self.client
            .publish(format!("{}.{n}", self.prefix), Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(REQUEST_LIMIT, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                self.waiting.lock().expect("echoes").remove(&n);
                Err("no echo from the server".into())
            }
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one measurement saw.
struct Load {
    /// 2xx responses per second of the load phase.
    rate: f64,
    /// Latencies of the 2xx responses, sorted.
    latencies: Vec<Duration>,
    /// Requests that failed, timed out, got a non-2xx status or were not made in time.
    failed: usize,
    /// Messages answered with 2xx that did not arrive at the subscriber.
    lost: usize,
}

impl Load {
    /// The `p`th percentile latency.
    fn percentile(&self, p: usize) -> Option<Duration> {
        let index = (self.latencies.len() * p / 100).min(self.latencies.len().saturating_sub(1));
        self.latencies.get(index).copied()
    }

    /// ` (F failed, L lost)` where there are any.
    fn losses(&self) -> String {
        let mut parts = Vec::new();
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        if self.lost > 0 {
            parts.push(format!("{} lost", self.lost));
        }
        match parts.is_empty() {
            true => String::new(),
            false => format!(" ({})", parts.join(", ")),
        }
    }
}

/// One measurement: `clients` keep-alive clients POST `n` messages to `/<topic>` on `port`
/// after a warm-up; then the arrivals on `<topic>.upper` are counted.
async fn phase(broker: &Broker, port: u16, topic: &str, clients: usize, n: usize) -> Load {
    let mut arrivals = broker.arrivals(&format!("{topic}.upper")).await;
    let warm = post_all(port, &format!("{topic}.warm"), clients, WARM_UP * clients).await;
    if warm.ok.len() < warm.made {
        eprintln!(
            "bench: {} of {} warm-up requests failed",
            warm.made - warm.ok.len(),
            warm.made
        );
    }
    let load = post_all(port, topic, clients, n).await;
    let mut awaited: HashSet<usize> = load.ok.iter().map(|(i, _)| *i).collect();
    while !awaited.is_empty() {
        match tokio::time::timeout(QUIET_LIMIT, arrivals.recv()).await {
            Ok(Some(i)) => {
                awaited.remove(&i);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut latencies: Vec<Duration> = load.ok.iter().map(|(_, t)| *t).collect();
    latencies.sort();
    Load {
        rate: latencies.len() as f64 / load.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        failed: n - latencies.len(),
        lost: awaited.len(),
        latencies,
    }
}

/// What the clients of one load got.
struct Posted {
    /// Requests made.
    made: usize,
    /// The index and latency of each 2xx response.
    ok: Vec<(usize, Duration)>,
    /// From the first request to the last response.
    elapsed: Duration,
}

/// `clients` threads, each with its own keep-alive connection, POST `message <i>` for
/// `i` in `0..n` to `/<topic>` between them, within [`PHASE_LIMIT`].
async fn post_all(port: u16, topic: &str, clients: usize, n: usize) -> Posted {
    let url = format!("http://127.0.0.1:{port}/{topic}");
    tokio::task::spawn_blocking(move || {
        let next = AtomicUsize::new(0);
        let made = AtomicUsize::new(0);
        let started = Instant::now();
        let deadline = started + PHASE_LIMIT;
        let ok = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    scope.spawn(|| {
                        let agent: ureq::Agent = ureq::Agent::config_builder()
                            .http_status_as_error(false)
                            .timeout_global(Some(REQUEST_LIMIT))
                            .build()
                            .into();
                        let mut ok = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n || Instant::now() >= deadline {
                                return ok;
                            }
                            made.fetch_add(1, Ordering::Relaxed);
                            let sent = Instant::now();
                            let response = agent
                                .post(&url)
                                .header("content-type", "text/plain")
                                .send(format!("message {i}"));
                            if let Ok(mut response) = response {
                                let _ = response.body_mut().read_to_vec();
                                if response.status().is_success() {
                                    ok.push((i, sent.elapsed()));
                                }
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a client thread panicked"))
                .collect()
        });
        Posted {
            made: made.into_inner(),
            ok,
            elapsed: started.elapsed(),
        }
    })
    .await
    .expect("the clients failed")
}

/// A table row.
struct Row {
    name: String,
    composed: String,
    native: String,
}

impl Row {
    /// The rows of one backend and client count: rate, p50, p99 and (NATS) connections.
    fn all(
        backend: &str,
        clients: usize,
        fresh: (Load, Option<u64>),
        reused: Option<(Load, Option<u64>)>,
        native: (Load, Option<u64>),
    ) -> Vec<Row> {
        let (fresh, fresh_connections) = fresh;
        let (native, native_connections) = native;
        let (reused, reused_connections) = match reused {
            Some((load, connections)) => (Some(load), connections),
            None => (None, None),
        };
        let prefix = format!(
            "{backend}, {clients} client{}",
            if clients == 1 { "" } else { "s" }
        );
        let both = |value: &dyn Fn(&Load) -> String| match &reused {
            Some(reused) => format!("{} / {}", value(&fresh), value(reused)),
            None => format!("{} / (no reuse flag)", value(&fresh)),
        };
        let ms = |time: Option<Duration>| match time {
            Some(time) => format!("{:.2} ms", time.as_secs_f64() * 1e3),
            None => "none".into(),
        };
        let ratio = |load: &Load| format!("{:.2}×", load.rate / native.rate.max(f64::MIN_POSITIVE));
        let mut rows = vec![
            Row {
                name: format!("{prefix}: req/s, fresh / reused instance"),
                composed: both(&|load| format!("{:.0}{}", load.rate, load.losses())),
                native: format!("{:.0}{}", native.rate, native.losses()),
            },
            Row {
                name: format!("{prefix}: req/s vs native, fresh / reused"),
                composed: both(&ratio),
                native: "1×".into(),
            },
            Row {
                name: format!("{prefix}: p50, fresh / reused"),
                composed: both(&|load| ms(load.percentile(50))),
                native: ms(native.percentile(50)),
            },
            Row {
                name: format!("{prefix}: p99, fresh / reused"),
                composed: both(&|load| ms(load.percentile(99))),
                native: ms(native.percentile(99)),
            },
        ];
        if let (Some(fresh), Some(native)) = (fresh_connections, native_connections) {
            let reused = reused_connections.map_or("?".into(), |n| n.to_string());
            rows.push(Row {
                name: format!("{prefix}: broker connections opened, fresh / reused"),
                composed: format!("{fresh} / {reused}"),
                native: native.to_string(),
            });
        }
        rows
    }
}
