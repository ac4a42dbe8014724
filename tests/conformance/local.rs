//! The `local` backend: the broker is the app's own stdin and stdout (NDJSON, one message
//! a line). The "native client" writes lines to the app's stdin and reads its stdout; a
//! request on stdout is answered on stdin. There is no broker to stop or to give
//! credentials to.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, ChildStdin};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use msgplug::adapters::Mode;

use crate::{Backend, Broker, Credentials, Input, Msg};

/// The `local` backend.
pub struct Local;

impl Backend for Local {
    fn adapter(&self) -> &'static str {
        "backend-local"
    }

    fn start(&self, _mode: &Mode) -> Box<dyn Broker> {
        Box::new(Pipes::default())
    }
}

/// The attached app's stdin and stdout.
#[derive(Default)]
struct Pipes {
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    stdout: Option<Receiver<Value>>,
    /// Requests to answer: topic and number of replies.
    responders: Arc<Mutex<Vec<(String, usize)>>>,
    /// Lines read while looking for another topic.
    pending: Vec<(String, Msg)>,
}

/// One NDJSON line for `message` on `topic`.
fn line(topic: &str, message: &Msg) -> String {
    let mut line = json!({ "topic": topic });
    match std::str::from_utf8(&message.data) {
        Ok(text) => line["data"] = text.into(),
        Err(_) => {
            line["data_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&message.data)
                .into()
        }
    }
    if let Some(content_type) = &message.content_type {
        line["content_type"] = content_type.as_str().into();
    }
    if !message.metadata.is_empty() {
        line["metadata"] = json!(message.metadata);
    }
    line.to_string() + "\n"
}

/// The message an NDJSON line holds.
fn message(line: &Value) -> Msg {
    let data = match (&line["data"], &line["data_base64"]) {
        (Value::String(text), _) => text.as_bytes().to_vec(),
        (_, Value::String(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("data_base64 is base64"),
        _ => panic!("a line without data: {line}"),
    };
    let metadata: BTreeMap<String, String> = line["metadata"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
                .collect()
        })
        .unwrap_or_default();
    Msg {
        data,
        content_type: line["content_type"].as_str().map(str::to_string),
        metadata,
    }
}

fn write(stdin: &Mutex<Option<ChildStdin>>, line: &str) {
    let mut stdin = stdin.lock().expect("stdin lock");
    let stdin = stdin.as_mut().expect("an app is attached");
    stdin
        .write_all(line.as_bytes())
        .expect("write to the app's stdin");
    stdin.flush().expect("flush the app's stdin");
}

impl Broker for Pipes {
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String> {
        match input {
            Some(input) => vec!["--subscribe".into(), input.topic.into()],
            None => Vec::new(),
        }
    }

    fn wasmtime_args(&mut self, _receiving: bool) -> Vec<String> {
        vec!["run".into()]
    }

    fn run_env(&self, _: Credentials) -> Vec<(String, String)> {
        Vec::new()
    }

    fn ready_line(&self) -> Option<&'static str> {
        None
    }

    fn attach(&mut self, app: &mut Child) {
        *self.stdin.lock().expect("stdin lock") = app.stdin.take();
        let stdout = crate::support::lines(app.stdout.take().expect("piped stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdin = self.stdin.clone();
        let responders = self.responders.clone();
        std::thread::spawn(move || {
            for text in stdout {
                let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!("the app wrote a line that is not JSON ({e}): {text}")
                });
                let topic = value["topic"].as_str().expect("a topic").to_string();
                let replies = responders
                    .lock()
                    .expect("responders lock")
                    .iter()
                    .find(|(t, _)| *t == topic)
                    .map(|&(_, n)| n);
                match (replies, value["reply_to"].as_str()) {
                    (Some(n), Some(reply_to)) => {
                        let request = message(&value);
                        for k in 1..=n {
                            let reply = Msg::data(format!("hi, {} ({k}/{n})", request.text()));
                            write(&stdin, &line(reply_to, &reply));
                        }
                    }
                    _ => {
                        if tx.send(value).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        self.stdout = Some(rx);
    }

    fn listen(&mut self, _topic: &str) {}

    fn publish(&mut self, topic: &str, message: &Msg) {
        write(&self.stdin, &line(topic, message));
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        if let Some(at) = self.pending.iter().position(|(t, _)| t == topic) {
            return Some(self.pending.remove(at).1);
        }
        let deadline = Instant::now() + limit;
        let stdout = self.stdout.as_ref().expect("an app is attached");
        loop {
            match stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let message = message(&line);
                    match line["topic"].as_str() {
                        Some(t) if t == topic => return Some(message),
                        other => self
                            .pending
                            .push((other.unwrap_or_default().to_string(), message)),
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn respond(&mut self, topic: &str, replies: usize) {
        self.responders
            .lock()
            .expect("responders lock")
            .push((topic.to_string(), replies));
    }

    fn can_stop(&self) -> Result<(), &'static str> {
        Err("the local backend has no broker: its input is the app's stdin")
    }

    fn stop(&mut self) {
        unreachable!("can_stop says no")
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        self.can_stop()
    }

    fn restart(&mut self) {
        unreachable!("can_stop says no")
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Err("the local backend has no credentials")
    }
}
