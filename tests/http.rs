//! End to end over HTTP: the `http` trigger (driver-http) under the real `wasmtime serve`,
//! and the `http` backend (backend-http) on `wasmtime run -S http` and under serve.
//!
//! Each test composes example apps into its own temp directory. A served component gets
//! a free loopback port and counts as ready when serve logs `Serving HTTP on`; requests
//! are made with ureq. Where the http backend needs somewhere to POST to, a tiny_http
//! server on a free loopback port plays the endpoint. The default `local` backend of a
//! served handler writes what the app sends to stdout (NDJSON, behind serve's
//! `stdout [N] :: ` prefix), which is how the tests see what the handler got. No test
//! sleeps: every wait is on a log line, an output line or a request, with a deadline.
//!
//! Only what is HTTP's own is here (CloudEvents modes, plain POSTs, status codes, limits,
//! the web-hook handshake); what every backend promises is checked for the http backend by
//! the conformance suite, `tests/conformance/`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::{json, Value};
use support::{compose, free_port, lines, msgplug, run_http, text, wasmtime, RUN_LIMIT};

/// A composed component served by `wasmtime serve -S cli` on a free loopback port.
struct Served {
    child: Child,
    port: u16,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Served {
    /// Serves `component` with `--env` pairs and waits until it accepts requests.
    fn start(component: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = wasmtime();
        command
            .args(["serve", "-S", "cli", "--addr"])
            .arg(format!("127.0.0.1:{port}"));
        for (key, value) in env {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        let mut child = command
            .arg(component)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmtime serve");
        let served = Self {
            stdout: lines(child.stdout.take().expect("piped stdout")),
            stderr: lines(child.stderr.take().expect("piped stderr")),
            child,
            port,
        };
        served.stderr_line(&format!("Serving HTTP on http://127.0.0.1:{port}/"));
        served
    }

    /// The URL of `path` on this server.
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits for the next line the app wrote to stdout and parses it as JSON.
    fn stdout_json(&self) -> Value {
        let line = self
            .stdout
            .recv_timeout(RUN_LIMIT)
            .unwrap_or_else(|_| panic!("no stdout line from serve within {RUN_LIMIT:?}"));
        let json = line
            .split_once(" :: ")
            .map_or(line.as_str(), |(_, rest)| rest);
        serde_json::from_str(json).unwrap_or_else(|e| panic!("stdout line {line:?}: {e}"))
    }

    /// Waits for the next stderr line and returns it.
    fn next_stderr_line(&self) -> String {
        self.stderr
            .recv_timeout(RUN_LIMIT)
            .unwrap_or_else(|_| panic!("no stderr line from serve within {RUN_LIMIT:?}"))
    }

    /// Waits for a stderr line containing `needle` and returns it.
    fn stderr_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + RUN_LIMIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "serve never logged {needle:?}; its stderr:\n{}",
            seen.join("\n")
        );
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client got back: status, content type and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: Option<String>,
    body: String,
}

/// An HTTP client that reports every status instead of failing on 4xx/5xx.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(RUN_LIMIT))
        .build()
        .into()
}

/// Reads a ureq response into a [`Reply`].
fn reply(mut response: ureq::http::Response<ureq::Body>) -> Reply {
    Reply {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().expect("ASCII content type").to_string()),
        body: response.body_mut().read_to_string().expect("read body"),
    }
}

/// POSTs `body` with `headers` to `url`.
fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut request = agent().post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    reply(request.send(body).expect("POST"))
}

/// A binary-mode CloudEvent's required headers.
const EVENT: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "evt-1"),
    ("ce-source", "/sensors/7"),
    ("ce-type", "com.example.reading"),
];

/// Composes `app` for the http trigger in a temp dir (kept alive by the returned guard).
fn served(app: &str, args: &[&str], env: &[(&str, &str)]) -> (tempfile::TempDir, Served) {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = vec!["--trigger", "http"];
    all.extend_from_slice(args);
    let out = compose(tmp.path(), app, &all);
    let served = Served::start(&out, env);
    (tmp, served)
}

#[test]
fn a_binary_mode_cloudevent_reaches_the_handler_with_topic_metadata_and_content_type() {
    let (_tmp, served) = served("transform", &[], &[]);
    let mut headers = EVENT.to_vec();
    headers.extend([
        ("content-type", "text/plain"),
        ("ce-subject", "caf%C3%A9"),
        ("ce-traceparent", "00-abc-def-01"),
        ("authorization", "Bearer secret"),
    ]);
    let r = post(&served.url("/orders"), &headers, b"hello");
    assert_eq!((r.status, r.body.as_str()), (204, ""), "{r:?}");
    assert_eq!(
        served.stdout_json(),
        json!({
            "topic": "orders.upper",
            "data": "HELLO",
            "content_type": "text/plain",
            "metadata": {
                "specversion": "1.0",
                "id": "evt-1",
                "source": "/sensors/7",
                "type": "com.example.reading",
                "subject": "café",
                "traceparent": "00-abc-def-01",
                "transformed-by": "transform"
            }
        }),
        "attributes become metadata under their CloudEvents names; other headers do not"
    );

    let r = post(&served.url("/"), &headers, b"to the root");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        served.stdout_json()["topic"],
        "com.example.reading.upper",
        "posted to `/`, the event's type is the topic"
    );
}

#[test]
fn a_structured_mode_cloudevent_reaches_the_handler_with_data_or_data_base64() {
    let (_tmp, served) = served("transform", &[], &[]);
    let structured = [("content-type", "application/cloudevents+json")];
    let event = json!({
        "specversion": "1.0", "id": "2", "source": "s", "type": "orders.created",
        "datacontenttype": "text/plain", "data_base64": "aGkgdGhlcmU=", "sequence": 7
    });
    let r = post(&served.url("/"), &structured, event.to_string().as_bytes());
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        served.stdout_json(),
        json!({
            "topic": "orders.created.upper",
            "data": "HI THERE",
            "content_type": "text/plain",
            "metadata": {
                "specversion": "1.0", "id": "2", "source": "s", "type": "orders.created",
                "sequence": "7", "transformed-by": "transform"
            }
        })
    );

    let event = json!({
        "specversion": "1.0", "id": "3", "source": "s", "type": "t",
        "datacontenttype": "text/plain", "data": "text data"
    });
    let r = post(
        &served.url("/audit"),
        &structured,
        event.to_string().as_bytes(),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let m = served.stdout_json();
    assert_eq!(
        (&m["topic"], &m["data"]),
        (&json!("audit.upper"), &json!("TEXT DATA"))
    );
}

#[test]
fn a_plain_post_takes_its_topic_from_the_path_and_carries_no_metadata() {
    let (_tmp, served) = served("transform", &[], &[]);
    let r = post(
        &served.url("/orders.eu?token=x"),
        &[
            ("content-type", "text/plain; charset=utf-8"),
            ("x-custom", "1"),
        ],
        b"plain",
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        served.stdout_json(),
        json!({
            "topic": "orders.eu.upper",
            "data": "PLAIN",
            "content_type": "text/plain; charset=utf-8",
            "metadata": {"transformed-by": "transform"}
        })
    );
}

#[test]
fn a_reply_is_the_response_body_with_its_content_type() {
    let (_tmp, served) = served("responder", &[], &[]);
    let r = post(
        &served.url("/greet"),
        &[("content-type", "text/plain")],
        b"ann",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    assert_eq!(r.body, "hello, ann");
}

#[test]
fn a_handler_error_is_a_500_with_a_short_body_and_a_log_line() {
    let (_tmp, served) = served("transform", &[], &[]);
    let ok = post(&served.url("/text"), &[], b"fine");
    assert_eq!(ok.status, 204, "{ok:?}");
    let r = post(&served.url("/bin"), &[], &[0xff, 0xfe]);
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.body, "the handler failed: payload is not UTF-8 text\n");
    let line = served.next_stderr_line();
    assert!(
        line.ends_with("msgplug: message on `bin` failed: payload is not UTF-8 text"),
        "the 204 before it logged nothing, the failure one line: {line:?}"
    );
}

/// Sends a raw HTTP/1.1 request with a chunked body (no Content-Length) and returns the
/// status code, so the body limit is checked while the body streams in.
fn post_chunked(port: u16, path: &str, chunks: &[&[u8]]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to serve");
    stream.set_read_timeout(Some(RUN_LIMIT)).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        request.extend(format!("{:x}\r\n", chunk.len()).bytes());
        request.extend_from_slice(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    stream.write_all(&request).expect("write request");
    let mut status = String::new();
    BufReader::new(stream)
        .read_line(&mut status)
        .expect("read status line");
    status
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status:?}"))
}

#[test]
fn bad_requests_get_a_4xx_with_the_reason_and_never_reach_the_handler() {
    let (_tmp, served) = served("transform", &["--option", "max_body_bytes=16"], &[]);
    let get = reply(agent().get(&served.url("/orders")).call().expect("GET"));
    assert_eq!(get.status, 405, "{get:?}");
    assert!(
        get.body.starts_with("method GET is not allowed: POST"),
        "{get:?}"
    );

    let incomplete = &EVENT[..3];
    let r = post(&served.url("/t"), incomplete, b"x");
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "the CloudEvent has no `ce-type` header\n")
    );

    let r = post(
        &served.url("/t"),
        &[("content-type", "application/cloudevents+json")],
        b"{not json",
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body
            .starts_with("the structured-mode CloudEvent is not a JSON object"),
        "{r:?}"
    );

    let r = post(
        &served.url("/t"),
        &[("content-type", "application/cloudevents-batch+json")],
        b"[]",
    );
    assert_eq!(r.status, 415, "{r:?}");

    let r = post(&served.url("/"), &[("content-type", "text/plain")], b"x");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.starts_with("no topic: POST to /TOPIC"), "{r:?}");

    let r = post(&served.url("/t"), &[], &[b'x'; 17]);
    assert_eq!(r.status, 413, "{r:?}");
    assert!(
        r.body
            .starts_with("the request body (17 bytes) is over the limit of 16 bytes"),
        "{r:?}"
    );
    assert_eq!(
        post_chunked(served.port, "/t", &[b"0123456789", b"0123456789"]),
        413
    );
    served.stderr_line("msgplug: request refused (413)");

    // The server is still up, and this is the first request that reached the handler.
    assert_eq!(
        post_chunked(served.port, "/ok", &[b"0123456789", b"012345"]),
        204
    );
    assert_eq!(served.stdout_json()["topic"], "ok.upper");
}

#[test]
fn options_answers_the_cloudevents_web_hook_handshake() {
    let (_tmp, served) = served("transform", &[], &[]);
    let response = agent()
        .options(&served.url("/orders"))
        .header("WebHook-Request-Origin", "events.example.com")
        .call()
        .expect("OPTIONS");
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    assert_eq!(header("allow").as_deref(), Some("POST"));
    assert_eq!(
        header("webhook-allowed-origin").as_deref(),
        Some("events.example.com")
    );
}

/// A request the fake endpoint received.
#[derive(Debug)]
struct Received {
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    /// The value of header `name` (lower-case), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A fake HTTP endpoint on a free loopback port, answering in a thread of its own.
struct Endpoint {
    port: u16,
    requests: JoinHandle<Vec<Received>>,
}

impl Endpoint {
    /// Starts an endpoint that answers `answers.len()` POSTs, the n-th with
    /// `answers[n]` (status, content type, body), and then stops.
    fn answering(answers: Vec<(u16, &'static str, &'static str)>) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("start tiny_http");
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let requests = std::thread::spawn(move || {
            let mut received = Vec::new();
            for (status, content_type, body) in answers {
                let mut request = server
                    .recv_timeout(RUN_LIMIT)
                    .expect("receive")
                    .unwrap_or_else(|| panic!("no request within {RUN_LIMIT:?}"));
                assert_eq!(request.method(), &tiny_http::Method::Post);
                let mut data = String::new();
                request
                    .as_reader()
                    .read_to_string(&mut data)
                    .expect("read the request body");
                received.push(Received {
                    url: request.url().to_string(),
                    headers: request
                        .headers()
                        .iter()
                        .map(|h| {
                            (
                                h.field.as_str().as_str().to_ascii_lowercase(),
                                h.value.as_str().to_string(),
                            )
                        })
                        .collect(),
                    body: data,
                });
                let header = tiny_http::Header::from_bytes("content-type", content_type)
                    .expect("valid header");
                let response = tiny_http::Response::from_string(body)
                    .with_status_code(status)
                    .with_header(header);
                request.respond(response).expect("respond");
            }
            received
        });
        Self { port, requests }
    }

    /// The broker URL for messages to `/in/<topic>` on this endpoint.
    fn broker(&self) -> String {
        format!("http://127.0.0.1:{}/in/{{topic}}", self.port)
    }

    /// Waits until every answer was given and returns the requests.
    fn received(self) -> Vec<Received> {
        self.requests.join().expect("the endpoint thread failed")
    }
}

/// Returns true for 32 lower-case hex digits: the event ids the http backend makes.
fn is_event_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn the_http_backend_posts_each_send_as_a_binary_mode_cloudevent() {
    let endpoint = Endpoint::answering(vec![(200, "text/plain", ""), (202, "text/plain", "")]);
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "publisher", &["--broker", &endpoint.broker()]);
    let output = run_http(&out, &[("COUNT", "2")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let received = endpoint.received();
    for (i, request) in received.iter().enumerate() {
        let seq = (i + 1).to_string();
        assert_eq!(request.url, "/in/greetings");
        assert_eq!(request.body, format!("hello #{seq}"));
        assert_eq!(request.header("ce-specversion"), Some("1.0"));
        assert_eq!(request.header("ce-type"), Some("greetings"));
        assert_eq!(request.header("ce-source"), Some("msgplug"));
        assert_eq!(request.header("ce-seq"), Some(seq.as_str()));
        assert_eq!(request.header("content-type"), Some("text/plain"));
        assert!(
            is_event_id(request.header("ce-id").unwrap_or_default()),
            "{request:?}"
        );
    }
    assert_ne!(received[0].header("ce-id"), received[1].header("ce-id"));
}

#[test]
fn a_403_from_the_endpoint_is_permission_denied() {
    let endpoint = Endpoint::answering(vec![(403, "text/plain", "no token given")]);
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "publisher", &["--broker", &endpoint.broker()]);
    let output = run_http(&out, &[("COUNT", "1")]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "publisher: send failed: permission denied: sending to `greetings`: HTTP 403: no token given\n"
    );
    assert_eq!(endpoint.received().len(), 1);
}

#[test]
fn a_request_is_a_post_and_the_response_is_the_reply() {
    let endpoint = Endpoint::answering(vec![(200, "text/plain", "hello from http")]);
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "requester", &["--broker", &endpoint.broker()]);
    let output = run_http(&out, &[("NAME", "ann")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "reply: hello from http\n");
    let received = endpoint.received();
    assert_eq!(received[0].url, "/in/greet");
    assert_eq!(received[0].body, "ann");
    assert_eq!(received[0].header("ce-type"), Some("greet"));
}

#[test]
fn one_component_sends_to_another_over_http() {
    let (_tmp, served) = served("transform", &[], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let broker = served.url("/{topic}");
    let publisher = compose(tmp.path(), "publisher", &["--broker", &broker]);
    let output = run_http(&publisher, &[("COUNT", "2")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for seq in ["1", "2"] {
        let mut m = served.stdout_json();
        let id = m["metadata"]["id"].take();
        assert!(is_event_id(id.as_str().unwrap_or_default()), "{m}");
        assert_eq!(
            m,
            json!({
                "topic": "greetings.upper",
                "data": format!("HELLO #{seq}"),
                "content_type": "text/plain",
                "metadata": {
                    "specversion": "1.0", "id": null, "type": "greetings", "source": "msgplug",
                    "seq": seq, "transformed-by": "transform"
                }
            })
        );
    }
}

#[test]
fn request_reply_between_two_components_over_http() {
    let (_tmp, served) = served("responder", &[], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(
        tmp.path(),
        "requester",
        &["--broker", &served.url("/{topic}")],
    );
    let output = run_http(&requester, &[("NAME", "bob")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "reply: hello, bob\n");
}

#[test]
fn a_served_handler_sends_over_the_http_backend_and_its_failures_become_500s() {
    let endpoint = Endpoint::answering(vec![
        (200, "text/plain", ""),
        (403, "text/plain", "not you"),
    ]);
    let broker = endpoint.broker();
    let (_tmp, served) = served("transform", &["--broker", &broker], &[]);
    let mut headers = EVENT.to_vec();
    headers.extend([("content-type", "text/plain"), ("ce-subject", "temp")]);

    let r = post(&served.url("/orders"), &headers, b"hello");
    assert_eq!(r.status, 204, "{r:?}");
    let r = post(&served.url("/orders"), &headers, b"again");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(
        r.body,
        "the handler failed: permission denied: sending to `orders.upper`: HTTP 403: not you\n"
    );

    let received = endpoint.received();
    let sent = &received[0];
    assert_eq!(sent.url, "/in/orders.upper");
    assert_eq!(sent.body, "HELLO");
    assert_eq!(
        sent.header("ce-type"),
        Some("orders.upper"),
        "the topic is the type"
    );
    assert_eq!(
        sent.header("ce-source"),
        Some("/sensors/7"),
        "metadata keeps the source"
    );
    assert_eq!(sent.header("ce-subject"), Some("temp"));
    assert_eq!(
        sent.header("transformed-by"),
        Some("transform"),
        "not an attribute name"
    );
    assert!(
        is_event_id(sent.header("ce-id").unwrap_or_default()),
        "a new event: {sent:?}"
    );
}

#[test]
fn a_handler_with_the_http_backend_is_served_and_the_run_trigger_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = "http://127.0.0.1:9/{topic}";
    let refused = msgplug()
        .arg("compose")
        .arg(support::example("transform"))
        .args(["-o", "out.wasm", "--broker", broker, "--trigger", "run"])
        .current_dir(tmp.path())
        .output()
        .expect("run msgplug");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("`backend-http` backend only sends") && stderr.contains("--trigger http"),
        "{stderr}"
    );
    assert!(!tmp.path().join("out.wasm").exists(), "no output on error");

    let out = compose(tmp.path(), "transform", &["--broker", broker]);
    let inspected = msgplug()
        .args(["inspect", "--json"])
        .arg(&out)
        .output()
        .expect("run msgplug inspect");
    let info: Value = serde_json::from_slice(&inspected.stdout).expect("inspect JSON");
    assert_eq!(info["manifest"]["trigger"], "http", "{info}");
}

#[test]
fn composed_outputs_with_the_http_backend_use_wasi_http_and_no_sockets() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = "https://example.com/hooks/{topic}";
    for (app, args) in [
        ("publisher", vec!["--broker", broker]),
        ("transform", vec!["--broker", broker, "--trigger", "http"]),
    ] {
        let out = compose(tmp.path(), app, &args);
        support::assert_wasi_http_and_no_sockets(&out);
    }
}
