//! One HTTP request to one message: topic, data, content type and metadata.

use cloudevents::Decoded;

use crate::response::Rejection;

/// The message a request becomes (`msgplug:adapter/pusher.inbound` as plain data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The request path without its leading `/`, or the CloudEvent's `type` for `/`.
    pub topic: String,
    /// The body (a CloudEvent's data).
    pub data: Vec<u8>,
    /// The `Content-Type` header (a CloudEvent's `datacontenttype`).
    pub content_type: Option<String>,
    /// A CloudEvent's attributes by their CloudEvents names; empty for a plain request.
    pub metadata: Vec<(String, String)>,
}

/// Makes the message for a `POST` to `path_with_query` with `headers` and `body`.
///
/// The topic is the path (percent-decoded, without the leading `/` and the query);
/// a CloudEvent posted to `/` takes its `type` as the topic, while a plain request
/// to `/` is refused. Headers other than `Content-Type` and a binary-mode event's
/// `ce-*` do not become metadata: they describe the transport and may carry
/// credentials.
pub fn inbound(
    path_with_query: Option<&str>,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
) -> Result<Inbound, Rejection> {
    let path_topic = topic_from_path(path_with_query.unwrap_or("/"))?;
    let content_type = header(headers, "content-type")?;
    let event = match cloudevents::decode(headers, content_type, body)? {
        Decoded::Event(event) => event,
        Decoded::Plain { data, content_type } => {
            let topic = path_topic.ok_or_else(|| {
                Rejection::bad_request(
                    "no topic: POST to /TOPIC (the path is the topic), or send a CloudEvent (its `type` is the topic)",
                )
            })?;
            return Ok(Inbound {
                topic,
                data,
                content_type,
                metadata: Vec::new(),
            });
        }
    };
    Ok(Inbound {
        topic: path_topic.unwrap_or_else(|| event.event_type().to_string()),
        data: event.data,
        content_type: event.content_type,
        metadata: event.attributes,
    })
}

/// Checks a `Content-Length` header against `limit` before the body is read.
pub fn check_length(headers: &[(String, Vec<u8>)], limit: u64) -> Result<(), Rejection> {
    let length = header(headers, "content-length")?.and_then(|l| l.parse::<u64>().ok());
    match length {
        Some(length) if length > limit => Err(too_large(&format!("{length} bytes"), limit)),
        _ => Ok(()),
    }
}

/// The rejection of a body (`what`: its size, or how it is too large) over `limit`.
pub fn too_large(what: &str, limit: u64) -> Rejection {
    Rejection::too_large(format!(
        "the request body ({what}) is over the limit of {limit} bytes; raise it with `msgplug compose --option max_body_bytes=N` or MSGPLUG_MAX_BODY_BYTES"
    ))
}

/// Returns the topic a path names: percent-decoded, without the query and the leading
/// `/`; `None` for `/`.
fn topic_from_path(path_with_query: &str) -> Result<Option<String>, Rejection> {
    let path = path_with_query.split('?').next().unwrap_or_default();
    let path = path.strip_prefix('/').unwrap_or(path);
    if path.is_empty() {
        return Ok(None);
    }
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map(|topic| Some(topic.into_owned()))
        .map_err(|_| {
            Rejection::bad_request(format!(
                "the request path `/{path}` is not UTF-8 text after percent-decoding"
            ))
        })
}

/// Returns the value of header `name` (lower-case) as trimmed text, if present.
fn header(headers: &[(String, Vec<u8>)], name: &str) -> Result<Option<String>, Rejection> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| {
            std::str::from_utf8(value)
                .map(|v| v.trim().to_string())
                .map_err(|_| Rejection::bad_request(format!("header `{name}` is not UTF-8 text")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_headers as headers;

    const EVENT: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "s"),
        ("ce-type", "com.example.created"),
    ];

    #[test]
    fn plain_post_topic_is_the_path() {
        let h = headers(&[
            ("content-type", "text/plain"),
            ("authorization", "Bearer x"),
        ]);
        let m = inbound(Some("/orders.new?token=x"), &h, b"hi".to_vec()).unwrap();
        assert_eq!(
            m,
            Inbound {
                topic: "orders.new".into(),
                data: b"hi".to_vec(),
                content_type: Some("text/plain".into()),
                metadata: Vec::new(),
            }
        );
        let m = inbound(Some("/a/b%20c"), &[], Vec::new()).unwrap();
        assert_eq!(m.topic, "a/b c");
        assert_eq!(m.content_type, None);
    }

    #[test]
    fn plain_post_to_the_root_has_no_topic() {
        for path in [None, Some("/"), Some("/?x=1")] {
            let r = inbound(path, &[], b"hi".to_vec()).unwrap_err();
            assert_eq!(r.status, 400);
            assert!(
                r.reason.starts_with("no topic: POST to /TOPIC"),
                "{}",
                r.reason
            );
        }
        let r = inbound(Some("/%FF"), &[], Vec::new()).unwrap_err();
        assert_eq!(
            r.reason,
            "the request path `/%FF` is not UTF-8 text after percent-decoding"
        );
    }

    #[test]
    fn a_cloudevent_to_the_root_takes_its_type_as_topic() {
        let m = inbound(Some("/"), &headers(&EVENT), b"x".to_vec()).unwrap();
        assert_eq!(m.topic, "com.example.created");
        assert_eq!(m.metadata[3], ("type".into(), "com.example.created".into()));
        let m = inbound(Some("/orders"), &headers(&EVENT), b"x".to_vec()).unwrap();
        assert_eq!(m.topic, "orders");
    }

    #[test]
    fn structured_mode_by_content_type() {
        let h = headers(&[(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8",
        )]);
        let body =
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"aGk="}"#;
        let m = inbound(Some("/"), &h, body.to_vec()).unwrap();
        assert_eq!(m.topic, "t");
        assert_eq!(m.data, b"hi");
        assert_eq!(m.content_type, None);
        assert_eq!(m.metadata.len(), 4);
    }

    #[test]
    fn lengths_over_the_limit() {
        assert_eq!(
            check_length(&headers(&[("content-length", "10")]), 10),
            Ok(())
        );
        assert_eq!(check_length(&[], 0), Ok(()));
        let r = check_length(&headers(&[("Content-Length", "11")]), 10).unwrap_err();
        assert_eq!(r.status, 413);
        assert!(
            r.reason.starts_with(
                "the request body (11 bytes) is over the limit of 10 bytes; raise it with"
            ),
            "{}",
            r.reason
        );
    }

    #[test]
    fn non_utf8_content_type() {
        let h = vec![("content-type".to_string(), vec![0xff])];
        let r = inbound(Some("/t"), &h, Vec::new()).unwrap_err();
        assert_eq!(r.reason, "header `content-type` is not UTF-8 text");
    }
}
