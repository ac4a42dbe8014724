//! The cases: each takes a [`Backend`], starts a broker of its own, composes example apps,
//! runs them on `wasmtime` and asserts what the backend declares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use msgplug::adapters::{Capabilities, Delivery, MaxPayload, OnError, RequestReply, ScaleOut};

use crate::{App, Broker, Credentials, Input, Msg, Target, LIMIT};

/// A case: runs against one backend in one mode, panicking when it fails.
pub type Case = fn(Target);

/// Every case, by name.
pub const ALL: &[(&str, Case)] = &[
    (
        "relay_keeps_metadata_and_content_type_both_ways",
        relay_keeps_metadata_and_content_type,
    ),
    ("relay_keeps_binary_data", relay_keeps_binary_data),
    (
        "payload_at_the_maximum_and_just_over",
        payload_at_the_maximum_and_just_over,
    ),
    ("request_with_one_reply", request_with_one_reply),
    ("request_with_several_replies", request_with_several_replies),
    (
        "request_times_out_without_replies",
        request_times_out_without_replies,
    ),
    ("request_without_responders", request_without_responders),
    (
        "handler_err_is_redelivered_or_reported",
        handler_err_is_redelivered_or_reported,
    ),
    (
        "trap_exits_non_zero_and_the_next_instance_gets_the_message",
        trap_exits_non_zero_and_the_next_instance_gets_the_message,
    ),
    (
        "three_in_a_group_share_3000_messages",
        three_in_a_group_share_3000_messages,
    ),
    (
        "broker_restart_loses_nothing_accepted",
        broker_restart_loses_nothing_accepted,
    ),
    (
        "send_during_an_outage_fails_with_connection",
        send_during_an_outage_fails_with_connection,
    ),
    (
        "wrong_credentials_are_permission_denied",
        wrong_credentials_are_permission_denied,
    ),
];

/// What every case starts with: the declaration, a broker, a temp dir for composed apps.
struct Setup {
    capabilities: Capabilities,
    broker: Box<dyn Broker>,
    dir: tempfile::TempDir,
}

fn setup(target: Target) -> Setup {
    Setup {
        capabilities: target.capabilities(),
        broker: target.start(),
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

impl Setup {
    /// Composes example `name`, receiving from `input` if given.
    fn compose(&mut self, name: &str, input: Option<Input>) -> PathBuf {
        App::compose(&mut *self.broker, self.dir.path(), name, input)
    }

    /// Composes example `name` receiving from `input`, and listens to `output`, where it
    /// sends.
    fn receiver(&mut self, name: &str, input: Input, output: &str) -> PathBuf {
        let component = self.compose(name, Some(input));
        self.broker.listen(output);
        component
    }

    /// Starts the `relay` example receiving from `in`, with `in.relayed` listened to.
    fn relay(&mut self) -> App {
        let input = Input {
            topic: "in",
            group: None,
        };
        let relay = self.receiver("relay", input, "in.relayed");
        App::receiving(&mut *self.broker, &relay, &[])
    }

    /// The next message on `topic`, failing the case when none comes within [`LIMIT`].
    fn next(&mut self, topic: &str) -> Msg {
        self.broker
            .next(topic, LIMIT)
            .unwrap_or_else(|| panic!("no message on `{topic}` within {LIMIT:?}"))
    }

    /// Runs `publisher` or `requester` to its end with `env`.
    fn run(
        &mut self,
        component: &Path,
        credentials: Credentials,
        env: &[(&str, &str)],
    ) -> (std::process::ExitStatus, String) {
        App::start(&mut *self.broker, component, credentials, env).finish()
    }
}

/// Says why a case does not apply to `target`; the case then passes.
fn not_applicable(target: Target, why: &str) {
    println!("{}: not applicable: {why}", target.name());
}

/// The lines an example app wrote (`reply: ...`, `requester: ...`), without the adapters'.
fn app_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("msgplug"))
        .collect()
}

/// Relays one message with content type and metadata and one without: each comes out as it
/// went in (data, content type, metadata), or without what the backend does not carry.
fn relay_keeps_metadata_and_content_type(target: Target) {
    let mut s = setup(target);
    let _app = s.relay();

    let full = Msg {
        data: b"with both".to_vec(),
        content_type: Some("text/plain; charset=utf-8".into()),
        // Keys every backend carries (CloudEvents attribute names included).
        metadata: BTreeMap::from([("lang".into(), "en".into()), ("tenant".into(), "7".into())]),
    };
    let bare = Msg::data("bare");
    s.broker.publish("in", &full);
    s.broker.publish("in", &bare);

    let mut expected = full.clone();
    if !s.capabilities.content_type {
        expected.content_type = None;
    }
    if !s.capabilities.metadata {
        expected.metadata.clear();
    }
    assert_eq!(s.next("in.relayed"), expected);
    assert_eq!(s.next("in.relayed"), bare);
}

/// Data that is not UTF-8 (NUL, invalid bytes, a newline) comes out byte for byte.
fn relay_keeps_binary_data(target: Target) {
    let mut s = setup(target);
    assert!(
        s.capabilities.binary,
        "the suite has no check yet for a backend without binary data"
    );
    let _app = s.relay();
    let binary = Msg::data(vec![0, 0xff, 0xfe, b'\n', 0x80, 0xc3, b'"', b'\\']);
    s.broker.publish("in", &binary);
    assert_eq!(s.next("in.relayed"), binary);
}

/// A message of exactly the declared maximum arrives whole; one byte more fails with a clear
/// error, and the next message is the next one sent (nothing partial arrives). Without a
/// declared maximum, 1 MiB + 1 byte arrives whole.
fn payload_at_the_maximum_and_just_over(target: Target) {
    let mut s = setup(target);
    let publisher = s.compose("publisher", None);
    s.broker.listen("big");
    let send = |s: &mut Setup, size: usize| {
        let size = size.to_string();
        let env = [("TOPIC", "big"), ("COUNT", "1"), ("SIZE", size.as_str())];
        s.run(&publisher, Credentials::Right, &env)
    };
    match s.capabilities.max_payload {
        MaxPayload::Bytes { bytes, .. } => {
            let bytes = usize::try_from(bytes).expect("a limit that fits in memory");
            let (status, stderr) = send(&mut s, bytes);
            assert!(
                status.success(),
                "{bytes} bytes must be accepted:\n{stderr}"
            );
            let message = s.next("big");
            assert!(
                message.data.len() == bytes && message.data.iter().all(|&b| b == b'x'),
                "{} bytes arrived instead of {bytes}",
                message.data.len()
            );

            let (status, stderr) = send(&mut s, bytes + 1);
            assert_eq!(status.code(), Some(1), "{stderr}");
            let lines = app_lines(&stderr);
            assert!(
                lines.len() == 1
                    && lines[0].starts_with("publisher: send failed: ")
                    && lines[0].contains(&bytes.to_string()),
                "one error naming the limit of {bytes} bytes:\n{stderr}"
            );
            let env = [("TOPIC", "big"), ("COUNT", "1")];
            let (status, stderr) = s.run(&publisher, Credentials::Right, &env);
            assert!(status.success(), "{stderr}");
            assert_eq!(
                s.next("big").text(),
                "hello #1",
                "nothing of the refused one"
            );
        }
        MaxPayload::NotLimited { .. } => {
            let bytes = (1 << 20) + 1;
            let (status, stderr) = send(&mut s, bytes);
            assert!(status.success(), "{stderr}");
            assert_eq!(s.next("big").data, vec![b'x'; bytes]);
        }
    }
}

/// The requester's reply lines for a request to `greet` with `env`, answered by a native
/// responder with `replies` replies.
fn request(
    target: Target,
    replies: usize,
    env: &[(&str, &str)],
) -> (Capabilities, std::process::ExitStatus, String) {
    let mut s = setup(target);
    let requester = s.compose("requester", None);
    if replies > 0 {
        s.broker.respond("greet", replies);
    }
    let mut env = env.to_vec();
    env.extend([("TOPIC", "greet"), ("NAME", "Ada")]);
    let (status, stderr) = s.run(&requester, Credentials::Right, &env);
    (s.capabilities, status, stderr)
}

/// Asserts the documented refusal of a backend without request-reply; true if it was one.
fn refused(capabilities: &Capabilities, status: std::process::ExitStatus, stderr: &str) -> bool {
    if !matches!(capabilities.request_reply, RequestReply::Unsupported(_)) {
        return false;
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines = app_lines(stderr);
    assert!(
        lines.len() == 1
            && lines[0].starts_with("requester: request failed: ")
            && lines[0].contains("not supported"),
        "one error saying request-reply is not supported:\n{stderr}"
    );
    true
}

/// A request with no options gets the first reply.
fn request_with_one_reply(target: Target) {
    let (capabilities, status, stderr) = request(target, 1, &[]);
    if refused(&capabilities, status, &stderr) {
        return;
    }
    assert!(status.success(), "{stderr}");
    assert_eq!(app_lines(&stderr), ["reply: hi, Ada (1/1)"]);
}

/// A request expecting two replies gets both (and returns before its timeout), or only the
/// first where the backend declares one reply.
fn request_with_several_replies(target: Target) {
    // The elapsed time includes composing, starting wasmtime (compiling the component) and
    // the broker's set-up, which take seconds on a loaded machine: the timeout is far
    // above that, so returning well before it can only mean the request did not wait it out.
    let started = Instant::now();
    let env = [("EXPECT", "2"), ("TIMEOUT_MS", "60000")];
    let (capabilities, status, stderr) = request(target, 2, &env);
    if refused(&capabilities, status, &stderr) {
        return;
    }
    assert!(status.success(), "{stderr}");
    match capabilities.request_reply {
        RequestReply::SeveralReplies => {
            assert_eq!(
                app_lines(&stderr),
                ["reply: hi, Ada (1/2)", "reply: hi, Ada (2/2)"]
            );
            assert!(
                started.elapsed() < Duration::from_secs(45),
                "with both replies in, the request returns before its timeout (took {:?}):\n{stderr}",
                started.elapsed()
            );
        }
        RequestReply::OneReply => assert_eq!(app_lines(&stderr), ["reply: hi, Ada (1/2)"]),
        RequestReply::Unsupported(_) => unreachable!("refused above"),
    }
}

/// A request someone listens to but nobody answers fails with `timeout` after its
/// `timeout-ms`.
fn request_times_out_without_replies(target: Target) {
    let mut s = setup(target);
    let requester = s.compose("requester", None);
    s.broker.respond("greet", 0);
    let env = [("TOPIC", "greet"), ("TIMEOUT_MS", "500")];
    let (status, stderr) = s.run(&requester, Credentials::Right, &env);
    if refused(&s.capabilities, status, &stderr) {
        return;
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(app_lines(&stderr), ["requester: request failed: timeout"]);
}

/// A request to a topic nobody listens on fails at once naming `no responders` where the
/// broker can tell, and with `timeout` after its `timeout-ms` where it cannot (not a hang).
fn request_without_responders(target: Target) {
    let mut s = setup(target);
    let requester = s.compose("requester", None);
    let timeout = if s.capabilities.no_responders {
        "60000"
    } else {
        "1000"
    };
    let started = Instant::now();
    let env = [("TOPIC", "nobody"), ("TIMEOUT_MS", timeout)];
    let (status, stderr) = s.run(&requester, Credentials::Right, &env);
    if refused(&s.capabilities, status, &stderr) {
        return;
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    if s.capabilities.no_responders {
        let lines = app_lines(&stderr);
        assert!(
            lines.len() == 1
                && lines[0].starts_with("requester: request failed: ")
                && lines[0].contains("no responders")
                && lines[0].contains("nobody"),
            "one error naming `no responders` and the topic:\n{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the broker says at once that nobody listens; the request must not wait"
        );
    } else {
        // Either the timeout, or an error about the topic where sending to it fails.
        let lines = app_lines(&stderr);
        assert!(
            lines == ["requester: request failed: timeout"]
                || (lines.len() == 1
                    && lines[0].starts_with("requester: request failed: ")
                    && lines[0].contains("nobody")),
            "a timeout or one error naming the topic:\n{stderr}"
        );
    }
}

/// A handler that fails once (the relay's `fail: once`) sees its message again and relays
/// it on an at-least-once backend; on an at-most-once one the failure is reported and the
/// message dropped, while the next message is relayed.
fn handler_err_is_redelivered_or_reported(target: Target) {
    let mut s = setup(target);
    if !s.capabilities.metadata {
        return not_applicable(
            target,
            "the relay is told to fail by metadata, which this mode does not carry",
        );
    }
    let mut app = s.relay();
    let failing = Msg {
        data: b"fails once".to_vec(),
        content_type: None,
        metadata: BTreeMap::from([("fail".into(), "once".into())]),
    };
    s.broker.publish("in", &failing);
    s.broker.publish("in", &Msg::data("fine"));
    app.wait_for("message on `in` failed: failing once", 1);
    match s.capabilities.receive.on_error {
        OnError::Redelivered => {
            let mut relayed = BTreeSet::new();
            while relayed.len() < 2 {
                relayed.insert(s.next("in.relayed").text());
            }
            assert_eq!(
                relayed,
                BTreeSet::from(["fails once".into(), "fine".into()])
            );
        }
        OnError::Reported => {
            assert_eq!(s.next("in.relayed").text(), "fine");
            assert_eq!(app.seen("failing once"), 1, "{}", app.stderr_so_far());
        }
    }
}

/// How `wasmtime run` (49 and 36 alike) exits when the guest traps: 128 + SIGABRT.
const TRAP_EXIT_STATUS: i32 = 134;

/// A handler that traps (the relay panics on the metadata `trap: yes` when started with
/// `TRAP_ON_METADATA`) ends its instance: `wasmtime run` exits with status 134 and says
/// `wasm trap` after the panic message. On an at-least-once mode the message it was handling
/// was never settled, so the next instance (started without the variable) handles it, and
/// nothing else is lost: the message sent after it is handled too (duplicates are counted
/// and printed). Where each instance has an input of its own, nothing outlives the
/// instance and the case does not apply.
fn trap_exits_non_zero_and_the_next_instance_gets_the_message(target: Target) {
    let mut s = setup(target);
    if s.capabilities.receive.delivery == Delivery::AtMostOnce {
        return not_applicable(
            target,
            "declared: at-most-once (the message a trapped handler was given is not seen again)",
        );
    }
    if s.capabilities.scale_out == ScaleOut::None {
        return not_applicable(
            target,
            "declared: each instance has its own input, which ends with it (an AMQP exclusive \
             queue is deleted), so no next instance takes over what a trapped one held",
        );
    }
    if !s.capabilities.metadata {
        return not_applicable(
            target,
            "the relay is told to trap by metadata, which this mode does not carry",
        );
    }
    s.broker.take_over_unsettled();
    let input = Input {
        topic: "in",
        group: None,
    };
    let relay = s.receiver("relay", input, "in.relayed");
    let first = App::receiving(&mut *s.broker, &relay, &[("TRAP_ON_METADATA", "1")]);
    s.broker.publish("in", &Msg::data("before"));
    assert_eq!(s.next("in.relayed").text(), "before");
    let trapping = Msg {
        data: b"traps once".to_vec(),
        content_type: None,
        metadata: BTreeMap::from([("trap".into(), "yes".into())]),
    };
    s.broker.publish("in", &trapping);
    s.broker.publish("in", &Msg::data("after"));

    let (status, stderr) = first.finish();
    assert_eq!(status.code(), Some(TRAP_EXIT_STATUS), "{stderr}");
    let panicked = "trapping, as the metadata `trap: yes` and `TRAP_ON_METADATA` ask";
    let trapped = "wasm trap: wasm `unreachable` instruction executed";
    assert!(
        stderr.contains(panicked) && stderr.contains(trapped),
        "the panic message, then wasmtime's `{trapped}`:\n{stderr}"
    );

    let mut second = App::receiving(&mut *s.broker, &relay, &[]);
    let mut relayed = vec!["before".to_string()];
    let mut missing = BTreeSet::from(["traps once".to_string(), "after".to_string()]);
    // SQS and Service Bus give the message back when its 5 s lease ends, Kafka once the
    // group dropped the dead member (6 s session timeout) and rebalanced.
    let deadline = Instant::now() + LIMIT * 2;
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(message) = s.broker.next("in.relayed", left) else {
            panic!(
                "never handled after the trap: {missing:?}; the second instance's stderr:\n{}",
                second.stderr_so_far()
            );
        };
        missing.remove(&message.text());
        relayed.push(message.text());
    }
    let duplicates = relayed.len() - relayed.iter().collect::<BTreeSet<_>>().len();
    println!(
        "{}: the message a trapped handler held was handled by the next instance; \
         {duplicates} handled twice",
        target.name()
    );
}

/// Three instances sharing the work (in one `--queue-group`, or as competing consumers)
/// handle 3,000 messages: none lost, each takes a share, and none handled twice where
/// delivery is at-most-once (at-least-once: duplicates are counted and printed).
fn three_in_a_group_share_3000_messages(target: Target) {
    const TOTAL: usize = 3000;
    const ROUND: usize = 100;
    let mut s = setup(target);
    let group = match s.capabilities.scale_out {
        ScaleOut::QueueGroup | ScaleOut::QueueGroupRequired => Some("workers"),
        ScaleOut::Competing => None,
        ScaleOut::None => return not_applicable(
            target,
            "declared: no scale-out (instances do not share the work; `--queue-group` is not used)",
        ),
    };
    if !s.capabilities.metadata {
        return not_applicable(
            target,
            "the instances name themselves in metadata, which this mode does not carry",
        );
    }
    let input = Input {
        topic: "work",
        group,
    };
    let transform = s.receiver("transform", input, "work.upper");
    let _apps: Vec<App> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|name| App::receiving(&mut *s.broker, &transform, &[("TRANSFORMED_BY", name)]))
        .collect();
    let messages: Vec<Msg> = (0..TOTAL).map(|i| Msg::data(format!("m{i}"))).collect();
    let mut shares: BTreeMap<String, usize> = BTreeMap::new();
    let mut handled = BTreeSet::new();
    let mut received = 0;
    // Moto takes about 40 s for it alone on 2 cores, and longer beside the other cases.
    let deadline = Instant::now() + LIMIT * 4;
    // In rounds, so that no broker holds thousands at once (moto slows down with the
    // length of a queue); every round is still shared by the three.
    for (round, chunk) in messages.chunks(ROUND).enumerate() {
        s.broker.publish_all("work", chunk);
        while handled.len() < (round * ROUND + chunk.len()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(message) = s.broker.next("work.upper", left) else {
                panic!(
                    "{} of {TOTAL} messages handled within {:?} (per instance: {shares:?})",
                    handled.len(),
                    LIMIT * 4
                );
            };
            received += 1;
            let by = message.metadata.get("transformed-by").cloned();
            handled.insert(message.text());
            *shares.entry(by.unwrap_or_default()).or_default() += 1;
        }
    }
    let duplicates = received - TOTAL;
    match s.capabilities.receive.delivery {
        Delivery::AtMostOnce => assert_eq!(
            duplicates, 0,
            "some messages were handled twice: {shares:?}"
        ),
        // A competing consumer may get a message another one got too (SQS says so for
        // standard queues; moto does it when two receives race): allowed, and counted.
        Delivery::AtLeastOnce => println!(
            "{}: 3 instances handled all {TOTAL} messages; {duplicates} handled twice \
             (at-least-once)",
            target.name()
        ),
    }
    assert_eq!(
        shares.keys().map(String::as_str).collect::<Vec<_>>(),
        ["w1", "w2", "w3"],
        "every instance takes a share: {shares:?}"
    );
}

/// The broker is stopped and started again while the app works through 2,000 messages:
/// every message the broker accepted is handled at least once (duplicates are counted and
/// printed), where the mode declares it.
///
/// Why the check is sound: `transform` publishes the output of input `mN` as `MN`, and the
/// driver settles an input only after its output was accepted. So an accepted input is
/// either settled, and its output is stored, or not, and the broker delivers it again.
fn broker_restart_loses_nothing_accepted(target: Target) {
    const TOTAL: usize = 2000;
    let mut s = setup(target);
    if !s.capabilities.receive.survives_broker_restart {
        return not_applicable(target, "declared: messages may be lost in a broker restart");
    }
    if let Err(why) = s.broker.can_stop().and(s.broker.can_restart()) {
        return not_applicable(target, why);
    }
    let input = Input {
        topic: "jobs",
        group: None,
    };
    let transform = s.receiver("transform", input, "jobs.upper");
    let mut app = App::receiving(&mut *s.broker, &transform, &[]);
    let mut accepted = BTreeSet::new();
    for i in 0..TOTAL / 2 {
        s.broker.publish("jobs", &Msg::data(format!("m{i}")));
        accepted.insert(format!("M{i}"));
    }
    // Mid-stream: the app has handled something, and (most likely) not yet everything.
    let mut outputs = vec![s.next("jobs.upper").text()];
    s.broker.stop();
    s.broker.restart();
    for i in TOTAL / 2..TOTAL {
        s.broker.publish("jobs", &Msg::data(format!("m{i}")));
        accepted.insert(format!("M{i}"));
    }
    let mut missing = accepted.clone();
    missing.remove(&outputs[0]);
    let deadline = Instant::now() + LIMIT * 2;
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(message) = s.broker.next("jobs.upper", left) else {
            panic!(
                "{} of {TOTAL} accepted messages were never handled, e.g. {:?}; app stderr:\n{}",
                missing.len(),
                missing.iter().take(5).collect::<Vec<_>>(),
                app.stderr_so_far()
            );
        };
        missing.remove(&message.text());
        outputs.push(message.text());
    }
    let duplicates = outputs.len() - outputs.iter().collect::<BTreeSet<_>>().len();
    println!(
        "{}: all {TOTAL} accepted messages handled across a broker restart; {duplicates} handled twice",
        target.name()
    );
}

/// A publisher that runs while the broker goes away fails with `connection` within a bounded
/// time, and so does a new run while the broker is still down.
fn send_during_an_outage_fails_with_connection(target: Target) {
    let mut s = setup(target);
    if let Err(why) = s.broker.can_stop() {
        return not_applicable(target, why);
    }
    let publisher = s.compose("publisher", None);
    s.broker.listen("out");
    let env = [("TOPIC", "out"), ("COUNT", "4000000000")];
    let app = App::start(&mut *s.broker, &publisher, Credentials::Right, &env);
    s.next("out");
    s.broker.stop();
    let connection_error = |(status, stderr): (std::process::ExitStatus, String)| {
        assert!(!status.success(), "{stderr}");
        assert!(
            app_lines(&stderr)
                .iter()
                .any(|l| l.starts_with("publisher: send failed: connection")),
            "{stderr}"
        );
    };
    connection_error(app.finish());
    connection_error(s.run(&publisher, Credentials::Right, &[("COUNT", "1")]));
}

/// Wrong credentials make a send fail with `permission-denied`.
fn wrong_credentials_are_permission_denied(target: Target) {
    let mut s = setup(target);
    if !s.capabilities.credentials {
        return not_applicable(target, "declared: credentials are not checked");
    }
    if let Err(why) = s.broker.can_check_credentials() {
        return not_applicable(target, why);
    }
    let publisher = s.compose("publisher", None);
    let (status, stderr) = s.run(&publisher, Credentials::Wrong, &[("COUNT", "1")]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("publisher: send failed: permission denied"),
        "{stderr}"
    );
}
