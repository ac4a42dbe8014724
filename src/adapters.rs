//! The prebuilt adapter components embedded in msgplug (built from `adapters-wasm/crates/`).
//!
//! The set is closed: a backend is chosen by the broker URL's scheme, a driver by the trigger.

/// What part an adapter plays in a composed artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterKind {
    /// Exports `wasi:messaging` and the `msgplug:adapter` backend interfaces.
    Backend,
    /// The trigger loop that calls the app's `incoming-handler`.
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
    /// Names of what to receive from, without wildcards; the text says what they name.
    Names(&'static str),
    /// Nothing: the text says where the backend receives from instead.
    Unused(&'static str),
}

/// A backend-specific setting, given as `--option KEY=VALUE` (or a dedicated flag).
#[derive(Debug, serde::Serialize)]
pub struct BackendOption {
    /// The key in the baked settings' `options`.
    pub key: &'static str,
    /// What it does, with its default.
    pub help: &'static str,
}

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
        bytes: include_bytes!("../adapters-wasm/backend-local.wasm"),
    },
    Adapter {
        name: "backend-nats",
        kind: AdapterKind::Backend,
        schemes: &["nats"],
        summary: "NATS: core pub/sub with queue groups, request-reply; JetStream durable pull consumers",
        host_needs: "`-S inherit-network` (TCP to the server)",
        uses_stdin: false,
        pulls: true,
        subscriptions: Subscriptions::Patterns,
        queue_group_ignored: None,
        run_env: &["NATS_USER", "NATS_PASSWORD", "NATS_TOKEN"],
        options: &[
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
        ],
        bytes: include_bytes!("../adapters-wasm/backend-nats.wasm"),
    },
    Adapter {
        name: "backend-kafka",
        kind: AdapterKind::Backend,
        schemes: &["kafka"],
        summary: "Kafka: acks=all (idempotent) producer; consumer groups with commit after Ok, a failed record retried in its partition; request-reply over a reply topic",
        host_needs: "`-S inherit-network` (TCP to the brokers)",
        uses_stdin: false,
        pulls: true,
        subscriptions: Subscriptions::Names("topics"),
        queue_group_ignored: None,
        run_env: &[],
        options: &[
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
                help: "the codec of produced batches: only `none` (uncompressed and gzip batches are read; snappy, lz4 and zstd are refused)",
            },
        ],
        bytes: include_bytes!("../adapters-wasm/backend-kafka.wasm"),
    },
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
        options: &[],
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
        bytes: include_bytes!("../adapters-wasm/backend-servicebus.wasm"),
    },
    Adapter {
        name: "driver-run",
        kind: AdapterKind::Driver,
        schemes: &[],
        summary:
            "`run` trigger: pull each delivery, call the app's handler, ack on Ok, nack on Err",
        host_needs: "`wasmtime run` (exports wasi:cli/run)",
        uses_stdin: false,
        pulls: false,
        subscriptions: Subscriptions::Unused("drivers take no subscriptions"),
        queue_group_ignored: None,
        run_env: &[],
        options: &[],
        bytes: include_bytes!("../adapters-wasm/driver-run.wasm"),
    },
    Adapter {
        name: "driver-http",
        kind: AdapterKind::Driver,
        schemes: &[],
        summary: "`http` trigger: each request (CloudEvent or plain POST) is one message; a reply is the response",
        host_needs: "`wasmtime serve -S cli` (exports wasi:http/incoming-handler)",
        uses_stdin: false,
        pulls: false,
        subscriptions: Subscriptions::Unused("drivers take no subscriptions"),
        queue_group_ignored: None,
        run_env: &[],
        options: &[BackendOption {
            key: "max_body_bytes",
            help: "the largest request body accepted, in bytes (default 1048576)",
        }],
        bytes: include_bytes!("../adapters-wasm/driver-http.wasm"),
    },
];

impl Adapter {
    /// For backends that consume only in a group: why `--queue-group` is required.
    pub fn queue_group_required(&self) -> Option<&'static str> {
        QUEUE_GROUP_REQUIRED
            .iter()
            .find(|(name, _)| *name == self.name)
            .map(|(_, why)| *why)
    }

    /// The name without its `backend-`/`driver-` prefix: the backend family (`nats`) or
    /// the trigger (`run`).
    pub fn family(&self) -> &'static str {
        let name = self.name;
        name.split_once('-').map_or(name, |(_, family)| family)
    }
}

/// Broker URL schemes that are planned but have no adapter yet.
pub const PLANNED_SCHEMES: &[&str] = &["mqtt", "amqp", "redis"];

/// Backends that consume only as a member of a group, with why `--queue-group` is needed.
const QUEUE_GROUP_REQUIRED: &[(&str, &str)] = &[(
    "backend-kafka",
    "Kafka consumers read through a consumer group; `--queue-group` is its group id",
)];

/// Broker URL schemes that will not get a backend, with the reason and what to do instead.
const UNSUPPORTED_SCHEMES: &[(&str, &str)] = &[(
    "tls",
    "NATS over TLS needs TLS inside the component, and wasi:sockets has none; use a `nats://` \
     URL (for example to a TLS-terminating proxy on the same host)",
)];

/// An error finding an adapter.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// No backend handles this broker URL scheme, and none is planned.
    #[error("unknown broker scheme `{scheme}`; supported: {}", supported_schemes())]
    UnknownScheme {
        /// The scheme as given.
        scheme: String,
    },
    /// The scheme is known but its backend is not built yet.
    #[error(
        "the `{scheme}` backend is not available in this version of msgplug; supported: {}",
        supported_schemes()
    )]
    SchemeNotYetSupported {
        /// The scheme as given.
        scheme: String,
    },
    /// The scheme will not be supported; the text says why and what to do.
    #[error("`{scheme}://` brokers are not supported: {reason}")]
    SchemeUnsupported {
        /// The scheme as given.
        scheme: String,
        /// Why, and what to do instead.
        reason: &'static str,
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
    if let Some((_, reason)) = UNSUPPORTED_SCHEMES.iter().find(|(s, _)| *s == scheme) {
        return Err(AdapterError::SchemeUnsupported {
            scheme: scheme.to_string(),
            reason,
        });
    }
    let scheme = scheme.to_string();
    if PLANNED_SCHEMES.contains(&scheme.as_str()) {
        Err(AdapterError::SchemeNotYetSupported { scheme })
    } else {
        Err(AdapterError::UnknownScheme { scheme })
    }
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
                    assert!(info.imports(names::INCOMING_HANDLER), "{}", adapter.name);
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

    #[test]
    fn schemes_resolve_or_explain() {
        assert_eq!(backend_for_scheme("local").unwrap().name, "backend-local");
        assert_eq!(backend_for_scheme("https").unwrap().name, "backend-http");
        let err = backend_for_scheme("mqtt").unwrap_err().to_string();
        assert!(err.contains("not available in this version"), "{err}");
        let err = backend_for_scheme("tls").unwrap_err().to_string();
        assert!(err.contains("wasi:sockets has none"), "{err}");
        let err = backend_for_scheme("gopher").unwrap_err().to_string();
        assert!(err.contains("unknown broker scheme `gopher`"), "{err}");
        assert!(by_name("nope")
            .unwrap_err()
            .to_string()
            .contains("`driver-run`"));
    }
}
