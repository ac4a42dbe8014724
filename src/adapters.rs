//! The prebuilt adapter components embedded in msgplug (built from `adapters-wasm/crates/`).
//!
//! The set is closed: a backend is chosen by the broker URL's scheme, a driver by the trigger.

/// What part an adapter plays in a composed artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterKind {
    /// Exports `wasi:messaging` and the `msgplug:adapter` backend interfaces.
    Backend,
    /// The trigger loop that calls the app's `incoming-handler`, or the run wrapper around
    /// the app's own `wasi:cli/run`.
    Driver,
}

impl std::fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdapterKind::Backend => "backend",
            AdapterKind::Driver => "driver",
        })
    }
}

/// One embedded adapter component.
#[derive(Debug, serde::Serialize)]
pub struct Adapter {
    /// Kebab-case name; also the file name in `adapters-wasm/` without `.wasm`.
    pub name: &'static str,
    /// Backend or driver.
    pub kind: AdapterKind,
    /// For backends, the broker URL schemes that select it.
    pub schemes: &'static [&'static str],
    /// One line on what it does.
    pub summary: &'static str,
    /// What it needs from the host, as `wasmtime` flags or a plain note.
    pub host_needs: &'static str,
    /// Whether it reads messages (or replies to requests) from standard input.
    pub uses_stdin: bool,
    /// For backends, whether it can pull messages for the `run` trigger (the http backend
    /// cannot: it only sends, and receives through the `http` trigger).
    pub pulls: bool,
    /// Environment variables it reads at run time (credentials, endpoints); the printed
    /// `wasmtime` command forwards each with `--env NAME` (an unset one is skipped).
    pub run_env: &'static [&'static str],
    /// For backends, what `--subscribe` names.
    pub subscriptions: Subscriptions,
    /// For backends, why `--queue-group` has no effect, or `None` where it shares the work.
    pub queue_group_ignored: Option<&'static str>,
    /// For backends, the `--option` keys it understands (each documented in `--help`).
    pub options: &'static [BackendOption],
    /// For backends, the ways to use it, each with what it promises, the default first
    /// (drivers: none); `tests/conformance/` checks each promise of each mode against a real
    /// broker, and the README's capability table is checked against them.
    pub modes: &'static [Mode],
    /// The component itself.
    #[serde(skip)]
    pub bytes: &'static [u8],
}

/// What a backend's `--subscribe` entries name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "note")]
pub enum Subscriptions {
    /// Topic patterns, NATS-style: `*` matches one `.`-separated token, `>` the rest.
    Patterns,
    /// The backend's own patterns (wildcards passed through unchanged); the text says which.
    Native(&'static str),
    /// Names of what to receive from, without wildcards; the text says what they name.
    Names(&'static str),
    /// Nothing: the text says where the backend receives from instead.
    Unused(&'static str),
}

/// One way to use a backend, chosen with `compose` flags (NATS core or JetStream, Redis
/// pub/sub or Streams), with everything it promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mode {
    /// A short name (`core`, `jetstream`); `default` for a backend's only mode.
    pub name: &'static str,
    /// The `compose` flags (or broker URL parts) that choose it; empty for the default mode.
    pub flags: &'static str,
    /// What it promises.
    pub capabilities: Capabilities,
}

impl Mode {
    /// The only mode of a backend that has one.
    pub const fn only(capabilities: Capabilities) -> Mode {
        Mode {
            name: "default",
            flags: "",
            capabilities,
        }
    }

    /// How the mode is named to users: its flags, or `default`.
    pub fn label(&self) -> String {
        if self.flags.is_empty() {
            "default".to_string()
        } else {
            format!("with `{}`", self.flags)
        }
    }
}

/// What a backend promises in one [`Mode`]: the one declaration that `msgplug adapters`,
/// the README's capability table and the conformance suite (`tests/conformance/`) all read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Capabilities {
    /// How a handler receives messages.
    pub receive: Receive,
    /// Whether `request-reply.request` works, and how many replies it collects.
    pub request_reply: RequestReply,
    /// How several instances of one composed component share the work.
    pub scale_out: ScaleOut,
    /// Whether a message's metadata (key/value pairs) reaches the other side.
    pub metadata: bool,
    /// Whether a message's content type reaches the other side.
    pub content_type: bool,
    /// Whether data that is not UTF-8 text reaches the other side unchanged.
    pub binary: bool,
    /// The largest message `send` accepts.
    pub max_payload: MaxPayload,
    /// Whether a request to a topic nobody listens on fails at once (the broker can tell),
    /// instead of waiting for its timeout.
    pub no_responders: bool,
    /// Whether wrong credentials are refused with a `permission-denied` error.
    pub credentials: bool,
}

/// How a backend delivers messages to the handler, and what happens when the handler fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Receive {
    /// At-most-once or at-least-once.
    pub delivery: Delivery,
    /// What happens to a message whose handler returned `Err`.
    pub on_error: OnError,
    /// Whether every message the broker accepted is still handled (at least once) when the
    /// broker restarts while the app runs.
    pub survives_broker_restart: bool,
}

/// A delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Each message is handed to a handler at most once; one that arrives while the app is
    /// down, or whose handler fails, is not seen again.
    AtMostOnce,
    /// A message is settled only after its handler returned `Ok`; until then the broker
    /// delivers it again.
    AtLeastOnce,
}

/// What happens to a message whose handler returned `Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// The broker delivers it again, and a later `Ok` settles it.
    Redelivered,
    /// The failure is reported (the run driver logs it and exits 1 at the end; the http
    /// trigger answers 500) and the message is dropped.
    Reported,
}

/// What `request-reply.request` does on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "note")]
pub enum RequestReply {
    /// Returns the first reply only.
    OneReply,
    /// Collects replies until `expected-replies` came or `timeout-ms` ran out.
    SeveralReplies,
    /// Fails with a clear `other` error; the text says why.
    Unsupported(&'static str),
}

/// How instances of one composed component share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleOut {
    /// Instances composed (or run) with the same `--queue-group` share the messages.
    QueueGroup,
    /// Like [`ScaleOut::QueueGroup`], and the backend receives only in a group:
    /// `--queue-group` (the group's id) is required to receive.
    QueueGroupRequired,
    /// Receivers of one queue always compete for its messages; no flag needed.
    Competing,
    /// Each instance has its own input: nothing is shared.
    None,
}

/// The largest message a backend's `send` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum MaxPayload {
    /// At most `bytes` bytes of data in a message without metadata or content type; a
    /// larger one fails with a clear error and nothing is sent.
    Bytes {
        /// The limit.
        bytes: u64,
        /// Where it comes from and what else counts against it.
        note: &'static str,
    },
    /// msgplug sets no limit; the note says who does.
    NotLimited {
        /// Who limits the size instead.
        note: &'static str,
    },
}

impl Capabilities {
    /// Each capability as a (label, value) pair, in the order `msgplug adapters` prints them
    /// and the README's capability table has its columns.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        vec![
            ("delivery", self.receive.describe_delivery()),
            (
                "broker restart",
                if self.receive.survives_broker_restart {
                    "nothing accepted is lost".to_string()
                } else {
                    "messages may be lost".to_string()
                },
            ),
            ("request-reply", self.request_reply.to_string()),
            ("scale-out", self.scale_out.to_string()),
            ("metadata", yes_no(self.metadata)),
            ("content type", yes_no(self.content_type)),
            ("binary data", yes_no(self.binary)),
            ("max payload", self.max_payload.to_string()),
            ("no responders", yes_no(self.no_responders)),
            (
                "wrong credentials",
                if self.credentials {
                    "`permission-denied`".to_string()
                } else {
                    "not checked".to_string()
                },
            ),
        ]
    }
}

impl Receive {
    /// At-most-once: a failed message is reported and dropped, and a broker restart may
    /// lose messages.
    pub const AT_MOST_ONCE: Receive = Receive {
        delivery: Delivery::AtMostOnce,
        on_error: OnError::Reported,
        survives_broker_restart: false,
    };

    /// At-least-once: a failed message is redelivered, and a broker restart loses nothing
    /// the broker accepted.
    pub const AT_LEAST_ONCE: Receive = Receive {
        delivery: Delivery::AtLeastOnce,
        on_error: OnError::Redelivered,
        survives_broker_restart: true,
    };

    fn describe_delivery(&self) -> String {
        let delivery = match self.delivery {
            Delivery::AtMostOnce => "at-most-once",
            Delivery::AtLeastOnce => "at-least-once",
        };
        let on_error = match self.on_error {
            OnError::Redelivered => "redelivered",
            OnError::Reported => "reported and dropped",
        };
        format!("{delivery}, handler `Err`: {on_error}")
    }
}

impl std::fmt::Display for RequestReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestReply::OneReply => f.write_str("one reply"),
            RequestReply::SeveralReplies => f.write_str("several replies"),
            RequestReply::Unsupported(why) => write!(f, "no: {why}"),
        }
    }
}

impl std::fmt::Display for ScaleOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScaleOut::QueueGroup => "`--queue-group`",
            ScaleOut::QueueGroupRequired => "`--queue-group` (required)",
            ScaleOut::Competing => "competing consumers",
            ScaleOut::None => "no",
        })
    }
}

impl std::fmt::Display for MaxPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxPayload::Bytes { bytes, note } => write!(f, "{bytes} bytes ({note})"),
            MaxPayload::NotLimited { note } => write!(f, "not limited by msgplug ({note})"),
        }
    }
}

/// A backend-specific setting, given as `--option KEY=VALUE` (or a dedicated flag).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BackendOption {
    /// The key in the baked settings' `options`.
    pub key: &'static str,
    /// What it does, with its default.
    pub help: &'static str,
}

/// With the run wrapper (`--trigger none`, an app's own `wasi:cli/run`): how many sends
/// outside a handler may wait for their confirmation (`common::Window` in the adapters;
/// NATS, Kafka and SQS).
const CONFIRM_WINDOW: BackendOption = BackendOption {
    key: "confirm_window",
    help: "with the app's own run: sends confirmed together, at most (default 4096; 1: each send)",
};

/// With the run wrapper: how long the first send of a window may wait for its confirmation.
const CONFIRM_WINDOW_MS: BackendOption = BackendOption {
    key: "confirm_window_ms",
    help: "with the app's own run: ms after a window's first send that it is confirmed at the next send (default 100)",
};

/// NATS core: what NATS JetStream shares with it.
const NATS_CORE: Capabilities = Capabilities {
    receive: Receive::AT_MOST_ONCE,
    request_reply: RequestReply::SeveralReplies,
    scale_out: ScaleOut::QueueGroup,
    metadata: true,
    content_type: true,
    binary: true,
    max_payload: MaxPayload::Bytes {
        bytes: 1 << 20,
        note: "the server's `max_payload`, headers included; this is its default",
    },
    no_responders: true,
    credentials: true,
};

/// MQTT 5 with a clean session: what the other MQTT modes share with it.
const MQTT_CLEAN: Capabilities = Capabilities {
    receive: Receive::AT_MOST_ONCE,
    request_reply: RequestReply::SeveralReplies,
    // `--queue-group G` subscribes to `$share/G/FILTER`.
    scale_out: ScaleOut::QueueGroup,
    metadata: true,
    content_type: true,
    binary: true,
    max_payload: MaxPayload::NotLimited {
        note: "the broker's Maximum Packet Size, topic and properties included; Mosquitto: 256 MB",
    },
    // A request is a PUBLISH; nothing says whether anyone subscribes.
    no_responders: false,
    credentials: true,
};

/// AMQP with an exclusive queue per instance: what its group mode shares with it.
const AMQP_OWN_QUEUE: Capabilities = Capabilities {
    // The queue is exclusive and auto-delete: what is published while the instance is
    // disconnected, or across a broker restart, is not seen.
    receive: Receive {
        delivery: Delivery::AtLeastOnce,
        on_error: OnError::Redelivered,
        survives_broker_restart: false,
    },
    request_reply: RequestReply::SeveralReplies,
    // Every instance has its own queue and sees every message.
    scale_out: ScaleOut::None,
    metadata: true,
    content_type: true,
    binary: true,
    max_payload: MaxPayload::NotLimited {
        note: "the broker's `max_message_size`: 128 MiB by default in RabbitMQ 3.8 to 3.13, 16 MiB in 4",
    },
    no_responders: true,
    credentials: true,
};

/// Redis pub/sub with bare payloads: what its other modes share with it.
const REDIS_PUBSUB: Capabilities = Capabilities {
    receive: Receive::AT_MOST_ONCE,
    request_reply: RequestReply::SeveralReplies,
    // Every subscribed instance gets every message.
    scale_out: ScaleOut::None,
    metadata: false,
    content_type: false,
    binary: true,
    max_payload: MaxPayload::NotLimited {
        note: "the server's `proto-max-bulk-len`, 512 MB by default",
    },
    no_responders: true,
    credentials: true,
};

/// The NATS backends' options (plaintext and TLS).
const NATS_OPTIONS: &[BackendOption] = &[
    BackendOption {
        key: "jetstream",
        help: "consume through a durable JetStream pull consumer on this stream (--jetstream)",
    },
    BackendOption {
        key: "durable",
        help: "the durable consumer's name (--durable; needed with --jetstream)",
    },
    BackendOption {
        key: "create_stream",
        help: "`true`: create the stream when it is missing (--create-stream)",
    },
    BackendOption {
        key: "ack_wait_ms",
        help: "JetStream: ms before an unacked delivery is redelivered (default 30000)",
    },
    BackendOption {
        key: "handler_timeout_ms",
        help: "JetStream: the longest a handler runs, in ms: the consumer's ack wait (instead of ack_wait_ms)",
    },
    CONFIRM_WINDOW,
    CONFIRM_WINDOW_MS,
];

/// The NATS backends' credentials, read at run time (plaintext and TLS).
const NATS_RUN_ENV: [&str; 5] = [
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_NKEY",
    "NATS_CREDS",
];

/// The run-time variables of the Kafka backends: the SASL credentials.
const KAFKA_RUN_ENV: [&str; 2] = ["KAFKA_USERNAME", "KAFKA_PASSWORD"];

/// The Kafka backends' `--option` keys (plaintext and TLS).
const KAFKA_OPTIONS: &[BackendOption] = &[
    BackendOption {
        key: "client_id",
        help: "the client id sent to the brokers (default msgplug)",
    },
    BackendOption {
        key: "auto_offset_reset",
        help: "where a group without a committed offset starts: `earliest` or `latest` (default latest)",
    },
    BackendOption {
        key: "session_timeout_ms",
        help: "the consumer group session timeout; a handler slower than it loses its partitions (default 10000)",
    },
    BackendOption {
        key: "max_poll_records",
        help: "the most fetched records held for delivery at once (default 500)",
    },
    BackendOption {
        key: "retry_backoff_ms",
        help: "the first pause before a failed record is retried, doubling to 30 s; its partition waits (default 500)",
    },
    BackendOption {
        key: "idempotent",
        help: "`false`: produce without the idempotent producer (default true where the broker offers it)",
    },
    BackendOption {
        key: "compression",
        help: "the codec of produced batches: `none` (default) or `gzip` (uncompressed, gzip and snappy batches are read; lz4 and zstd are refused)",
    },
    BackendOption {
        key: "sasl_mechanism",
        help: "`PLAIN` (default when KAFKA_USERNAME and KAFKA_PASSWORD are set), `SCRAM-SHA-256` or `SCRAM-SHA-512`",
    },
    CONFIRM_WINDOW,
    CONFIRM_WINDOW_MS,
];

/// What the Kafka backends (plaintext and TLS) can do.
const KAFKA_CAPABILITIES: Capabilities = Capabilities {
    receive: Receive::AT_LEAST_ONCE,
    request_reply: RequestReply::SeveralReplies,
    scale_out: ScaleOut::QueueGroupRequired,
    metadata: true,
    content_type: true,
    binary: true,
    max_payload: MaxPayload::NotLimited {
        note: "the broker's `message.max.bytes` refuses a larger record batch with `MESSAGE_TOO_LARGE`: 1 MiB by default on Kafka, no limit on tansu",
    },
    // The broker cannot tell whether a consumer group reads the request topic.
    no_responders: false,
    // A SASL listener refuses a wrong password with SASL_AUTHENTICATION_FAILED.
    credentials: true,
};

/// The options of every TLS build of a backend (`backend-*-tls`).
const TLS_OPTIONS: &[BackendOption] = &[BackendOption {
    key: "tls_ca",
    help: "PEM of the only CA to trust instead of the Mozilla roots (set by --tls-ca FILE)",
}];

/// The NATS backends' modes (plaintext and TLS).
const NATS_MODES: &[Mode] = &[
    Mode {
        name: "core",
        flags: "",
        capabilities: NATS_CORE,
    },
    Mode {
        name: "jetstream",
        flags: "--jetstream STREAM --durable NAME",
        capabilities: Capabilities {
            receive: Receive::AT_LEAST_ONCE,
            // Instances of one durable consumer share it; `--queue-group` is not used.
            scale_out: ScaleOut::Competing,
            ..NATS_CORE
        },
    },
];

/// The MQTT backends' options (plaintext and TLS).
const MQTT_OPTIONS: &[BackendOption] = &[
    BackendOption {
        key: "durable",
        help:
            "persistent session with this client id: acks after Ok, redelivery on Err (--durable)",
    },
    BackendOption {
        key: "qos",
        help: "QoS of sends: 0 or 1 (default 1: a send waits for the broker's PUBACK)",
    },
    BackendOption {
        key: "version",
        help: "MQTT version: 5 (default) or 3.1.1 (as `?version=` on the URL)",
    },
    BackendOption {
        key: "session_expiry",
        help: "--durable: seconds the broker keeps the session while disconnected (default 86400)",
    },
    BackendOption {
        key: "keep_alive",
        help: "keep-alive interval in seconds (default 30; 0 turns it off)",
    },
    CONFIRM_WINDOW,
    CONFIRM_WINDOW_MS,
];

/// The MQTT backends' credentials and client id, read at run time (plaintext and TLS).
const MQTT_RUN_ENV: [&str; 3] = ["MQTT_USERNAME", "MQTT_PASSWORD", "MSGPLUG_CLIENT_ID"];

/// The MQTT backends' modes (plaintext and TLS).
const MQTT_MODES: &[Mode] = &[
    Mode {
        name: "clean",
        flags: "",
        capabilities: MQTT_CLEAN,
    },
    Mode {
        name: "durable",
        flags: "--durable CLIENT-ID",
        capabilities: Capabilities {
            // The broker must persist sessions (Mosquitto: `persistence true`) for
            // them to outlive its restart.
            receive: Receive::AT_LEAST_ONCE,
            ..MQTT_CLEAN
        },
    },
    Mode {
        name: "3.1.1",
        flags: "?version=3.1.1",
        capabilities: Capabilities {
            request_reply: RequestReply::Unsupported(
                "MQTT 3.1.1 has no response topic or correlation data (MQTT 5 has)",
            ),
            metadata: false,
            content_type: false,
            ..MQTT_CLEAN
        },
    },
];

/// The AMQP backends' options (plaintext and TLS).
const AMQP_OPTIONS: &[BackendOption] = &[
    BackendOption {
        key: "exchange",
        help:
            "the exchange sends publish to and --subscribe binding keys bind to (default amq.topic)",
    },
    BackendOption {
        key: "prefetch",
        help: "how many unacknowledged deliveries the broker sends ahead (basic.qos; default 10)",
    },
    BackendOption {
        key: "queue",
        help: "consume this existing queue as it is, declaring and binding nothing",
    },
    BackendOption {
        key: "connection_name",
        help: "the connection name the broker shows (default msgplug)",
    },
    CONFIRM_WINDOW,
    CONFIRM_WINDOW_MS,
];

/// The AMQP backends' credentials, read at run time (plaintext and TLS).
const AMQP_RUN_ENV: [&str; 2] = ["AMQP_USERNAME", "AMQP_PASSWORD"];

/// The AMQP backends' modes (plaintext and TLS).
const AMQP_MODES: &[Mode] = &[
    Mode {
        name: "own-queue",
        flags: "",
        capabilities: AMQP_OWN_QUEUE,
    },
    Mode {
        name: "group",
        flags: "--queue-group GROUP",
        capabilities: Capabilities {
            // The group's queue is durable: it keeps what the broker accepted.
            receive: Receive::AT_LEAST_ONCE,
            scale_out: ScaleOut::QueueGroup,
            ..AMQP_OWN_QUEUE
        },
    },
];

/// The environment variables of every TLS build of a backend: the client certificate and
/// its key (PEM text) for mutual TLS.
pub(crate) const TLS_RUN_ENV: [&str; 2] = ["MSGPLUG_TLS_CERT", "MSGPLUG_TLS_KEY"];

/// The Redis backends' options (plaintext and TLS).
const REDIS_OPTIONS: &[BackendOption] = &[
        BackendOption {
            key: "mode",
            help: "`pubsub` (default) or `streams` (also `?mode=` in the URL); streams needs --queue-group",
        },
        BackendOption {
            key: "envelope",
            help: "pub/sub: `json` wraps data, content type and metadata in a JSON envelope (default: bare payloads)",
        },
        BackendOption {
            key: "maxlen",
            help: "streams: trim each stream to about N entries on XADD (default: no trimming)",
        },
        BackendOption {
            key: "claim_after_ms",
            help: "streams: ms an entry stays pending before another consumer claims it (default 30000)",
        },
        BackendOption {
            key: "handler_timeout_ms",
            help: "streams: the longest a handler runs, in ms: the claim_after_ms (instead of it)",
        },
        BackendOption {
            key: "max_deliveries",
            help: "streams: after N deliveries an entry goes to `<stream>:dead-letter` (default: no limit)",
        },
];

/// The Redis backends' credentials, read at run time (plaintext and TLS).
const REDIS_RUN_ENV: [&str; 2] = ["REDIS_USERNAME", "REDIS_PASSWORD"];

/// The Redis backends' modes (plaintext and TLS).
const REDIS_MODES: &[Mode] = &[
    Mode {
        name: "pubsub",
        flags: "",
        capabilities: REDIS_PUBSUB,
    },
    Mode {
        name: "envelope",
        flags: "--option envelope=json",
        capabilities: Capabilities {
            metadata: true,
            content_type: true,
            ..REDIS_PUBSUB
        },
    },
    Mode {
        name: "streams",
        flags: "?mode=streams --queue-group GROUP",
        capabilities: Capabilities {
            receive: Receive::AT_LEAST_ONCE,
            scale_out: ScaleOut::QueueGroup,
            metadata: true,
            content_type: true,
            // XADD cannot tell whether a consumer group reads the stream.
            no_responders: false,
            ..REDIS_PUBSUB
        },
    },
];

/// The parts one after the other, at compile time: a TLS build's options and run-time
/// variables are its plaintext build's plus the TLS ones. `N` must be the sum of the parts'
/// lengths (checked when the constant is evaluated), and the first part must not be empty.
const fn concat<T: Copy, const N: usize>(parts: &[&[T]]) -> [T; N] {
    let mut out = [parts[0][0]; N];
    let mut filled = 0;
    let mut part = 0;
    while part < parts.len() {
        let mut i = 0;
        while i < parts[part].len() {
            out[filled] = parts[part][i];
            filled += 1;
            i += 1;
        }
        part += 1;
    }
    assert!(
        filled == N,
        "concat: N is not the sum of the parts' lengths"
    );
    out
}

/// The TLS build of the backend `$plain` (`backend-NAME-tls`: the crate with its feature
/// `tls`, rustls in the component), chosen by its own schemes: it does everything `$plain`
/// does, with `$plain`'s options and [`TLS_OPTIONS`] and `$extra_options`, and reads
/// `$plain`'s run-time variables and [`TLS_RUN_ENV`].
macro_rules! tls_build {
    (
        $plain:expr,
        name: $name:literal,
        schemes: $schemes:expr,
        summary: $summary:literal,
        extra_options: $extra_options:expr,
        bytes: $bytes:expr $(,)?
    ) => {{
        const PLAIN: Adapter = $plain;
        const EXTRA: &[BackendOption] = $extra_options;
        const OPTIONS: [BackendOption; PLAIN.options.len() + TLS_OPTIONS.len() + EXTRA.len()] =
            concat(&[PLAIN.options, TLS_OPTIONS, EXTRA]);
        const RUN_ENV: [&str; PLAIN.run_env.len() + TLS_RUN_ENV.len()] =
            concat(&[PLAIN.run_env, &TLS_RUN_ENV]);
        Adapter {
            name: $name,
            schemes: $schemes,
            summary: $summary,
            options: &OPTIONS,
            run_env: &RUN_ENV,
            bytes: $bytes,
            ..PLAIN
        }
    }};
}

/// The `backend-nats` adapter, also the base of its TLS build.
const NATS: Adapter = Adapter {
    name: "backend-nats",
    kind: AdapterKind::Backend,
    schemes: &["nats"],
    summary:
        "NATS: core pub/sub with queue groups, request-reply; JetStream durable pull consumers",
    host_needs: "`-S inherit-network` (TCP to the server)",
    uses_stdin: false,
    pulls: true,
    subscriptions: Subscriptions::Patterns,
    queue_group_ignored: None,
    run_env: &NATS_RUN_ENV,
    options: NATS_OPTIONS,
    modes: NATS_MODES,
    bytes: include_bytes!("../adapters-wasm/backend-nats.wasm"),
};

/// The `backend-mqtt` adapter, also the base of its TLS build.
const MQTT: Adapter = Adapter {
    name: "backend-mqtt",
    kind: AdapterKind::Backend,
    schemes: &["mqtt"],
    summary: "MQTT 5.0 (or 3.1.1 with `?version=3.1.1`): QoS 0/1 publish, shared subscriptions, persistent sessions (--durable: at-least-once), request-response (5.0)",
    host_needs: "`-S inherit-network` (TCP to the broker)",
    uses_stdin: false,
    pulls: true,
    subscriptions: Subscriptions::Native("MQTT topic filters (`+` one level, `#` the rest)"),
    queue_group_ignored: None,
    run_env: &MQTT_RUN_ENV,
    options: MQTT_OPTIONS,
    modes: MQTT_MODES,
    bytes: include_bytes!("../adapters-wasm/backend-mqtt.wasm"),
};

/// The `backend-amqp` adapter, also the base of its TLS build.
const AMQP: Adapter = Adapter {
    name: "backend-amqp",
    kind: AdapterKind::Backend,
    schemes: &["amqp"],
    summary: "AMQP 0-9-1 (RabbitMQ): topic exchange, publisher confirms, ack after Ok, nack with requeue after Err, direct reply-to",
    host_needs: "`-S inherit-network` (TCP to the broker)",
    uses_stdin: false,
    pulls: true,
    subscriptions: Subscriptions::Native(
        "AMQP binding keys of the consumer's queue on the exchange (`*` one word, `#` zero or more)",
    ),
    queue_group_ignored: None,
    run_env: &AMQP_RUN_ENV,
    options: AMQP_OPTIONS,
    modes: AMQP_MODES,
    bytes: include_bytes!("../adapters-wasm/backend-amqp.wasm"),
};

/// The `backend-redis` adapter, also the base of its TLS build.
const REDIS: Adapter = Adapter {
    name: "backend-redis",
    kind: AdapterKind::Backend,
    schemes: &["redis"],
    summary: "Redis: pub/sub (at-most-once; no headers unless `envelope=json`) or, with `?mode=streams`, Streams consumer groups (at-least-once: XACK after Ok, XAUTOCLAIM, dead-letter); request-reply",
    host_needs: "`-S inherit-network` (TCP to the server)",
    uses_stdin: false,
    pulls: true,
    subscriptions: Subscriptions::Native(
        "pub/sub channels, or Redis glob patterns (`*`, `?`, `[...]`; PSUBSCRIBE); with `?mode=streams`, stream keys",
    ),
    queue_group_ignored: None,
    run_env: &REDIS_RUN_ENV,
    options: REDIS_OPTIONS,
    modes: REDIS_MODES,
    bytes: include_bytes!("../adapters-wasm/backend-redis.wasm"),
};

/// The `backend-kafka` adapter, also the base of its TLS build.
const KAFKA: Adapter = Adapter {
    name: "backend-kafka",
    kind: AdapterKind::Backend,
    schemes: &["kafka"],
    summary: "Kafka: acks=all (idempotent) producer; consumer groups with commit after Ok, a failed record retried in its partition; request-reply over a reply topic",
    host_needs: "`-S inherit-network` (TCP to the brokers)",
    uses_stdin: false,
    pulls: true,
    subscriptions: Subscriptions::Names("topics"),
    queue_group_ignored: None,
    run_env: &KAFKA_RUN_ENV,
    options: KAFKA_OPTIONS,
    modes: &[Mode::only(KAFKA_CAPABILITIES)],
    bytes: include_bytes!("../adapters-wasm/backend-kafka.wasm"),
};

/// Every embedded adapter.
pub const ADAPTERS: &[Adapter] = &[
    Adapter {
        name: "backend-local",
        kind: AdapterKind::Backend,
        schemes: &["local"],
        summary: "embedded broker: NDJSON messages in on stdin, out on stdout",
        host_needs: "stdin and stdout only (no network)",
        uses_stdin: true,
        pulls: true,
        subscriptions: Subscriptions::Patterns,
        queue_group_ignored: Some("one process reads standard input"),
        run_env: &[],
        options: &[],
        modes: &[Mode::only(Capabilities {
            receive: Receive::AT_MOST_ONCE,
            request_reply: RequestReply::SeveralReplies,
            scale_out: ScaleOut::None,
            metadata: true,
            content_type: true,
            binary: true,
            max_payload: MaxPayload::NotLimited {
                note: "one line of standard output"
            },
            no_responders: false,
            credentials: false,
        })],
        bytes: include_bytes!("../adapters-wasm/backend-local.wasm"),
        },
    NATS,
    tls_build!(
        NATS,
        name: "backend-nats-tls",
        schemes: &["tls"],
        summary: "NATS over TLS (`tls://`, rustls in the component): everything `backend-nats` does; client certificates from the environment",
        extra_options: &[
            BackendOption {
                key: "tls_first",
                help: "`true`: start TLS before the server's INFO (servers with `handshake_first`, nats-server 2.10+)",
            },
        ],
        bytes: include_bytes!("../adapters-wasm/backend-nats-tls.wasm"),
    ),
    MQTT,
    tls_build!(
        MQTT,
        name: "backend-mqtt-tls",
        schemes: &["mqtts"],
        summary: "MQTT over TLS (`mqtts://`, port 8883 by default, rustls in the component): everything `backend-mqtt` does; client certificates from the environment",
        extra_options: &[],
        bytes: include_bytes!("../adapters-wasm/backend-mqtt-tls.wasm"),
    ),
    AMQP,
    tls_build!(
        AMQP,
        name: "backend-amqp-tls",
        schemes: &["amqps"],
        summary: "AMQP 0-9-1 over TLS (`amqps://`, port 5671 by default, rustls in the component): everything `backend-amqp` does; client certificates from the environment",
        extra_options: &[],
        bytes: include_bytes!("../adapters-wasm/backend-amqp-tls.wasm"),
    ),
    REDIS,
    tls_build!(
        REDIS,
        name: "backend-redis-tls",
        schemes: &["rediss"],
        summary: "Redis over TLS (`rediss://`, rustls in the component): everything `backend-redis` does; client certificates from the environment",
        extra_options: &[],
        bytes: include_bytes!("../adapters-wasm/backend-redis-tls.wasm"),
    ),
    KAFKA,
    tls_build!(
        KAFKA,
        name: "backend-kafka-tls",
        schemes: &["kafka+ssl"],
        summary: "Kafka over TLS (`kafka+ssl://`, rustls in the component, to every broker): everything `backend-kafka` does, SASL included; client certificates from the environment",
        extra_options: &[],
        bytes: include_bytes!("../adapters-wasm/backend-kafka-tls.wasm"),
    ),
    Adapter {
        name: "backend-http",
        kind: AdapterKind::Backend,
        schemes: &["http", "https"],
        summary: "HTTP: each send is a CloudEvent POSTed to the URL (`{topic}` in it is replaced); a request's reply is the response",
        host_needs: "`-S http` (outgoing HTTP)",
        uses_stdin: false,
        pulls: false,
        subscriptions: Subscriptions::Unused("it receives through `--trigger http`, where the request path is the topic"),
        queue_group_ignored: Some("every instance behind the same URL gets its own requests"),
        run_env: &[],
        options: &[],
        modes: &[Mode::only(Capabilities {
            receive: Receive::AT_MOST_ONCE,
            request_reply: RequestReply::OneReply,
            scale_out: ScaleOut::None,
            metadata: true,
            content_type: true,
            binary: true,
            max_payload: MaxPayload::NotLimited {
                note: "the endpoint's limit; the http trigger takes up to `max_body_bytes`",
            },
            no_responders: false,
            credentials: true,
        })],
        bytes: include_bytes!("../adapters-wasm/backend-http.wasm"),
        },
    Adapter {
        name: "backend-sqs",
        kind: AdapterKind::Backend,
        schemes: &["sqs"],
        summary: "AWS SQS over HTTPS (JSON protocol, SigV4): send, long-poll receive, delete on Ok",
        host_needs: "`-S http` (outgoing HTTP) and AWS credentials in the environment",
        uses_stdin: false,
        pulls: true,
        subscriptions: Subscriptions::Unused("it receives from the queue named in the broker URL (`sqs://REGION/QUEUE`)"),
        queue_group_ignored: Some("consumers of one SQS queue always compete for its messages"),
        run_env: &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_ENDPOINT_URL_SQS",
            "AWS_ENDPOINT_URL",
        ],
        options: &[
            BackendOption {
                key: "handler_timeout_ms",
                help: "the longest a handler runs, in ms: the visibility timeout asked for at receive (default: the queue's)",
            },
            CONFIRM_WINDOW,
            CONFIRM_WINDOW_MS,
        ],
        modes: &[Mode::only(Capabilities {
            receive: Receive::AT_LEAST_ONCE,
            request_reply: RequestReply::SeveralReplies,
            scale_out: ScaleOut::Competing,
            metadata: true,
            content_type: true,
            binary: true,
            max_payload: MaxPayload::Bytes {
                bytes: 1 << 20,
                note: "the queue's `MaximumMessageSize`: SQS's default and limit, 1 MiB since 2025; binary data goes as base64",
            },
            no_responders: false,
            credentials: true,
        })],
        bytes: include_bytes!("../adapters-wasm/backend-sqs.wasm"),
        },
    Adapter {
        name: "backend-servicebus",
        kind: AdapterKind::Backend,
        schemes: &["servicebus"],
        summary: "Azure Service Bus over HTTPS (REST, SAS): send, peek-lock receive, complete on Ok",
        host_needs: "`-S http` (outgoing HTTP) and the SAS key in the environment",
        uses_stdin: false,
        pulls: true,
        subscriptions: Subscriptions::Names("a queue, or `TOPIC/subscriptions/SUBSCRIPTION`"),
        queue_group_ignored: Some("receivers of one queue or subscription always compete for its messages"),
        run_env: &["SERVICEBUS_SAS_KEY_NAME", "SERVICEBUS_SAS_KEY"],
        options: &[],
        modes: &[Mode::only(Capabilities {
            receive: Receive::AT_LEAST_ONCE,
            request_reply: RequestReply::Unsupported(
                "the REST protocol cannot receive from sessions or temporary queues; replying to `ReplyTo` works"
            ),
            scale_out: ScaleOut::Competing,
            metadata: true,
            content_type: true,
            binary: true,
            max_payload: MaxPayload::NotLimited {
                note: "the namespace's tier: 256 KB Standard, 100 MB Premium",
            },
            no_responders: false,
            credentials: true,
        })],
        bytes: include_bytes!("../adapters-wasm/backend-servicebus.wasm"),
        },
    DRIVER_RUN,
    DRIVER_HTTP,
    DRIVER_WRAP,
];

/// The driver components, in statics so that the constants below share one copy.
static DRIVER_RUN_BYTES: &[u8] = include_bytes!("../adapters-wasm/driver-run.wasm");
static DRIVER_HTTP_BYTES: &[u8] = include_bytes!("../adapters-wasm/driver-http.wasm");
static DRIVER_WRAP_BYTES: &[u8] = include_bytes!("../adapters-wasm/driver-wrap.wasm");

/// A driver's row: drivers take no subscriptions, read nothing from the environment and
/// declare no modes.
const fn driver(
    name: &'static str,
    summary: &'static str,
    host_needs: &'static str,
    options: &'static [BackendOption],
    bytes: &'static [u8],
) -> Adapter {
    Adapter {
        name,
        kind: AdapterKind::Driver,
        schemes: &[],
        summary,
        host_needs,
        uses_stdin: false,
        pulls: false,
        subscriptions: Subscriptions::Unused("drivers take no subscriptions"),
        queue_group_ignored: None,
        run_env: &[],
        options,
        modes: &[],
        bytes,
    }
}

/// The `run` trigger's driver (chosen through `compose::Driver`, never by name).
pub const DRIVER_RUN: Adapter = driver(
    "driver-run",
    "`run` trigger: pull each delivery, call the app's handler, ack on Ok, nack on Err",
    "`wasmtime run` (exports wasi:cli/run)",
    &[],
    DRIVER_RUN_BYTES,
);

/// The `http` trigger's driver (chosen through `compose::Driver`, never by name).
pub const DRIVER_HTTP: Adapter = driver(
    "driver-http",
    "`http` trigger: each request (CloudEvent or plain POST) is one message; a reply is the response",
    "`wasmtime serve -S cli` (exports wasi:http/incoming-handler)",
    &[BackendOption {
        key: "max_body_bytes",
        help: "the largest request body accepted, in bytes (default 1048576)",
    }],
    DRIVER_HTTP_BYTES,
);

/// The run wrapper around an app's own `wasi:cli/run` (chosen through `compose::Driver`,
/// never by name).
pub const DRIVER_WRAP: Adapter = driver(
    "driver-wrap",
    "trigger `none` with an app's own `wasi:cli/run`: run it, then flush the backend's outbox; exit 1 if either failed (a failed flush says why)",
    "`wasmtime run` (exports wasi:cli/run)",
    &[],
    DRIVER_WRAP_BYTES,
);

impl Adapter {
    /// For backends that consume only as a member of a group (every mode declares
    /// [`ScaleOut::QueueGroupRequired`]): `--queue-group` is required to receive.
    pub fn queue_group_required(&self) -> bool {
        !self.modes.is_empty()
            && self
                .modes
                .iter()
                .all(|m| m.capabilities.scale_out == ScaleOut::QueueGroupRequired)
    }

    /// The name without its `backend-`/`driver-` prefix and `-tls` suffix: the backend
    /// family (`nats`, for `backend-nats` and `backend-nats-tls`) or the trigger (`run`).
    pub fn family(&self) -> &'static str {
        let name = self.name.strip_suffix("-tls").unwrap_or(self.name);
        name.split_once('-').map_or(name, |(_, family)| family)
    }

    /// Whether this is the TLS build of a backend (`backend-NAME-tls`, which speaks TLS to
    /// its broker and reads [`TLS_RUN_ENV`]).
    pub fn tls(&self) -> bool {
        self.name.ends_with("-tls")
    }
}

/// An error finding an adapter.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// No backend handles this broker URL scheme.
    #[error("unknown broker scheme `{scheme}`; supported: {}", supported_schemes())]
    UnknownScheme {
        /// The scheme as given.
        scheme: String,
    },
    /// No adapter has this name.
    #[error("no adapter named `{name}`; the adapters are: {}", all_names())]
    UnknownName {
        /// The name as given.
        name: String,
    },
}

fn supported_schemes() -> String {
    backends()
        .flat_map(|a| a.schemes.iter())
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn all_names() -> String {
    ADAPTERS
        .iter()
        .map(|a| format!("`{}`", a.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn backends() -> impl Iterator<Item = &'static Adapter> {
    ADAPTERS.iter().filter(|a| a.kind == AdapterKind::Backend)
}

/// The backend for a broker URL scheme.
pub fn backend_for_scheme(scheme: &str) -> Result<&'static Adapter, AdapterError> {
    if let Some(adapter) = backends().find(|a| a.schemes.contains(&scheme)) {
        return Ok(adapter);
    }
    Err(AdapterError::UnknownScheme {
        scheme: scheme.to_string(),
    })
}

/// The adapter called `name`.
pub fn by_name(name: &str) -> Result<&'static Adapter, AdapterError> {
    ADAPTERS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| AdapterError::UnknownName {
            name: name.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::names;

    #[test]
    fn every_adapter_is_a_component_that_exports_what_its_kind_promises() {
        let wit = crate::wit::bundled();
        let backend_world = wit
            .resolve
            .select_world(&[wit.adapter], Some("backend"))
            .expect("world exists");
        for adapter in ADAPTERS {
            let info = crate::analyze::analyze(adapter.bytes)
                .unwrap_or_else(|e| panic!("{} does not decode: {e}", adapter.name));
            match adapter.kind {
                AdapterKind::Backend => {
                    for key in wit.resolve.worlds[backend_world].exports.keys() {
                        let name = wit.resolve.name_world_key(key);
                        assert!(info.exports(&name), "{} lacks export {name}", adapter.name);
                    }
                    assert!(
                        info.imports(names::CONFIG),
                        "{} must import config",
                        adapter.name
                    );
                }
                AdapterKind::Driver => {
                    assert!(
                        info.imports(names::INCOMING_HANDLER) || info.imports(names::APP_RUN),
                        "{} calls neither the app's handler nor its run",
                        adapter.name
                    );
                    assert!(
                        !info.entry_points().is_empty(),
                        "{} exports no entry point",
                        adapter.name
                    );
                }
            }
            for import in &info.imports {
                assert!(
                    import.starts_with("wasi:") || import.starts_with(names::ADAPTER_PREFIX),
                    "{} imports non-standard `{import}`",
                    adapter.name
                );
            }
        }
    }

    /// The README's capability table as [`Capabilities::describe`] renders it.
    fn capability_table() -> String {
        let mut header = vec!["backend"];
        let mut rows = String::new();
        for backend in backends() {
            assert!(
                !backend.modes.is_empty(),
                "{} declares no modes",
                backend.name
            );
            for mode in backend.modes {
                let cells = mode.capabilities.describe();
                if header.len() == 1 {
                    header.extend(cells.iter().map(|(label, _)| *label));
                }
                let values: Vec<String> = cells.into_iter().map(|(_, value)| value).collect();
                let name = match mode.flags {
                    "" => format!("`{}`", backend.name),
                    flags => format!("`{}` with `{flags}`", backend.name),
                };
                rows += &format!("| {name} | {} |\n", values.join(" | "));
            }
        }
        format!(
            "| {} |\n|{}\n{rows}",
            header.join(" | "),
            "---|".repeat(header.len())
        )
    }

    #[test]
    fn the_readme_capability_table_is_what_the_backends_declare() {
        let readme = include_str!("../README.md");
        let table = capability_table();
        assert!(
            readme.contains(&table),
            "README.md's capability table (under `## Backends`) differs from the declared \
             capabilities in src/adapters.rs; replace it with:\n\n{table}"
        );
    }

    #[test]
    fn backends_and_only_backends_declare_capabilities() {
        for adapter in ADAPTERS {
            assert_eq!(
                !adapter.modes.is_empty(),
                adapter.kind == AdapterKind::Backend,
                "{}",
                adapter.name
            );
            for (i, mode) in adapter.modes.iter().enumerate() {
                assert_eq!(
                    mode.flags.is_empty(),
                    i == 0,
                    "{}: the first mode, and only it, is the default (no flags)",
                    adapter.name
                );
                let names = adapter.modes.iter().filter(|m| m.name == mode.name);
                assert_eq!(names.count(), 1, "{}: mode names are unique", adapter.name);
                let receive = mode.capabilities.receive;
                assert_eq!(
                    receive.delivery == Delivery::AtLeastOnce,
                    receive.on_error == OnError::Redelivered,
                    "{}: at-least-once is exactly redelivery on `Err`",
                    adapter.name
                );
            }
        }
    }

    #[test]
    fn schemes_resolve_or_explain() {
        assert_eq!(backend_for_scheme("local").unwrap().name, "backend-local");
        assert_eq!(backend_for_scheme("https").unwrap().name, "backend-http");
        assert_eq!(backend_for_scheme("mqtt").unwrap().name, "backend-mqtt");
        assert_eq!(backend_for_scheme("kafka").unwrap().name, "backend-kafka");
        let tls = backend_for_scheme("tls").unwrap();
        assert_eq!(
            (tls.name, tls.family(), tls.tls()),
            ("backend-nats-tls", "nats", true)
        );
        let nats = backend_for_scheme("nats").unwrap();
        assert_eq!((nats.family(), nats.tls()), ("nats", false));
        let rediss = backend_for_scheme("rediss").unwrap();
        assert_eq!(
            (rediss.name, rediss.family(), rediss.tls()),
            ("backend-redis-tls", "redis", true)
        );
        let mqtts = backend_for_scheme("mqtts").unwrap();
        assert_eq!(
            (mqtts.name, mqtts.family(), mqtts.tls()),
            ("backend-mqtt-tls", "mqtt", true)
        );
        assert_eq!(
            backend_for_scheme("amqps").unwrap().name,
            "backend-amqp-tls"
        );
        let kafka_ssl = backend_for_scheme("kafka+ssl").unwrap();
        assert_eq!(
            (kafka_ssl.name, kafka_ssl.family(), kafka_ssl.tls()),
            ("backend-kafka-tls", "kafka", true)
        );
        let err = backend_for_scheme("gopher").unwrap_err().to_string();
        assert!(err.contains("unknown broker scheme `gopher`"), "{err}");
        assert!(by_name("nope")
            .unwrap_err()
            .to_string()
            .contains("`driver-run`"));
    }
}
