//! What the Kafka backend reads from [`Settings`]: the bootstrap brokers, the topics,
//! the consumer group and the `--option` keys; and from the environment: the SASL
//! credentials and (for `kafka+ssl://`) the TLS client certificate.

use common::{Error, Settings};
use transport::TlsSettings;

use crate::sasl::{Mechanism, Sasl};

/// The scheme of a Kafka URL whose brokers speak TLS (as in Heroku's `KAFKA_URL`).
pub const TLS_SCHEME: &str = "kafka+ssl";

/// The port a `kafka://` or `kafka+ssl://` broker without one means.
const DEFAULT_PORT: u16 = 9092;

/// Where a group without a committed offset starts reading (`auto_offset_reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// From the oldest record kept.
    Earliest,
    /// From the end: only records produced from now on.
    Latest,
}

/// Everything the backend needs to connect, produce and consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The broker URL, for messages.
    pub url: String,
    /// The bootstrap brokers, `host:port` each.
    pub bootstrap: Vec<String>,
    /// The topics to consume (`--subscribe`); exact names.
    pub topics: Vec<String>,
    /// The consumer group id (`--queue-group`); required to consume.
    pub group: Option<String>,
    /// The client id sent with every request (`client_id`, default `msgplug`).
    pub client_id: String,
    /// Where to start without a committed offset (`auto_offset_reset`, default latest).
    pub offset_reset: OffsetReset,
    /// The group session timeout (`session_timeout_ms`, default 10 s).
    pub session_timeout_ms: i32,
    /// How many fetched records are handed out before fetching again
    /// (`max_poll_records`, default 500).
    pub max_poll_records: usize,
    /// The first pause before a failed record is retried (`retry_backoff_ms`, default
    /// 500 ms; it doubles up to 30 s).
    pub retry_backoff_ms: u64,
    /// Produce idempotently when the broker offers it (`idempotent`, default true).
    pub idempotent: bool,
    /// Compress produced batches with gzip (`compression=gzip`; default `none`).
    pub gzip: bool,
    /// How to authenticate, if at all (`KAFKA_USERNAME`, `KAFKA_PASSWORD`,
    /// `sasl_mechanism`).
    pub sasl: Option<Sasl>,
    /// TLS to every broker (a `kafka+ssl://` URL), or `None` for plain TCP. Its server
    /// name is the first bootstrap broker's host; each connection checks its own broker's
    /// ([`TlsSettings::for_address`]).
    pub tls: Option<TlsSettings>,
}

impl Config {
    /// Reads the settings; `env` maps a variable name to its value (`KAFKA_USERNAME`,
    /// `KAFKA_PASSWORD`, and for TLS `MSGPLUG_TLS_CERT`, `MSGPLUG_TLS_KEY`).
    pub fn from_settings(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let (bootstrap, tls) = parse_url(settings)?;
        let tls = match tls {
            true => Some(TlsSettings::new(&bootstrap[0], settings, &env)?),
            false => None,
        };
        for topic in &settings.subscribe {
            check_topic(topic).map_err(|e| Error::other(format!("cannot subscribe: {e}")))?;
        }
        let option = |key: &str| {
            settings
                .options
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let number = |key: &str, default: u64, min: u64, max: u64| -> Result<u64, Error> {
            match option(key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        Error::other(format!(
                            "--option {key}={v}: expected a whole number from {min} to {max}"
                        ))
                    }),
            }
        };
        let offset_reset = match option("auto_offset_reset") {
            None | Some("latest") => OffsetReset::Latest,
            Some("earliest") => OffsetReset::Earliest,
            Some(other) => {
                return Err(Error::other(format!(
                    "--option auto_offset_reset={other}: expected `earliest` or `latest`"
                )))
            }
        };
        let gzip = match option("compression") {
            None | Some("none") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(Error::other(format!(
                    "--option compression={other}: this adapter produces `none` or `gzip` batches; it reads uncompressed, gzip and snappy batches"
                )))
            }
        };
        let idempotent = match option("idempotent") {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(Error::other(format!(
                    "--option idempotent={other}: expected `true` or `false`"
                )))
            }
        };
        let sasl = sasl_from(option("sasl_mechanism"), &env)?;
        if let Some(group) = &settings.queue_group {
            if group.trim().is_empty() || group.len() > 255 {
                return Err(Error::other(format!("invalid consumer group id `{group}`")));
            }
        }
        Ok(Self {
            url: settings.broker.clone(),
            bootstrap,
            topics: settings.subscribe.clone(),
            group: settings.queue_group.clone(),
            gzip,
            client_id: option("client_id").unwrap_or("msgplug").to_string(),
            offset_reset,
            session_timeout_ms: number("session_timeout_ms", 10_000, 1_000, 3_600_000)? as i32,
            max_poll_records: number("max_poll_records", 500, 1, 100_000)? as usize,
            retry_backoff_ms: number("retry_backoff_ms", 500, 1, 60_000)?,
            idempotent,
            sasl,
            tls,
        })
    }
}

/// The SASL settings: the credentials from the environment, the mechanism from
/// `--option sasl_mechanism` (`PLAIN` when credentials come without one).
fn sasl_from(
    mechanism: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Sasl>, Error> {
    let var = |name| env(name).filter(|v: &String| !v.is_empty());
    let mechanism = mechanism
        .map(|name| {
            Mechanism::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
                Error::other(format!(
                    "--option sasl_mechanism={name}: expected one of {}",
                    known.join(", ")
                ))
            })
        })
        .transpose()?;
    match (var("KAFKA_USERNAME"), var("KAFKA_PASSWORD"), mechanism) {
        (Some(username), Some(password), mechanism) => Ok(Some(Sasl {
            mechanism: mechanism.unwrap_or(Mechanism::Plain),
            username,
            password,
        })),
        (None, None, None) => Ok(None),
        (None, None, Some(mechanism)) => Err(Error::other(format!(
            "--option sasl_mechanism={} needs credentials: set KAFKA_USERNAME and KAFKA_PASSWORD at run time",
            mechanism.name()
        ))),
        (Some(_), None, _) => Err(Error::other(
            "KAFKA_USERNAME is set but KAFKA_PASSWORD is not: SASL needs both",
        )),
        (None, Some(_), _) => Err(Error::other(
            "KAFKA_PASSWORD is set but KAFKA_USERNAME is not: SASL needs both",
        )),
    }
}

/// Parses `kafka://host[:port][,host[:port]...]` (or `kafka+ssl://...`) into `host:port`
/// addresses, and whether they speak TLS.
fn parse_url(settings: &Settings) -> Result<(Vec<String>, bool), Error> {
    let url = settings.broker.as_str();
    let bad = |why: &str| Error::other(format!("broker `{url}`: {why}"));
    let scheme = settings.broker_scheme();
    let tls = scheme == TLS_SCHEME;
    let Some(rest) = url
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
        .filter(|_| tls || scheme == "kafka")
    else {
        if tls || scheme == "kafka" {
            return Err(bad(&format!(
                "missing `//` (expected {scheme}://host:port)"
            )));
        }
        return Err(settings.wrong_backend("kafka"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(bad(&format!(
            "a path or query is not allowed (expected {scheme}://host:port[,host:port])"
        )));
    }
    if rest.contains('@') {
        return Err(bad(
            "credentials in the URL are not supported: set KAFKA_USERNAME and KAFKA_PASSWORD at run time",
        ));
    }
    let mut out = Vec::new();
    for server in rest.split(',') {
        if server.is_empty() {
            return Err(bad("no host"));
        }
        let (host, port) = match server.rsplit_once(':') {
            Some((host, port))
                if !host.ends_with(':') && (!host.starts_with('[') || host.ends_with(']')) =>
            {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad(&format!("bad port `{port}`")))?;
                (host, port)
            }
            _ => (server, DEFAULT_PORT),
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        out.push(format!("{host}:{port}"));
    }
    Ok((out, tls))
}

/// Checks a topic name as Kafka does: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err(format!("`{topic}` is not a valid Kafka topic name"));
    }
    match topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "topic `{topic}` contains `{c}`; Kafka topics are made of letters, digits, `.`, `_` and `-` (no wildcards)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/support/broker_urls.rs");

    fn settings(url: &str) -> Settings {
        Settings {
            msgplug: 1,
            backend: "kafka".into(),
            broker: url.into(),
            ..Settings::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sasl_from_the_environment_and_the_mechanism_option() {
        let mut s = settings("kafka://h");
        let creds = |name: &str| match name {
            "KAFKA_USERNAME" => Some("alice".to_string()),
            "KAFKA_PASSWORD" => Some("pw".to_string()),
            _ => None,
        };
        assert_eq!(Config::from_settings(&s, no_env).unwrap().sasl, None);
        let sasl = Config::from_settings(&s, creds).unwrap().sasl.unwrap();
        assert_eq!(
            (
                sasl.mechanism,
                sasl.username.as_str(),
                sasl.password.as_str()
            ),
            (Mechanism::Plain, "alice", "pw")
        );
        s.options
            .insert("sasl_mechanism".into(), "SCRAM-SHA-512".into());
        let sasl = Config::from_settings(&s, creds).unwrap().sasl.unwrap();
        assert_eq!(sasl.mechanism, Mechanism::ScramSha512);
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("needs credentials: set KAFKA_USERNAME"), "{e}");
        s.options.insert("sasl_mechanism".into(), "GSSAPI".into());
        let e = Config::from_settings(&s, creds).unwrap_err().to_string();
        assert!(
            e.contains("expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
            "{e}"
        );
        s.options.remove("sasl_mechanism");
        let only_user = |name: &str| (name == "KAFKA_USERNAME").then(|| "alice".to_string());
        let e = Config::from_settings(&s, only_user)
            .unwrap_err()
            .to_string();
        assert!(e.contains("KAFKA_PASSWORD is not"), "{e}");
        let only_password = |name: &str| (name == "KAFKA_PASSWORD").then(|| "pw".to_string());
        let e = Config::from_settings(&s, only_password)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("KAFKA_USERNAME is not") && !e.contains("pw"),
            "{e}"
        );
    }

    #[test]
    fn agrees_with_the_shared_url_cases() {
        assert_agrees_with_broker_url_cases("kafka", &[], |url, env| {
            Config::from_settings(&settings(url), env).map(drop)
        });
    }

    #[test]
    fn bootstrap_list_and_defaults() {
        let c = Config::from_settings(&settings("kafka://a:1,b,[::1]:3,[::1]"), no_env).unwrap();
        assert_eq!(c.bootstrap, ["a:1", "b:9092", "[::1]:3", "[::1]:9092"]);
        assert_eq!(c.client_id, "msgplug");
        assert_eq!(c.offset_reset, OffsetReset::Latest);
        assert_eq!(c.session_timeout_ms, 10_000);
        assert_eq!(c.max_poll_records, 500);
        assert!(c.idempotent);
        assert_eq!(c.tls, None);
    }

    #[test]
    fn kafka_ssl_urls_speak_tls_to_the_first_bootstrap_host() {
        let c = Config::from_settings(&settings("kafka+ssl://a.example,b.example:9093"), no_env)
            .unwrap();
        assert_eq!(c.bootstrap, ["a.example:9092", "b.example:9093"]);
        assert_eq!(c.tls.unwrap().server_name, "a.example");
        let e = Config::from_settings(&settings("kafka+ssl:a.example"), no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected kafka+ssl://host:port"), "{e}");
        let only_cert = |name: &str| (name == "MSGPLUG_TLS_CERT").then(|| "PEM".to_string());
        let e = Config::from_settings(&settings("kafka+ssl://a.example"), only_cert)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MSGPLUG_TLS_KEY is not"), "{e}");
    }

    #[test]
    fn rejects_bad_urls_and_options() {
        for (url, why) in [
            ("kafka:h", "missing `//`"),
            ("kafka://h:x", "bad port `x`"),
            ("kafka://h:0", "bad port `0`"),
            ("kafka://", "no host"),
            ("kafka://a,", "no host"),
            ("kafka://h/t", "path"),
            ("kafka://u:p@h", "set KAFKA_USERNAME"),
            ("nats://h", "needs the `nats` backend"),
        ] {
            let e = Config::from_settings(&settings(url), no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
        let mut s = settings("kafka://h");
        s.options
            .insert("auto_offset_reset".into(), "earliest".into());
        s.options.insert("session_timeout_ms".into(), "6000".into());
        s.options.insert("client_id".into(), "me".into());
        let c = Config::from_settings(&s, no_env).unwrap();
        assert_eq!(
            (c.offset_reset, c.session_timeout_ms, c.client_id.as_str()),
            (OffsetReset::Earliest, 6000, "me")
        );
        s.options.insert("idempotent".into(), "false".into());
        assert!(!Config::from_settings(&s, no_env).unwrap().idempotent);
        s.options.insert("idempotent".into(), "no".into());
        assert!(Config::from_settings(&s, no_env).is_err());
        s.options.remove("idempotent");
        s.options.insert("session_timeout_ms".into(), "5".into());
        assert!(Config::from_settings(&s, no_env).is_err());
        s.options.remove("session_timeout_ms");
        s.options.insert("compression".into(), "gzip".into());
        assert!(Config::from_settings(&s, no_env).unwrap().gzip);
        s.options.insert("compression".into(), "zstd".into());
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("uncompressed"), "{e}");
        s.options.remove("compression");
        s.subscribe = vec!["orders.>".into()];
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("no wildcards"), "{e}");
    }
}
