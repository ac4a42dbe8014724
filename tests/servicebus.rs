//! End to end against Azure Service Bus's REST protocol: the example apps composed with
//! `--broker` set to a connection string (`Endpoint=sb://127.0.0.1:PORT;...;
//! UseDevelopmentEmulator=true`, plain HTTP) or to `servicebus://HOST/ENTITY` with the SAS key
//! in the environment, and run on the real `wasmtime` CLI (`wasmtime run -S http`).
//!
//! **Tested against a protocol fake, not the service**: no Service Bus emulator can be
//! installed here, so `tests/fakes/servicebus.rs` serves the documented REST protocol on
//! 127.0.0.1 (one fake per test), checks every SAS token and the headers, and lets the test
//! look at what arrived, was completed, unlocked or dead-lettered.
//!
//! Synchronisation: the tests wait on the fake's state (a message arrived, was completed,
//! was dead-lettered), bounded by [`fake::WAIT_LIMIT`]. With the `run` driver a consumer
//! never ends by itself: the test kills it once it has seen what it needs, and a guard
//! kills it if the test fails first. Components that end by themselves are bounded by
//! [`support::finish`].

mod support;

#[path = "fakes/servicebus.rs"]
mod fake;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::json;

use fake::{FakeServiceBus, MAX_DELIVERY_COUNT};
use support::{compose, finish, text};

/// A `wasmtime run -S http` command for `component` with `--env` pairs and no stdin.
fn wasmtime_http(component: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = support::wasmtime();
    command.args(["run", "-S", "http"]);
    for (key, value) in env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command
        .arg(component)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a component that ends by itself and returns its output.
fn run(component: &Path, env: &[(&str, &str)]) -> Output {
    finish(
        wasmtime_http(component, env)
            .spawn()
            .expect("spawn wasmtime"),
    )
}

/// A consumer that runs until the test stops it (or the guard drops).
struct Consumer(Option<Child>);

impl Consumer {
    /// Starts `component` under `wasmtime run -S http`.
    fn start(component: &Path, env: &[(&str, &str)]) -> Self {
        Self(Some(
            wasmtime_http(component, env)
                .spawn()
                .expect("spawn wasmtime"),
        ))
    }

    /// Waits until `probe` finds something in the fake's state and returns it; fails the
    /// test, showing the consumer's stderr, if the consumer exits first or the wait runs out.
    fn wait_for<T>(
        &mut self,
        fake: &FakeServiceBus,
        what: &str,
        probe: impl FnMut(&fake::State) -> Option<T>,
    ) -> T {
        let child = self.0.as_mut().expect("running");
        let alive = || match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the consumer exited ({status})")),
            Err(e) => Err(format!("cannot check the consumer: {e}")),
        };
        match fake.wait_while(what, alive, probe) {
            Ok(found) => found,
            Err(why) => {
                let stderr = self.stop_now();
                panic!("{why}\nconsumer stderr:\n{stderr}")
            }
        }
    }

    /// Kills the consumer and returns its stderr.
    fn stop(mut self) -> String {
        self.stop_now()
    }

    /// Kills the consumer (if it still runs) and returns its stderr.
    fn stop_now(&mut self) -> String {
        let mut child = self.0.take().expect("running");
        let _ = child.kill();
        text(&child.wait_with_output().expect("wait for wasmtime").stderr)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_publisher_sends_content_type_and_metadata_as_properties_with_a_valid_sas_token() {
    let fake = FakeServiceBus::start();
    fake.create_queue("greetings");
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "publisher",
        &["--broker", &fake.connection_string()],
    );
    let output = run(&out, &[("COUNT", "2")]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let sent = fake.inspect(|s| s.queue("greetings").messages.clone());
    assert_eq!(sent.len(), 2);
    for (n, message) in (1..).zip(&sent) {
        assert_eq!(message.text(), format!("hello #{n}"));
        assert_eq!(message.content_type.as_deref(), Some("text/plain"));
        assert_eq!(message.custom("seq"), Some(format!("\"{n}\"").as_str()));
        let id = message.property("MessageId").expect("a MessageId");
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    assert_ne!(sent[0].property("MessageId"), sent[1].property("MessageId"));
    fake.inspect(|s| {
        assert_eq!(
            s.count("POST", "/greetings/messages", 201),
            2,
            "{:#?}",
            s.log
        );
        assert_eq!(s.log.len(), 2, "nothing else was requested: {:#?}", s.log);
    });
}

#[test]
fn a_handler_consumes_with_peek_lock_republishes_and_then_completes_the_input() {
    let fake = FakeServiceBus::start();
    fake.create_queue("orders");
    fake.create_queue("orders.upper");
    fake.put(
        "orders",
        b"hello",
        Some("text/plain"),
        &[("id", "7")],
        json!({"MessageId": "in-1"}),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "transform",
        &[
            "--broker",
            &fake.connection_string(),
            "--subscribe",
            "orders",
        ],
    );
    let mut consumer = Consumer::start(&out, &[]);
    let completed = consumer.wait_for(&fake, "the input to be completed", |s| {
        s.queue("orders").completed.first().cloned()
    });
    let stderr = consumer.stop();

    let output = fake.inspect(|s| s.queue("orders.upper").messages.clone());
    assert_eq!(output.len(), 1, "stderr: {stderr}");
    assert_eq!(output[0].text(), "HELLO");
    assert_eq!(output[0].content_type.as_deref(), Some("text/plain"));
    assert_eq!(output[0].custom("id"), Some("\"7\""));
    assert_eq!(output[0].custom("transformed-by"), Some("\"transform\""));
    assert_eq!(completed.property("MessageId"), Some("in-1"));
    assert_eq!(completed.delivery_count, 1);
    fake.inspect(|s| {
        assert!(s.queue("orders").messages.is_empty());
        assert_eq!(s.count("DELETE", "/orders/messages/", 200), 1);
        assert!(!s.log.iter().any(|e| e.method == "PUT"), "{:#?}", s.log);
        let send = s
            .log
            .iter()
            .position(|e| e.path == "/orders.upper/messages");
        let complete = s.log.iter().position(|e| e.method == "DELETE");
        assert!(
            send < complete,
            "the output is sent before the input is completed"
        );
    });
}

#[test]
fn a_failing_handler_unlocks_so_the_message_is_redelivered_and_never_completed() {
    let fake = FakeServiceBus::start();
    fake.create_queue("orders");
    fake.create_queue("orders.upper");
    fake.put("orders", &[0xff, 0xfe, 0xfd], None, &[], json!({}));
    fake.put("orders", b"fine", None, &[], json!({}));
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "transform",
        &[
            "--broker",
            &fake.connection_string(),
            "--subscribe",
            "orders",
        ],
    );
    let mut consumer = Consumer::start(&out, &[]);
    let poison = consumer.wait_for(&fake, "the failing message to be dead-lettered", |s| {
        s.queue("orders").dead_letter.first().cloned()
    });
    let fine = consumer.wait_for(&fake, "the good message to be completed", |s| {
        s.queue("orders").completed.first().cloned()
    });
    let stderr = consumer.stop();

    assert_eq!(poison.body, [0xff, 0xfe, 0xfd]);
    assert_eq!(poison.delivery_count, MAX_DELIVERY_COUNT);
    assert_eq!(fine.text(), "fine");
    fake.inspect(|s| {
        let orders = s.queue("orders");
        assert_eq!(
            orders.completed.len(),
            1,
            "the failing message was never completed"
        );
        assert_eq!(
            s.count("PUT", "/orders/messages/", 200),
            MAX_DELIVERY_COUNT as usize,
            "each failure unlocked it"
        );
        assert_eq!(s.count("DELETE", "/orders/messages/", 200), 1);
        assert_eq!(s.queue("orders.upper").messages[0].text(), "FINE");
    });
    assert_eq!(
        stderr
            .matches("msgplug: message on `orders` failed: payload is not UTF-8 text")
            .count(),
        MAX_DELIVERY_COUNT as usize,
        "{stderr}"
    );
}

#[test]
fn a_wrong_key_is_permission_denied_for_sending_and_receiving() {
    let fake = FakeServiceBus::start();
    fake.create_queue("greetings");
    fake.create_queue("orders");
    let wrong = fake.connection_string_with_key("d3Jvbmcta2V5", "");
    let tmp = tempfile::tempdir().unwrap();

    let publisher = compose(tmp.path(), "publisher", &["--broker", &wrong]);
    let output = run(&publisher, &[("COUNT", "1")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("publisher: send failed: permission denied: sending to `greetings`: HTTP 401: the signature does not match"),
        "{stderr}"
    );

    let consumer = compose(
        tmp.path(),
        "transform",
        &["--broker", &wrong, "--subscribe", "orders"],
    );
    let output = run(&consumer, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "msgplug: receiving failed: permission denied: receiving from `orders`: HTTP 401"
        ),
        "{stderr}"
    );
    fake.inspect(|s| {
        assert!(s.queue("greetings").messages.is_empty());
        assert_eq!(s.count("POST", "/", 401), 2, "{:#?}", s.log);
    });
}

#[test]
fn a_servicebus_url_takes_the_sas_key_from_the_environment_at_run_time() {
    let fake = FakeServiceBus::start();
    fake.create_queue("orders");
    fake.create_queue("orders.upper");
    fake.put("orders", b"from env", None, &[], json!({}));
    let broker = format!(
        "servicebus://{}/orders?UseDevelopmentEmulator=true",
        fake.authority
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "transform", &["--broker", &broker]);
    assert!(
        !std::fs::read(&out)
            .unwrap()
            .windows(FakeServiceBus::KEY.len())
            .any(|w| w == FakeServiceBus::KEY.as_bytes()),
        "no key is baked"
    );

    let output = run(&out, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("set SERVICEBUS_SAS_KEY_NAME at run time"),
        "{stderr}"
    );

    let mut consumer = Consumer::start(
        &out,
        &[
            ("SERVICEBUS_SAS_KEY_NAME", FakeServiceBus::KEY_NAME),
            ("SERVICEBUS_SAS_KEY", FakeServiceBus::KEY),
        ],
    );
    let upper = consumer.wait_for(&fake, "the upper-cased message", |s| {
        s.queue("orders.upper").messages.first().cloned()
    });
    consumer.wait_for(&fake, "the input to be completed", |s| {
        s.queue("orders").completed.first().cloned()
    });
    consumer.stop();
    assert_eq!(upper.text(), "FROM ENV");
}

#[test]
fn queues_and_topic_subscriptions_are_consumed_together_and_report_their_topic() {
    let fake = FakeServiceBus::start();
    fake.create_queue("orders");
    fake.create_queue("orders.upper");
    fake.create_topic("events", &["audit", "billing"]);
    fake.create_queue("events.upper");
    fake.put("orders", b"order", None, &[], json!({}));
    fake.put("events", b"paid", Some("text/plain"), &[], json!({}));
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "transform",
        &[
            "--broker",
            &fake.connection_string(),
            "--subscribe",
            "orders",
            "--subscribe",
            "events/subscriptions/audit",
        ],
    );
    let mut consumer = Consumer::start(&out, &[]);
    let (order, event) = consumer.wait_for(&fake, "both outputs", |s| {
        let order = s.queue("orders.upper").messages.first()?.clone();
        let event = s.queue("events.upper").messages.first()?.clone();
        Some((order, event))
    });
    consumer.wait_for(&fake, "both inputs to be completed", |s| {
        (s.queue("orders").completed.len() == 1
            && s.queue("events/subscriptions/audit").completed.len() == 1)
            .then_some(())
    });
    consumer.stop();
    assert_eq!(order.text(), "ORDER");
    assert_eq!(event.text(), "PAID");
    assert_eq!(event.content_type.as_deref(), Some("text/plain"));
    fake.inspect(|s| {
        let billing = s.queue("events/subscriptions/billing");
        assert_eq!(
            billing.messages.len(),
            1,
            "the other subscription is untouched"
        );
        assert_eq!(billing.messages[0].delivery_count, 0);
    });
}

#[test]
fn a_missing_entity_ends_the_run_with_an_error_naming_it() {
    let fake = FakeServiceBus::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "transform",
        &[
            "--broker",
            &fake.connection_string_with_key(FakeServiceBus::KEY, ";EntityPath=nope"),
        ],
    );
    let output = run(&out, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "msgplug: receiving failed: receiving from `nope`: Service Bus entity `nope` does not exist (HTTP 410)"
        ),
        "{stderr}"
    );
}

#[test]
fn a_responder_replies_to_the_reply_to_entity_with_the_request_id_as_correlation_id() {
    let fake = FakeServiceBus::start();
    fake.create_queue("greet");
    fake.create_queue("answers");
    fake.put(
        "greet",
        b"ann",
        None,
        &[],
        json!({"MessageId": "req-1", "ReplyTo": "answers"}),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "responder",
        &[
            "--broker",
            &fake.connection_string(),
            "--subscribe",
            "greet",
        ],
    );
    let mut consumer = Consumer::start(&out, &[]);
    let reply = consumer.wait_for(&fake, "the reply", |s| {
        s.queue("answers").messages.first().cloned()
    });
    consumer.wait_for(&fake, "the request to be completed", |s| {
        s.queue("greet").completed.first().cloned()
    });
    consumer.stop();
    assert_eq!(reply.text(), "hello, ann");
    assert_eq!(reply.content_type.as_deref(), Some("text/plain"));
    assert_eq!(reply.property("CorrelationId"), Some("req-1"));
}

#[test]
fn a_request_is_refused_with_a_clear_error() {
    let fake = FakeServiceBus::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "requester",
        &["--broker", &fake.connection_string()],
    );
    let output = run(&out, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "requester: request failed: request-reply is not supported by the Service Bus backend"
        ),
        "{stderr}"
    );
    fake.inspect(|s| assert!(s.log.is_empty(), "nothing was sent: {:#?}", s.log));
}

#[test]
fn the_composed_output_imports_outgoing_http_and_no_sockets() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "transform",
        &["--broker", "servicebus://ns.servicebus.windows.net/orders"],
    );
    let bytes = std::fs::read(&out).unwrap();
    let mut depth = 0;
    let mut imports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.expect("a valid component") {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import.expect("an import").name.name.to_string());
                }
            }
            _ => {}
        }
    }
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler@0.2")),
        "{imports:?}"
    );
    assert!(
        !imports.iter().any(|i| i.starts_with("wasi:sockets/")),
        "{imports:?}"
    );
}

#[test]
fn a_failing_service_is_retried_with_backoff_and_nothing_is_lost() {
    let fake = FakeServiceBus::start();
    fake.create_queue("orders");
    fake.create_queue("orders.upper");
    fake.put("orders", b"again", None, &[], json!({}));
    fake.fail_next(3, 503);
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "transform",
        &[
            "--broker",
            &fake.connection_string(),
            "--subscribe",
            "orders",
        ],
    );
    let mut consumer = Consumer::start(&out, &[]);
    let completed = consumer.wait_for(&fake, "the input to be completed", |s| {
        s.queue("orders").completed.first().cloned()
    });
    let stderr = consumer.stop();
    assert_eq!(completed.delivery_count, 1);
    fake.inspect(|s| {
        assert_eq!(s.count("POST", "/orders/messages/head", 503), 3);
        assert_eq!(s.queue("orders.upper").messages[0].text(), "AGAIN");
    });
    assert_eq!(
        stderr
            .matches("msgplug[servicebus]: receiving from `orders`: HTTP 503: the fake was told to fail; retrying in")
            .count(),
        3,
        "{stderr}"
    );
}
