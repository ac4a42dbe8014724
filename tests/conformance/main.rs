//! The conformance suite: one set of broker-agnostic cases (`cases.rs`), run for every
//! backend in each of its modes ([`msgplug::adapters::Mode`]: NATS core and JetStream, MQTT
//! clean, durable and 3.1.1, Redis pub/sub, pub/sub with the JSON envelope and Streams)
//! through the small [`Backend`] / [`Broker`] traits, one file per backend (`local.rs`, `nats.rs`, ...). A new backend adds
//! one file and one line in [`BACKENDS`].
//!
//! Every case composes example apps (`examples/`: `relay`, `transform`, `publisher`,
//! `requester`), runs them on the real `wasmtime` CLI and checks them from outside with the
//! backend's native client. Each case asserts exactly what the backend declares for the mode
//! in `src/adapters.rs` ([`msgplug::adapters::Capabilities`]): a declared capability that
//! fails is a failure; an undeclared one must give its documented clear error, not a hang. A
//! case that cannot apply (no broker to restart, a test broker that checks no credentials, a
//! mode that carries no metadata to steer the app with) passes with a `not applicable` note
//! saying why.
//!
//! Trials are named `BACKEND::CASE`, or `BACKEND[MODE]::CASE` for a backend with several
//! modes (`cargo test --test conformance -- backend-nats` runs one backend,
//! `-- 'backend-redis[streams]::'` one mode). Brokers: every case starts a broker of its own where the backend needs one
//! (a `nats-server` on a free port, ...), so cases run in parallel and a failed case leaves
//! nothing behind. Every wait is bounded by [`LIMIT`]; every process is killed when its
//! guard drops.

#[path = "../support/mod.rs"]
mod support;

#[path = "../fakes/servicebus.rs"]
mod fake;

mod amqp;
mod cases;
mod http;
mod kafka;
mod local;
mod mqtt;
mod nats;
mod redis;
mod servicebus;
mod sqs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use msgplug::adapters::{Capabilities, Mode};

/// How long any single wait may take before the case fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Every backend the suite runs.
const BACKENDS: &[&dyn Backend] = &[
    &local::Local,
    &nats::Nats { tls: false },
    &nats::Nats { tls: true },
    &mqtt::Mqtt { tls: false },
    &mqtt::Mqtt { tls: true },
    &redis::Redis { tls: false },
    &redis::Redis { tls: true },
    &amqp::Amqp { tls: false },
    &amqp::Amqp { tls: true },
    &kafka::Kafka { tls: false },
    &kafka::Kafka { tls: true },
    &sqs::Sqs,
    &servicebus::ServiceBus,
    &http::Http,
];

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for &backend in BACKENDS {
        for mode in backend.modes() {
            let target = Target { backend, mode };
            for &(name, case) in cases::ALL {
                trials.push(Trial::test(
                    format!("{}::{name}", target.name()),
                    move || {
                        case(target);
                        Ok(())
                    },
                ));
            }
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Every case has ended: the node the AMQP TLS cases shared goes too.
    amqp::stop_shared_tls_node();
    conclusion.exit();
}

/// A backend under test: the adapter's name and how to start a broker for one case.
pub trait Backend: Sync {
    /// The adapter's name in `src/adapters.rs` (`backend-nats`).
    fn adapter(&self) -> &'static str;

    /// Starts a broker of the case's own (or the stand-in for one) with its native client,
    /// for apps composed in `mode` (one of [`Backend::modes`]).
    fn start(&self, mode: &Mode) -> Box<dyn Broker>;

    /// The modes the adapter declares, the default first.
    fn modes(&self) -> &'static [Mode] {
        let adapter = msgplug::adapters::by_name(self.adapter()).expect("the adapter exists");
        assert!(!adapter.modes.is_empty(), "a backend declares its modes");
        adapter.modes
    }
}

/// What a case runs against: a backend in one of its modes.
#[derive(Clone, Copy)]
pub struct Target {
    /// The backend.
    pub backend: &'static dyn Backend,
    /// The mode, with what it declares.
    pub mode: &'static Mode,
}

impl Target {
    /// `backend-nats[jetstream]`, or just the adapter's name when it has one mode.
    pub fn name(&self) -> String {
        if self.backend.modes().len() > 1 {
            format!("{}[{}]", self.backend.adapter(), self.mode.name)
        } else {
            self.backend.adapter().to_string()
        }
    }

    /// What the mode declares.
    pub fn capabilities(&self) -> Capabilities {
        self.mode.capabilities
    }

    /// Starts a broker for the mode.
    pub fn start(&self) -> Box<dyn Broker> {
        self.backend.start(self.mode)
    }
}

/// Where a receiving app takes its messages from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The topic the native client publishes to.
    pub topic: &'a str,
    /// The queue group, for scale-out.
    pub group: Option<&'a str>,
}

/// Which credentials a composed app runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The broker's own.
    Right,
    /// Wrong ones: the broker must refuse them.
    Wrong,
}

impl Credentials {
    /// The password of a test broker that takes one (`p`), or a wrong one.
    pub fn password(self) -> &'static str {
        match self {
            Credentials::Right => "p",
            Credentials::Wrong => "wrong",
        }
    }
}

/// `wasmtime run -S inherit-network`: how an app of a backend that talks TCP to its broker
/// runs.
pub fn run_with_network() -> Vec<String> {
    ["run", "-S", "inherit-network"].map(String::from).to_vec()
}

/// A running broker (or stand-in) with a native client, for one case.
pub trait Broker {
    /// `msgplug compose` arguments: `--broker URL`, plus where a receiving app takes its
    /// messages from when `input` is given (made ready here: queues, streams).
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String>;

    /// The `wasmtime` subcommand and its flags: `run -S inherit-network`, or for a
    /// `receiving` app of a backend that receives through the http trigger,
    /// `serve -S cli --addr ...`.
    fn wasmtime_args(&mut self, receiving: bool) -> Vec<String>;

    /// `--env` pairs for `wasmtime run`.
    fn run_env(&self, credentials: Credentials) -> Vec<(String, String)>;

    /// The stderr line a receiving app logs once it receives, if the backend logs one.
    fn ready_line(&self) -> Option<&'static str>;

    /// Takes what it needs of a freshly spawned app (the local backend: its stdin and
    /// stdout, which are its broker). Others leave them alone.
    fn attach(&mut self, _app: &mut Child) {}

    /// Makes every message sent to `topic` from now on observable with [`Broker::next`].
    fn listen(&mut self, topic: &str);

    /// Publishes `message` to `topic` and returns once the broker accepted it.
    fn publish(&mut self, topic: &str, message: &Msg);

    /// Publishes `messages` to `topic` like [`Broker::publish`], in batches where the broker
    /// has them.
    fn publish_all(&mut self, topic: &str, messages: &[Msg]) {
        for message in messages {
            self.publish(topic, message);
        }
    }

    /// The next message sent to `topic` (after [`Broker::listen`]), or `None` when none
    /// comes within `limit`.
    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg>;

    /// Answers the first request on `topic` with `replies` replies `hi, DATA (k/N)` (none:
    /// listens without answering); live before it returns.
    fn respond(&mut self, topic: &str, replies: usize);

    /// Whether this broker can be stopped by the case, or why not.
    fn can_stop(&self) -> Result<(), &'static str>;

    /// Stops the broker (every connection drops).
    fn stop(&mut self);

    /// Whether the stopped broker can be started again with what it had stored, or why not.
    fn can_restart(&self) -> Result<(), &'static str>;

    /// Starts the stopped broker again on the same address, keeping what it had stored.
    fn restart(&mut self);

    /// Whether wrong credentials can be given to this broker, or why not.
    fn can_check_credentials(&self) -> Result<(), &'static str>;

    /// Makes every receiving app started from now on the successor of the one before: it
    /// takes over what an instance that died left unsettled, within a few seconds. Where the
    /// broker keeps that per client, every instance resumes one session (MQTT); where it
    /// gives a delivery back only after a lease, the lease becomes 5 s (SQS visibility
    /// timeout, Service Bus lock duration). Called before the app is composed; brokers that
    /// hand a dead consumer's deliveries to the next one anyway have nothing to do.
    fn take_over_unsettled(&mut self) {}
}

/// A message as a native client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Msg {
    /// The data, byte for byte.
    pub data: Vec<u8>,
    /// The content type, if any.
    pub content_type: Option<String>,
    /// The metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Msg {
    /// A message with `data` and nothing else.
    pub fn data(data: impl Into<Vec<u8>>) -> Msg {
        Msg {
            data: data.into(),
            ..Msg::default()
        }
    }

    /// The data as text (lossy), for messages and assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A composed app running on `wasmtime run`, killed when dropped.
pub struct App {
    child: Child,
    lines: Receiver<String>,
    stderr: Vec<String>,
}

impl App {
    /// Composes example `name` for `broker` (receiving from `input`, if given) into `dir`.
    pub fn compose(
        broker: &mut dyn Broker,
        dir: &Path,
        name: &str,
        input: Option<Input>,
    ) -> PathBuf {
        let args = broker.compose_args(input);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::compose(dir, name, &args)
    }

    /// Starts `component` with the broker's flags and `env`, and hands it to the broker.
    pub fn start(
        broker: &mut dyn Broker,
        component: &Path,
        credentials: Credentials,
        env: &[(&str, &str)],
    ) -> App {
        App::spawn(broker, component, credentials, env, false)
    }

    fn spawn(
        broker: &mut dyn Broker,
        component: &Path,
        credentials: Credentials,
        env: &[(&str, &str)],
        receiving: bool,
    ) -> App {
        let mut command = support::wasmtime();
        command.args(broker.wasmtime_args(receiving));
        let broker_env = broker.run_env(credentials);
        let pairs = broker_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(env.iter().copied());
        for (key, value) in pairs {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        let mut child = command
            .arg(component)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmtime");
        broker.attach(&mut child);
        // What the broker did not take: stdin closed, stdout drained.
        drop(child.stdin.take());
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || std::io::copy(&mut { stdout }, &mut std::io::sink()));
        }
        let lines = support::lines(child.stderr.take().expect("piped stderr"));
        App {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Starts a receiving app and waits until it logs the broker's ready line.
    pub fn receiving(broker: &mut dyn Broker, component: &Path, env: &[(&str, &str)]) -> App {
        let mut app = App::spawn(broker, component, Credentials::Right, env, true);
        if let Some(line) = broker.ready_line() {
            app.wait_for(line, 1);
        }
        app
    }

    /// Waits until `count` stderr lines (counted since the start) contain `needle`.
    pub fn wait_for(&mut self, needle: &str, count: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.seen(needle) < count {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.stderr.push(line),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the app did not log `{needle}` {count} time(s) within {LIMIT:?}; stderr:\n{}",
                    self.stderr.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the app exited before logging `{needle}` {count} time(s); stderr:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// How many stderr lines read so far contain `needle`.
    pub fn seen(&self, needle: &str) -> usize {
        self.stderr.iter().filter(|l| l.contains(needle)).count()
    }

    /// Every stderr line read so far.
    pub fn stderr_so_far(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.stderr.push(line);
        }
        self.stderr.join("\n")
    }

    /// Waits (at most [`LIMIT`]) for the app to end by itself; its status and stderr.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.stderr.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the app ran longer than {LIMIT:?}; stderr:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
        // Its stderr is closed: the process has exited or is about to.
        let status = self.child.wait().expect("wait for wasmtime");
        (status, self.stderr.join("\n"))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
