//! A message as a binary-mode CloudEvent 1.0 over HTTP, and a response as a reply.

use common::{MessageData, Metadata};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// What the HTTP binding percent-encodes in a `ce-*` header value: space, `"`, `%`
/// and everything outside printable ASCII (non-ASCII is always encoded).
const CE_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

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
/// and its value is a valid header value; else it is skipped.
pub fn headers(topic: &str, message: &MessageData, id: &str) -> Headers {
    let encode = |value: &str| utf8_percent_encode(value, CE_VALUE).to_string();
    let mut headers = vec![
        ("ce-specversion".to_string(), "1.0".to_string()),
        ("ce-id".to_string(), encode(id)),
        ("ce-type".to_string(), encode(topic)),
    ];
    if !message.metadata.iter().any(|(key, _)| key == "source") {
        headers.push(("ce-source".to_string(), DEFAULT_SOURCE.to_string()));
    }
    let mut skipped = Vec::new();
    for (key, value) in message.metadata.iter() {
        if is_attribute_name(key) {
            if !matches!(key, "specversion" | "id" | "type" | "datacontenttype") {
                headers.push((format!("ce-{key}"), encode(value)));
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
            headers.push((key.to_string(), value.to_string()));
        }
    }
    if let Some(content_type) = &message.content_type {
        headers.push(("content-type".to_string(), content_type.clone()));
    }
    Headers { headers, skipped }
}

/// Makes the reply a response carries, or `None` for 204 No Content.
///
/// The reply's data is the body, its content type the `Content-Type` header, and its
/// metadata the response's `ce-*` headers (as in binary mode: name without the prefix,
/// value percent-decoded).
pub fn reply(status: u16, headers: &[(String, String)], body: Vec<u8>) -> Option<MessageData> {
    if status == 204 {
        return None;
    }
    let mut metadata = Metadata::default();
    let mut content_type = None;
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if name == "content-type" {
            content_type = Some(value.clone());
        } else if let Some(attribute) = name.strip_prefix("ce-") {
            let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
            metadata.insert(attribute.to_string(), value);
        }
    }
    Some(MessageData {
        topic: None,
        data: body,
        content_type,
        metadata,
        reply_to: None,
    })
}

/// Returns true for a CloudEvents attribute name: 1 to 20 of `a-z` and `0-9`.
fn is_attribute_name(key: &str) -> bool {
    (1..=20).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
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

/// Returns true when `value` may be sent as a header value as is: visible ASCII,
/// spaces and tabs, with no whitespace at either end.
fn is_header_value(value: &str) -> bool {
    value.trim() == value
        && value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
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
                ("averyveryverylongattributename", "ok"),
                ("ce-note", "line%0Abreak"),
            ]
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

    #[test]
    fn replies() {
        assert_eq!(reply(204, &[], Vec::new()), None);
        let headers = vec![
            ("Content-Type".to_string(), "text/plain".to_string()),
            ("ce-subject".to_string(), "caf%C3%A9".to_string()),
            ("server".to_string(), "x".to_string()),
        ];
        let r = reply(200, &headers, b"hello".to_vec()).unwrap();
        assert_eq!(r.data, b"hello");
        assert_eq!(r.content_type.as_deref(), Some("text/plain"));
        assert_eq!(r.metadata.iter().collect::<Vec<_>>(), [("subject", "café")]);
        assert_eq!((r.topic, r.reply_to), (None, None));
        let r = reply(200, &[], Vec::new()).unwrap();
        assert!(r.data.is_empty() && r.content_type.is_none());
    }
}
