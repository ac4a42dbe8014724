//! The settings baked into a composed artifact, with run-time overrides.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Error;

/// The `msgplug` format version of the config JSON this crate understands.
pub const SETTINGS_FORMAT: u32 = 1;

/// What `msgplug:adapter/config.get()` returns, after `MSGPLUG_*` overrides.
///
/// The JSON looks like `{"msgplug": 1, "backend": "local", "broker": "local:",
/// "subscribe": ["orders.>"], "queue_group": null, "options": {}}`; unknown keys are
/// ignored and every key but `msgplug` may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Settings {
    /// The format version; must equal [`SETTINGS_FORMAT`].
    pub msgplug: u32,
    /// The backend this artifact was composed with (`local`, `nats`, ...).
    #[serde(default)]
    pub backend: String,
    /// The broker URL (`local:`, `nats://127.0.0.1:4222`, ...).
    #[serde(default)]
    pub broker: String,
    /// Topic patterns to subscribe to (NATS style); empty means every topic.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// The queue / consumer group to join, if any.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// Backend-specific options; a backend ignores keys it does not know.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// True when the run wrapper flushes the outbox after the app's own run: sends outside
    /// a handler may then be confirmed in windows (see [`crate::ConfirmWindow`]).
    #[serde(default)]
    pub final_flush: bool,
    /// True when `broker` came from `MSGPLUG_BROKER` rather than the baked config.
    #[serde(skip)]
    pub broker_from_env: bool,
}

impl Settings {
    /// Parses the config JSON and applies the environment overrides that `env`
    /// returns (it maps a variable name to its value, if set).
    ///
    /// `MSGPLUG_BROKER` replaces the broker URL (ignored when empty);
    /// `MSGPLUG_SUBSCRIBE` replaces the subscriptions with its comma-separated
    /// entries (blank entries are dropped, so an empty value means every topic);
    /// `MSGPLUG_QUEUE_GROUP` replaces the queue group (empty means none).
    pub fn parse(json: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut settings: Settings = serde_json::from_str(json)
            .map_err(|e| Error::other(format!("invalid msgplug config: {e}")))?;
        if settings.msgplug != SETTINGS_FORMAT {
            return Err(Error::other(format!(
                "msgplug config format {} is not supported by this adapter (it reads format {SETTINGS_FORMAT}); compose again with a matching msgplug",
                settings.msgplug
            )));
        }
        if let Some(broker) = env("MSGPLUG_BROKER").filter(|b| !b.trim().is_empty()) {
            settings.broker = broker.trim().to_string();
            settings.broker_from_env = true;
        }
        if let Some(subscribe) = env("MSGPLUG_SUBSCRIBE") {
            settings.subscribe = subscribe
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(group) = env("MSGPLUG_QUEUE_GROUP") {
            let group = group.trim();
            settings.queue_group = (!group.is_empty()).then(|| group.to_string());
        }
        Ok(settings)
    }

    /// Returns the broker URL's scheme: the part before the first `:` (the whole
    /// URL when it has none).
    pub fn broker_scheme(&self) -> &str {
        self.broker.split(':').next().unwrap_or_default()
    }

    /// Returns the error for a broker URL that the backend `this_backend` cannot
    /// serve, naming the backend it needs and how to get it.
    pub fn wrong_backend(&self, this_backend: &str) -> Error {
        let source = if self.broker_from_env {
            "MSGPLUG_BROKER"
        } else {
            "broker"
        };
        Error::other(format!(
            "{source} `{broker}` needs the `{needed}` backend, but this component was composed with the `{this_backend}` backend; compose again with --broker {broker}",
            broker = self.broker,
            needed = backend_for_scheme(self.broker_scheme()),
        ))
    }
}

/// Maps a URL scheme to the backend that serves it (`mqtts` to `mqtt`, ...).
fn backend_for_scheme(scheme: &str) -> &str {
    match scheme {
        "tls" => "nats",
        "mqtts" => "mqtt",
        "amqps" => "amqp",
        "rediss" => "redis",
        "kafka+ssl" => "kafka",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAKED: &str = r#"{"msgplug": 1, "backend": "local", "broker": "local:", "subscribe": ["orders.>"], "queue_group": null, "options": {}}"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn parses_the_baked_config() {
        let s = Settings::parse(BAKED, no_env).unwrap();
        assert_eq!(s.backend, "local");
        assert_eq!(s.broker, "local:");
        assert_eq!(s.subscribe, ["orders.>"]);
        assert_eq!(s.queue_group, None);
        assert!(s.options.is_empty());
        assert!(!s.broker_from_env);
    }

    #[test]
    fn tolerates_missing_and_unknown_keys() {
        let s = Settings::parse(r#"{"msgplug": 1, "future": true}"#, no_env).unwrap();
        assert_eq!(
            s,
            Settings {
                msgplug: 1,
                ..Settings::default()
            }
        );
        let s = Settings::parse(
            r#"{"msgplug": 1, "queue_group": "g", "options": {"qos": "1"}}"#,
            no_env,
        )
        .unwrap();
        assert_eq!(s.queue_group.as_deref(), Some("g"));
        assert_eq!(s.options.get("qos").map(String::as_str), Some("1"));
    }

    #[test]
    fn rejects_bad_json_and_other_formats() {
        let e = Settings::parse("{", no_env).unwrap_err();
        assert!(e.to_string().starts_with("invalid msgplug config: "), "{e}");
        let e = Settings::parse(r#"{"msgplug": 2}"#, no_env).unwrap_err();
        assert!(e.to_string().contains("format 2 is not supported"), "{e}");
        assert!(Settings::parse(r#"{"broker": "x"}"#, no_env).is_err());
    }

    #[test]
    fn environment_wins() {
        let s = Settings::parse(
            BAKED,
            env_of(&[
                ("MSGPLUG_BROKER", "nats://x"),
                ("MSGPLUG_SUBSCRIBE", "a.*, ,b.>,,"),
                ("MSGPLUG_QUEUE_GROUP", "workers"),
            ]),
        )
        .unwrap();
        assert_eq!(s.broker, "nats://x");
        assert!(s.broker_from_env);
        assert_eq!(s.subscribe, ["a.*", "b.>"]);
        assert_eq!(s.queue_group.as_deref(), Some("workers"));
    }

    #[test]
    fn empty_overrides() {
        let s = Settings::parse(
            BAKED,
            env_of(&[
                ("MSGPLUG_BROKER", ""),
                ("MSGPLUG_SUBSCRIBE", ""),
                ("MSGPLUG_QUEUE_GROUP", ""),
            ]),
        )
        .unwrap();
        assert_eq!(s.broker, "local:");
        assert!(!s.broker_from_env);
        assert!(s.subscribe.is_empty());
        assert_eq!(s.queue_group, None);
    }

    #[test]
    fn wrong_backend_message() {
        let s = Settings::parse(BAKED, env_of(&[("MSGPLUG_BROKER", "nats://x")])).unwrap();
        assert_eq!(s.broker_scheme(), "nats");
        assert_eq!(
            s.wrong_backend("local").to_string(),
            "MSGPLUG_BROKER `nats://x` needs the `nats` backend, but this component was composed with the `local` backend; compose again with --broker nats://x"
        );
        let s = Settings {
            broker: "mqtts://h".into(),
            ..Settings::default()
        };
        assert_eq!(
            s.wrong_backend("local").to_string(),
            "broker `mqtts://h` needs the `mqtt` backend, but this component was composed with the `local` backend; compose again with --broker mqtts://h"
        );
        let s = Settings {
            broker: "local".into(),
            ..Settings::default()
        };
        assert_eq!(s.broker_scheme(), "local");
    }
}
