//! Compose-time checks of a broker URL, per backend family, as strict as the backend's own
//! parser at run time (in `adapters-wasm/crates/backend-*`): a URL the backend would refuse
//! when it starts is refused by `compose`, and what the backend can only take from the
//! environment at run time is named ([`FromEnv`]).
//!
//! The adapters cannot be linked into the host, so these are equivalents of their parsers;
//! `tests/broker-urls.txt` lists URLs with the verdict every parser must give, and the unit
//! tests here and in each backend crate check their parser against it.

use std::fmt;

use crate::config::{redact, BrokerUrl};

/// Something a backend reads from the environment at run time because the URL cannot say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromEnv {
    /// What it is, e.g. `AWS credentials`.
    pub what: &'static str,
    /// The variables the backend reads it from.
    pub vars: &'static [&'static str],
    /// Whether the backend fails to start when none of them is set.
    pub required: bool,
    /// Whether it is credentials (which belong in the environment, never in the URL).
    pub credentials: bool,
}

impl fmt::Display for FromEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} from the environment at run time ({})",
            self.what,
            if self.required {
                "must come"
            } else {
                "may come"
            },
            self.vars
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A broker URL the backend would refuse when it starts.
#[derive(Debug, thiserror::Error)]
#[error("invalid `{backend}` broker URL `{url}`: {why}; {usage}")]
pub struct BrokerUrlError {
    /// The backend family (`nats`, `sqs`, ...).
    pub backend: &'static str,
    /// The URL as it would be baked, with secrets masked.
    pub url: String,
    /// What is wrong with it.
    pub why: String,
    /// The form the backend expects.
    pub usage: &'static str,
}

const NATS_CREDENTIALS: FromEnv = FromEnv {
    what: "credentials, if the server needs them,",
    vars: &[
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_NKEY",
        "NATS_CREDS",
    ],
    required: false,
    credentials: true,
};
/// Mutual TLS, for every TLS backend (`backend-*-tls`, see `adapters::TLS_RUN_ENV`).
const TLS_CLIENT_CERTIFICATE: FromEnv = FromEnv {
    what: "a TLS client certificate and its key (PEM text), if the server asks for one,",
    vars: &crate::adapters::TLS_RUN_ENV,
    required: false,
    credentials: true,
};
const AMQP_CREDENTIALS: FromEnv = FromEnv {
    what: "credentials (the URL has none, and there are no default ones)",
    vars: &["AMQP_USERNAME", "AMQP_PASSWORD"],
    required: true,
    credentials: true,
};
const MQTT_CREDENTIALS: FromEnv = FromEnv {
    what: "credentials, if the broker needs them,",
    vars: &["MQTT_USERNAME", "MQTT_PASSWORD"],
    required: false,
    credentials: true,
};
const REDIS_CREDENTIALS: FromEnv = FromEnv {
    what: "credentials, if the server needs them,",
    vars: &["REDIS_USERNAME", "REDIS_PASSWORD"],
    required: false,
    credentials: true,
};
const KAFKA_CREDENTIALS: FromEnv = FromEnv {
    what: "SASL credentials, if the broker needs them,",
    vars: &["KAFKA_USERNAME", "KAFKA_PASSWORD"],
    required: false,
    credentials: true,
};
const AWS_CREDENTIALS: FromEnv = FromEnv {
    what: "AWS credentials (a session token only with temporary ones)",
    vars: &[
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ],
    required: true,
    credentials: true,
};
const AWS_REGION: FromEnv = FromEnv {
    what: "the region (the URL names none)",
    vars: &["AWS_REGION"],
    required: true,
    credentials: false,
};
const AWS_ENDPOINT: FromEnv = FromEnv {
    what: "an endpoint other than AWS's",
    vars: &["AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"],
    required: false,
    credentials: false,
};
const SAS_KEY_NAME: FromEnv = FromEnv {
    what: "the SAS key name (the broker setting has none)",
    vars: &["SERVICEBUS_SAS_KEY_NAME"],
    required: true,
    credentials: true,
};
const SAS_KEY: FromEnv = FromEnv {
    what: "the SAS key (the broker setting has none)",
    vars: &["SERVICEBUS_SAS_KEY"],
    required: true,
    credentials: true,
};

/// Checks `broker` as the `family` backend parses it when it starts, and returns what
/// that backend will take from the environment. `None` when msgplug has no check for
/// the family (a test keeps every embedded backend covered).
pub fn check(family: &str, broker: &BrokerUrl) -> Option<Result<Vec<FromEnv>, BrokerUrlError>> {
    let url = broker.url.as_str();
    Some(match family {
        "local" => local(url),
        "nats" => nats(url),
        "amqp" => amqp(url),
        "mqtt" => mqtt(url),
        "redis" => redis(url),
        "kafka" => kafka(url),
        "http" => http(url),
        "sqs" => sqs(url),
        "servicebus" => servicebus(url),
        _ => return None,
    })
}

/// Makes the error for `url` in the `backend` family.
fn invalid(
    backend: &'static str,
    url: &str,
    usage: &'static str,
) -> impl Fn(&str) -> BrokerUrlError {
    let url = redact(url);
    move |why| BrokerUrlError {
        backend,
        url: url.clone(),
        why: why.to_string(),
        usage,
    }
}

/// `backend-local`: `local:` (msgplug normalises `local` and `local://` to it).
fn local(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    match url {
        "local:" => Ok(Vec::new()),
        _ => Err(invalid("local", url, "use `local`")(
            "it names no local broker",
        )),
    }
}

/// `backend-nats` (`config.rs`, `parse_url`): `nats://[USER[:PASSWORD]@]HOST[:PORT]`, or
/// `tls://...` for `backend-nats-tls`.
fn nats(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let invalid = invalid(
        "nats",
        url,
        "expected `nats://[USER[:PASSWORD]@]HOST[:PORT]` (or `tls://...`)",
    );
    let (tls, rest) = match url.strip_prefix("tls:") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("nats:").unwrap_or(url)),
    };
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| invalid("missing `//` after the scheme"))?;
    let mut from_env = server(rest, &invalid, NATS_CREDENTIALS)?;
    if tls {
        from_env.push(TLS_CLIENT_CERTIFICATE);
    }
    Ok(from_env)
}

/// `backend-mqtt` (`config.rs`, `parse_url`):
/// `mqtt://[USER[:PASSWORD]@]HOST[:PORT][?version=3.1.1]`, or `mqtts://...` for
/// `backend-mqtt-tls`.
fn mqtt(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let invalid = invalid(
        "mqtt",
        url,
        "expected `mqtt://[USER[:PASSWORD]@]HOST[:PORT][?version=3.1.1]` (or `mqtts://...`)",
    );
    let (tls, rest) = match url.strip_prefix("mqtts:") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("mqtt:").unwrap_or(url)),
    };
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| invalid("missing `//` after the scheme"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    if let Some(query) = query {
        if !matches!(
            query.strip_prefix("version="),
            Some("5" | "5.0" | "3.1.1" | "4")
        ) {
            return Err(invalid(
                "the only query parameter is `version`, 5 (the default) or 3.1.1",
            ));
        }
    }
    let mut from_env = server(rest, &invalid, MQTT_CREDENTIALS)?;
    if tls {
        from_env.push(TLS_CLIENT_CERTIFICATE);
    }
    Ok(from_env)
}

/// The `[USER[:PASSWORD]@]HOST[:PORT][/]` part of a NATS or MQTT URL; `credentials` are
/// what the backend reads from the environment when the URL has none.
fn server(
    rest: &str,
    invalid: &impl Fn(&str) -> BrokerUrlError,
    credentials: FromEnv,
) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', ',']) {
        return Err(invalid(
            "only one server, without a path or query, is supported",
        ));
    }
    Ok(match check_authority(rest, invalid)? {
        true => Vec::new(),
        false => vec![credentials],
    })
}

/// Checks `[USER[:PASSWORD]@]HOST[:PORT]` as the TCP backends (NATS, MQTT, AMQP, Redis) parse it;
/// returns whether it carries credentials.
fn check_authority(
    authority: &str,
    invalid: &impl Fn(&str) -> BrokerUrlError,
) -> Result<bool, BrokerUrlError> {
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    if userinfo.is_some_and(|u| !percent_decodes_to_utf8(u)) {
        return Err(invalid("credentials are not UTF-8 after percent-decoding"));
    }
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.ends_with(']') => {
            if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                return Err(invalid(&format!("bad port `{port}`")));
            }
            host
        }
        _ => host_port,
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    Ok(userinfo.is_some())
}

/// `backend-amqp` (`config.rs`, `parse_url`): `amqp://[USER[:PASSWORD]@]HOST[:PORT][/VHOST]`,
/// or `amqps://...` for `backend-amqp-tls`; the backend needs a user and a password, from
/// the URL or the environment.
fn amqp(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let invalid = invalid(
        "amqp",
        url,
        "expected `amqp://[USER[:PASSWORD]@]HOST[:PORT][/VHOST]` (or `amqps://...`)",
    );
    let (tls, rest) = match url.strip_prefix("amqps:") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("amqp:").unwrap_or(url)),
    };
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| invalid("missing `//` after the scheme"))?;
    if rest.contains(['?', '#']) {
        return Err(invalid("query parameters are not supported"));
    }
    let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    if vhost.contains('/') {
        return Err(invalid(
            "the path is the virtual host; write a `/` in its name as `%2F`",
        ));
    }
    if !percent_decodes_to_utf8(vhost) {
        return Err(invalid(
            "the virtual host is not UTF-8 after percent-decoding",
        ));
    }
    check_authority(authority, &invalid)?;
    let user_and_password = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let mut from_env = match user_and_password {
        true => Vec::new(),
        false => vec![AMQP_CREDENTIALS],
    };
    if tls {
        from_env.push(TLS_CLIENT_CERTIFICATE);
    }
    Ok(from_env)
}

/// `backend-redis` (`config.rs`, `parse_url`):
/// `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB][?mode=pubsub|streams]`, or `rediss://...`
/// for `backend-redis-tls`.
fn redis(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let invalid = invalid(
        "redis",
        url,
        "expected `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB][?mode=streams]` (or `rediss://...`)",
    );
    let (tls, rest) = match url.strip_prefix("rediss:") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("redis:").unwrap_or(url)),
    };
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| invalid("missing `//` after the scheme"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("mode", "pubsub" | "streams")) => {}
            Some(("mode", other)) => {
                return Err(invalid(&format!(
                    "unknown Redis mode `{other}`: use `pubsub` (the default) or `streams`"
                )))
            }
            _ => return Err(invalid(&format!("unknown query parameter `{pair}`"))),
        }
    }
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(invalid(&format!("bad database number `{db}`")));
    }
    let mut from_env = match check_authority(authority, &invalid)? {
        true => Vec::new(),
        false => vec![REDIS_CREDENTIALS],
    };
    if tls {
        from_env.push(TLS_CLIENT_CERTIFICATE);
    }
    Ok(from_env)
}

/// `backend-kafka` (`config.rs`, `parse_url`): `kafka://HOST[:PORT][,HOST[:PORT]...]`, or
/// `kafka+ssl://...` for `backend-kafka-tls`.
fn kafka(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let invalid = invalid(
        "kafka",
        url,
        "expected `kafka://HOST[:PORT][,HOST[:PORT]...]` (or `kafka+ssl://...`)",
    );
    let (tls, rest) = match url.strip_prefix("kafka+ssl:") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("kafka:").unwrap_or(url)),
    };
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| invalid("missing `//` after the scheme"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(invalid("a path or query is not allowed"));
    }
    if rest.contains('@') {
        return Err(invalid(
            "credentials in the URL are not supported: set KAFKA_USERNAME and KAFKA_PASSWORD at run time",
        ));
    }
    for server in rest.split(',') {
        let host = match server.rsplit_once(':') {
            Some((host, port))
                if !host.ends_with(':') && (!host.starts_with('[') || host.ends_with(']')) =>
            {
                if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                    return Err(invalid(&format!("bad port `{port}`")));
                }
                host
            }
            _ => server,
        };
        if host.is_empty() || host == "[]" {
            return Err(invalid("no host"));
        }
    }
    Ok(match tls {
        true => vec![KAFKA_CREDENTIALS, TLS_CLIENT_CERTIFICATE],
        false => vec![KAFKA_CREDENTIALS],
    })
}

/// Whether the `%XX` escapes in `text` decode to UTF-8 (as `percent_decode_str` reads them).
fn percent_decodes_to_utf8(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).is_ok()
}

/// `backend-http` (`http-client`, `parse_url`): `http(s)://HOST[:PORT]/PATH`.
fn http(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let invalid = invalid(
        "http",
        url,
        "expected `http(s)://HOST[:PORT]/PATH` (`{topic}` in it is replaced by the topic)",
    );
    let rest = url
        .split_once("://")
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
        })
        .map(|(_, rest)| rest)
        .ok_or_else(|| invalid("only http:// and https:// are supported"))?;
    let rest = rest.split('#').next().unwrap_or_default();
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    if authority.contains('@') {
        return Err(invalid("user info is not supported in the URL"));
    }
    Ok(Vec::new())
}

/// `backend-sqs` (`config.rs`): `sqs://REGION/QUEUE-NAME`; the region may come from
/// `AWS_REGION` instead.
fn sqs(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let invalid = invalid(
        "sqs",
        url,
        "expected `sqs://REGION/QUEUE-NAME`, e.g. `sqs://us-east-1/orders`",
    );
    let rest = url
        .split_once("://")
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("sqs"))
        .map(|(_, rest)| rest)
        .ok_or_else(|| invalid("missing `//` after the scheme"))?;
    if rest.contains(['?', '#', '@']) {
        return Err(invalid(
            "SQS URLs take no query, fragment or credentials (credentials come from \
             `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`)",
        ));
    }
    let (region, queue) = match rest.split_once('/') {
        Some((region, queue)) => (region, queue.trim_end_matches('/')),
        None => (rest, ""),
    };
    if queue.contains('/') {
        return Err(invalid("it names more than one path segment"));
    }
    let mut from_env = vec![AWS_CREDENTIALS];
    if region.is_empty() {
        from_env.push(AWS_REGION);
    } else if !region
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(&format!(
            "`{region}` is not an AWS region name (such as `us-east-1`)"
        )));
    }
    from_env.push(AWS_ENDPOINT);
    Ok(from_env)
}

const SERVICEBUS_USAGE: &str = "expected `servicebus://HOST[:PORT][/ENTITY]` or a connection \
     string `Endpoint=sb://HOST/;SharedAccessKeyName=...;SharedAccessKey=...`";

/// The Service Bus setting for a plaintext test endpoint (`backend-servicebus`'s
/// `PLAIN_HTTP_FOR_TESTS`).
const SERVICEBUS_PLAIN_HTTP: &str = "PlainHttpForTests";
/// The setting of Microsoft's Service Bus emulator, which the REST backend cannot use.
const SERVICEBUS_EMULATOR: &str = "UseDevelopmentEmulator";
/// Why [`SERVICEBUS_EMULATOR`] is refused.
const SERVICEBUS_EMULATOR_REFUSED: &str = "`UseDevelopmentEmulator` is not supported: Microsoft's \
     Service Bus emulator speaks AMQP only and does not serve the REST protocol msgplug uses; \
     for a plaintext test endpoint on a loopback address, set `PlainHttpForTests=true`";

/// Whether `host` (`HOST[:PORT]`) is a loopback address: `127.0.0.0/8`, `[::1]` or
/// `localhost` (as `backend-servicebus` decides it).
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `backend-servicebus` (`config.rs`): a `servicebus://` URL or a connection string;
/// the SAS key name and key come from the environment when the setting has none.
fn servicebus(url: &str) -> Result<Vec<FromEnv>, BrokerUrlError> {
    let invalid = invalid("servicebus", url, SERVICEBUS_USAGE);
    let (host, entity, key_name, key, plain_http) = match url.get(..13) {
        Some(s) if s.eq_ignore_ascii_case("servicebus://") => {
            let (rest, query) = url[13..].split_once('?').unwrap_or((&url[13..], ""));
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            if host.contains('@') {
                return Err(invalid(
                    "a servicebus:// URL cannot carry credentials; set \
                     `SERVICEBUS_SAS_KEY_NAME` and `SERVICEBUS_SAS_KEY` at run time instead",
                ));
            }
            let mut plain_http = false;
            for param in query.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                if name.eq_ignore_ascii_case(SERVICEBUS_EMULATOR) {
                    return Err(invalid(SERVICEBUS_EMULATOR_REFUSED));
                }
                if !name.eq_ignore_ascii_case(SERVICEBUS_PLAIN_HTTP) {
                    return Err(invalid(&format!(
                        "unknown parameter `{name}`; the only one is `{SERVICEBUS_PLAIN_HTTP}=true` \
                         (a plaintext test endpoint on a loopback address)"
                    )));
                }
                plain_http = value.eq_ignore_ascii_case("true");
            }
            let path = path.trim_matches('/');
            (
                host,
                (!path.is_empty()).then_some(path),
                false,
                false,
                plain_http,
            )
        }
        _ => {
            let (mut endpoint, mut entity, mut key_name, mut key, mut plain_http) =
                (None, None, false, false, false);
            for (name, value) in url
                .split(';')
                .filter_map(|part| part.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
            {
                let value = (!value.is_empty()).then_some(value);
                match name.to_ascii_lowercase().as_str() {
                    "endpoint" => endpoint = value,
                    "sharedaccesskeyname" => key_name = value.is_some(),
                    "sharedaccesskey" => key = value.is_some(),
                    "entitypath" => entity = value,
                    "plainhttpfortests" => {
                        plain_http = value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
                    }
                    "usedevelopmentemulator" => return Err(invalid(SERVICEBUS_EMULATOR_REFUSED)),
                    "sharedaccesssignature" => {
                        return Err(invalid(
                            "connection strings with a `SharedAccessSignature` are not \
                             supported; use `SharedAccessKeyName` and `SharedAccessKey`",
                        ))
                    }
                    _ => {}
                }
            }
            let endpoint =
                endpoint.ok_or_else(|| invalid("the connection string has no `Endpoint`"))?;
            let host = match endpoint.get(..5) {
                Some(s) if s.eq_ignore_ascii_case("sb://") => endpoint[5..].trim_end_matches('/'),
                _ => {
                    return Err(invalid(&format!(
                        "`Endpoint` `{endpoint}` is not an sb:// address"
                    )))
                }
            };
            (host, entity, key_name, key, plain_http)
        }
    };
    let valid_host = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if host.is_empty() {
        return Err(invalid("no namespace host"));
    }
    if !valid_host {
        return Err(invalid(&format!("`{host}` is not a namespace host")));
    }
    if plain_http && !is_loopback(host) {
        return Err(invalid(&format!(
            "`{SERVICEBUS_PLAIN_HTTP}=true` sends the SAS token in clear text, so it is only \
             allowed for a loopback host (127.0.0.1, [::1], localhost), not `{host}`"
        )));
    }
    if let Some(entity) = entity {
        let valid = !entity.contains(['*', '>'])
            && entity
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
            && !entity.split('/').any(str::is_empty);
        if !valid {
            return Err(invalid(&format!(
                "`{entity}` is not a Service Bus entity name (letters, digits, `.`, `-`, `_`, \
                 and `/` between segments; no wildcards)"
            )));
        }
    }
    let mut from_env = Vec::new();
    if !key_name {
        from_env.push(SAS_KEY_NAME);
    }
    if !key {
        from_env.push(SAS_KEY);
    }
    Ok(from_env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{AdapterKind, ADAPTERS};
    use crate::config::parse_broker;

    include!("../tests/support/broker_urls.rs");

    #[test]
    fn every_embedded_backend_has_a_check_and_cases() {
        let local = parse_broker("local").expect("`local` parses");
        for backend in ADAPTERS.iter().filter(|a| a.kind == AdapterKind::Backend) {
            assert!(
                check(backend.family(), &local).is_some(),
                "no compose-time URL check for `{}`",
                backend.name
            );
            assert!(
                broker_url_cases(backend.family()).any(|case| case.accepted)
                    && broker_url_cases(backend.family()).any(|case| !case.accepted),
                "tests/broker-urls.txt has no accepted and refused cases for `{}`",
                backend.name
            );
        }
    }

    /// The host agrees with `tests/broker-urls.txt`: a URL is accepted when it parses, its
    /// check passes, and the environment holds every required value but credentials (the
    /// adapter tests supply those; compose names them).
    #[test]
    fn compose_accepts_what_the_backends_accept() {
        for family in [
            "local",
            "nats",
            "amqp",
            "redis",
            "kafka",
            "http",
            "sqs",
            "servicebus",
        ] {
            assert_agrees_with_broker_url_cases(family, &[], |url, env| {
                let broker = parse_broker(url).map_err(|e| e.to_string())?;
                assert_eq!(
                    broker.url, url,
                    "the table holds URLs as msgplug bakes them"
                );
                let from_env = check(family, &broker)
                    .expect("a check for every family")
                    .map_err(|e| e.to_string())?;
                match from_env.iter().find(|f| {
                    f.required && !f.credentials && !f.vars.iter().any(|v| env(v).is_some())
                }) {
                    Some(missing) => Err(missing.to_string()),
                    None => Ok(from_env),
                }
            });
        }
    }

    #[test]
    fn errors_name_the_form_and_mask_secrets() {
        let err = |url: &str| {
            let broker = parse_broker(url).unwrap();
            check("nats", &broker).unwrap().unwrap_err().to_string()
        };
        assert_eq!(
            err("nats://"),
            "invalid `nats` broker URL `nats://`: no host; expected \
             `nats://[USER[:PASSWORD]@]HOST[:PORT]` (or `tls://...`)"
        );
        assert!(err("nats://u:secret@h:0").contains("`nats://u:****@h:0`: bad port `0`"));
    }

    #[test]
    fn what_comes_from_the_environment_is_named() {
        let from_env = |family: &str, url: &str| {
            check(family, &parse_broker(url).unwrap())
                .unwrap()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            from_env("sqs", "sqs:///orders"),
            [
                "AWS credentials (a session token only with temporary ones) must come from the \
                 environment at run time \
                 (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`)",
                "the region (the URL names none) must come from the environment at run time \
                 (`AWS_REGION`)",
                "an endpoint other than AWS's may come from the environment at run time \
                 (`AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL`)"
            ]
        );
        assert_eq!(from_env("sqs", "sqs://us-east-1/orders").len(), 2);
        assert_eq!(from_env("nats", "nats://u:p@h").len(), 0);
        assert_eq!(
            from_env("nats", "tls://u:p@h"),
            [
                "a TLS client certificate and its key (PEM text), if the server asks for one, may \
              come from the environment at run time (`MSGPLUG_TLS_CERT`, `MSGPLUG_TLS_KEY`)"
            ]
        );
        assert_eq!(from_env("servicebus", "servicebus://h/q").len(), 2);
        assert_eq!(
            from_env(
                "servicebus",
                "Endpoint=sb://h/;SharedAccessKeyName=n;SharedAccessKey=k"
            )
            .len(),
            0
        );
    }
}
