//! End to end against Azure Service Bus's REST protocol: the example apps composed with
//! `--broker` set to a connection string (`Endpoint=sb://127.0.0.1:PORT;...;
//! PlainHttpForTests=true`, plain HTTP) or to `servicebus://HOST/ENTITY` with the SAS key
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
//! kills it if the test fails first. Components that end by themselves run under
//! [`support::run_http`], which bounds them by [`support::RUN_LIMIT`].

mod support;

#[path = "fakes/servicebus.rs"]
mod fake;

use std::path::{Path, PathBuf};
use std::process::Child;

use serde_json::json;

use fake::{FakeServiceBus, Stored, MAX_DELIVERY_COUNT};
use support::{compose, run_http, run_http_failing, text};

/// Composes example `app` into `dir` with the fake's connection string as `--broker` and a
/// `--subscribe` for each of `entities`.
fn compose_for(fake: &FakeServiceBus, dir: &Path, app: &str, entities: &[&str]) -> PathBuf {
    let broker = fake.connection_string();
    let mut args = vec!["--broker", broker.as_str()];
    for entity in entities {
        args.extend(["--subscribe", entity]);
    }
    compose(dir, app, &args)
}

/// A consumer of the fake that runs until the test stops it (or the guard drops).
struct Consumer<'a> {
    /// The fake it consumes from, whose state the waits look at.
    fake: &'a FakeServiceBus,
    /// The `wasmtime` process, until it is stopped.
    child: Option<Child>,
}

impl<'a> Consumer<'a> {
    /// Starts `component`, a consumer of `fake`, under `wasmtime run -S http`.
    fn start(fake: &'a FakeServiceBus, component: &Path, env: &[(&str, &str)]) -> Self {
        let child = support::wasmtime_run_http(component, env)
            .spawn()
            .expect("spawn wasmtime");
        Self {
            fake,
            child: Some(child),
        }
    }

    /// Waits until `probe` finds something in the fake's state and returns it; fails the
    /// test, showing the consumer's stderr, if the consumer exits first or the wait runs out.
    fn wait_for<T>(&mut self, what: &str, probe: impl FnMut(&fake::State) -> Option<T>) -> T {
        let child = self.child.as_mut().expect("running");
        let alive = || match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the consumer exited ({status})")),
            Err(e) => Err(format!("cannot check the consumer: {e}")),
        };
        match self.fake.wait_while(what, alive, probe) {
            Ok(found) => found,
            Err(why) => {
                let stderr = self.stop_now();
                panic!("{why}\nconsumer stderr:\n{stderr}")
            }
        }
    }

    /// Waits for the first message to arrive in `queue` and returns it.
    fn wait_for_message(&mut self, queue: &str) -> Stored {
        self.wait_for(&format!("a message in `{queue}`"), |s| {
            s.queue(queue).messages.first().cloned()
        })
    }

    /// Waits for the first message of `queue` to be completed and returns it.
    fn wait_for_completed(&mut self, queue: &str) -> Stored {
        self.wait_for(&format!("a message of `{queue}` to be completed"), |s| {
            s.queue(queue).completed.first().cloned()
        })
    }

    /// Kills the consumer and returns its stderr.
    fn stop(mut self) -> String {
        self.stop_now()
    }

    /// Kills the consumer (if it still runs) and returns its stderr.
    fn stop_now(&mut self) -> String {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        text(&child.wait_with_output().expect("wait for wasmtime").stderr)
    }
}

impl Drop for Consumer<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
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
    let out = compose_for(&fake, tmp.path(), "publisher", &[]);
    let output = run_http(&out, &[("COUNT", "2")]);
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
    let out = compose_for(&fake, tmp.path(), "transform", &["orders"]);
    let mut consumer = Consumer::start(&fake, &out, &[]);
    let completed = consumer.wait_for_completed("orders");
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
    fake.put_body("orders", &[0xff, 0xfe, 0xfd]);
    fake.put_body("orders", b"fine");
    let tmp = tempfile::tempdir().unwrap();
    let out = compose_for(&fake, tmp.path(), "transform", &["orders"]);
    let mut consumer = Consumer::start(&fake, &out, &[]);
    let poison = consumer.wait_for("the failing message to be dead-lettered", |s| {
        s.queue("orders").dead_letter.first().cloned()
    });
    let fine = consumer.wait_for_completed("orders");
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
    let stderr = run_http_failing(&publisher, &[("COUNT", "1")]);
    assert!(
        stderr.contains("publisher: send failed: permission denied: sending to `greetings`: HTTP 401: the signature does not match"),
        "{stderr}"
    );

    let consumer = compose(
        tmp.path(),
        "transform",
        &["--broker", &wrong, "--subscribe", "orders"],
    );
    let stderr = run_http_failing(&consumer, &[]);
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
    fake.put_body("orders", b"from env");
    let broker = format!(
        "servicebus://{}/orders?PlainHttpForTests=true",
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

    let stderr = run_http_failing(&out, &[]);
    assert!(
        stderr.contains("set SERVICEBUS_SAS_KEY_NAME at run time"),
        "{stderr}"
    );

    let mut consumer = Consumer::start(
        &fake,
        &out,
        &[
            ("SERVICEBUS_SAS_KEY_NAME", FakeServiceBus::KEY_NAME),
            ("SERVICEBUS_SAS_KEY", FakeServiceBus::KEY),
        ],
    );
    let upper = consumer.wait_for_message("orders.upper");
    consumer.wait_for_completed("orders");
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
    fake.put_body("orders", b"order");
    fake.put("events", b"paid", Some("text/plain"), &[], json!({}));
    let tmp = tempfile::tempdir().unwrap();
    let out = compose_for(
        &fake,
        tmp.path(),
        "transform",
        &["orders", "events/subscriptions/audit"],
    );
    let mut consumer = Consumer::start(&fake, &out, &[]);
    let (order, event) = consumer.wait_for("both outputs", |s| {
        let order = s.queue("orders.upper").messages.first()?.clone();
        let event = s.queue("events.upper").messages.first()?.clone();
        Some((order, event))
    });
    consumer.wait_for("both inputs to be completed", |s| {
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
    let stderr = run_http_failing(&out, &[]);
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
    let out = compose_for(&fake, tmp.path(), "responder", &["greet"]);
    let mut consumer = Consumer::start(&fake, &out, &[]);
    let reply = consumer.wait_for_message("answers");
    consumer.wait_for_completed("greet");
    consumer.stop();
    assert_eq!(reply.text(), "hello, ann");
    assert_eq!(reply.content_type.as_deref(), Some("text/plain"));
    assert_eq!(reply.property("CorrelationId"), Some("req-1"));
}

#[test]
fn a_request_is_refused_with_a_clear_error() {
    let fake = FakeServiceBus::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = compose_for(&fake, tmp.path(), "requester", &[]);
    let stderr = run_http_failing(&out, &[]);
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
    support::assert_wasi_http_and_no_sockets(&out);
}

#[test]
fn a_failing_service_is_retried_with_backoff_and_nothing_is_lost() {
    let fake = FakeServiceBus::start();
    fake.create_queue("orders");
    fake.create_queue("orders.upper");
    fake.put_body("orders", b"again");
    fake.fail_next(3, 503);
    let tmp = tempfile::tempdir().unwrap();
    let out = compose_for(&fake, tmp.path(), "transform", &["orders"]);
    let mut consumer = Consumer::start(&fake, &out, &[]);
    let completed = consumer.wait_for_completed("orders");
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

/// Makes the queues of the `transform` example: its input `orders` and output `orders.upper`.
fn create_transform_queues(fake: &FakeServiceBus) {
    fake.create_queue("orders");
    fake.create_queue("orders.upper");
}

/// Composes the `transform` example consuming `orders` into `dir` and starts it.
fn start_transform<'a>(fake: &'a FakeServiceBus, dir: &Path) -> Consumer<'a> {
    let out = compose_for(fake, dir, "transform", &["orders"]);
    Consumer::start(fake, &out, &[])
}

/// Composes `app` with `broker` and returns what compose wrote to stderr, failing the test
/// unless compose refused it.
fn compose_refused(dir: &Path, app: &str, broker: &str) -> String {
    let output = support::msgplug()
        .arg("compose")
        .arg(support::example(app))
        .arg("-o")
        .arg(dir.join("refused.wasm"))
        .args(["--broker", broker])
        .output()
        .expect("run msgplug");
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "compose accepted `{broker}`: {stderr}"
    );
    stderr
}

#[test]
fn plain_http_is_for_loopback_test_endpoints_only_and_the_emulator_setting_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for broker in [
        "Endpoint=sb://10.1.2.3:5300;SharedAccessKeyName=k;PlainHttpForTests=true",
        "servicebus://ns.servicebus.windows.net/orders?PlainHttpForTests=true",
    ] {
        let stderr = compose_refused(tmp.path(), "publisher", broker);
        assert!(
            stderr.contains(
                "sends the SAS token in clear text, so it is only allowed for a loopback host"
            ),
            "{stderr}"
        );
    }
    for broker in [
        "Endpoint=sb://127.0.0.1:5300;SharedAccessKeyName=k;UseDevelopmentEmulator=true",
        "servicebus://127.0.0.1:5300/orders?UseDevelopmentEmulator=true",
    ] {
        let stderr = compose_refused(tmp.path(), "publisher", broker);
        assert!(
            stderr.contains("Service Bus emulator speaks AMQP only")
                && stderr.contains("set `PlainHttpForTests=true`"),
            "{stderr}"
        );
    }

    // The adapter refuses it as well when the broker comes from the environment at run time.
    let fake = FakeServiceBus::start();
    let out = compose_for(&fake, tmp.path(), "publisher", &[]);
    let stderr = run_http_failing(
        &out,
        &[(
            "MSGPLUG_BROKER",
            "Endpoint=sb://192.0.2.1;SharedAccessKeyName=k;SharedAccessKey=s;PlainHttpForTests=true",
        )],
    );
    assert!(
        stderr.contains(
            "only allowed for a loopback host (127.0.0.1, [::1], localhost), not `192.0.2.1`"
        ),
        "{stderr}"
    );
    fake.inspect(|s| assert!(s.log.is_empty(), "{:#?}", s.log));
}

/// Without `PlainHttpForTests` the backend speaks HTTPS, and stock wasmtime checks the
/// certificate against its built-in roots only: `wasmtime-wasi-http`'s
/// `default_send_request` builds its rustls client from `webpki_roots::TLS_SERVER_ROOTS`,
/// and neither `SSL_CERT_FILE`, `SSL_CERT_DIR` nor any `wasmtime run` option adds a CA. So
/// a local endpoint with a test CA cannot be trusted, and this test pins that: if a later
/// wasmtime honours `SSL_CERT_FILE`, it fails, and the round trip over TLS can be checked.
#[test]
fn sends_go_over_https_and_wasmtime_trusts_only_its_built_in_roots() {
    let fake = FakeServiceBus::start_tls();
    fake.create_queue("greetings");
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(
        tmp.path(),
        "publisher",
        &["--broker", &fake.tls_connection_string("")],
    );
    let ca = FakeServiceBus::ca_pem_path();
    let mut command = support::wasmtime_run_http(&out, &[("COUNT", "1")]);
    command
        .env("SSL_CERT_FILE", &ca)
        .env("SSL_CERT_DIR", ca.parent().expect("tls/"));
    let output = support::finish(command.spawn().expect("spawn wasmtime"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    fake.inspect(|s| {
        assert!(!s.handshakes.is_empty(), "no TLS handshake was tried");
        for handshake in &s.handshakes {
            let why = handshake
                .as_ref()
                .expect_err("wasmtime trusted the test CA");
            assert!(
                why.contains("UnknownCA") || why.contains("BadCertificate"),
                "{why}"
            );
        }
        assert!(s.log.is_empty(), "nothing reached the fake: {:#?}", s.log);
    });
    assert!(
        stderr.contains("publisher: send failed: https://127.0.0.1:")
            && stderr.contains("the TLS handshake failed (TlsProtocolError)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("retrying"),
        "a TLS failure is not retried: {stderr}"
    );
}

#[test]
fn custom_properties_travel_as_the_service_formats_them_and_non_ascii_round_trips() {
    let fake = FakeServiceBus::start();
    create_transform_queues(&fake);
    fake.put_raw(
        "orders",
        b"props",
        None,
        &[
            ("Text", r#""say "hi" déjà \u00e9""#),
            ("Count", "3"),
            ("Flag", "true"),
            ("Sent", r#""Wed, 02 Jul 2014 01:32:27 GMT""#),
            ("Odd", "bare text"),
        ],
        json!({}),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut consumer = start_transform(&fake, tmp.path());
    let output = consumer.wait_for_message("orders.upper");
    consumer.wait_for_completed("orders");
    let stderr = consumer.stop();

    // Every property arrives, as a quoted string with nothing escaped; msgplug metadata is
    // text, so numbers, booleans and dates come back as strings.
    let custom: Vec<(&str, &str)> = output
        .custom
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        custom,
        [
            ("text", r#""say "hi" déjà \u00e9""#),
            ("count", r#""3""#),
            ("flag", r#""true""#),
            ("sent", r#""Wed, 02 Jul 2014 01:32:27 GMT""#),
            ("odd", r#""bare text""#),
            ("transformed-by", r#""transform""#),
        ],
        "names arrive in lower case: wasmtime's HTTP stack keeps no header-name case"
    );
    assert!(
        stderr.contains("has custom property `odd` with a value that is neither quoted nor a number or boolean; kept as sent"),
        "{stderr}"
    );
}

#[test]
fn the_services_default_content_type_is_no_content_type() {
    let fake = FakeServiceBus::start();
    create_transform_queues(&fake);
    fake.put_body("orders", b"untyped");
    let tmp = tempfile::tempdir().unwrap();
    let mut consumer = start_transform(&fake, tmp.path());
    let output = consumer.wait_for_message("orders.upper");
    consumer.wait_for_completed("orders");
    consumer.stop();
    assert_eq!(output.text(), "UNTYPED");
    assert_eq!(
        output.content_type, None,
        "the Atom default the fake reported is not passed on"
    );
}

#[test]
fn requests_without_a_body_carry_a_zero_content_length() {
    let fake = FakeServiceBus::start();
    create_transform_queues(&fake);
    fake.put_body("orders", &[0xff]);
    fake.put_body("orders", b"ok");
    let tmp = tempfile::tempdir().unwrap();
    let mut consumer = start_transform(&fake, tmp.path());
    consumer.wait_for_completed("orders");
    consumer.stop();
    fake.inspect(|s| {
        let bodiless: Vec<&fake::Exchange> = s
            .log
            .iter()
            .filter(|e| e.path.starts_with("/orders/messages/"))
            .collect();
        for method in ["POST", "PUT", "DELETE"] {
            assert!(bodiless.iter().any(|e| e.method == method), "{:#?}", s.log);
        }
        for exchange in bodiless {
            assert_eq!(
                exchange.content_length.as_deref(),
                Some("0"),
                "{exchange:?}"
            );
        }
        assert_eq!(s.count("POST", "/", 411), 0, "{:#?}", s.log);
    });
}

#[test]
fn busy_sends_are_retried_after_the_services_retry_after_and_nothing_is_redelivered() {
    let fake = FakeServiceBus::start();
    create_transform_queues(&fake);
    fake.put_body("orders", b"busy");
    fake.fail_sends(&[(503, Some(1)), (429, Some(1)), (500, None)]);
    let tmp = tempfile::tempdir().unwrap();
    let mut consumer = start_transform(&fake, tmp.path());
    let completed = consumer.wait_for_completed("orders");
    let stderr = consumer.stop();
    assert_eq!(completed.delivery_count, 1, "the input was not redelivered");
    fake.inspect(|s| {
        assert_eq!(s.queue("orders.upper").messages.len(), 1);
        assert_eq!(s.count("POST", "/orders.upper/messages", 503), 1);
        assert_eq!(s.count("POST", "/orders.upper/messages", 429), 1);
        assert_eq!(s.count("POST", "/orders.upper/messages", 500), 1);
        assert_eq!(
            s.count("PUT", "/orders/messages/", 200),
            0,
            "never unlocked"
        );
    });
    let retries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sending to `orders.upper`: HTTP"))
        .collect();
    assert_eq!(retries.len(), 3, "{stderr}");
    assert!(retries[0].ends_with("retrying in 1s"), "{stderr}");
    assert!(retries[1].ends_with("retrying in 1s"), "{stderr}");
}

#[test]
fn a_quota_refusal_is_not_permission_denied() {
    let fake = FakeServiceBus::start();
    fake.create_queue("greetings");
    fake.fail_sends(&[(403, None)]);
    let tmp = tempfile::tempdir().unwrap();
    let out = compose_for(&fake, tmp.path(), "publisher", &[]);
    let stderr = run_http_failing(&out, &[("COUNT", "1")]);
    assert!(
        stderr.contains("publisher: send failed: sending to `greetings`: HTTP 403: The server is busy. (the entity's quota is exceeded or the message is too large)"),
        "{stderr}"
    );
    assert!(!stderr.contains("permission denied"), "{stderr}");
}

#[test]
fn a_handler_slower_than_the_lock_keeps_it_by_renewing_when_it_sends() {
    let fake = FakeServiceBus::start();
    fake.create_queue("greet");
    fake.create_queue("answers");
    fake.set_lock_duration(std::time::Duration::from_secs(2));
    fake.delay_sends(std::time::Duration::from_secs(1));
    fake.put(
        "greet",
        b"ann",
        None,
        &[],
        json!({"MessageId": "req-1", "ReplyTo": "answers"}),
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = compose_for(&fake, tmp.path(), "responder", &["greet"]);
    let mut consumer = Consumer::start(&fake, &out, &[("REPLIES", "4")]);
    let completed = consumer.wait_for_completed("greet");
    let stderr = consumer.stop();
    assert_eq!(completed.delivery_count, 1, "{stderr}");
    fake.inspect(|s| {
        assert_eq!(s.queue("answers").messages.len(), 4, "{stderr}");
        assert!(
            s.count("POST", "/greet/messages/1/", 200) >= 1,
            "the lock was renewed: {:#?}",
            s.log
        );
        assert!(s.lost_locks.is_empty(), "{:?}", s.lost_locks);
    });
}

#[test]
fn a_lock_lost_before_complete_is_reported_and_the_message_is_delivered_again() {
    let fake = FakeServiceBus::start();
    create_transform_queues(&fake);
    fake.set_lock_duration(std::time::Duration::from_secs(1));
    fake.delay_sends(std::time::Duration::from_secs(2));
    fake.put_body("orders", b"slow");
    let tmp = tempfile::tempdir().unwrap();
    let mut consumer = start_transform(&fake, tmp.path());
    consumer.wait_for("a second delivery after the lock was lost", |s| {
        let again = s.queue("orders").messages.first()?.delivery_count >= 2;
        (again && s.count("DELETE", "/orders/messages/", 410) >= 1).then_some(())
    });
    let stderr = consumer.stop();
    assert!(
        stderr.contains("msgplug: settling the message on `orders` failed: completing a message from `orders`: HTTP 410: The lock supplied is invalid.")
            && stderr.contains("the message's lock was lost"),
        "{stderr}"
    );
    assert!(
        stderr.contains("msgplug[servicebus]: the handler of a message from `orders` ran ")
            && stderr.contains("longer than the lock of ")
            && stderr.contains("raise the entity's LockDuration"),
        "the overrun is explained before the complete fails: {stderr}"
    );
    fake.inspect(|s| assert!(s.queue("orders").completed.is_empty()));
}

#[test]
fn a_send_to_a_subscription_is_refused() {
    let fake = FakeServiceBus::start();
    fake.create_topic("events", &["audit"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = compose_for(&fake, tmp.path(), "publisher", &[]);
    let stderr = run_http_failing(
        &out,
        &[("COUNT", "1"), ("TOPIC", "events/subscriptions/audit")],
    );
    assert!(
        stderr.contains("is a subscription, which cannot be sent to; send to its topic (`events`)"),
        "{stderr}"
    );
    fake.inspect(|s| assert!(s.queue("events/subscriptions/audit").messages.is_empty()));
}
