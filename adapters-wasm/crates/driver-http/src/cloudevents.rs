//! CloudEvents 1.0 over HTTP: reading an event in binary mode (`ce-*` headers) or in
//! structured mode (a JSON document, `application/cloudevents+json`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::response::Rejection;

/// The only CloudEvents version the driver reads.
const SPECVERSION: &str = "1.0";

/// The attributes every CloudEvent has, in the order they come first in [`Event::attributes`].
const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];

/// How a request carries its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A binary-mode CloudEvent: attributes in `ce-*` headers, the data is the body.
    Binary,
    /// A structured-mode CloudEvent in JSON: the whole event is the body.
    Structured,
    /// A plain request: not a CloudEvent.
    Plain,
}

/// Tells how a request with `content_type` (its essence, lower-case) and `headers`
/// carries its message, or why the driver cannot read it.
///
/// As the HTTP binding says, a `application/cloudevents…` content type means
/// structured mode (JSON is the only format read; batches are refused), and
/// otherwise a `ce-specversion` header means binary mode.
pub fn mode(content_type: Option<&str>, headers: &[(String, Vec<u8>)]) -> Result<Mode, Rejection> {
    match content_type {
        Some("application/cloudevents+json") => return Ok(Mode::Structured),
        Some("application/cloudevents-batch+json") => {
            return Err(Rejection::unsupported(
                "batched CloudEvents are not supported: send one event per request",
            ))
        }
        Some(other) if other.starts_with("application/cloudevents") => {
            return Err(Rejection::unsupported(format!(
                "structured-mode CloudEvents in `{other}` are not supported: send `application/cloudevents+json`, or use binary mode"
            )))
        }
        _ => {}
    }
    let binary = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("ce-specversion"));
    Ok(if binary { Mode::Binary } else { Mode::Plain })
}

/// A CloudEvent read from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Every attribute but `datacontenttype`, by its CloudEvents name:
    /// `specversion`, `id`, `source`, `type`, then the others in name order.
    pub attributes: Vec<(String, String)>,
    /// The event's data.
    pub data: Vec<u8>,
    /// The data's media type (`datacontenttype`), if known.
    pub content_type: Option<String>,
}

impl Event {
    /// Checks the required attributes and puts the attributes in their documented order.
    fn new(
        mut attributes: Vec<(String, String)>,
        data: Vec<u8>,
        content_type: Option<String>,
        how: impl Fn(&str) -> String,
    ) -> Result<Self, Rejection> {
        for name in REQUIRED {
            match attributes.iter().find(|(n, _)| n == name) {
                None => {
                    return Err(Rejection::bad_request(format!(
                        "the CloudEvent has no {}",
                        how(name)
                    )))
                }
                Some((_, value)) if value.is_empty() => {
                    return Err(Rejection::bad_request(format!(
                        "the CloudEvent's {} is empty",
                        how(name)
                    )))
                }
                Some((_, value)) if name == "specversion" && value != SPECVERSION => {
                    return Err(Rejection::bad_request(format!(
                        "CloudEvents specversion `{value}` is not supported: send 1.0"
                    )))
                }
                Some(_) => {}
            }
        }
        attributes.sort_by(|(a, _), (b, _)| {
            let rank = |name: &str| {
                REQUIRED
                    .iter()
                    .position(|r| *r == name)
                    .unwrap_or(REQUIRED.len())
            };
            rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
        });
        Ok(Self {
            attributes,
            data,
            content_type,
        })
    }

    /// Returns the event's `type` attribute.
    pub fn event_type(&self) -> &str {
        self.attributes
            .iter()
            .find(|(name, _)| name == "type")
            .map(|(_, value)| value.as_str())
            .expect("Event::new checked that `type` is present")
    }
}

/// Reads a binary-mode event: each `ce-NAME` header is attribute NAME, its value
/// percent-decoded as the HTTP binding says; `content_type` is the data's media type.
pub fn from_binary(
    headers: &[(String, Vec<u8>)],
    content_type: Option<String>,
    body: Vec<u8>,
) -> Result<Event, Rejection> {
    let mut attributes: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let Some(attribute) = lower.strip_prefix("ce-") else {
            continue;
        };
        if attributes.iter().any(|(n, _)| n == attribute) {
            return Err(Rejection::bad_request(format!(
                "header `{lower}` appears more than once"
            )));
        }
        let decoded = percent_encoding::percent_decode(value)
            .decode_utf8()
            .map_err(|_| {
                Rejection::bad_request(format!(
                    "header `{lower}` is not UTF-8 text after percent-decoding"
                ))
            })?;
        attributes.push((attribute.to_string(), decoded.trim().to_string()));
    }
    Event::new(attributes, body, content_type, |name| {
        format!("`ce-{name}` header")
    })
}

/// Reads a structured-mode event in the JSON format.
///
/// Attribute values may be strings, numbers or booleans (the latter two become their
/// JSON text); `null` means absent. The data comes from `data_base64` (decoded), or
/// from `data`: a JSON string is taken as its text when `datacontenttype` is not a JSON
/// type, anything else is the JSON document itself (and without a `datacontenttype`
/// the content type is `application/json`, as the JSON format implies).
pub fn from_structured(body: &[u8]) -> Result<Event, Rejection> {
    let object: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        Rejection::bad_request(format!(
            "the structured-mode CloudEvent is not a JSON object: {e}"
        ))
    })?;
    let mut attributes = Vec::new();
    let mut content_type = None;
    let mut data = None;
    let mut data_base64 = None;
    for (name, value) in object {
        let text = match value {
            Value::Null => continue,
            Value::String(text) => text,
            Value::Number(_) | Value::Bool(_) if name != "data" => value.to_string(),
            value if name == "data" => {
                data = Some(value);
                continue;
            }
            _ => {
                return Err(Rejection::bad_request(format!(
                    "CloudEvent attribute `{name}` is an object or array: attributes are strings, numbers or booleans"
                )))
            }
        };
        match name.as_str() {
            "data" => data = Some(Value::String(text)),
            "data_base64" => data_base64 = Some(text),
            "datacontenttype" => content_type = Some(text),
            _ => attributes.push((name, text)),
        }
    }
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(Rejection::bad_request(
                "the CloudEvent has both `data` and `data_base64`: give one of them",
            ))
        }
        (None, Some(encoded)) => STANDARD.decode(encoded.trim()).map_err(|e| {
            Rejection::bad_request(format!("`data_base64` is not valid base64: {e}"))
        })?,
        (Some(value), None) => {
            let content_type = content_type.get_or_insert_with(|| "application/json".into());
            match value {
                Value::String(text) if !is_json(content_type) => text.into_bytes(),
                value => serde_json::to_vec(&value).expect("a JSON value always serializes"),
            }
        }
        (None, None) => Vec::new(),
    };
    Event::new(attributes, data, content_type, |name| {
        format!("`{name}` attribute")
    })
}

/// Returns true for a JSON media type: `application/json`, `text/json` or `…/…+json`.
fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Returns a media type's essence: the part before any parameters, trimmed and lower-case.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_headers as headers;

    fn pairs(event: &Event) -> Vec<(&str, &str)> {
        event
            .attributes
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    const REQUIRED_HEADERS: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "42"),
        ("ce-source", "/sensors/7"),
        ("ce-type", "com.example.reading"),
    ];

    #[test]
    fn modes() {
        let ce = headers(&[("Ce-Specversion", "1.0")]);
        assert_eq!(mode(None, &ce), Ok(Mode::Binary));
        assert_eq!(mode(Some("text/plain"), &ce), Ok(Mode::Binary));
        assert_eq!(mode(Some("text/plain"), &[]), Ok(Mode::Plain));
        assert_eq!(mode(None, &[]), Ok(Mode::Plain));
        assert_eq!(
            mode(Some("application/cloudevents+json"), &ce),
            Ok(Mode::Structured)
        );
        let batch = mode(Some("application/cloudevents-batch+json"), &[]).unwrap_err();
        assert_eq!(batch.status, 415);
        assert!(batch.reason.contains("one event per request"));
        let avro = mode(Some("application/cloudevents+avro"), &[]).unwrap_err();
        assert_eq!(avro.status, 415);
        assert!(avro.reason.contains("`application/cloudevents+avro`"));
    }

    #[test]
    fn binary_mode_attributes_in_canonical_order() {
        let mut h = headers(&[
            ("content-type", "text/plain"),
            ("ce-subject", "temp"),
            ("user-agent", "curl"),
            ("CE-Traceparent", "00-abc"),
        ]);
        h.extend(headers(&REQUIRED_HEADERS).into_iter().rev());
        let e = from_binary(&h, Some("text/plain".into()), b"21.5".to_vec()).unwrap();
        assert_eq!(
            pairs(&e),
            [
                ("specversion", "1.0"),
                ("id", "42"),
                ("source", "/sensors/7"),
                ("type", "com.example.reading"),
                ("subject", "temp"),
                ("traceparent", "00-abc"),
            ]
        );
        assert_eq!(e.event_type(), "com.example.reading");
        assert_eq!(e.data, b"21.5");
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn binary_mode_values_are_percent_decoded() {
        let mut h = headers(&REQUIRED_HEADERS);
        h.extend(headers(&[("ce-subject", "caf%C3%A9 %22x%22 100%25")]));
        let e = from_binary(&h, None, Vec::new()).unwrap();
        assert_eq!(
            e.attributes[4],
            ("subject".into(), "café \"x\" 100%".into())
        );
        h.push(("ce-bad".into(), b"%FF".to_vec()));
        let r = from_binary(&h, None, Vec::new()).unwrap_err();
        assert_eq!(r.status, 400);
        assert!(r.reason.contains("`ce-bad`"), "{}", r.reason);
    }

    #[test]
    fn binary_mode_rejects_incomplete_events() {
        for missing in REQUIRED_HEADERS.map(|(name, _)| name) {
            let h: Vec<_> = headers(&REQUIRED_HEADERS)
                .into_iter()
                .filter(|(n, _)| n != missing)
                .collect();
            let r = from_binary(&h, None, Vec::new()).unwrap_err();
            assert_eq!(r.status, 400);
            assert_eq!(
                r.reason,
                format!("the CloudEvent has no `{missing}` header")
            );
        }
        let mut h = headers(&REQUIRED_HEADERS);
        h[1].1.clear();
        let r = from_binary(&h, None, Vec::new()).unwrap_err();
        assert_eq!(r.reason, "the CloudEvent's `ce-id` header is empty");
        let mut h = headers(&REQUIRED_HEADERS);
        h[0].1 = b"0.3".to_vec();
        let r = from_binary(&h, None, Vec::new()).unwrap_err();
        assert_eq!(
            r.reason,
            "CloudEvents specversion `0.3` is not supported: send 1.0"
        );
        let mut h = headers(&REQUIRED_HEADERS);
        h.push(("Ce-Id".into(), b"43".to_vec()));
        let r = from_binary(&h, None, Vec::new()).unwrap_err();
        assert_eq!(r.reason, "header `ce-id` appears more than once");
    }

    fn structured(json: &str) -> Result<Event, Rejection> {
        from_structured(json.as_bytes())
    }

    #[test]
    fn structured_mode_with_text_data() {
        let e = structured(
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","subject":"x",
                "datacontenttype":"text/plain","data":"hello","sequence":7,"urgent":true,"gone":null}"#,
        )
        .unwrap();
        assert_eq!(
            pairs(&e),
            [
                ("specversion", "1.0"),
                ("id", "1"),
                ("source", "s"),
                ("type", "t"),
                ("sequence", "7"),
                ("subject", "x"),
                ("urgent", "true"),
            ]
        );
        assert_eq!(e.data, b"hello");
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn structured_mode_with_json_data() {
        let e = structured(
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","data":{"a":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(e.data, br#"{"a":[1,2]}"#);
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        let e = structured(
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","datacontenttype":"application/vnd.x+json","data":"quoted"}"#,
        )
        .unwrap();
        assert_eq!(e.data, br#""quoted""#);
        let e = structured(
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","datacontenttype":"text/csv","data":3}"#,
        )
        .unwrap();
        assert_eq!(e.data, b"3");
    }

    #[test]
    fn structured_mode_with_base64_data() {
        let e = structured(
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","datacontenttype":"application/octet-stream","data_base64":"AP8="}"#,
        )
        .unwrap();
        assert_eq!(e.data, [0, 255]);
        assert_eq!(e.content_type.as_deref(), Some("application/octet-stream"));
        let e = structured(r#"{"specversion":"1.0","type":"t","source":"s","id":"1"}"#).unwrap();
        assert!(e.data.is_empty());
        assert_eq!(e.content_type, None);
    }

    #[test]
    fn structured_mode_rejects_malformed_events() {
        let reason = |json: &str| {
            let r = structured(json).unwrap_err();
            assert_eq!(r.status, 400);
            r.reason
        };
        assert!(reason("[1]").starts_with("the structured-mode CloudEvent is not a JSON object: "));
        assert!(reason("{").starts_with("the structured-mode CloudEvent is not a JSON object: "));
        assert_eq!(
            reason(r#"{"specversion":"1.0","source":"s","id":"1"}"#),
            "the CloudEvent has no `type` attribute"
        );
        assert_eq!(
            reason(
                r#"{"specversion":"1.0","type":"t","source":"s","id":"1","data":"x","data_base64":"eA=="}"#
            ),
            "the CloudEvent has both `data` and `data_base64`: give one of them"
        );
        assert!(reason(
            r#"{"specversion":"1.0","type":"t","source":"s","id":"1","data_base64":"!"}"#
        )
        .starts_with("`data_base64` is not valid base64: "));
        assert_eq!(
            reason(r#"{"specversion":"1.0","type":"t","source":"s","id":"1","ext":{"a":1}}"#),
            "CloudEvent attribute `ext` is an object or array: attributes are strings, numbers or booleans"
        );
        assert_eq!(
            reason(r#"{"specversion":"0.3","type":"t","source":"s","id":"1"}"#),
            "CloudEvents specversion `0.3` is not supported: send 1.0"
        );
    }

    #[test]
    fn essences() {
        assert_eq!(
            essence(" Application/JSON ; charset=utf-8"),
            "application/json"
        );
        assert!(is_json("application/cloudevents+json"));
        assert!(is_json("text/json"));
        assert!(!is_json("text/plain"));
    }
}
