//! The SQS JSON protocol (`X-Amz-Target: AmazonSQS.<Action>`, `Content-Type:
//! application/x-amz-json-1.0`), sans I/O: request bodies, response parsers, the
//! mapping between messages and SQS messages, and errors.
//!
//! A message travels as an SQS message like this:
//!
//! * data: the `MessageBody` when it is text SQS accepts (UTF-8 without control
//!   characters other than tab, line feed and carriage return); anything else is
//!   sent base64-encoded with the attribute `content-transfer-encoding: base64`, and
//!   decoded again on receipt;
//! * content-type: the attribute `content-type`;
//! * metadata: one `String` message attribute per pair (SQS allows 10 attributes per
//!   message, the ones above included); on receipt every attribute but those three
//!   becomes metadata, `Number` values as their text and `Binary` ones in base64;
//! * the reply address of a request: the attribute `reply-to` (a queue URL).
//!
//! Metadata keys `content-transfer-encoding` and `reply-to` are reserved: they are
//! not sent as attributes.
//!
//! For a FIFO queue (name ending in `.fifo`) the `MessageGroupId` is the metadata
//! `group-id` (default `default`) and the `MessageDeduplicationId` the metadata
//! `dedup-id`, else the SHA-256 of the body and attributes, so a message resent
//! within SQS's five-minute deduplication window is dropped, as with the queue
//! setting `ContentBasedDeduplication`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{Error, MessageData, Metadata};
use http_client::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::sigv4::hex;

/// The `Content-Type` of every request.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// The attribute holding the message's content-type.
const CONTENT_TYPE_ATTRIBUTE: &str = "content-type";
/// The attribute saying the body is base64 (`base64`).
const ENCODING_ATTRIBUTE: &str = "content-transfer-encoding";
/// The attribute holding a request's reply queue URL.
const REPLY_TO_ATTRIBUTE: &str = "reply-to";
/// The metadata key that sets a FIFO message's group.
const GROUP_ID_KEY: &str = "group-id";
/// The group of FIFO messages without [`GROUP_ID_KEY`].
const DEFAULT_GROUP_ID: &str = "default";
/// The metadata key that sets a FIFO message's deduplication id.
const DEDUP_ID_KEY: &str = "dedup-id";

/// The most messages one `ReceiveMessage` returns.
pub const MAX_MESSAGES: u32 = 10;
/// The longest `WaitTimeSeconds` SQS allows.
pub const MAX_WAIT_SECONDS: u32 = 20;

/// The queue a topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queue {
    /// A queue name, to look up with `GetQueueUrl`.
    Name(String),
    /// A queue URL given as is (reply addresses are URLs).
    Url(String),
}

/// Returns the queue `topic` names: an `http(s)://` topic is a queue URL; any other is
/// a queue name in which each character SQS does not allow (anything but ASCII
/// letters, digits, `-` and `_`) becomes `-`, keeping a `.fifo` suffix — so the topic
/// `orders.upper` is the queue `orders-upper`.
pub fn queue_for_topic(topic: &str) -> Result<Queue, Error> {
    if topic.starts_with("https://") || topic.starts_with("http://") {
        return Ok(Queue::Url(topic.to_string()));
    }
    let (stem, suffix) = match topic.strip_suffix(".fifo") {
        Some(stem) => (stem, ".fifo"),
        None => (topic, ""),
    };
    if stem.is_empty() {
        return Err(Error::other(format!(
            "topic `{topic}` names no SQS queue: give the queue's name"
        )));
    }
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Ok(Queue::Name(name + suffix))
}

/// Returns the queue name at the end of a queue URL.
pub fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// The body of `GetQueueUrl`.
pub fn get_queue_url(name: &str) -> Vec<u8> {
    to_bytes(json!({ "QueueName": name }))
}

/// The body of `CreateQueue` (a standard queue with default attributes).
pub fn create_queue(name: &str) -> Vec<u8> {
    to_bytes(json!({ "QueueName": name }))
}

/// The body of `DeleteQueue`.
pub fn delete_queue(url: &str) -> Vec<u8> {
    to_bytes(json!({ "QueueUrl": url }))
}

/// The body of `SendMessage` of `message` to the queue at `url` (see the module doc
/// for the mapping).
pub fn send_message(url: &str, message: &MessageData) -> Vec<u8> {
    let mut request = message_fields(url, message);
    request.insert("QueueUrl".into(), url.into());
    to_bytes(request.into())
}

/// The most entries one `SendMessageBatch` takes.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// The most bytes (bodies and attributes) of all the entries of one `SendMessageBatch`:
/// 256 KiB, what SQS (and moto) take in one batch.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One message ready for `SendMessageBatch`: its fields and its size as SQS counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEntry {
    /// The fields of a `SendMessage` of it, without `QueueUrl`.
    fields: Map<String, Value>,
    /// The bytes of its body and attributes (names, types and values).
    pub size: usize,
}

impl BatchEntry {
    /// The entry of `message` for the queue at `url` (the same mapping as
    /// [`send_message`]).
    pub fn new(url: &str, message: &MessageData) -> BatchEntry {
        let fields = message_fields(url, message);
        let text = |key: &str| fields.get(key).and_then(Value::as_str).map_or(0, str::len);
        let attributes: usize = fields
            .get("MessageAttributes")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, value)| {
                name.len() + "String".len() + value["StringValue"].as_str().map_or(0, str::len)
            })
            .sum();
        BatchEntry {
            size: text("MessageBody") + attributes,
            fields,
        }
    }

    /// The body of a `SendMessage` of this entry alone, to the queue at `url` (for an
    /// entry larger than a batch may be).
    pub fn send_message(&self, url: &str) -> Vec<u8> {
        let mut request = self.fields.clone();
        request.insert("QueueUrl".into(), url.into());
        to_bytes(request.into())
    }
}

/// The body of `SendMessageBatch` of `entries` (at most [`MAX_BATCH_ENTRIES`]) to the
/// queue at `url`; each entry's `Id` is its index.
pub fn send_message_batch<'a>(url: &str, entries: impl Iterator<Item = &'a BatchEntry>) -> Vec<u8> {
    let entries: Vec<Value> = entries
        .enumerate()
        .map(|(index, entry)| {
            let mut fields = entry.fields.clone();
            fields.insert("Id".into(), index.to_string().into());
            fields.into()
        })
        .collect();
    to_bytes(json!({ "QueueUrl": url, "Entries": entries }))
}

/// An entry of a `SendMessageBatch` that SQS did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// Its index in the request.
    pub index: usize,
    /// True when the entry itself was at fault (trying again will not help); false for
    /// a fault on SQS's side.
    pub sender_fault: bool,
    /// Why, as `CODE: message`.
    pub reason: String,
}

/// Reads the `Failed` entries of a `SendMessageBatch` response (a 2xx response can
/// carry some: a batch may partly fail).
pub fn batch_failures(body: &[u8]) -> Result<Vec<BatchFailure>, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Output {
        #[serde(default)]
        failed: Vec<Failed>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Failed {
        id: String,
        #[serde(default)]
        sender_fault: Value,
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let output: Output =
        serde_json::from_slice(body).map_err(|e| malformed("SendMessageBatch", e))?;
    output
        .failed
        .into_iter()
        .map(|f| {
            let index = f.id.parse().map_err(|_| {
                Error::other(format!(
                    "SQS SendMessageBatch returned a failure for entry `{}`, which it was not sent",
                    f.id
                ))
            })?;
            // AWS sends a boolean, moto the text `true`.
            let sender_fault = f.sender_fault == Value::Bool(true) || f.sender_fault == "true";
            let reason = match f.message.is_empty() {
                true => f.code,
                false => format!("{}: {}", f.code, f.message),
            };
            Ok(BatchFailure {
                index,
                sender_fault,
                reason,
            })
        })
        .collect()
}

/// The fields of a `SendMessage` of `message` to the queue at `url`, without `QueueUrl`.
fn message_fields(url: &str, message: &MessageData) -> Map<String, Value> {
    let (body, base64) = match std::str::from_utf8(&message.data) {
        Ok(text) if text.chars().all(allowed_in_body) => (text.to_string(), false),
        _ => (STANDARD.encode(&message.data), true),
    };
    let mut attributes: BTreeMap<&str, &str> = message
        .metadata
        .iter()
        .filter(|(name, _)| ![ENCODING_ATTRIBUTE, REPLY_TO_ATTRIBUTE].contains(name))
        .collect();
    if let Some(content_type) = &message.content_type {
        attributes.insert(CONTENT_TYPE_ATTRIBUTE, content_type);
    }
    if base64 {
        attributes.insert(ENCODING_ATTRIBUTE, "base64");
    }
    if let Some(reply_to) = &message.reply_to {
        attributes.insert(REPLY_TO_ATTRIBUTE, reply_to);
    }
    let mut request = Map::new();
    request.insert("MessageBody".into(), body.as_str().into());
    if !attributes.is_empty() {
        let attributes: Map<String, Value> = attributes
            .iter()
            .map(|(name, value)| {
                let value = json!({ "DataType": "String", "StringValue": value });
                (name.to_string(), value)
            })
            .collect();
        request.insert("MessageAttributes".into(), attributes.into());
    }
    if queue_name(url).ends_with(".fifo") {
        let group = attributes.get(GROUP_ID_KEY).copied();
        request.insert(
            "MessageGroupId".into(),
            group.unwrap_or(DEFAULT_GROUP_ID).into(),
        );
        let dedup = match attributes.get(DEDUP_ID_KEY) {
            Some(id) => id.to_string(),
            None => {
                let mut hash = Sha256::new();
                hash.update(body.as_bytes());
                for (name, value) in &attributes {
                    hash.update([0]);
                    hash.update(name.as_bytes());
                    hash.update([0]);
                    hash.update(value.as_bytes());
                }
                hex(&hash.finalize())
            }
        };
        request.insert("MessageDeduplicationId".into(), dedup.into());
    }
    request
}

/// Whether SQS accepts `c` in a message body: `#x9 | #xA | #xD | #x20-#xD7FF |
/// #xE000-#xFFFD | #x10000-#x10FFFF` (a Rust `char` is never a surrogate).
fn allowed_in_body(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{FFFD}' | '\u{10000}'..)
}

/// The body of a long-polling `ReceiveMessage` of at most `max` messages (1 to
/// [`MAX_MESSAGES`]) that waits up to `wait_seconds` (0 to [`MAX_WAIT_SECONDS`]),
/// with every message attribute; `visibility` (whole seconds) replaces the queue's
/// visibility timeout for the messages received.
pub fn receive_message(url: &str, max: u32, wait_seconds: u32, visibility: Option<u32>) -> Vec<u8> {
    let mut body = json!({
        "QueueUrl": url,
        "MaxNumberOfMessages": max.clamp(1, MAX_MESSAGES),
        "WaitTimeSeconds": wait_seconds.min(MAX_WAIT_SECONDS),
        "MessageAttributeNames": ["All"],
    });
    if let Some(seconds) = visibility {
        body["VisibilityTimeout"] = json!(seconds);
    }
    to_bytes(body)
}

/// A visibility timeout of `lease` in the whole seconds SQS takes, rounded up (a lease
/// is never shortened).
pub fn visibility_seconds(lease: Duration) -> u32 {
    let seconds = lease.as_secs() + u64::from(lease.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// The body of `GetQueueAttributes` asking for the queue's `VisibilityTimeout`.
pub fn get_visibility_timeout(url: &str) -> Vec<u8> {
    to_bytes(json!({ "QueueUrl": url, "AttributeNames": ["VisibilityTimeout"] }))
}

/// Reads the `VisibilityTimeout` (seconds) of a `GetQueueAttributes` response.
pub fn visibility_timeout(body: &[u8]) -> Result<Duration, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Output {
        attributes: BTreeMap<String, String>,
    }
    let output: Output =
        serde_json::from_slice(body).map_err(|e| malformed("GetQueueAttributes", e))?;
    output
        .attributes
        .get("VisibilityTimeout")
        .and_then(|seconds| seconds.parse().ok())
        .map(Duration::from_secs)
        .ok_or_else(|| Error::other("SQS answered GetQueueAttributes without a VisibilityTimeout"))
}

/// The body of `DeleteMessage`.
pub fn delete_message(url: &str, receipt_handle: &str) -> Vec<u8> {
    to_bytes(json!({ "QueueUrl": url, "ReceiptHandle": receipt_handle }))
}

/// The body of `ChangeMessageVisibility` to 0 seconds: the message may be received
/// again right away.
pub fn release_message(url: &str, receipt_handle: &str) -> Vec<u8> {
    change_visibility(url, receipt_handle, 0)
}

/// The body of `ChangeMessageVisibility` to `seconds` from now: renews a lease.
pub fn change_visibility(url: &str, receipt_handle: &str, seconds: u32) -> Vec<u8> {
    to_bytes(json!({
        "QueueUrl": url,
        "ReceiptHandle": receipt_handle,
        "VisibilityTimeout": seconds,
    }))
}

/// Serializes a request body.
fn to_bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("JSON values always serialize")
}

/// Reads the `QueueUrl` of a `GetQueueUrl` or `CreateQueue` response.
pub fn queue_url(body: &[u8]) -> Result<String, Error> {
    #[derive(Deserialize)]
    struct Output {
        #[serde(rename = "QueueUrl")]
        queue_url: String,
    }
    serde_json::from_slice::<Output>(body)
        .map(|o| o.queue_url)
        .map_err(|e| malformed("GetQueueUrl", e))
}

/// One message of a `ReceiveMessage` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// What `DeleteMessage` and `ChangeMessageVisibility` take.
    pub receipt_handle: String,
    /// The message, or why it could not be made into one.
    pub message: Result<MessageData, String>,
}

/// Reads a `ReceiveMessage` response from the queue named `queue` (the topic of the
/// messages).
pub fn received(body: &[u8], queue: &str) -> Result<Vec<Received>, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Output {
        #[serde(default)]
        messages: Vec<SqsMessage>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct SqsMessage {
        message_id: String,
        receipt_handle: String,
        #[serde(default)]
        body: String,
        #[serde(default)]
        message_attributes: BTreeMap<String, Attribute>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Attribute {
        string_value: Option<String>,
        binary_value: Option<String>,
    }
    let output: Output =
        serde_json::from_slice(body).map_err(|e| malformed("ReceiveMessage", e))?;
    Ok(output
        .messages
        .into_iter()
        .map(|m| {
            let mut attributes: BTreeMap<String, String> = m
                .message_attributes
                .into_iter()
                .map(|(name, a)| (name, a.string_value.or(a.binary_value).unwrap_or_default()))
                .collect();
            let content_type = attributes.remove(CONTENT_TYPE_ATTRIBUTE);
            let reply_to = attributes.remove(REPLY_TO_ATTRIBUTE);
            let data = match attributes.remove(ENCODING_ATTRIBUTE) {
                Some(encoding) if encoding.eq_ignore_ascii_case("base64") => {
                    STANDARD.decode(m.body.trim()).map_err(|e| {
                        format!(
                            "message {} in queue `{queue}`: its body is marked `{ENCODING_ATTRIBUTE}: base64` but is not base64 ({e}); it is left in the queue",
                            m.message_id
                        )
                    })
                }
                Some(other) => Err(format!(
                    "message {} in queue `{queue}` has `{ENCODING_ATTRIBUTE}: {other}`, which msgplug cannot decode (only `base64`); it is left in the queue",
                    m.message_id
                )),
                None => Ok(m.body.into_bytes()),
            };
            Received {
                receipt_handle: m.receipt_handle,
                message: data.map(|data| MessageData {
                    topic: Some(queue.to_string()),
                    data,
                    content_type,
                    metadata: Metadata::from_pairs(attributes),
                    reply_to,
                }),
            }
        })
        .collect())
}

/// The error for a 2xx response whose body is not what `action` returns.
fn malformed(action: &str, e: serde_json::Error) -> Error {
    Error::other(format!("SQS {action} returned an unexpected response: {e}"))
}

/// Error codes that mean the credentials or their permissions are wrong.
const PERMISSION_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "ExpiredToken",
    "InvalidSecurity",
    "KmsAccessDenied",
];

/// Error codes worth retrying: throttling and faults on the service's side.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "KmsThrottled",
];

/// Error codes that say the queue does not exist (JSON and query protocol names).
const NO_QUEUE_CODES: &[&str] = &[
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
];

/// Maps a non-2xx response to `action` on queue `queue` onto the WIT error variant:
/// a missing queue is [`Error::Other`] naming the queue; access and signature errors
/// [`Error::PermissionDenied`]; throttling and server faults [`Error::Connection`]
/// (transient: the consumer retries them); anything else [`Error::Other`].
pub fn response_error(action: &str, queue: &str, response: &Response) -> Error {
    // Moto sends both `message` and `Message`; AWS one of them.
    let body: Option<(String, String)> = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|body| {
            let kind = body.get("__type")?.as_str()?.to_string();
            let message = ["message", "Message"]
                .iter()
                .find_map(|key| body.get(key)?.as_str())
                .unwrap_or_default();
            Some((kind, message.to_string()))
        });
    let Some((kind, message)) = body else {
        return http_client::status_error(&format!("SQS {action} on `{queue}`"), response);
    };
    // `__type` may carry a namespace (`com.amazonaws.sqs#QueueDoesNotExist`) and a
    // suffix after `:`; the code is what is between.
    let code = kind.split(':').next().unwrap_or_default();
    let code = code.rsplit('#').next().unwrap_or_default();
    let mut text = format!("SQS {action} on `{queue}` failed: {code}");
    if !message.is_empty() {
        text = format!("{text}: {message}");
    }
    if NO_QUEUE_CODES.contains(&code) {
        Error::Other(format!(
            "SQS queue `{queue}` does not exist (in the region and account of the credentials); create it first, msgplug does not create queues"
        ))
    } else if PERMISSION_CODES.contains(&code) {
        Error::PermissionDenied(format!(
            "{text} (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and the queue's permissions)"
        ))
    } else if TRANSIENT_CODES.contains(&code) || response.status >= 500 {
        Error::Connection(text)
    } else {
        Error::Other(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn message(data: &[u8]) -> MessageData {
        MessageData::new(data.to_vec())
    }

    const URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/orders";
    const FIFO_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo";

    #[test]
    fn topics_name_queues() {
        let name = |t: &str| queue_for_topic(t).unwrap();
        assert_eq!(name("orders"), Queue::Name("orders".into()));
        assert_eq!(name("orders.upper"), Queue::Name("orders-upper".into()));
        assert_eq!(name("a.b.fifo"), Queue::Name("a-b.fifo".into()));
        assert_eq!(name("x_y-Z9.>/*"), Queue::Name("x_y-Z9----".into()));
        assert_eq!(name("ünï"), Queue::Name("-n-".into()));
        assert_eq!(name(URL), Queue::Url(URL.into()));
        assert_eq!(
            name("http://127.0.0.1:1/0/r"),
            Queue::Url("http://127.0.0.1:1/0/r".into())
        );
        for empty in ["", ".fifo"] {
            let e = queue_for_topic(empty).unwrap_err().to_string();
            assert!(e.contains("names no SQS queue"), "{e}");
        }
        assert_eq!(queue_name(URL), "orders");
        assert_eq!(queue_name("http://h/1/q/"), "q");
    }

    #[test]
    fn batches_carry_each_message_as_send_message_would_with_its_index_as_id() {
        let mut tagged = message(b"two");
        tagged.metadata.insert("group-id".into(), "g".into());
        let entries = [
            BatchEntry::new(FIFO_URL, &message(b"one")),
            BatchEntry::new(FIFO_URL, &tagged),
        ];
        let body = json(&send_message_batch(FIFO_URL, entries.iter()));
        assert_eq!(body["QueueUrl"], FIFO_URL);
        let sent = body["Entries"].as_array().unwrap();
        assert_eq!(sent.len(), 2);
        for (index, (entry, m)) in sent.iter().zip([message(b"one"), tagged]).enumerate() {
            let mut alone = json(&send_message(FIFO_URL, &m));
            alone.as_object_mut().unwrap().remove("QueueUrl");
            alone["Id"] = index.to_string().into();
            assert_eq!(entry, &alone);
        }
        assert_eq!(sent[1]["MessageGroupId"], "g");
        // Body and attributes count: `two` + `group-id` `String` `g`.
        assert_eq!(entries[0].size, 3);
        assert_eq!(entries[1].size, 3 + 8 + 6 + 1);
        let mut alone = json(&send_message(FIFO_URL, &message(b"one")));
        alone["QueueUrl"] = URL.into();
        assert_eq!(
            json(&entries[0].send_message(URL)),
            alone,
            "sent alone, an entry keeps its fields (FIFO ids too) with the URL given"
        );
    }

    #[test]
    fn failed_batch_entries_are_read_with_their_fault_and_reason() {
        assert_eq!(
            batch_failures(br#"{"Successful": [{"Id": "0"}]}"#),
            Ok(vec![])
        );
        let body = br#"{"Successful": [], "Failed": [
            {"Id": "1", "SenderFault": true, "Code": "InvalidParameterValue", "Message": "too long"},
            {"Id": "3", "SenderFault": "true", "Code": "X"},
            {"Id": "4", "SenderFault": false, "Code": "InternalError", "Message": "try again"}
        ]}"#;
        assert_eq!(
            batch_failures(body),
            Ok(vec![
                BatchFailure {
                    index: 1,
                    sender_fault: true,
                    reason: "InvalidParameterValue: too long".into()
                },
                BatchFailure {
                    index: 3,
                    sender_fault: true,
                    reason: "X".into()
                },
                BatchFailure {
                    index: 4,
                    sender_fault: false,
                    reason: "InternalError: try again".into()
                },
            ])
        );
        let stranger = batch_failures(br#"{"Failed": [{"Id": "x", "SenderFault": true}]}"#);
        assert!(
            stranger.unwrap_err().to_string().contains("entry `x`"),
            "an id it was not sent is an error"
        );
    }

    #[test]
    fn simple_bodies() {
        assert_eq!(json(&get_queue_url("q")), json!({"QueueName": "q"}));
        assert_eq!(json(&create_queue("q")), json!({"QueueName": "q"}));
        assert_eq!(json(&delete_queue(URL)), json!({"QueueUrl": URL}));
        assert_eq!(
            json(&delete_message(URL, "rh")),
            json!({"QueueUrl": URL, "ReceiptHandle": "rh"})
        );
        assert_eq!(
            json(&release_message(URL, "rh")),
            json!({"QueueUrl": URL, "ReceiptHandle": "rh", "VisibilityTimeout": 0})
        );
        assert_eq!(
            json(&receive_message(URL, 10, 20, None)),
            json!({"QueueUrl": URL, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 20, "MessageAttributeNames": ["All"]})
        );
        let clamped = json(&receive_message(URL, 50, 99, None));
        assert_eq!(clamped["MaxNumberOfMessages"], 10);
        assert_eq!(clamped["WaitTimeSeconds"], 20);
        assert_eq!(
            json(&receive_message(URL, 0, 0, None))["MaxNumberOfMessages"],
            1
        );
        assert_eq!(
            json(&receive_message(URL, 1, 0, Some(7)))["VisibilityTimeout"],
            7
        );
        assert_eq!(
            json(&change_visibility(URL, "rh", 30)),
            json!({"QueueUrl": URL, "ReceiptHandle": "rh", "VisibilityTimeout": 30})
        );
        assert_eq!(
            json(&get_visibility_timeout(URL)),
            json!({"QueueUrl": URL, "AttributeNames": ["VisibilityTimeout"]})
        );
    }

    #[test]
    fn leases_in_whole_seconds() {
        assert_eq!(visibility_seconds(Duration::from_millis(1)), 1);
        assert_eq!(visibility_seconds(Duration::from_millis(2000)), 2);
        assert_eq!(visibility_seconds(Duration::from_millis(2001)), 3);
        let answer = br#"{"Attributes": {"VisibilityTimeout": "30"}}"#;
        assert_eq!(visibility_timeout(answer), Ok(Duration::from_secs(30)));
        assert!(visibility_timeout(br#"{"Attributes": {}}"#).is_err());
    }

    #[test]
    fn sends_text_with_attributes() {
        let mut m = message("hé\tllo\n".as_bytes());
        m.content_type = Some("text/plain".into());
        m.metadata.insert("seq".into(), "1".into());
        m.metadata
            .insert("content-type".into(), "overridden".into());
        assert_eq!(
            json(&send_message(URL, &m)),
            json!({
                "QueueUrl": URL,
                "MessageBody": "hé\tllo\n",
                "MessageAttributes": {
                    "content-type": {"DataType": "String", "StringValue": "text/plain"},
                    "seq": {"DataType": "String", "StringValue": "1"},
                },
            })
        );
        assert_eq!(
            json(&send_message(URL, &message(b"plain"))),
            json!({"QueueUrl": URL, "MessageBody": "plain"})
        );
    }

    #[test]
    fn sends_what_sqs_cannot_carry_as_base64() {
        for data in [&[0xff, 0x00][..], b"bell\x07", "\u{FFFE}".as_bytes()] {
            let body = json(&send_message(URL, &message(data)));
            assert_eq!(body["MessageBody"], STANDARD.encode(data), "{data:?}");
            assert_eq!(
                body["MessageAttributes"]["content-transfer-encoding"]["StringValue"],
                "base64"
            );
        }
        let mut m = message(b"q");
        m.metadata.insert("reply-to".into(), "spoofed".into());
        m.metadata
            .insert("content-transfer-encoding".into(), "base64".into());
        let attributes = &json(&send_message(URL, &m))["MessageAttributes"];
        assert!(
            attributes.is_null(),
            "reserved keys are not sent: {attributes}"
        );
        m.reply_to = Some(URL.into());
        assert_eq!(
            json(&send_message(URL, &m))["MessageAttributes"]["reply-to"]["StringValue"],
            URL
        );
    }

    #[test]
    fn fifo_group_and_deduplication() {
        let body = json(&send_message(FIFO_URL, &message(b"a")));
        assert_eq!(body["MessageGroupId"], "default");
        let hash = body["MessageDeduplicationId"].as_str().unwrap().to_string();
        assert_eq!(hash.len(), 64);
        let again = json(&send_message(FIFO_URL, &message(b"a")));
        assert_eq!(
            again["MessageDeduplicationId"],
            hash.as_str(),
            "same content, same id"
        );
        let other = json(&send_message(FIFO_URL, &message(b"b")));
        assert_ne!(other["MessageDeduplicationId"], hash.as_str());
        let mut tagged = message(b"a");
        tagged.metadata.insert("k".into(), "v".into());
        let tagged_body = json(&send_message(FIFO_URL, &tagged));
        assert_ne!(
            tagged_body["MessageDeduplicationId"],
            hash.as_str(),
            "attributes count"
        );

        let mut m = message(b"a");
        m.metadata.insert("group-id".into(), "customer-7".into());
        m.metadata.insert("dedup-id".into(), "order-1".into());
        let body = json(&send_message(FIFO_URL, &m));
        assert_eq!(body["MessageGroupId"], "customer-7");
        assert_eq!(body["MessageDeduplicationId"], "order-1");
        assert_eq!(
            body["MessageAttributes"]["group-id"]["StringValue"],
            "customer-7"
        );
        assert!(json(&send_message(URL, &m)).get("MessageGroupId").is_none());
    }

    #[test]
    fn reads_queue_urls() {
        assert_eq!(
            queue_url(br#"{"QueueUrl": "http://h/1/q"}"#).unwrap(),
            "http://h/1/q"
        );
        let e = queue_url(b"<xml/>").unwrap_err().to_string();
        assert!(
            e.starts_with("SQS GetQueueUrl returned an unexpected response"),
            "{e}"
        );
    }

    #[test]
    fn reads_received_messages() {
        let body = br#"{"Messages": [
            {"MessageId": "m1", "ReceiptHandle": "r1", "MD5OfBody": "x", "Body": "hello",
             "Attributes": {"ApproximateReceiveCount": "1"},
             "MessageAttributes": {
                "seq": {"StringValue": "1", "DataType": "String"},
                "content-type": {"StringValue": "text/plain", "DataType": "String"},
                "n": {"StringValue": "42", "DataType": "Number"},
                "b": {"BinaryValue": "AP8=", "DataType": "Binary"},
                "reply-to": {"StringValue": "http://h/1/r", "DataType": "String"}}},
            {"MessageId": "m2", "ReceiptHandle": "r2", "Body": "AP8=",
             "MessageAttributes": {"content-transfer-encoding": {"StringValue": "base64", "DataType": "String"}}},
            {"MessageId": "m3", "ReceiptHandle": "r3", "Body": "!!",
             "MessageAttributes": {"content-transfer-encoding": {"StringValue": "base64", "DataType": "String"}}},
            {"MessageId": "m4", "ReceiptHandle": "r4", "Body": "x",
             "MessageAttributes": {"content-transfer-encoding": {"StringValue": "gzip", "DataType": "String"}}}
        ]}"#;
        let got = received(body, "jobs").unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].receipt_handle, "r1");
        let m = got[0].message.as_ref().unwrap();
        assert_eq!(m.topic.as_deref(), Some("jobs"));
        assert_eq!(m.data, b"hello");
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.reply_to.as_deref(), Some("http://h/1/r"));
        let pairs: Vec<_> = m.metadata.iter().collect();
        assert_eq!(pairs, [("b", "AP8="), ("n", "42"), ("seq", "1")]);
        let m = got[1].message.as_ref().unwrap();
        assert_eq!(m.data, [0, 255]);
        assert!(m.metadata.is_empty() && m.content_type.is_none());
        let e = got[2].message.as_ref().unwrap_err();
        assert!(
            e.starts_with("message m3 in queue `jobs`: its body is marked"),
            "{e}"
        );
        let e = got[3].message.as_ref().unwrap_err();
        assert!(e.contains("`content-transfer-encoding: gzip`"), "{e}");

        assert!(received(b"{}", "jobs").unwrap().is_empty());
        assert!(received(b"<ReceiveMessageResponse/>", "jobs").is_err());
    }

    #[test]
    fn round_trips_through_the_wire_format() {
        let mut m = message(&[1, 2, 3, 255]);
        m.content_type = Some("application/octet-stream".into());
        m.metadata.insert("k".into(), "v".into());
        m.reply_to = Some("http://h/1/r".into());
        let sent = json(&send_message(URL, &m));
        let wire = json!({"Messages": [{
            "MessageId": "m", "ReceiptHandle": "r",
            "Body": sent["MessageBody"], "MessageAttributes": sent["MessageAttributes"],
        }]});
        let got = received(&serde_json::to_vec(&wire).unwrap(), "orders").unwrap();
        m.topic = Some("orders".into());
        assert_eq!(got[0].message.as_ref().unwrap(), &m);
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn maps_errors() {
        let missing = response(
            400,
            r#"{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The specified queue does not exist.", "Message": "The specified queue does not exist."}"#,
        );
        assert_eq!(
            response_error("GetQueueUrl", "jobs-upper", &missing),
            Error::Other("SQS queue `jobs-upper` does not exist (in the region and account of the credentials); create it first, msgplug does not create queues".into())
        );
        for code in [
            "AccessDenied",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
        ] {
            let r = response(
                403,
                &format!(r#"{{"__type": "com.amazonaws.sqs#{code}", "Message": "no"}}"#),
            );
            match response_error("SendMessage", "q", &r) {
                Error::PermissionDenied(text) => assert!(
                    text.starts_with(&format!(
                        "SQS SendMessage on `q` failed: {code}: no (check AWS_ACCESS_KEY_ID"
                    )),
                    "{text}"
                ),
                other => panic!("{code}: {other:?}"),
            }
        }
        let throttled = response(400, r#"{"__type": "com.amazonaws.sqs#RequestThrottled"}"#);
        assert_eq!(
            response_error("ReceiveMessage", "q", &throttled),
            Error::Connection("SQS ReceiveMessage on `q` failed: RequestThrottled".into())
        );
        let fault = response(500, r#"{"__type": "a.b#Whatever:http://internal/#x"}"#);
        assert_eq!(
            response_error("ReceiveMessage", "q", &fault),
            Error::Connection("SQS ReceiveMessage on `q` failed: Whatever".into())
        );
        let invalid = response(
            400,
            r#"{"__type": "com.amazonaws.sqs#InvalidParameterValue", "Message": "bad name"}"#,
        );
        assert_eq!(
            response_error("CreateQueue", "a.b", &invalid),
            Error::Other("SQS CreateQueue on `a.b` failed: InvalidParameterValue: bad name".into())
        );
        assert_eq!(
            response_error("SendMessage", "q", &response(403, "<html>Forbidden</html>")),
            Error::PermissionDenied(
                "SQS SendMessage on `q`: HTTP 403: <html>Forbidden</html>".into()
            )
        );
    }
}
