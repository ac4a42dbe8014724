//! A moto server (`moto_server`, an SQS-compatible server from `pip install 'moto[server]'`)
//! of the test's own, and a small SQS JSON-protocol client for it; shared by `tests/sqs.rs`
//! and the conformance suite's SQS backend (`tests/conformance/sqs.rs`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long any single wait may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The region every test uses (moto accepts any).
pub const REGION: &str = "us-east-1";

/// A moto server on a free loopback port, killed when dropped.
pub struct Moto {
    child: std::sync::Mutex<Child>,
    /// Its URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// An HTTP client that talks to it.
    pub agent: ureq::Agent,
}

impl Moto {
    /// Starts `moto_server` on a port the system picks (`-p 0`) and returns once it
    /// listens: werkzeug logs ` * Running on http://127.0.0.1:PORT` after binding.
    pub fn start() -> Self {
        let install = "install it with `pip install 'moto[server]'` (the SQS server the tests \
                       run against; see README: Testing)";
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `moto_server`: {e}; {install}"));
        // Moto logs every request on stderr: keep reading it for as long as it runs.
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut moto = Moto {
            child: std::sync::Mutex::new(child),
            endpoint: String::new(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(LIMIT))
                .build()
                .into(),
        };
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        while moto.endpoint.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => match line.split_once(" * Running on ") {
                    Some((_, url)) => moto.endpoint = url.trim().to_string(),
                    None => seen.push(line),
                },
                Err(e) => panic!(
                    "`moto_server` did not start listening ({e}); {install}; its output:\n{}",
                    seen.join("\n")
                ),
            }
        }
        moto
    }

    /// The `--env` pairs that point a composed app at this server.
    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env_with(&[])
    }

    /// [`Moto::env`] followed by the app's own `extra` pairs.
    pub fn env_with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("AWS_ENDPOINT_URL_SQS", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ];
        env.extend_from_slice(extra);
        env
    }

    /// Calls SQS `action` with `input`, failing the test on a non-2xx answer.
    pub fn call(&self, action: &str, input: Value) -> Value {
        let mut response = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", "application/x-amz-json-1.0")
            .header("X-Amz-Target", format!("AmazonSQS.{action}"))
            .header(
                "Authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDTEST/20250101/{REGION}/sqs/aws4_request, \
                     SignedHeaders=host, Signature=0"
                ),
            )
            .send(input.to_string())
            .unwrap_or_else(|e| panic!("{action} to moto: {e}"));
        let status = response.status();
        let body = response.body_mut().read_to_string().expect("read body");
        assert!(status.is_success(), "{action}: HTTP {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{action}: {e}: {body}"))
    }

    /// Creates a queue with `attributes` and returns its URL.
    pub fn create_queue(&self, name: &str, attributes: Value) -> String {
        let created = self.call(
            "CreateQueue",
            json!({"QueueName": name, "Attributes": attributes}),
        );
        created["QueueUrl"].as_str().expect("QueueUrl").to_string()
    }

    /// Sends `body` with String attributes `attributes` and the extra `fields` (such as
    /// FIFO ids) to the queue at `url`.
    pub fn send(&self, url: &str, body: &str, attributes: &[(&str, &str)], fields: Value) {
        let mut input = json!({"QueueUrl": url, "MessageBody": body});
        let attributes: serde_json::Map<String, Value> = attributes
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    json!({"DataType": "String", "StringValue": v}),
                )
            })
            .collect();
        if !attributes.is_empty() {
            input["MessageAttributes"] = attributes.into();
        }
        for (key, value) in fields.as_object().into_iter().flatten() {
            input[key] = value.clone();
        }
        self.call("SendMessage", input);
    }

    /// Long-polls the queue at `url` once (for at most a second) and returns what came,
    /// with every attribute, deleted from the queue.
    pub fn receive(&self, url: &str) -> Vec<Value> {
        let received = self.call(
            "ReceiveMessage",
            json!({
                "QueueUrl": url,
                "MaxNumberOfMessages": 10,
                "WaitTimeSeconds": 1,
                "MessageAttributeNames": ["All"],
                "MessageSystemAttributeNames": ["All"],
            }),
        );
        let messages = received["Messages"].as_array().cloned().unwrap_or_default();
        if !messages.is_empty() {
            let entries: Vec<Value> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| json!({"Id": i.to_string(), "ReceiptHandle": m["ReceiptHandle"]}))
                .collect();
            let deleted = self.call(
                "DeleteMessageBatch",
                json!({"QueueUrl": url, "Entries": entries}),
            );
            assert_eq!(
                deleted["Failed"].as_array().map_or(0, Vec::len),
                0,
                "{deleted}"
            );
        }
        messages
    }

    /// Long-polls the queue at `url` until `count` messages arrived (with every
    /// attribute), deleting each, and fails the test if they do not within [`LIMIT`].
    pub fn take(&self, url: &str, count: usize) -> Vec<Value> {
        let start = Instant::now();
        let mut messages = Vec::new();
        while messages.len() < count {
            assert!(
                start.elapsed() < LIMIT,
                "{} of {count} messages arrived in {url} within {LIMIT:?}: {messages:#?}",
                messages.len()
            );
            messages.extend(self.receive(url));
        }
        assert_eq!(messages.len(), count, "more messages than expected");
        messages
    }

    /// Waits until the queue at `url` holds no message, visible or in flight: every
    /// message in it was deleted.
    pub fn wait_until_drained(&self, url: &str) {
        let start = Instant::now();
        loop {
            let attributes = self.call(
                "GetQueueAttributes",
                json!({"QueueUrl": url, "AttributeNames": ["All"]}),
            )["Attributes"]
                .clone();
            let count = |name: &str| -> u64 {
                attributes[name]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .expect("a message count")
            };
            if count("ApproximateNumberOfMessages") + count("ApproximateNumberOfMessagesNotVisible")
                == 0
            {
                return;
            }
            assert!(
                start.elapsed() < LIMIT,
                "{url} still holds messages after {LIMIT:?}: {attributes}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URLs of the queues whose names start with `prefix`.
    pub fn queues(&self, prefix: &str) -> Vec<String> {
        let listed = self.call("ListQueues", json!({"QueueNamePrefix": prefix}));
        listed["QueueUrls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| u.as_str().expect("a URL").to_string())
            .collect()
    }
}

impl Moto {
    /// Kills the server and waits until it has exited (every connection drops).
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
