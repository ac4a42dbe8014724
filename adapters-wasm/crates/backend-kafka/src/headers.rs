//! Messages as Kafka records and back.
//!
//! Sending: metadata `key` becomes the record key; the content type travels as header
//! `content-type`, a reply address as `reply-to` (with `correlation-id` for a request and
//! its replies), every other metadata pair as a header
//! of the same name (the `kafka-*` pairs a received message carries are left out).
//! Receiving: the reverse, plus `kafka-partition`, `kafka-offset` and `kafka-timestamp`
//! (milliseconds since the Unix epoch) describing the record. A key or header value that
//! is not UTF-8 is read lossily (invalid bytes become U+FFFD).

use common::{MessageData, Metadata};

use crate::records::Record;

/// The metadata key whose value is the record key.
pub const KEY: &str = "key";
/// The header carrying the content type.
pub const CONTENT_TYPE: &str = "content-type";
/// The header carrying the topic replies go to.
pub const REPLY_TO: &str = "reply-to";
/// The header that ties a reply to its request (a request's replies copy it).
pub const CORRELATION_ID: &str = "correlation-id";
/// The metadata key of the partition a message was read from.
pub const PARTITION: &str = "kafka-partition";
/// The metadata key of a received record's offset.
pub const OFFSET: &str = "kafka-offset";
/// The metadata key of a received record's timestamp.
pub const TIMESTAMP: &str = "kafka-timestamp";

/// Makes the record for `message`, stamped `timestamp_ms`.
pub fn to_record(message: &MessageData, timestamp_ms: i64) -> Record {
    let mut key = None;
    let mut headers = Vec::new();
    for (name, value) in message.metadata.iter() {
        match name {
            KEY => key = Some(value.as_bytes().to_vec()),
            PARTITION | OFFSET | TIMESTAMP | CONTENT_TYPE | REPLY_TO => {}
            _ => headers.push((name.to_string(), value.as_bytes().to_vec())),
        }
    }
    if let Some(ct) = &message.content_type {
        headers.push((CONTENT_TYPE.to_string(), ct.as_bytes().to_vec()));
    }
    if let Some(reply_to) = &message.reply_to {
        headers.push((REPLY_TO.to_string(), reply_to.as_bytes().to_vec()));
    }
    Record {
        key,
        value: Some(message.data.clone()),
        headers,
        offset: 0,
        timestamp: timestamp_ms,
    }
}

/// Makes the message for a record read from `topic` / `partition`.
pub fn to_message(topic: &str, partition: i32, record: Record) -> MessageData {
    let mut metadata = Metadata::default();
    let mut content_type = None;
    let mut reply_to = None;
    if let Some(key) = &record.key {
        metadata.insert(KEY.into(), String::from_utf8_lossy(key).into_owned());
    }
    for (name, value) in record.headers {
        let value = String::from_utf8_lossy(&value).into_owned();
        match name.as_str() {
            CONTENT_TYPE => content_type = Some(value),
            REPLY_TO => reply_to = Some(value),
            _ => metadata.insert(name, value),
        }
    }
    metadata.insert(PARTITION.into(), partition.to_string());
    metadata.insert(OFFSET.into(), record.offset.to_string());
    metadata.insert(TIMESTAMP.into(), record.timestamp.to_string());
    MessageData {
        topic: Some(topic.to_string()),
        data: record.value.unwrap_or_default(),
        content_type,
        metadata,
        reply_to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_key_headers_and_content_type() {
        let mut message = MessageData::new(b"payload".to_vec());
        message.content_type = Some("application/json".into());
        message.reply_to = Some("replies".into());
        message.metadata = Metadata::from_pairs([
            ("key".to_string(), "customer-7".to_string()),
            ("trace".to_string(), "abc".to_string()),
            ("kafka-offset".to_string(), "3".to_string()),
        ]);
        let record = to_record(&message, 1_000);
        assert_eq!(record.key.as_deref(), Some(&b"customer-7"[..]));
        assert_eq!(record.headers.len(), 3);
        let back = to_message(
            "orders",
            2,
            Record {
                offset: 41,
                ..record
            },
        );
        assert_eq!(back.topic.as_deref(), Some("orders"));
        assert_eq!(back.data, b"payload");
        assert_eq!(back.content_type.as_deref(), Some("application/json"));
        assert_eq!(back.reply_to.as_deref(), Some("replies"));
        let pairs: Vec<_> = back.metadata.iter().collect();
        assert_eq!(
            pairs,
            [
                ("key", "customer-7"),
                ("trace", "abc"),
                ("kafka-partition", "2"),
                ("kafka-offset", "41"),
                ("kafka-timestamp", "1000")
            ]
        );
    }

    #[test]
    fn the_correlation_id_travels_as_a_header() {
        let mut message = MessageData::new(Vec::new());
        message.metadata.insert(CORRELATION_ID.into(), "c-1".into());
        let record = to_record(&message, 0);
        assert_eq!(
            record.headers,
            [(CORRELATION_ID.to_string(), b"c-1".to_vec())]
        );
        let back = to_message("replies", 0, record);
        assert_eq!(back.metadata.iter().next(), Some((CORRELATION_ID, "c-1")));
    }
}
