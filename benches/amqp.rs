//! AMQP bench (`cargo bench --bench amqp`): the example apps composed with the AMQP backend
//! and run on the `wasmtime` CLI, next to a native Rust client (lapin) doing the same work
//! with the same delivery semantics, on the same broker in the same run. Prints one table:
//!
//! * publish, confirmed in windows, messages/s: the composed `publisher` (its own `fn main`,
//!   so the run wrapper flushes at the end and `send` returns once written; the broker's
//!   `basic.ack`s are awaited per window of `confirm_window` sends, and every one by the
//!   final flush) against a native loop that publishes each message persistent and
//!   mandatory without waiting and awaits every publisher confirm at the end. Rate =
//!   messages received by a native consumer, from the first to the last, so wasmtime's
//!   start-up is not counted.
//! * consume → handle → publish, messages/s: the composed `transform` (its run driver
//!   flushes, i.e. waits for the confirm of the output, then acks the input) against a
//!   native task on its own connection that does exactly that with lapin (same prefetch,
//!   10). A native driver keeps at most `WINDOW` messages in flight and times from its first
//!   publish to the last output.
//!
//! Every phase is bounded (`BENCH_MESSAGES`, default 5000, and `PHASE_LIMIT`); a phase that
//! runs out of time reports how many messages were lost instead of failing silently.
//! RabbitMQ is the machine's (127.0.0.1:5672, user guest); every queue and routing key is
//! unique to the run.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};

use support::app::App;
use support::rabbitmq::{listen, native, publish, GUEST};

/// How long one measurement may take.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

/// Messages in flight at most in the consume → handle → publish measurement.
const WINDOW: usize = 256;

/// The broker.
const BROKER: &str = "amqp://127.0.0.1:5672";

fn main() {
    let messages = common::count("BENCH_MESSAGES", 5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(messages));
}

/// A measured rate, or how many messages did not arrive within [`PHASE_LIMIT`].
enum Value {
    /// Messages per second.
    Rate(f64),
    /// Lost messages (of how many).
    Lost(usize, usize),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Value::Rate(rate) => format!("{rate:.0}"),
            Value::Lost(lost, of) => format!("LOST {lost} of {of}"),
        };
        f.pad(&text)
    }
}

async fn bench(n: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let run_id = std::process::id();
    let (_connection, channel) = native().await;

    let publisher = support::compose(tmp.path(), "publisher", &["--broker", BROKER]);
    let key = format!("bench.{run_id}.pub");
    let composed_publish = {
        let consumer = listen(&channel, &key).await;
        let count = n.to_string();
        let env: Vec<_> = GUEST
            .into_iter()
            .chain([("TOPIC", key.as_str()), ("COUNT", count.as_str())])
            .collect();
        let run = App::start(&publisher, &env);
        let value = receive(consumer, n).await;
        let (status, stderr) = run.finish_within(PHASE_LIMIT).await;
        assert!(status.success(), "publisher failed:\n{stderr}");
        value
    };
    let key = format!("bench.{run_id}.npub");
    let native_publish = {
        let consumer = listen(&channel, &key).await;
        let (_connection, publishing) = native().await;
        let sender = tokio::spawn(async move {
            let mut confirms = Vec::with_capacity(n);
            for i in 1..=n {
                let mut headers = FieldTable::default();
                headers.insert("seq".into(), AMQPValue::LongString(i.to_string().into()));
                let properties = BasicProperties::default()
                    .with_content_type("text/plain".into())
                    .with_headers(headers)
                    .with_delivery_mode(2);
                let body = format!("hello #{i}");
                let mandatory = BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                };
                let confirm = publishing
                    .basic_publish(
                        "amq.topic".into(),
                        key.as_str().into(),
                        mandatory,
                        body.as_bytes(),
                        properties,
                    )
                    .await
                    .expect("publish");
                confirms.push(confirm);
            }
            for confirm in confirms {
                let confirmation = confirm.await.expect("confirm");
                assert!(confirmation.is_ack(), "the broker refused a message");
            }
        });
        let value = receive(consumer, n).await;
        let confirmed = tokio::time::timeout(PHASE_LIMIT, sender).await;
        assert!(
            matches!(confirmed, Ok(Ok(()))),
            "the native publisher's confirms did not all come"
        );
        value
    };

    let key = format!("bench.{run_id}.in");
    let transform = support::compose(
        tmp.path(),
        "transform",
        &["--broker", BROKER, "--subscribe", &key],
    );
    let composed_pipeline = {
        let _app = App::subscribed(&transform, &GUEST).await;
        pipeline(&channel, &key, n).await
    };
    let key = format!("bench.{run_id}.nin");
    let native_pipeline = {
        let (_connection, handling) = native().await;
        handling
            .basic_qos(10, BasicQosOptions::default())
            .await
            .expect("qos");
        let inputs = listen(&handling, &key).await;
        let task = tokio::spawn(native_transform(handling, inputs));
        let value = pipeline(&channel, &key, n).await;
        task.abort();
        value
    };

    let title = format!(
        "AMQP bench: {n} messages, RabbitMQ on 127.0.0.1:5672, {}",
        common::wasmtime_version()
    );
    common::print_table(
        &title,
        "lapin",
        &[
            (
                "publish, confirms per window / at the end, msgs/s",
                &composed_publish,
                &native_publish,
            ),
            (
                "consume -> handle -> publish, msgs/s",
                &composed_pipeline,
                &native_pipeline,
            ),
        ],
    );
}

/// Receives (and acks) `n` messages; the rate from the first to the last, or how many
/// were lost when they did not all come within [`PHASE_LIMIT`].
async fn receive(mut consumer: Consumer, n: usize) -> Value {
    let mut got = 0;
    let mut first = None;
    let all = tokio::time::timeout(PHASE_LIMIT, async {
        while got < n {
            let delivery = consumer.next().await.expect("consumer").expect("delivery");
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
            first.get_or_insert_with(Instant::now);
            got += 1;
        }
    })
    .await;
    match (all, first) {
        (Ok(()), Some(first)) => Value::Rate((n - 1) as f64 / first.elapsed().as_secs_f64()),
        _ => Value::Lost(n - got, n),
    }
}

/// What `transform` and the run driver do, natively: upper-case, keep the headers, add
/// `transformed-by`, publish to `<key>.upper` and await the confirm, then ack the input.
async fn native_transform(channel: Channel, mut inputs: Consumer) {
    while let Some(Ok(delivery)) = inputs.next().await {
        let text = String::from_utf8(delivery.data.clone()).expect("UTF-8");
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            "transformed-by".into(),
            AMQPValue::LongString("transform".into()),
        );
        let properties = BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(2);
        let key = format!("{}.upper", delivery.routing_key);
        publish(
            &channel,
            "amq.topic",
            &key,
            text.to_uppercase().as_bytes(),
            properties,
        )
        .await;
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
}

/// Publishes `n` messages with `key` with at most [`WINDOW`] awaiting their output on
/// `<key>.upper`; outputs per second from the first publish to the last output.
async fn pipeline(channel: &Channel, key: &str, n: usize) -> Value {
    let mut outputs = listen(channel, &format!("{key}.upper")).await;
    let started = Instant::now();
    let (mut sent, mut done) = (0, 0);
    let all = tokio::time::timeout(PHASE_LIMIT, async {
        while done < n {
            let mut confirms = Vec::new();
            while sent < n && sent - done < WINDOW {
                let body = format!("message {sent}");
                let confirm = channel
                    .basic_publish(
                        "amq.topic".into(),
                        key.into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("publish");
                confirms.push(confirm);
                sent += 1;
            }
            for confirm in confirms {
                confirm.await.expect("confirm");
            }
            let output = outputs.next().await.expect("consumer").expect("delivery");
            output.ack(BasicAckOptions::default()).await.expect("ack");
            done += 1;
        }
    })
    .await;
    match all {
        Ok(()) => Value::Rate(n as f64 / started.elapsed().as_secs_f64()),
        Err(_) => Value::Lost(n - done, n),
    }
}
