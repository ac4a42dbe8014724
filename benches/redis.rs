//! Redis bench (`cargo bench --bench redis`, or `benches/redis.sh`): the example apps composed
//! with the Redis backend and run on the `wasmtime` CLI, next to a native Rust client (the
//! sync `redis` crate) doing the same work on the same server in the same run, in both
//! modes. Prints one table, with the messages lost in each phase:
//!
//! * publish, messages/s: the composed `publisher` against a native loop that waits for
//!   each reply too (outside a handler the backend's `send` returns once Redis answered).
//!   Pub/sub: rate = messages a native subscriber received, from the first to the last, so
//!   wasmtime's start-up is not counted. Streams: rate from the first to the last entry's
//!   id (ids are Redis's millisecond clock).
//! * consume → handle → publish, messages/s: the composed `transform` against a native
//!   handler that upper-cases each message and publishes it, waiting for the reply, before
//!   it takes the next (Streams: and `XACK`s it). Pub/sub: a native driver publishes every
//!   input in one pipeline; rate from its first publish to the last output. Streams: the
//!   inputs are written before the handler starts; rate from the first to the last output
//!   entry's id.
//!
//! The bench starts its own `redis-server` (no persistence) on a free port, so other traffic
//! on 127.0.0.1:6379 does not skew it. Counts are bounded (`BENCH_MESSAGES`, default 20000)
//! and so is every phase (`PHASE_LIMIT`): a phase that runs out reports what it lost.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis::Connection;
use support::redis::{connect, Server};

/// How long one measurement may take before the bench moves on (counting what is missing
/// as lost).
const PHASE_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let messages = common::count("BENCH_MESSAGES", 20_000);
    // No AOF: the bench measures the clients, not the disk.
    let server = Server::start(&["--appendonly", "no"]);
    let url = server.url();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    for mode in ["pubsub", "streams"] {
        let broker = match mode {
            "streams" => format!("{url}?mode=streams"),
            _ => url.clone(),
        };
        let dir = tmp.path().join(mode);
        std::fs::create_dir(&dir).expect("mkdir");
        let publisher = support::compose(&dir, "publisher", &["--broker", &broker]);
        let composed = publish(&url, mode, messages, Some(&publisher));
        let native = publish(&url, mode, messages, None);
        rows.push((
            format!("{mode}: publish, each confirmed, msgs/s"),
            composed,
            native,
        ));
        let composed = handle(&url, &broker, &dir, mode, messages, true);
        let native = handle(&url, &broker, &dir, mode, messages, false);
        rows.push((
            format!("{mode}: consume -> handle -> publish, msgs/s"),
            composed,
            native,
        ));
    }
    let title = format!(
        "Redis bench: {messages} messages per phase, own redis-server, {}",
        common::wasmtime_version()
    );
    let rows: Vec<(&str, &dyn std::fmt::Display, &dyn std::fmt::Display)> = rows
        .iter()
        .map(|(what, composed, native)| (what.as_str(), composed as _, native as _))
        .collect();
    common::print_table(&title, "redis crate", &rows);
}

/// One measurement: a rate and how many messages never arrived.
struct Outcome {
    rate: f64,
    lost: usize,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0}", self.rate)?;
        if self.lost > 0 {
            write!(f, " ({} lost)", self.lost)?;
        }
        Ok(())
    }
}

/// Starts `component` on `wasmtime run -S inherit-network` with `env`; killed by the caller.
fn start(component: &Path, env: &[(&str, &str)]) -> Child {
    let mut command = support::wasmtime();
    command.args(["run", "-S", "inherit-network"]);
    for (key, value) in env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command
        .arg(component)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmtime")
}

/// Waits until `child` logs `subscribed to` on stderr, then keeps draining it.
fn wait_subscribed(child: &mut Child) {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("subscribed to") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(PHASE_LIMIT)
        .expect("the composed app subscribed");
}

/// A native subscriber thread on `channel`: sends the arrival time of each message, live
/// when this returns.
fn subscribe(url: &str, channel: &str) -> mpsc::Receiver<Instant> {
    let mut con = connect(url);
    let (live, is_live) = mpsc::channel();
    let (tx, arrivals) = mpsc::channel();
    let channel = channel.to_string();
    std::thread::spawn(move || {
        con.set_read_timeout(Some(PHASE_LIMIT))
            .expect("read timeout");
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(&channel).expect("subscribe");
        live.send(()).expect("waiting");
        while pubsub.get_message().is_ok() {
            if tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    is_live.recv().expect("subscribed");
    arrivals
}

/// Collects up to `count` arrivals before `deadline`: the first and last and how many.
fn collect(arrivals: &mpsc::Receiver<Instant>, count: usize, deadline: Instant) -> Vec<Instant> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        match arrivals.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(at) => seen.push(at),
            Err(_) => break,
        }
    }
    seen
}

/// The rate of `count` messages between `first` and `last`.
fn rate(count: usize, first: Instant, last: Instant) -> f64 {
    count as f64 / last.duration_since(first).as_secs_f64().max(1e-6)
}

/// Messages/s of `count` stream entries from the ids of the first and last entry of
/// `stream`, and how many of `count` are missing.
fn stream_rate(con: &mut Connection, stream: &str, count: usize) -> Outcome {
    let ms = |id: &str| -> f64 {
        id.split('-')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("an entry id")
    };
    let first: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(con)
        .expect("XRANGE");
    let last: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(con)
        .expect("XREVRANGE");
    let len: usize = redis::cmd("XLEN").arg(stream).query(con).expect("XLEN");
    let (Some((first, _)), Some((last, _))) = (first.first(), last.first()) else {
        return Outcome {
            rate: 0.0,
            lost: count,
        };
    };
    let seconds = ((ms(last) - ms(first)) / 1000.0).max(0.001);
    Outcome {
        rate: len as f64 / seconds,
        lost: count.saturating_sub(len),
    }
}

/// Waits (at most [`PHASE_LIMIT`]) until `stream` holds `count` entries.
fn await_len(con: &mut Connection, stream: &str, count: usize) {
    let deadline = Instant::now() + PHASE_LIMIT;
    while Instant::now() < deadline {
        let len: usize = redis::cmd("XLEN").arg(stream).query(con).expect("XLEN");
        if len >= count {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes `count` messages, with the composed `publisher` or natively.
fn publish(url: &str, mode: &str, count: usize, publisher: Option<&Path>) -> Outcome {
    let topic = format!(
        "pub.{mode}.{}",
        if publisher.is_some() {
            "wasm"
        } else {
            "native"
        }
    );
    let mut con = connect(url);
    let arrivals = (mode == "pubsub").then(|| subscribe(url, &topic));
    let count_text = count.to_string();
    match publisher {
        Some(component) => {
            let mut child = start(component, &[("COUNT", &count_text), ("TOPIC", &topic)]);
            if mode == "streams" {
                await_len(&mut con, &topic, count);
            }
            finish(&mut child, arrivals.as_ref(), count)
                .unwrap_or_else(|| stream_rate(&mut con, &topic, count))
        }
        None => {
            let mut sender = connect(url);
            let deadline = Instant::now() + PHASE_LIMIT;
            for i in 1..=count {
                if Instant::now() >= deadline {
                    break;
                }
                let data = format!("hello #{i}");
                let _: redis::Value = match mode {
                    "streams" => redis::cmd("XADD")
                        .arg(&topic)
                        .arg("*")
                        .arg("data")
                        .arg(&data)
                        .query(&mut sender),
                    _ => redis::cmd("PUBLISH")
                        .arg(&topic)
                        .arg(&data)
                        .query(&mut sender),
                }
                .expect("native publish");
            }
            match &arrivals {
                Some(arrivals) => pubsub_outcome(arrivals, count),
                None => stream_rate(&mut con, &topic, count),
            }
        }
    }
}

/// Pub/sub: the rate and loss seen by a subscriber.
fn pubsub_outcome(arrivals: &mpsc::Receiver<Instant>, count: usize) -> Outcome {
    let seen = collect(arrivals, count, Instant::now() + PHASE_LIMIT);
    match (seen.first(), seen.last()) {
        (Some(&first), Some(&last)) => Outcome {
            rate: rate(seen.len(), first, last),
            lost: count - seen.len(),
        },
        _ => Outcome {
            rate: 0.0,
            lost: count,
        },
    }
}

/// Waits for a composed publisher: pub/sub's outcome from `arrivals`, `None` for Streams
/// (measured from the stream).
fn finish(
    child: &mut Child,
    arrivals: Option<&mpsc::Receiver<Instant>>,
    count: usize,
) -> Option<Outcome> {
    let outcome = arrivals.map(|a| pubsub_outcome(a, count));
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// Consume → handle → publish with the composed `transform` (or a native handler).
fn handle(
    url: &str,
    broker: &str,
    dir: &Path,
    mode: &str,
    count: usize,
    composed: bool,
) -> Outcome {
    let input = format!("in.{mode}.{}", if composed { "wasm" } else { "native" });
    let output = format!("{input}.upper");
    let mut con = connect(url);
    let group = "bench";
    let mut child = None;
    let pubsub = mode == "pubsub";
    let arrivals = pubsub.then(|| subscribe(url, &output));
    if !pubsub {
        let mut pipe = redis::pipe();
        for i in 0..count {
            pipe.cmd("XADD")
                .arg(&input)
                .arg("*")
                .arg("data")
                .arg(format!("m{i}"))
                .ignore();
        }
        let () = pipe.query(&mut con).expect("XADD inputs");
    }
    let handler_url = url.to_string();
    if composed {
        let transform = support::compose(
            dir,
            "transform",
            &[
                "--broker",
                broker,
                "--subscribe",
                &input,
                "--queue-group",
                group,
            ],
        );
        let mut started = start(&transform, &[]);
        wait_subscribed(&mut started);
        child = Some(started);
    } else {
        let (input, output, mode) = (input.clone(), output.clone(), mode.to_string());
        let (live, is_live) = mpsc::channel();
        std::thread::spawn(move || {
            native_handler(&handler_url, &mode, &input, &output, group, count, live)
        });
        is_live.recv().expect("the native handler is live");
    }
    let outcome = if pubsub {
        let started = Instant::now();
        let mut pipe = redis::pipe();
        for i in 0..count {
            pipe.cmd("PUBLISH")
                .arg(&input)
                .arg(format!("m{i}"))
                .ignore();
        }
        let () = pipe.query(&mut con).expect("PUBLISH inputs");
        let seen = collect(
            arrivals.as_ref().expect("pub/sub"),
            count,
            started + PHASE_LIMIT,
        );
        Outcome {
            rate: seen
                .last()
                .map_or(0.0, |&last| rate(seen.len(), started, last)),
            lost: count - seen.len(),
        }
    } else {
        await_len(&mut con, &output, count);
        stream_rate(&mut con, &output, count)
    };
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    outcome
}

/// The native handler: takes each input, publishes it upper-cased and waits for the reply
/// (Streams: then `XACK`s it), until `count` were handled or [`PHASE_LIMIT`] passed.
fn native_handler(
    url: &str,
    mode: &str,
    input: &str,
    output: &str,
    group: &str,
    count: usize,
    live: mpsc::Sender<()>,
) {
    let mut sender = connect(url);
    let deadline = Instant::now() + PHASE_LIMIT;
    let mut handled = 0;
    if mode == "pubsub" {
        let mut con = connect(url);
        con.set_read_timeout(Some(PHASE_LIMIT))
            .expect("read timeout");
        let mut pubsub = con.as_pubsub();
        pubsub.subscribe(input).expect("subscribe");
        live.send(()).expect("waiting");
        while handled < count && Instant::now() < deadline {
            let Ok(message) = pubsub.get_message() else {
                break;
            };
            let upper = message.get_payload_bytes().to_ascii_uppercase();
            let _: i64 = redis::cmd("PUBLISH")
                .arg(output)
                .arg(upper)
                .query(&mut sender)
                .expect("PUBLISH");
            handled += 1;
        }
        return;
    }
    let mut reader = connect(url);
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(input)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut reader);
    live.send(()).expect("waiting");
    while handled < count && Instant::now() < deadline {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("native")
            .arg("COUNT")
            .arg(32)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(input)
            .arg(">")
            .query(&mut reader)
            .unwrap_or_default();
        for key in reply.keys {
            for entry in key.ids {
                let data: Vec<u8> = entry.get("data").unwrap_or_default();
                let _: String = redis::cmd("XADD")
                    .arg(output)
                    .arg("*")
                    .arg("data")
                    .arg(data.to_ascii_uppercase())
                    .query(&mut sender)
                    .expect("XADD");
                let _: i64 = redis::cmd("XACK")
                    .arg(input)
                    .arg(group)
                    .arg(&entry.id)
                    .query(&mut sender)
                    .expect("XACK");
                handled += 1;
            }
        }
    }
}
