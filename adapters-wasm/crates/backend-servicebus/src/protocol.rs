//! The Service Bus REST messaging protocol, without I/O: request builders for send,
//! peek-lock receive, complete (delete) and unlock, and the parsing of their responses.
//!
//! Message mapping (REST reference, "Message headers and properties"):
//! * the payload is the HTTP body; the content type is the `Content-Type` header;
//! * broker properties (`MessageId`, `CorrelationId`, `ReplyTo`, `DeliveryCount`,
//!   `LockToken`, ...) travel as one JSON object in the `BrokerProperties` header;
//! * each custom property (msgplug metadata) is a header of its own, its value formatted
//!   as the service formats it and as Microsoft's REST SDK sends it: a string in double
//!   quotes with nothing escaped (`id: "7"`, `note: "say "hi""`), so the service stores a
//!   string; numbers and booleans bare, dates as quoted RFC 1123 text. Received values
//!   are read the same way: the quotes of a quoted value are stripped (no JSON
//!   unescaping), anything else is kept as sent; no property is dropped. Non-ASCII text
//!   goes as UTF-8 bytes; control characters cannot travel in a header and are refused.
//!   Header names are case-insensitive and wasmtime's HTTP stack sends and returns
//!   them in lower case, so metadata keys arrive lower-cased (`OrderId` as `orderid`).
//! * a peek-lock response without a content type set by the sender carries the service's
//!   default, `application/atom+xml;type=entry;charset=utf-8`: read as no content type.

use common::{Error, MessageData, Metadata};
use http_client::{Failure, Method, Request, Response};
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

/// The content type the service reports for a message whose sender set none.
const DEFAULT_CONTENT_TYPE: &str = "application/atom+xml;type=entry;charset=utf-8";

/// Whether `content_type` is the service's default for "none set".
fn is_default_content_type(content_type: &str) -> bool {
    let compact: String = content_type
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    compact.eq_ignore_ascii_case(DEFAULT_CONTENT_TYPE)
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
    /// Until when the lock is held, as an RFC 1123 date (received only).
    #[serde(skip_serializing)]
    pub locked_until_utc: Option<String>,
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
    if entity.contains("/subscriptions/") {
        return Err(Error::other(format!(
            "topic `{entity}` is a subscription, which cannot be sent to; send to its topic (`{}`)",
            entity.split("/subscriptions/").next().unwrap_or_default()
        )));
    }
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
        request = request.header(key, property_value(key, value)?);
    }
    Ok(request)
}

/// Formats a metadata value as a custom property header: a string in double quotes, with
/// nothing escaped (what the service and Microsoft's REST SDK do). A value with a control
/// character cannot be a header value and is refused rather than changed.
fn property_value(key: &str, value: &str) -> Result<String, Error> {
    if value.chars().any(char::is_control) {
        return Err(Error::other(format!(
            "metadata `{key}` cannot be sent to Service Bus: its value has a control character (a line break, a tab, ...), which an HTTP header cannot carry"
        )));
    }
    Ok(format!("\"{value}\""))
}

/// Reads a custom property value as the service formats it: a quoted string loses its
/// quotes (nothing is unescaped); a number, boolean or anything else is kept as sent.
/// The second part is true when the value was neither quoted nor a number or boolean.
fn read_property(raw: &str) -> (String, bool) {
    let trimmed = raw.trim();
    if let Some(inner) = trimmed
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        return (inner.to_string(), false);
    }
    let scalar = trimmed.eq_ignore_ascii_case("true")
        || trimmed.eq_ignore_ascii_case("false")
        || trimmed.parse::<f64>().is_ok();
    (trimmed.to_string(), !scalar)
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

/// Builds the Renew-Lock request for the message locked at `lock_uri` (`POST` on it).
pub fn renew_request(lock_uri: &str, authorization: &str) -> Request {
    Request::new(Method::Post, lock_uri).header("Authorization", authorization)
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
    /// Custom properties whose value was neither quoted nor a number or boolean: kept as
    /// sent, worth a log line.
    pub unusual: Vec<String>,
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
    let mut unusual = Vec::new();
    for (name, value) in &response.headers {
        if is_reserved(name) {
            continue;
        }
        // As the host gives it: wasmtime's HTTP stack gives header names in lower case.
        let name = name.clone();
        let (value, odd) = read_property(value);
        if odd {
            unusual.push(name.clone());
        }
        metadata.insert(name, value);
    }
    let message = MessageData {
        topic: Some(source.topic.clone()),
        data: response.body.clone(),
        content_type: response
            .header("Content-Type")
            .filter(|c| !is_default_content_type(c))
            .map(String::from),
        metadata,
        reply_to: properties.reply_to.clone(),
    };
    Ok(Some(Locked {
        message,
        lock_uri,
        properties,
        unusual,
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

/// Classifies a non-2xx `response` to a receive from `entity`; `what` names the
/// operation (`receiving from `orders``). Busy or failing (408, 429, 5xx) is transient,
/// with the `Retry-After` the service gave.
pub fn failure(what: &str, entity: &str, response: &Response) -> Failure {
    let error = match response.status {
        404 | 410 => Error::other(format!(
            "{what}: Service Bus entity `{entity}` does not exist (HTTP {}); create it, or fix the name",
            response.status
        )),
        _ => http_client::status_error(what, response),
    };
    Failure::of_response(error, response)
}

/// Classifies a non-2xx `response` to a send to `entity`, as [`failure`] does, except
/// that a `403` is what the reference says it means for Send Message: "quota exceeded or
/// message too large", not a matter of permissions (those are `401`).
pub fn send_failure(what: &str, entity: &str, response: &Response) -> Failure {
    match response.status {
        403 => Failure::lasting(Error::other(format!(
            "{} (the entity's quota is exceeded or the message is too large)",
            http_client::status_text(what, response)
        ))),
        _ => failure(what, entity, response),
    }
}

/// Classifies a non-2xx `response` to an operation on a lock (complete, unlock, renew):
/// `404` (no message holds the lock) and `410` (the lock or the entity is gone) mean the
/// lock was lost, and the service delivers the message again.
pub fn lock_failure(what: &str, response: &Response) -> Failure {
    match response.status {
        404 | 410 => Failure::lasting(Error::other(format!(
            "{}: the message's lock was lost (it expired after the entity's LockDuration, or the message was settled already); the service delivers the message again",
            http_client::status_text(what, response)
        ))),
        _ => Failure::of_response(http_client::status_error(what, response), response),
    }
}

/// Whether `response` to an operation on a lock says the lock was lost.
pub fn is_lock_lost(response: &Response) -> bool {
    matches!(response.status, 404 | 410)
}

/// Reads an RFC 1123 date (`Wed, 02 Jul 2014 01:32:27 GMT`) as seconds since 1970.
pub fn parse_http_date(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let _weekday = words.next()?;
    let day: u64 = words.next()?.parse().ok()?;
    let month = words.next()?;
    let year: u64 = words.next()?.parse().ok()?;
    let mut clock = words.next()?.split(':').map(|n| n.parse::<u64>().ok());
    let (h, m, sec) = (clock.next()??, clock.next()??, clock.next()??);
    if words.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let (y, mp) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
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
            .insert("Note".into(), "say \"hé\" 😀".into());
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
                ("Note", r#""say "hé" 😀""#),
            ]
        );
        message.metadata.insert("bad".into(), "two\nlines".into());
        let e = send_request(BASE, "orders", &message, &properties, "SAS")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metadata `bad` cannot be sent"), "{e}");
    }

    #[test]
    fn a_subscription_cannot_be_sent_to() {
        let e = send_request(
            BASE,
            "events/subscriptions/audit",
            &MessageData::new(vec![]),
            &BrokerProperties::default(),
            "S",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("send to its topic (`events`)"), "{e}");
    }

    #[test]
    fn property_values_are_read_as_the_service_formats_them() {
        assert_eq!(read_property(r#""12345,ABC""#), ("12345,ABC".into(), false));
        assert_eq!(
            read_property(r#""say "hi" \u00e9""#),
            (r#"say "hi" \u00e9"#.into(), false)
        );
        assert_eq!(
            read_property(r#""Wed, 02 Jul 2014 01:32:27 GMT""#).0,
            "Wed, 02 Jul 2014 01:32:27 GMT"
        );
        assert_eq!(read_property("déjà"), ("déjà".into(), true));
        assert_eq!(read_property(r#""déjà""#), ("déjà".into(), false));
        assert_eq!(read_property("3"), ("3".into(), false));
        assert_eq!(read_property("-2.5E3"), ("-2.5E3".into(), false));
        assert_eq!(read_property("True"), ("True".into(), false));
        assert_eq!(read_property(r#"""#), (r#"""#.into(), true));
        assert_eq!(read_property(r#""""#), (String::new(), false));
    }

    #[test]
    fn reads_rfc_1123_dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Wed, 02 Jul 2014 01:32:27 GMT"),
            Some(1_404_264_747)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(1_835_481_599)
        );
        for bad in [
            "",
            "Wed, 02 Jul 2014 01:32:27",
            "Wed, 02 Foo 2014 01:32:27 GMT",
            "2014-07-02T01:32:27Z",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
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
        let renew = renew_request("https://h/q/messages/1/t", "S");
        assert_eq!(
            (renew.method, renew.url.as_str()),
            (Method::Post, "https://h/q/messages/1/t")
        );
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
                ("sent", r#""Wed, 02 Jul 2014 01:32:27 GMT""#),
                ("odd", "bare text"),
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
            message.content_type, None,
            "the service's default content type means none"
        );
        let metadata: Vec<(&str, &str)> = message.metadata.iter().collect();
        assert_eq!(
            metadata,
            [
                ("priority", "High"),
                ("customer", "12345,ABC"),
                ("count", "3"),
                ("sent", "Wed, 02 Jul 2014 01:32:27 GMT"),
                ("odd", "bare text"),
            ]
        );
        assert_eq!(locked.unusual, ["odd"]);
        assert_eq!(
            locked.properties.locked_until_utc.as_deref(),
            Some("Wed, 02 Jul 2014 01:33:27 GMT")
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
                ("Content-Type", "application/json"),
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
        assert_eq!(
            locked.message.content_type.as_deref(),
            Some("application/json")
        );
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
        let gone = failure(what, "q", &response(410, &[], "gone"));
        assert!(!gone.transient);
        assert_eq!(
            gone.error.to_string(),
            "sending to `q`: Service Bus entity `q` does not exist (HTTP 410); create it, or fix the name"
        );
        assert!(matches!(
            failure(what, "q", &response(401, &[], "bad token")).error,
            Error::PermissionDenied(_)
        ));
        assert!(matches!(
            failure("receiving from `q`", "q", &response(403, &[], "")).error,
            Error::PermissionDenied(_)
        ));
        let quota = send_failure(what, "q", &response(403, &[], "QuotaExceeded"));
        assert_eq!(
            (quota.error.clone(), quota.transient),
            (
                Error::other("sending to `q`: HTTP 403: QuotaExceeded (the entity's quota is exceeded or the message is too large)"),
                false
            )
        );
        for status in [429, 500, 503] {
            let busy = failure(
                what,
                "q",
                &response(status, &[("Retry-After", "3")], "busy"),
            );
            assert!(busy.transient, "{status}");
            assert_eq!(busy.retry_after, Some(std::time::Duration::from_secs(3)));
        }
        assert!(!failure(what, "q", &response(400, &[], "")).transient);
        assert_eq!(
            failure(what, "q", &response(500, &[], "boom")).to_string(),
            "sending to `q`: HTTP 500: boom"
        );
    }

    #[test]
    fn a_lost_lock_is_reported_as_such() {
        for status in [404, 410] {
            let lost = lock_failure(
                "completing a message from `q`",
                &response(status, &[], "The lock supplied is invalid."),
            );
            assert!(!lost.transient);
            assert!(is_lock_lost(&response(status, &[], "")));
            let text = lost.to_string();
            assert!(
                text.starts_with(&format!("completing a message from `q`: HTTP {status}: The lock supplied is invalid.: the message's lock was lost")),
                "{text}"
            );
        }
        assert!(lock_failure("x", &response(503, &[], "")).transient);
        assert!(!is_lock_lost(&response(503, &[], "")));
    }
}
