//! The settings baked into a composed artifact: broker URL, subscriptions, options.
//!
//! The same JSON document is what the generated config component returns from
//! `msgplug:adapter/config.get` (read by the backends, see `adapters-wasm/crates/common`)
//! and what the `msgplug-config` custom section holds for `msgplug inspect`.
//! Backends let `MSGPLUG_BROKER`, `MSGPLUG_SUBSCRIBE` and `MSGPLUG_QUEUE_GROUP` override it
//! at run time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::adapters::Adapter;
use crate::compose::{Driver, Trigger};

/// The version of the settings schema; bumped on an incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The configuration of a composed artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Schema version, [`SCHEMA_VERSION`].
    pub msgplug: u32,
    /// The backend family (`local`, `nats`, `http`, ...).
    pub backend: String,
    /// The broker URL, normalised.
    pub broker: String,
    /// Topic patterns to subscribe to; empty means every topic where the backend allows it.
    pub subscribe: Vec<String>,
    /// Queue / consumer group to share the work with other instances, if any.
    pub queue_group: Option<String>,
    /// Backend-specific options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// True when the run wrapper (`driver-wrap`) flushes the backend's outbox after the
    /// app's own run returned: the backend may then confirm sends outside a handler in
    /// windows. Left out of the JSON when false, so every other output is unchanged, and a
    /// backend reading a config without it confirms each such send before it returns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_flush: bool,
}

/// What a composed artifact records about itself in its `msgplug-config` custom section, so
/// `msgplug inspect` can describe it without running anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The tool and version that composed it, e.g. `msgplug 0.1.0`.
    pub composed_by: String,
    /// The backend adapter (recorded by its name).
    #[serde(with = "backend_by_name")]
    pub backend: &'static Adapter,
    /// The driver, if one was added (recorded by its adapter's name).
    pub driver: Option<Driver>,
    /// The trigger (`run`, `http` or `none`, never `auto`).
    pub trigger: Trigger,
    /// Whether messages or replies arrive on standard input (the `local` backend).
    pub reads_stdin: bool,
    /// Whether the backend opens network connections (`-S inherit-network`).
    pub network: bool,
    /// Environment variables the adapters read at run time, forwarded by the printed
    /// `wasmtime` command with `--env NAME`.
    #[serde(default)]
    pub run_env: Vec<String>,
    /// The baked settings (also returned by the config component).
    pub settings: Settings,
}

impl Manifest {
    /// A copy safe to show: secrets in the broker URL masked.
    pub fn redacted(&self) -> Manifest {
        Manifest {
            settings: self.settings.redacted(),
            ..self.clone()
        }
    }
}

/// A backend recorded by its adapter's name; a name this version does not embed (or a
/// driver's) does not deserialise.
mod backend_by_name {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::adapters::{self, Adapter, AdapterKind};

    pub fn serialize<S: Serializer>(backend: &&'static Adapter, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(backend.name)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'static Adapter, D::Error> {
        let name = String::deserialize(d)?;
        match adapters::by_name(&name).map_err(D::Error::custom)? {
            backend if backend.kind == AdapterKind::Backend => Ok(backend),
            _ => Err(D::Error::custom(format!("`{name}` is not a backend"))),
        }
    }
}

/// A parsed `--broker` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The normalised URL (`local` becomes `local:`).
    pub url: String,
    /// The scheme, lower case.
    pub scheme: String,
    /// Whether the URL carries a password or a secret-looking query parameter.
    pub has_secret: bool,
}

/// An error in the broker URL or the subscriptions.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The URL did not parse.
    #[error(
        "malformed broker URL `{url}`; a broker URL looks like `nats://127.0.0.1:4222` or `local`"
    )]
    MalformedUrl {
        /// The URL as given.
        url: String,
        /// Why it did not parse.
        #[source]
        source: url::ParseError,
    },
    /// A subscription pattern is empty or contains white space.
    #[error("invalid subscription `{topic}`: a topic pattern is non-empty and has no white space")]
    InvalidTopic {
        /// The pattern as given.
        topic: String,
    },
}

/// Query parameters whose values are treated as secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "pass",
    "token",
    "secret",
    "key",
    "sig",
    "signature",
];

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

/// Keys of an Azure Service Bus connection string whose values are secrets.
const CONNECTION_STRING_SECRETS: &[&str] = &["sharedaccesskey", "sharedaccesssignature"];

/// Whether `input` is an Azure Service Bus connection string (`Endpoint=sb://...;...`).
fn is_connection_string(input: &str) -> bool {
    input
        .get(..9)
        .is_some_and(|start| start.eq_ignore_ascii_case("endpoint="))
}

/// Applies `f` to the value of every secret key of a connection string.
fn map_connection_string_secrets(input: &str, f: impl Fn(&str) -> String) -> String {
    input
        .split(';')
        .map(|pair| match pair.split_once('=') {
            Some((key, value))
                if CONNECTION_STRING_SECRETS
                    .contains(&key.trim().to_ascii_lowercase().as_str()) =>
            {
                format!("{key}={}", f(value))
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses a `--broker` value. The bare word `local` (or `local:`/`local://`) is the embedded
/// backend; an Azure Service Bus connection string (`Endpoint=sb://...;...`) is kept as it is.
pub fn parse_broker(input: &str) -> Result<BrokerUrl, SettingsError> {
    let trimmed = input.trim();
    if matches!(trimmed, "local" | "local:" | "local://") {
        return Ok(BrokerUrl {
            url: "local:".to_string(),
            scheme: "local".to_string(),
            has_secret: false,
        });
    }
    if is_connection_string(trimmed) {
        return Ok(BrokerUrl {
            url: trimmed.to_string(),
            scheme: "servicebus".to_string(),
            has_secret: map_connection_string_secrets(trimmed, |_| String::new()) != trimmed,
        });
    }
    let kafka_scheme = ["kafka", "kafka+ssl"].into_iter().find(|scheme| {
        trimmed
            .strip_prefix(scheme)
            .is_some_and(|r| r.starts_with("://"))
    });
    if let Some(scheme) = kafka_scheme.filter(|_| trimmed.contains(',')) {
        // A Kafka bootstrap list (`kafka://a:9092,b:9092`) is not one URL authority; the
        // kafka check (`broker.rs`) reads it as the backend does.
        return Ok(BrokerUrl {
            url: trimmed.to_string(),
            scheme: scheme.to_string(),
            has_secret: false,
        });
    }
    let url = url::Url::parse(trimmed).map_err(|source| SettingsError::MalformedUrl {
        url: input.to_string(),
        source,
    })?;
    let has_secret =
        url.password().is_some() || url.query_pairs().any(|(k, _)| is_secret_param(&k));
    Ok(BrokerUrl {
        // The http backend's `{topic}` placeholder reads better unescaped.
        url: url.to_string().replace("%7Btopic%7D", "{topic}"),
        scheme: url.scheme().to_string(),
        has_secret,
    })
}

/// Checks subscription patterns.
pub fn check_topics(topics: &[String]) -> Result<(), SettingsError> {
    match topics
        .iter()
        .find(|t| t.is_empty() || t.chars().any(char::is_whitespace))
    {
        Some(topic) => Err(SettingsError::InvalidTopic {
            topic: topic.clone(),
        }),
        None => Ok(()),
    }
}

/// The URL with its password and secret-looking query values replaced by `****`.
pub fn redact(url: &str) -> String {
    if is_connection_string(url) {
        return map_connection_string_secrets(url, |_| "****".to_string());
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    if parsed.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = parsed.set_password(Some("****"));
    }
    if parsed.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    "****".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

impl Settings {
    /// Settings for `broker`, served by the `backend` family, with the given subscriptions
    /// and queue group, and no options.
    pub fn new(
        backend: &str,
        broker: &BrokerUrl,
        subscribe: Vec<String>,
        queue_group: Option<String>,
    ) -> Self {
        Settings {
            msgplug: SCHEMA_VERSION,
            backend: backend.to_string(),
            broker: broker.url.clone(),
            subscribe,
            queue_group,
            options: BTreeMap::new(),
            final_flush: false,
        }
    }

    /// The JSON document baked into the artifact.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("settings always serialise")
    }

    /// A copy safe to show: secrets in the broker URL masked.
    pub fn redacted(&self) -> Settings {
        Settings {
            broker: redact(&self.broker),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_is_accepted_in_every_spelling() {
        for s in ["local", "local:", "local://", " local "] {
            let b = parse_broker(s).unwrap();
            assert_eq!((b.url.as_str(), b.scheme.as_str()), ("local:", "local"));
        }
    }

    #[test]
    fn urls_parse_and_secrets_are_detected_and_redacted() {
        let b = parse_broker("nats://alice:s3cret@127.0.0.1:4222").unwrap();
        assert_eq!(b.scheme, "nats");
        assert!(b.has_secret);
        assert_eq!(redact(&b.url), "nats://alice:****@127.0.0.1:4222");
        let b = parse_broker("https://x.example/p?sig=abc&topic=t").unwrap();
        assert!(b.has_secret);
        assert_eq!(redact(&b.url), "https://x.example/p?sig=****&topic=t");
        assert!(!parse_broker("nats://127.0.0.1:4222").unwrap().has_secret);
        assert_eq!(
            parse_broker("http://h/in/{topic}").unwrap().url,
            "http://h/in/{topic}"
        );
    }

    #[test]
    fn service_bus_connection_strings_are_kept_and_their_keys_masked() {
        let cs = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc=;EntityPath=q";
        let b = parse_broker(cs).unwrap();
        assert_eq!((b.url.as_str(), b.scheme.as_str()), (cs, "servicebus"));
        assert!(b.has_secret);
        assert_eq!(
            redact(cs),
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=****;EntityPath=q"
        );
        let keyless = parse_broker("endpoint=sb://ns/;EntityPath=q").unwrap();
        assert_eq!(keyless.scheme, "servicebus");
        assert!(!keyless.has_secret);
    }

    #[test]
    fn malformed_urls_are_rejected() {
        for s in ["", "127.0.0.1:4222", "://x", "nats://[::1"] {
            let err = parse_broker(s).unwrap_err().to_string();
            assert!(err.starts_with("malformed broker URL"), "{s}: {err}");
        }
    }

    #[test]
    fn settings_round_trip_through_json() {
        let b = parse_broker("local").unwrap();
        let s = Settings::new("local", &b, vec!["orders.>".into()], Some("workers".into()));
        let json = s.to_json();
        assert_eq!(
            json,
            r#"{"msgplug":1,"backend":"local","broker":"local:","subscribe":["orders.>"],"queue_group":"workers","options":{}}"#
        );
        assert_eq!(serde_json::from_str::<Settings>(&json).unwrap(), s);
    }

    #[test]
    fn manifests_record_adapters_by_name_and_read_back_typed() {
        let manifest = Manifest {
            composed_by: "msgplug 0.1.0".into(),
            backend: crate::adapters::by_name("backend-local").unwrap(),
            driver: Some(Driver::Run),
            trigger: Trigger::Run,
            reads_stdin: true,
            network: false,
            run_env: vec![],
            settings: Settings::new("local", &parse_broker("local").unwrap(), vec![], None),
        };
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(
            (&json["backend"], &json["driver"], &json["trigger"]),
            (
                &serde_json::json!("backend-local"),
                &serde_json::json!("driver-run"),
                &serde_json::json!("run")
            )
        );
        let back: Manifest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            (back.backend.name, back.driver, back.trigger),
            ("backend-local", Some(Driver::Run), Trigger::Run)
        );
        let mut wrong = json;
        wrong["backend"] = serde_json::json!("driver-run");
        let err = serde_json::from_value::<Manifest>(wrong).unwrap_err();
        assert!(
            err.to_string().contains("`driver-run` is not a backend"),
            "{err}"
        );
    }

    #[test]
    fn topics_are_checked() {
        assert!(check_topics(&["a.b".into(), "c.>".into()]).is_ok());
        assert!(check_topics(&["".into()]).is_err());
        assert!(check_topics(&["a b".into()]).is_err());
    }
}
