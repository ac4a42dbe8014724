//! The JetStream API requests the backend makes, their answers (JSON over core NATS
//! request-reply on `$JS.API.*` subjects; checked against nats-server 2.9), and the
//! decisions the backend takes on them: setting up the stream and the durable consumer,
//! keeping a pull outstanding, and reading a publish's acknowledgement. All sans-IO:
//! `nats.rs` only sends, receives and logs.

use std::time::{Duration, Instant};

use common::Error;
use serde::Deserialize;
use serde_json::json;

use crate::config::JetStream;

/// How long one pull request waits on the server for messages.
pub const PULL_EXPIRES_MS: u64 = 5_000;

/// How long past its `expires` a pull is given before it counts as lost.
const PULL_GRACE: Duration = Duration::from_secs(2);

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

/// What to do after asking for the stream's info.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamCheck {
    /// The stream exists: go on with the consumer.
    Exists,
    /// The stream does not exist and `--create-stream` asks to create it.
    Create,
}

/// Decides on the answer to `STREAM.INFO` for the stream of `js` on the server at
/// `url`, where the consumer reads the subjects `subscribe`.
pub fn check_stream(
    info: &ApiResponse,
    js: &JetStream,
    subscribe: &[String],
    url: &str,
) -> Result<StreamCheck, Error> {
    match &info.error {
        None => Ok(StreamCheck::Exists),
        Some(e) if e.stream_not_found() && js.create_stream => {
            if subscribe == [">"] {
                return Err(Error::other(format!(
                    "cannot create JetStream stream `{}` without subjects: pass the stream's subjects with --subscribe",
                    js.stream
                )));
            }
            Ok(StreamCheck::Create)
        }
        Some(e) if e.stream_not_found() => Err(Error::other(format!(
            "JetStream stream `{}` does not exist on {url}; create it (for example `nats stream add {}`) or pass --create-stream to create it with the --subscribe subjects",
            js.stream, js.stream
        ))),
        Some(e) => Err(Error::other(format!(
            "JetStream stream `{}`: {} (JetStream error {})",
            js.stream, e.description, e.err_code
        ))),
    }
}

/// Decides on the answer to `STREAM.CREATE` for `stream`: `Ok(true)` when this request
/// created it, `Ok(false)` when another instance created it first.
pub fn stream_created(answer: &ApiResponse, stream: &str) -> Result<bool, Error> {
    match &answer.error {
        None => Ok(true),
        Some(e) if e.stream_name_in_use() => Ok(false),
        Some(e) => Err(Error::other(format!(
            "cannot create JetStream stream `{stream}`: {} (JetStream error {})",
            e.description, e.err_code
        ))),
    }
}

/// Decides on the answer to `CONSUMER.DURABLE.CREATE` for the consumer of `js`.
pub fn consumer_created(answer: &ApiResponse, js: &JetStream) -> Result<(), Error> {
    match &answer.error {
        None => Ok(()),
        Some(e) => Err(Error::other(format!(
            "cannot create durable consumer `{}` on JetStream stream `{}`: {} (JetStream error {})",
            js.durable, js.stream, e.description, e.err_code
        ))),
    }
}

/// Reads the answer to `STREAM.NAMES` for one subject (`None`: nothing answered):
/// whether a stream captures the subject, or `None` when the server has no JetStream
/// (for this account), so there is no point in asking again.
pub fn captured(answer: Option<&ApiResponse>) -> Option<bool> {
    match answer {
        Some(answer) if answer.error.is_none() => {
            Some(answer.streams.as_ref().is_some_and(|s| !s.is_empty()))
        }
        _ => None,
    }
}

/// The outstanding pull request of the durable pull consumer, if any.
#[derive(Debug, Default)]
pub struct Pulls {
    /// How many more messages the outstanding pull may bring, and when it counts as
    /// finished even if the server did not say so.
    current: Option<(u32, Instant)>,
}

/// What a message on the pull inbox means.
#[derive(Debug, PartialEq, Eq)]
pub enum Pulled {
    /// A message for the handler.
    Delivery,
    /// An idle heartbeat (status 100): nothing to do.
    Heartbeat,
    /// The pull is over: no messages (404) or it expired (408). The next one is due.
    Ended,
    /// JetStream ended the pull for another reason (409: consumer deleted, leadership
    /// change, too many waiting pulls, ...): check the consumer again and pull anew.
    Restart,
    /// JetStream refused the pull (any other status): an error.
    Refused,
}

impl Pulls {
    /// True when a pull request is due at `now`: none is outstanding, or the last one
    /// is past its deadline.
    pub fn due(&self, now: Instant) -> bool {
        self.current.is_none_or(|(_, deadline)| now >= deadline)
    }

    /// Records a pull request for [`PULL_BATCH`] messages made at `now`.
    pub fn requested(&mut self, now: Instant) {
        let deadline = now + Duration::from_millis(PULL_EXPIRES_MS) + PULL_GRACE;
        self.current = Some((PULL_BATCH, deadline));
    }

    /// When the outstanding pull counts as finished, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.current.map(|(_, deadline)| deadline)
    }

    /// Forgets the outstanding pull (the connection it was made on is gone).
    pub fn clear(&mut self) {
        self.current = None;
    }

    /// Files a message on the pull inbox: a delivery (no status header) or a status
    /// from JetStream.
    pub fn pulled(&mut self, status: Option<u16>) -> Pulled {
        match status {
            None => {
                if let Some((remaining, _)) = &mut self.current {
                    *remaining = remaining.saturating_sub(1);
                    if *remaining == 0 {
                        self.current = None;
                    }
                }
                Pulled::Delivery
            }
            Some(100) => Pulled::Heartbeat,
            Some(404 | 408) => {
                self.current = None;
                Pulled::Ended
            }
            Some(409) => {
                self.current = None;
                Pulled::Restart
            }
            Some(_) => Pulled::Refused,
        }
    }
}

/// What came back to the reply address of a message published to a stream's subject.
#[derive(Debug, PartialEq, Eq)]
pub enum PubAck {
    /// The stream stored the message.
    Stored,
    /// JetStream refused to store it (stream full, wrong expected sequence, ...): why.
    Refused(String),
    /// No stream answered (status 503): the stream that captured the subject is not there
    /// now. It may be gone for good, or the server is stopping or starting and has shut
    /// down or not yet loaded it: the message was not stored.
    NoStream,
    /// Not a JetStream answer: a core subscriber replied to the reply address;
    /// JetStream's answer is still due.
    Other,
}

/// Reads the answer (with status header `status`, if any) to a publish that JetStream
/// captures (`{"stream":"S","seq":1}`, or `{"error":{...}}`).
pub fn pub_ack(status: Option<u16>, body: &[u8]) -> PubAck {
    if status == Some(503) {
        return PubAck::NoStream;
    }
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
            pub_ack(None, br#"{"stream":"DONE", "seq":1}"#),
            PubAck::Stored
        );
        assert_eq!(
            pub_ack(
                None,
                br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"DONE","seq":0}"#
            ),
            PubAck::Refused("maximum messages exceeded (JetStream error 10077)".into())
        );
        assert_eq!(pub_ack(None, b"hello, world"), PubAck::Other);
        assert_eq!(pub_ack(None, br#"{"seq":1}"#), PubAck::Other);
        assert_eq!(
            pub_ack(Some(503), b""),
            PubAck::NoStream,
            "no stream answered: not stored"
        );
    }

    fn answer(json: &str) -> ApiResponse {
        parse_response(json.as_bytes()).unwrap()
    }

    const NOT_FOUND: &str =
        r#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;
    const IN_USE: &str =
        r#"{"error":{"code":400,"err_code":10058,"description":"stream name already in use"}}"#;
    const OTHER: &str = r#"{"error":{"code":500,"err_code":10999,"description":"boom"}}"#;

    #[test]
    fn checks_the_stream() {
        let url = "nats://127.0.0.1:4222";
        let subjects = ["orders.>".to_string()];
        let info = answer(r#"{"config":{"name":"ORDERS"}}"#);
        assert_eq!(
            check_stream(&info, &js(), &subjects, url),
            Ok(StreamCheck::Exists)
        );
        let missing = answer(NOT_FOUND);
        assert_eq!(
            check_stream(&missing, &js(), &subjects, url),
            Err(Error::other(
                "JetStream stream `ORDERS` does not exist on nats://127.0.0.1:4222; create it (for example `nats stream add ORDERS`) or pass --create-stream to create it with the --subscribe subjects"
            ))
        );
        let create = JetStream {
            create_stream: true,
            ..js()
        };
        assert_eq!(
            check_stream(&missing, &create, &subjects, url),
            Ok(StreamCheck::Create)
        );
        assert_eq!(
            check_stream(&missing, &create, &[">".into()], url),
            Err(Error::other(
                "cannot create JetStream stream `ORDERS` without subjects: pass the stream's subjects with --subscribe"
            ))
        );
        assert_eq!(
            check_stream(&answer(OTHER), &create, &subjects, url),
            Err(Error::other(
                "JetStream stream `ORDERS`: boom (JetStream error 10999)"
            ))
        );
    }

    #[test]
    fn creates_the_stream_and_the_consumer() {
        assert_eq!(stream_created(&answer("{}"), "ORDERS"), Ok(true));
        assert_eq!(
            stream_created(&answer(IN_USE), "ORDERS"),
            Ok(false),
            "another instance created it first"
        );
        assert_eq!(
            stream_created(&answer(OTHER), "ORDERS"),
            Err(Error::other(
                "cannot create JetStream stream `ORDERS`: boom (JetStream error 10999)"
            ))
        );
        assert_eq!(consumer_created(&answer("{}"), &js()), Ok(()));
        assert_eq!(
            consumer_created(&answer(OTHER), &js()),
            Err(Error::other(
                "cannot create durable consumer `workers` on JetStream stream `ORDERS`: boom (JetStream error 10999)"
            ))
        );
    }

    #[test]
    fn asks_which_streams_capture_a_subject() {
        assert_eq!(
            captured(Some(&answer(r#"{"streams":["DONE"]}"#))),
            Some(true)
        );
        assert_eq!(captured(Some(&answer(r#"{"streams":null}"#))), Some(false));
        assert_eq!(captured(Some(&answer(r#"{"streams":[]}"#))), Some(false));
        assert_eq!(captured(Some(&answer(OTHER))), None, "no JetStream here");
        assert_eq!(captured(None), None, "nothing answered");
    }

    #[test]
    fn a_pull_is_due_until_one_is_outstanding() {
        let now = Instant::now();
        let mut pulls = Pulls::default();
        assert!(pulls.due(now));
        assert_eq!(pulls.deadline(), None);
        pulls.requested(now);
        let deadline = now + Duration::from_millis(PULL_EXPIRES_MS) + PULL_GRACE;
        assert_eq!(pulls.deadline(), Some(deadline));
        assert!(!pulls.due(now));
        assert!(
            pulls.due(deadline),
            "a pull past its deadline counts as lost"
        );
        pulls.clear();
        assert!(pulls.due(now));
    }

    #[test]
    fn a_pull_ends_with_its_batch_or_a_status() {
        let now = Instant::now();
        let mut pulls = Pulls::default();
        pulls.requested(now);
        for _ in 1..PULL_BATCH {
            assert_eq!(pulls.pulled(None), Pulled::Delivery);
            assert_eq!(pulls.pulled(Some(100)), Pulled::Heartbeat);
            assert!(!pulls.due(now));
        }
        assert_eq!(pulls.pulled(None), Pulled::Delivery);
        assert!(pulls.due(now), "the whole batch came");
        assert_eq!(
            pulls.pulled(None),
            Pulled::Delivery,
            "a late delivery is still one"
        );
        for (status, outcome) in [
            (404, Pulled::Ended),
            (408, Pulled::Ended),
            (409, Pulled::Restart),
        ] {
            pulls.requested(now);
            assert_eq!(pulls.pulled(Some(status)), outcome);
            assert!(pulls.due(now), "{status} ends the pull");
        }
        pulls.requested(now);
        assert_eq!(pulls.pulled(Some(400)), Pulled::Refused);
    }
}
