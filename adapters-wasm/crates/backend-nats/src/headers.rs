//! NATS message headers: how a message's content type and metadata travel.
//!
//! A header block is `NATS/1.0[ STATUS[ DESCRIPTION]]\r\n`, then `Key: Value\r\n` lines,
//! then an empty line. The content type travels as `Content-Type`; every metadata
//! pair as one header. Servers use the status for control messages (`503` no
//! responders, `404` / `408` / `409` from JetStream pulls, `100` idle heartbeat).

use common::{MessageData, Metadata};

/// The header that carries a message's content type.
const CONTENT_TYPE: &str = "Content-Type";

/// A decoded header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// The status code of a control message (`503`, `404`, ...), if any.
    pub status: Option<u16>,
    /// The text after the status code (`No Messages`), possibly empty.
    pub description: String,
    /// The `Content-Type` header, if present.
    pub content_type: Option<String>,
    /// Every other header in order; a repeated key keeps its last value.
    pub metadata: Metadata,
}

/// Encodes a message's content type and metadata as a header block, or `None` when it
/// has neither (then it travels as a plain `PUB`).
///
/// A metadata key must be printable ASCII without `:` and a value must not contain a
/// line break; a `Content-Type` metadata key is left out when the message has a
/// content type of its own.
pub fn encode(message: &MessageData) -> Result<Option<Vec<u8>>, String> {
    if message.content_type.is_none() && message.metadata.is_empty() {
        return Ok(None);
    }
    let mut block = b"NATS/1.0\r\n".to_vec();
    let mut line = |key: &str, value: &str| -> Result<(), String> {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!(
                "metadata key `{key}` cannot be a NATS header: use printable ASCII without `:`"
            ));
        }
        if value.contains(['\r', '\n']) {
            return Err(format!(
                "metadata value of `{key}` cannot be a NATS header: it contains a line break"
            ));
        }
        block.extend_from_slice(format!("{key}: {value}\r\n").as_bytes());
        Ok(())
    };
    if let Some(content_type) = &message.content_type {
        line(CONTENT_TYPE, content_type)?;
    }
    for (key, value) in message.metadata.iter() {
        if message.content_type.is_some() && key.eq_ignore_ascii_case(CONTENT_TYPE) {
            continue;
        }
        line(key, value)?;
    }
    block.extend_from_slice(b"\r\n");
    Ok(Some(block))
}

/// Decodes a header block as received in an `HMSG`.
///
/// Values lose surrounding spaces and tabs, as in every NATS client.
pub fn decode(block: &[u8]) -> Result<Headers, String> {
    let text = std::str::from_utf8(block).map_err(|_| "header block is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let Some(status_line) = first.strip_prefix("NATS/1.0") else {
        return Err(format!(
            "header block starts with `{first}`, not `NATS/1.0`"
        ));
    };
    let mut headers = Headers::default();
    let status_line = status_line.trim_matches([' ', '\t']);
    if !status_line.is_empty() {
        let (code, description) = status_line
            .split_once([' ', '\t'])
            .unwrap_or((status_line, ""));
        match code.parse::<u16>() {
            Ok(code) if code.to_string().len() == 3 => headers.status = Some(code),
            _ => return Err(format!("header block has a bad status `{status_line}`")),
        }
        headers.description = description.trim_matches([' ', '\t']).to_string();
    }
    for line in lines.take_while(|line| !line.is_empty()) {
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("header line `{line}` has no `:`"));
        };
        let key = key.trim_matches([' ', '\t']);
        if key.is_empty() {
            return Err(format!("header line `{line}` has no key"));
        }
        let value = value.trim_matches([' ', '\t']).to_string();
        if key.eq_ignore_ascii_case(CONTENT_TYPE) {
            headers.content_type = Some(value);
        } else {
            headers.metadata.insert(key.to_string(), value);
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::Rng;

    fn message(content_type: Option<&str>, pairs: &[(&str, &str)]) -> MessageData {
        MessageData {
            content_type: content_type.map(String::from),
            metadata: Metadata::from_pairs(
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            ..MessageData::default()
        }
    }

    #[test]
    fn no_headers_without_content_type_or_metadata() {
        assert_eq!(encode(&message(None, &[])), Ok(None));
    }

    #[test]
    fn encodes_content_type_first() {
        let block = encode(&message(
            Some("application/json"),
            &[("id", "7"), ("Trace-Id", "a b")],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            String::from_utf8(block).unwrap(),
            "NATS/1.0\r\nContent-Type: application/json\r\nid: 7\r\nTrace-Id: a b\r\n\r\n"
        );
    }

    #[test]
    fn rejects_what_cannot_be_a_header() {
        assert!(encode(&message(None, &[("a:b", "1")]))
            .unwrap_err()
            .contains("`a:b`"));
        assert!(encode(&message(None, &[("a b", "1")])).is_err());
        assert!(encode(&message(None, &[("", "1")])).is_err());
        assert!(encode(&message(None, &[("é", "1")])).is_err());
        assert!(encode(&message(None, &[("k", "1\r\n2")]))
            .unwrap_err()
            .contains("line break"));
        assert!(encode(&message(Some("a\nb"), &[])).is_err());
    }

    #[test]
    fn decodes_status_lines() {
        let h = decode(b"NATS/1.0 503\r\n\r\n").unwrap();
        assert_eq!((h.status, h.description.as_str()), (Some(503), ""));
        let h = decode(b"NATS/1.0 404 No Messages\r\n\r\n").unwrap();
        assert_eq!(
            (h.status, h.description.as_str()),
            (Some(404), "No Messages")
        );
        let h = decode(
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.status, Some(408));
        assert_eq!(h.metadata.iter().count(), 2);
        let h = decode(b"NATS/1.0 100 Idle Heartbeat\r\n\r\n").unwrap();
        assert_eq!(
            (h.status, h.description.as_str()),
            (Some(100), "Idle Heartbeat")
        );
        let h = decode(b"NATS/1.0\r\nk: v\r\n\r\n").unwrap();
        assert_eq!(h.status, None);
    }

    #[test]
    fn decode_trims_values_and_keeps_the_last_repeat() {
        let h = decode(b"NATS/1.0\r\ncontent-type:text/plain\r\na:  1 \r\nb: x:y\r\na: 2\r\n\r\n")
            .unwrap();
        assert_eq!(h.content_type.as_deref(), Some("text/plain"));
        let pairs: Vec<_> = h.metadata.iter().collect();
        assert_eq!(pairs, [("a", "2"), ("b", "x:y")]);
    }

    #[test]
    fn decode_rejects_malformed_blocks() {
        for block in [
            &b"HTTP/1.1\r\n\r\n"[..],
            b"NATS/1.0 5x3\r\n\r\n",
            b"NATS/1.0 5030\r\n\r\n",
            b"NATS/1.0\r\nnocolon\r\n\r\n",
            b"NATS/1.0\r\n: v\r\n\r\n",
            b"NATS/1.0\r\nk: \xff\r\n\r\n",
        ] {
            assert!(decode(block).is_err(), "{block:?}");
        }
    }

    #[test]
    fn round_trips() {
        let cases = [
            message(Some("text/plain; charset=utf-8"), &[]),
            message(None, &[("id", "7")]),
            message(
                Some("application/cloudevents+json"),
                &[
                    ("ce-id", "1"),
                    ("ce-source", "/a/b"),
                    ("x", ""),
                    ("url", "http://h:1/p?q=1"),
                ],
            ),
            message(None, &[("Content-Type", "x/y")]),
        ];
        for m in cases {
            let block = encode(&m).unwrap().unwrap();
            let h = decode(&block).unwrap();
            let expected_type = m.content_type.clone().or_else(|| {
                m.metadata
                    .iter()
                    .find(|(k, _)| *k == CONTENT_TYPE)
                    .map(|(_, v)| v.to_string())
            });
            assert_eq!(h.content_type, expected_type);
            let mut expected = m.metadata.clone();
            expected.remove(CONTENT_TYPE);
            assert_eq!(h.metadata, expected);
            assert_eq!(h.status, None);
        }
    }

    #[test]
    fn random_round_trips() {
        let mut rng = Rng::new(7);
        const KEY: &[u8] = b"abcXYZ-_09.";
        const VALUE: &[u8] = b"abc XYZ-_09.:/=;\"";
        for _ in 0..500 {
            let pairs: Vec<(String, String)> = (0..rng.below(5))
                .map(|_| {
                    let key_len = 1 + rng.below(8);
                    let value_len = rng.below(12);
                    let key = String::from_utf8(rng.bytes(key_len, KEY)).unwrap();
                    let value = String::from_utf8(rng.bytes(value_len, VALUE)).unwrap();
                    (key, value.trim().to_string())
                })
                .collect();
            let m = MessageData {
                content_type: (rng.below(2) == 0).then(|| "application/json".to_string()),
                metadata: Metadata::from_pairs(pairs),
                ..MessageData::default()
            };
            match encode(&m).unwrap() {
                None => assert!(m.content_type.is_none() && m.metadata.is_empty()),
                Some(block) => {
                    let h = decode(&block).unwrap();
                    assert_eq!(h.content_type, m.content_type);
                    assert_eq!(h.metadata, m.metadata);
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng::new(9);
        for _ in 0..2000 {
            let len = rng.below(40);
            let _ = decode(&rng.bytes(len, b"NATS/1.0 \r\n:ab\xff5"));
        }
    }
}
