//! Messages to and from `PUBLISH` packets: metadata as MQTT 5 user properties, the
//! content type property, request-reply's response topic and correlation data, and the
//! flags shown as metadata.

use common::{MessageData, Metadata};

use crate::protocol::Publish;

/// Metadata key: `true` on a retained message (one the broker kept for new subscribers,
/// or published with the retain flag: subscriptions keep the flag as published).
pub const RETAIN: &str = "mqtt-retain";

/// Metadata key: `true` on a redelivery (the DUP flag).
pub const DUP: &str = "mqtt-dup";

/// Metadata key: `0` on a message delivered at QoS 0 (the others came at QoS 1).
pub const QOS: &str = "mqtt-qos";

/// Separates the response topic from the correlation data in a received message's
/// reply address (a topic never contains NUL).
const REPLY_SEPARATOR: char = '\0';

/// Makes a received `PUBLISH` into a message: user properties become metadata (with
/// [`RETAIN`], [`DUP`] and [`QOS`] added when set, so a plain delivery carries exactly
/// the sender's metadata), and a response topic the reply address.
pub fn received(publish: Publish) -> MessageData {
    let mut metadata = Metadata::from_pairs(publish.user_properties);
    if publish.retain {
        metadata.insert(RETAIN.into(), "true".into());
    }
    if publish.dup {
        metadata.insert(DUP.into(), "true".into());
    }
    if publish.qos == 0 {
        metadata.insert(QOS.into(), "0".into());
    }
    let reply_to = publish.response_topic.map(|topic| {
        let correlation = publish.correlation_data.unwrap_or_default();
        format!("{topic}{REPLY_SEPARATOR}{}", hex(&correlation))
    });
    MessageData {
        topic: Some(publish.topic),
        data: publish.payload,
        content_type: publish.content_type,
        metadata,
        reply_to,
    }
}

/// Makes a message into a `PUBLISH` to `topic` (QoS and packet id are set when it is
/// sent, the retain flag never is): all metadata becomes user properties, the keys above
/// too (they are information about a received message, and a handler that copies them
/// forwards them as such); `response` is the response topic and the correlation data.
pub fn outgoing(
    topic: &str,
    message: &MessageData,
    response: Option<(String, Vec<u8>)>,
) -> Publish {
    let user_properties = message
        .metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (response_topic, correlation_data) = match response {
        Some((topic, correlation)) => (Some(topic), Some(correlation)),
        None => (None, None),
    };
    Publish {
        topic: topic.to_string(),
        payload: message.data.clone(),
        content_type: message.content_type.clone(),
        user_properties,
        response_topic,
        correlation_data,
        ..Publish::default()
    }
}

/// Splits a reply address made by [`received`] into the response topic and the
/// correlation data.
pub fn parse_reply_to(reply_to: &str) -> (&str, Vec<u8>) {
    match reply_to.split_once(REPLY_SEPARATOR) {
        Some((topic, correlation)) => (topic, unhex(correlation)),
        None => (reply_to, Vec::new()),
    }
}

/// Lower-case hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex digits made by [`hex`] (anything else is skipped).
fn unhex(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks(2)
        .filter_map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_flags() {
        let publish = Publish {
            topic: "a/b".into(),
            qos: 1,
            retain: true,
            dup: true,
            payload: b"x".to_vec(),
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Publish::default()
        };
        let m = received(publish);
        assert_eq!(m.topic.as_deref(), Some("a/b"));
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        let pairs: Vec<_> = m.metadata.iter().collect();
        assert_eq!(pairs, [("k", "v"), (RETAIN, "true"), (DUP, "true")]);
        assert_eq!(m.reply_to, None);
        let out = outgoing("c", &m, None);
        assert!(!out.retain);
        assert_eq!(out.user_properties.len(), 3);
        assert_eq!(out.content_type.as_deref(), Some("text/plain"));
        let plain = received(Publish {
            topic: "t".into(),
            ..Publish::default()
        });
        assert_eq!(plain.metadata.iter().collect::<Vec<_>>(), [(QOS, "0")]);
    }

    #[test]
    fn reply_addresses_round_trip() {
        let publish = Publish {
            topic: "req".into(),
            qos: 1,
            response_topic: Some("msgplug/reply/x/1".into()),
            correlation_data: Some(vec![0, 1, 0xfe]),
            ..Publish::default()
        };
        let m = received(publish);
        let (topic, correlation) = parse_reply_to(m.reply_to.as_deref().unwrap());
        assert_eq!(topic, "msgplug/reply/x/1");
        assert_eq!(correlation, [0, 1, 0xfe]);
        assert_eq!(parse_reply_to("plain"), ("plain", Vec::new()));
    }
}
