//! End to end against SQS: the example apps composed with `--broker sqs://us-east-1/QUEUE`
//! and run on the real `wasmtime` CLI (`wasmtime run -S http --env AWS_ENDPOINT_URL_SQS=...
//! --env AWS_ACCESS_KEY_ID=... --env AWS_SECRET_ACCESS_KEY=...`), checked from the outside by
//! the test's own SQS JSON-protocol client (ureq), not the adapter's code.
//!
//! Server: every test starts its own moto server (`moto_server -H 127.0.0.1 -p 0`, from
//! `pip install 'moto[server]'`) on a loopback port the system picks, read from its
//! `Running on` log line (printed once it listens); it is killed when the test's guard drops. Without `moto_server` the tests fail with install
//! instructions. Moto speaks the SQS JSON protocol but does not check SigV4 signatures (the
//! signer is tested against AWS's test vectors in the adapter's unit tests); it routes a
//! request to SQS by the credential scope of its `Authorization` header, so the test client
//! sends a well-formed but unsigned one. One test checks the signatures on the wire instead:
//! a recording HTTP server (tiny_http) takes the adapter's requests and botocore (AWS's
//! Python SDK core, installed with moto) signs the same requests for comparison.
//!
//! Synchronisation: a consumer (`wasmtime run` of a handler with the run driver) long-polls
//! forever, so each test waits for what it needs to observe — a message in an output queue
//! (long polling from the test), a line on the app's stderr, a queue drained by the
//! consumer's deletes — and then kills it. Every wait is bounded and fails the test when it
//! runs out.
//!
//! Only what is SQS's own is here (deletes, ignored subscriptions, FIFO queues, temporary
//! reply queues, SigV4 on the wire, missing credentials); what every backend promises is
//! checked for SQS by the conformance suite, `tests/conformance/`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::moto::{Moto, LIMIT};
use support::{compose, finish, run_http, run_http_failing, text};

/// A composed component running until it is dropped (then killed), its stdout and stderr
/// read line by line.
struct App {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl App {
    /// Starts `component` with `--env` pairs and stdin closed.
    fn start(component: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = support::wasmtime_run_http(component, env)
            .spawn()
            .expect("spawn wasmtime");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, prefix) in [
            (
                Box::new(stdout) as Box<dyn std::io::Read + Send>,
                "stdout: ",
            ),
            (Box::new(stderr), ""),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if sender.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            });
        }
        App {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until `count` output lines contain `needle`, failing the test (with all
    /// output so far) if the app exits or [`LIMIT`] passes first.
    fn wait_for(&mut self, needle: &str, count: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.seen.iter().filter(|l| l.contains(needle)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "{count} lines with {needle:?} did not appear ({e}); output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every output line read so far, and any that is ready now.
    fn output(&mut self) -> Vec<String> {
        self.seen.extend(self.lines.try_iter());
        self.seen.clone()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of String message attribute `name` of a received message.
fn attribute<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["MessageAttributes"][name]["StringValue"].as_str()
}

/// The names of the message attributes of a received message, sorted.
fn attribute_names(message: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = message["MessageAttributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    names.sort();
    names
}

/// The body of a received message.
fn body(message: &Value) -> &str {
    message["Body"].as_str().expect("a body")
}

#[test]
fn a_handler_consumes_republishes_and_its_input_is_deleted_after_ok() {
    let moto = Moto::start();
    let input = moto.create_queue("orders", json!({}));
    let upper = moto.create_queue("orders-upper", json!({}));
    moto.send(
        &input,
        "hello",
        &[("content-type", "text/plain"), ("id", "7")],
        json!({}),
    );
    let tmp = tempfile::tempdir().unwrap();
    let component = compose(
        tmp.path(),
        "transform",
        &["--broker", "sqs://us-east-1/orders", "--subscribe", "x.>"],
    );
    let mut app = App::start(&component, &moto.env());

    // `transform` publishes to `<topic>.upper`; SQS names no queue with a dot, so the
    // topic `orders.upper` is the queue `orders-upper`.
    let out = moto.take(&upper, 1);
    assert_eq!(body(&out[0]), "HELLO");
    assert_eq!(attribute(&out[0], "content-type"), Some("text/plain"));
    assert_eq!(attribute(&out[0], "id"), Some("7"));
    assert_eq!(attribute(&out[0], "transformed-by"), Some("transform"));
    assert_eq!(
        attribute_names(&out[0]),
        ["content-type", "id", "transformed-by"]
    );
    moto.wait_until_drained(&input);
    app.wait_for(
        "msgplug[sqs]: subscriptions (x.>) are ignored: SQS consumes the queue named in the broker URL (`orders`)",
        1,
    );
    let output = app.output();
    assert!(!output.iter().any(|l| l.contains("failed")), "{output:#?}");
}

#[test]
fn a_failed_message_comes_back_and_is_deleted_after_a_later_success() {
    let moto = Moto::start();
    // Longer than any wait here: only the release can bring the message back in time.
    let input = moto.create_queue("jobs", json!({"VisibilityTimeout": "300"}));
    moto.send(&input, "work", &[], json!({}));
    let tmp = tempfile::tempdir().unwrap();
    let component = compose(
        tmp.path(),
        "transform",
        &["--broker", "sqs://us-east-1/jobs"],
    );
    let mut app = App::start(&component, &moto.env());

    // The output queue does not exist yet: the handler fails with an error that names
    // it, the message is released (visibility 0) and received again, and fails again.
    app.wait_for(
        "msgplug: message on `jobs` failed: SQS queue `jobs-upper` does not exist",
        2,
    );
    let upper = moto.create_queue("jobs-upper", json!({}));
    let out = moto.take(&upper, 1);
    assert_eq!(body(&out[0]), "WORK");
    moto.wait_until_drained(&input);
}

#[test]
fn a_fifo_queue_is_consumed_in_order_and_sends_to_a_fifo_queue_carry_group_and_dedup_ids() {
    let moto = Moto::start();
    let fifo = json!({"FifoQueue": "true"});
    let requests = moto.create_queue("greet.fifo", fifo.clone());
    let replies = moto.create_queue("replies.fifo", fifo);
    for (i, name) in ["ann", "bob", "cy"].iter().enumerate() {
        moto.send(
            &requests,
            name,
            &[("reply-to", replies.as_str())],
            json!({"MessageGroupId": "g", "MessageDeduplicationId": i.to_string()}),
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let component = compose(
        tmp.path(),
        "responder",
        &["--broker", "sqs://us-east-1/greet.fifo"],
    );
    let _app = App::start(&component, &moto.env());

    // The responder replies to the `reply-to` queue URL; that queue is FIFO, so each
    // reply carries the default group and a content-hash deduplication id.
    let out = moto.take(&replies, 3);
    let bodies: Vec<&str> = out.iter().map(body).collect();
    assert_eq!(bodies, ["hello, ann", "hello, bob", "hello, cy"]);
    let mut dedup_ids = std::collections::BTreeSet::new();
    for message in &out {
        let system = &message["Attributes"];
        assert_eq!(system["MessageGroupId"], "default", "{message}");
        let dedup = system["MessageDeduplicationId"]
            .as_str()
            .expect("a dedup id");
        assert!(
            dedup.len() == 64 && dedup.bytes().all(|b| b.is_ascii_hexdigit()),
            "{dedup}"
        );
        dedup_ids.insert(dedup.to_string());
        assert_eq!(attribute(message, "content-type"), Some("text/plain"));
    }
    assert_eq!(dedup_ids.len(), 3, "distinct replies have distinct ids");
    moto.wait_until_drained(&requests);
}

#[test]
fn request_reply_uses_a_temporary_queue_that_is_deleted_afterwards() {
    let moto = Moto::start();
    moto.create_queue("greet", json!({}));
    let tmp = tempfile::tempdir().unwrap();
    let responder = compose(
        tmp.path(),
        "responder",
        &["--broker", "sqs://us-east-1/greet"],
    );
    let requester = compose(tmp.path(), "requester", &["--broker", "sqs://us-east-1"]);
    let request = |extra: &[(&str, &str)]| run_http(&requester, &moto.env_with(extra));

    let app = App::start(&responder, &moto.env_with(&[("REPLIES", "2")]));
    let output = request(&[("NAME", "ann"), ("EXPECT", "2")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stderr),
        "reply: hello, ann (1/2)\nreply: hello, ann (2/2)\n"
    );
    assert_eq!(moto.queues("msgplug-reply-"), Vec::<String>::new());

    // Nobody answers once the responder is gone: the request times out, and its
    // reply queue is deleted all the same.
    drop(app);
    let started = Instant::now();
    let output = request(&[("NAME", "bob"), ("TIMEOUT_MS", "1000")]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stderr), "requester: request failed: timeout\n");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(moto.queues("msgplug-reply-"), Vec::<String>::new());
}

/// Computes SigV4 `Authorization` headers with botocore (AWS's Python SDK core, which
/// `moto[server]` installs) for requests read as JSON lines from stdin: `{"url", "headers",
/// "body", "date"}` with the credentials `AKIDTEST` / `test-secret` / `token`.
const BOTOCORE_SIGNER: &str = r#"
import datetime, json, sys
from unittest import mock
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
credentials = Credentials("AKIDTEST", "test-secret", "token")
for line in sys.stdin:
    r = json.loads(line)
    request = AWSRequest(method="POST", url=r["url"], data=r["body"].encode(), headers=r["headers"])
    now = datetime.datetime.strptime(r["date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=now):
        SigV4Auth(credentials, "sqs", "us-east-1").add_auth(request)
    print(request.headers["Authorization"])
"#;

#[test]
fn requests_on_the_wire_carry_the_sigv4_signature_botocore_computes() {
    // Moto ignores signatures, so a recording server stands in for SQS here: it answers
    // `GetQueueUrl` and `SendMessage` and keeps each request as it arrived.
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind a loopback port");
    let port = server.server_addr().to_ip().expect("an IP address").port();
    let recorder = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for _ in 0..2 {
            let mut request = server
                .recv_timeout(LIMIT)
                .expect("receive")
                .expect("a request within the limit");
            let mut body = String::new();
            request.as_reader().read_to_string(&mut body).expect("body");
            let headers: serde_json::Map<String, Value> = request
                .headers()
                .iter()
                .map(|h| {
                    (
                        h.field.as_str().as_str().to_ascii_lowercase(),
                        h.value.as_str().into(),
                    )
                })
                .collect();
            // Signed as received: the Host header and the path on the wire.
            let url = format!(
                "http://{}{}",
                headers["host"].as_str().expect("a host"),
                request.url()
            );
            let answer = json!({"QueueUrl": format!("http://127.0.0.1:{port}/1/greetings"), "MessageId": "m"});
            request
                .respond(tiny_http::Response::from_string(answer.to_string()))
                .expect("respond");
            requests.push((headers, body, url));
        }
        requests
    });
    let tmp = tempfile::tempdir().unwrap();
    let app = compose(tmp.path(), "publisher", &["--broker", "sqs://us-east-1"]);
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("AWS_ENDPOINT_URL_SQS", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_SESSION_TOKEN", "token"),
        ("COUNT", "1"),
    ];
    let output = run_http(&app, &env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let requests = recorder.join().expect("recorder");

    let mut input = String::new();
    for (headers, body, url) in &requests {
        // What botocore signs besides `host`: the headers the SDK itself would send.
        let signed: serde_json::Map<String, Value> = headers
            .iter()
            .filter(|(k, _)| {
                ["content-type", "x-amz-target", "x-amz-security-token"].contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let line =
            json!({"url": url, "headers": signed, "body": body, "date": headers["x-amz-date"]});
        input.push_str(&format!("{line}\n"));
    }
    let mut python = Command::new("python3")
        .args(["-c", BOTOCORE_SIGNER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    std::io::Write::write_all(&mut python.stdin.take().expect("stdin"), input.as_bytes())
        .expect("write to python3");
    let signed = finish(python);
    assert!(
        signed.status.success(),
        "botocore failed (it comes with `pip install 'moto[server]'`): {}",
        text(&signed.stderr)
    );
    let expected: Vec<String> = text(&signed.stdout).lines().map(String::from).collect();
    let targets: Vec<&str> = requests
        .iter()
        .map(|(h, _, _)| h["x-amz-target"].as_str().unwrap())
        .collect();
    // The publisher runs behind the run wrapper: its send goes in a `SendMessageBatch`.
    assert_eq!(
        targets,
        ["AmazonSQS.GetQueueUrl", "AmazonSQS.SendMessageBatch"]
    );
    for ((headers, _, _), expected) in requests.iter().zip(&expected) {
        assert_eq!(headers["authorization"], expected.as_str());
        assert!(
            expected.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"),
            "{expected}"
        );
    }
    assert_eq!(expected.len(), 2);
}

#[test]
fn missing_credentials_are_an_error_that_names_the_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let wanted = "AWS credentials are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
    // Only the secret is given; no server is needed, nothing is sent.
    let env = [("AWS_SECRET_ACCESS_KEY", "s")];

    let handler = compose(
        tmp.path(),
        "transform",
        &["--broker", "sqs://us-east-1/orders"],
    );
    let stderr = run_http_failing(&handler, &env);
    assert!(
        stderr.starts_with(&format!("msgplug: receiving failed: {wanted}")),
        "{stderr}"
    );

    let publisher = compose(tmp.path(), "publisher", &["--broker", "sqs://us-east-1"]);
    support::assert_wasi_http_and_no_sockets(&publisher);
    let stderr = run_http_failing(&publisher, &env);
    assert!(
        stderr.starts_with(&format!("publisher: send failed: {wanted}")),
        "{stderr}"
    );
}

/// A proxy in front of moto that answers the first SendMessage and SendMessageBatch calls
/// with `refusals`
/// (status, `Retry-After`, body), as a throttling or failing SQS does, and forwards every
/// other request to moto unchanged. Returns its endpoint; it serves until the test ends.
fn throttling_proxy(
    moto: &Moto,
    refusals: Vec<(u16, Option<&'static str>, &'static str)>,
) -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind a loopback port");
    let endpoint = format!(
        "http://{}",
        server.server_addr().to_ip().expect("an IP address")
    );
    let (upstream, agent) = (moto.endpoint.clone(), moto.agent.clone());
    std::thread::spawn(move || {
        let mut refusals = refusals.into_iter();
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            std::io::Read::read_to_end(request.as_reader(), &mut body).expect("body");
            let header = |name: &str| {
                request
                    .headers()
                    .iter()
                    .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                    .map(|h| h.value.as_str().to_string())
            };
            let refusal = header("X-Amz-Target")
                .is_some_and(|t| t.starts_with("AmazonSQS.SendMessage"))
                .then(|| refusals.next())
                .flatten();
            let response = match refusal {
                Some((status, retry_after, text)) => {
                    let mut response =
                        tiny_http::Response::from_string(text).with_status_code(status);
                    if let Some(seconds) = retry_after {
                        response.add_header(
                            tiny_http::Header::from_bytes("Retry-After", seconds).expect("header"),
                        );
                    }
                    response
                }
                None => {
                    let mut forwarded = agent.post(&upstream);
                    for name in [
                        "Content-Type",
                        "X-Amz-Target",
                        "X-Amz-Date",
                        "Authorization",
                    ] {
                        if let Some(value) = header(name) {
                            forwarded = forwarded.header(name, value);
                        }
                    }
                    let mut answer = forwarded.send(&body[..]).expect("forward to moto");
                    let status = answer.status().as_u16();
                    let text = answer.body_mut().read_to_string().expect("moto's body");
                    tiny_http::Response::from_string(text).with_status_code(status)
                }
            };
            let _ = request.respond(response);
        }
    });
    endpoint
}

#[test]
fn throttled_and_failing_sends_are_retried_and_sent_once() {
    let moto = Moto::start();
    let queue = moto.create_queue("greetings", json!({}));
    let proxy = throttling_proxy(
        &moto,
        vec![
            (
                400,
                None,
                r#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#,
            ),
            (503, Some("1"), "Service Unavailable"),
            (
                400,
                None,
                r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}"#,
            ),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let app = compose(tmp.path(), "publisher", &["--broker", "sqs://us-east-1"]);
    let mut env = moto.env_with(&[("COUNT", "1")]);
    env[0].1 = &proxy;
    let output = run_http(&app, &env);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(body(&moto.take(&queue, 1)[0]), "hello #1");
    let retries: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("retrying in"))
        .collect();
    assert_eq!(retries.len(), 3, "{stderr}");
    assert!(
        // The publisher runs behind the run wrapper: its send goes in a `SendMessageBatch`.
        retries[0].contains(
            "SQS SendMessageBatch on `greetings` failed: ThrottlingException: Rate exceeded"
        ),
        "{stderr}"
    );
    assert!(
        retries[1].contains("HTTP 503") && retries[1].ends_with("retrying in 1s"),
        "{stderr}"
    );
    assert!(retries[2].contains("RequestThrottled"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Long handlers: the visibility timeout is each message's lease (issue 15).

/// Queue `jobs` with a 2 s visibility timeout, consumed by two `relay` instances composed
/// with `extra` compose arguments, and one job whose handler works as the relay's metadata
/// `sleep-ms` says (it sends to `jobs-progress` between its waits, and relays to
/// `jobs-relayed` at the end).
struct SlowJob {
    moto: Moto,
    jobs: String,
    relayed: String,
    progress: String,
    apps: [App; 2],
    _tmp: tempfile::TempDir,
}

impl SlowJob {
    fn start(extra: &[&str], sleep_ms: &str) -> SlowJob {
        let moto = Moto::start();
        let jobs = moto.create_queue("jobs", json!({"VisibilityTimeout": "2"}));
        let relayed = moto.create_queue("jobs-relayed", json!({}));
        let progress = moto.create_queue("jobs-progress", json!({}));
        let tmp = tempfile::tempdir().unwrap();
        let mut args = vec!["--broker", "sqs://us-east-1/jobs"];
        args.extend(extra);
        let relay = compose(tmp.path(), "relay", &args);
        let apps = [
            App::start(&relay, &moto.env()),
            App::start(&relay, &moto.env()),
        ];
        moto.send(&jobs, "slow job", &[("sleep-ms", sleep_ms)], json!({}));
        SlowJob {
            moto,
            jobs,
            relayed,
            progress,
            apps,
            _tmp: tmp,
        }
    }

    /// Checks that the job was handled by one handler run: relayed once, deleted, and
    /// `progress_sends` progress messages (every run of the handler sends its first one
    /// as it starts, so a second run would have sent one before the job was deleted).
    fn assert_handled_once(&mut self, progress_sends: usize) {
        let relayed = self.moto.take(&self.relayed, 1);
        assert_eq!(body(&relayed[0]), "slow job");
        self.moto.wait_until_drained(&self.jobs);
        self.moto.take(&self.progress, progress_sends);
        assert_eq!(
            self.moto.receive(&self.progress).len() + self.moto.receive(&self.relayed).len(),
            0,
            "the job was handled more than once"
        );
        for app in &mut self.apps {
            let output = app.output().join("\n");
            assert!(
                !output.contains("since its lease was last renewed") && !output.contains("failed"),
                "{output}"
            );
        }
    }
}

/// The issue's case on SQS: a handler of 4 s on a queue whose visibility timeout is 2 s.
/// `handler_timeout_ms` asks for a longer visibility timeout when receiving.
#[test]
fn a_handler_slower_than_the_queues_visibility_timeout_is_handled_once_with_handler_timeout_ms() {
    let mut job = SlowJob::start(&["--option", "handler_timeout_ms=6000"], "0,4000");
    job.assert_handled_once(1);
}

/// A handler of 4.5 s keeps its message past the queue's 2 s visibility timeout when it
/// sends every 1.5 s: each send renews it (`ChangeMessageVisibility`).
#[test]
fn a_long_handler_that_sends_as_it_goes_keeps_its_message_past_the_visibility_timeout() {
    let mut job = SlowJob::start(&[], "0,1500,1500,1500");
    job.assert_handled_once(3);
}

/// Without `handler_timeout_ms` a handler of 4 s outlives the 2 s visibility timeout: the
/// instance whose handler overran says so when it deletes the message.
#[test]
fn a_handler_that_overran_the_visibility_timeout_says_so() {
    let mut job = SlowJob::start(&[], "4000");
    let overran = "msgplug[sqs]: the handler of a message from `jobs` ran ";
    let deadline = Instant::now() + LIMIT;
    let line = loop {
        let output: Vec<String> = job.apps.iter_mut().flat_map(App::output).collect();
        if let Some(line) = output.iter().find(|l| l.starts_with(overran)) {
            break line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no overrun was logged within {LIMIT:?}:\n{}",
            output.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        line.contains("longer than the visibility timeout of 2.0 s")
            && line.contains("--option handler_timeout_ms"),
        "{line}"
    );
}
