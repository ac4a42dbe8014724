//! What the Redis backend reads from [`Settings`] and the environment.

use std::time::Duration;

use common::{handler_timeout, Authority, Error, Settings, HANDLER_TIMEOUT_OPTION};
use transport::TlsSettings;

/// The port a `redis://` or `rediss://` URL without one means (as in redis-rs and
/// redis-cli: TLS does not change the default port).
const DEFAULT_PORT: u16 = 6379;

/// How long a Streams entry stays pending before another consumer may claim it, when
/// `claim_after_ms` is not given.
const DEFAULT_CLAIM_AFTER_MS: u64 = 30_000;

/// The longest `handler_timeout_ms` (12 hours, as for the other backends).
const MAX_HANDLER_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// The run-time variable that names this instance's consumer in the group.
pub const CONSUMER_VAR: &str = "MSGPLUG_REDIS_CONSUMER";

/// How the client proves who it is (`HELLO 3 AUTH user pass`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// The ACL user (`default` when only a password is given).
    pub user: Option<String>,
    /// The password.
    pub pass: Option<String>,
}

/// Streams mode: consume with a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streams {
    /// This instance's consumer name in the group.
    pub consumer: String,
    /// How long (ms) an entry stays pending before it is claimed again.
    pub claim_after_ms: u64,
    /// After this many deliveries an entry goes to the dead-letter stream.
    pub max_deliveries: Option<u64>,
}

/// Everything the backend needs to connect and subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The broker URL without credentials, for messages (`redis://host:port/db`).
    pub url: String,
    /// TLS (a `rediss://` URL), or `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// `host:port` to connect to.
    pub address: String,
    /// The database to `SELECT`, if not 0.
    pub db: Option<u32>,
    /// Credentials, if any.
    pub auth: Auth,
    /// Channels or glob patterns (pub/sub), or stream keys (Streams).
    pub subscribe: Vec<String>,
    /// `Some` in Streams mode.
    pub streams: Option<Streams>,
    /// Pub/sub: wrap sent messages in the JSON envelope (`envelope=json`).
    pub envelope: bool,
    /// Streams: `XADD ... MAXLEN ~ N`.
    pub maxlen: Option<u64>,
    /// `--queue-group`: the consumer group in Streams mode (needed to consume, not to
    /// send); without effect in pub/sub mode.
    pub queue_group: Option<String>,
}

impl Config {
    /// Reads the settings; `env` maps a variable name to its value (`REDIS_USERNAME`,
    /// `REDIS_PASSWORD` win over the URL's credentials; [`CONSUMER_VAR`] names the
    /// consumer). `random` makes the default consumer name unique.
    pub fn from_settings(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
        random: impl FnOnce() -> String,
    ) -> Result<Self, Error> {
        let parsed = parse_url(settings)?;
        let tls = match parsed.tls {
            true => Some(TlsSettings::new(&parsed.address, settings, &env)?),
            false => None,
        };
        let var = |name| env(name).filter(|v: &String| !v.is_empty());
        let auth = match (var("REDIS_USERNAME"), var("REDIS_PASSWORD")) {
            (None, None) => parsed.auth,
            (user, pass) => Auth { user, pass },
        };
        let option = |key: &str| settings.options.get(key).filter(|v| !v.is_empty());
        let number = |key: &str| -> Result<Option<u64>, Error> {
            option(key)
                .map(|text| {
                    text.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        Error::other(format!(
                            "option `{key}` must be a positive whole number, not `{text}`"
                        ))
                    })
                })
                .transpose()
        };
        let mode = option("mode")
            .map(String::as_str)
            .or(parsed.mode.as_deref());
        let handler_timeout = handler_timeout(&settings.options, MAX_HANDLER_TIMEOUT)?;
        let streams = match mode {
            None | Some("pubsub") if handler_timeout.is_some() => {
                return Err(Error::other(format!(
                    "option `{HANDLER_TIMEOUT_OPTION}` sets how long a Streams entry stays with its consumer (claim_after_ms); pub/sub has no lease: use `?mode=streams` or drop it"
                )))
            }
            None | Some("pubsub") => None,
            Some("streams") => Some(Streams {
                consumer: var(CONSUMER_VAR).unwrap_or_else(|| format!("msgplug-{}", random())),
                claim_after_ms: match (number("claim_after_ms")?, handler_timeout) {
                    (Some(_), Some(_)) => {
                        return Err(Error::other(format!(
                            "options `claim_after_ms` and `{HANDLER_TIMEOUT_OPTION}` both set how long an entry stays with its consumer: pass one of them"
                        )))
                    }
                    (None, Some(timeout)) => timeout.as_millis() as u64,
                    (claim_after_ms, None) => claim_after_ms.unwrap_or(DEFAULT_CLAIM_AFTER_MS),
                },
                max_deliveries: number("max_deliveries")?,
            }),
            Some(other) => {
                return Err(Error::other(format!(
                    "unknown Redis mode `{other}`: use `pubsub` (the default) or `streams`"
                )))
            }
        };
        let envelope = match option("envelope").map(String::as_str) {
            None | Some("none") => false,
            Some("json") => true,
            Some(other) => {
                return Err(Error::other(format!(
                    "unknown envelope `{other}`: use `json` (or leave it out for raw payloads)"
                )))
            }
        };
        let subscribe = match (settings.subscribe.is_empty(), &streams) {
            (true, None) => vec!["*".to_string()],
            _ => settings.subscribe.clone(),
        };
        Ok(Self {
            url: parsed.url,
            tls,
            address: parsed.address,
            db: parsed.db,
            auth,
            subscribe,
            streams,
            envelope,
            maxlen: number("maxlen")?,
            queue_group: settings.queue_group.clone(),
        })
    }
}

impl Config {
    /// Streams mode: the consumer group and the streams to read, or why consuming is
    /// impossible (a publish-only app needs neither).
    pub fn consuming(&self) -> Result<(&Streams, &str), Error> {
        let Some(streams) = &self.streams else {
            return Err(Error::other("not in Redis Streams mode"));
        };
        let group = self.queue_group.as_deref().ok_or_else(|| {
            Error::other(
                "Redis Streams mode consumes with a consumer group: pass --queue-group GROUP",
            )
        })?;
        if self.subscribe.is_empty() {
            return Err(Error::other(
                "Redis Streams mode needs the streams to read: pass --subscribe STREAM",
            ));
        }
        Ok((streams, group))
    }
}

/// The parts of a broker URL.
struct ParsedUrl {
    url: String,
    tls: bool,
    address: String,
    db: Option<u32>,
    auth: Auth,
    mode: Option<String>,
}

/// Splits `redis://[user[:pass]@]host[:port][/db][?mode=streams]` (or `rediss://...`).
fn parse_url(settings: &Settings) -> Result<ParsedUrl, Error> {
    let broker = settings.broker.as_str();
    let scheme = settings.broker_scheme();
    let rest = match scheme {
        "redis" | "rediss" => broker
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://")),
        _ => return Err(settings.wrong_backend("redis")),
    };
    let invalid = |why: &str| {
        Error::other(format!(
            "invalid Redis broker URL `{broker}`: {why}; expected redis://[user[:password]@]host[:port][/db][?mode=streams] or rediss://..."
        ))
    };
    let rest = rest.ok_or_else(|| invalid("missing `//` after the scheme"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut mode = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("mode", value)) => mode = Some(value.to_string()),
            _ => return Err(invalid(&format!("unknown query parameter `{pair}`"))),
        }
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let db = match path {
        "" | "0" => None,
        text => Some(
            text.parse::<u32>()
                .map_err(|_| invalid(&format!("bad database number `{text}`")))?,
        ),
    };
    let Authority {
        user,
        password,
        address,
    } = Authority::parse(authority, DEFAULT_PORT).map_err(|why| invalid(&why))?;
    // `redis://:pass@host` names no user: empty credentials are none.
    let auth = Auth {
        user: user.filter(|u| !u.is_empty()),
        pass: password.filter(|p| !p.is_empty()),
    };
    let url = match db {
        Some(db) => format!("{scheme}://{address}/{db}"),
        None => format!("{scheme}://{address}"),
    };
    Ok(ParsedUrl {
        url,
        tls: scheme == "rediss",
        address,
        db,
        auth,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/support/broker_urls.rs");

    /// The parser agrees with `msgplug compose` on the cases of `tests/broker-urls.txt`.
    #[test]
    fn agrees_with_compose_on_the_shared_broker_urls() {
        assert_agrees_with_broker_url_cases("redis", &[], |url, env| {
            Config::from_settings(&settings(url, &[], None), env, || "r".into()).map(drop)
        });
    }

    fn settings(broker: &str, subscribe: &[&str], group: Option<&str>) -> Settings {
        Settings {
            msgplug: 1,
            backend: "redis".into(),
            broker: broker.into(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            queue_group: group.map(String::from),
            ..Settings::default()
        }
    }

    fn config(settings: &Settings, env: &[(&str, &str)]) -> Result<Config, Error> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_settings(
            settings,
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            || "r4nd".into(),
        )
    }

    #[test]
    fn pubsub_defaults_to_every_channel() {
        let c = config(&settings("redis://127.0.0.1", &[], None), &[]).unwrap();
        assert_eq!(c.address, "127.0.0.1:6379");
        assert_eq!(c.url, "redis://127.0.0.1:6379");
        assert_eq!(c.subscribe, ["*"]);
        assert_eq!(c.streams, None);
        assert_eq!(c.db, None);
        assert!(!c.envelope);
    }

    #[test]
    fn reads_credentials_db_and_mode_from_the_url() {
        let s = settings(
            "redis://al%40ice:p%3Ass@h:7000/3?mode=streams",
            &["jobs"],
            Some("g"),
        );
        let c = config(&s, &[]).unwrap();
        assert_eq!(c.address, "h:7000");
        assert_eq!(c.url, "redis://h:7000/3");
        assert_eq!(c.db, Some(3));
        assert_eq!(c.auth.user.as_deref(), Some("al@ice"));
        assert_eq!(c.auth.pass.as_deref(), Some("p:ss"));
        let streams = c.streams.clone().unwrap();
        assert_eq!(c.consuming().unwrap().1, "g");
        assert_eq!(streams.consumer, "msgplug-r4nd");
        assert_eq!(streams.claim_after_ms, 30_000);
        let c = config(&settings("redis://:pw@h", &[], None), &[]).unwrap();
        assert_eq!(
            c.auth,
            Auth {
                user: None,
                pass: Some("pw".into())
            }
        );
    }

    #[test]
    fn rediss_urls_speak_tls_on_the_same_default_port() {
        let c = config(&settings("rediss://u:p@redis.example/2", &[], None), &[]).unwrap();
        assert_eq!(c.url, "rediss://redis.example:6379/2");
        assert_eq!(c.address, "redis.example:6379");
        assert_eq!(c.tls.unwrap().server_name, "redis.example");
        assert_eq!(
            config(&settings("redis://h", &[], None), &[]).unwrap().tls,
            None
        );
    }

    #[test]
    fn environment_wins() {
        let s = settings("redis://u:p@h?mode=streams", &["s"], Some("g"));
        let c = config(
            &s,
            &[("REDIS_PASSWORD", "secret"), (CONSUMER_VAR, "worker-1")],
        )
        .unwrap();
        assert_eq!(
            c.auth,
            Auth {
                user: None,
                pass: Some("secret".into())
            }
        );
        assert_eq!(c.streams.unwrap().consumer, "worker-1");
    }

    #[test]
    fn options() {
        let mut s = settings("redis://h", &["s"], Some("g"));
        for (k, v) in [
            ("mode", "streams"),
            ("claim_after_ms", "500"),
            ("max_deliveries", "3"),
            ("maxlen", "1000"),
            ("envelope", "json"),
        ] {
            s.options.insert(k.into(), v.into());
        }
        let c = config(&s, &[]).unwrap();
        let streams = c.streams.unwrap();
        assert_eq!(streams.claim_after_ms, 500);
        assert_eq!(streams.max_deliveries, Some(3));
        assert_eq!(c.maxlen, Some(1000));
        assert!(c.envelope);
        s.options.insert("maxlen".into(), "-1".into());
        let e = config(&s, &[]).unwrap_err().to_string();
        assert!(
            e.contains("option `maxlen` must be a positive whole number"),
            "{e}"
        );
    }

    #[test]
    fn handler_timeout_sets_claim_after_ms_in_streams_mode_only() {
        let with = |url: &str, options: &[(&str, &str)]| {
            let mut s = Settings {
                msgplug: 1,
                broker: url.into(),
                ..Settings::default()
            };
            for (k, v) in options {
                s.options.insert(k.to_string(), v.to_string());
            }
            Config::from_settings(&s, |_| None, || "r".into())
        };
        let streams = "redis://h?mode=streams";
        let c = with(streams, &[("handler_timeout_ms", "4000")]).unwrap();
        assert_eq!(c.streams.unwrap().claim_after_ms, 4000);
        let e = with(
            streams,
            &[("handler_timeout_ms", "4000"), ("claim_after_ms", "1")],
        );
        assert!(e.unwrap_err().to_string().contains("pass one of them"));
        let e = with("redis://h", &[("handler_timeout_ms", "4000")]).unwrap_err();
        assert!(e.to_string().contains("pub/sub has no lease"), "{e}");
    }

    #[test]
    fn mistakes_are_clear() {
        let cases = [
            (
                settings("redis://h?mode=streams", &["s"], None),
                "--queue-group GROUP",
            ),
            (
                settings("redis://h?mode=streams", &[], Some("g")),
                "--subscribe STREAM",
            ),
            (
                settings("redis://h?mode=fast", &[], None),
                "unknown Redis mode `fast`",
            ),
            (
                settings("redis://h?x=1", &[], None),
                "unknown query parameter `x=1`",
            ),
            (
                settings("redis://h/x", &[], None),
                "bad database number `x`",
            ),
            (settings("redis://h:0", &[], None), "bad port `0`"),
            (settings("redis://", &[], None), "no host"),
            (settings("rediss:h", &[], None), "missing `//`"),
            (settings("nats://h", &[], None), "needs the `nats` backend"),
        ];
        for (s, needle) in cases {
            let e = config(&s, &[]).and_then(|c| c.consuming().map(drop));
            let e = e.unwrap_err().to_string();
            assert!(e.contains(needle), "{}: {e}", s.broker);
        }
    }
}
