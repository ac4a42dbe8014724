//! A protocol fake of Azure Service Bus's REST messaging API, for the `servicebus` backend's
//! end-to-end tests: **tested against a protocol fake, not the service** (no Service Bus
//! emulator serves the REST protocol: Microsoft's speaks AMQP only).
//!
//! Written from the published REST reference ("Send Message", "Peek-Lock Message
//! (Non-Destructive Read)", "Delete Message", "Unlock Message", "Renew-Lock for a Message",
//! "Message headers and properties", and the SAS token format) and from how Microsoft's REST
//! SDK formats custom properties, not from the backend's code:
//!
//! * It speaks HTTP/1.1 itself (one request per connection), on plain TCP and, with
//!   [`FakeServiceBus::start_tls`], also over TLS with the test certificate in
//!   `tests/fakes/tls/` (CA `ca.pem`, server certificate for 127.0.0.1). Header names are
//!   kept as they arrive and values as UTF-8.
//! * Every request must carry `Authorization: SharedAccessSignature sr=..&sig=..&se=..&skn=..`.
//!   The fake recomputes the signature, `base64(HMAC-SHA256(key, <sr as sent> + "\n" + se))`,
//!   with the one key it knows, and answers 401 when `skn` is not its key name, the token
//!   expired, the signature differs, or the request URI is neither `sr` nor below it.
//! * `POST`, `PUT` and `DELETE` without `Content-Length` (and not chunked) get 411 Length
//!   Required, as the service answers a body-less request with no length.
//! * `POST /{queue|topic}/messages` (send): `BrokerProperties`, when present, must be a JSON
//!   object (else 400); `Content-Type` is the message's content type; every other non-HTTP
//!   header is a custom property whose value must be formatted as the service reads it (a
//!   string in double quotes, nothing escaped; a number; `true`/`false`), else 400. A send
//!   to `TOPIC/subscriptions/SUB/messages` is refused (400). A topic copies the message to
//!   each of its subscriptions. 201; 410 for an unknown entity. The test can make sends
//!   slow ([`FakeServiceBus::delay_sends`]) or busy ([`FakeServiceBus::fail_sends`]: 429 or
//!   503 with `Retry-After`).
//! * `POST /{queue|topic/subscriptions/sub}/messages/head?timeout=N` (peek-lock): waits up to
//!   N seconds (at most [`MAX_WAIT`]) for a message that is not locked, locks it for the
//!   entity's LockDuration ([`FakeServiceBus::set_lock_duration`], 60 s by default),
//!   increments its `DeliveryCount` and answers 201 with the body, `Content-Type` (the
//!   service's default `application/atom+xml;type=entry;charset=utf-8` when the sender set
//!   none), an absolute `Location` lock URI `http(s)://HOST/{path}/messages/{sequence}/{lock
//!   token}`, `BrokerProperties` (the sent ones plus `MessageId`, `DeliveryCount`,
//!   `LockToken`, `LockedUntilUtc`, `SequenceNumber`) and each custom property as a header
//!   holding the value as it was sent; 204 when none came.
//! * A lock expires after the LockDuration: the message is available again (its
//!   `DeliveryCount` rises with the next delivery; after [`MAX_DELIVERY_COUNT`] deliveries
//!   it is dead-lettered), and the lock's token is lost.
//! * `DELETE` on a lock URI completes the message (200); `PUT` unlocks it (200); `POST`
//!   renews the lock for another LockDuration (200). A lost (expired) lock gets 410, a lock
//!   the fake never gave out 404. A message unlocked after its [`MAX_DELIVERY_COUNT`]th
//!   delivery is dead-lettered, as the service does with its default MaxDeliveryCount.
//!
//! The test can make the next requests fail with a status of its choice ([`FakeServiceBus::fail_next`]).
//!
//! Not modelled: sessions, scheduled messages, batches, `EnqueuedTimeUtc`, the management
//! API, and anything the reference does not document (how the live service treats
//! non-ASCII header bytes or an unquoted text value is the fake's assumption). Entities are
//! made by the test ([`FakeServiceBus::create_queue`], [`FakeServiceBus::create_topic`]),
//! which can also put messages in and look at what arrived, was completed or was
//! dead-lettered.

#![allow(dead_code)] // each test uses a different subset

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
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
/// The service's default LockDuration.
pub const DEFAULT_LOCK_DURATION: Duration = Duration::from_secs(60);
/// The content type the service reports for a message sent without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/atom+xml;type=entry;charset=utf-8";
/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Custom properties: header names as they arrived and values as sent.
    pub custom: Vec<(String, String)>,
    /// How many times it was delivered.
    pub delivery_count: u32,
    /// The token of the lock held on it, if any.
    pub lock: Option<String>,
    /// When that lock expires.
    pub locked_until: Option<SystemTime>,
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
    /// The request's `Content-Length`, if it had one.
    pub content_length: Option<String>,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// Everything the fake holds.
#[derive(Debug)]
pub struct State {
    /// Queues and subscriptions (`TOPIC/subscriptions/SUB`) by path.
    pub queues: BTreeMap<String, Queue>,
    /// Topics and their subscription paths.
    pub topics: BTreeMap<String, Vec<String>>,
    /// Every request answered, in order.
    pub log: Vec<Exchange>,
    /// The tokens of locks that expired.
    pub lost_locks: Vec<String>,
    /// What each TLS connection's handshake came to: `Ok(())`, or the error.
    pub handshakes: Vec<Result<(), String>>,
    /// How long a lock lasts.
    lock_duration: Duration,
    /// How long each send takes to answer.
    send_delay: Duration,
    /// The last sequence number given out.
    last_sequence: u64,
    /// How many of the next requests get [`State::failure_status`] whatever they are.
    failures_left: u32,
    /// What those failing requests are answered with.
    failure_status: u16,
    /// How many of the next sends are refused as busy, with what status and `Retry-After`.
    busy_sends: Vec<(u16, Option<u64>)>,
    /// Set when the fake shuts down: pending long polls end.
    closed: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            queues: BTreeMap::new(),
            topics: BTreeMap::new(),
            log: Vec::new(),
            lost_locks: Vec::new(),
            handshakes: Vec::new(),
            lock_duration: DEFAULT_LOCK_DURATION,
            send_delay: Duration::ZERO,
            last_sequence: 0,
            failures_left: 0,
            failure_status: 0,
            busy_sends: Vec::new(),
            closed: false,
        }
    }
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

    /// Ends the locks in `path` that expired by `now`: their messages are available again
    /// (or dead-lettered after [`MAX_DELIVERY_COUNT`] deliveries) and their tokens lost.
    /// Returns when the next lock there expires.
    fn expire_locks(&mut self, path: &str, now: SystemTime) -> Option<SystemTime> {
        let queue = self.queues.get_mut(path)?;
        let mut next = None;
        let mut index = 0;
        while index < queue.messages.len() {
            let message = &mut queue.messages[index];
            match message.locked_until {
                Some(until) if until <= now => {
                    self.lost_locks.extend(message.lock.take());
                    message.locked_until = None;
                    if message.delivery_count >= MAX_DELIVERY_COUNT {
                        let message = queue.messages.remove(index);
                        queue.dead_letter.push(message);
                        continue;
                    }
                }
                Some(until) => next = Some(next.map_or(until, |n: SystemTime| n.min(until))),
                None => {}
            }
            index += 1;
        }
        next
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
    /// Set when the fake shuts down: the listeners stop accepting.
    stopping: AtomicBool,
}

impl Shared {
    /// Locks the state; a test that panicked while holding it leaves it usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One listening socket of the fake and the thread that accepts on it.
struct Listener {
    /// `127.0.0.1:PORT`.
    authority: String,
    /// The accepting thread.
    acceptor: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on a free port and serves each connection with `serve` on its own thread.
    fn start(
        shared: &Arc<Shared>,
        serve: impl Fn(&Shared, TcpStream) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake");
        let authority = listener.local_addr().expect("a local address").to_string();
        let shared = shared.clone();
        let serve = Arc::new(serve);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (shared, serve) = (shared.clone(), serve.clone());
                std::thread::spawn(move || serve(&shared, stream));
            }
        });
        Self {
            authority,
            acceptor: Some(acceptor),
        }
    }

    /// Stops accepting (a connection wakes the acceptor up) and waits for the thread.
    fn stop(&mut self) {
        let _ = TcpStream::connect(&self.authority);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The fake Service Bus namespace, serving on 127.0.0.1 until dropped.
pub struct FakeServiceBus {
    /// `127.0.0.1:PORT` of the plain HTTP listener.
    pub authority: String,
    /// `127.0.0.1:PORT` of the TLS listener, when started with [`FakeServiceBus::start_tls`].
    pub tls_authority: Option<String>,
    /// The state and credentials.
    shared: Arc<Shared>,
    /// The listeners.
    listeners: Vec<Listener>,
}

impl FakeServiceBus {
    /// The SAS policy name the fake accepts.
    pub const KEY_NAME: &'static str = "RootManageSharedAccessKey";
    /// The SAS key the fake accepts.
    pub const KEY: &'static str = "c2VjcmV0LWtleS1mb3ItdGhlLWZha2U+/=";

    /// Starts a fake on a free port, plain HTTP only.
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            key_name: Self::KEY_NAME.into(),
            key: Self::KEY.into(),
            stopping: AtomicBool::new(false),
        });
        let plain = Listener::start(&shared, |shared, stream| {
            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
            serve_connection(shared, stream, false);
        });
        Self {
            authority: plain.authority.clone(),
            tls_authority: None,
            shared,
            listeners: vec![plain],
        }
    }

    /// Starts a fake that also serves HTTPS with the test certificate of
    /// `tests/fakes/tls/` (issued for 127.0.0.1 by the test CA `ca.pem`). The outcome of
    /// each TLS handshake is recorded in [`State::handshakes`].
    pub fn start_tls() -> Self {
        let mut fake = Self::start();
        let config = Arc::new(tls_config());
        let tls = Listener::start(&fake.shared, move |shared, stream| {
            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
            let connection =
                rustls::ServerConnection::new(config.clone()).expect("a TLS server connection");
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let handshake = tls
                .conn
                .complete_io(&mut tls.sock)
                .map(drop)
                .map_err(|e| e.to_string());
            let ok = handshake.is_ok();
            shared.lock().handshakes.push(handshake);
            shared.changed.notify_all();
            if ok {
                serve_connection(shared, tls, true);
            }
        });
        fake.tls_authority = Some(tls.authority.clone());
        fake.listeners.push(tls);
        fake
    }

    /// The test CA's certificate (PEM), which issued the fake's TLS certificate.
    pub fn ca_pem_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/tls/ca.pem")
    }

    /// A connection string for the fake with the SAS key `key` (and `PlainHttpForTests`,
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

    /// A connection string for the fake's TLS listener (https; no plaintext setting).
    pub fn tls_connection_string(&self, extra: &str) -> String {
        format!(
            "Endpoint=sb://{};SharedAccessKeyName={};SharedAccessKey={}{extra}",
            self.tls_authority
                .as_deref()
                .expect("started with start_tls"),
            Self::KEY_NAME,
            Self::KEY
        )
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

    /// Sets the LockDuration of every entity.
    pub fn set_lock_duration(&self, duration: Duration) {
        self.lock().lock_duration = duration;
    }

    /// Makes every send take `delay` before it is answered (a slow service).
    pub fn delay_sends(&self, delay: Duration) {
        self.lock().send_delay = delay;
    }

    /// Answers the next sends, one for each entry, with its status (429 or 503) and
    /// `Retry-After` seconds, as a busy service does; the send is not stored.
    pub fn fail_sends(&self, answers: &[(u16, Option<u64>)]) {
        self.lock().busy_sends = answers.to_vec();
    }

    /// Puts a message in `entity` as Microsoft's REST SDK would send it: custom properties
    /// are strings, sent quoted, `properties` as `BrokerProperties`.
    pub fn put(
        &self,
        entity: &str,
        body: &[u8],
        content_type: Option<&str>,
        custom: &[(&str, &str)],
        properties: Value,
    ) {
        let quoted: Vec<(&str, String)> = custom
            .iter()
            .map(|(k, v)| (*k, format!("\"{v}\"")))
            .collect();
        let raw: Vec<(&str, &str)> = quoted.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.put_raw(entity, body, content_type, &raw, properties);
    }

    /// Puts a message in `entity` with custom property values exactly as given (`"text"`,
    /// `3`, `true`, a quoted RFC 1123 date): as the service holds them for another sender.
    pub fn put_raw(
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
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            delivery_count: 0,
            lock: None,
            locked_until: None,
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
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        for listener in &mut self.listeners {
            listener.stop();
        }
    }
}

/// The TLS server configuration with the test certificate.
fn tls_config() -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/tls");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("read server.pem")
        .collect::<Result<_, _>>()
        .expect("parse server.pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("read server.key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the test certificate and key match")
}

/// A request as the fake reads it.
struct Incoming {
    /// The method.
    method: String,
    /// The path and query.
    target: String,
    /// Header names as they arrived, values as UTF-8 text.
    headers: Vec<(String, String)>,
    /// The body, or `None` when a `POST`, `PUT` or `DELETE` gave no length.
    body: Option<Vec<u8>>,
}

impl Incoming {
    /// The first value of header `name`, compared case-insensitively.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 request from `reader`; `None` when the connection ends first.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Incoming>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    let request_line = String::from_utf8_lossy(&line).trim_end().to_string();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_until(b'\n', &mut line)?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let mut incoming = Incoming {
        method,
        target,
        headers,
        body: None,
    };
    if let Some(length) = incoming.header("Content-Length") {
        let length: usize = length.parse().unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        incoming.body = Some(body);
    } else if incoming
        .header("Transfer-Encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            line.clear();
            reader.read_until(b'\n', &mut line)?;
            let size = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        incoming.body = Some(body);
    } else if !matches!(incoming.method.as_str(), "POST" | "PUT" | "DELETE") {
        incoming.body = Some(Vec::new());
    }
    Ok(Some(incoming))
}

/// Serves the one request of a connection (plain or TLS) and closes it.
fn serve_connection<S: Read + Write>(shared: &Shared, stream: S, tls: bool) {
    let mut reader = BufReader::new(stream);
    let Ok(Some(request)) = read_request(&mut reader) else {
        return;
    };
    let (status, headers, body) = handle(shared, &request, tls);
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let stream = reader.get_mut();
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}

/// The reason phrase of `status`.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        410 => "Gone",
        411 => "Length Required",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Status",
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

/// Answers one request (on its connection's thread: a peek-lock may wait) and logs it.
fn handle(shared: &Shared, request: &Incoming, tls: bool) -> Answer {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((&request.target, ""));
    let host = request.header("Host").unwrap_or_default();
    let failure = {
        let mut state = shared.lock();
        (state.failures_left > 0).then(|| {
            state.failures_left -= 1;
            state.failure_status
        })
    };
    let scheme = if tls { "https" } else { "http" };
    let answer = if let Some(status) = failure {
        plain(status, "the fake was told to fail")
    } else if request.body.is_none() {
        plain(411, "Length Required: the request has no Content-Length")
    } else if let Err(why) = check_sas(
        shared,
        request.header("Authorization"),
        &format!("{scheme}://{host}{path}"),
    ) {
        plain(401, &why)
    } else {
        route(shared, request, path, query, &format!("{scheme}://{host}"))
    };
    shared.lock().log.push(Exchange {
        method: request.method.clone(),
        path: path.to_string(),
        status: answer.0,
        content_length: request.header("Content-Length").map(String::from),
        tls,
    });
    shared.changed.notify_all();
    answer
}

/// Dispatches an authorized request; `base` is `scheme://host` as the client addressed it.
fn route(shared: &Shared, request: &Incoming, path: &str, query: &str, base: &str) -> Answer {
    let trimmed = path.trim_start_matches('/');
    let method = request.method.as_str();
    if method == "POST" {
        if let Some(entity) = trimmed.strip_suffix("/messages/head") {
            let timeout = query
                .split('&')
                .find_map(|p| p.strip_prefix("timeout="))
                .and_then(|t| t.parse().ok())
                .unwrap_or(60);
            return peek_lock(
                shared,
                entity,
                Duration::from_secs(timeout).min(MAX_WAIT),
                base,
            );
        }
        if let Some(entity) = trimmed.strip_suffix("/messages") {
            return send(shared, entity, request);
        }
    }
    if matches!(method, "DELETE" | "PUT" | "POST") {
        if let Some((entity, rest)) = trimmed.rsplit_once("/messages/") {
            if let Some((id, token)) = rest.split_once('/') {
                return on_lock(shared, entity, id, token, method);
            }
        }
    }
    plain(400, &format!("the fake does not know `{method} {path}`"))
}

/// Whether `value` is a custom property value as the service reads it: a string in double
/// quotes (nothing escaped), a number or a boolean.
fn is_property_value(value: &str) -> bool {
    (value.len() >= 2 && value.starts_with('"') && value.ends_with('"'))
        || value == "true"
        || value == "false"
        || value.parse::<f64>().is_ok()
}

/// Send Message.
fn send(shared: &Shared, entity: &str, request: &Incoming) -> Answer {
    if entity.contains("/subscriptions/") {
        return plain(400, "Cannot send to a subscription; send to its topic.");
    }
    let busy = {
        let mut state = shared.lock();
        (!state.busy_sends.is_empty()).then(|| state.busy_sends.remove(0))
    };
    if let Some((status, retry_after)) = busy {
        let headers = retry_after
            .map(|s| vec![("Retry-After".to_string(), s.to_string())])
            .unwrap_or_default();
        return (status, headers, b"The server is busy.".to_vec());
    }
    let mut properties = Map::new();
    let mut content_type = None;
    let mut custom = Vec::new();
    for (name, value) in &request.headers {
        match name.to_ascii_lowercase().as_str() {
            "brokerproperties" => match serde_json::from_str::<Value>(value) {
                Ok(Value::Object(map)) => properties = map,
                _ => {
                    return plain(
                        400,
                        &format!("BrokerProperties is not a JSON object: {value}"),
                    )
                }
            },
            "content-type" => content_type = Some(value.clone()),
            n if NOT_CUSTOM.contains(&n) => {}
            _ if !is_property_value(value) => {
                return plain(
                    400,
                    &format!("custom property `{name}`: `{value}` is not a quoted string, a number or a boolean"),
                )
            }
            _ => custom.push((name.clone(), value.clone())),
        }
    }
    let delay = shared.lock().send_delay;
    if !delay.is_zero() {
        // A slow service: the answer comes late (the test's choice of latency).
        std::thread::sleep(delay);
    }
    let message = Stored {
        sequence: 0,
        body: request.body.clone().unwrap_or_default(),
        content_type,
        properties,
        custom,
        delivery_count: 0,
        lock: None,
        locked_until: None,
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
fn peek_lock(shared: &Shared, path: &str, wait: Duration, base: &str) -> Answer {
    let deadline = Instant::now() + wait;
    let mut state = shared.lock();
    loop {
        if state.topics.contains_key(path) {
            return plain(
                400,
                "cannot receive from a topic; receive from one of its subscriptions",
            );
        }
        let now = SystemTime::now();
        let next_expiry = state.expire_locks(path, now);
        let lock_duration = state.lock_duration;
        let Some(queue) = state.queues.get_mut(path) else {
            return no_such_queue(path);
        };
        if let Some(message) = queue.messages.iter_mut().find(|m| m.lock.is_none()) {
            message.delivery_count += 1;
            let token = format!("lock-{}-{}", message.sequence, message.delivery_count);
            let until = now + lock_duration;
            message.lock = Some(token.clone());
            message.locked_until = Some(until);
            let mut properties = message.properties.clone();
            properties.insert("DeliveryCount".into(), message.delivery_count.into());
            properties.insert("LockToken".into(), token.clone().into());
            properties.insert("LockedUntilUtc".into(), http_date(until).into());
            properties.insert("SequenceNumber".into(), message.sequence.into());
            let mut headers = vec![
                (
                    "Location".to_string(),
                    format!("{base}/{path}/messages/{}/{token}", message.sequence),
                ),
                (
                    "BrokerProperties".to_string(),
                    Value::Object(properties).to_string(),
                ),
                (
                    "Content-Type".to_string(),
                    message
                        .content_type
                        .clone()
                        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
                ),
            ];
            headers.extend(message.custom.iter().cloned());
            return (201, headers, message.body.clone());
        }
        let left = deadline.checked_duration_since(Instant::now());
        match left {
            Some(left) if !state.closed && !left.is_zero() => {
                let until_expiry = next_expiry
                    .and_then(|at| at.duration_since(now).ok())
                    .unwrap_or(left);
                state = shared
                    .changed
                    .wait_timeout(state, left.min(until_expiry))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            _ => return plain(204, ""),
        }
    }
}

/// Delete Message (`complete`), Unlock Message or Renew-Lock, by `method`.
fn on_lock(shared: &Shared, path: &str, id: &str, token: &str, method: &str) -> Answer {
    let mut state = shared.lock();
    let now = SystemTime::now();
    state.expire_locks(path, now);
    let lost = state.lost_locks.iter().any(|t| t == token);
    let lock_duration = state.lock_duration;
    let Some(queue) = state.queues.get_mut(path) else {
        return no_such_queue(path);
    };
    let Some(at) = queue.messages.iter().position(|m| {
        m.lock.as_deref() == Some(token)
            && (m.sequence.to_string() == id || m.property("MessageId") == Some(id))
    }) else {
        return if lost {
            plain(
                410,
                "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
            )
        } else {
            plain(
                404,
                "No message was found with the specified MessageId or LockToken.",
            )
        };
    };
    match method {
        "DELETE" => {
            let mut message = queue.messages.remove(at);
            message.lock = None;
            message.locked_until = None;
            queue.completed.push(message);
        }
        "POST" => queue.messages[at].locked_until = Some(now + lock_duration),
        _ if queue.messages[at].delivery_count >= MAX_DELIVERY_COUNT => {
            let mut message = queue.messages.remove(at);
            message.lock = None;
            message.locked_until = None;
            queue.dead_letter.push(message);
        }
        _ => {
            queue.messages[at].lock = None;
            queue.messages[at].locked_until = None;
        }
    }
    drop(state);
    shared.changed.notify_all();
    plain(200, "")
}

/// Formats `time` as an RFC 1123 date (`Wed, 02 Jul 2014 01:32:27 GMT`).
pub fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Checks a SAS `Authorization` header for a request to `target` (`scheme://host/path`).
fn check_sas(shared: &Shared, header: Option<&str>, target: &str) -> Result<(), String> {
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
    let target = target.to_ascii_lowercase();
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
