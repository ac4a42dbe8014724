//! The NDJSON line format of the local backend, in both directions.
//!
//! A line is an object with `topic` (required), then `data` (UTF-8 text) or
//! `data_base64` (standard base64) — not both; neither means an empty payload —
//! and optionally `content_type`, `metadata` (an object of strings) and `reply_to`.
//! Unknown keys are rejected so that typos do not go unnoticed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{MessageData, Metadata};
use serde::{Deserialize, Serialize};

/// One input line as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    topic: String,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    reply_to: Option<String>,
}

/// One output line, with its keys in the documented order.
#[derive(Serialize)]
struct OutputLine<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "no_metadata")]
    metadata: &'a Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
}

/// Tells serde to leave out an empty `metadata` object.
fn no_metadata(metadata: &&Metadata) -> bool {
    metadata.is_empty()
}

/// Decodes one input line (without its line break).
///
/// Returns `Ok(None)` for a line of only whitespace, and the reason (without a
/// line number) for a malformed one.
pub fn decode(line: &[u8]) -> Result<Option<MessageData>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let input: InputLine = serde_json::from_slice(line).map_err(|e| {
        let text = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        match text.strip_suffix(&position) {
            Some(reason) => format!("{reason} (column {})", e.column()),
            None => text,
        }
    })?;
    if input.topic.is_empty() {
        return Err("`topic` is empty".to_string());
    }
    let data = match (input.data, input.data_base64) {
        (Some(_), Some(_)) => {
            return Err("has both `data` and `data_base64`; give one of them".to_string())
        }
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("`data_base64` is not valid base64: {e}"))?,
        (None, None) => Vec::new(),
    };
    Ok(Some(MessageData {
        topic: Some(input.topic),
        data,
        content_type: input.content_type,
        metadata: input.metadata,
        reply_to: input.reply_to,
    }))
}

/// Encodes `message` as one output line on `topic` (without a line break).
///
/// The payload goes into `data` when it is valid UTF-8, else into `data_base64`;
/// `reply_to` overrides the message's own reply address when given.
pub fn encode(topic: &str, message: &MessageData, reply_to: Option<&str>) -> String {
    let text = std::str::from_utf8(&message.data).ok();
    let line = OutputLine {
        topic,
        data: text,
        data_base64: text.is_none().then(|| STANDARD.encode(&message.data)),
        content_type: message.content_type.as_deref(),
        metadata: &message.metadata,
        reply_to: reply_to.or(message.reply_to.as_deref()),
    };
    serde_json::to_string(&line).expect("strings and string maps always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> MessageData {
        decode(line.as_bytes()).unwrap().unwrap()
    }

    fn err(line: &str) -> String {
        decode(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn decodes_text_and_optional_keys() {
        let m = ok(
            r#"{"topic": "orders.new", "data": "hé", "content_type": "text/plain", "metadata": {"b": "1", "a": "2"}, "reply_to": "r"}"#,
        );
        assert_eq!(m.topic.as_deref(), Some("orders.new"));
        assert_eq!(m.data, "hé".as_bytes());
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        let pairs: Vec<_> = m.metadata.iter().collect();
        assert_eq!(pairs, [("b", "1"), ("a", "2")]);
        assert_eq!(m.reply_to.as_deref(), Some("r"));
    }

    #[test]
    fn decodes_base64_and_empty() {
        let m = ok(r#"{"topic": "t", "data_base64": "AP8="}"#);
        assert_eq!(m.data, [0, 255]);
        let m = ok(r#"{"topic": "t"}"#);
        assert!(m.data.is_empty());
        assert_eq!(m.content_type, None);
        assert!(m.metadata.is_empty());
        assert_eq!(m.reply_to, None);
    }

    #[test]
    fn skips_blank_lines() {
        assert_eq!(decode(b""), Ok(None));
        assert_eq!(decode(b"  \t \r"), Ok(None));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(err(r#"{"topic": "t", "dta": "x"}"#).starts_with("unknown field `dta`"));
        assert_eq!(
            err(r#"{"topic": "t", "data": "x", "data_base64": "eA=="}"#),
            "has both `data` and `data_base64`; give one of them"
        );
        assert!(err(r#"{"topic": "t", "data_base64": "!!"}"#)
            .starts_with("`data_base64` is not valid base64: "));
        assert!(err(r#"{"data": "x"}"#).starts_with("missing field `topic`"));
        assert_eq!(err(r#"{"topic": ""}"#), "`topic` is empty");
        assert!(err("not json").starts_with("expected ident"));
        assert!(err(r#"{"topic": "t", "metadata": {"a": 1}}"#).starts_with("invalid type"));
        assert!(!err("{").contains("at line"));
        assert!(decode(b"{\"topic\": \"t\", \"data\": \"\xff\"}").is_err());
    }

    #[test]
    fn encodes_keys_in_order() {
        let mut m = MessageData::new(b"hi".to_vec());
        assert_eq!(encode("t", &m, None), r#"{"topic":"t","data":"hi"}"#);
        m.content_type = Some("text/plain".into());
        m.metadata.insert("z".into(), "1".into());
        m.metadata.insert("a".into(), "2".into());
        m.reply_to = Some("own".into());
        assert_eq!(
            encode("t", &m, None),
            r#"{"topic":"t","data":"hi","content_type":"text/plain","metadata":{"z":"1","a":"2"},"reply_to":"own"}"#
        );
        assert_eq!(
            encode("t", &m, Some("_INBOX.1")),
            r#"{"topic":"t","data":"hi","content_type":"text/plain","metadata":{"z":"1","a":"2"},"reply_to":"_INBOX.1"}"#
        );
    }

    #[test]
    fn encodes_binary_as_base64() {
        let m = MessageData::new(vec![0, 255]);
        assert_eq!(
            encode("t", &m, None),
            r#"{"topic":"t","data_base64":"AP8="}"#
        );
        let m = MessageData::new(Vec::new());
        assert_eq!(encode("t", &m, None), r#"{"topic":"t","data":""}"#);
    }

    #[test]
    fn round_trips() {
        let line = r#"{"topic":"a.b","data_base64":"AP8=","content_type":"x/y","metadata":{"k":"v"},"reply_to":"r"}"#;
        let m = ok(line);
        assert_eq!(encode("a.b", &m, None), line);
    }
}
