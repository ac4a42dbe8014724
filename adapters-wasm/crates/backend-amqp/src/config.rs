//! What the AMQP backend reads from [`Settings`] and the environment.

use common::{Authority, Error, Settings};
use percent_encoding::percent_decode_str;
use transport::TlsSettings;

/// The port an `amqp://` URL without one means.
const DEFAULT_PORT: u16 = 5672;

/// The port an `amqps://` URL without one means.
const DEFAULT_TLS_PORT: u16 = 5671;

/// The exchange `send` publishes to and subscriptions bind to without `--option exchange`.
pub const DEFAULT_EXCHANGE: &str = "amq.topic";

/// How many unacknowledged deliveries the broker sends ahead without `--option prefetch`.
pub const DEFAULT_PREFETCH: u16 = 10;

/// Where the consumer's messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A queue of this instance's own (exclusive, auto-delete, named by the broker),
    /// bound to the exchange with each binding key: every instance sees every message.
    Own(Vec<String>),
    /// The durable queue named after the queue group, bound with each binding key: the
    /// instances of the group compete for its messages.
    Group(String, Vec<String>),
    /// An existing queue, consumed as it is (`--option queue`): nothing is declared.
    Existing(String),
}

/// Everything the backend needs to connect and consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The broker URL without credentials, for messages (`amqp://host:port/vhost`).
    pub url: String,
    /// `host:port` to connect to.
    pub address: String,
    /// TLS (an `amqps://` URL), or `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// The virtual host.
    pub vhost: String,
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
    /// The exchange to publish to and bind to.
    pub exchange: String,
    /// The `basic.qos` prefetch count.
    pub prefetch: u16,
    /// What to consume.
    pub source: Source,
}

impl Config {
    /// Reads the settings; `env` maps a variable name to its value (`AMQP_USERNAME` and
    /// `AMQP_PASSWORD` win over the URL's credentials; there are no default ones).
    pub fn from_settings(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let (url, address, vhost, url_user, url_password) = parse_url(settings)?;
        let tls = match url.starts_with("amqps://") {
            true => Some(TlsSettings::new(&address, settings, &env)?),
            false => None,
        };
        let var = |name| env(name).filter(|v: &String| !v.is_empty());
        let user = var("AMQP_USERNAME").or(url_user);
        let password = var("AMQP_PASSWORD").or(url_password);
        let (Some(user), Some(password)) = (user, password) else {
            return Err(Error::PermissionDenied(format!(
                "no credentials for {url}: set AMQP_USERNAME and AMQP_PASSWORD (msgplug never assumes RabbitMQ's default guest/guest)"
            )));
        };
        let option = |key: &str| settings.options.get(key).filter(|v| !v.is_empty());
        let exchange = option("exchange").map_or(DEFAULT_EXCHANGE, String::as_str);
        check_name("exchange", exchange)?;
        let prefetch = match option("prefetch") {
            None => DEFAULT_PREFETCH,
            Some(text) => text.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::other(format!(
                    "option `prefetch` must be a number from 1 to 65535, not `{text}`"
                ))
            })?,
        };
        let keys = match settings.subscribe.is_empty() {
            true => vec!["#".to_string()],
            false => settings.subscribe.clone(),
        };
        for key in &keys {
            check_name("binding key", key)?;
        }
        let source = match (option("queue"), &settings.queue_group) {
            (Some(queue), None) if settings.subscribe.is_empty() => {
                check_name("queue", queue)?;
                Source::Existing(queue.clone())
            }
            (Some(_), None) => {
                return Err(Error::other(
                    "option `queue` consumes an existing queue as it is, without bindings; leave out --subscribe",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(Error::other(
                    "option `queue` and --queue-group both name the queue to consume; pass one of them",
                ))
            }
            (None, Some(group)) => {
                check_name("queue group", group)?;
                if group.starts_with("amq.") {
                    return Err(Error::other(format!(
                        "queue group `{group}`: names starting with `amq.` are reserved by the broker"
                    )));
                }
                Source::Group(group.clone(), keys)
            }
            (None, None) => Source::Own(keys),
        };
        Ok(Self {
            url,
            address,
            tls,
            vhost,
            user,
            password,
            exchange: exchange.to_string(),
            prefetch,
            source,
        })
    }
}

/// Checks that `name` fits an AMQP short string and is not empty.
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    match name.len() {
        0 => Err(Error::other(format!("the {what} is empty"))),
        1..=255 => Ok(()),
        n => Err(Error::other(format!(
            "the {what} `{name}` is {n} bytes long; AMQP allows 255"
        ))),
    }
}

/// The URL without credentials, `host:port`, the virtual host, the user and the password.
type ParsedUrl = (String, String, String, Option<String>, Option<String>);

/// Splits `amqp://[user[:pass]@]host[:port][/vhost]` (or `amqps://...`). No path or an empty one means the
/// virtual host `/`; the path is percent-decoded (`%2F` is `/`).
fn parse_url(settings: &Settings) -> Result<ParsedUrl, Error> {
    let broker = settings.broker.as_str();
    let (scheme, default_port) = match settings.broker_scheme() {
        "amqp" => ("amqp", DEFAULT_PORT),
        "amqps" => ("amqps", DEFAULT_TLS_PORT),
        _ => return Err(settings.wrong_backend("amqp")),
    };
    let rest = broker
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"));
    let invalid = |why: &str| {
        Error::other(format!(
            "invalid AMQP broker URL `{}`: {why}; expected amqp://[user[:password]@]host[:port][/vhost] or amqps://...",
            redact(broker)
        ))
    };
    let rest = rest.ok_or_else(|| invalid("missing `//` after the scheme"))?;
    if rest.contains(['?', '#']) {
        return Err(invalid("query parameters are not supported"));
    }
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (rest, ""),
    };
    if path.contains('/') {
        return Err(invalid(
            "the path is the virtual host; write a `/` in its name as `%2F`",
        ));
    }
    let decode = |text: &str| {
        percent_decode_str(text)
            .decode_utf8()
            .map(|t| t.into_owned())
            .map_err(|_| invalid("it is not UTF-8 after percent-decoding"))
    };
    let vhost = match decode(path)? {
        vhost if vhost.is_empty() => "/".to_string(),
        vhost => vhost,
    };
    let Authority {
        user,
        password,
        address,
    } = Authority::parse(authority, default_port).map_err(|why| invalid(&why))?;
    let shown_vhost = match path {
        "" => String::new(),
        path => format!("/{path}"),
    };
    Ok((
        format!("{scheme}://{address}{shown_vhost}"),
        address,
        vhost,
        user,
        password,
    ))
}

/// The URL with the password masked, for error messages.
fn redact(url: &str) -> String {
    let Some((before, after)) = url.split_once('@') else {
        return url.to_string();
    };
    match before.rsplit_once(':') {
        Some((user, _)) if user.contains("//") => format!("{user}:****@{after}"),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/support/broker_urls.rs");

    /// The parser agrees with `msgplug compose` on the cases of `tests/broker-urls.txt`.
    #[test]
    fn agrees_with_compose_on_the_shared_broker_urls() {
        assert_agrees_with_broker_url_cases(
            "amqp",
            &[("AMQP_USERNAME", "u"), ("AMQP_PASSWORD", "p")],
            |url, env| Config::from_settings(&settings(url), env).map(drop),
        );
    }

    fn settings(broker: &str) -> Settings {
        Settings {
            msgplug: 1,
            backend: "amqp".into(),
            broker: broker.into(),
            ..Settings::default()
        }
    }

    fn guest(name: &str) -> Option<String> {
        match name {
            "AMQP_USERNAME" | "AMQP_PASSWORD" => Some("guest".into()),
            _ => None,
        }
    }

    fn config(broker: &str) -> Result<Config, Error> {
        Config::from_settings(&settings(broker), guest)
    }

    #[test]
    fn tls_urls() {
        let c = config("amqps://rabbit.example/prod").unwrap();
        assert_eq!(c.url, "amqps://rabbit.example:5671/prod");
        assert_eq!(c.address, "rabbit.example:5671");
        assert_eq!(c.tls.unwrap().server_name, "rabbit.example");
        assert_eq!(config("amqp://h").unwrap().tls, None);
    }

    #[test]
    fn parses_urls() {
        let c = config("amqp://127.0.0.1:5672").unwrap();
        assert_eq!(c.url, "amqp://127.0.0.1:5672");
        assert_eq!(c.address, "127.0.0.1:5672");
        assert_eq!(c.vhost, "/");
        assert_eq!((c.user.as_str(), c.password.as_str()), ("guest", "guest"));
        assert_eq!(c.exchange, "amq.topic");
        assert_eq!(c.prefetch, DEFAULT_PREFETCH);
        assert_eq!(c.source, Source::Own(vec!["#".into()]));
        assert_eq!(config("amqp://h/").unwrap().vhost, "/");
        assert_eq!(config("amqp://h").unwrap().address, "h:5672");
        assert_eq!(config("amqp://h/prod").unwrap().vhost, "prod");
        assert_eq!(config("amqp://h/%2Fprod").unwrap().vhost, "/prod");
        assert_eq!(config("amqp://[::1]:5673/").unwrap().address, "[::1]:5673");
    }

    #[test]
    fn credentials() {
        let c = Config::from_settings(&settings("amqp://alice:s%40cret@h"), |_| None).unwrap();
        assert_eq!(c.url, "amqp://h:5672");
        assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "s@cret"));
        let c = Config::from_settings(&settings("amqp://alice:x@h"), guest).unwrap();
        assert_eq!(c.user, "guest", "the environment wins");
        let e = Config::from_settings(&settings("amqp://h"), |_| None).unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)));
        assert!(
            e.to_string()
                .contains("set AMQP_USERNAME and AMQP_PASSWORD"),
            "{e}"
        );
        let e = Config::from_settings(&settings("amqp://alice@h"), |_| None).unwrap_err();
        assert!(
            matches!(e, Error::PermissionDenied(_)),
            "a user without a password"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        let e = config("nats://h").unwrap_err().to_string();
        assert!(e.contains("needs the `nats` backend"), "{e}");
        for (url, why) in [
            ("amqp:h", "missing `//`"),
            ("amqps:h", "missing `//`"),
            ("amqp://h:x", "bad port `x`"),
            ("amqp://h:0", "bad port `0`"),
            ("amqp://", "no host"),
            ("amqp://h/a/b", "write a `/`"),
            ("amqp://h/v?heartbeat=5", "query"),
        ] {
            let e = config(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
        let e = config("amqp://u:secret@h:0").unwrap_err().to_string();
        assert!(
            e.contains("amqp://u:****@h:0") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn sources_and_options() {
        let mut s = settings("amqp://h");
        s.subscribe = vec!["orders.*".into(), "audit.#".into()];
        s.queue_group = Some("workers".into());
        s.options.insert("exchange".into(), "events".into());
        s.options.insert("prefetch".into(), "50".into());
        let c = Config::from_settings(&s, guest).unwrap();
        assert_eq!(
            c.source,
            Source::Group("workers".into(), vec!["orders.*".into(), "audit.#".into()])
        );
        assert_eq!((c.exchange.as_str(), c.prefetch), ("events", 50));
        s.options.insert("prefetch".into(), "0".into());
        assert!(Config::from_settings(&s, guest).is_err());
        s.options.insert("prefetch".into(), "70000".into());
        assert!(Config::from_settings(&s, guest).is_err());
        s.options.remove("prefetch");
        s.options.insert("queue".into(), "existing".into());
        let e = Config::from_settings(&s, guest).unwrap_err().to_string();
        assert!(e.contains("pass one of them"), "{e}");
        s.queue_group = None;
        let e = Config::from_settings(&s, guest).unwrap_err().to_string();
        assert!(e.contains("leave out --subscribe"), "{e}");
        s.subscribe.clear();
        let c = Config::from_settings(&s, guest).unwrap();
        assert_eq!(c.source, Source::Existing("existing".into()));
        s.options.remove("queue");
        s.queue_group = Some("amq.x".into());
        assert!(Config::from_settings(&s, guest).is_err());
        s.queue_group = None;
        s.subscribe = vec!["x".repeat(256)];
        assert!(Config::from_settings(&s, guest).is_err());
    }
}
