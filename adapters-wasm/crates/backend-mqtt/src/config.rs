//! What the MQTT backend reads from [`Settings`] and the environment.

use common::{Authority, Error, Settings};
use transport::TlsSettings;

use crate::protocol::Version;

/// The port an `mqtt://` URL without one means.
const DEFAULT_PORT: u16 = 1883;

/// The port an `mqtts://` URL without one means.
const DEFAULT_TLS_PORT: u16 = 8883;

/// The keep-alive interval when `keep_alive` is not given, in seconds.
const DEFAULT_KEEP_ALIVE: u16 = 30;

/// How long the broker keeps a `--durable` session after the connection ends, in
/// seconds, when `session_expiry` is not given (one day).
const DEFAULT_SESSION_EXPIRY: u32 = 86_400;

/// The form of a broker URL, for error messages.
const USAGE: &str = "expected mqtt://[user[:password]@]host[:port][?version=3.1.1] or mqtts://...";

/// Everything the backend needs to connect and subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The broker URL without credentials or query, for messages (`mqtt://host:port`).
    pub url: String,
    /// `host:port` to connect to.
    pub address: String,
    /// TLS (an `mqtts://` URL), or `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// The protocol version.
    pub version: Version,
    /// The user name (`MQTT_USERNAME` wins over the URL's).
    pub username: Option<String>,
    /// The password (`MQTT_PASSWORD` wins over the URL's).
    pub password: Option<String>,
    /// The client identifier: `--durable`'s, `MSGPLUG_CLIENT_ID`, or a fresh one.
    pub client_id: Option<String>,
    /// True with `--durable`: a persistent session, acks after the handler's `Ok`.
    pub durable: bool,
    /// Seconds the broker keeps a durable session after the connection ends (MQTT 5).
    pub session_expiry: u32,
    /// The keep-alive interval in seconds.
    pub keep_alive: u16,
    /// The QoS of sends, 0 or 1.
    pub qos: u8,
    /// The topic filters to subscribe to, `$share/GROUP/` prefixed with a queue group;
    /// never empty (no `--subscribe` means `#`).
    pub filters: Vec<String>,
}

impl Config {
    /// Reads the settings; `env` maps a variable name to its value (`MQTT_USERNAME`,
    /// `MQTT_PASSWORD`, `MSGPLUG_CLIENT_ID`, and the client certificate of
    /// [`TlsSettings::new`]).
    pub fn from_settings(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let (url, address, url_version, user, pass) = parse_url(settings)?;
        let tls = match url.starts_with("mqtts://") {
            true => Some(TlsSettings::new(&address, settings, &env)?),
            false => None,
        };
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let option = |key: &str| settings.options.get(key).filter(|v| !v.is_empty());
        let version = match (url_version, option("version")) {
            (Some(a), Some(b)) if a != parse_version(b)? => {
                return Err(Error::other(
                    "the broker URL's `?version=` and option `version` disagree",
                ))
            }
            (Some(v), _) => v,
            (None, Some(v)) => parse_version(v)?,
            (None, None) => Version::V5,
        };
        let qos = match option("qos").map(String::as_str) {
            None | Some("1") => 1,
            Some("0") => 0,
            Some(other) => {
                return Err(Error::other(format!(
                    "option `qos` must be 0 or 1, not `{other}`"
                )))
            }
        };
        let number = |key: &str, default: u32, max: u32| match option(key) {
            None => Ok(default),
            Some(text) => text.parse().ok().filter(|&n| n <= max).ok_or_else(|| {
                Error::other(format!(
                    "option `{key}` must be a number of seconds up to {max}, not `{text}`"
                ))
            }),
        };
        let keep_alive = number("keep_alive", DEFAULT_KEEP_ALIVE.into(), u16::MAX.into())? as u16;
        let session_expiry = number("session_expiry", DEFAULT_SESSION_EXPIRY, u32::MAX)?;
        let durable = option("durable").cloned();
        let client_id = var("MSGPLUG_CLIENT_ID").or(durable.clone());
        if let Some(id) = &client_id {
            if id.len() > 65_535 || id.contains('\0') {
                return Err(Error::other(format!("invalid MQTT client id `{id}`")));
            }
        }
        let subscribe = if settings.subscribe.is_empty() {
            vec!["#".to_string()]
        } else {
            settings.subscribe.clone()
        };
        for filter in &subscribe {
            check_filter(filter).map_err(|e| Error::other(format!("cannot subscribe: {e}")))?;
        }
        let filters = match &settings.queue_group {
            None => subscribe,
            Some(group) => {
                if group.contains(['/', '+', '#', '\0']) {
                    return Err(Error::other(format!(
                        "invalid queue group `{group}`: a shared subscription's name has no `/`, `+` or `#`"
                    )));
                }
                subscribe
                    .iter()
                    .map(|f| format!("$share/{group}/{f}"))
                    .collect()
            }
        };
        Ok(Self {
            url,
            address,
            tls,
            version,
            username: var("MQTT_USERNAME").or(user),
            password: var("MQTT_PASSWORD").or(pass),
            client_id,
            durable: durable.is_some(),
            session_expiry,
            keep_alive,
            qos,
            filters,
        })
    }
}

/// `5` (or `5.0`) or `3.1.1` (or `4`).
fn parse_version(text: &str) -> Result<Version, Error> {
    match text {
        "5" | "5.0" => Ok(Version::V5),
        "3.1.1" | "4" => Ok(Version::V311),
        other => Err(Error::other(format!(
            "MQTT version `{other}` is not supported; use 5 (the default) or 3.1.1"
        ))),
    }
}

/// The parts of a broker URL: the URL without credentials, `host:port`, the version in
/// the query, the user name and the password.
type UrlParts = (
    String,
    String,
    Option<Version>,
    Option<String>,
    Option<String>,
);

/// Splits `mqtt://[user[:pass]@]host[:port][/][?version=V]` (or `mqtts://...`).
fn parse_url(settings: &Settings) -> Result<UrlParts, Error> {
    let broker = settings.broker.as_str();
    let (scheme, default_port) = match settings.broker_scheme() {
        "mqtt" => ("mqtt", DEFAULT_PORT),
        "mqtts" => ("mqtts", DEFAULT_TLS_PORT),
        _ => return Err(settings.wrong_backend("mqtt")),
    };
    let rest = broker
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"));
    let invalid = |why: &str| {
        Error::other(format!(
            "invalid MQTT broker URL `{broker}`: {why}; {USAGE}"
        ))
    };
    let rest = rest.ok_or_else(|| invalid("missing `//` after the scheme"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let version = match query {
        None => None,
        Some(query) => match query.strip_prefix("version=") {
            Some(v) if !v.contains('&') => Some(parse_version(v)?),
            _ => return Err(invalid("the only query parameter is `version`")),
        },
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '#', ',']) {
        return Err(invalid("only one broker, without a path, is supported"));
    }
    let Authority {
        user,
        password: pass,
        address,
    } = Authority::parse(rest, default_port).map_err(|why| invalid(&why))?;
    Ok((
        format!("{scheme}://{address}"),
        address,
        version,
        user,
        pass,
    ))
}

/// Checks a topic filter: levels split by `/`, `+` a whole level, `#` a whole last level.
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter is empty".into());
    }
    if filter.contains('\0') {
        return Err(format!("topic filter `{filter}` contains NUL"));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        let ok = match *level {
            "+" => true,
            "#" => i == levels.len() - 1,
            _ => !wild,
        };
        if !ok {
            return Err(format!(
                "topic filter `{filter}`: `+` must be a whole level and `#` the whole last level"
            ));
        }
    }
    Ok(())
}

/// Checks a topic name to publish to: not empty, no wildcards, no NUL.
pub fn check_topic(topic: &str) -> Result<(), Error> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return Err(Error::other(format!(
            "cannot publish to `{topic}`: an MQTT topic name is not empty and has no `+`, `#` or NUL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/support/broker_urls.rs");

    /// The parser agrees with `msgplug compose` on the cases of `tests/broker-urls.txt`.
    #[test]
    fn agrees_with_compose_on_the_shared_broker_urls() {
        assert_agrees_with_broker_url_cases("mqtt", &[], |url, env| {
            Config::from_settings(&settings(url), env).map(drop)
        });
    }

    fn settings(broker: &str) -> Settings {
        Settings {
            msgplug: 1,
            backend: "mqtt".into(),
            broker: broker.into(),
            ..Settings::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn config(broker: &str) -> Result<Config, Error> {
        Config::from_settings(&settings(broker), no_env)
    }

    #[test]
    fn parses_urls() {
        let c = config("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(c.url, "mqtt://127.0.0.1:1883");
        assert_eq!(c.address, "127.0.0.1:1883");
        assert_eq!(c.version, Version::V5);
        assert_eq!((c.username, c.password), (None, None));
        assert_eq!(c.filters, ["#"]);
        assert_eq!((c.qos, c.durable, c.client_id), (1, false, None));
        assert_eq!(config("mqtt://h").unwrap().address, "h:1883");
        assert_eq!(config("mqtt://[::1]").unwrap().address, "[::1]:1883");
        let c = config("mqtt://h:1/?version=3.1.1").unwrap();
        assert_eq!((c.address.as_str(), c.version), ("h:1", Version::V311));
    }

    #[test]
    fn tls_urls() {
        let c = config("mqtts://alice:pw@broker.example").unwrap();
        assert_eq!(c.url, "mqtts://broker.example:8883");
        assert_eq!(c.address, "broker.example:8883");
        assert_eq!(c.tls.unwrap().server_name, "broker.example");
        assert_eq!(config("mqtts://h:1").unwrap().address, "h:1");
        assert_eq!(config("mqtt://h").unwrap().tls, None);
    }

    #[test]
    fn credentials() {
        let c = config("mqtt://alice:s%40cret@h").unwrap();
        assert_eq!(c.url, "mqtt://h:1883");
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        let c = Config::from_settings(&settings("mqtt://alice:pw@h"), |n| {
            (n == "MQTT_PASSWORD").then(|| "env".into())
        })
        .unwrap();
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("env"));
    }

    #[test]
    fn rejects_bad_urls() {
        let e = config("nats://h").unwrap_err().to_string();
        assert!(e.contains("needs the `nats` backend"), "{e}");
        for (url, why) in [
            ("mqtt:h", "missing `//`"),
            ("mqtts:h", "missing `//`"),
            ("mqtt://h:x", "bad port `x`"),
            ("mqtt://", "no host"),
            ("mqtt://h/path", "without a path"),
            ("mqtt://h?qos=1", "only query parameter"),
            ("mqtt://h?version=3", "version `3` is not supported"),
        ] {
            let e = config(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn options_and_client_ids() {
        let mut s = settings("mqtt://h");
        s.options.insert("qos".into(), "0".into());
        s.options.insert("version".into(), "3.1.1".into());
        s.options.insert("durable".into(), "worker".into());
        s.options.insert("keep_alive".into(), "5".into());
        s.options.insert("session_expiry".into(), "60".into());
        let c = Config::from_settings(&s, no_env).unwrap();
        assert_eq!((c.qos, c.version, c.keep_alive), (0, Version::V311, 5));
        assert_eq!((c.durable, c.session_expiry), (true, 60));
        assert_eq!(c.client_id.as_deref(), Some("worker"));
        let c =
            Config::from_settings(&s, |n| (n == "MSGPLUG_CLIENT_ID").then(|| "w2".into())).unwrap();
        assert_eq!(c.client_id.as_deref(), Some("w2"));
        s.broker = "mqtt://h?version=5".into();
        assert!(Config::from_settings(&s, no_env).is_err());
        s.broker = "mqtt://h".into();
        s.options.insert("qos".into(), "2".into());
        assert!(Config::from_settings(&s, no_env).is_err());
        s.options.insert("qos".into(), "1".into());
        s.options.insert("keep_alive".into(), "70000".into());
        assert!(Config::from_settings(&s, no_env).is_err());
    }

    #[test]
    fn filters_and_shared_subscriptions() {
        let mut s = settings("mqtt://h");
        s.subscribe = vec!["a/+/c".into(), "b/#".into()];
        s.queue_group = Some("workers".into());
        let c = Config::from_settings(&s, no_env).unwrap();
        assert_eq!(c.filters, ["$share/workers/a/+/c", "$share/workers/b/#"]);
        s.queue_group = Some("a/b".into());
        assert!(Config::from_settings(&s, no_env).is_err());
        for bad in ["a/#/c", "a+/b", "a/b#", ""] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        for good in ["#", "+", "a/+/+", "/a", "a//b", "sport/#"] {
            assert_eq!(check_filter(good), Ok(()), "{good}");
        }
        assert!(check_topic("a/b").is_ok());
        assert!(check_topic("a/+").is_err());
        assert!(check_topic("").is_err());
    }
}
