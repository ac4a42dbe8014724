//! HTTP / CloudEvents: the http backend sends each message as a binary-mode CloudEvent POST
//! to `http://127.0.0.1:PORT/{topic}`, where an endpoint of the case's own (a minimal
//! HTTP/1.1 server) plays the other side; a receiving app runs under `wasmtime serve` (the
//! http trigger, chosen by `compose` for this backend) on a free port, and publishing is a
//! CloudEvent POST to `/TOPIC` on it.
//!
//! The endpoint records what comes to a topic it listens to (204), answers requests to a
//! topic it responds on (200 with the reply, or never, for a silent responder) and answers
//! 404 for any other topic. Stopped, it closes every connection without an answer: an
//! outage. Credentials live in the broker URL, not in the environment, so the
//! wrong-credentials case is left to `tests/http.rs` (a 403 from the endpoint is
//! `permission-denied`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::free_port;
use msgplug::adapters::Mode;

use crate::{Backend, Broker, Credentials, Input, Msg, LIMIT};

/// The http backend.
pub struct Http;

impl Backend for Http {
    fn adapter(&self) -> &'static str {
        "backend-http"
    }

    fn start(&self, _mode: &Mode) -> Box<dyn Broker> {
        Box::new(Endpoint::start())
    }
}

/// CloudEvents attributes the sides set themselves; the rest (`ce-KEY`) is the metadata.
const OWN_ATTRIBUTES: &[&str] = &["specversion", "id", "type", "source"];

/// The path that ends the endpoint's thread.
const STOP: &str = "/.stop";

/// What the endpoint knows, shared with its thread.
#[derive(Default)]
struct State {
    /// Stopped: every connection is closed without an answer, as a server that goes away
    /// does to its clients.
    down: bool,
    listening: HashSet<String>,
    responders: HashMap<String, usize>,
    received: HashMap<String, VecDeque<Msg>>,
}

/// A minimal HTTP/1.1 endpoint on a loopback port: one request per connection (it answers
/// with `connection: close`), so that stopping it can drop every connection it holds.
struct Endpoint {
    port: u16,
    thread: Option<JoinHandle<()>>,
    state: Arc<(Mutex<State>, Condvar)>,
    /// The port of the served (receiving) app.
    served: Option<u16>,
    agent: ureq::Agent,
    /// The `ce-id` of the last event published.
    last_id: u64,
}

/// One request: its path, and the message its CloudEvent headers and body make.
fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, Msg)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (mut length, mut chunked) = (0, false);
    let mut message = Msg::default();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_string());
        match name.as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-type" => message.content_type = Some(value),
            _ => {
                if let Some(key) = name.strip_prefix("ce-") {
                    if !OWN_ATTRIBUTES.contains(&key) {
                        message.metadata.insert(key.to_string(), value);
                    }
                }
            }
        }
    }
    if !chunked {
        message.data.resize(length, 0);
        reader.read_exact(&mut message.data)?;
        return Ok((path, message));
    }
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok((path, message));
        }
        message.data.extend_from_slice(&chunk[..size]);
    }
}

/// Answers with `status` and a text `body`; the connection closes when `stream` drops.
fn answer(mut stream: TcpStream, status: u16, body: &str) {
    let head = format!(
        "HTTP/1.1 {status} -\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all((head + body).as_bytes());
}

fn serve(listener: TcpListener, state: &(Mutex<State>, Condvar)) {
    // Requests a silent responder never answers, held until the endpoint is dropped.
    let mut held = Vec::new();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Ok((path, message)) = read_request(&mut stream) else {
            continue;
        };
        if path == STOP {
            return;
        }
        let topic = path.trim_start_matches('/').to_string();
        let (lock, changed) = state;
        let mut state = lock.lock().expect("state lock");
        if state.down {
            let _ = stream.shutdown(Shutdown::Both);
        } else if let Some(&replies) = state.responders.get(&topic) {
            match replies {
                0 => held.push(stream),
                n => answer(stream, 200, &format!("hi, {} (1/{n})", message.text())),
            }
        } else if state.listening.contains(&topic) {
            state.received.entry(topic).or_default().push_back(message);
            changed.notify_all();
            answer(stream, 204, "");
        } else {
            answer(stream, 404, &format!("nobody listens on `{topic}`"));
        }
    }
}

impl Endpoint {
    fn start() -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an endpoint");
        let port = listener.local_addr().expect("a local address").port();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let thread = {
            let state = state.clone();
            std::thread::spawn(move || serve(listener, &state))
        };
        Endpoint {
            port,
            thread: Some(thread),
            state,
            served: None,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(LIMIT))
                .build()
                .into(),
            last_id: 0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().expect("state lock")
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let request = format!("POST {STOP} HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        let stopped = TcpStream::connect(("127.0.0.1", self.port))
            .and_then(|mut stream| stream.write_all(request.as_bytes()));
        if let (Ok(()), Some(thread)) = (stopped, self.thread.take()) {
            let _ = thread.join();
        }
    }
}

impl Broker for Endpoint {
    fn compose_args(&mut self, _input: Option<Input>) -> Vec<String> {
        // A receiving app takes its topic from the request path: nothing to say here.
        let broker = format!("http://127.0.0.1:{}/{{topic}}", self.port);
        vec!["--broker".into(), broker]
    }

    fn wasmtime_args(&mut self, receiving: bool) -> Vec<String> {
        if !receiving {
            return vec!["run".into(), "-S".into(), "http".into()];
        }
        let port = free_port();
        self.served = Some(port);
        vec![
            "serve".into(),
            "-S".into(),
            "cli".into(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
        ]
    }

    fn run_env(&self, _: Credentials) -> Vec<(String, String)> {
        Vec::new()
    }

    fn ready_line(&self) -> Option<&'static str> {
        Some("Serving HTTP on")
    }

    fn listen(&mut self, topic: &str) {
        self.state().listening.insert(topic.to_string());
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        let port = self.served.expect("a served app to publish to");
        self.last_id += 1;
        let mut request = self
            .agent
            .post(format!("http://127.0.0.1:{port}/{topic}"))
            .header("ce-specversion", "1.0")
            .header("ce-id", self.last_id.to_string())
            .header("ce-source", "conformance")
            .header("ce-type", topic);
        if let Some(content_type) = &message.content_type {
            request = request.header("content-type", content_type);
        }
        for (key, value) in &message.metadata {
            request = request.header(format!("ce-{key}"), value);
        }
        // The status is the handler's outcome (204, or 500 when it failed): not checked here.
        request
            .send(&message.data[..])
            .unwrap_or_else(|e| panic!("POST to the served app: {e}"));
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        let deadline = Instant::now() + limit;
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().expect("state lock");
        loop {
            if let Some(message) = state.received.get_mut(topic).and_then(VecDeque::pop_front) {
                return Some(message);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = changed.wait_timeout(state, left).expect("state lock").0;
        }
    }

    fn respond(&mut self, topic: &str, replies: usize) {
        self.state().responders.insert(topic.to_string(), replies);
    }

    fn can_stop(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn stop(&mut self) {
        self.state().down = true;
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        Err("an http endpoint stores nothing: there is no broker to restart")
    }

    fn restart(&mut self) {
        unreachable!("can_restart says no")
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Err("credentials go in the broker URL, not the environment; tests/http.rs checks that a 403 is `permission-denied`")
    }
}
