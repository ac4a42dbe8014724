//! MQTT bench (`cargo bench --bench mqtt`): the example apps composed with the MQTT backend
//! and run on the `wasmtime` CLI, next to a native Rust client (rumqttc) doing the same work
//! with the same QoS on the same Mosquitto in the same run. Prints one table:
//!
//! * publish at QoS 1, confirmed in windows, messages/s: the composed `publisher` (its own
//!   `fn main`, so the run wrapper flushes at the end and `send` returns once written; the
//!   `PUBACK`s are awaited per window of `confirm_window` sends, and every one by the final
//!   flush) against a native loop that publishes without waiting and collects every
//!   `PUBACK` at the end (rumqttc's default; both keep to the broker's Receive Maximum).
//!   Rate = messages received by a native subscriber from the first to the last, so
//!   wasmtime's start-up is not counted.
//! * consume → handle → publish at QoS 1, messages/s: the composed `transform` (its
//!   subscription at QoS 1, the `PUBACK` of each delivery after the handler's send was
//!   acknowledged) against a native task with manual acknowledgements doing the same
//!   (publish the upper-cased text, wait for its `PUBACK`, then acknowledge the input). A
//!   driver keeps at most `WINDOW` messages in flight (Mosquitto drops QoS 1 messages beyond
//!   a client's queue limit) and times from its first publish to the last output.
//!
//! Every phase counts what did not arrive and prints it as lost. The bench starts a Mosquitto
//! of its own with `max_queued_messages 0` (the default drops QoS 1 messages beyond 1,000
//! queued for a subscriber that falls behind a pipelined publisher); `MQTT_PORT` uses the
//! broker on that port instead. Topics are unique. Counts are bounded
//! (`BENCH_MESSAGES`, default 10000) and so is every phase (`PHASE_LIMIT`).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use support::app::App;
use tokio::sync::mpsc;

/// How long one measurement may take before the bench stops it and counts the rest lost.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

/// Messages in flight at most in the consume → handle → publish measurement.
const WINDOW: usize = 200;

fn main() {
    let messages = common::count("BENCH_MESSAGES", 10_000);
    let own_broker = match std::env::var("MQTT_PORT") {
        Ok(_) => None,
        Err(_) => Some(support::mqtt::Mosquitto::start_with(|_| {
            "max_queued_messages 0\n".to_string()
        })),
    };
    let port: u16 = match &own_broker {
        Some(broker) => broker.port,
        None => std::env::var("MQTT_PORT")
            .expect("MQTT_PORT")
            .parse()
            .expect("MQTT_PORT: a port number"),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench(port, messages));
    drop(own_broker);
}

/// A native client; its incoming packets arrive on `packets`.
struct Native {
    client: AsyncClient,
    packets: mpsc::UnboundedReceiver<Packet>,
    /// Messages that arrived while [`Native::wait`] waited for something else.
    held: VecDeque<Publish>,
}

impl Native {
    /// Connects with a clean session; `manual_acks` leaves received messages unacknowledged
    /// until [`AsyncClient::ack`].
    async fn connect(port: u16, manual_acks: bool) -> Native {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_manual_acks(manual_acks);
        let (client, mut events) = AsyncClient::new(options, 1_000);
        let (tx, packets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(packet) = event {
                    if tx.send(packet).is_err() {
                        break;
                    }
                }
            }
        });
        let mut native = Native {
            client,
            packets,
            held: VecDeque::new(),
        };
        native.wait(|p| matches!(p, Packet::ConnAck(_))).await;
        native
    }

    /// The next packet `wanted` accepts (messages kept for [`Native::message`], other
    /// packets dropped); `None` when the phase ran out of time or the connection ended.
    async fn wait(&mut self, wanted: impl Fn(&Packet) -> bool) -> Option<Packet> {
        tokio::time::timeout(PHASE_LIMIT, async {
            while let Some(packet) = self.packets.recv().await {
                match packet {
                    packet if wanted(&packet) => return Some(packet),
                    Packet::Publish(message) => self.held.push_back(message),
                    _ => {}
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// The next message, or `None` (see [`Native::wait`]).
    async fn message(&mut self) -> Option<Publish> {
        if let Some(message) = self.held.pop_front() {
            return Some(message);
        }
        match self.wait(|p| matches!(p, Packet::Publish(_))).await? {
            Packet::Publish(p) => Some(p),
            _ => None,
        }
    }

    /// Subscribes at QoS 1 and waits for the `SUBACK`.
    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.wait(|p| matches!(p, Packet::SubAck(_)))
            .await
            .expect("SUBACK");
    }

    /// Publishes at QoS 1 and waits for the `PUBACK`.
    async fn publish_confirmed(&mut self, topic: &str, payload: String) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
        self.wait(|p| matches!(p, Packet::PubAck(_)))
            .await
            .expect("PUBACK");
    }
}

/// A measured rate and how many messages did not arrive within the phase.
struct Measured {
    rate: f64,
    lost: usize,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&format!("{:.0} (lost {})", self.rate, self.lost))
    }
}

async fn bench(port: u16, n: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let url = format!("mqtt://127.0.0.1:{port}");
    let run = format!("bench-{}", std::process::id());

    let publisher = support::compose(tmp.path(), "publisher", &["--broker", &url]);
    let topic = format!("{run}/pub");
    let mut subscriber = Native::connect(port, false).await;
    subscriber.subscribe(&topic).await;
    let composed_publish = {
        let count = n.to_string();
        let app = App::start(&publisher, &[("TOPIC", &topic), ("COUNT", &count)]);
        let measured = receive(&mut subscriber, n).await;
        let (status, stderr) = app.finish_within(PHASE_LIMIT).await;
        assert!(status.success(), "the publisher failed: {stderr}");
        measured
    };
    let native_publish = {
        let mut native = Native::connect(port, false).await;
        let topic = topic.clone();
        let task = tokio::spawn(async move {
            for i in 0..n {
                native
                    .client
                    .publish(&topic, QoS::AtLeastOnce, false, format!("hello #{i}"))
                    .await
                    .expect("publish");
            }
            let mut acked = 0;
            while acked < n
                && native
                    .wait(|p| matches!(p, Packet::PubAck(_)))
                    .await
                    .is_some()
            {
                acked += 1;
            }
            acked
        });
        let measured = receive(&mut subscriber, n).await;
        let acked = tokio::time::timeout(PHASE_LIMIT, task).await;
        let acked = acked.ok().and_then(Result::ok).unwrap_or(0);
        assert_eq!(acked, n, "the native publisher's PUBACKs did not all come");
        measured
    };

    let input = format!("{run}/in");
    let transform = support::compose(
        tmp.path(),
        "transform",
        &["--broker", &url, "--subscribe", &input],
    );
    let composed_pipeline = {
        let _app = App::subscribed(&transform, &[]).await;
        pipeline(port, &input, n).await
    };
    let native_input = format!("{run}/nin");
    let native_pipeline = {
        let mut handler = Native::connect(port, true).await;
        handler.subscribe(&native_input).await;
        let task = tokio::spawn(async move {
            while let Some(message) = handler.message().await {
                let topic = format!("{}.upper", String::from_utf8_lossy(&message.topic));
                let text = String::from_utf8_lossy(&message.payload).to_uppercase();
                handler.publish_confirmed(&topic, text).await;
                handler.client.ack(&message).await.expect("ack");
            }
        });
        let measured = pipeline(port, &native_input, n).await;
        task.abort();
        measured
    };

    let title = format!(
        "MQTT bench: {n} messages, Mosquitto on 127.0.0.1:{port}, QoS 1 on both sides, {}",
        common::wasmtime_version()
    );
    common::print_table(
        &title,
        "rumqttc",
        &[
            (
                "publish, PUBACKs per window / at the end, msgs/s",
                &composed_publish,
                &native_publish,
            ),
            (
                "consume -> handle -> publish, ack after PUBACK, msgs/s",
                &composed_pipeline,
                &native_pipeline,
            ),
        ],
    );
}

/// Receives up to `n` messages; the rate from the first to the last, and how many did not
/// come.
async fn receive(subscriber: &mut Native, n: usize) -> Measured {
    if subscriber.message().await.is_none() {
        return Measured { rate: 0.0, lost: n };
    }
    let first = Instant::now();
    let mut got = 1;
    while got < n && subscriber.message().await.is_some() {
        got += 1;
    }
    Measured {
        rate: (got - 1) as f64 / first.elapsed().as_secs_f64(),
        lost: n - got,
    }
}

/// Publishes `n` messages on `topic` with at most [`WINDOW`] awaiting their output on
/// `<topic>.upper`; outputs per second from the first publish to the last output.
async fn pipeline(port: u16, topic: &str, n: usize) -> Measured {
    let mut outputs = Native::connect(port, false).await;
    outputs.subscribe(&format!("{topic}.upper")).await;
    let inputs = Native::connect(port, false).await;
    let started = Instant::now();
    let (mut sent, mut done) = (0, 0);
    while done < n {
        // Refill in batches: one publish per output would pace the pipeline by the
        // driver's round trips instead of the handler.
        while sent < n && sent - done < WINDOW && (sent - done <= WINDOW / 2 || sent == 0) {
            inputs
                .client
                .publish(topic, QoS::AtLeastOnce, false, format!("message {sent}"))
                .await
                .expect("publish");
            sent += 1;
        }
        if outputs.message().await.is_none() {
            break;
        }
        done += 1;
    }
    Measured {
        rate: done as f64 / started.elapsed().as_secs_f64(),
        lost: n - done,
    }
}
