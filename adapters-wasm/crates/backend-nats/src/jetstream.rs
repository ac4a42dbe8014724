//! The JetStream API requests the backend makes, and their answers (JSON over core
//! NATS request-reply on `$JS.API.*` subjects; checked against nats-server 2.9).

use serde::Deserialize;
use serde_json::json;

use crate::config::JetStream;

/// How long one pull request waits on the server for messages.
pub const PULL_EXPIRES_MS: u64 = 5_000;

/// How many messages one pull request asks for.
pub const PULL_BATCH: u32 = 16;

/// The subject that answers with a stream's configuration.
pub fn stream_info_subject(stream: &str) -> String {
    format!("$JS.API.STREAM.INFO.{stream}")
}

/// The subject that creates a stream.
pub fn stream_create_subject(stream: &str) -> String {
    format!("$JS.API.STREAM.CREATE.{stream}")
}

/// The subject that creates (or updates) a durable consumer.
pub fn consumer_create_subject(js: &JetStream) -> String {
    format!(
        "$JS.API.CONSUMER.DURABLE.CREATE.{}.{}",
        js.stream, js.durable
    )
}

/// The subject a pull request is published to.
pub fn pull_subject(js: &JetStream) -> String {
    format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", js.stream, js.durable)
}

/// The subject that lists streams (those capturing a subject, with [`stream_names_body`]).
pub fn stream_names_subject() -> &'static str {
    "$JS.API.STREAM.NAMES"
}

/// The body that asks which streams capture `subject`.
pub fn stream_names_body(subject: &str) -> Vec<u8> {
    json!({ "subject": subject }).to_string().into_bytes()
}

/// The body that creates a file-backed stream capturing `subjects`.
pub fn stream_create_body(stream: &str, subjects: &[String]) -> Vec<u8> {
    json!({
        "name": stream,
        "subjects": subjects,
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": 1,
    })
    .to_string()
    .into_bytes()
}

/// The body that creates the durable pull consumer: explicit acks, from the start of
/// the stream, filtered to the one subscription when there is exactly one (nats-server
/// 2.9 consumers take a single filter subject).
pub fn consumer_create_body(js: &JetStream, subscribe: &[String]) -> Vec<u8> {
    let mut config = json!({
        "durable_name": js.durable,
        "ack_policy": "explicit",
        "deliver_policy": "all",
        "replay_policy": "instant",
        "ack_wait": js.ack_wait_ms * 1_000_000,
        "max_deliver": -1,
    });
    if let [subject] = subscribe {
        if subject != ">" {
            config["filter_subject"] = json!(subject);
        }
    }
    json!({ "stream_name": js.stream, "config": config })
        .to_string()
        .into_bytes()
}

/// The body of a pull request for up to [`PULL_BATCH`] messages, waiting at most
/// [`PULL_EXPIRES_MS`].
pub fn pull_body() -> Vec<u8> {
    json!({ "batch": PULL_BATCH, "expires": PULL_EXPIRES_MS * 1_000_000 })
        .to_string()
        .into_bytes()
}

/// The answer of a JetStream API request (only the fields the backend reads).
#[derive(Debug, Default, Deserialize)]
pub struct ApiResponse {
    /// Present when the request failed.
    #[serde(default)]
    pub error: Option<ApiError>,
    /// Stream names (the answer of `STREAM.NAMES`; `null` when there are none).
    #[serde(default)]
    pub streams: Option<Vec<String>>,
}

/// A JetStream API error.
#[derive(Debug, Deserialize)]
pub struct ApiError {
    /// JetStream's own error code (10059: stream not found).
    #[serde(default)]
    pub err_code: u32,
    /// What went wrong.
    #[serde(default)]
    pub description: String,
}

impl ApiError {
    /// True when the stream does not exist.
    pub fn stream_not_found(&self) -> bool {
        self.err_code == 10059
    }

    /// True when a stream of that name exists already (with another configuration).
    pub fn stream_name_in_use(&self) -> bool {
        self.err_code == 10058
    }
}

/// Parses an API answer; a body that is not an API answer is an error.
pub fn parse_response(body: &[u8]) -> Result<ApiResponse, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "not a JetStream API answer ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })
}

/// What came back to the reply address of a message published to a stream's subject.
#[derive(Debug, PartialEq, Eq)]
pub enum PubAck {
    /// The stream stored the message.
    Stored,
    /// JetStream refused to store it (stream full, wrong expected sequence, ...): why.
    Refused(String),
    /// Not a JetStream answer: a core subscriber replied to the reply address.
    Other,
}

/// Reads the answer to a publish that JetStream captures (`{"stream":"S","seq":1}`, or
/// `{"error":{...}}`).
pub fn parse_pub_ack(body: &[u8]) -> PubAck {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        error: Option<ApiError>,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer { error: Some(e), .. }) => PubAck::Refused(format!(
            "{} (JetStream error {})",
            e.description, e.err_code
        )),
        Ok(Answer {
            stream: Some(_), ..
        }) => PubAck::Stored,
        _ => PubAck::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js() -> JetStream {
        JetStream {
            stream: "ORDERS".into(),
            durable: "workers".into(),
            create_stream: false,
            ack_wait_ms: 2_000,
        }
    }

    fn value(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn subjects() {
        assert_eq!(stream_info_subject("ORDERS"), "$JS.API.STREAM.INFO.ORDERS");
        assert_eq!(stream_names_subject(), "$JS.API.STREAM.NAMES");
        assert_eq!(
            stream_create_subject("ORDERS"),
            "$JS.API.STREAM.CREATE.ORDERS"
        );
        assert_eq!(
            consumer_create_subject(&js()),
            "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.workers"
        );
        assert_eq!(
            pull_subject(&js()),
            "$JS.API.CONSUMER.MSG.NEXT.ORDERS.workers"
        );
    }

    #[test]
    fn consumer_filters_only_one_subscription() {
        let one = value(&consumer_create_body(&js(), &["orders.>".into()]));
        assert_eq!(one["stream_name"], "ORDERS");
        assert_eq!(one["config"]["durable_name"], "workers");
        assert_eq!(one["config"]["ack_policy"], "explicit");
        assert_eq!(one["config"]["deliver_policy"], "all");
        assert_eq!(one["config"]["ack_wait"], 2_000_000_000u64);
        assert_eq!(one["config"]["filter_subject"], "orders.>");
        let two = value(&consumer_create_body(&js(), &["a".into(), "b".into()]));
        assert!(two["config"].get("filter_subject").is_none());
        let all = value(&consumer_create_body(&js(), &[">".into()]));
        assert!(all["config"].get("filter_subject").is_none());
    }

    #[test]
    fn stream_and_pull_bodies() {
        let s = value(&stream_create_body("ORDERS", &["orders.>".into()]));
        assert_eq!(s["name"], "ORDERS");
        assert_eq!(s["subjects"][0], "orders.>");
        let p = value(&pull_body());
        assert_eq!(p["batch"], PULL_BATCH);
        assert_eq!(p["expires"], PULL_EXPIRES_MS * 1_000_000);
    }

    #[test]
    fn parses_answers() {
        let r = parse_response(
            br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
        )
        .unwrap();
        let e = r.error.unwrap();
        assert!(e.stream_not_found() && !e.stream_name_in_use());
        assert_eq!(e.description, "stream not found");
        let r = parse_response(
            br#"{"error":{"code":400,"err_code":10058,"description":"stream name already in use with a different configuration"}}"#,
        )
        .unwrap();
        assert!(r.error.unwrap().stream_name_in_use());
        let r = parse_response(br#"{"config":{"name":"S","subjects":["a.>","b"]},"state":{}}"#)
            .unwrap();
        assert!(r.error.is_none());
        let r = parse_response(br#"{"total":1,"streams":["DONE"]}"#).unwrap();
        assert_eq!(r.streams.unwrap(), ["DONE"]);
        let r = parse_response(br#"{"total":0,"streams":null}"#).unwrap();
        assert_eq!(r.streams, None);
        assert_eq!(
            value(&stream_names_body("jobs.upper")),
            serde_json::json!({"subject": "jobs.upper"})
        );
        assert!(parse_response(b"nope")
            .unwrap_err()
            .starts_with("not a JetStream API answer"));
    }

    #[test]
    fn parses_pub_acks() {
        assert_eq!(
            parse_pub_ack(br#"{"stream":"DONE", "seq":1}"#),
            PubAck::Stored
        );
        assert_eq!(
            parse_pub_ack(
                br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"DONE","seq":0}"#
            ),
            PubAck::Refused("maximum messages exceeded (JetStream error 10077)".into())
        );
        assert_eq!(parse_pub_ack(b"hello, world"), PubAck::Other);
        assert_eq!(parse_pub_ack(br#"{"seq":1}"#), PubAck::Other);
    }
}
