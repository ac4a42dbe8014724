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

/// The prefix of a stream entry's metadata fields.
pub const META_PREFIX: &str = "meta:";

/// Wraps `message` (with `reply_to`) in the JSON envelope.
///
/// Written (and read, [`unwrap`]) by hand rather than with a serde derive: serde_json's
/// code for one more struct type made the adapter 23 KB larger, over its size budget.
pub fn wrap(message: &MessageData, reply_to: Option<&str>) -> Vec<u8> {
    let mut out = String::from("{\"msgplug\":1");
    match std::str::from_utf8(&message.data) {
        Ok(text) => quote_field(&mut out, "data", text),
        Err(_) => quote_field(&mut out, "data_base64", &STANDARD.encode(&message.data)),
    }
    if let Some(content_type) = &message.content_type {
        quote_field(&mut out, "content_type", content_type);
    }
    if !message.metadata.is_empty() {
        out.push_str(",\"metadata\":{");
        for (i, (key, value)) in message.metadata.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            quote(&mut out, key);
            out.push(':');
            quote(&mut out, value);
        }
        out.push('}');
    }
    if let Some(reply_to) = reply_to {
        quote_field(&mut out, "reply_to", reply_to);
    }
    out.push('}');
    out.into_bytes()
}

/// Appends `,"name":"value"`.
fn quote_field(out: &mut String, name: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    quote(out, value);
}

/// Appends `text` as a JSON string.
fn quote(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Reads a pub/sub payload received on `channel`: unwraps an envelope, else the
/// payload is the data.
pub fn unwrap(channel: String, payload: Vec<u8>) -> MessageData {
    let mut message = match read_envelope(&payload) {
        Some(message) => message,
        None => MessageData::new(payload),
    };
    message.topic = Some(channel);
    message
}

/// Reads the envelope `{"msgplug": 1, ...}`; `None` when `payload` is anything else.
fn read_envelope(payload: &[u8]) -> Option<MessageData> {
    let mut json = Json {
        text: std::str::from_utf8(payload).ok()?,
        at: 0,
    };
    let mut message = MessageData::default();
    let mut marked = false;
    let mut base64 = None;
    json.object(|json, key| {
        match key.as_str() {
            "msgplug" => {
                marked = json.literal("1");
                return marked;
            }
            "metadata" => {
                let mut metadata = Metadata::default();
                let ok = json.object(|json, key| match json.string() {
                    Some(value) => {
                        metadata.insert(key, value);
                        true
                    }
                    None => false,
                });
                message.metadata = metadata;
                return ok.is_some();
            }
            _ => {}
        }
        if json.literal("null") {
            return true;
        }
        let Some(value) = json.string() else {
            return false;
        };
        match key.as_str() {
            "data" => message.data = value.into_bytes(),
            "data_base64" => base64 = Some(value),
            "content_type" => message.content_type = Some(value),
            "reply_to" => message.reply_to = Some(value),
            _ => {}
        }
        true
    })?;
    json.skip_space();
    if !marked || json.at != json.text.len() {
        return None;
    }
    if let Some(encoded) = base64 {
        message.data = STANDARD.decode(encoded).ok()?;
    }
    Some(message)
}

/// Reads the four hex digits of a `\\u` escape.
fn hex4(chars: &mut std::str::CharIndices<'_>) -> Option<u32> {
    let digits: String = chars.take(4).map(|(_, c)| c).collect();
    u32::from_str_radix(&digits, 16)
        .ok()
        .filter(|_| digits.len() == 4)
}

/// A cursor over JSON text: just what the envelope needs (objects, strings, literals).
struct Json<'a> {
    /// The whole text.
    text: &'a str,
    /// The byte offset of the cursor.
    at: usize,
}

impl Json<'_> {
    /// Skips white space.
    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start_matches([' ', '\t', '\n', '\r']).len();
    }

    /// Consumes `token` (after white space) if it comes next.
    fn literal(&mut self, token: &str) -> bool {
        self.skip_space();
        let found = self.text[self.at..].starts_with(token);
        if found {
            self.at += token.len();
        }
        found
    }

    /// Reads an object, calling `member` with each key (the cursor then before its value);
    /// `None` when it is not an object or `member` returns false.
    fn object(&mut self, mut member: impl FnMut(&mut Self, String) -> bool) -> Option<()> {
        if !self.literal("{") {
            return None;
        }
        if self.literal("}") {
            return Some(());
        }
        loop {
            let key = self.string()?;
            if !self.literal(":") || !member(self, key) {
                return None;
            }
            if self.literal("}") {
                return Some(());
            }
            if !self.literal(",") {
                return None;
            }
        }
    }

    /// Reads a string.
    fn string(&mut self) -> Option<String> {
        if !self.literal("\"") {
            return None;
        }
        let mut out = String::new();
        let mut chars = self.text[self.at..].char_indices();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => {
                    self.at += i + 1;
                    return Some(out);
                }
                '\\' => {
                    let (_, escaped) = chars.next()?;
                    out.push(match escaped {
                        '"' | '\\' | '/' => escaped,
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'u' => {
                            let first = hex4(&mut chars)?;
                            let code = match first {
                                0xd800..=0xdbff => {
                                    let (_, '\\') = chars.next()? else {
                                        return None;
                                    };
                                    let (_, 'u') = chars.next()? else { return None };
                                    let low = hex4(&mut chars)
                                        .filter(|l| (0xdc00..=0xdfff).contains(l))?;
                                    0x10000 + ((first - 0xd800) << 10) + (low - 0xdc00)
                                }
                                code => code,
                            };
                            char::from_u32(code)?
                        }
                        _ => return None,
                    });
                }
                c if (c as u32) < 0x20 => return None,
                c => out.push(c),
            }
        }
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
    fn reads_envelopes_other_json_writers_make() {
        let m = unwrap(
            "c".into(),
            br#" { "reply_to": null, "metadata": {"k\u00e9": "a\"b\\c\ud83d\ude00"}, "msgplug" : 1,
                  "data_base64": "AP8=", "content_type": "x/y", "extra": "ignored" } "#
                .to_vec(),
        );
        assert_eq!(m.data, [0, 0xff]);
        assert_eq!(m.content_type.as_deref(), Some("x/y"));
        assert_eq!(m.reply_to, None);
        assert_eq!(
            m.metadata.iter().collect::<Vec<_>>(),
            [("k\u{e9}", "a\"b\\c\u{1f600}")]
        );
        let tricky = MessageData {
            data: "quote \" back \\ nl \n ctl \u{1} é 😀".as_bytes().to_vec(),
            ..message(b"")
        };
        let back = unwrap("c".into(), wrap(&tricky, None));
        assert_eq!(back.data, tricky.data);
        assert_eq!(back.metadata, tricky.metadata);
    }

    #[test]
    fn other_payloads_are_the_data() {
        for payload in [
            &b"{\"a\": 1}"[..],
            b"{\"msgplug\": 2}",
            b"{\"msgplug\": 1, \"data\": 5}",
            b"{\"msgplug\": 1} trailing",
            b"{\"msgplug\": 1, \"data\": \"\\ud800\"}",
            b"{\"msgplug\": 1, \"data_base64\": \"!!\"}",
            b"{\"msgplug\": 1, \"data\": \"x",
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
