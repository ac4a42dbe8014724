//! Kafka bench (`cargo bench --bench kafka`): the example apps composed with the Kafka
//! backend and run on the `wasmtime` CLI, next to the native Rust client rskafka doing the
//! same work on the same broker (tansu on 127.0.0.1:9092, or `$KAFKA`) in the same run.
//! Prints one table:
//!
//! * produce (acks=all, each awaited), records/s: the composed `publisher` with
//!   `--option confirm_window=1`, whose every `send` waits for the produce response, against
//!   a native loop producing one record per request and awaiting each (rskafka produces with
//!   acks=all). The composed rate is taken from the records' own timestamps (first to
//!   last), so wasmtime's start-up is not counted.
//! * produce behind the run wrapper, records/s: the composed `publisher` as composed by
//!   default (its own `fn main`, so the run wrapper flushes at the end and sends are
//!   produced in windows of 4,096, one request per window), from its first record's
//!   timestamp to the process's exit (every window acknowledged), against rskafka producing
//!   the same records in batches of 4,096 (one request per partition, each awaited) — a
//!   native producer without per-message waits.
//! * consume → handle → produce, records/s: the composed `transform` in a consumer group
//!   (each delivery's output produced and acknowledged before the next delivery, offsets
//!   committed after `Ok`) against a native loop that fetches, upper-cases and produces
//!   each record, awaiting each produce (rskafka has no consumer groups, so it commits
//!   nothing: a small advantage). Rate = outputs from the first to the last timestamp.
//!
//! Every phase is bounded (`PHASE_LIMIT`) and counts what was lost. `BENCH_MESSAGES`
//! (default 2000) sets the count.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use support::app::App;
use support::unique;

/// How long one measurement may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(180);

/// Records per window of the composed publisher behind the run wrapper (the default
/// `confirm_window`), and per batch of the native batching producer.
const WINDOW: usize = 4096;

/// Partitions of every topic the bench makes.
const PARTITIONS: i32 = 3;

fn main() {
    let messages = common::count("BENCH_MESSAGES", 2_000);
    let address = std::env::var("KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(&address, messages));
}

/// One row of the table: a rate and what was lost.
struct Rate {
    per_second: f64,
    lost: usize,
}

async fn bench(address: &str, n: usize) {
    let client = ClientBuilder::new(vec![address.to_string()])
        .build()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to Kafka on {address}: {e} (.ci/services starts tansu)")
        });
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = format!("kafka://{address}");

    // Produce, composed, each send awaited.
    let topic = new_topic(&client, "bench_pub").await;
    let one_by_one = support::compose(
        dir.path(),
        "publisher",
        &["--broker", &broker, "--option", "confirm_window=1"],
    );
    let count = n.to_string();
    let (status, stderr) = tokio::time::timeout(
        PHASE_LIMIT,
        App::start(&one_by_one, &[("TOPIC", &topic), ("COUNT", &count)]).finish_within(PHASE_LIMIT),
    )
    .await
    .expect("composed publisher within the limit");
    assert!(status.success(), "publisher failed:\n{stderr}");
    let composed_produce = rate_of(&client, &topic, n).await;

    // Produce behind the run wrapper, composed: windows of sends.
    let topic = new_topic(&client, "bench_pub_windows").await;
    let dir_windows = dir.path().join("windows");
    std::fs::create_dir_all(&dir_windows).expect("dir");
    let publisher = support::compose(&dir_windows, "publisher", &["--broker", &broker]);
    let (status, stderr) = tokio::time::timeout(
        PHASE_LIMIT,
        App::start(&publisher, &[("TOPIC", &topic), ("COUNT", &count)]).finish_within(PHASE_LIMIT),
    )
    .await
    .expect("composed publisher within the limit");
    let exited_ms = chrono::Utc::now().timestamp_millis();
    assert!(status.success(), "publisher failed:\n{stderr}");
    let read = read_all(&client, &topic, n).await;
    let first = read.iter().map(|r| r.1).min().unwrap_or(exited_ms);
    let composed_windows = Rate {
        per_second: read.len() as f64 / ((exited_ms - first).max(1) as f64 / 1000.0),
        lost: n - read.len(),
    };

    // Produce, native, in batches of a window's size, each request awaited.
    let topic = new_topic(&client, "bench_pub_native_batches").await;
    let pcs = partitions(&client, &topic).await;
    let start = Instant::now();
    for window in (0..n).collect::<Vec<_>>().chunks(WINDOW) {
        for (p, pc) in pcs.iter().enumerate() {
            let records: Vec<Record> = window
                .iter()
                .filter(|&&i| i % pcs.len() == p)
                .map(|i| record(format!("message {i}")))
                .collect();
            if !records.is_empty() {
                pc.produce(records, Compression::NoCompression)
                    .await
                    .expect("native batch produce");
            }
        }
    }
    let native_batches = Rate {
        per_second: n as f64 / start.elapsed().as_secs_f64(),
        lost: n - read_all(&client, &topic, n).await.len(),
    };

    // Produce, native: one record per request, each awaited.
    let topic = new_topic(&client, "bench_pub_native").await;
    let pcs = partitions(&client, &topic).await;
    let start = Instant::now();
    for i in 0..n {
        let pc = &pcs[i % pcs.len()];
        pc.produce(
            vec![record(format!("message {i}"))],
            Compression::NoCompression,
        )
        .await
        .expect("native produce");
    }
    let native_produce = Rate {
        per_second: n as f64 / start.elapsed().as_secs_f64(),
        lost: n - read_all(&client, &topic, n).await.len(),
    };

    // Consume -> handle -> produce, composed.
    let input = new_topic(&client, "bench_in").await;
    let output = topic_named(&client, format!("{input}.upper")).await;
    fill(&client, &input, n).await;
    let transform = support::compose(
        dir.path(),
        "transform",
        &[
            "--broker",
            &broker,
            "--subscribe",
            &input,
            "--queue-group",
            &unique("bench"),
            "--option",
            "auto_offset_reset=earliest",
            "--option",
            "session_timeout_ms=6000",
        ],
    );
    let _app = App::subscribed(&transform, &[]).await;
    let composed_pipe = rate_of(&client, &output, n).await;

    // Consume -> handle -> produce, native.
    let input = new_topic(&client, "bench_in_native").await;
    let output = topic_named(&client, format!("{input}.upper")).await;
    fill(&client, &input, n).await;
    let ins = partitions(&client, &input).await;
    let outs = partitions(&client, &output).await;
    let start = Instant::now();
    let mut offsets = vec![0i64; ins.len()];
    let mut done = 0;
    while done < n && start.elapsed() < PHASE_LIMIT {
        for (p, value, _) in fetch_round(&ins, &mut offsets).await {
            outs[p]
                .produce(
                    vec![record(value.to_uppercase())],
                    Compression::NoCompression,
                )
                .await
                .expect("produce");
            done += 1;
        }
    }
    let native_pipe = Rate {
        per_second: done as f64 / start.elapsed().as_secs_f64(),
        lost: n - read_all(&client, &output, n).await.len(),
    };

    let title = format!(
        "Kafka bench: {n} records, broker {address}, 3 partitions, acks=all on both sides, {}",
        common::wasmtime_version()
    );
    common::print_table(
        &title,
        "rskafka",
        &[
            (
                "produce (acks=all, each awaited), records/s",
                &composed_produce,
                &native_produce,
            ),
            (
                "produce behind the run wrapper (windows of 4096 / batches of 4096), records/s",
                &composed_windows,
                &native_batches,
            ),
            (
                "consume -> handle -> produce, records/s",
                &composed_pipe,
                &native_pipe,
            ),
        ],
    );
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0}", self.per_second)?;
        if self.lost > 0 {
            write!(f, " ({} LOST)", self.lost)?;
        }
        Ok(())
    }
}

/// A record with `text` as its value, stamped now.
fn record(text: String) -> Record {
    Record {
        key: None,
        value: Some(text.into_bytes()),
        headers: BTreeMap::new(),
        timestamp: chrono::Utc::now(),
    }
}

/// Creates a fresh topic named after `prefix`.
async fn new_topic(client: &Client, prefix: &str) -> String {
    topic_named(client, unique(prefix)).await
}

/// Creates `name` with [`PARTITIONS`] partitions.
async fn topic_named(client: &Client, name: String) -> String {
    client
        .controller_client()
        .expect("controller")
        .create_topic(&name, PARTITIONS, 1, 5_000)
        .await
        .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
    name
}

/// A client per partition of `topic`.
async fn partitions(client: &Client, topic: &str) -> Vec<PartitionClient> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        out.push(
            client
                .partition_client(topic, p, UnknownTopicHandling::Retry)
                .await
                .expect("partition client"),
        );
    }
    out
}

/// Produces `n` records to `topic`, spread over its partitions, in large batches.
async fn fill(client: &Client, topic: &str, n: usize) {
    let pcs = partitions(client, topic).await;
    for (p, pc) in pcs.iter().enumerate() {
        let records = (0..n)
            .filter(|i| i % pcs.len() == p)
            .map(|i| record(format!("message {i}")))
            .collect();
        pc.produce(records, Compression::NoCompression)
            .await
            .expect("fill");
    }
}

/// Fetches once from each partition at `offsets` (moving them on): each record's
/// partition index, value (as text) and timestamp (ms).
async fn fetch_round(pcs: &[PartitionClient], offsets: &mut [i64]) -> Vec<(usize, String, i64)> {
    let mut out = Vec::new();
    for (p, pc) in pcs.iter().enumerate() {
        let (records, _) = pc
            .fetch_records(offsets[p], 1..1_000_000, 100)
            .await
            .expect("fetch");
        for r in records {
            offsets[p] = r.offset + 1;
            let value = String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default());
            out.push((p, value.into_owned(), r.record.timestamp.timestamp_millis()));
        }
    }
    out
}

/// Reads `topic` from the start until `n` distinct values are there or the limit passes;
/// returns the distinct values with their timestamps.
async fn read_all(client: &Client, topic: &str, n: usize) -> Vec<(String, i64)> {
    let pcs = partitions(client, topic).await;
    let mut offsets = vec![0i64; pcs.len()];
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n && start.elapsed() < PHASE_LIMIT {
        for (_, value, timestamp) in fetch_round(&pcs, &mut offsets).await {
            if seen.insert(value.clone()) {
                out.push((value, timestamp));
            }
        }
    }
    out
}

/// The rate at which `n` records landed on `topic`, from their first to their last
/// timestamp, and how many never came.
async fn rate_of(client: &Client, topic: &str, n: usize) -> Rate {
    let read = read_all(client, topic, n).await;
    let first = read.iter().map(|r| r.1).min().unwrap_or(0);
    let last = read.iter().map(|r| r.1).max().unwrap_or(0);
    Rate {
        per_second: read.len() as f64 / ((last - first).max(1) as f64 / 1000.0),
        lost: n - read.len(),
    }
}
