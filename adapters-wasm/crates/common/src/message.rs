//! The state behind a `wasi:messaging/types.message`.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Message metadata (headers, attributes): key/value pairs in insertion order,
/// each key at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Vec<(String, String)>);

impl Metadata {
    /// Makes metadata from pairs; a repeated key overwrites the earlier value in place.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut metadata = Self::default();
        for (key, value) in pairs {
            metadata.insert(key, value);
        }
        metadata
    }

    /// Sets `key` to `value`, in place if the key exists, else at the end.
    pub fn insert(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Removes `key` if present.
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// Returns true when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Returns the pairs in insertion order.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
    }
}

impl Serialize for Metadata {
    /// Writes the pairs as a map (a JSON object), in insertion order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    /// Reads a map of strings to strings (a JSON object), keeping its order; a
    /// repeated key overwrites the earlier value in place.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;

        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = Metadata;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut metadata = Metadata::default();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    metadata.insert(key, value);
                }
                Ok(metadata)
            }
        }

        deserializer.deserialize_map(MetadataVisitor)
    }
}

/// Everything a message carries.
///
/// Only a backend sets `topic` and `reply_to`: the WIT constructor takes data alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageData {
    /// The topic the message was received on, if it was received.
    pub topic: Option<String>,
    /// The payload.
    pub data: Vec<u8>,
    /// The payload's media type, if known.
    pub content_type: Option<String>,
    /// Headers or attributes, in insertion order.
    pub metadata: Metadata,
    /// Where `reply` sends replies to this message, if anywhere.
    pub reply_to: Option<String>,
}

impl MessageData {
    /// Makes a message with a payload and nothing else, as the WIT constructor does.
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(m: &Metadata) -> Vec<(&str, &str)> {
        m.iter().collect()
    }

    #[test]
    fn insert_overwrites_in_place() {
        let mut m = Metadata::default();
        m.insert("a".into(), "1".into());
        m.insert("b".into(), "2".into());
        m.insert("a".into(), "3".into());
        assert_eq!(pairs(&m), [("a", "3"), ("b", "2")]);
        m.remove("a");
        assert_eq!(pairs(&m), [("b", "2")]);
        m.remove("missing");
        assert!(!m.is_empty());
    }

    #[test]
    fn from_pairs_dedups() {
        let m = Metadata::from_pairs([
            ("x".to_string(), "1".to_string()),
            ("y".to_string(), "2".to_string()),
            ("x".to_string(), "9".to_string()),
        ]);
        assert_eq!(
            m.into_pairs(),
            [
                ("x".to_string(), "9".to_string()),
                ("y".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn json_keeps_order() {
        let m: Metadata = serde_json::from_str(r#"{"z": "1", "a": "2", "z": "3"}"#).unwrap();
        assert_eq!(pairs(&m), [("z", "3"), ("a", "2")]);
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"z":"3","a":"2"}"#);
        assert!(serde_json::from_str::<Metadata>(r#"{"a": 1}"#).is_err());
    }

    #[test]
    fn new_has_no_topic() {
        let m = MessageData::new(b"hi".to_vec());
        assert_eq!(m.topic, None);
        assert_eq!(m.data, b"hi");
        assert!(m.metadata.is_empty());
    }
}
