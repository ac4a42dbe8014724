//! How a message's parts travel in Redis: the JSON envelope (pub/sub, replies) and the
//! fields of a stream entry.
//!
//! Pub/sub carries bare payloads, so a message's content type, metadata and reply
//! address can only travel inside an envelope, a JSON object:
//! `{"msgplug": 1, "data": "text"}` or `"data_base64": "..."` for binary data, with
//! optional `"content_type"`, `"metadata": {"key": "value"}` and `"reply_to"`. A
//! received payload that is such an object is unwrapped; any other is the data itself.
//!
//! A stream entry has the fields `data`, `content-type` and `reply-to` (when set) and one
//! field `meta:KEY` per metadata key. Received entries with other fields (written by
//! other clients) keep them as metadata under their own names.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{MessageData, Metadata};
use serde::{Deserialize, Serialize};

/// The prefix of a stream entry's metadata fields.
pub const META_PREFIX: &str = "meta:";

/// The envelope's marker value (`"msgplug": 1`).
const ENVELOPE_FORMAT: u32 = 1;

/// The JSON envelope.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// Always [`ENVELOPE_FORMAT`].
    msgplug: u32,
    /// The data, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    /// The data in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    /// The content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    /// The metadata.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
    /// Where replies go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<String>,
}

/// Wraps `message` (with `reply_to`) in the JSON envelope.
pub fn wrap(message: &MessageData, reply_to: Option<&str>) -> Vec<u8> {
    let (data, data_base64) = match std::str::from_utf8(&message.data) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (None, Some(STANDARD.encode(&message.data))),
    };
    let envelope = Envelope {
        msgplug: ENVELOPE_FORMAT,
        data,
        data_base64,
        content_type: message.content_type.clone(),
        metadata: message.metadata.clone(),
        reply_to: reply_to.map(String::from),
    };
    serde_json::to_vec(&envelope).expect("an envelope always serializes")
}

/// Reads a pub/sub payload received on `channel`: unwraps an envelope, else the
/// payload is the data.
pub fn unwrap(channel: String, payload: Vec<u8>) -> MessageData {
    let envelope = (payload.first() == Some(&b'{'))
        .then(|| serde_json::from_slice::<Envelope>(&payload).ok())
        .flatten()
        .filter(|e| e.msgplug == ENVELOPE_FORMAT);
    let Some(envelope) = envelope else {
        return MessageData {
            topic: Some(channel),
            ..MessageData::new(payload)
        };
    };
    let data = match (envelope.data, envelope.data_base64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(encoded)) => match STANDARD.decode(encoded) {
            Ok(bytes) => bytes,
            Err(_) => return MessageData::new(payload),
        },
        (None, None) => Vec::new(),
    };
    MessageData {
        topic: Some(channel),
        data,
        content_type: envelope.content_type,
        metadata: envelope.metadata,
        reply_to: envelope.reply_to,
    }
}

/// The fields of a stream entry for `message` (with `reply_to`), in order.
pub fn to_fields(message: &MessageData, reply_to: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut fields = vec![("data".to_string(), message.data.clone())];
    if let Some(content_type) = &message.content_type {
        fields.push(("content-type".into(), content_type.clone().into_bytes()));
    }
    if let Some(reply_to) = reply_to {
        fields.push(("reply-to".into(), reply_to.as_bytes().to_vec()));
    }
    for (key, value) in message.metadata.iter() {
        fields.push((format!("{META_PREFIX}{key}"), value.as_bytes().to_vec()));
    }
    fields
}

/// Reads a stream entry of `stream` from its fields (name, value, name, value, ...).
pub fn from_fields(stream: &str, fields: Vec<(Vec<u8>, Vec<u8>)>) -> MessageData {
    let mut message = MessageData {
        topic: Some(stream.to_string()),
        ..MessageData::default()
    };
    for (name, value) in fields {
        let name = String::from_utf8_lossy(&name).into_owned();
        let text = || String::from_utf8_lossy(&value).into_owned();
        match name.as_str() {
            "data" => message.data = value,
            "content-type" => message.content_type = Some(text()),
            "reply-to" => message.reply_to = Some(text()),
            _ => {
                let key = name.strip_prefix(META_PREFIX).unwrap_or(&name).to_string();
                message.metadata.insert(key, text());
            }
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8]) -> MessageData {
        MessageData {
            data: data.to_vec(),
            content_type: Some("text/plain".into()),
            metadata: Metadata::from_pairs([("k".to_string(), "v".to_string())]),
            ..MessageData::default()
        }
    }

    #[test]
    fn envelopes_round_trip_text_and_binary() {
        for data in [&b"hi \"there\""[..], &[0xff, 0, 0xfe]] {
            let wrapped = wrap(&message(data), Some("msgplug:reply:1"));
            let back = unwrap("ch".into(), wrapped);
            assert_eq!(back.topic.as_deref(), Some("ch"));
            assert_eq!(back.data, data);
            assert_eq!(back.content_type.as_deref(), Some("text/plain"));
            assert_eq!(back.metadata, message(data).metadata);
            assert_eq!(back.reply_to.as_deref(), Some("msgplug:reply:1"));
        }
        let text = String::from_utf8(wrap(&MessageData::new(b"x".to_vec()), None)).unwrap();
        assert_eq!(text, r#"{"msgplug":1,"data":"x"}"#);
    }

    #[test]
    fn other_payloads_are_the_data() {
        for payload in [
            &b"{\"a\": 1}"[..],
            b"{\"msgplug\": 2}",
            b"plain",
            b"{broken",
            &[0xff],
        ] {
            let m = unwrap("ch".into(), payload.to_vec());
            assert_eq!(m.data, payload);
            assert_eq!(m.content_type, None);
        }
    }

    #[test]
    fn stream_fields_round_trip() {
        let fields = to_fields(&message(b"\0bin"), Some("r"));
        assert_eq!(
            fields.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["data", "content-type", "reply-to", "meta:k"]
        );
        let raw = fields
            .into_iter()
            .map(|(n, v)| (n.into_bytes(), v))
            .collect();
        let back = from_fields("s", raw);
        assert_eq!(back.topic.as_deref(), Some("s"));
        assert_eq!(back.data, b"\0bin");
        assert_eq!(back.reply_to.as_deref(), Some("r"));
        assert_eq!(back.metadata, message(b"").metadata);
        let native = from_fields("s", vec![(b"name".to_vec(), b"bob".to_vec())]);
        assert_eq!(native.data, b"");
        assert_eq!(
            native.metadata.iter().collect::<Vec<_>>(),
            [("name", "bob")]
        );
    }
}
