//! Checks of the options against the backend and driver, and the warnings for a
//! composition that still succeeds.

use std::collections::BTreeMap;
use std::fmt;

use super::{ComposeOptions, Driver};
use crate::adapters::{Adapter, Subscriptions};
use crate::analyze::ComponentInfo;
use crate::wasmtime_range::NeedsNewerWasmtime;
use crate::wit::names;

/// Something the user should know about a composition that still succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// `--trigger none` on an app that exports `incoming-handler`: nothing will call it.
    HandlerNeverCalled,
    /// A driver was added, so the app's own entry point is not exported.
    AppEntryPointHidden {
        /// The app's export that is dropped.
        export: String,
    },
    /// The broker URL carries a secret that is now baked into the output.
    SecretBaked {
        /// The URL with the secret masked.
        redacted_url: String,
        /// The variables the backend reads credentials from at run time (empty: none).
        run_env: &'static [&'static str],
    },
    /// Subscriptions are given but no driver will consume them.
    SubscriptionsUnused,
    /// Subscriptions are given but the backend receives from elsewhere.
    SubscriptionsIgnored {
        /// The backend's name.
        backend: &'static str,
        /// Where it receives from instead.
        why: &'static str,
    },
    /// A queue group is given but the backend has no use for it.
    QueueGroupIgnored {
        /// The backend's name.
        backend: &'static str,
        /// Why it makes no difference.
        why: &'static str,
    },
    /// The output imports something stock wasmtime does not provide.
    NonWasiImport {
        /// The import name.
        import: String,
    },
    /// Redis pub/sub (the default mode) with a driver: at-most-once delivery.
    RedisPubSubAtMostOnce,
    /// What the MQTT backend cannot do with these settings.
    Mqtt(MqttLimit),
    /// The output needs more than the oldest supported wasmtime release gives.
    NeedsNewerWasmtime(NeedsNewerWasmtime),
    /// The app can send metadata, and the backend's broker gets its keys in lower case.
    MetadataKeysLowerCased {
        /// The backend's name.
        backend: &'static str,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::HandlerNeverCalled => write!(
                f,
                "the app exports `incoming-handler`, but with `--trigger none` nothing will call it"
            ),
            Warning::AppEntryPointHidden { export } => write!(
                f,
                "the app's own `{export}` is not exported: the driver is the entry point \
                 (pass `--trigger none` to keep the app's)"
            ),
            Warning::SecretBaked {
                redacted_url,
                run_env,
            } => {
                write!(
                    f,
                    "the broker URL `{redacted_url}` carries a secret, which is baked into the \
                     output: anyone with the file can read it; "
                )?;
                if run_env.is_empty() {
                    write!(
                        f,
                        "pass the URL at run time instead with `wasmtime run --env MSGPLUG_BROKER=...`"
                    )
                } else {
                    write!(
                        f,
                        "leave the secret out and set {} at run time instead",
                        run_env.join(" / ")
                    )
                }
            }
            Warning::SubscriptionsUnused => write!(
                f,
                "`--subscribe` has no effect without a driver that calls a handler; the app only sends"
            ),
            Warning::SubscriptionsIgnored { backend, why } => write!(
                f,
                "`--subscribe` has no effect with the `{backend}` backend: {why}"
            ),
            Warning::QueueGroupIgnored { backend, why } => write!(
                f,
                "`--queue-group` has no effect with the `{backend}` backend: {why}"
            ),
            Warning::NonWasiImport { import } => write!(
                f,
                "the output imports `{import}`, which stock wasmtime does not provide"
            ),
            Warning::Mqtt(MqttLimit::AtMostOnce) => write!(
                f,
                "without --durable the MQTT session is clean: delivery is at-most-once (what \
                 arrives while the app is down, or whose handler fails, is lost); pass \
                 --durable CLIENT-ID for a persistent session with at-least-once delivery"
            ),
            Warning::RedisPubSubAtMostOnce => write!(
                f,
                "Redis pub/sub delivers at-most-once (what is published while the app is down \
                 or reconnecting, or whose handler fails, is lost); for at-least-once delivery \
                 use a Streams consumer group: `?mode=streams` with `--queue-group GROUP`"
            ),
            Warning::Mqtt(MqttLimit::NoProperties) => write!(
                f,
                "MQTT 3.1.1 has no message properties: metadata and content type are not \
                 sent, and request-reply fails (it needs MQTT 5)"
            ),
            Warning::NeedsNewerWasmtime(needs) => needs.fmt(f),
            Warning::MetadataKeysLowerCased { backend } => write!(
                f,
                "with the `{backend}` backend, metadata keys the app sends arrive in lower case \
                 (`OrderId` as `orderid`): they travel as HTTP header names, whose case \
                 wasmtime's outgoing HTTP does not keep"
            ),
        }
    }
}

/// A limit of the MQTT backend with the chosen settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttLimit {
    /// A clean session (no `--durable`): at-most-once delivery.
    AtMostOnce,
    /// MQTT 3.1.1: no properties, so no metadata, content type or request-reply.
    NoProperties,
}

/// The MQTT backend's limits with the broker URL `url`, the `options`, and a driver
/// (`consumes`) or not.
pub fn mqtt_warnings(
    url: &str,
    options: &BTreeMap<String, String>,
    consumes: bool,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if consumes && !options.contains_key("durable") {
        warnings.push(Warning::Mqtt(MqttLimit::AtMostOnce));
    }
    let v311 = |v: &str| v == "3.1.1" || v == "4";
    let in_url = url.split_once("?version=").is_some_and(|(_, v)| v311(v));
    if in_url || options.get("version").is_some_and(|v| v311(v)) {
        warnings.push(Warning::Mqtt(MqttLimit::NoProperties));
    }
    warnings
}

/// The Redis backend's limit with the broker URL `url`, the `options`, and a driver
/// (`consumes`) or not: pub/sub, the default mode, is at-most-once.
pub fn redis_warnings(
    url: &str,
    options: &BTreeMap<String, String>,
    consumes: bool,
) -> Vec<Warning> {
    if consumes && !redis_streams(url, options) {
        vec![Warning::RedisPubSubAtMostOnce]
    } else {
        Vec::new()
    }
}

/// Whether a Redis broker URL and options choose Streams mode (`?mode=streams` or
/// `--option mode=streams`).
pub fn redis_streams(url: &str, options: &BTreeMap<String, String>) -> bool {
    let streams = |mode: &str| mode == "streams";
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let in_url = query
        .split('&')
        .any(|pair| pair.strip_prefix("mode=").is_some_and(streams));
    in_url || options.get("mode").is_some_and(|m| streams(m))
}

/// Checks that `--option handler_timeout_ms` sets a lease with `backend` (at `url`, with
/// `options`): JetStream, SQS and Redis Streams take one at receive time; for the others
/// the error says what holds a message instead and what to set.
pub fn check_handler_timeout(
    backend: &Adapter,
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<(), CheckError> {
    let without_lease = |mode, remedy| Err(CheckError::HandlerTimeoutWithoutLease { mode, remedy });
    let elsewhere = |instead| {
        Err(CheckError::HandlerTimeoutSetElsewhere {
            backend: backend.name,
            instead,
        })
    };
    match backend.family() {
        "nats" if !options.contains_key("jetstream") => {
            without_lease("core NATS", "add --jetstream STREAM --durable NAME")
        }
        "redis" if !redis_streams(url, options) => without_lease(
            "Redis pub/sub",
            "consume a stream with `?mode=streams` and --queue-group",
        ),
        "servicebus" => elsewhere(
            "a message's lock lasts the queue's or subscription's LockDuration (up to 5 minutes): raise it above the handler's longest run; the adapter renews the lock whenever the handler sends",
        ),
        "kafka" => elsewhere(
            "a consumer holds partitions, not messages, for as long as its group session lasts: set --option session_timeout_ms above the handler's longest run (within the broker's group.max.session.timeout.ms)",
        ),
        "amqp" => elsewhere(
            "RabbitMQ holds a delivery while the connection lives, and the adapter sends no heartbeat while a handler computes (the interval is the broker's `heartbeat`, at most 60 s), so a handler longer than about two intervals loses the connection and its delivery: keep handlers shorter, and the broker's consumer_timeout above them",
        ),
        _ => Ok(()),
    }
}

/// An error in the options that no backend or driver of the composition can honour.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A subscription has wildcards, but the backend takes names.
    #[error(
        "`--subscribe {topic}`: the `{backend}` backend takes names, not patterns with \
         `*` or `>`: {names}"
    )]
    WildcardSubscription {
        /// The subscription as given.
        topic: String,
        /// The backend's name.
        backend: &'static str,
        /// What its names name.
        names: &'static str,
    },
    /// NATS `--durable` names a JetStream consumer, so it needs `--jetstream`.
    #[error("--durable with the NATS backend names a JetStream durable consumer: pass --jetstream STREAM too")]
    DurableNeedsJetStream,
    /// The backend consumes only in a group, and `--queue-group` is missing.
    #[error(
        "the `{backend}` backend needs `--queue-group GROUP-ID` to consume with the `run` \
         trigger: it receives only as a member of a group, and `--queue-group` names it \
         (for Kafka, the consumer group id)"
    )]
    QueueGroupRequired {
        /// The backend's name.
        backend: &'static str,
    },
    /// `--tls-ca` (option `tls_ca`) is not PEM certificates.
    #[error("--tls-ca: {why}; give the PEM file of the CA certificate that signed the broker's certificate (`-----BEGIN CERTIFICATE-----`)")]
    BadTlsCa {
        /// What is wrong with it.
        why: String,
    },
    /// An option no part of the composition understands.
    #[error("option `{key}` does not apply to {adapters}; {known} (`msgplug adapters` lists each adapter's options)")]
    UnknownOption {
        /// The key as given.
        key: String,
        /// The adapters in the composition, e.g. "backend `backend-local` and driver `driver-run`".
        adapters: String,
        /// The keys that do apply, or a note that there are none.
        known: String,
    },
    /// `--option handler_timeout_ms` with a value that is no lease a broker takes.
    #[error("option `handler_timeout_ms` must be a whole number of milliseconds from 1 to {MAX_HANDLER_TIMEOUT_MS} (12 hours, SQS's longest visibility timeout), not `{value}`")]
    InvalidHandlerTimeout {
        /// The value as given.
        value: String,
    },
    /// `--option handler_timeout_ms` for a way of consuming that holds no lease on a
    /// message (core NATS, Redis pub/sub).
    #[error("option `handler_timeout_ms` sets how long a delivered message stays with its consumer, and {mode} redelivers nothing: {remedy}, or drop the option")]
    HandlerTimeoutWithoutLease {
        /// The way of consuming, e.g. "core NATS".
        mode: &'static str,
        /// The flags that choose a way with a lease.
        remedy: &'static str,
    },
    /// `--option handler_timeout_ms` for a backend whose broker takes no lease at receive
    /// time.
    #[error("option `handler_timeout_ms` does not apply to backend `{backend}`: {instead}")]
    HandlerTimeoutSetElsewhere {
        /// The backend's name.
        backend: &'static str,
        /// What holds a message there, and what to set instead.
        instead: &'static str,
    },
}

/// The longest `--option handler_timeout_ms` (12 hours; the adapters check the same bound).
const MAX_HANDLER_TIMEOUT_MS: u64 = 12 * 3600 * 1000;

/// Checks `--subscribe` and `--queue-group` against what the backend does with them.
pub fn check_subscriptions(
    options: &ComposeOptions,
    backend: &Adapter,
    driver: Option<Driver>,
) -> Result<Vec<Warning>, CheckError> {
    let mut warnings = Vec::new();
    match backend.subscriptions {
        Subscriptions::Patterns | Subscriptions::Native(_) => {}
        Subscriptions::Names(names) => {
            if let Some(topic) = options.subscribe.iter().find(|t| t.contains(['*', '>'])) {
                return Err(CheckError::WildcardSubscription {
                    topic: topic.clone(),
                    backend: backend.name,
                    names,
                });
            }
        }
        Subscriptions::Unused(why) => {
            if driver.is_some_and(Driver::calls_handler) && !options.subscribe.is_empty() {
                warnings.push(Warning::SubscriptionsIgnored {
                    backend: backend.name,
                    why,
                });
            }
        }
    }
    if options.queue_group.is_none()
        && driver == Some(Driver::Run)
        && backend.queue_group_required()
    {
        return Err(CheckError::QueueGroupRequired {
            backend: backend.name,
        });
    }
    if let (Some(_), Some(why)) = (&options.queue_group, backend.queue_group_ignored) {
        warnings.push(Warning::QueueGroupIgnored {
            backend: backend.name,
            why,
        });
    }
    Ok(warnings)
}

/// Checks that every option applies to the chosen backend or driver.
pub fn check_options(
    options: &BTreeMap<String, String>,
    backend: &Adapter,
    driver: Option<&Adapter>,
) -> Result<(), CheckError> {
    let parts: Vec<&Adapter> = std::iter::once(backend).chain(driver).collect();
    let known: Vec<&str> = parts
        .iter()
        .flat_map(|a| a.options.iter().map(|o| o.key))
        .collect();
    if let Some(value) = options.get("handler_timeout_ms") {
        if !value
            .parse::<u64>()
            .is_ok_and(|ms| (1..=MAX_HANDLER_TIMEOUT_MS).contains(&ms))
        {
            return Err(CheckError::InvalidHandlerTimeout {
                value: value.clone(),
            });
        }
    }
    match options.keys().find(|key| !known.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(CheckError::UnknownOption {
            key: key.clone(),
            adapters: parts
                .iter()
                .map(|a| format!("{} `{}`", a.kind, a.name))
                .collect::<Vec<_>>()
                .join(" and "),
            known: if known.is_empty() {
                "they take no options".to_string()
            } else {
                format!(
                    "they understand: {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        }),
    }
}

/// The option `--tls-ca FILE` bakes the file's text into: the PEM of the only CA a TLS
/// backend trusts.
pub const TLS_CA_OPTION: &str = "tls_ca";

/// Checks the `--tls-ca` PEM (option [`TLS_CA_OPTION`]), if given: one or more
/// certificates and nothing else; the TLS backend reads them into its trust store.
pub fn check_tls_ca(options: &BTreeMap<String, String>) -> Result<(), CheckError> {
    use rustls_pki_types::pem::{PemObject, SectionKind};

    let Some(pem) = options.get(TLS_CA_OPTION) else {
        return Ok(());
    };
    let bad = |why: String| CheckError::BadTlsCa { why };
    let mut certificates = 0;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        match section.map_err(|e| bad(format!("unreadable PEM ({e})")))? {
            (SectionKind::Certificate, _) => certificates += 1,
            (kind, _) => return Err(bad(format!("it holds a {kind:?} section, which is not a certificate (a private key must never be baked into the output)"))),
        }
    }
    match certificates {
        0 => Err(bad("no PEM certificate in it".to_string())),
        _ => Ok(()),
    }
}

/// Backends whose broker gets metadata keys in lower case: Service Bus custom properties
/// are HTTP headers, and wasmtime's outgoing HTTP sends header names in lower case.
const LOWER_CASED_METADATA: &[&str] = &["backend-servicebus"];

/// Warns when the app can send (imports `producer` or `request-reply`) and `backend` gets
/// metadata keys in lower case.
pub fn metadata_warning(app: &ComponentInfo, backend: &Adapter) -> Option<Warning> {
    let sends = app.imports(names::PRODUCER) || app.imports(names::REQUEST_REPLY);
    (sends && LOWER_CASED_METADATA.contains(&backend.name)).then_some(
        Warning::MetadataKeysLowerCased {
            backend: backend.family(),
        },
    )
}

/// What the app's exports mean with the chosen driver: a hidden entry point, a handler
/// nothing calls, subscriptions nothing consumes.
pub fn app_warnings(
    app: &ComponentInfo,
    driver: Option<Driver>,
    options: &ComposeOptions,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if driver.is_some_and(Driver::calls_handler) {
        for (_, export) in app.entry_points() {
            warnings.push(Warning::AppEntryPointHidden {
                export: export.to_string(),
            });
        }
    } else {
        if app.exports_handler() {
            warnings.push(Warning::HandlerNeverCalled);
        }
        if !options.subscribe.is_empty() {
            warnings.push(Warning::SubscriptionsUnused);
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters;

    #[test]
    fn redis_pub_sub_with_a_driver_is_warned_about_as_at_most_once() {
        let none = BTreeMap::new();
        let streams = BTreeMap::from([("mode".to_string(), "streams".to_string())]);
        let pubsub = BTreeMap::from([("mode".to_string(), "pubsub".to_string())]);
        let url = "redis://127.0.0.1:6379";
        let warned = [Warning::RedisPubSubAtMostOnce];
        assert_eq!(redis_warnings(url, &none, true), warned);
        assert_eq!(redis_warnings(url, &pubsub, true), warned);
        assert_eq!(redis_warnings(url, &streams, true), []);
        assert_eq!(redis_warnings("redis://h/2?mode=streams", &none, true), []);
        assert_eq!(redis_warnings("redis://h?mode=pubsub", &none, true), warned);
        // A publish-only app receives nothing, so nothing is delivered at all.
        assert_eq!(redis_warnings(url, &none, false), []);
    }

    #[test]
    fn options_must_apply_to_the_backend_or_the_driver() {
        let nats = adapters::by_name("backend-nats").unwrap();
        let local = adapters::by_name("backend-local").unwrap();
        let run = adapters::by_name("driver-run").unwrap();
        let http = adapters::by_name("driver-http").unwrap();
        let options = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let jetstream = options(&[("jetstream", "S"), ("durable", "d")]);
        assert!(check_options(&jetstream, nats, Some(run)).is_ok());
        assert!(check_options(&options(&[("max_body_bytes", "10")]), local, Some(http)).is_ok());
        let err = check_options(&jetstream, local, Some(run)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option `durable` does not apply to backend `backend-local` and driver `driver-run`; \
             they take no options (`msgplug adapters` lists each adapter's options)"
        );
        let lease = options(&[("handler_timeout_ms", "4000"), ("jetstream", "S")]);
        assert!(check_options(&lease, nats, Some(run)).is_ok());

        for bad in ["0", "4s", "43200001"] {
            let err = check_options(&options(&[("handler_timeout_ms", bad)]), nats, Some(run));
            assert_eq!(
                err.unwrap_err().to_string(),
                format!(
                    "option `handler_timeout_ms` must be a whole number of milliseconds from 1 to \
                     43200000 (12 hours, SQS's longest visibility timeout), not `{bad}`"
                )
            );
        }
        let err = check_options(&options(&[("qos", "1")]), nats, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option `qos` does not apply to backend `backend-nats`; they understand: \
             `jetstream`, `durable`, `create_stream`, `ack_wait_ms`, `handler_timeout_ms`, \
             `confirm_window`, `confirm_window_ms` (`msgplug adapters` lists each adapter's options)"
        );
    }

    #[test]
    fn lower_cased_metadata_is_warned_about_when_the_app_can_send() {
        let app = |imports: &[&str]| ComponentInfo {
            imports: imports.iter().map(|i| i.to_string()).collect(),
            exports: Vec::new(),
            manifest: None,
            uses_async_abi: false,
        };
        let servicebus = adapters::by_name("backend-servicebus").unwrap();
        let warning = metadata_warning(&app(&[names::TYPES, names::PRODUCER]), servicebus);
        assert_eq!(
            warning.map(|w| w.to_string()).as_deref(),
            Some(
                "with the `servicebus` backend, metadata keys the app sends arrive in lower case \
                 (`OrderId` as `orderid`): they travel as HTTP header names, whose case \
                 wasmtime's outgoing HTTP does not keep"
            )
        );
        assert!(metadata_warning(&app(&[names::REQUEST_REPLY]), servicebus).is_some());
        assert_eq!(metadata_warning(&app(&[names::TYPES]), servicebus), None);
        let sqs = adapters::by_name("backend-sqs").unwrap();
        assert_eq!(metadata_warning(&app(&[names::PRODUCER]), sqs), None);
    }

    #[test]
    fn subscriptions_and_queue_groups_are_checked_against_the_backend() {
        let by = |name| adapters::by_name(name).unwrap();
        let options = |subscribe: &[&str], queue_group: Option<&str>| ComposeOptions {
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            queue_group: queue_group.map(str::to_string),
            ..ComposeOptions::default()
        };
        let run = Some(Driver::Run);
        let nats = options(&["orders.>"], Some("workers"));
        assert_eq!(
            check_subscriptions(&nats, by("backend-nats"), run).unwrap(),
            []
        );
        let err = check_subscriptions(&nats, by("backend-servicebus"), run).unwrap_err();
        assert!(
            matches!(err, CheckError::WildcardSubscription { ref topic, .. } if topic == "orders.>"),
            "{err}"
        );
        let names = options(&["orders", "events/subscriptions/audit"], None);
        assert_eq!(
            check_subscriptions(&names, by("backend-servicebus"), run).unwrap(),
            []
        );
        let warnings = check_subscriptions(&nats, by("backend-sqs"), run).unwrap();
        assert!(matches!(
            warnings[..],
            [
                Warning::SubscriptionsIgnored {
                    backend: "backend-sqs",
                    ..
                },
                Warning::QueueGroupIgnored {
                    backend: "backend-sqs",
                    ..
                }
            ]
        ));
        assert_eq!(
            check_subscriptions(&nats, by("backend-sqs"), None).unwrap()[..1],
            [Warning::QueueGroupIgnored {
                backend: "backend-sqs",
                why: by("backend-sqs").queue_group_ignored.unwrap()
            }],
            "without a driver, SubscriptionsUnused says it already"
        );
        let kafka = options(&["orders"], None);
        let err = check_subscriptions(&kafka, by("backend-kafka"), run).unwrap_err();
        assert!(
            matches!(
                err,
                CheckError::QueueGroupRequired {
                    backend: "backend-kafka",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            check_subscriptions(&kafka, by("backend-kafka"), None).unwrap(),
            []
        );
    }
}
