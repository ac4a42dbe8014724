//! The sans-IO Kafka client protocol: request framing, and the requests and responses of
//! the API versions this adapter speaks (one version per API, all non-flexible but
//! `InitProducerId`; see [`REQUIRED`]), encoded by hand on [`crate::wire`].

use crate::wire::{Malformed, Reader, Writer};

/// The largest response frame accepted (a fetch is asked for far less).
pub const MAX_FRAME: usize = 256 << 20;

/// An API this adapter uses: its key, name and the one version it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Api {
    /// The API key.
    pub key: i16,
    /// The name, for error messages.
    pub name: &'static str,
    /// The version this adapter speaks.
    pub version: i16,
    /// Whether that version is a flexible one (KIP-482: compact strings, tagged fields,
    /// request header v2 and response header v1).
    pub flexible: bool,
}

/// `Produce` v3 (record batches v2, Kafka 0.11+).
pub const PRODUCE: Api = Api {
    key: 0,
    name: "Produce",
    version: 3,
    flexible: false,
};
/// `Fetch` v4 (record batches v2, isolation level).
pub const FETCH: Api = Api {
    key: 1,
    name: "Fetch",
    version: 4,
    flexible: false,
};
/// `ListOffsets` v1.
pub const LIST_OFFSETS: Api = Api {
    key: 2,
    name: "ListOffsets",
    version: 1,
    flexible: false,
};
/// `Metadata` v4 (`allow_auto_topic_creation`).
pub const METADATA: Api = Api {
    key: 3,
    name: "Metadata",
    version: 4,
    flexible: false,
};
/// `OffsetCommit` v2.
pub const OFFSET_COMMIT: Api = Api {
    key: 8,
    name: "OffsetCommit",
    version: 2,
    flexible: false,
};
/// `OffsetFetch` v1.
pub const OFFSET_FETCH: Api = Api {
    key: 9,
    name: "OffsetFetch",
    version: 1,
    flexible: false,
};
/// `FindCoordinator` v1.
pub const FIND_COORDINATOR: Api = Api {
    key: 10,
    name: "FindCoordinator",
    version: 1,
    flexible: false,
};
/// `JoinGroup` v2 (rebalance timeout, no `MEMBER_ID_REQUIRED` round).
pub const JOIN_GROUP: Api = Api {
    key: 11,
    name: "JoinGroup",
    version: 2,
    flexible: false,
};
/// `Heartbeat` v1.
pub const HEARTBEAT: Api = Api {
    key: 12,
    name: "Heartbeat",
    version: 1,
    flexible: false,
};
/// `LeaveGroup` v1.
pub const LEAVE_GROUP: Api = Api {
    key: 13,
    name: "LeaveGroup",
    version: 1,
    flexible: false,
};
/// `SyncGroup` v1.
pub const SYNC_GROUP: Api = Api {
    key: 14,
    name: "SyncGroup",
    version: 1,
    flexible: false,
};
/// `SaslHandshake` v1 (the mechanism; the exchange follows in `SaslAuthenticate`).
pub const SASL_HANDSHAKE: Api = Api {
    key: 17,
    name: "SaslHandshake",
    version: 1,
    flexible: false,
};
/// `SaslAuthenticate` v1 (one SASL message each way).
pub const SASL_AUTHENTICATE: Api = Api {
    key: 36,
    name: "SaslAuthenticate",
    version: 1,
    flexible: false,
};
/// `ApiVersions` v0 (every broker answers it).
pub const API_VERSIONS: Api = Api {
    key: 18,
    name: "ApiVersions",
    version: 0,
    flexible: false,
};
/// `InitProducerId` v4 (idempotent producer; optional). Flexible: tansu answers the
/// older versions with an error when there is no transactional id.
pub const INIT_PRODUCER_ID: Api = Api {
    key: 22,
    name: "InitProducerId",
    version: 4,
    flexible: true,
};

/// Every API the adapter needs, checked against the broker's `ApiVersions`
/// (`InitProducerId` is optional: without it the producer is not idempotent).
pub const REQUIRED: [Api; 11] = [
    PRODUCE,
    FETCH,
    LIST_OFFSETS,
    METADATA,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    FIND_COORDINATOR,
    JOIN_GROUP,
    HEARTBEAT,
    LEAVE_GROUP,
    SYNC_GROUP,
];

/// Kafka error codes the client acts on.
pub mod code {
    /// The fetch offset is outside the log.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// The topic or partition does not exist (yet).
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// A leader election is under way.
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    /// This broker does not lead the partition (any more).
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// The broker timed out waiting for replicas.
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// A record is larger than the broker accepts.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// The coordinator is loading.
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    /// There is no coordinator yet.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// This broker is not the group's coordinator.
    pub const NOT_COORDINATOR: i16 = 16;
    /// The batch is larger than the broker accepts.
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    /// Not enough in-sync replicas.
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    /// Written, but not to enough in-sync replicas.
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    /// The member's generation is outdated.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// The group does not know the member.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// The group is rebalancing: rejoin.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// The batch was written before (idempotent retry).
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    /// The coordinator handed out a member id to join with (some brokers ask even
    /// before `JoinGroup` v4).
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    /// The topic was created a moment ago and is not usable yet.
    pub const NOT_CONTROLLER: i16 = 41;
    /// The broker does not offer the SASL mechanism asked for.
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    /// The broker refused the SASL credentials.
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

    /// The name of a Kafka error code, for messages.
    pub fn name(code: i16) -> &'static str {
        match code {
            -1 => "UNKNOWN_SERVER_ERROR",
            OFFSET_OUT_OF_RANGE => "OFFSET_OUT_OF_RANGE",
            2 => "CORRUPT_MESSAGE",
            UNKNOWN_TOPIC_OR_PARTITION => "UNKNOWN_TOPIC_OR_PARTITION",
            LEADER_NOT_AVAILABLE => "LEADER_NOT_AVAILABLE",
            NOT_LEADER_OR_FOLLOWER => "NOT_LEADER_OR_FOLLOWER",
            REQUEST_TIMED_OUT => "REQUEST_TIMED_OUT",
            MESSAGE_TOO_LARGE => "MESSAGE_TOO_LARGE",
            COORDINATOR_LOAD_IN_PROGRESS => "COORDINATOR_LOAD_IN_PROGRESS",
            COORDINATOR_NOT_AVAILABLE => "COORDINATOR_NOT_AVAILABLE",
            NOT_COORDINATOR => "NOT_COORDINATOR",
            17 => "INVALID_TOPIC_EXCEPTION",
            RECORD_LIST_TOO_LARGE => "RECORD_LIST_TOO_LARGE",
            NOT_ENOUGH_REPLICAS => "NOT_ENOUGH_REPLICAS",
            NOT_ENOUGH_REPLICAS_AFTER_APPEND => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            ILLEGAL_GENERATION => "ILLEGAL_GENERATION",
            24 => "INVALID_GROUP_ID",
            UNKNOWN_MEMBER_ID => "UNKNOWN_MEMBER_ID",
            26 => "INVALID_SESSION_TIMEOUT",
            REBALANCE_IN_PROGRESS => "REBALANCE_IN_PROGRESS",
            29 => "TOPIC_AUTHORIZATION_FAILED",
            30 => "GROUP_AUTHORIZATION_FAILED",
            31 => "CLUSTER_AUTHORIZATION_FAILED",
            35 => "UNSUPPORTED_VERSION",
            NOT_CONTROLLER => "NOT_CONTROLLER",
            DUPLICATE_SEQUENCE_NUMBER => "DUPLICATE_SEQUENCE_NUMBER",
            MEMBER_ID_REQUIRED => "MEMBER_ID_REQUIRED",
            45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            UNSUPPORTED_SASL_MECHANISM => "UNSUPPORTED_SASL_MECHANISM",
            34 => "ILLEGAL_SASL_STATE",
            SASL_AUTHENTICATION_FAILED => "SASL_AUTHENTICATION_FAILED",
            87 => "INVALID_RECORD",
            _ => "an error",
        }
    }

    /// True for the errors that go away by themselves or after a metadata refresh.
    pub fn is_retriable(code: i16) -> bool {
        matches!(
            code,
            UNKNOWN_TOPIC_OR_PARTITION
                | LEADER_NOT_AVAILABLE
                | NOT_LEADER_OR_FOLLOWER
                | REQUEST_TIMED_OUT
                | COORDINATOR_LOAD_IN_PROGRESS
                | COORDINATOR_NOT_AVAILABLE
                | NOT_COORDINATOR
                | NOT_ENOUGH_REPLICAS
                | NOT_ENOUGH_REPLICAS_AFTER_APPEND
                | NOT_CONTROLLER
        )
    }

    /// True for the authorization and authentication failures.
    pub fn is_denied(code: i16) -> bool {
        matches!(code, 29..=31 | SASL_AUTHENTICATION_FAILED)
    }
}

/// Frames a request: size, header v1 (key, version, correlation id, client id), body.
pub fn frame(api: Api, correlation_id: i32, client_id: &str, body: &[u8]) -> Vec<u8> {
    let mut header = Writer::default();
    header
        .i16(api.key)
        .i16(api.version)
        .i32(correlation_id)
        .nstr(Some(client_id));
    if api.flexible {
        header.varint(0); // no tagged fields (an unsigned varint 0 is the byte 0 too)
    }
    let mut out = Writer::default();
    out.len(header.0.len() + body.len());
    out.0.extend_from_slice(&header.0);
    out.0.extend_from_slice(body);
    out.0
}

/// Reads a response frame's size prefix: the size of the frame that follows.
pub fn frame_size(prefix: [u8; 4]) -> Result<usize, Malformed> {
    let n = i32::from_be_bytes(prefix);
    match usize::try_from(n) {
        Ok(n) if (4..=MAX_FRAME).contains(&n) => Ok(n),
        _ => Err(Malformed("response size")),
    }
}

/// Splits a response frame (without its size) into the correlation id and the body;
/// `flexible` responses have header v1, whose tagged fields are skipped.
pub fn response(frame: &[u8], flexible: bool) -> Result<(i32, &[u8]), Malformed> {
    let mut r = Reader::new(frame);
    let id = r.i32("correlation id")?;
    if flexible {
        skip_tagged_fields(&mut r)?;
    }
    let at = frame.len() - r.remaining();
    Ok((id, &frame[at..]))
}

/// Skips a flexible version's tagged fields (a count, then tag, size and data each).
fn skip_tagged_fields(r: &mut Reader) -> Result<(), Malformed> {
    let count = r.uvarint("tagged fields")?;
    for _ in 0..count {
        r.uvarint("tag")?;
        let size = r.uvarint("tag size")?;
        r.take(
            usize::try_from(size).map_err(|_| Malformed("tag size"))?,
            "tag",
        )?;
    }
    Ok(())
}

/// One API's version range, from `ApiVersions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// The API key.
    pub key: i16,
    /// The oldest version the broker speaks.
    pub min: i16,
    /// The newest.
    pub max: i16,
}

/// Decodes an `ApiVersions` v0 response.
pub fn decode_api_versions(body: &[u8]) -> Result<(i16, Vec<VersionRange>), Malformed> {
    let mut r = Reader::new(body);
    let error = r.i16("ApiVersions error")?;
    let ranges = r.array("ApiVersions keys", |r| {
        Ok(VersionRange {
            key: r.i16("api key")?,
            min: r.i16("min version")?,
            max: r.i16("max version")?,
        })
    })?;
    Ok((error, ranges))
}

/// The `SaslHandshake` request body: the mechanism's name.
pub fn encode_sasl_handshake(mechanism: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(mechanism);
    w.0
}

/// Reads a `SaslHandshake` response: the error code and the mechanisms the broker offers.
pub fn decode_sasl_handshake(body: &[u8]) -> Result<(i16, Vec<String>), Malformed> {
    let mut r = Reader::new(body);
    let error = r.i16("SaslHandshake error")?;
    let mechanisms = r.array("SaslHandshake mechanisms", |r| r.str("mechanism"))?;
    Ok((error, mechanisms))
}

/// The `SaslAuthenticate` request body: one SASL message.
pub fn encode_sasl_authenticate(message: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(Some(message));
    w.0
}

/// A `SaslAuthenticate` response.
#[derive(Debug, PartialEq, Eq)]
pub struct SaslAuthenticated {
    /// The error code.
    pub error: i16,
    /// The broker's words about the error, if any.
    pub message: Option<String>,
    /// The broker's SASL message.
    pub auth_bytes: Vec<u8>,
}

/// Reads a `SaslAuthenticate` response (the session lifetime that follows is ignored:
/// a broker that ends the session closes the connection, and the adapter reconnects).
pub fn decode_sasl_authenticate(body: &[u8]) -> Result<SaslAuthenticated, Malformed> {
    let mut r = Reader::new(body);
    Ok(SaslAuthenticated {
        error: r.i16("SaslAuthenticate error")?,
        message: r.nstr("SaslAuthenticate error message")?,
        auth_bytes: r
            .bytes("SaslAuthenticate auth bytes")?
            .unwrap_or_default()
            .to_vec(),
    })
}

/// Checks that the broker speaks every version in `apis`: the error names the first
/// one it does not (and what it speaks instead).
pub fn check_versions(ranges: &[VersionRange], apis: &[Api]) -> Result<(), String> {
    for api in apis {
        match ranges.iter().find(|r| r.key == api.key) {
            Some(r) if (r.min..=r.max).contains(&api.version) => {}
            Some(r) => {
                return Err(format!(
                    "the broker speaks {} v{}-v{}, this adapter needs v{} (the Kafka 0.11+ protocol); the broker is too {}",
                    api.name,
                    r.min,
                    r.max,
                    api.version,
                    if r.max < api.version { "old" } else { "new" }
                ))
            }
            None => {
                return Err(format!(
                    "the broker does not offer the {} API (key {}), which this adapter needs",
                    api.name, api.key
                ))
            }
        }
    }
    Ok(())
}

/// True when the broker speaks `api`'s version.
pub fn supports(ranges: &[VersionRange], api: Api) -> bool {
    check_versions(ranges, &[api]).is_ok()
}

/// A broker in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Its node id.
    pub node_id: i32,
    /// `host:port` to connect to.
    pub address: String,
}

/// A partition's state in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Its error code (0 when usable).
    pub error: i16,
    /// The partition number.
    pub index: i32,
    /// The leader's node id (-1 when there is none).
    pub leader: i32,
}

/// A topic's state in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its error code (0 when usable).
    pub error: i16,
    /// The topic name.
    pub name: String,
    /// Its partitions, sorted by number.
    pub partitions: Vec<PartitionInfo>,
}

/// A `Metadata` response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterMetadata {
    /// The brokers.
    pub brokers: Vec<Broker>,
    /// The topics asked about.
    pub topics: Vec<TopicInfo>,
}

/// Encodes a `Metadata` v4 request for `topics` (auto-creation allowed, as the broker
/// decides).
pub fn encode_metadata(topics: &[String]) -> Vec<u8> {
    let mut w = Writer::default();
    w.len(topics.len());
    for t in topics {
        w.str(t);
    }
    w.i8(1);
    w.0
}

/// Decodes a `Metadata` v4 response.
pub fn decode_metadata(body: &[u8]) -> Result<ClusterMetadata, Malformed> {
    let mut r = Reader::new(body);
    r.i32("throttle")?;
    let brokers = r.array("brokers", |r| {
        let node_id = r.i32("node id")?;
        let host = r.str("host")?;
        let port = r.i32("port")?;
        r.nstr("rack")?;
        Ok(Broker {
            node_id,
            address: format!("{host}:{port}"),
        })
    })?;
    r.nstr("cluster id")?;
    r.i32("controller id")?;
    let topics = r.array("topics", |r| {
        let error = r.i16("topic error")?;
        let name = r.str("topic name")?;
        r.i8("is internal")?;
        let mut partitions = r.array("partitions", |r| {
            let error = r.i16("partition error")?;
            let index = r.i32("partition")?;
            let leader = r.i32("leader")?;
            r.array("replicas", |r| r.i32("replica"))?;
            r.array("isr", |r| r.i32("isr"))?;
            Ok(PartitionInfo {
                error,
                index,
                leader,
            })
        })?;
        partitions.sort_by_key(|p| p.index);
        Ok(TopicInfo {
            error,
            name,
            partitions,
        })
    })?;
    Ok(ClusterMetadata { brokers, topics })
}

/// Encodes an `InitProducerId` v4 request for an idempotent (non-transactional) producer:
/// a null compact transactional id, the timeout, no previous producer id, no tags.
pub fn encode_init_producer_id() -> Vec<u8> {
    let mut w = Writer::default();
    w.i8(0).i32(60_000).i64(-1).i16(-1).i8(0);
    w.0
}

/// Decodes an `InitProducerId` v4 response: error, producer id, epoch.
pub fn decode_init_producer_id(body: &[u8]) -> Result<(i16, i64, i16), Malformed> {
    let mut r = Reader::new(body);
    r.i32("throttle")?;
    Ok((
        r.i16("error")?,
        r.i64("producer id")?,
        r.i16("producer epoch")?,
    ))
}

/// One partition's batch in a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The encoded record batch.
    pub batch: Vec<u8>,
}

/// Encodes a `Produce` v3 request with `acks=all`.
pub fn encode_produce(batches: &[PartitionBatch], timeout_ms: i32) -> Vec<u8> {
    let mut w = Writer::default();
    w.nstr(None).i16(-1).i32(timeout_ms);
    let topics = group_by_topic(batches.iter().map(|b| (b.topic.as_str(), b)));
    w.len(topics.len());
    for (topic, parts) in topics {
        w.str(topic).len(parts.len());
        for b in parts {
            w.i32(b.partition).bytes(Some(&b.batch));
        }
    }
    w.0
}

/// Groups items by topic, keeping the topics' first-seen order.
fn group_by_topic<'a, T>(items: impl Iterator<Item = (&'a str, T)>) -> Vec<(&'a str, Vec<T>)> {
    let mut out: Vec<(&str, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, v)) => v.push(item),
            None => out.push((topic, vec![item])),
        }
    }
    out
}

/// One partition's answer in a produce response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The error code (0: written).
    pub error: i16,
    /// The first record's offset.
    pub base_offset: i64,
}

/// Decodes a `Produce` v3 response.
pub fn decode_produce(body: &[u8]) -> Result<Vec<Produced>, Malformed> {
    let mut r = Reader::new(body);
    let topics = r.array("produce topics", |r| {
        let topic = r.str("topic")?;
        r.array("produce partitions", |r| {
            let partition = r.i32("partition")?;
            let error = r.i16("error")?;
            let base_offset = r.i64("base offset")?;
            r.i64("log append time")?;
            Ok(Produced {
                topic: topic.clone(),
                partition,
                error,
                base_offset,
            })
        })
    })?;
    Ok(topics.into_iter().flatten().collect())
}

/// A partition to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPosition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset to fetch from.
    pub offset: i64,
}

/// Encodes a `Fetch` v4 request (read committed is not needed: read uncommitted).
pub fn encode_fetch(positions: &[FetchPosition], max_wait_ms: i32, max_bytes: i32) -> Vec<u8> {
    let mut w = Writer::default();
    w.i32(-1).i32(max_wait_ms).i32(1).i32(max_bytes).i8(0);
    let topics = group_by_topic(positions.iter().map(|p| (p.topic.as_str(), p)));
    w.len(topics.len());
    for (topic, parts) in topics {
        w.str(topic).len(parts.len());
        for p in parts {
            w.i32(p.partition).i64(p.offset).i32(max_bytes);
        }
    }
    w.0
}

/// One partition's answer in a fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<'a> {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The error code.
    pub error: i16,
    /// The record batches (still encoded).
    pub records: &'a [u8],
}

/// Decodes a `Fetch` v4 response.
pub fn decode_fetch(body: &[u8]) -> Result<Vec<Fetched<'_>>, Malformed> {
    let mut r = Reader::new(body);
    r.i32("throttle")?;
    let topics = r.array("fetch topics", |r| {
        let topic = r.str("topic")?;
        r.array("fetch partitions", |r| {
            let partition = r.i32("partition")?;
            let error = r.i16("error")?;
            r.i64("high watermark")?;
            r.i64("last stable offset")?;
            r.array("aborted transactions", |r| {
                r.i64("producer id")?;
                r.i64("first offset")
            })?;
            let records = r.bytes("records")?.unwrap_or_default();
            Ok(Fetched {
                topic: topic.clone(),
                partition,
                error,
                records,
            })
        })
    })?;
    Ok(topics.into_iter().flatten().collect())
}

/// Encodes a `ListOffsets` v1 request: `timestamp` -2 is the earliest offset, -1 the
/// latest.
pub fn encode_list_offsets(partitions: &[(String, i32)], timestamp: i64) -> Vec<u8> {
    let mut w = Writer::default();
    w.i32(-1);
    let topics = group_by_topic(partitions.iter().map(|(t, p)| (t.as_str(), *p)));
    w.len(topics.len());
    for (topic, parts) in topics {
        w.str(topic).len(parts.len());
        for p in parts {
            w.i32(p).i64(timestamp);
        }
    }
    w.0
}

/// Decodes a `ListOffsets` v1 response: (topic, partition, error, offset).
pub fn decode_list_offsets(body: &[u8]) -> Result<Vec<(String, i32, i16, i64)>, Malformed> {
    let mut r = Reader::new(body);
    let topics = r.array("offset topics", |r| {
        let topic = r.str("topic")?;
        r.array("offset partitions", |r| {
            let partition = r.i32("partition")?;
            let error = r.i16("error")?;
            r.i64("timestamp")?;
            let offset = r.i64("offset")?;
            Ok((topic.clone(), partition, error, offset))
        })
    })?;
    Ok(topics.into_iter().flatten().collect())
}

/// Encodes a `FindCoordinator` v1 request for a group.
pub fn encode_find_coordinator(group: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(group).i8(0);
    w.0
}

/// Decodes a `FindCoordinator` v1 response: error and the coordinator.
pub fn decode_find_coordinator(body: &[u8]) -> Result<(i16, Broker), Malformed> {
    let mut r = Reader::new(body);
    r.i32("throttle")?;
    let error = r.i16("error")?;
    r.nstr("error message")?;
    let node_id = r.i32("node id")?;
    let host = r.str("host")?;
    let port = r.i32("port")?;
    Ok((
        error,
        Broker {
            node_id,
            address: format!("{host}:{port}"),
        },
    ))
}

/// Encodes the consumer protocol's subscription (v0): the topics a member wants.
pub fn encode_subscription(topics: &[String]) -> Vec<u8> {
    let mut w = Writer::default();
    w.i16(0).len(topics.len());
    for t in topics {
        w.str(t);
    }
    w.bytes(None);
    w.0
}

/// Decodes a member's subscription: its topics.
pub fn decode_subscription(data: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut r = Reader::new(data);
    r.i16("subscription version")?;
    r.array("subscribed topics", |r| r.str("topic"))
}

/// Encodes the consumer protocol's assignment (v0).
pub fn encode_assignment(partitions: &[(String, Vec<i32>)]) -> Vec<u8> {
    let mut w = Writer::default();
    w.i16(0).len(partitions.len());
    for (topic, parts) in partitions {
        w.str(topic).len(parts.len());
        for p in parts {
            w.i32(*p);
        }
    }
    w.bytes(None);
    w.0
}

/// Decodes an assignment: (topic, partition) pairs. An empty buffer is no assignment.
pub fn decode_assignment(data: &[u8]) -> Result<Vec<(String, i32)>, Malformed> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(data);
    r.i16("assignment version")?;
    let topics = r.array("assigned topics", |r| {
        let topic = r.str("topic")?;
        let parts = r.array("assigned partitions", |r| r.i32("partition"))?;
        Ok(parts.into_iter().map(move |p| (topic.clone(), p)))
    })?;
    Ok(topics.into_iter().flatten().collect())
}

/// The group protocol (partition assignor) this adapter runs as the group leader.
pub const ASSIGNOR: &str = "range";

/// Encodes a `JoinGroup` v2 request.
pub fn encode_join_group(
    group: &str,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    member_id: &str,
    topics: &[String],
) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(group)
        .i32(session_timeout_ms)
        .i32(rebalance_timeout_ms)
        .str(member_id)
        .str("consumer")
        .len(1)
        .str(ASSIGNOR)
        .bytes(Some(&encode_subscription(topics)));
    w.0
}

/// A `JoinGroup` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The error code.
    pub error: i16,
    /// The new generation.
    pub generation: i32,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// The members and their subscription metadata (the leader only).
    pub members: Vec<(String, Vec<u8>)>,
}

/// Decodes a `JoinGroup` v2 response.
pub fn decode_join_group(body: &[u8]) -> Result<Joined, Malformed> {
    let mut r = Reader::new(body);
    r.i32("throttle")?;
    let error = r.i16("error")?;
    let generation = r.i32("generation")?;
    r.str("protocol")?;
    let leader = r.str("leader")?;
    let member_id = r.str("member id")?;
    let members = r.array("members", |r| {
        let id = r.str("member id")?;
        let meta = r.bytes("member metadata")?.unwrap_or_default().to_vec();
        Ok((id, meta))
    })?;
    Ok(Joined {
        error,
        generation,
        leader,
        member_id,
        members,
    })
}

/// Encodes a `SyncGroup` v1 request (the leader sends the assignments).
pub fn encode_sync_group(
    group: &str,
    generation: i32,
    member_id: &str,
    assignments: &[(String, Vec<u8>)],
) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(group)
        .i32(generation)
        .str(member_id)
        .len(assignments.len());
    for (member, assignment) in assignments {
        w.str(member).bytes(Some(assignment));
    }
    w.0
}

/// Decodes a `SyncGroup` v1 response: error and this member's assignment.
pub fn decode_sync_group(body: &[u8]) -> Result<(i16, Vec<u8>), Malformed> {
    let mut r = Reader::new(body);
    r.i32("throttle")?;
    let error = r.i16("error")?;
    let assignment = r.bytes("assignment")?.unwrap_or_default().to_vec();
    Ok((error, assignment))
}

/// Encodes a `Heartbeat` v1 request.
pub fn encode_heartbeat(group: &str, generation: i32, member_id: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(group).i32(generation).str(member_id);
    w.0
}

/// Encodes a `LeaveGroup` v1 request.
pub fn encode_leave_group(group: &str, member_id: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(group).str(member_id);
    w.0
}

/// Decodes a `Heartbeat` v1 or `LeaveGroup` v1 response: its error code.
pub fn decode_error_only(body: &[u8]) -> Result<i16, Malformed> {
    let mut r = Reader::new(body);
    r.i32("throttle")?;
    r.i16("error")
}

/// Encodes an `OffsetCommit` v2 request: the next offset to read per partition.
pub fn encode_offset_commit(
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &[(String, i32, i64)],
) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(group).i32(generation).str(member_id).i64(-1);
    let topics = group_by_topic(offsets.iter().map(|(t, p, o)| (t.as_str(), (*p, *o))));
    w.len(topics.len());
    for (topic, parts) in topics {
        w.str(topic).len(parts.len());
        for (p, o) in parts {
            w.i32(p).i64(o).nstr(None);
        }
    }
    w.0
}

/// Decodes an `OffsetCommit` v2 response: the first error code, if any.
pub fn decode_offset_commit(body: &[u8]) -> Result<i16, Malformed> {
    let mut r = Reader::new(body);
    let errors = r.array("commit topics", |r| {
        r.str("topic")?;
        r.array("commit partitions", |r| {
            r.i32("partition")?;
            r.i16("error")
        })
    })?;
    Ok(errors.into_iter().flatten().find(|e| *e != 0).unwrap_or(0))
}

/// Encodes an `OffsetFetch` v1 request.
pub fn encode_offset_fetch(group: &str, partitions: &[(String, i32)]) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(group);
    let topics = group_by_topic(partitions.iter().map(|(t, p)| (t.as_str(), *p)));
    w.len(topics.len());
    for (topic, parts) in topics {
        w.str(topic).len(parts.len());
        for p in parts {
            w.i32(p);
        }
    }
    w.0
}

/// Decodes an `OffsetFetch` v1 response: (topic, partition, committed offset or -1,
/// error).
pub fn decode_offset_fetch(body: &[u8]) -> Result<Vec<(String, i32, i64, i16)>, Malformed> {
    let mut r = Reader::new(body);
    let topics = r.array("committed topics", |r| {
        let topic = r.str("topic")?;
        r.array("committed partitions", |r| {
            let partition = r.i32("partition")?;
            let offset = r.i64("offset")?;
            r.nstr("metadata")?;
            let error = r.i16("error")?;
            Ok((topic.clone(), partition, offset, error))
        })
    })?;
    Ok(topics.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_header() {
        let f = frame(METADATA, 7, "cli", &[9]);
        assert_eq!(
            f,
            [0, 0, 0, 14, 0, 3, 0, 4, 0, 0, 0, 7, 0, 3, b'c', b'l', b'i', 9]
        );
        assert_eq!(frame_size([0, 0, 0, 14]).unwrap(), 14);
        assert!(frame_size([0xff, 0, 0, 0]).is_err());
        assert!(frame_size([0, 0, 0, 1]).is_err());
        assert_eq!(response(&[0, 0, 0, 7, 1], false).unwrap(), (7, &[1u8][..]));
        assert!(response(&[0, 0], false).is_err());
        // Header v1: one tagged field (tag 3, 2 bytes) before the body.
        assert_eq!(
            response(&[0, 0, 0, 7, 1, 3, 2, 9, 9, 5], true).unwrap(),
            (7, &[5u8][..])
        );
        assert!(response(&[0, 0, 0, 7, 1, 3, 9, 9], true).is_err());
    }

    #[test]
    fn sasl_requests_and_responses() {
        // Key and version, after the size.
        assert_eq!(frame(SASL_HANDSHAKE, 1, "c", &[])[4..8], [0, 17, 0, 1]);
        assert_eq!(frame(SASL_AUTHENTICATE, 1, "c", &[])[4..8], [0, 36, 0, 1]);
        assert_eq!(encode_sasl_handshake("PLAIN"), b"\0\x05PLAIN");
        let mut w = Writer::default();
        w.i16(0).i32(2).str("SCRAM-SHA-256").str("SCRAM-SHA-512");
        assert_eq!(
            decode_sasl_handshake(&w.0).unwrap(),
            (0, vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()])
        );
        assert_eq!(encode_sasl_authenticate(b"hi"), [0, 0, 0, 2, b'h', b'i']);
        let mut w = Writer::default();
        w.i16(58).nstr(Some("bad proof")).bytes(None).i64(0);
        assert_eq!(
            decode_sasl_authenticate(&w.0).unwrap(),
            SaslAuthenticated {
                error: 58,
                message: Some("bad proof".into()),
                auth_bytes: vec![],
            }
        );
        assert!(decode_sasl_authenticate(&[0]).is_err());
        assert!(code::is_denied(code::SASL_AUTHENTICATION_FAILED));
    }

    #[test]
    fn version_checks_name_the_api() {
        let ranges = [
            VersionRange {
                key: 0,
                min: 0,
                max: 2,
            },
            VersionRange {
                key: 1,
                min: 4,
                max: 16,
            },
        ];
        let e = check_versions(&ranges, &[FETCH, PRODUCE]).unwrap_err();
        assert!(e.contains("Produce v0-v2") && e.contains("too old"), "{e}");
        let e = check_versions(&ranges, &[METADATA]).unwrap_err();
        assert!(e.contains("does not offer the Metadata API"), "{e}");
        assert!(supports(&ranges, FETCH));
    }

    #[test]
    fn assignments_and_subscriptions_round_trip() {
        let topics = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            decode_subscription(&encode_subscription(&topics)).unwrap(),
            topics
        );
        let a = encode_assignment(&[("a".into(), vec![0, 2]), ("b".into(), vec![1])]);
        assert_eq!(
            decode_assignment(&a).unwrap(),
            [("a".into(), 0), ("a".into(), 2), ("b".into(), 1)]
        );
        assert!(decode_assignment(&[]).unwrap().is_empty());
    }

    #[test]
    fn metadata_decodes() {
        let mut w = Writer::default();
        w.i32(0).len(1).i32(1).str("127.0.0.1").i32(9092).nstr(None);
        w.nstr(Some("c")).i32(1).len(1);
        w.i16(0).str("t").i8(0).len(2);
        for p in [1, 0] {
            w.i16(0).i32(p).i32(1).len(1).i32(1).len(1).i32(1);
        }
        let m = decode_metadata(&w.0).unwrap();
        assert_eq!(m.brokers[0].address, "127.0.0.1:9092");
        assert_eq!(m.topics[0].partitions[0].index, 0);
        assert_eq!(m.topics[0].partitions[1].leader, 1);
    }

    /// Every response decoder, for the garbage test.
    fn decode_all(body: &[u8]) {
        let _ = decode_api_versions(body);
        let _ = decode_metadata(body);
        let _ = decode_init_producer_id(body);
        let _ = decode_produce(body);
        let _ = decode_fetch(body);
        let _ = decode_list_offsets(body);
        let _ = decode_find_coordinator(body);
        let _ = decode_subscription(body);
        let _ = decode_assignment(body);
        let _ = decode_join_group(body);
        let _ = decode_sync_group(body);
        let _ = decode_error_only(body);
        let _ = decode_offset_commit(body);
        let _ = decode_offset_fetch(body);
        let _ = response(body, false);
        let _ = response(body, true);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = [
            encode_assignment(&[("topic".into(), vec![0, 1, 2])]),
            encode_join_group("g", 1, 2, "m", &["t".into()]),
            encode_offset_commit("g", 1, "m", &[("t".into(), 0, 5)]),
        ];
        for round in 0..5_000 {
            let body: Vec<u8> = if round % 2 == 0 {
                let n = (next() % 80) as usize;
                (0..n).map(|_| next() as u8).collect()
            } else {
                let mut v = valid[round % valid.len()].clone();
                let at = next() as usize % v.len();
                v[at] = next() as u8;
                v.truncate(next() as usize % (v.len() + 1));
                v
            };
            decode_all(&body);
        }
    }

    #[test]
    fn the_apis_are_distinct_and_flexible_only_when_marked() {
        let mut keys: Vec<i16> = REQUIRED.iter().map(|a| a.key).collect();
        keys.extend([API_VERSIONS.key, INIT_PRODUCER_ID.key]);
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), REQUIRED.len() + 2);
        // The last non-flexible version of each (the header and encodings here are the
        // pre-KIP-482 ones).
        for (api, last_plain) in [
            (PRODUCE, 8),
            (FETCH, 11),
            (LIST_OFFSETS, 5),
            (METADATA, 8),
            (OFFSET_COMMIT, 7),
            (OFFSET_FETCH, 5),
            (FIND_COORDINATOR, 2),
            (JOIN_GROUP, 5),
            (HEARTBEAT, 3),
            (LEAVE_GROUP, 3),
            (SYNC_GROUP, 3),
            (API_VERSIONS, 2),
            (INIT_PRODUCER_ID, 1),
        ] {
            assert_eq!(api.flexible, api.version > last_plain, "{}", api.name);
        }
    }

    #[test]
    fn requests_encode_their_fields_in_order() {
        let mut r;
        let metadata = encode_metadata(&["t".into()]);
        assert_eq!(metadata, [0, 0, 0, 1, 0, 1, b't', 1]);
        let init = encode_init_producer_id();
        assert_eq!(init[..5], [0, 0, 0, 0xea, 0x60]);
        assert_eq!(init.len(), 1 + 4 + 8 + 2 + 1);
        let produce = encode_produce(
            &[
                PartitionBatch {
                    topic: "t".into(),
                    partition: 1,
                    batch: vec![7],
                },
                PartitionBatch {
                    topic: "t".into(),
                    partition: 2,
                    batch: vec![8],
                },
            ],
            500,
        );
        r = Reader::new(&produce);
        assert_eq!(r.nstr("txn").unwrap(), None);
        assert_eq!(r.i16("acks").unwrap(), -1, "acks=all");
        assert_eq!(r.i32("timeout").unwrap(), 500);
        let parts = r
            .array("topics", |r| {
                r.str("topic")?;
                r.array("partitions", |r| {
                    Ok((r.i32("p")?, r.bytes("b")?.unwrap().to_vec()))
                })
            })
            .unwrap();
        assert_eq!(parts, [vec![(1, vec![7]), (2, vec![8])]]);
        let fetch = encode_fetch(
            &[FetchPosition {
                topic: "t".into(),
                partition: 0,
                offset: 9,
            }],
            100,
            1000,
        );
        r = Reader::new(&fetch);
        assert_eq!(r.i32("replica").unwrap(), -1);
        assert_eq!(r.i32("wait").unwrap(), 100);
        r.take(4 + 4 + 1 + 4, "min, max, isolation, count").unwrap();
        assert_eq!(r.str("topic").unwrap(), "t");
        r.take(4 + 4, "count, partition").unwrap();
        assert_eq!(r.i64("offset").unwrap(), 9);
        let list = encode_list_offsets(&[("t".into(), 2)], -2);
        assert_eq!(
            &list[list.len() - 12..],
            [0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
        assert_eq!(encode_find_coordinator("g"), [0, 1, b'g', 0]);
        let sync = encode_sync_group("g", 3, "m", &[("m".into(), vec![1])]);
        assert_eq!(
            sync,
            [0, 1, b'g', 0, 0, 0, 3, 0, 1, b'm', 0, 0, 0, 1, 0, 1, b'm', 0, 0, 0, 1, 1]
        );
        assert_eq!(
            encode_heartbeat("g", 3, "m"),
            [0, 1, b'g', 0, 0, 0, 3, 0, 1, b'm']
        );
        assert_eq!(encode_leave_group("g", "m"), [0, 1, b'g', 0, 1, b'm']);
        assert_eq!(
            encode_offset_fetch("g", &[("t".into(), 0), ("t".into(), 1)]),
            [0, 1, b'g', 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn error_codes_are_named_and_classified() {
        for c in [
            code::UNKNOWN_TOPIC_OR_PARTITION,
            code::LEADER_NOT_AVAILABLE,
            code::NOT_LEADER_OR_FOLLOWER,
            code::REQUEST_TIMED_OUT,
            code::COORDINATOR_LOAD_IN_PROGRESS,
            code::COORDINATOR_NOT_AVAILABLE,
            code::NOT_COORDINATOR,
            code::NOT_ENOUGH_REPLICAS,
            code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            code::NOT_CONTROLLER,
        ] {
            assert!(code::is_retriable(c), "{}", code::name(c));
        }
        for c in [
            code::OFFSET_OUT_OF_RANGE,
            code::MESSAGE_TOO_LARGE,
            code::RECORD_LIST_TOO_LARGE,
            code::ILLEGAL_GENERATION,
            code::UNKNOWN_MEMBER_ID,
            code::REBALANCE_IN_PROGRESS,
            code::DUPLICATE_SEQUENCE_NUMBER,
            code::MEMBER_ID_REQUIRED,
        ] {
            assert!(!code::is_retriable(c), "{}", code::name(c));
            assert_ne!(code::name(c), "an error");
        }
        assert!(code::is_denied(29) && !code::is_denied(0));
        assert_eq!(code::name(999), "an error");
    }
}
