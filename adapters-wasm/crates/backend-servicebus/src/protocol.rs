//! The Service Bus REST messaging protocol, without I/O: request builders for send,
//! peek-lock receive, complete (delete) and unlock, and the parsing of their responses.
//!
//! Message mapping (REST reference, "Message headers and properties"):
//! * the payload is the HTTP body; the content type is the `Content-Type` header;
//! * broker properties (`MessageId`, `CorrelationId`, `ReplyTo`, `DeliveryCount`,
//!   `LockToken`, ...) travel as one JSON object in the `BrokerProperties` header;
//! * each custom property (msgplug metadata) is a header of its own. msgplug sends
//!   the value as a JSON string literal (`id: "7"`), so the service stores a string;
//!   received custom properties are JSON values (strings quoted, as the reference's
//!   peek-lock example shows), and JSON strings are unquoted. HTTP header names are
//!   case-insensitive and arrive in lower case, so metadata keys come back lower-cased.

use common::{Error, MessageData, Metadata};
use http_client::{Method, Request, Response};
use serde::{Deserialize, Serialize};

/// Headers that are part of the protocol or of HTTP itself, so never a custom property
/// (`x-ms-*` is reserved too).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "brokerproperties",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "expect",
    "host",
    "http2-settings",
    "keep-alive",
    "location",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "server",
    "strict-transport-security",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
];

/// Whether the header `name` can never carry a custom property.
fn is_reserved(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("x-ms-")
}

/// Checks that `name` is a Service Bus entity path (letters, digits, `.`, `-`, `_`,
/// and `/` between segments); `what` says where it came from, for the error.
pub fn check_entity<'a>(name: &'a str, what: &str) -> Result<&'a str, Error> {
    if name.contains(['*', '>']) {
        return Err(Error::other(format!(
            "{what} `{name}`: Service Bus has no wildcard subscriptions; name a queue, or a topic's subscription as `TOPIC/subscriptions/SUBSCRIPTION`"
        )));
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
    if name.is_empty() || !valid_chars || name.split('/').any(str::is_empty) {
        return Err(Error::other(format!(
            "{what} `{name}` is not a Service Bus entity name (letters, digits, `.`, `-`, `_`, and `/` between segments)"
        )));
    }
    Ok(name)
}

/// A place messages are received from: a queue, or a topic's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The entity path: `QUEUE` or `TOPIC/subscriptions/SUBSCRIPTION`.
    pub path: String,
    /// The topic received messages report: the queue, or the subscription's topic.
    pub topic: String,
}

impl Source {
    /// Parses a `--subscribe` entry (or the broker's entity path).
    pub fn parse(entry: &str) -> Result<Self, Error> {
        let path = check_entity(entry.trim(), "subscription")?;
        let topic = match path.split_once("/subscriptions/") {
            Some((topic, subscription)) if !subscription.contains('/') => topic,
            Some(_) => {
                return Err(Error::other(format!(
                    "subscription `{path}`: expected `TOPIC/subscriptions/SUBSCRIPTION`"
                )))
            }
            None => path,
        };
        Ok(Self {
            path: path.to_string(),
            topic: topic.to_string(),
        })
    }
}

/// The broker properties msgplug sets or reads (the `BrokerProperties` header).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BrokerProperties {
    /// The message's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The id of the message this one answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Where replies go: an entity name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// How many times the message has been delivered (received only).
    #[serde(skip_serializing)]
    pub delivery_count: Option<u32>,
}

/// Builds the request that sends `message` to the queue or topic `entity`
/// (`POST {base}/{entity}/messages`) with the given broker properties.
pub fn send_request(
    base_url: &str,
    entity: &str,
    message: &MessageData,
    properties: &BrokerProperties,
    authorization: &str,
) -> Result<Request, Error> {
    let entity = check_entity(entity, "topic")?;
    let properties = serde_json::to_string(properties).expect("string fields serialize");
    let mut request = Request::new(Method::Post, format!("{base_url}/{entity}/messages"))
        .header("Authorization", authorization)
        .header("BrokerProperties", properties)
        .body(message.data.clone());
    if let Some(content_type) = &message.content_type {
        request = request.header("Content-Type", content_type.as_str());
    }
    for (key, value) in message.metadata.iter() {
        let token = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token || is_reserved(key) {
            return Err(Error::other(format!(
                "metadata key `{key}` cannot be sent to Service Bus: custom properties travel as HTTP headers, so a key must be an HTTP token (letters, digits, `-`, ...) and not a reserved header name (`content-type`, `x-ms-*`, ...)"
            )));
        }
        request = request.header(key, json_string(value));
    }
    Ok(request)
}

/// Quotes `text` as a JSON string of printable ASCII only (`\uXXXX` for the rest), so it
/// is a valid HTTP header value.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// Builds the peek-lock request for `source`, waiting up to `wait_secs` for a message
/// (`POST {base}/{path}/messages/head?timeout=N`).
pub fn receive_request(
    base_url: &str,
    source: &Source,
    wait_secs: u32,
    authorization: &str,
) -> Request {
    Request::new(
        Method::Post,
        format!(
            "{base_url}/{}/messages/head?timeout={wait_secs}",
            source.path
        ),
    )
    .header("Authorization", authorization)
}

/// How a locked message is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Complete: `DELETE` on the lock URI; the message is gone.
    Complete,
    /// Abandon: `PUT` on the lock URI; the message is unlocked for redelivery.
    Unlock,
}

/// Builds the request that settles the message locked at `lock_uri`.
pub fn settle_request(lock_uri: &str, settle: Settle, authorization: &str) -> Request {
    let method = match settle {
        Settle::Complete => Method::Delete,
        Settle::Unlock => Method::Put,
    };
    Request::new(method, lock_uri).header("Authorization", authorization)
}

/// A message received under a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    /// The message as the app sees it.
    pub message: MessageData,
    /// Where to complete or unlock it.
    pub lock_uri: String,
    /// Its broker properties.
    pub properties: BrokerProperties,
}

/// Parses a successful peek-lock response: `Ok(None)` for 204 (no message within the
/// wait), the locked message for 201. Any other status is the caller's to classify.
pub fn parse_received(
    base_url: &str,
    source: &Source,
    response: &Response,
) -> Result<Option<Locked>, Error> {
    if response.status == 204 {
        return Ok(None);
    }
    let bad = |why: String| {
        Error::other(format!(
            "receiving from `{}`: unexpected Service Bus response (HTTP {}): {why}",
            source.path, response.status
        ))
    };
    let location = response
        .header("Location")
        .ok_or_else(|| bad("no `Location` header (the lock URI)".into()))?;
    let lock_uri = lock_uri(base_url, location).map_err(|e| bad(e.to_string()))?;
    let properties: BrokerProperties = match response.header("BrokerProperties") {
        Some(json) => serde_json::from_str(json).map_err(|e| {
            bad(format!(
                "`BrokerProperties` is not the expected JSON object: {e}"
            ))
        })?,
        None => BrokerProperties::default(),
    };
    let mut metadata = Metadata::default();
    for (name, value) in &response.headers {
        if is_reserved(name) {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(value) {
            Ok(serde_json::Value::String(text)) => metadata.insert(name.to_ascii_lowercase(), text),
            Ok(scalar @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                metadata.insert(name.to_ascii_lowercase(), scalar.to_string())
            }
            _ => {} // not a custom property: custom properties are JSON values
        }
    }
    let message = MessageData {
        topic: Some(source.topic.clone()),
        data: response.body.clone(),
        content_type: response.header("Content-Type").map(String::from),
        metadata,
        reply_to: properties.reply_to.clone(),
    };
    Ok(Some(Locked {
        message,
        lock_uri,
        properties,
    }))
}

/// Makes the lock URI from a peek-lock `Location` header: its path (and query) on
/// the namespace's own `base_url`, so the SAS token only ever goes to that host.
fn lock_uri(base_url: &str, location: &str) -> Result<String, Error> {
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        http_client::parse_url(location)?.path_with_query()
    };
    if !path.contains("/messages/") {
        return Err(Error::other(format!(
            "`Location: {location}` is not a message lock URI"
        )));
    }
    Ok(format!("{base_url}{path}"))
}

/// What an error response means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Retrying cannot help (no permission, no such entity, a bad request).
    Fatal(Error),
    /// The service is busy or failing for now (5xx, 429, timeouts): retry later.
    Transient(Error),
}

impl Failure {
    /// The error, whatever its kind.
    pub fn into_error(self) -> Error {
        match self {
            Failure::Fatal(e) | Failure::Transient(e) => e,
        }
    }

    /// True when retrying later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::Transient(_))
    }
}

impl std::fmt::Display for Failure {
    /// Writes the error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Fatal(e) | Failure::Transient(e) => e.fmt(f),
        }
    }
}

/// Classifies a non-2xx `response` to an operation on `entity`; `what` names the
/// operation (`sending to `orders``).
pub fn failure(what: &str, entity: &str, response: &Response) -> Failure {
    match response.status {
        404 | 410 => Failure::Fatal(Error::other(format!(
            "{what}: Service Bus entity `{entity}` does not exist (HTTP {}); create it, or fix the name",
            response.status
        ))),
        408 | 429 | 500..=599 => Failure::Transient(http_client::status_error(what, response)),
        _ => Failure::Fatal(http_client::status_error(what, response)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://ns.servicebus.windows.net";

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn sources_are_queues_or_subscriptions() {
        assert_eq!(
            Source::parse("orders").unwrap(),
            Source {
                path: "orders".into(),
                topic: "orders".into()
            }
        );
        assert_eq!(
            Source::parse(" events/subscriptions/audit ").unwrap(),
            Source {
                path: "events/subscriptions/audit".into(),
                topic: "events".into()
            }
        );
        assert_eq!(Source::parse("app/in.q").unwrap().topic, "app/in.q");
        let e = Source::parse("orders.>").unwrap_err().to_string();
        assert!(e.contains("no wildcard subscriptions"), "{e}");
        for bad in ["", "a//b", "/a", "a/", "a b", "t/subscriptions/s/x"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_send_carries_properties_content_type_and_metadata_headers() {
        let mut message = MessageData::new(b"hello".to_vec());
        message.content_type = Some("text/plain".into());
        message.metadata.insert("id".into(), "7".into());
        message
            .metadata
            .insert("Note".into(), "say \"hé\"\n".into());
        let properties = BrokerProperties {
            message_id: Some("m1".into()),
            correlation_id: Some("c1".into()),
            ..BrokerProperties::default()
        };
        let request = send_request(BASE, "orders", &message, &properties, "SAS").unwrap();
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.url,
            "https://ns.servicebus.windows.net/orders/messages"
        );
        assert_eq!(request.body, b"hello");
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("Authorization", "SAS"),
                (
                    "BrokerProperties",
                    r#"{"MessageId":"m1","CorrelationId":"c1"}"#
                ),
                ("Content-Type", "text/plain"),
                ("id", r#""7""#),
                ("Note", r#""say \"h\u00e9\"\u000a""#),
            ]
        );
        let decoded: String = serde_json::from_str(&request.headers[4].1).unwrap();
        assert_eq!(decoded, "say \"hé\"\n");
        assert_eq!(json_string("😀"), r#""\ud83d\ude00""#);
    }

    #[test]
    fn a_send_without_extras_has_an_empty_properties_object() {
        let request = send_request(
            BASE,
            "q",
            &MessageData::new(vec![]),
            &BrokerProperties::default(),
            "S",
        )
        .unwrap();
        assert_eq!(request.headers[1], ("BrokerProperties".into(), "{}".into()));
        assert_eq!(request.headers.len(), 2);
    }

    #[test]
    fn metadata_keys_must_be_header_names_that_are_not_reserved() {
        for key in ["content-type", "Authorization", "x-ms-foo", "a b", "", "é"] {
            let mut message = MessageData::new(vec![]);
            message.metadata.insert(key.into(), "v".into());
            let e = send_request(BASE, "q", &message, &BrokerProperties::default(), "S")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("metadata key `{key}`")), "{e}");
        }
        let e = send_request(
            BASE,
            "a*",
            &MessageData::new(vec![]),
            &BrokerProperties::default(),
            "S",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("topic `a*`"), "{e}");
    }

    #[test]
    fn receive_and_settle_requests() {
        let source = Source::parse("t/subscriptions/s").unwrap();
        let request = receive_request(BASE, &source, 30, "S");
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.url,
            "https://ns.servicebus.windows.net/t/subscriptions/s/messages/head?timeout=30"
        );
        assert_eq!(request.headers, [("Authorization".into(), "S".into())]);
        assert_eq!(
            settle_request("u", Settle::Complete, "S").method,
            Method::Delete
        );
        assert_eq!(settle_request("u", Settle::Unlock, "S").method, Method::Put);
    }

    /// The response of the reference's peek-lock example.
    #[test]
    fn parses_the_reference_peek_lock_response() {
        let response = response(
            201,
            &[
                ("transfer-encoding", "chunked"),
                ("content-type", "application/atom+xml;type=entry;charset=utf-8"),
                ("location", "https://your-namespace.servicebus.windows.net/httpclientsamplequeue/messages/2/7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547"),
                ("server", "Microsoft-HTTPAPI/2.0"),
                ("brokerproperties", r#"{"DeliveryCount":1,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Wed, 02 Jul 2014 01:32:27 GMT","Label":"M1","LockToken":"7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547","LockedUntilUtc":"Wed, 02 Jul 2014 01:33:27 GMT","MessageId":"31907572164743c38741631acd554d6f","SequenceNumber":2,"State":"Active","TimeToLive":10}"#),
                ("priority", r#""High""#),
                ("customer", r#""12345,ABC""#),
                ("count", "3"),
                ("date", "Wed, 02 Jul 2014 01:32:27 GMT"),
                ("x-ms-request-id", r#""r""#),
            ],
            "This is a message.",
        );
        let source = Source::parse("HttpClientSampleQueue").unwrap();
        let locked = parse_received(BASE, &source, &response).unwrap().unwrap();
        assert_eq!(
            locked.lock_uri,
            "https://ns.servicebus.windows.net/httpclientsamplequeue/messages/2/7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547"
        );
        assert_eq!(locked.properties.delivery_count, Some(1));
        assert_eq!(
            locked.properties.message_id.as_deref(),
            Some("31907572164743c38741631acd554d6f")
        );
        let message = locked.message;
        assert_eq!(message.topic.as_deref(), Some("HttpClientSampleQueue"));
        assert_eq!(message.data, b"This is a message.");
        assert_eq!(
            message.content_type.as_deref(),
            Some("application/atom+xml;type=entry;charset=utf-8")
        );
        let metadata: Vec<(&str, &str)> = message.metadata.iter().collect();
        assert_eq!(
            metadata,
            [
                ("priority", "High"),
                ("customer", "12345,ABC"),
                ("count", "3")
            ]
        );
        assert_eq!(message.reply_to, None);
    }

    #[test]
    fn parses_reply_to_and_relative_locations_and_no_message() {
        let source = Source::parse("t/subscriptions/s").unwrap();
        let response_201 = response(
            201,
            &[
                ("Location", "/t/subscriptions/s/messages/5/tok"),
                (
                    "BrokerProperties",
                    r#"{"ReplyTo":"answers","DeliveryCount":3}"#,
                ),
            ],
            "",
        );
        let locked = parse_received("http://127.0.0.1:9", &source, &response_201)
            .unwrap()
            .unwrap();
        assert_eq!(
            locked.lock_uri,
            "http://127.0.0.1:9/t/subscriptions/s/messages/5/tok"
        );
        assert_eq!(locked.message.reply_to.as_deref(), Some("answers"));
        assert_eq!(locked.message.topic.as_deref(), Some("t"));
        assert_eq!(locked.message.content_type, None);
        assert_eq!(locked.properties.delivery_count, Some(3));
        assert_eq!(
            parse_received(BASE, &source, &response(204, &[], "")).unwrap(),
            None
        );
    }

    #[test]
    fn rejects_malformed_peek_lock_responses() {
        let source = Source::parse("q").unwrap();
        let no_location = response(201, &[], "x");
        let e = parse_received(BASE, &source, &no_location)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `Location` header"), "{e}");
        let bad_json = response(
            201,
            &[("Location", "/q/messages/1/t"), ("BrokerProperties", "{")],
            "",
        );
        let e = parse_received(BASE, &source, &bad_json)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`BrokerProperties` is not the expected JSON"),
            "{e}"
        );
        let bad_location = response(201, &[("Location", "https://h/elsewhere")], "");
        assert!(parse_received(BASE, &source, &bad_location).is_err());
    }

    #[test]
    fn classifies_failures() {
        let what = "sending to `q`";
        match failure(what, "q", &response(410, &[], "gone")) {
            Failure::Fatal(e) => assert_eq!(
                e.to_string(),
                "sending to `q`: Service Bus entity `q` does not exist (HTTP 410); create it, or fix the name"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            failure(what, "q", &response(401, &[], "bad token")),
            Failure::Fatal(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            failure(what, "q", &response(403, &[], "")),
            Failure::Fatal(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            failure(what, "q", &response(503, &[], "")),
            Failure::Transient(_)
        ));
        assert!(matches!(
            failure(what, "q", &response(429, &[], "")),
            Failure::Transient(_)
        ));
        assert!(matches!(
            failure(what, "q", &response(400, &[], "")),
            Failure::Fatal(_)
        ));
        assert_eq!(
            failure(what, "q", &response(500, &[], "boom"))
                .into_error()
                .to_string(),
            "sending to `q`: HTTP 500: boom"
        );
        let busy = failure(what, "q", &response(503, &[], "busy"));
        assert!(busy.is_transient());
        assert_eq!(busy.to_string(), "sending to `q`: HTTP 503: busy");
        assert!(!failure(what, "q", &response(400, &[], "")).is_transient());
    }
}
