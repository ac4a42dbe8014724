//! A message as a binary-mode CloudEvent 1.0 over HTTP, and a response as a reply; the
//! CloudEvents codec itself is the `cloudevents` crate (shared with the http driver).

use cloudevents::{is_attribute_name, is_header_value, Decoded, SPECVERSION};
use common::{MessageData, Metadata};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// What is percent-encoded in a topic put into the URL: whatever is not safe in a
/// path segment or a query value. `/` is kept, so `a/b` becomes the path `a/b`.
const TOPIC: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The `source` of the events sent when the metadata has none.
pub const DEFAULT_SOURCE: &str = "msgplug";

/// The spellings of the topic placeholder in a broker URL (normalised URLs carry it
/// percent-encoded).
const PLACEHOLDERS: [&str; 4] = ["{topic}", "%7Btopic%7D", "%7btopic%7d", "%7Btopic%7d"];

/// Returns the URL to POST a message on `topic` to: `template` with every topic
/// placeholder (`{topic}`, also percent-encoded as `%7Btopic%7D`) replaced by the
/// percent-encoded topic, or `template` as is when it has none.
pub fn url(template: &str, topic: &str) -> String {
    let encoded = utf8_percent_encode(topic, TOPIC).to_string();
    let mut url = template.to_string();
    for placeholder in PLACEHOLDERS {
        url = url.replace(placeholder, &encoded);
    }
    url
}

/// The headers of one CloudEvent, and the metadata keys that could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// Metadata keys left out, each with the reason.
    pub skipped: Vec<String>,
}

/// Makes the headers of a binary-mode CloudEvent for `message` on `topic` with event id `id`.
///
/// `ce-specversion: 1.0`, `ce-id` (`id`) and `ce-type` (the topic) are always set, and
/// `ce-source` is `msgplug` unless the metadata has a `source`. A metadata key that is
/// a CloudEvents attribute name (`a-z`, `0-9`, at most 20 characters) is sent as
/// `ce-KEY` with its value percent-encoded as the binding says; the keys `specversion`,
/// `id`, `type` and `datacontenttype` are not sent (the message's content type is the
/// `Content-Type` header). Any other key is sent as a plain header `KEY: value` when it
/// is a valid header name that is not reserved (`content-*`, `ce-*`, `host`, hop-by-hop)
/// and its value is a valid header value; else it is skipped. The `ce-*` headers come
/// first, then the plain ones, then `Content-Type`.
pub fn headers(topic: &str, message: &MessageData, id: &str) -> Headers {
    let mut attributes = vec![("specversion", SPECVERSION), ("id", id), ("type", topic)];
    if !message.metadata.iter().any(|(key, _)| key == "source") {
        attributes.push(("source", DEFAULT_SOURCE));
    }
    let mut plain = Vec::new();
    let mut skipped = Vec::new();
    for (key, value) in message.metadata.iter() {
        if is_attribute_name(key) {
            if !matches!(key, "specversion" | "id" | "type" | "datacontenttype") {
                attributes.push((key, value));
            }
        } else if is_reserved(key) || !is_token(key) {
            skipped.push(format!(
                "`{key}` is neither a CloudEvents attribute name (a-z, 0-9, at most 20 characters) nor a header name that may be set"
            ));
        } else if !is_header_value(value) {
            skipped.push(format!(
                "`{key}` has a value that is not a valid header value"
            ));
        } else {
            plain.push((key.to_string(), value.to_string()));
        }
    }
    let mut headers = cloudevents::binary_headers(&attributes);
    headers.extend(plain);
    if let Some(content_type) = &message.content_type {
        headers.push(("content-type".to_string(), content_type.clone()));
    }
    Headers { headers, skipped }
}

/// Makes the reply a response carries, or `None` for 204 No Content.
///
/// The response is read as the `cloudevents` crate says, as strictly as the http
/// driver reads requests: a CloudEvent's data, content type and attributes (as
/// metadata, under their CloudEvents names) make the reply, and a malformed one is an
/// error; any other response's body and `Content-Type` make it, with no metadata.
pub fn reply(
    status: u16,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Result<Option<MessageData>, cloudevents::Error> {
    if status == 204 {
        return Ok(None);
    }
    let content_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.clone());
    let (data, content_type, metadata) = match cloudevents::decode(headers, content_type, body)? {
        Decoded::Event(event) => (
            event.data,
            event.content_type,
            Metadata::from_pairs(event.attributes),
        ),
        Decoded::Plain { data, content_type } => (data, content_type, Metadata::default()),
    };
    Ok(Some(MessageData {
        topic: None,
        data,
        content_type,
        metadata,
        reply_to: None,
    }))
}

/// Returns true for a header name the backend sets itself or the host refuses.
fn is_reserved(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.starts_with("ce-")
        || key.starts_with("content-")
        || matches!(
            key.as_str(),
            "host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
                | "trailer"
                | "http2-settings"
        )
}

/// Returns true for an HTTP token (RFC 9110), the syntax of a header name.
fn is_token(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(metadata: &[(&str, &str)]) -> MessageData {
        let mut m = MessageData::new(b"x".to_vec());
        for (k, v) in metadata {
            m.metadata.insert(k.to_string(), v.to_string());
        }
        m
    }

    fn pairs(h: &Headers) -> Vec<(&str, &str)> {
        h.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn urls() {
        assert_eq!(
            url("http://h:1/in/{topic}", "orders.new"),
            "http://h:1/in/orders.new"
        );
        assert_eq!(
            url("http://h/in/%7Btopic%7D?t=%7btopic%7d", "a b/c&d"),
            "http://h/in/a%20b/c%26d?t=a%20b/c%26d"
        );
        assert_eq!(url("http://h/hook", "orders"), "http://h/hook");
        assert_eq!(url("http://h/{topic}", "100%é"), "http://h/100%25%C3%A9");
    }

    #[test]
    fn required_attributes() {
        let mut m = message(&[]);
        m.content_type = Some("text/plain".into());
        let h = headers("orders.new", &m, "abc");
        assert_eq!(
            pairs(&h),
            [
                ("ce-specversion", "1.0"),
                ("ce-id", "abc"),
                ("ce-type", "orders.new"),
                ("ce-source", "msgplug"),
                ("content-type", "text/plain"),
            ]
        );
        assert!(h.skipped.is_empty());
    }

    #[test]
    fn metadata_as_attributes_and_headers() {
        let m = message(&[
            ("specversion", "1.0"),
            ("id", "old"),
            ("type", "old.type"),
            ("source", "/sensors/7"),
            ("subject", "café \"x\" 100%"),
            ("seq", "1"),
            ("datacontenttype", "text/csv"),
            ("transformed-by", "transform"),
            ("X-Trace", "t1"),
        ]);
        let h = headers("t", &m, "new");
        assert_eq!(
            pairs(&h),
            [
                ("ce-specversion", "1.0"),
                ("ce-id", "new"),
                ("ce-type", "t"),
                ("ce-source", "/sensors/7"),
                ("ce-subject", "caf%C3%A9%20%22x%22%20100%25"),
                ("ce-seq", "1"),
                ("transformed-by", "transform"),
                ("X-Trace", "t1"),
            ]
        );
        assert!(h.skipped.is_empty());
    }

    #[test]
    fn unsendable_metadata_is_skipped() {
        let m = message(&[
            ("ce-id", "x"),
            ("Content-Length", "1"),
            ("Host", "h"),
            ("two words", "x"),
            ("averyveryverylongattributename", "ok"),
            ("note", "line\nbreak"),
            ("Note", "é"),
        ]);
        let h = headers("t", &m, "1");
        assert_eq!(
            pairs(&h)[4..],
            [
                ("ce-note", "line%0Abreak"),
                ("averyveryverylongattributename", "ok"),
            ],
            "the ce-* headers first, then the plain ones"
        );
        let neither = "is neither a CloudEvents attribute name (a-z, 0-9, at most 20 characters) nor a header name that may be set";
        assert_eq!(
            h.skipped,
            [
                format!("`ce-id` {neither}"),
                format!("`Content-Length` {neither}"),
                format!("`Host` {neither}"),
                format!("`two words` {neither}"),
                "`Note` has a value that is not a valid header value".to_string(),
            ]
        );
    }

    fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_replies() {
        assert_eq!(reply(204, &[], Vec::new()), Ok(None));
        let headers = strings(&[
            ("Content-Type", "text/plain"),
            ("ce-subject", "caf%C3%A9"),
            ("server", "x"),
        ]);
        let r = reply(200, &headers, b"hello".to_vec()).unwrap().unwrap();
        assert_eq!(r.data, b"hello");
        assert_eq!(r.content_type.as_deref(), Some("text/plain"));
        assert!(
            r.metadata.is_empty(),
            "without ce-specversion the response is no CloudEvent: {:?}",
            r.metadata
        );
        assert_eq!((r.topic, r.reply_to), (None, None));
        let r = reply(200, &[], Vec::new()).unwrap().unwrap();
        assert!(r.data.is_empty() && r.content_type.is_none());
    }

    #[test]
    fn cloudevent_replies() {
        let event = [
            ("ce-specversion", "1.0"),
            ("ce-id", "r1"),
            ("ce-source", "/answers"),
            ("ce-type", "greeting"),
            ("ce-subject", "caf%C3%A9"),
            ("Content-Type", "text/plain"),
        ];
        let r = reply(200, &strings(&event), b"hello".to_vec())
            .unwrap()
            .unwrap();
        assert_eq!(r.data, b"hello");
        assert_eq!(r.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            r.metadata.iter().collect::<Vec<_>>(),
            [
                ("specversion", "1.0"),
                ("id", "r1"),
                ("source", "/answers"),
                ("type", "greeting"),
                ("subject", "café"),
            ]
        );
        let structured = strings(&[("content-type", "application/cloudevents+json")]);
        let body =
            br#"{"specversion":"1.0","id":"r2","source":"s","type":"t","data_base64":"AP8="}"#;
        let r = reply(200, &structured, body.to_vec()).unwrap().unwrap();
        assert_eq!((r.data, r.metadata.iter().count()), (vec![0, 255], 4));
        let incomplete = strings(&event[..3]);
        assert_eq!(
            reply(200, &incomplete, Vec::new()),
            Err(cloudevents::Error::Malformed(
                "the CloudEvent has no `ce-type` header".into()
            ))
        );
    }

    #[test]
    fn sent_headers_read_back_as_the_same_event() {
        let mut m = message(&[("subject", "café"), ("X-Trace", "t1")]);
        m.content_type = Some("text/plain".into());
        let h = headers("orders", &m, "e1");
        let r = reply(200, &h.headers, m.data.clone()).unwrap().unwrap();
        assert_eq!(r.data, m.data);
        assert_eq!(r.content_type, m.content_type);
        assert_eq!(
            r.metadata.iter().collect::<Vec<_>>(),
            [
                ("specversion", "1.0"),
                ("id", "e1"),
                ("source", "msgplug"),
                ("type", "orders"),
                ("subject", "café"),
            ]
        );
    }
}
