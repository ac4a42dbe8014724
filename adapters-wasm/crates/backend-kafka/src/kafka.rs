//! The [`Backend`] over a Kafka cluster: one connection per broker, a producer and a
//! consumer group member.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    log, Backend, Backoff, ConfirmWindow, Deliveries, DeliveryId, Error, Event, Lease, MessageData,
    RequestOptions, Settings, Window,
};

use crate::compression;
use crate::config::{check_topic, Config, OffsetReset, TLS_SCHEME};
use crate::conn::Conn;
use crate::group::{assign_range, Partition, Progress};
use crate::headers;
use crate::protocol::{self, code, Api, ClusterMetadata, FetchPosition, PartitionBatch};
use crate::records::{self, ProducerId, Record};
use crate::sasl::{Mechanism, Sasl, Scram};

/// The Kafka backend's component type.
type Component = common::Adapter<Kafka>;
common::export!(Component);

/// How long an ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the broker may wait for the in-sync replicas of a produce (`acks=all`).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// The longest a fetch waits for records on the broker.
const FETCH_WAIT_MS: i32 = 500;

/// The most bytes one fetch asks for (per partition and in all).
const FETCH_MAX_BYTES: i32 = 4 << 20;

/// Handled offsets are committed at least this often while consuming.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// The pauses between tries of an operation that fails transiently (a lost broker, a
/// leader moving): 100 ms doubling to 5 s, about 16 s in all, so that a send fails with
/// `connection` well within half a minute of the brokers going away.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).tries(9);

/// The longest pause before a failed record is retried.
const MAX_RECORD_BACKOFF: Duration = Duration::from_secs(30);

/// With the run wrapper, a window of sends is produced before its records would pass this
/// many bytes (keys, values and headers, plus [`RECORD_OVERHEAD`] each), so that one
/// partition's batch stays within a broker's default `message.max.bytes` (1 MiB).
const WINDOW_BYTES: usize = 1_000_000;

/// What a record adds to a batch besides its key, value and headers (its length, attributes,
/// deltas and header counts as varints), at most.
const RECORD_OVERHEAD: usize = 24;

/// What to do about a handler that outlives the group session.
const SESSION_REMEDY: &str = "set --option session_timeout_ms above the handler's longest run (within the broker's group.max.session.timeout.ms), or have the handler send more often (each send heartbeats)";

/// What a fetch found: per partition, its records or its error code.
type Fetched = Vec<(Partition, Result<Vec<Record>, i16>)>;

/// The consumer group membership of this instance.
struct Member {
    /// The generation it joined.
    generation: i32,
    /// Its member id.
    id: String,
}

/// The state of the Kafka backend.
pub struct Kafka {
    /// Where to connect, what to consume.
    config: Config,
    /// Open connections by `host:port`.
    conns: HashMap<String, Conn>,
    /// Broker addresses by node id (from the metadata).
    brokers: HashMap<i32, String>,
    /// Partition leaders (node ids) per topic, by partition number.
    leaders: HashMap<String, Vec<i32>>,
    /// The idempotent producer's id, when the broker offers one.
    producer: Option<ProducerId>,
    /// Whether to ask for a producer id (false when the broker has no `InitProducerId`).
    idempotent: bool,
    /// The next sequence number per partition (idempotent producer).
    sequences: HashMap<Partition, i32>,
    /// True between a delivery and the driver's `flush`: sends are batched.
    in_handler: bool,
    /// Records sent inside a handler, waiting for `flush`; with the run wrapper, also the
    /// open window of sends outside a handler.
    unsent: Vec<(String, Record)>,
    /// The bytes of the records in `unsent` (see [`WINDOW_BYTES`]).
    unsent_bytes: usize,
    /// With the run wrapper: the window of sends outside a handler not yet produced.
    window: Option<Window>,
    /// The partition of the next record without a key, per topic (round robin).
    round_robin: HashMap<String, usize>,
    /// The group coordinator's `host:port`.
    coordinator: Option<String>,
    /// The group membership, once joined.
    member: Option<Member>,
    /// The member id the coordinator gave (kept across rejoins).
    member_id: String,
    /// True when the coordinator asked for a rejoin (noticed inside a handler).
    rejoin: bool,
    /// The assigned partitions and the offset to fetch next in each.
    positions: Vec<(Partition, i64)>,
    /// Partitions whose failed record waits until the instant given.
    paused: HashMap<Partition, Instant>,
    /// The retry backoff of partitions with a failing record.
    backoffs: HashMap<Partition, Backoff>,
    /// Fetched records not yet delivered.
    buffered: VecDeque<(Partition, Record)>,
    /// Delivered and handled offsets: what may be committed.
    progress: Progress,
    /// Unsettled deliveries: the partition and offset of each.
    deliveries: Deliveries<(Partition, i64)>,
    /// When the last heartbeat went out.
    last_heartbeat: Instant,
    /// When handled offsets were last committed.
    last_commit: Instant,
    /// True once the assignment was logged the first time.
    announced: bool,
    /// The topic this instance's requests get their replies on (made on the first request).
    reply_topic: Option<String>,
    /// The correlation id of the delivery being handled, for its replies.
    correlation: Option<String>,
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The bytes `record` adds to a batch, about (see [`WINDOW_BYTES`]).
fn record_size(record: &Record) -> usize {
    let len = |bytes: &Option<Vec<u8>>| bytes.as_ref().map_or(0, Vec::len);
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    len(&record.key) + len(&record.value) + headers + RECORD_OVERHEAD
}

/// Words a Kafka error code of an operation.
fn kafka_error(what: &str, error: i16) -> Error {
    let text = format!("{what}: {} ({error})", code::name(error));
    if code::is_denied(error) {
        Error::PermissionDenied(text)
    } else if code::is_retriable(error) {
        Error::connection(text)
    } else {
        Error::other(text)
    }
}

/// Authenticates `conn` with SASL: `SaslHandshake` names the mechanism, then the
/// messages of the exchange travel in `SaslAuthenticate` requests.
fn authenticate(conn: &mut Conn, sasl: &Sasl, address: &str, client_id: &str) -> Result<(), Error> {
    let mechanism = sasl.mechanism.name();
    let body = conn.request(
        protocol::SASL_HANDSHAKE,
        client_id,
        &protocol::encode_sasl_handshake(mechanism),
        REQUEST_TIMEOUT,
    )?;
    let (error, offered) = protocol::decode_sasl_handshake(&body).map_err(malformed)?;
    if error == code::UNSUPPORTED_SASL_MECHANISM && offered.iter().any(|m| m == mechanism) {
        return Err(Error::other(format!(
            "Kafka broker {address} refused SASL {mechanism} although it lists it: SASL is not enabled on its listener (leave KAFKA_USERNAME and KAFKA_PASSWORD unset for it)"
        )));
    }
    if error == code::UNSUPPORTED_SASL_MECHANISM {
        return Err(Error::other(format!(
            "Kafka broker {address} does not offer SASL {mechanism} (it offers {}): set --option sasl_mechanism to one of them",
            offered.join(", ")
        )));
    }
    if error != 0 {
        return Err(kafka_error(&format!("SaslHandshake with {address}"), error));
    }
    let what = format!(
        "SASL {mechanism} authentication as `{}` with {address}",
        sasl.username
    );
    let mut exchange = |message: &[u8]| -> Result<Vec<u8>, Error> {
        let body = conn.request(
            protocol::SASL_AUTHENTICATE,
            client_id,
            &protocol::encode_sasl_authenticate(message),
            REQUEST_TIMEOUT,
        )?;
        let answer = protocol::decode_sasl_authenticate(&body).map_err(malformed)?;
        if answer.error != 0 {
            let error = kafka_error(&what, answer.error);
            return Err(match (error, answer.message) {
                (Error::PermissionDenied(text), Some(words)) => {
                    Error::PermissionDenied(format!("{text}: {words}"))
                }
                (error, _) => error,
            });
        }
        Ok(answer.auth_bytes)
    };
    let refused = |why: String| Error::PermissionDenied(format!("{what}: {why}"));
    match sasl.mechanism {
        Mechanism::Plain => exchange(&sasl.plain_message()).map(drop),
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let mut scram = Scram::new(sasl, &common::random_id());
            let server_first = exchange(&scram.client_first())?;
            let client_final = scram.client_final(&server_first).map_err(refused)?;
            let server_final = exchange(&client_final)?;
            scram.verify_server_final(&server_final).map_err(refused)
        }
    }
}

/// Words malformed data from a broker.
fn malformed(e: crate::wire::Malformed) -> Error {
    Error::connection(e.to_string())
}

impl Kafka {
    /// Sends a request to the broker at `address` (connecting first when needed); a
    /// failure drops the connection.
    fn call(
        &mut self,
        address: &str,
        api: Api,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        if !self.conns.contains_key(address) {
            let conn = self.handshake(address)?;
            self.conns.insert(address.to_string(), conn);
        }
        let conn = self.conns.get_mut(address).expect("connected above");
        let result = conn.request(api, &self.config.client_id, body, timeout);
        if result.is_err() {
            self.conns.remove(address);
        }
        result
    }

    /// Connects to `address` (over TLS for `kafka+ssl://`) and checks that it speaks the
    /// versions this adapter needs.
    fn handshake(&mut self, address: &str) -> Result<Conn, Error> {
        let tls = self.config.tls.as_ref();
        let mut conn = Conn::open(address, tls)?;
        let body = conn
            .request(
                protocol::API_VERSIONS,
                &self.config.client_id,
                &[],
                REQUEST_TIMEOUT,
            )
            .map_err(|e| match tls {
                // A TLS listener drops (or alerts) a client whose first bytes are no handshake.
                None => transport::plaintext_broke_before(
                    "answering ApiVersions",
                    &format!("Kafka broker {address}"),
                    TLS_SCHEME,
                    e,
                ),
                Some(_) => e,
            })?;
        let (error, ranges) = protocol::decode_api_versions(&body).map_err(malformed)?;
        if error != 0 {
            return Err(kafka_error(&format!("ApiVersions from {address}"), error));
        }
        protocol::check_versions(&ranges, &protocol::REQUIRED)
            .map_err(|e| Error::other(format!("Kafka broker {address}: {e}")))?;
        self.idempotent &= protocol::supports(&ranges, protocol::INIT_PRODUCER_ID);
        if let Some(sasl) = &self.config.sasl {
            protocol::check_versions(
                &ranges,
                &[protocol::SASL_HANDSHAKE, protocol::SASL_AUTHENTICATE],
            )
            .map_err(|e| {
                Error::other(format!("Kafka broker {address} cannot authenticate: {e}"))
            })?;
            authenticate(&mut conn, sasl, address, &self.config.client_id)?;
        }
        Ok(conn)
    }

    /// Any broker to ask about the cluster: a known one, else the bootstrap list.
    fn any_broker(&mut self) -> Result<String, Error> {
        let mut candidates: Vec<String> = self.conns.keys().cloned().collect();
        candidates.extend(self.brokers.values().cloned());
        candidates.extend(self.config.bootstrap.iter().cloned());
        let mut last = None;
        for address in candidates {
            if self.conns.contains_key(&address) {
                return Ok(address);
            }
            match self.handshake(&address) {
                Ok(conn) => {
                    self.conns.insert(address.clone(), conn);
                    return Ok(address);
                }
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::connection("no Kafka broker to connect to")))
    }

    /// Asks for the metadata of `topics` and remembers brokers and leaders.
    fn refresh_metadata(&mut self, topics: &[String]) -> Result<ClusterMetadata, Error> {
        let address = self.any_broker()?;
        let body = self.call(
            &address,
            protocol::METADATA,
            &protocol::encode_metadata(topics),
            REQUEST_TIMEOUT,
        )?;
        let metadata = protocol::decode_metadata(&body).map_err(malformed)?;
        for b in &metadata.brokers {
            self.brokers.insert(b.node_id, b.address.clone());
        }
        for t in &metadata.topics {
            if t.error == 0 && !t.partitions.is_empty() {
                self.leaders.insert(
                    t.name.clone(),
                    t.partitions.iter().map(|p| p.leader).collect(),
                );
            } else {
                self.leaders.remove(&t.name);
            }
        }
        Ok(metadata)
    }

    /// The partition leaders of `topic`, asking the cluster when unknown.
    fn leaders_of(&mut self, topic: &str) -> Result<Vec<i32>, Error> {
        if let Some(l) = self.leaders.get(topic) {
            return Ok(l.clone());
        }
        let metadata = self.refresh_metadata(&[topic.to_string()])?;
        match (
            self.leaders.get(topic),
            metadata.topics.iter().find(|t| t.name == topic),
        ) {
            (Some(l), _) => Ok(l.clone()),
            (None, Some(t)) if t.error != 0 => {
                Err(kafka_error(&format!("topic `{topic}`"), t.error))
            }
            _ => Err(Error::connection(format!(
                "topic `{topic}` has no partitions yet"
            ))),
        }
    }

    /// The address of node `id`.
    fn broker(&self, id: i32) -> Result<String, Error> {
        self.brokers.get(&id).cloned().ok_or_else(|| {
            Error::connection(format!(
                "partition leader {id} is not in the metadata (no leader?)"
            ))
        })
    }

    /// Runs `op`, retrying transient failures with [`RETRY`] after forgetting the
    /// metadata (leaders move, brokers restart).
    fn retrying<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut backoff = RETRY;
        loop {
            match op(self) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() => match backoff.failed() {
                    Some(pause) => {
                        log(
                            Self::NAME,
                            &format!("{what}: {e}; retrying in {} ms", pause.as_millis()),
                        );
                        self.leaders.clear();
                        std::thread::sleep(pause);
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    // ----- producing -----

    /// Picks the partition of `record` on `topic`: murmur2 of the key, else round robin.
    fn partition_for(&mut self, topic: &str, record: &Record, partitions: usize) -> i32 {
        match &record.key {
            Some(key) => records::partition_for_key(key, partitions) as i32,
            None => {
                let next = self.round_robin.entry(topic.to_string()).or_default();
                *next = next.wrapping_add(1);
                (*next % partitions) as i32
            }
        }
    }

    /// Asks for an idempotent producer id once, when the broker offers it.
    fn ensure_producer_id(&mut self) -> Result<(), Error> {
        if self.producer.is_some() || !self.idempotent {
            return Ok(());
        }
        let address = self.any_broker()?;
        if !self.idempotent {
            return Ok(());
        }
        let body = self.call(
            &address,
            protocol::INIT_PRODUCER_ID,
            &protocol::encode_init_producer_id(),
            REQUEST_TIMEOUT,
        )?;
        let (error, id, epoch) = protocol::decode_init_producer_id(&body).map_err(malformed)?;
        if error != 0 {
            log(
                Self::NAME,
                &format!(
                    "the broker gave no producer id ({}); producing without idempotence",
                    code::name(error)
                ),
            );
            self.idempotent = false;
            return Ok(());
        }
        self.producer = Some(ProducerId { id, epoch });
        self.sequences.clear();
        Ok(())
    }

    /// Produces `records` (topic, record) with `acks=all` and waits until every one is
    /// written; transient failures are retried.
    fn produce(&mut self, records: Vec<(String, Record)>) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        // Partitions are chosen once, so a retry writes the same batches.
        let mut placed: Vec<(Partition, Vec<Record>)> = Vec::new();
        for (topic, record) in records {
            check_topic(&topic).map_err(Error::other)?;
            let partitions = self.retrying("metadata", |s| s.leaders_of(&topic))?.len();
            let partition = (
                topic.clone(),
                self.partition_for(&topic, &record, partitions),
            );
            match placed.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, v)) => v.push(record),
                None => placed.push((partition, vec![record])),
            }
        }
        self.retrying("produce", |s| s.produce_once(&mut placed))
    }

    /// Produces the open window of sends (run wrapper) and closes it with the result,
    /// which is returned (saying how many records the window held).
    fn produce_window(&mut self) -> Result<(), Error> {
        let produced = self.produce_unsent();
        match self.window.as_mut() {
            Some(window) => window.confirmed(produced),
            None => produced,
        }
    }

    /// Produces the sends held for the open window; the result says how many records it
    /// held and is not yet recorded in the window (the final flush hands it to
    /// `Window::finish`, which records it once).
    fn produce_unsent(&mut self) -> Result<(), Error> {
        let records = std::mem::take(&mut self.unsent);
        self.unsent_bytes = 0;
        let count = records.len();
        let window_failed = |text: String| format!("producing {count} sent record(s): {text}");
        self.produce(records).map_err(|e| match e {
            Error::Timeout => Error::Connection(window_failed("timeout".into())),
            Error::Connection(text) => Error::Connection(window_failed(text)),
            Error::PermissionDenied(text) => Error::PermissionDenied(window_failed(text)),
            Error::Other(text) => Error::Other(window_failed(text)),
        })
    }

    /// One try at writing `placed`; the partitions written are removed from it.
    fn produce_once(&mut self, placed: &mut Vec<(Partition, Vec<Record>)>) -> Result<(), Error> {
        self.ensure_producer_id()?;
        let mut by_leader: Vec<(String, Vec<PartitionBatch>)> = Vec::new();
        for ((topic, partition), recs) in placed.iter() {
            let leader = self
                .leaders_of(topic)?
                .get(*partition as usize)
                .copied()
                .unwrap_or(-1);
            let address = self.broker(leader)?;
            let key = (topic.clone(), *partition);
            let producer = self
                .producer
                .map(|p| (p, *self.sequences.get(&key).unwrap_or(&0)));
            let batch = PartitionBatch {
                topic: topic.clone(),
                partition: *partition,
                batch: records::encode_batch(recs, producer, self.config.gzip),
            };
            match by_leader.iter_mut().find(|(a, _)| *a == address) {
                Some((_, v)) => v.push(batch),
                None => by_leader.push((address, vec![batch])),
            }
        }
        let mut failure = None;
        for (address, batches) in by_leader {
            let body = self.call(
                &address,
                protocol::PRODUCE,
                &protocol::encode_produce(&batches, PRODUCE_TIMEOUT_MS),
                REQUEST_TIMEOUT,
            )?;
            for answer in protocol::decode_produce(&body).map_err(malformed)? {
                let key = (answer.topic.clone(), answer.partition);
                let Some(at) = placed.iter().position(|(p, _)| *p == key) else {
                    continue;
                };
                match answer.error {
                    0 | code::DUPLICATE_SEQUENCE_NUMBER => {
                        let (_, recs) = placed.remove(at);
                        *self.sequences.entry(key).or_default() += recs.len() as i32;
                    }
                    code::MESSAGE_TOO_LARGE | code::RECORD_LIST_TOO_LARGE => {
                        let size = placed[at]
                            .1
                            .iter()
                            .map(|r| r.value.as_ref().map_or(0, Vec::len))
                            .max()
                            .unwrap_or(0);
                        return Err(Error::other(format!(
                            "a record of {size} bytes for topic `{}` is larger than the broker accepts ({}; see the broker's message.max.bytes and the topic's max.message.bytes)",
                            key.0,
                            code::name(answer.error)
                        )));
                    }
                    // The broker forgot this producer (a restart): start a new one.
                    45 | 47 | 59 => {
                        self.producer = None;
                        failure = Some(kafka_error(
                            &format!("produce to {}/{}", key.0, key.1),
                            code::NOT_LEADER_OR_FOLLOWER,
                        ));
                    }
                    e => failure = Some(kafka_error(&format!("produce to {}/{}", key.0, key.1), e)),
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None if placed.is_empty() => Ok(()),
            None => Err(Error::connection(
                "the broker did not answer for every partition",
            )),
        }
    }

    // ----- consuming -----

    /// The group id, or the error that says one is needed.
    fn group(&self) -> Result<String, Error> {
        self.config.group.clone().ok_or_else(|| {
            Error::other(
                "consuming from Kafka needs a consumer group: compose with --queue-group GROUP-ID",
            )
        })
    }

    /// The coordinator's address, finding it when unknown.
    fn coordinator(&mut self) -> Result<String, Error> {
        if let Some(c) = &self.coordinator {
            return Ok(c.clone());
        }
        let group = self.group()?;
        let address = self.any_broker()?;
        let body = self.call(
            &address,
            protocol::FIND_COORDINATOR,
            &protocol::encode_find_coordinator(&group),
            REQUEST_TIMEOUT,
        )?;
        let (error, broker) = protocol::decode_find_coordinator(&body).map_err(malformed)?;
        if error != 0 {
            return Err(kafka_error(
                &format!("FindCoordinator for group `{group}`"),
                error,
            ));
        }
        self.brokers.insert(broker.node_id, broker.address.clone());
        self.coordinator = Some(broker.address.clone());
        Ok(broker.address)
    }

    /// Sends a request to the coordinator; a coordinator error makes it be found again.
    fn ask_coordinator(
        &mut self,
        api: Api,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let address = self.coordinator()?;
        let result = self.call(&address, api, body, timeout);
        if result.is_err() {
            self.coordinator = None;
        }
        result
    }

    /// Joins the group and takes the assignment: JoinGroup, SyncGroup (the leader runs
    /// the range assignor), then the committed offsets.
    fn join(&mut self) -> Result<(), Error> {
        let group = self.group()?;
        let session = self.config.session_timeout_ms;
        let rebalance = session.max(10_000);
        let timeout = Duration::from_millis(rebalance as u64) + REQUEST_TIMEOUT;
        let mut joined = self.join_group(&group, session, rebalance, timeout)?;
        if joined.error == code::MEMBER_ID_REQUIRED {
            self.member_id = joined.member_id.clone();
            joined = self.join_group(&group, session, rebalance, timeout)?;
        }
        match joined.error {
            0 => {}
            code::UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                return Err(kafka_error("JoinGroup", joined.error));
            }
            code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION => {
                return Err(kafka_error("JoinGroup", code::COORDINATOR_NOT_AVAILABLE))
            }
            e => {
                self.coordinator = None;
                return Err(kafka_error(&format!("JoinGroup `{group}`"), e));
            }
        }
        self.member_id = joined.member_id.clone();
        let assignments = if joined.leader == joined.member_id {
            self.run_assignor(&joined.members)?
        } else {
            Vec::new()
        };
        let body =
            protocol::encode_sync_group(&group, joined.generation, &joined.member_id, &assignments);
        let (error, assignment) = protocol::decode_sync_group(&self.ask_coordinator(
            protocol::SYNC_GROUP,
            &body,
            timeout,
        )?)
        .map_err(malformed)?;
        if error != 0 {
            return Err(kafka_error(
                "SyncGroup",
                if error == code::REBALANCE_IN_PROGRESS {
                    code::COORDINATOR_NOT_AVAILABLE
                } else {
                    error
                },
            ));
        }
        let assigned = protocol::decode_assignment(&assignment).map_err(malformed)?;
        self.member = Some(Member {
            generation: joined.generation,
            id: joined.member_id,
        });
        self.last_heartbeat = Instant::now();
        self.positions = self.starting_offsets(&group, &assigned)?;
        let text = assigned
            .iter()
            .map(|(t, p)| format!("{t}/{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        if !self.announced {
            log(
                Self::NAME,
                &format!(
                    "subscribed to {} in group {group} (generation {}, partitions: {text})",
                    self.config.topics.join(", "),
                    joined.generation
                ),
            );
            self.announced = true;
        } else {
            log(
                Self::NAME,
                &format!(
                    "rebalanced: generation {}, partitions: {text}",
                    joined.generation
                ),
            );
        }
        Ok(())
    }

    /// Sends one `JoinGroup` with the member id known so far.
    fn join_group(
        &mut self,
        group: &str,
        session: i32,
        rebalance: i32,
        timeout: Duration,
    ) -> Result<protocol::Joined, Error> {
        let body = protocol::encode_join_group(
            group,
            session,
            rebalance,
            &self.member_id,
            &self.config.topics,
        );
        let answer = self.ask_coordinator(protocol::JOIN_GROUP, &body, timeout)?;
        protocol::decode_join_group(&answer).map_err(malformed)
    }

    /// The leader's part: every member's partitions by the range assignor.
    fn run_assignor(
        &mut self,
        members: &[(String, Vec<u8>)],
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut subscriptions = Vec::new();
        for (id, meta) in members {
            subscriptions.push((
                id.clone(),
                protocol::decode_subscription(meta).map_err(malformed)?,
            ));
        }
        let mut topics: Vec<String> = subscriptions.iter().flat_map(|(_, t)| t.clone()).collect();
        topics.sort();
        topics.dedup();
        let mut counts = HashMap::new();
        for topic in topics {
            let n = self.leaders_of(&topic)?.len();
            counts.insert(topic, n);
        }
        Ok(
            assign_range(&subscriptions, |t| counts.get(t).copied().unwrap_or(0))
                .into_iter()
                .map(|(id, parts)| (id, protocol::encode_assignment(&parts)))
                .collect(),
        )
    }

    /// Where to read each assigned partition: the committed offset, else
    /// `auto_offset_reset`.
    fn starting_offsets(
        &mut self,
        group: &str,
        assigned: &[Partition],
    ) -> Result<Vec<(Partition, i64)>, Error> {
        if assigned.is_empty() {
            return Ok(Vec::new());
        }
        let body = self.ask_coordinator(
            protocol::OFFSET_FETCH,
            &protocol::encode_offset_fetch(group, assigned),
            REQUEST_TIMEOUT,
        )?;
        let committed = protocol::decode_offset_fetch(&body).map_err(malformed)?;
        let mut out = Vec::new();
        for partition in assigned {
            let found = committed
                .iter()
                .find(|(t, p, _, e)| *t == partition.0 && *p == partition.1 && *e == 0);
            let offset = match found {
                Some((_, _, o, _)) if *o >= 0 => *o,
                _ => self.reset_offset(partition)?,
            };
            out.push((partition.clone(), offset));
        }
        Ok(out)
    }

    /// The offset `auto_offset_reset` means for `partition`, from its leader.
    fn reset_offset(&mut self, partition: &Partition) -> Result<i64, Error> {
        let timestamp = match self.config.offset_reset {
            OffsetReset::Earliest => -2,
            OffsetReset::Latest => -1,
        };
        self.list_offset(partition, timestamp)
    }

    /// The end of `partition`: where the next record will be.
    fn end_offset(&mut self, partition: &Partition) -> Result<i64, Error> {
        self.list_offset(partition, -1)
    }

    /// `ListOffsets` for one partition: -2 is the earliest offset, -1 the end.
    fn list_offset(&mut self, partition: &Partition, timestamp: i64) -> Result<i64, Error> {
        let leader = self
            .leaders_of(&partition.0)?
            .get(partition.1 as usize)
            .copied()
            .unwrap_or(-1);
        let address = self.broker(leader)?;
        let body = self.call(
            &address,
            protocol::LIST_OFFSETS,
            &protocol::encode_list_offsets(std::slice::from_ref(partition), timestamp),
            REQUEST_TIMEOUT,
        )?;
        match protocol::decode_list_offsets(&body)
            .map_err(malformed)?
            .first()
        {
            Some((_, _, 0, offset)) => Ok(*offset),
            Some((_, _, e, _)) => Err(kafka_error("ListOffsets", *e)),
            None => Err(Error::connection(
                "ListOffsets: no answer for the partition",
            )),
        }
    }

    /// Sends a heartbeat when one is due; a rebalance marks the member for rejoining.
    fn heartbeat_if_due(&mut self) -> Result<(), Error> {
        let interval = Duration::from_millis(self.config.session_timeout_ms as u64 / 4);
        let Some(member) = &self.member else {
            return Ok(());
        };
        if self.last_heartbeat.elapsed() < interval {
            return Ok(());
        }
        let body = protocol::encode_heartbeat(&self.group()?, member.generation, &member.id);
        let error = protocol::decode_error_only(&self.ask_coordinator(
            protocol::HEARTBEAT,
            &body,
            REQUEST_TIMEOUT,
        )?)
        .map_err(malformed)?;
        self.last_heartbeat = Instant::now();
        match error {
            0 => Ok(()),
            code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION | code::UNKNOWN_MEMBER_ID => {
                if error == code::UNKNOWN_MEMBER_ID {
                    self.member_id.clear();
                }
                self.rejoin = true;
                Ok(())
            }
            e => {
                self.coordinator = None;
                Err(kafka_error("Heartbeat", e))
            }
        }
    }

    /// Logs, when a handler of a record from `topic` settles, that it ran longer than the
    /// session since the last heartbeat: the group may have moved the partition meanwhile,
    /// and then the records not committed yet are handled again.
    fn log_an_overrun(&self, topic: &str) {
        let session = Duration::from_millis(self.config.session_timeout_ms as u64);
        let note = Lease::new(self.last_heartbeat, session).overrun_note(
            Instant::now(),
            topic,
            "the group session (`session_timeout_ms`)",
            SESSION_REMEDY,
        );
        if let Some(note) = note {
            log(Self::NAME, &note);
        }
    }

    /// Commits the handled offsets (when some moved).
    fn commit(&mut self) -> Result<(), Error> {
        let Some(member) = &self.member else {
            return Ok(());
        };
        let commits = self.progress.take_commits();
        if commits.is_empty() {
            return Ok(());
        }
        let body =
            protocol::encode_offset_commit(&self.group()?, member.generation, &member.id, &commits);
        let result = self
            .ask_coordinator(protocol::OFFSET_COMMIT, &body, REQUEST_TIMEOUT)
            .and_then(|b| protocol::decode_offset_commit(&b).map_err(malformed));
        self.last_commit = Instant::now();
        match result {
            Ok(0) => Ok(()),
            Ok(error) => {
                if matches!(
                    error,
                    code::REBALANCE_IN_PROGRESS
                        | code::ILLEGAL_GENERATION
                        | code::UNKNOWN_MEMBER_ID
                ) {
                    self.rejoin = true;
                } else {
                    self.progress.restore_commits(commits);
                }
                Err(kafka_error("OffsetCommit", error))
            }
            Err(e) => {
                self.progress.restore_commits(commits);
                Err(e)
            }
        }
    }

    /// Gives the partitions up (after committing what was handled) for a rejoin.
    fn revoke(&mut self) {
        if let Err(e) = self.commit() {
            log(Self::NAME, &format!("committing before the rebalance: {e}"));
        }
        self.member = None;
        self.rejoin = false;
        self.positions.clear();
        self.buffered.clear();
        self.paused.clear();
        self.progress.clear();
    }

    /// One round of the consumer loop: membership, heartbeat, commit, fetch.
    fn poll(&mut self) -> Result<(), Error> {
        if self.rejoin {
            self.revoke();
        }
        if self.member.is_none() {
            return self.join();
        }
        self.heartbeat_if_due()?;
        if self.rejoin {
            return Ok(());
        }
        if self.progress.has_commits() && self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit()?;
        }
        let now = Instant::now();
        self.paused.retain(|_, until| *until > now);
        let ready: Vec<FetchPosition> = self
            .positions
            .iter()
            .filter(|(p, _)| !self.paused.contains_key(p))
            .map(|((topic, partition), offset)| FetchPosition {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        if ready.is_empty() {
            let wait = self
                .paused
                .values()
                .min()
                .map_or(Duration::from_millis(FETCH_WAIT_MS as u64), |u| {
                    u.saturating_duration_since(now)
                });
            std::thread::sleep(wait.min(Duration::from_millis(FETCH_WAIT_MS as u64)));
            return Ok(());
        }
        for (partition, fetched) in self.fetch(ready)? {
            let Some(at) = self.positions.iter().position(|(p, _)| *p == partition) else {
                continue;
            };
            let mut decoded = match fetched {
                Ok(decoded) => decoded,
                Err(code::OFFSET_OUT_OF_RANGE) => {
                    let offset = self.reset_offset(&partition)?;
                    log(
                        Self::NAME,
                        &format!(
                            "{}/{}: offset {} is out of range; continuing at {offset}",
                            partition.0, partition.1, self.positions[at].1
                        ),
                    );
                    self.positions[at].1 = offset;
                    continue;
                }
                Err(e) => {
                    return Err(kafka_error(
                        &format!("fetch from {}/{}", partition.0, partition.1),
                        e,
                    ))
                }
            };
            decoded.truncate(
                self.config
                    .max_poll_records
                    .saturating_sub(self.buffered.len())
                    .max(1),
            );
            if let Some(last) = decoded.last() {
                self.positions[at].1 = last.offset + 1;
            }
            self.buffered
                .extend(decoded.into_iter().map(|r| (partition.clone(), r)));
        }
        Ok(())
    }

    /// Fetches from `positions` (one request per leader, waiting at most
    /// [`FETCH_WAIT_MS`] in all): per partition, its records from the position on, or its
    /// error code.
    fn fetch(&mut self, positions: Vec<FetchPosition>) -> Result<Fetched, Error> {
        let mut by_leader: Vec<(String, Vec<FetchPosition>)> = Vec::new();
        for position in positions {
            let leader = self
                .leaders_of(&position.topic)?
                .get(position.partition as usize)
                .copied()
                .unwrap_or(-1);
            let address = self.broker(leader)?;
            match by_leader.iter_mut().find(|(a, _)| *a == address) {
                Some((_, v)) => v.push(position),
                None => by_leader.push((address, vec![position])),
            }
        }
        let wait = by_leader.len().max(1) as i32;
        let mut out = Vec::new();
        for (address, positions) in by_leader {
            let body = protocol::encode_fetch(&positions, FETCH_WAIT_MS / wait, FETCH_MAX_BYTES);
            let response = self.call(&address, protocol::FETCH, &body, REQUEST_TIMEOUT)?;
            for f in protocol::decode_fetch(&response).map_err(malformed)? {
                let partition = (f.topic.clone(), f.partition);
                let Some(from) = positions
                    .iter()
                    .find(|p| p.topic == f.topic && p.partition == f.partition)
                    .map(|p| p.offset)
                else {
                    continue;
                };
                if f.error != 0 {
                    out.push((partition, Err(f.error)));
                    continue;
                }
                let decoded = records::decode_batches(f.records, from, compression::decompress)
                    .map_err(|e| Error::other(format!("{}/{}: {e}", partition.0, partition.1)))?;
                out.push((partition, Ok(decoded)));
            }
        }
        Ok(out)
    }
}

impl Backend for Kafka {
    const NAME: &'static str = "kafka";

    fn open(settings: Settings) -> Result<Self, Error> {
        let config = Config::from_settings(&settings, |name| std::env::var(name).ok())?;
        let window = ConfirmWindow::from_settings(&settings)?.map(Window::new);
        let mut kafka = Self {
            conns: HashMap::new(),
            brokers: HashMap::new(),
            leaders: HashMap::new(),
            producer: None,
            idempotent: config.idempotent,
            config,
            sequences: HashMap::new(),
            in_handler: false,
            unsent: Vec::new(),
            unsent_bytes: 0,
            window,
            round_robin: HashMap::new(),
            coordinator: None,
            member: None,
            member_id: String::new(),
            rejoin: false,
            positions: Vec::new(),
            paused: HashMap::new(),
            backoffs: HashMap::new(),
            buffered: VecDeque::new(),
            progress: Progress::default(),
            deliveries: Deliveries::new(),
            last_heartbeat: Instant::now(),
            last_commit: Instant::now(),
            announced: false,
            reply_topic: None,
            correlation: None,
        };
        kafka.retrying("connect", |s| s.any_broker().map(drop))?;
        Ok(kafka)
    }

    /// Inside a handler the record waits for the driver's `flush` (before the ack).
    /// Outside one it is produced before this returns, or, with the run wrapper, when its
    /// window is full ([`ConfirmWindow`], [`WINDOW_BYTES`]) or old: then this returns what
    /// producing the window found.
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        let record = headers::to_record(message, now_ms());
        if self.in_handler {
            if let Err(e) = self.heartbeat_if_due() {
                log(Self::NAME, &format!("heartbeat: {e}"));
            }
            self.unsent.push((topic.to_string(), record));
            return Ok(());
        }
        if self.window.is_none() {
            return self.produce(vec![(topic.to_string(), record)]);
        }
        check_topic(topic).map_err(Error::other)?;
        let size = record_size(&record);
        // A window is produced before it would outgrow one request.
        let mut produced = Ok(());
        if !self.unsent.is_empty() && self.unsent_bytes + size > WINDOW_BYTES {
            produced = self.produce_window();
        }
        self.unsent.push((topic.to_string(), record));
        self.unsent_bytes += size;
        let window = self.window.as_mut().expect("checked above");
        if window.send(Instant::now()) {
            let closed = self.produce_window();
            produced = produced.and(closed);
        }
        produced
    }

    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        let reply_topic = self
            .reply_topic
            .get_or_insert_with(|| format!("msgplug.replies.{}", common::random_id()))
            .clone();
        // The reply topic is made by the broker's auto-creation on the first Metadata.
        let partitions = self
            .retrying("reply topic", |s| s.leaders_of(&reply_topic))?
            .len();
        let mut positions = Vec::new();
        for partition in 0..partitions as i32 {
            let offset = self.end_offset(&(reply_topic.clone(), partition))?;
            positions.push(FetchPosition {
                topic: reply_topic.clone(),
                partition,
                offset,
            });
        }
        let correlation = common::random_id();
        let mut request = message.clone();
        request.reply_to = Some(reply_topic.clone());
        request
            .metadata
            .insert(headers::CORRELATION_ID.into(), correlation.clone());
        // Sends of an open window go first, as they were made first.
        if self.window.is_some() && !self.in_handler && !self.unsent.is_empty() {
            self.produce_window()?;
        }
        self.produce(vec![(
            topic.to_string(),
            headers::to_record(&request, now_ms()),
        )])?;
        let deadline = options
            .timeout_ms
            .map(|ms| Instant::now() + Duration::from_millis(u64::from(ms)));
        let wanted = match (options.expected_replies, deadline) {
            (Some(n), _) => n as usize,
            (None, None) => 1,
            (None, Some(_)) => usize::MAX,
        };
        let mut replies = Vec::new();
        while replies.len() < wanted && deadline.is_none_or(|d| Instant::now() < d) {
            for (partition, fetched) in self.fetch(positions.clone())? {
                let records = fetched.map_err(|e| kafka_error("fetch of replies", e))?;
                let Some(position) = positions
                    .iter_mut()
                    .find(|p| p.topic == partition.0 && p.partition == partition.1)
                else {
                    continue;
                };
                for record in records {
                    position.offset = record.offset + 1;
                    let matches = record.headers.iter().any(|(k, v)| {
                        k == headers::CORRELATION_ID && v.as_slice() == correlation.as_bytes()
                    });
                    if matches && replies.len() < wanted {
                        replies.push(headers::to_message(&partition.0, partition.1, record));
                    }
                }
            }
        }
        if replies.is_empty() {
            return Err(Error::Timeout);
        }
        Ok(replies)
    }

    fn reply(&mut self, reply_to: &str, reply: &MessageData) -> Result<(), Error> {
        let mut reply = reply.clone();
        if let Some(correlation) = &self.correlation {
            reply
                .metadata
                .insert(headers::CORRELATION_ID.into(), correlation.clone());
        }
        self.send(reply_to, &reply)
    }

    fn next(&mut self) -> Result<Event, Error> {
        self.in_handler = false;
        let mut backoff = RETRY;
        loop {
            if let Err(e) = self.heartbeat_if_due() {
                log(Self::NAME, &format!("heartbeat: {e}"));
            }
            if !self.rejoin {
                if let Some((partition, record)) = self.buffered.pop_front() {
                    let offset = record.offset;
                    self.progress.delivered(&partition, offset);
                    let message = headers::to_message(&partition.0, partition.1, record);
                    self.correlation = message
                        .metadata
                        .iter()
                        .find(|(k, _)| *k == headers::CORRELATION_ID)
                        .map(|(_, v)| v.to_string());
                    let id = self.deliveries.deliver((partition, offset));
                    self.in_handler = true;
                    return Ok(Event::Delivery(id, message));
                }
            }
            match self.poll() {
                Ok(()) => backoff.reset(),
                Err(e) if e.is_transient() => {
                    let pause = backoff.failed().unwrap_or(Duration::from_secs(5));
                    log(
                        Self::NAME,
                        &format!("{e}; retrying in {} ms", pause.as_millis()),
                    );
                    self.leaders.clear();
                    if self.member.is_some() && self.coordinator.is_none() {
                        self.rejoin = true;
                    }
                    std::thread::sleep(pause);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn ack(&mut self, id: DeliveryId) -> Result<(), Error> {
        let (partition, offset) = self.deliveries.settle(id)?;
        self.in_handler = false;
        self.log_an_overrun(&partition.0);
        if let Some(b) = self.backoffs.get_mut(&partition) {
            b.reset();
        }
        self.progress.handled(&partition, offset);
        Ok(())
    }

    fn nack(&mut self, id: DeliveryId) -> Result<(), Error> {
        let (partition, offset) = self.deliveries.settle(id)?;
        self.in_handler = false;
        self.log_an_overrun(&partition.0);
        self.unsent.clear();
        self.progress.failed(&partition, offset);
        self.buffered.retain(|(p, _)| *p != partition);
        if let Some((_, position)) = self.positions.iter_mut().find(|(p, _)| *p == partition) {
            *position = offset;
        }
        let first = Duration::from_millis(self.config.retry_backoff_ms);
        let pause = self
            .backoffs
            .entry(partition.clone())
            .or_insert_with(|| Backoff::new(first, MAX_RECORD_BACKOFF))
            .failed()
            .unwrap_or(MAX_RECORD_BACKOFF);
        log(Self::NAME, &format!("the handler failed {}/{} offset {offset}; retrying it in {} ms (that partition waits)", partition.0, partition.1, pause.as_millis()));
        self.paused.insert(partition, Instant::now() + pause);
        Ok(())
    }

    /// Produces what was sent inside the handler (or, with the run wrapper, the open
    /// window); with the run wrapper, also fails if an earlier window failed.
    fn flush(&mut self) -> Result<(), Error> {
        if self.window.is_none() || self.in_handler {
            let unsent = std::mem::take(&mut self.unsent);
            return self.produce(unsent);
        }
        let produced = match self.unsent.is_empty() {
            true => Ok(()),
            false => self.produce_unsent(),
        };
        let window = self.window.as_mut().expect("checked above");
        window.finish(produced)
    }
}

impl Drop for Kafka {
    /// Leaves the group after committing what was handled, so the partitions move at once
    /// rather than after the session timeout (when the instance ends cleanly).
    fn drop(&mut self) {
        if let Err(e) = self.commit() {
            log(Self::NAME, &format!("committing at the end: {e}"));
        }
        if let (Some(member), Ok(group)) = (self.member.take(), self.group()) {
            let body = protocol::encode_leave_group(&group, &member.id);
            if let Err(e) = self.ask_coordinator(protocol::LEAVE_GROUP, &body, REQUEST_TIMEOUT) {
                log(Self::NAME, &format!("leaving the group: {e}"));
            }
        }
    }
}
