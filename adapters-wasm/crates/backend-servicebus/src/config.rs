//! The broker setting: an Azure connection string or a `servicebus://` URL, and the
//! SAS credentials that go with it.

use std::fmt;

use common::Error;

use crate::protocol::check_entity;

/// The environment variable with the SAS policy name, when the broker setting has none.
pub const KEY_NAME_VAR: &str = "SERVICEBUS_SAS_KEY_NAME";
/// The environment variable with the SAS key, when the broker setting has none.
pub const KEY_VAR: &str = "SERVICEBUS_SAS_KEY";

/// The setting that makes the backend speak plain `http://` to a test endpoint (the protocol
/// fake) instead of `https://`: allowed for a loopback host only, so a SAS token never
/// crosses a network in clear text.
pub const PLAIN_HTTP_FOR_TESTS: &str = "PlainHttpForTests";

/// The setting Azure's SDKs use for Microsoft's Service Bus emulator, which speaks AMQP only
/// and does not serve the REST protocol this backend uses: refused, with the reason.
const EMULATOR_SETTING: &str = "UseDevelopmentEmulator";

/// A Service Bus namespace and the credentials to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct Namespace {
    /// `https://HOST[:PORT]`, or `http://HOST[:PORT]` for a plaintext test endpoint on a
    /// loopback address ([`PLAIN_HTTP_FOR_TESTS`]).
    pub base_url: String,
    /// The SAS policy name (`skn`).
    pub key_name: String,
    /// The SAS policy key.
    pub key: String,
    /// The entity the broker setting names (`EntityPath`, or the URL's path), if any.
    pub entity_path: Option<String>,
}

impl fmt::Debug for Namespace {
    /// Shows everything but the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("base_url", &self.base_url)
            .field("key_name", &self.key_name)
            .field("key", &"***")
            .field("entity_path", &self.entity_path)
            .finish()
    }
}

/// Whether `broker` is meant for this backend: a `servicebus://` URL or a connection
/// string (`Endpoint=sb://...;...`).
pub fn is_servicebus(broker: &str) -> bool {
    broker
        .get(..13)
        .is_some_and(|s| s.eq_ignore_ascii_case("servicebus://"))
        || connection_string_parts(broker).any(|(key, _)| key.eq_ignore_ascii_case("endpoint"))
}

/// The `KEY=VALUE` parts of a connection string (the value may itself contain `=`).
fn connection_string_parts(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(';')
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
}

impl Namespace {
    /// Parses the broker setting; `env` looks up the SAS variables for a setting
    /// that carries no key.
    ///
    /// * `Endpoint=sb://HOST[:PORT]/;SharedAccessKeyName=NAME;SharedAccessKey=KEY[;EntityPath=ENTITY][;PlainHttpForTests=true]`
    ///   (keys case-insensitive; other keys such as `TransportType` do not apply to
    ///   the REST protocol and are ignored);
    /// * `servicebus://HOST[:PORT][/ENTITY][?PlainHttpForTests=true]`, with the
    ///   policy name and key in [`KEY_NAME_VAR`] and [`KEY_VAR`].
    ///
    /// The backend speaks `https://`; [`PLAIN_HTTP_FOR_TESTS`]`=true` makes it speak plain
    /// `http://` (no TLS), which is refused unless the host is a loopback address.
    /// `UseDevelopmentEmulator` is refused: Microsoft's emulator does not serve REST.
    pub fn parse(broker: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let parsed = match broker.get(..13) {
            Some(s) if s.eq_ignore_ascii_case("servicebus://") => Self::from_url(&broker[13..])?,
            _ => Self::from_connection_string(broker)?,
        };
        let Parsed {
            host,
            plain_http,
            key_name,
            key,
            entity_path,
        } = parsed;
        let from_env = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let missing = |what: &str, var: &str| {
            Error::other(format!(
                "the Service Bus broker setting has no {what}: put it in the connection string, or set {var} at run time (wasmtime run --env {var}=...)"
            ))
        };
        let key_name = key_name
            .or_else(|| from_env(KEY_NAME_VAR))
            .ok_or_else(|| missing("SAS key name (SharedAccessKeyName)", KEY_NAME_VAR))?;
        let key = key
            .or_else(|| from_env(KEY_VAR))
            .ok_or_else(|| missing("SAS key (SharedAccessKey)", KEY_VAR))?;
        if let Some(entity) = &entity_path {
            check_entity(entity, "entity path")?;
        }
        if plain_http && !is_loopback(&host) {
            return Err(Error::other(format!(
                "{PLAIN_HTTP_FOR_TESTS}=true sends the SAS token in clear text, so it is only allowed for a loopback host (127.0.0.1, [::1], localhost), not `{host}`; a Service Bus namespace is reached over https"
            )));
        }
        Ok(Self {
            base_url: format!("{}://{host}", if plain_http { "http" } else { "https" }),
            key_name,
            key,
            entity_path,
        })
    }

    /// Parses `HOST[:PORT][/ENTITY][?PlainHttpForTests=true]` (after `servicebus://`).
    fn from_url(rest: &str) -> Result<Parsed, Error> {
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.contains('@') {
            return Err(Error::other(format!(
                "a servicebus:// broker URL cannot carry credentials; set {KEY_NAME_VAR} and {KEY_VAR} at run time instead"
            )));
        }
        check_host(host, "servicebus://HOST[:PORT]/ENTITY")?;
        let mut plain_http = false;
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=').unwrap_or((param, "")) {
                (k, v) if k.eq_ignore_ascii_case(PLAIN_HTTP_FOR_TESTS) => {
                    plain_http = v.eq_ignore_ascii_case("true")
                }
                (k, _) if k.eq_ignore_ascii_case(EMULATOR_SETTING) => return Err(emulator_refused()),
                (k, _) => {
                    return Err(Error::other(format!(
                        "unknown servicebus:// URL parameter `{k}`; the only one is `{PLAIN_HTTP_FOR_TESTS}=true` (a plaintext test endpoint on a loopback address)"
                    )))
                }
            }
        }
        let path = path.trim_matches('/');
        let entity = (!path.is_empty()).then(|| path.to_string());
        Ok(Parsed {
            host: host.to_string(),
            plain_http,
            key_name: None,
            key: None,
            entity_path: entity,
        })
    }

    /// Parses an Azure connection string.
    fn from_connection_string(text: &str) -> Result<Parsed, Error> {
        let (mut endpoint, mut key_name, mut key, mut entity, mut plain_http) =
            (None, None, None, None, false);
        for (name, value) in connection_string_parts(text) {
            let value = (!value.is_empty()).then(|| value.to_string());
            match name.to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = value,
                "sharedaccesskeyname" => key_name = value,
                "sharedaccesskey" => key = value,
                "entitypath" => entity = value,
                "plainhttpfortests" => {
                    plain_http = value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
                }
                "usedevelopmentemulator" => return Err(emulator_refused()),
                "sharedaccesssignature" => {
                    return Err(Error::other(
                        "connection strings with a SharedAccessSignature are not supported; use SharedAccessKeyName and SharedAccessKey",
                    ))
                }
                _ => {}
            }
        }
        let usage = "Endpoint=sb://NAMESPACE.servicebus.windows.net/;SharedAccessKeyName=...;SharedAccessKey=...";
        let endpoint = endpoint.ok_or_else(|| {
            Error::other(format!(
                "the Service Bus connection string has no Endpoint; expected {usage}"
            ))
        })?;
        let host = match endpoint.get(..5) {
            Some(s) if s.eq_ignore_ascii_case("sb://") => endpoint[5..].trim_end_matches('/'),
            _ => {
                return Err(Error::other(format!(
                    "Endpoint `{endpoint}` is not an sb:// address; expected {usage}"
                )))
            }
        };
        check_host(host, usage)?;
        Ok(Parsed {
            host: host.to_string(),
            plain_http,
            key_name,
            key,
            entity_path: entity,
        })
    }
}

/// What either broker form says, before the environment fills in missing credentials.
struct Parsed {
    /// `HOST[:PORT]`.
    host: String,
    /// Plain http ([`PLAIN_HTTP_FOR_TESTS`]`=true`).
    plain_http: bool,
    /// The SAS policy name, if given.
    key_name: Option<String>,
    /// The SAS key, if given.
    key: Option<String>,
    /// The entity, if given.
    entity_path: Option<String>,
}

/// The error for `UseDevelopmentEmulator`.
fn emulator_refused() -> Error {
    Error::other(format!(
        "{EMULATOR_SETTING} is not supported: Microsoft's Service Bus emulator speaks AMQP only and does not serve the REST protocol msgplug uses; for a plaintext test endpoint on a loopback address, set {PLAIN_HTTP_FOR_TESTS}=true"
    ))
}

/// Whether `host` (`HOST[:PORT]`) is a loopback address: `127.0.0.0/8`, `[::1]` or
/// `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks that `host` is a bare `HOST[:PORT]`; `usage` shows the expected form.
fn check_host(host: &str, usage: &str) -> Result<(), Error> {
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if valid {
        Ok(())
    } else {
        Err(Error::other(format!(
            "`{host}` is not a Service Bus namespace host; expected {usage}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/support/broker_urls.rs");

    /// The parser agrees with `msgplug compose` on the cases of `tests/broker-urls.txt`.
    #[test]
    fn agrees_with_compose_on_the_shared_broker_urls() {
        let credentials = [(KEY_NAME_VAR, "send"), (KEY_VAR, "c2VjcmV0")];
        assert_agrees_with_broker_url_cases("servicebus", &credentials, |url, env| {
            Namespace::parse(url, env).map(drop)
        });
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn sas_env(name: &str) -> Option<String> {
        match name {
            KEY_NAME_VAR => Some("envname".into()),
            KEY_VAR => Some("envkey=".into()),
            _ => None,
        }
    }

    #[test]
    fn recognises_its_broker_settings() {
        assert!(is_servicebus("servicebus://h/q"));
        assert!(is_servicebus("ServiceBus://h"));
        assert!(is_servicebus("Endpoint=sb://h/;SharedAccessKeyName=k"));
        assert!(is_servicebus("SharedAccessKey=x;endpoint=sb://h"));
        assert!(!is_servicebus("nats://h"));
        assert!(!is_servicebus("local:"));
        assert!(!is_servicebus(""));
    }

    #[test]
    fn parses_an_azure_connection_string() {
        let ns = Namespace::parse(
            "Endpoint=sb://my-ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=abc+/def=;EntityPath=orders",
            no_env,
        )
        .unwrap();
        assert_eq!(
            ns,
            Namespace {
                base_url: "https://my-ns.servicebus.windows.net".into(),
                key_name: "RootManageSharedAccessKey".into(),
                key: "abc+/def=".into(),
                entity_path: Some("orders".into()),
            }
        );
        assert!(!format!("{ns:?}").contains("abc+"), "the key is not shown");
    }

    #[test]
    fn plain_http_for_tests_means_http_to_loopback_and_keys_are_case_insensitive() {
        let ns = Namespace::parse(
            " endpoint=sb://127.0.0.1:5300 ; sharedaccesskeyname=k ; SHAREDACCESSKEY=s ; plainhttpfortests=True; TransportType=Amqp;",
            no_env,
        )
        .unwrap();
        assert_eq!(ns.base_url, "http://127.0.0.1:5300");
        assert_eq!((ns.key_name.as_str(), ns.key.as_str()), ("k", "s"));
        assert_eq!(ns.entity_path, None);
    }

    #[test]
    fn plain_http_is_refused_for_anything_but_a_loopback_host() {
        for host in [
            "127.0.0.1:9",
            "127.1.2.3",
            "[::1]:8080",
            "localhost:1",
            "LOCALHOST",
        ] {
            let ns = Namespace::parse(
                &format!("servicebus://{host}/q?PlainHttpForTests=true"),
                sas_env,
            )
            .unwrap();
            assert_eq!(ns.base_url, format!("http://{host}"));
        }
        for host in [
            "ns.servicebus.windows.net",
            "10.0.0.1:80",
            "[::2]",
            "localhost.evil.com",
            "128.0.0.1",
        ] {
            for broker in [
                format!("servicebus://{host}/q?PlainHttpForTests=true"),
                format!("Endpoint=sb://{host}/;PlainHttpForTests=true"),
            ] {
                let e = Namespace::parse(&broker, sas_env).unwrap_err().to_string();
                assert!(
                    e.contains("only allowed for a loopback host"),
                    "{broker}: {e}"
                );
            }
        }
        let ns = Namespace::parse("servicebus://ns/q?PlainHttpForTests=false", sas_env).unwrap();
        assert_eq!(ns.base_url, "https://ns");
    }

    #[test]
    fn the_development_emulator_setting_is_refused_with_the_reason() {
        for broker in [
            "Endpoint=sb://localhost;UseDevelopmentEmulator=true",
            "servicebus://127.0.0.1/q?UseDevelopmentEmulator=true",
        ] {
            let e = Namespace::parse(broker, sas_env).unwrap_err().to_string();
            assert!(e.contains("emulator speaks AMQP only"), "{broker}: {e}");
            assert!(e.contains("set PlainHttpForTests=true"), "{broker}: {e}");
        }
    }

    #[test]
    fn a_connection_string_without_a_key_takes_it_from_the_environment() {
        let ns = Namespace::parse("Endpoint=sb://h/", sas_env).unwrap();
        assert_eq!(
            (ns.key_name.as_str(), ns.key.as_str()),
            ("envname", "envkey=")
        );
        let e = Namespace::parse("Endpoint=sb://h/;SharedAccessKeyName=k", no_env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the Service Bus broker setting has no SAS key (SharedAccessKey): put it in the connection string, or set SERVICEBUS_SAS_KEY at run time (wasmtime run --env SERVICEBUS_SAS_KEY=...)"
        );
    }

    #[test]
    fn parses_a_servicebus_url_with_the_key_from_the_environment() {
        let ns = Namespace::parse(
            "servicebus://127.0.0.1:8080/orders?PlainHttpForTests=true",
            sas_env,
        )
        .unwrap();
        assert_eq!(
            ns,
            Namespace {
                base_url: "http://127.0.0.1:8080".into(),
                key_name: "envname".into(),
                key: "envkey=".into(),
                entity_path: Some("orders".into()),
            }
        );
        let ns = Namespace::parse(
            "servicebus://ns.servicebus.windows.net/t/subscriptions/s/",
            sas_env,
        )
        .unwrap();
        assert_eq!(ns.base_url, "https://ns.servicebus.windows.net");
        assert_eq!(ns.entity_path.as_deref(), Some("t/subscriptions/s"));
        let e = Namespace::parse("servicebus://h/q", no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("set SERVICEBUS_SAS_KEY_NAME at run time"), "{e}");
    }

    #[test]
    fn rejects_malformed_settings() {
        let cases = [
            ("servicebus://name:key@h/q", "cannot carry credentials"),
            ("servicebus:///q", "is not a Service Bus namespace host"),
            (
                "servicebus://h/q?tls=false",
                "unknown servicebus:// URL parameter `tls`",
            ),
            ("servicebus://h/a*", "no wildcard subscriptions"),
            ("SharedAccessKeyName=k;SharedAccessKey=s", "no Endpoint"),
            (
                "Endpoint=https://h/;SharedAccessKeyName=k;SharedAccessKey=s",
                "is not an sb:// address",
            ),
            (
                "Endpoint=sb://h/path;SharedAccessKeyName=k;SharedAccessKey=s",
                "is not a Service Bus namespace host",
            ),
            (
                "Endpoint=sb://h;SharedAccessSignature=SharedAccessSignature sr=x",
                "SharedAccessSignature are not supported",
            ),
            (
                "Endpoint=sb://h;SharedAccessKeyName=k;SharedAccessKey=s;EntityPath=a b",
                "is not a Service Bus entity name",
            ),
        ];
        for (broker, expected) in cases {
            let e = Namespace::parse(broker, sas_env).unwrap_err().to_string();
            assert!(e.contains(expected), "{broker}: {e}");
        }
    }
}
