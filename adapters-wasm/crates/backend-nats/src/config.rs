//! What the NATS backend reads from [`Settings`] and the environment.

use std::fmt;
use std::time::Duration;

use transport::TlsSettings;

use common::{handler_timeout, Authority, Error, Settings, HANDLER_TIMEOUT_OPTION};

use crate::auth::Signer;
use crate::protocol::{check_name, check_subject};

/// The port a `nats://` URL without one means.
const DEFAULT_PORT: u16 = 4222;

/// The JetStream ack wait when `ack_wait_ms` is not given (the server's default).
const DEFAULT_ACK_WAIT_MS: u64 = 30_000;

/// The longest `handler_timeout_ms` (12 hours, as SQS allows): a longer lease would leave a
/// crashed instance's message unseen for longer than anyone waits.
const MAX_HANDLER_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// How the client proves who it is (the `CONNECT` fields). Its [`Debug`] masks the
/// password and the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// `user`, with `pass`.
    pub user: Option<String>,
    /// `pass`.
    pub pass: Option<String>,
    /// `auth_token`.
    pub token: Option<String>,
    /// The NKey (`NATS_NKEY`) or user credentials (`NATS_CREDS`) that sign the nonce.
    pub signer: Option<Signer>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = |secret: &Option<String>| secret.as_ref().map(|_| "****");
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("pass", &masked(&self.pass))
            .field("token", &masked(&self.token))
            .field("signer", &self.signer)
            .finish()
    }
}

/// A durable JetStream pull consumer to read from (`--jetstream` with `--durable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStream {
    /// The stream's name.
    pub stream: String,
    /// The durable consumer's name.
    pub durable: String,
    /// Create the stream (with the subscriptions as its subjects) when it is missing.
    pub create_stream: bool,
    /// How long the server waits for an ack before it redelivers, in milliseconds
    /// (`ack_wait_ms` or `handler_timeout_ms`): each delivery's lease.
    pub ack_wait_ms: u64,
}

/// Everything the backend needs to connect and subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The broker URL without credentials, for messages (`nats://host:port`).
    pub url: String,
    /// `host:port` to connect to.
    pub address: String,
    /// Credentials, if any.
    pub auth: Auth,
    /// Subjects to subscribe to; never empty (no `--subscribe` means `>`).
    pub subscribe: Vec<String>,
    /// The queue group to join, if any.
    pub queue_group: Option<String>,
    /// Read from a JetStream durable consumer instead of core subscriptions.
    pub jetstream: Option<JetStream>,
    /// TLS (a `tls://` URL), or `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// Start TLS before the server's `INFO` (`--option tls_first=true`, for servers with
    /// `handshake_first`) rather than after it.
    pub tls_first: bool,
}

impl Config {
    /// Reads the settings; `env` maps a variable name to its value
    /// (`NATS_USER`, `NATS_PASSWORD`, `NATS_TOKEN` win over the URL's credentials;
    /// `NATS_NKEY` or `NATS_CREDS` add a key that signs the server's nonce).
    pub fn from_settings(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let (url, address, url_auth) = parse_url(settings)?;
        let tls = match url.starts_with("tls://") {
            true => Some(TlsSettings::new(&address, settings, &env)?),
            false => None,
        };
        let auth = Auth {
            signer: Signer::from_env(&env).map_err(Error::other)?,
            ..auth_from_env(url_auth, &env)
        };
        let subscribe = if settings.subscribe.is_empty() {
            vec![">".to_string()]
        } else {
            settings.subscribe.clone()
        };
        for subject in &subscribe {
            check_subject(subject, true)
                .map_err(|e| Error::other(format!("cannot subscribe: {e}")))?;
        }
        if let Some(group) = &settings.queue_group {
            check_name(group).map_err(|e| Error::other(format!("invalid queue group: {e}")))?;
        }
        let option = |key: &str| settings.options.get(key).filter(|v| !v.is_empty());
        let handler_timeout = handler_timeout(&settings.options, MAX_HANDLER_TIMEOUT)?;
        let jetstream = match (option("jetstream"), option("durable")) {
            (None, None) if handler_timeout.is_some() => {
                return Err(Error::other(format!(
                    "option `{HANDLER_TIMEOUT_OPTION}` sets the ack wait of a JetStream consumer (--jetstream STREAM --durable NAME); core NATS subscriptions have no lease: nothing is redelivered"
                )))
            }
            (None, None) => None,
            (Some(stream), Some(durable)) => {
                check_name(stream)
                    .map_err(|e| Error::other(format!("invalid JetStream stream name: {e}")))?;
                check_name(durable)
                    .map_err(|e| Error::other(format!("invalid durable consumer name: {e}")))?;
                let ack_wait_ms = match (option("ack_wait_ms"), handler_timeout) {
                    (Some(_), Some(_)) => {
                        return Err(Error::other(format!(
                            "options `ack_wait_ms` and `{HANDLER_TIMEOUT_OPTION}` both set JetStream's ack wait: pass one of them"
                        )))
                    }
                    (None, Some(timeout)) => timeout.as_millis() as u64,
                    (None, None) => DEFAULT_ACK_WAIT_MS,
                    (Some(text), None) => text.parse().ok().filter(|&ms| ms > 0).ok_or_else(|| {
                        Error::other(format!(
                            "option `ack_wait_ms` must be a positive number of milliseconds, not `{text}`"
                        ))
                    })?,
                };
                Some(JetStream {
                    stream: stream.clone(),
                    durable: durable.clone(),
                    create_stream: option("create_stream").is_some_and(|v| v == "true"),
                    ack_wait_ms,
                })
            }
            (Some(_), None) => {
                return Err(Error::other(
                    "JetStream consuming needs a durable consumer: pass --durable NAME with --jetstream",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::other(
                    "a durable consumer needs its stream: pass --jetstream STREAM with --durable",
                ))
            }
        };
        let tls_first = match option("tls_first").map(String::as_str) {
            None | Some("false") => false,
            Some("true") if tls.is_some() => true,
            Some("true") => {
                return Err(Error::other(
                    "option `tls_first=true` needs a `tls://` broker URL",
                ))
            }
            Some(other) => {
                return Err(Error::other(format!(
                    "option `tls_first` must be `true` or `false`, not `{other}`"
                )))
            }
        };
        Ok(Self {
            url,
            address,
            auth,
            subscribe,
            queue_group: settings.queue_group.clone(),
            jetstream,
            tls,
            tls_first,
        })
    }
}

/// Splits `nats://[user[:pass]@]host[:port]` (or `tls://...`) into the URL without
/// credentials, `host:port` and the credentials (a user without password is a token).
fn parse_url(settings: &Settings) -> Result<(String, String, Auth), Error> {
    let broker = settings.broker.as_str();
    let scheme = settings.broker_scheme();
    let rest = match scheme {
        "nats" | "tls" => broker
            .strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://")),
        _ => return Err(settings.wrong_backend("nats")),
    };
    let invalid = |why: &str| {
        Error::other(format!(
            "invalid NATS broker URL `{broker}`: {why}; expected nats://[user[:password]@]host[:port] or tls://..."
        ))
    };
    let rest = rest.ok_or_else(|| invalid("missing `//` after the scheme"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', ',']) {
        return Err(invalid(
            "only one server, without a path or query, is supported",
        ));
    }
    let authority = Authority::parse(rest, DEFAULT_PORT).map_err(|why| invalid(&why))?;
    // A user without a password is a token.
    let auth = match (authority.user, authority.password) {
        (Some(token), None) => Auth {
            token: Some(token),
            ..Auth::default()
        },
        (user, pass) => Auth {
            user,
            pass,
            ..Auth::default()
        },
    };
    let address = authority.address;
    Ok((format!("{scheme}://{address}"), address, auth))
}

/// Applies `NATS_TOKEN`, or `NATS_USER` / `NATS_PASSWORD`, over the URL's credentials.
fn auth_from_env(url: Auth, env: &impl Fn(&str) -> Option<String>) -> Auth {
    let var = |name| env(name).filter(|v: &String| !v.is_empty());
    if let Some(token) = var("NATS_TOKEN") {
        return Auth {
            token: Some(token),
            ..Auth::default()
        };
    }
    match (var("NATS_USER"), var("NATS_PASSWORD")) {
        (None, None) => url,
        (user, pass) => Auth {
            user: user.or(url.user),
            pass: pass.or(url.pass),
            ..Auth::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/support/broker_urls.rs");

    /// The parser agrees with `msgplug compose` on the cases of `tests/broker-urls.txt`.
    #[test]
    fn agrees_with_compose_on_the_shared_broker_urls() {
        assert_agrees_with_broker_url_cases("nats", &[], |url, env| {
            Config::from_settings(&settings(url), env).map(drop)
        });
    }

    fn settings(broker: &str) -> Settings {
        Settings {
            msgplug: 1,
            backend: "nats".into(),
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
        let c = config("nats://127.0.0.1:4222").unwrap();
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.address, "127.0.0.1:4222");
        assert_eq!(c.auth, Auth::default());
        assert_eq!(c.subscribe, [">"]);
        assert_eq!(c.jetstream, None);
        assert_eq!(
            config("nats://nats.local").unwrap().address,
            "nats.local:4222"
        );
        assert_eq!(config("nats://h:1/").unwrap().address, "h:1");
        assert_eq!(config("nats://[::1]:4223").unwrap().address, "[::1]:4223");
        assert_eq!(config("nats://[::1]").unwrap().address, "[::1]:4222");
    }

    #[test]
    fn credentials_in_the_url() {
        let c = config("nats://alice:s%40cret@h:4222").unwrap();
        assert_eq!(c.url, "nats://h:4222");
        assert_eq!(c.auth.user.as_deref(), Some("alice"));
        assert_eq!(c.auth.pass.as_deref(), Some("s@cret"));
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("s@cret"),
            "{shown}"
        );
        let c = config("nats://xyzzy@h").unwrap();
        assert_eq!(c.auth.token.as_deref(), Some("xyzzy"));
        assert_eq!(c.auth.user, None);
        assert!(!format!("{c:?}").contains("xyzzy"));
    }

    #[test]
    fn environment_wins() {
        let s = settings("nats://alice:pw@h");
        let c =
            Config::from_settings(&s, |n| (n == "NATS_PASSWORD").then(|| "env".into())).unwrap();
        assert_eq!(c.auth.user.as_deref(), Some("alice"));
        assert_eq!(c.auth.pass.as_deref(), Some("env"));
        let c = Config::from_settings(&s, |n| match n {
            "NATS_USER" => Some("bob".into()),
            "NATS_TOKEN" => Some("t".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.auth,
            Auth {
                token: Some("t".into()),
                ..Auth::default()
            }
        );
        let c = Config::from_settings(&s, |_| Some(String::new())).unwrap();
        assert_eq!(c.auth.pass.as_deref(), Some("pw"));
    }

    #[test]
    fn tls_urls_and_tls_first() {
        let c = config("tls://alice:pw@nats.example").unwrap();
        assert_eq!(c.url, "tls://nats.example:4222");
        assert_eq!(c.tls.unwrap().server_name, "nats.example");
        assert!(!c.tls_first);
        assert_eq!(config("nats://h").unwrap().tls, None);
        let mut s = settings("tls://h");
        s.options.insert("tls_first".into(), "true".into());
        assert!(Config::from_settings(&s, no_env).unwrap().tls_first);
        s.options.insert("tls_first".into(), "yes".into());
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("`true` or `false`"), "{e}");
        s.broker = "nats://h".into();
        s.options.insert("tls_first".into(), "true".into());
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("needs a `tls://` broker URL"), "{e}");
    }

    #[test]
    fn rejects_bad_urls() {
        let e = config("mqtt://h").unwrap_err().to_string();
        assert!(e.contains("needs the `mqtt` backend"), "{e}");
        for (url, why) in [
            ("nats:h", "missing `//`"),
            ("nats://h:x", "bad port `x`"),
            ("nats://h:0", "bad port `0`"),
            ("nats://", "no host"),
            ("nats://a:1,b:2", "only one server"),
            ("nats://h/path", "only one server"),
        ] {
            let e = config(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn subscriptions_and_groups() {
        let mut s = settings("nats://h");
        s.subscribe = vec!["a.*".into(), "b.>".into()];
        s.queue_group = Some("workers".into());
        let c = Config::from_settings(&s, no_env).unwrap();
        assert_eq!(c.subscribe, ["a.*", "b.>"]);
        assert_eq!(c.queue_group.as_deref(), Some("workers"));
        s.subscribe = vec!["a b".into()];
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert_eq!(e, "cannot subscribe: subject `a b` contains whitespace");
        s.subscribe = vec![];
        s.queue_group = Some("a b".into());
        assert!(Config::from_settings(&s, no_env).is_err());
    }

    #[test]
    fn jetstream_options() {
        let mut s = settings("nats://h");
        s.options.insert("jetstream".into(), "ORDERS".into());
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("pass --durable"), "{e}");
        s.options.insert("durable".into(), "workers".into());
        let js = Config::from_settings(&s, no_env)
            .unwrap()
            .jetstream
            .unwrap();
        assert_eq!(
            js,
            JetStream {
                stream: "ORDERS".into(),
                durable: "workers".into(),
                create_stream: false,
                ack_wait_ms: 30_000
            }
        );
        s.options.insert("create_stream".into(), "true".into());
        s.options.insert("ack_wait_ms".into(), "1500".into());
        let js = Config::from_settings(&s, no_env)
            .unwrap()
            .jetstream
            .unwrap();
        assert!(js.create_stream);
        assert_eq!(js.ack_wait_ms, 1500);
        s.options.insert("ack_wait_ms".into(), "0".into());
        assert!(Config::from_settings(&s, no_env).is_err());
        s.options.insert("ack_wait_ms".into(), "1".into());
        s.options.insert("durable".into(), "a.b".into());
        assert!(Config::from_settings(&s, no_env).is_err());
        s.options.remove("jetstream");
        s.options.insert("durable".into(), "d".into());
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("pass --jetstream"), "{e}");
    }

    #[test]
    fn handler_timeout_sets_the_ack_wait_of_a_jetstream_consumer_only() {
        let mut s = settings("nats://h");
        s.options.insert("handler_timeout_ms".into(), "4000".into());
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("core NATS subscriptions have no lease"), "{e}");
        s.options.insert("jetstream".into(), "ORDERS".into());
        s.options.insert("durable".into(), "workers".into());
        let js = Config::from_settings(&s, no_env)
            .unwrap()
            .jetstream
            .unwrap();
        assert_eq!(js.ack_wait_ms, 4000);
        s.options.insert("ack_wait_ms".into(), "4000".into());
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("pass one of them"), "{e}");
        s.options.remove("ack_wait_ms");
        s.options.insert("handler_timeout_ms".into(), "0".into());
        let e = Config::from_settings(&s, no_env).unwrap_err().to_string();
        assert!(e.contains("from 1 to 43200000"), "{e}");
    }
}
