//! A protocol fake of Azure Service Bus's REST messaging API, for the `servicebus` backend's
//! end-to-end tests: **tested against a protocol fake, not the service** (no Service Bus
//! emulator can be installed here).
//!
//! Written from the published REST reference ("Send Message", "Peek-Lock Message
//! (Non-Destructive Read)", "Delete Message", "Unlock Message", "Message headers and
//! properties", and the SAS token format), not from the backend's code:
//!
//! * Every request must carry `Authorization: SharedAccessSignature sr=..&sig=..&se=..&skn=..`.
//!   The fake recomputes the signature, `base64(HMAC-SHA256(key, <sr as sent> + "\n" + se))`,
//!   with the one key it knows, and answers 401 when `skn` is not its key name, the token
//!   expired, the signature differs, or the request URI is neither `sr` nor below it.
//! * `POST /{queue|topic}/messages` (send): `BrokerProperties`, when present, must be a JSON
//!   object (else 400); `Content-Type` is the message's content type; every other non-HTTP
//!   header is a custom property, kept as sent. A topic copies the message to each of its
//!   subscriptions. 201; 410 for an unknown entity.
//! * `POST /{queue|topic/subscriptions/sub}/messages/head?timeout=N` (peek-lock): waits up to
//!   N seconds (at most [`MAX_WAIT`]) for a message that is not locked, locks it, increments
//!   its `DeliveryCount` and answers 201 with the body, `Content-Type`, a `Location` lock URI
//!   `/{path}/messages/{sequence}/{lock token}`, `BrokerProperties` (the sent ones plus
//!   `MessageId`, `DeliveryCount`, `LockToken`, `SequenceNumber`) and each custom property
//!   as a header holding a JSON value (strings quoted, as the reference's example shows);
//!   204 when none came.
//! * `DELETE` on a lock URI completes the message (200); `PUT` unlocks it (200); 404 when
//!   no message holds that lock. A message unlocked after its [`MAX_DELIVERY_COUNT`]th
//!   delivery is dead-lettered, as the service does with its default MaxDeliveryCount.
//!
//! The test can make the next requests fail with a status of its choice ([`FakeServiceBus::fail_next`]).
//!
//! Not modelled: lock expiry (locks last until settled), sessions, scheduled messages,
//! batches, `LockedUntilUtc` / `EnqueuedTimeUtc`, the management API. Entities are made by
//! the test ([`FakeServiceBus::create_queue`], [`FakeServiceBus::create_topic`]), which can
//! also put messages in and look at what arrived, was completed or was dead-lettered.

#![allow(dead_code)] // each test uses a different subset

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// The longest a peek-lock is held open.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Deliveries after which an unlocked message is dead-lettered (the service's default).
pub const MAX_DELIVERY_COUNT: u32 = 10;
/// How long [`FakeServiceBus::wait_while`] waits before it fails the test.
pub const WAIT_LIMIT: Duration = Duration::from_secs(90);
/// How often [`FakeServiceBus::wait_while`] checks that its condition still holds.
pub const LIVENESS_CHECK: Duration = Duration::from_millis(100);

/// Request headers that are HTTP or protocol headers, never custom properties.
const NOT_CUSTOM: &[&str] = &[
    "accept",
    "accept-encoding",
    "authorization",
    "brokerproperties",
    "connection",
    "content-length",
    "content-type",
    "expect",
    "host",
    "te",
    "transfer-encoding",
    "user-agent",
];

/// A message held by the fake.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its sequence number, unique in the fake.
    pub sequence: u64,
    /// The payload.
    pub body: Vec<u8>,
    /// The `Content-Type` it was sent with.
    pub content_type: Option<String>,
    /// The `BrokerProperties` it was sent with (a `MessageId` is added if it had none).
    pub properties: Map<String, Value>,
    /// Custom properties: header names (lower case) and values, as sent.
    pub custom: Vec<(String, String)>,
    /// How many times it was delivered.
    pub delivery_count: u32,
    /// The token of the lock held on it, if any.
    pub lock: Option<String>,
}

impl Stored {
    /// The raw value of custom property `name` as it was sent.
    pub fn custom(&self, name: &str) -> Option<&str> {
        self.custom
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A broker property as a string (`MessageId`, `CorrelationId`, ...).
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(Value::as_str)
    }

    /// The payload as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A queue, or a topic's subscription: where messages wait.
#[derive(Debug, Default, Clone)]
pub struct Queue {
    /// Messages not yet completed, in order.
    pub messages: Vec<Stored>,
    /// Messages completed (deleted with their lock), in order.
    pub completed: Vec<Stored>,
    /// Messages dead-lettered after too many deliveries.
    pub dead_letter: Vec<Stored>,
}

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The status answered.
    pub status: u16,
}

/// Everything the fake holds.
#[derive(Debug, Default)]
pub struct State {
    /// Queues and subscriptions (`TOPIC/subscriptions/SUB`) by path.
    pub queues: BTreeMap<String, Queue>,
    /// Topics and their subscription paths.
    pub topics: BTreeMap<String, Vec<String>>,
    /// Every request answered, in order.
    pub log: Vec<Exchange>,
    /// The last sequence number given out.
    last_sequence: u64,
    /// How many of the next requests get [`State::failure_status`] whatever they are.
    failures_left: u32,
    /// What those failing requests are answered with.
    failure_status: u16,
    /// Set when the fake shuts down: pending long polls end.
    closed: bool,
}

impl State {
    /// The queue or subscription at `path`; panics (failing the test) if there is none.
    pub fn queue(&self, path: &str) -> &Queue {
        self.queues
            .get(path)
            .unwrap_or_else(|| panic!("the fake has no queue `{path}`"))
    }

    /// How many requests with `method` on a path starting with `prefix` got `status`.
    pub fn count(&self, method: &str, prefix: &str, status: u16) -> usize {
        self.log
            .iter()
            .filter(|e| e.method == method && e.path.starts_with(prefix) && e.status == status)
            .count()
    }

    /// Stores a new message in `entity` (copies for each subscription of a topic).
    fn store(&mut self, entity: &str, mut message: Stored) -> bool {
        self.last_sequence += 1;
        message.sequence = self.last_sequence;
        message
            .properties
            .entry("MessageId")
            .or_insert_with(|| Value::String(format!("fake-{}", message.sequence)));
        if let Some(subscriptions) = self.topics.get(entity) {
            for path in subscriptions.clone() {
                let queue = self.queues.get_mut(&path).expect("subscriptions exist");
                queue.messages.push(message.clone());
            }
            return true;
        }
        match self.queues.get_mut(entity) {
            Some(queue) => {
                queue.messages.push(message);
                true
            }
            None => false,
        }
    }
}

/// The fake's state, shared with the request threads.
struct Shared {
    /// The state.
    state: Mutex<State>,
    /// Notified on every change.
    changed: Condvar,
    /// The SAS policy name it accepts.
    key_name: String,
    /// The SAS key it checks signatures with.
    key: String,
}

impl Shared {
    /// Locks the state; a test that panicked while holding it leaves it usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake Service Bus namespace, serving plain HTTP on 127.0.0.1 until dropped.
pub struct FakeServiceBus {
    /// `127.0.0.1:PORT`.
    pub authority: String,
    /// The state and credentials.
    shared: Arc<Shared>,
    /// The server, to unblock on drop.
    server: Arc<tiny_http::Server>,
    /// The accepting thread.
    acceptor: Option<JoinHandle<()>>,
}

impl FakeServiceBus {
    /// The SAS policy name the fake accepts.
    pub const KEY_NAME: &'static str = "RootManageSharedAccessKey";
    /// The SAS key the fake accepts.
    pub const KEY: &'static str = "c2VjcmV0LWtleS1mb3ItdGhlLWZha2U+/=";

    /// Starts a fake on a free port.
    pub fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the fake"));
        let authority = server
            .server_addr()
            .to_ip()
            .expect("an IP listener")
            .to_string();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            key_name: Self::KEY_NAME.into(),
            key: Self::KEY.into(),
        });
        let acceptor = {
            let (server, shared) = (server.clone(), shared.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let shared = shared.clone();
                    std::thread::spawn(move || handle(&shared, request));
                }
            })
        };
        Self {
            authority,
            shared,
            server,
            acceptor: Some(acceptor),
        }
    }

    /// A connection string for the fake with the SAS key `key` (and the emulator flag,
    /// so the backend speaks plain HTTP), plus `extra` (`;EntityPath=orders`).
    pub fn connection_string_with_key(&self, key: &str, extra: &str) -> String {
        format!(
            "Endpoint=sb://{};SharedAccessKeyName={};SharedAccessKey={key};PlainHttpForTests=true{extra}",
            self.authority,
            Self::KEY_NAME
        )
    }

    /// A connection string for the fake with its key.
    pub fn connection_string(&self) -> String {
        self.connection_string_with_key(Self::KEY, "")
    }

    /// Makes queue `name`.
    pub fn create_queue(&self, name: &str) {
        self.lock().queues.insert(name.into(), Queue::default());
    }

    /// Makes topic `name` with the given subscriptions.
    pub fn create_topic(&self, name: &str, subscriptions: &[&str]) {
        let mut state = self.lock();
        let paths: Vec<String> = subscriptions
            .iter()
            .map(|s| format!("{name}/subscriptions/{s}"))
            .collect();
        for path in &paths {
            state.queues.insert(path.clone(), Queue::default());
        }
        state.topics.insert(name.into(), paths);
    }

    /// Puts a message in `entity` as another sender would: custom properties are sent as
    /// JSON strings, `properties` as `BrokerProperties`.
    pub fn put(
        &self,
        entity: &str,
        body: &[u8],
        content_type: Option<&str>,
        custom: &[(&str, &str)],
        properties: Value,
    ) {
        let message = Stored {
            sequence: 0,
            body: body.to_vec(),
            content_type: content_type.map(String::from),
            properties: properties.as_object().cloned().unwrap_or_default(),
            custom: custom
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), Value::from(*v).to_string()))
                .collect(),
            delivery_count: 0,
            lock: None,
        };
        let mut state = self.lock();
        assert!(
            state.store(entity, message),
            "the fake has no entity `{entity}`"
        );
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Puts a message with only a body (no content type, no properties) in `entity`.
    pub fn put_body(&self, entity: &str, body: &[u8]) {
        self.put(entity, body, None, &[], Value::Null);
    }

    /// Answers the next `count` requests, whatever they are, with `status` (a busy or
    /// failing service).
    pub fn fail_next(&self, count: u32, status: u16) {
        let mut state = self.lock();
        state.failures_left = count;
        state.failure_status = status;
    }

    /// Waits until `probe` finds something in the state, checking at least every
    /// [`LIVENESS_CHECK`] that `alive` still holds (a consumer process is still running).
    /// The error says what went wrong and shows the request log.
    pub fn wait_while<T>(
        &self,
        what: &str,
        mut alive: impl FnMut() -> Result<(), String>,
        mut probe: impl FnMut(&State) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut state = self.lock();
        loop {
            if let Some(found) = probe(&state) {
                return Ok(found);
            }
            if let Err(why) = alive() {
                return Err(format!(
                    "{why} while waiting for {what}; requests: {:#?}",
                    state.log
                ));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(format!(
                    "timed out after {WAIT_LIMIT:?} waiting for {what}; requests: {:#?}",
                    state.log
                ));
            };
            state = self
                .shared
                .changed
                .wait_timeout(state, left.min(LIVENESS_CHECK))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Runs `look` on the state as it is now.
    pub fn inspect<T>(&self, look: impl FnOnce(&State) -> T) -> T {
        look(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Drop for FakeServiceBus {
    fn drop(&mut self) {
        self.lock().closed = true;
        self.shared.changed.notify_all();
        self.server.unblock();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// An answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// Answers `status` with a text body and no headers.
fn plain(status: u16, text: &str) -> Answer {
    (status, Vec::new(), text.as_bytes().to_vec())
}

/// Answers 410 for a queue or subscription the fake does not have.
fn no_such_queue(path: &str) -> Answer {
    plain(
        410,
        &format!("Specified queue or subscription `{path}` does not exist."),
    )
}

/// Serves one request (on its own thread: a peek-lock may wait).
fn handle(shared: &Shared, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let path = path.to_string();
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_string())
    };
    let host = header("Host").unwrap_or_default();
    let authorization = header("Authorization");
    let mut body = Vec::new();
    let failure = {
        let mut state = shared.lock();
        (state.failures_left > 0).then(|| {
            state.failures_left -= 1;
            state.failure_status
        })
    };
    let answer = if let Err(e) = std::io::Read::read_to_end(request.as_reader(), &mut body) {
        plain(400, &format!("unreadable body: {e}"))
    } else if let Some(status) = failure {
        plain(status, "the fake was told to fail")
    } else if let Err(why) = check_sas(shared, authorization.as_deref(), &host, &path) {
        plain(401, &why)
    } else {
        route(shared, &method, &path, query, &request, body)
    };
    let (status, headers, body) = answer;
    {
        let mut state = shared.lock();
        state.log.push(Exchange {
            method,
            path,
            status,
        });
    }
    shared.changed.notify_all();
    let mut response = tiny_http::Response::from_data(body).with_status_code(status);
    for (name, value) in headers {
        response.add_header(
            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header"),
        );
    }
    let _ = request.respond(response);
}

/// Dispatches an authorized request.
fn route(
    shared: &Shared,
    method: &str,
    path: &str,
    query: &str,
    request: &tiny_http::Request,
    body: Vec<u8>,
) -> Answer {
    let trimmed = path.trim_start_matches('/');
    if method == "POST" {
        if let Some(entity) = trimmed.strip_suffix("/messages/head") {
            let timeout = query
                .split('&')
                .find_map(|p| p.strip_prefix("timeout="))
                .and_then(|t| t.parse().ok())
                .unwrap_or(60);
            return peek_lock(shared, entity, Duration::from_secs(timeout).min(MAX_WAIT));
        }
        if let Some(entity) = trimmed.strip_suffix("/messages") {
            return send(shared, entity, request, body);
        }
    }
    if method == "DELETE" || method == "PUT" {
        if let Some((entity, rest)) = trimmed.rsplit_once("/messages/") {
            if let Some((id, token)) = rest.split_once('/') {
                return settle(shared, entity, id, token, method == "DELETE");
            }
        }
    }
    plain(400, &format!("the fake does not know `{method} {path}`"))
}

/// Send Message.
fn send(shared: &Shared, entity: &str, request: &tiny_http::Request, body: Vec<u8>) -> Answer {
    let mut properties = Map::new();
    let mut content_type = None;
    let mut custom = Vec::new();
    for h in request.headers() {
        let name = h.field.as_str().as_str().to_ascii_lowercase();
        let value = h.value.as_str().to_string();
        match name.as_str() {
            "brokerproperties" => match serde_json::from_str::<Value>(&value) {
                Ok(Value::Object(map)) => properties = map,
                _ => {
                    return plain(
                        400,
                        &format!("BrokerProperties is not a JSON object: {value}"),
                    )
                }
            },
            "content-type" => content_type = Some(value),
            n if NOT_CUSTOM.contains(&n) => {}
            _ => custom.push((name, value)),
        }
    }
    let message = Stored {
        sequence: 0,
        body,
        content_type,
        properties,
        custom,
        delivery_count: 0,
        lock: None,
    };
    let mut state = shared.lock();
    if state.store(entity, message) {
        plain(201, "")
    } else {
        plain(
            410,
            &format!("Specified queue or topic `{entity}` does not exist."),
        )
    }
}

/// Peek-Lock Message: waits up to `wait` for an unlocked message.
fn peek_lock(shared: &Shared, path: &str, wait: Duration) -> Answer {
    let deadline = Instant::now() + wait;
    let mut state = shared.lock();
    loop {
        if state.topics.contains_key(path) {
            return plain(
                400,
                "cannot receive from a topic; receive from one of its subscriptions",
            );
        }
        let Some(queue) = state.queues.get_mut(path) else {
            return no_such_queue(path);
        };
        if let Some(message) = queue.messages.iter_mut().find(|m| m.lock.is_none()) {
            message.delivery_count += 1;
            let token = format!("lock-{}-{}", message.sequence, message.delivery_count);
            message.lock = Some(token.clone());
            let mut properties = message.properties.clone();
            properties.insert("DeliveryCount".into(), message.delivery_count.into());
            properties.insert("LockToken".into(), token.clone().into());
            properties.insert("SequenceNumber".into(), message.sequence.into());
            let mut headers = vec![
                (
                    "Location".to_string(),
                    format!("/{path}/messages/{}/{token}", message.sequence),
                ),
                (
                    "BrokerProperties".to_string(),
                    Value::Object(properties).to_string(),
                ),
            ];
            if let Some(content_type) = &message.content_type {
                headers.push(("Content-Type".into(), content_type.clone()));
            }
            for (name, value) in &message.custom {
                let json = match serde_json::from_str::<Value>(value) {
                    Ok(_) => value.clone(),
                    Err(_) => Value::from(value.as_str()).to_string(),
                };
                headers.push((name.clone(), json));
            }
            return (201, headers, message.body.clone());
        }
        let left = deadline.checked_duration_since(Instant::now());
        match left {
            Some(left) if !state.closed && !left.is_zero() => {
                state = shared
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            _ => return plain(204, ""),
        }
    }
}

/// Delete Message (`complete`) or Unlock Message.
fn settle(shared: &Shared, path: &str, id: &str, token: &str, complete: bool) -> Answer {
    let mut state = shared.lock();
    let Some(queue) = state.queues.get_mut(path) else {
        return no_such_queue(path);
    };
    let Some(at) = queue.messages.iter().position(|m| {
        m.lock.as_deref() == Some(token)
            && (m.sequence.to_string() == id || m.property("MessageId") == Some(id))
    }) else {
        return plain(
            404,
            "No message was found with the specified MessageId or LockToken.",
        );
    };
    if complete {
        let mut message = queue.messages.remove(at);
        message.lock = None;
        queue.completed.push(message);
    } else if queue.messages[at].delivery_count >= MAX_DELIVERY_COUNT {
        let mut message = queue.messages.remove(at);
        message.lock = None;
        queue.dead_letter.push(message);
    } else {
        queue.messages[at].lock = None;
    }
    plain(200, "")
}

/// Checks a SAS `Authorization` header for a request to `http://{host}{path}`.
fn check_sas(shared: &Shared, header: Option<&str>, host: &str, path: &str) -> Result<(), String> {
    let token = header
        .ok_or("no Authorization header")?
        .strip_prefix("SharedAccessSignature ")
        .ok_or("Authorization is not a SharedAccessSignature")?;
    let field = |name: &str| {
        token
            .split('&')
            .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
            .ok_or(format!("the token has no `{name}`"))
    };
    let (sr, sig, se, skn) = (field("sr")?, field("sig")?, field("se")?, field("skn")?);
    if percent_decode(skn)? != shared.key_name {
        return Err(format!("unknown SAS policy `{skn}`"));
    }
    let expiry: u64 = se.parse().map_err(|_| format!("bad expiry `{se}`"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    if expiry <= now {
        return Err(format!("the token expired at {expiry} (now {now})"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(shared.key.as_bytes()).expect("any key length");
    mac.update(format!("{sr}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if percent_decode(sig)? != expected {
        return Err("the signature does not match".into());
    }
    let resource = percent_decode(sr)?.to_ascii_lowercase();
    let resource = resource.trim_end_matches('/');
    let target = format!("http://{host}{path}").to_ascii_lowercase();
    if target != resource && !target.starts_with(&format!("{resource}/")) {
        return Err(format!("the token is for `{resource}`, not for `{target}`"));
    }
    Ok(())
}

/// Decodes `%XX` escapes.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(format!("bad escape in `{text}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` is not UTF-8"))
}
