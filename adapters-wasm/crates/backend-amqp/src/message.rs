//! A message's content type and metadata as AMQP properties, both ways.
//!
//! Sending: the content type is the `content-type` property; each metadata pair is a
//! string in the `headers` table, except the keys below, which set their property
//! instead; messages are persistent (delivery mode 2).
//!
//! Receiving: every `headers` entry becomes a metadata pair, its value turned into text
//! ([`FieldValue::to_text`]); the properties below, when set, become these keys:
//!
//! | key | property |
//! | --- | --- |
//! | `amqp-message-id` | `message-id` |
//! | `amqp-correlation-id` | `correlation-id` |
//! | `amqp-timestamp` | `timestamp` (seconds since the Unix epoch) |
//! | `amqp-app-id` | `app-id` |
//! | `amqp-redelivered` | `true` when the broker delivers the message again (received only) |

use common::{MessageData, Metadata};

use crate::protocol::{FieldValue, Properties};

/// The metadata key of the `message-id` property.
pub const MESSAGE_ID: &str = "amqp-message-id";
/// The metadata key of the `correlation-id` property.
pub const CORRELATION_ID: &str = "amqp-correlation-id";
/// The metadata key of the `timestamp` property.
pub const TIMESTAMP: &str = "amqp-timestamp";
/// The metadata key of the `app-id` property.
pub const APP_ID: &str = "amqp-app-id";
/// The metadata key that says a delivery is a redelivery.
pub const REDELIVERED: &str = "amqp-redelivered";

/// The properties of a message to publish; `correlation_id` and `reply_to` (request-reply)
/// win over the metadata.
pub fn properties(
    message: &MessageData,
    correlation_id: Option<&str>,
    reply_to: Option<&str>,
) -> Result<Properties, String> {
    let mut p = Properties {
        content_type: message.content_type.clone(),
        delivery_mode: Some(2),
        ..Properties::default()
    };
    let mut headers = Vec::new();
    for (key, value) in message.metadata.iter() {
        match key {
            MESSAGE_ID => p.message_id = Some(value.to_string()),
            CORRELATION_ID => p.correlation_id = Some(value.to_string()),
            APP_ID => p.app_id = Some(value.to_string()),
            TIMESTAMP => {
                p.timestamp = Some(value.parse().map_err(|_| {
                    format!(
                    "metadata `{TIMESTAMP}` must be seconds since the Unix epoch, not `{value}`"
                )
                })?)
            }
            REDELIVERED => {}
            _ => headers.push((key.to_string(), FieldValue::text(value))),
        }
    }
    if !headers.is_empty() {
        p.headers = Some(headers);
    }
    if let Some(id) = correlation_id {
        p.correlation_id = Some(id.to_string());
    }
    if let Some(address) = reply_to {
        p.reply_to = Some(address.to_string());
    }
    Ok(p)
}

/// A received message: its routing key is the topic; the reply address keeps the
/// correlation id (see [`reply_address`]).
pub fn received(
    routing_key: String,
    properties: Properties,
    body: Vec<u8>,
    redelivered: bool,
) -> MessageData {
    let mut metadata = Metadata::default();
    for (key, value) in properties.headers.unwrap_or_default() {
        metadata.insert(key, value.to_text());
    }
    let mut set = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            metadata.insert(key.to_string(), value);
        }
    };
    set(MESSAGE_ID, properties.message_id);
    set(CORRELATION_ID, properties.correlation_id.clone());
    set(TIMESTAMP, properties.timestamp.map(|t| t.to_string()));
    set(APP_ID, properties.app_id);
    set(REDELIVERED, redelivered.then(|| "true".to_string()));
    MessageData {
        topic: Some(routing_key),
        data: body,
        content_type: properties.content_type,
        metadata,
        reply_to: properties
            .reply_to
            .map(|queue| reply_address(&queue, properties.correlation_id.as_deref())),
    }
}

/// The reply address the app's `reply` gets back: the `reply-to` queue and the
/// correlation id, as `<length of queue>:<queue><correlation id>`.
pub fn reply_address(queue: &str, correlation_id: Option<&str>) -> String {
    format!(
        "{}:{queue}{}",
        queue.len(),
        correlation_id.unwrap_or_default()
    )
}

/// Splits a [`reply_address`] into the queue and the correlation id (`None` if empty);
/// an address in another form is a queue name.
pub fn parse_reply_address(address: &str) -> (&str, Option<&str>) {
    let split = address.split_once(':').and_then(|(len, rest)| {
        let len: usize = len.parse().ok()?;
        (rest.is_char_boundary(len) && len <= rest.len()).then(|| rest.split_at(len))
    });
    match split {
        Some((queue, correlation)) => (queue, (!correlation.is_empty()).then_some(correlation)),
        None => (address, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(pairs: &[(&str, &str)]) -> MessageData {
        MessageData {
            content_type: Some("application/json".into()),
            metadata: Metadata::from_pairs(
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            ..MessageData::new(b"{}".to_vec())
        }
    }

    #[test]
    fn metadata_round_trips_through_headers_and_properties() {
        let sent = message(&[
            ("tenant", "acme"),
            (MESSAGE_ID, "m-1"),
            (TIMESTAMP, "1700000000"),
            (APP_ID, "billing"),
            (REDELIVERED, "true"),
        ]);
        let p = properties(&sent, None, None).unwrap();
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            p.headers,
            Some(vec![("tenant".into(), FieldValue::text("acme"))])
        );
        assert_eq!(p.message_id.as_deref(), Some("m-1"));
        assert_eq!(p.timestamp, Some(1_700_000_000));
        let got = received("orders.new".into(), p, b"{}".to_vec(), false);
        assert_eq!(got.topic.as_deref(), Some("orders.new"));
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        let pairs: Vec<_> = got.metadata.iter().collect();
        assert_eq!(
            pairs,
            [
                ("tenant", "acme"),
                (MESSAGE_ID, "m-1"),
                (TIMESTAMP, "1700000000"),
                (APP_ID, "billing")
            ]
        );
        assert_eq!(got.reply_to, None);
    }

    #[test]
    fn plain_messages_get_no_extra_metadata() {
        let p = properties(&MessageData::new(b"x".to_vec()), None, None).unwrap();
        assert_eq!(p.headers, None);
        let got = received("t".into(), p, b"x".to_vec(), false);
        assert!(got.metadata.is_empty());
        assert_eq!(got.content_type, None);
    }

    #[test]
    fn redeliveries_and_other_header_types_are_text() {
        let p = Properties {
            headers: Some(vec![
                ("n".into(), FieldValue::I64(-3)),
                ("ok".into(), FieldValue::Bool(true)),
            ]),
            ..Properties::default()
        };
        let got = received("t".into(), p, Vec::new(), true);
        let pairs: Vec<_> = got.metadata.iter().collect();
        assert_eq!(pairs, [("n", "-3"), ("ok", "true"), (REDELIVERED, "true")]);
    }

    #[test]
    fn bad_timestamps_are_refused() {
        let e = properties(&message(&[(TIMESTAMP, "yesterday")]), None, None).unwrap_err();
        assert!(e.contains("seconds since the Unix epoch"), "{e}");
    }

    #[test]
    fn reply_addresses_keep_the_correlation_id() {
        let p = properties(
            &MessageData::new(Vec::new()),
            Some("c:1"),
            Some("amq.rabbitmq.reply-to.g1h2"),
        )
        .unwrap();
        let got = received("svc".into(), p, Vec::new(), false);
        let address = got.reply_to.unwrap();
        assert_eq!(
            parse_reply_address(&address),
            ("amq.rabbitmq.reply-to.g1h2", Some("c:1"))
        );
        assert_eq!(parse_reply_address("3:abc"), ("abc", None));
        assert_eq!(parse_reply_address("plain"), ("plain", None));
        assert_eq!(parse_reply_address("9:short"), ("9:short", None));
        assert_eq!(parse_reply_address("1:éx"), ("1:éx", None));
    }
}
