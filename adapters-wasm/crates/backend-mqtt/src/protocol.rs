//! The sans-IO MQTT codec: the packets a client sends and receives, for MQTT 5.0 and
//! 3.1.1, as plain Rust values over the `mqttbytes-ng` encoder and decoder.
//!
//! The rest of the crate sees one set of types for both versions; what 3.1.1 cannot carry
//! (properties: content type, user properties, response topic, correlation data) is left
//! out when encoding for it.

use bytes::{Bytes, BytesMut};
use mqttbytes_ng::{v4, v5, Error as CodecError, QoS};

/// The largest packet this client accepts (announced in an MQTT 5 `CONNECT`).
pub const MAX_INCOMING_PACKET: u32 = 16 * 1024 * 1024;

/// The MQTT protocol version spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 5.0 (protocol level 5): properties, reason codes, shared subscriptions.
    V5,
    /// MQTT 3.1.1 (protocol level 4): no properties.
    V311,
}

/// What `CONNECT` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The client identifier.
    pub client_id: String,
    /// Clean Start (5.0) / clean session (3.1.1): false resumes a stored session.
    pub clean_start: bool,
    /// MQTT 5: how long the broker keeps the session after the connection ends, in s.
    pub session_expiry: u32,
    /// The keep-alive interval in seconds.
    pub keep_alive: u16,
    /// MQTT 5: how many unacknowledged QoS 1 messages the broker may send at once.
    pub receive_maximum: u16,
    /// The user name, if any.
    pub username: Option<String>,
    /// The password, if any.
    pub password: Option<String>,
}

/// A `PUBLISH`, in either direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    /// The topic name.
    pub topic: String,
    /// The packet identifier (0 at QoS 0).
    pub pkid: u16,
    /// The QoS, 0 or 1.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// The DUP flag: a redelivery of a QoS 1 message.
    pub dup: bool,
    /// The payload.
    pub payload: Vec<u8>,
    /// MQTT 5: the content type property.
    pub content_type: Option<String>,
    /// MQTT 5: the user properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5: where replies go.
    pub response_topic: Option<String>,
    /// MQTT 5: what identifies the request a reply answers.
    pub correlation_data: Option<Vec<u8>>,
}

/// A packet the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPacket {
    /// `CONNECT`.
    Connect(Connect),
    /// `PUBLISH`.
    Publish(Publish),
    /// `PUBACK` for a received QoS 1 `PUBLISH`.
    PubAck(u16),
    /// `SUBSCRIBE` to filters at QoS 1 (MQTT 5: Retain As Published, retained messages
    /// only for new subscriptions).
    Subscribe {
        /// The packet identifier.
        pkid: u16,
        /// The topic filters.
        filters: Vec<String>,
    },
    /// `PINGREQ`.
    PingReq,
    /// `DISCONNECT` with reason code 0 (normal disconnection).
    Disconnect,
}

/// Why the broker refused a `CONNECT`, a `SUBSCRIBE` or a `PUBLISH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Bad credentials, not authorised, banned.
    Permission,
    /// The broker is unavailable or busy, or points elsewhere: worth retrying.
    Transient,
    /// The broker does not speak this protocol version.
    Version,
    /// Anything else.
    Other,
}

/// A broker's refusal: its kind and the reason code's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What kind of refusal it is.
    pub kind: Refusal,
    /// The reason code, as the spec names it (`NotAuthorized`, ...).
    pub code: String,
}

/// What `CONNACK` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// The broker resumed a stored session.
    pub session_present: bool,
    /// `None` when the connection was accepted.
    pub refused: Option<Refused>,
    /// MQTT 5: how many QoS 1 messages the client may have unacknowledged.
    pub receive_maximum: Option<u16>,
    /// MQTT 5: the largest packet the broker accepts.
    pub max_packet_size: Option<u32>,
    /// MQTT 5: the keep-alive the broker wants instead of the client's.
    pub server_keep_alive: Option<u16>,
    /// MQTT 5: the broker's explanation.
    pub reason: Option<String>,
}

/// A packet the broker sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPacket {
    /// `CONNACK`.
    ConnAck(ConnAck),
    /// `PUBLISH`.
    Publish(Publish),
    /// `PUBACK` for a QoS 1 `PUBLISH` of the client; `Some` when the broker refused it.
    PubAck(u16, Option<Refused>),
    /// `SUBACK`: per filter, `None` when granted, else the refusal.
    SubAck(u16, Vec<Option<Refused>>),
    /// `PINGRESP`.
    PingResp,
    /// `DISCONNECT` from the broker, with its reason code's name.
    Disconnect(String),
    /// A packet a client does not expect (its type's name).
    Unexpected(&'static str),
}

/// A packet that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<CodecError> for ProtocolError {
    /// Words the decoder's error briefly (its own texts would add kilobytes).
    fn from(e: CodecError) -> Self {
        Self(match e {
            CodecError::PayloadSizeLimitExceeded(n) => format!(
                "a packet of {n} bytes is larger than the {MAX_INCOMING_PACKET} bytes this client accepts"
            ),
            CodecError::InvalidPacketType(n) => format!("invalid packet type {n}"),
            _ => "malformed packet".to_string(),
        })
    }
}

/// The largest remaining length a packet can have.
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Appends `packet` encoded for `version` to `out`. Client packets are encoded here, by
/// hand: `mqttbytes-ng`'s encoders (through its owned packet structs) would add some
/// 30 KB to the adapter; its decoders check these bytes in the tests.
pub fn encode(
    version: Version,
    packet: &ClientPacket,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let v5 = version == Version::V5;
    let mut body = Vec::new();
    let first = match packet {
        ClientPacket::Connect(c) => {
            put_str(&mut body, b"MQTT")?;
            body.push(if v5 { 5 } else { 4 });
            let login = login(c);
            let mut flags = if c.clean_start { 0x02 } else { 0 };
            if login.is_some() {
                flags |= 0xC0;
            }
            body.push(flags);
            body.extend_from_slice(&c.keep_alive.to_be_bytes());
            if v5 {
                let mut props = Vec::new();
                if c.session_expiry > 0 {
                    props.push(0x11);
                    props.extend_from_slice(&c.session_expiry.to_be_bytes());
                }
                props.push(0x21);
                props.extend_from_slice(&c.receive_maximum.to_be_bytes());
                props.push(0x27);
                props.extend_from_slice(&MAX_INCOMING_PACKET.to_be_bytes());
                put_properties(&mut body, &props)?;
            }
            put_str(&mut body, c.client_id.as_bytes())?;
            if let Some((user, pass)) = login {
                put_str(&mut body, user.as_bytes())?;
                put_str(&mut body, pass.as_bytes())?;
            }
            0x10
        }
        ClientPacket::Publish(p) => {
            put_str(&mut body, p.topic.as_bytes())?;
            if p.qos > 0 {
                body.extend_from_slice(&p.pkid.to_be_bytes());
            }
            if v5 {
                let mut props = Vec::new();
                if let Some(content_type) = &p.content_type {
                    props.push(0x03);
                    put_str(&mut props, content_type.as_bytes())?;
                }
                if let Some(topic) = &p.response_topic {
                    props.push(0x08);
                    put_str(&mut props, topic.as_bytes())?;
                }
                if let Some(data) = &p.correlation_data {
                    props.push(0x09);
                    put_str(&mut props, data)?;
                }
                for (key, value) in &p.user_properties {
                    props.push(0x26);
                    put_str(&mut props, key.as_bytes())?;
                    put_str(&mut props, value.as_bytes())?;
                }
                put_properties(&mut body, &props)?;
            }
            body.extend_from_slice(&p.payload);
            0x30 | u8::from(p.dup) << 3 | (p.qos & 1) << 1 | u8::from(p.retain)
        }
        ClientPacket::PubAck(pkid) => {
            body.extend_from_slice(&pkid.to_be_bytes());
            0x40
        }
        ClientPacket::Subscribe { pkid, filters } => {
            body.extend_from_slice(&pkid.to_be_bytes());
            if v5 {
                body.push(0); // no properties
            }
            for filter in filters {
                put_str(&mut body, filter.as_bytes())?;
                // QoS 1; MQTT 5: Retain As Published (Mosquitto clears the flag of a
                // retained message without it), retained messages only for a new
                // subscription.
                body.push(if v5 { 0x19 } else { 0x01 });
            }
            0x82
        }
        ClientPacket::PingReq => 0xC0,
        ClientPacket::Disconnect => 0xE0,
    };
    out.push(first);
    put_varint(out, body.len())?;
    out.extend_from_slice(&body);
    Ok(())
}

/// Appends a variable byte integer.
fn put_varint(out: &mut Vec<u8>, mut n: usize) -> Result<(), ProtocolError> {
    if n > MAX_REMAINING_LENGTH {
        return Err(ProtocolError(format!(
            "a packet of {n} bytes is larger than MQTT allows"
        )));
    }
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return Ok(());
        }
        out.push(byte | 0x80);
    }
}

/// Appends a UTF-8 string or binary data: a two-byte length, then the bytes.
fn put_str(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), ProtocolError> {
    let len = u16::try_from(bytes.len()).map_err(|_| {
        ProtocolError(format!(
            "a string or binary field of {} bytes is longer than MQTT's 65535",
            bytes.len()
        ))
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Appends MQTT 5 properties: their length, then the encoded properties.
fn put_properties(out: &mut Vec<u8>, props: &[u8]) -> Result<(), ProtocolError> {
    put_varint(out, props.len())?;
    out.extend_from_slice(props);
    Ok(())
}

/// The user name and password of `CONNECT` (a password alone goes with an empty name).
fn login(c: &Connect) -> Option<(&str, &str)> {
    match (&c.username, &c.password) {
        (None, None) => None,
        (user, pass) => Some((
            user.as_deref().unwrap_or_default(),
            pass.as_deref().unwrap_or_default(),
        )),
    }
}

/// Frames and decodes the packets the broker sends, fed with whatever the socket read.
#[derive(Debug)]
pub struct Parser {
    /// The version spoken.
    version: Version,
    /// Bytes received but not decoded yet.
    buf: BytesMut,
}

impl Parser {
    /// Makes a parser for `version`.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            buf: BytesMut::new(),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Decodes the next whole packet; `None` until enough bytes arrived. (Each packet
    /// type a client receives is read by its own `read`: `mqttbytes-ng`'s `Packet::read`
    /// would link the decoders of the client's packets too.)
    pub fn next_packet(&mut self) -> Result<Option<ServerPacket>, ProtocolError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let decoded = match self.version {
            Version::V5 => read_v5(&mut self.buf),
            Version::V311 => read_v4(&mut self.buf),
        };
        match decoded {
            Ok(packet) => packet.map(Some),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Frames and decodes one MQTT 5 packet from the front of `buf`.
fn read_v5(buf: &mut BytesMut) -> Result<Result<ServerPacket, ProtocolError>, CodecError> {
    let header = v5::check(buf.iter(), Some(MAX_INCOMING_PACKET))?;
    let frame = buf.split_to(header.frame_length()).freeze();
    decode_v5(header, frame).map_err(whole_frame)
}

/// Decodes one whole MQTT 5 packet (`frame`, its fixed header included).
fn decode_v5(
    header: v5::FixedHeader,
    frame: Bytes,
) -> Result<Result<ServerPacket, ProtocolError>, CodecError> {
    use v5::PacketType as T;
    let kind = header.packet_type()?;
    // Two bytes: a remaining length of zero.
    if frame.len() == 2 {
        return match kind {
            T::PingResp => Ok(Ok(ServerPacket::PingResp)),
            T::Disconnect => Ok(Ok(ServerPacket::Disconnect("reason code 0".into()))),
            _ => Err(CodecError::PayloadRequired),
        };
    }
    Ok(match kind {
        T::ConnAck => from_v5(v5::Packet::ConnAck(v5::ConnAck::read(header, frame)?)),
        T::Publish => from_v5(v5::Packet::Publish(v5::Publish::read(header, frame)?)),
        T::PubAck => from_v5(v5::Packet::PubAck(v5::PubAck::read(header, frame)?)),
        T::SubAck => from_v5(v5::Packet::SubAck(v5::SubAck::read(header, frame)?)),
        T::Disconnect => from_v5(v5::Packet::Disconnect(v5::Disconnect::read(header, frame)?)),
        T::PingResp => Ok(ServerPacket::PingResp),
        other => Ok(ServerPacket::Unexpected(type_name(other as u8))),
    })
}

/// Frames and decodes one MQTT 3.1.1 packet from the front of `buf`.
fn read_v4(buf: &mut BytesMut) -> Result<Result<ServerPacket, ProtocolError>, CodecError> {
    let header = mqttbytes_ng::check(buf.iter(), MAX_INCOMING_PACKET as usize)?;
    let frame = buf.split_to(header.frame_length()).freeze();
    decode_v4(header, frame).map_err(whole_frame)
}

/// Decodes one whole MQTT 3.1.1 packet (`frame`, its fixed header included).
fn decode_v4(
    header: mqttbytes_ng::FixedHeader,
    frame: Bytes,
) -> Result<Result<ServerPacket, ProtocolError>, CodecError> {
    use mqttbytes_ng::PacketType as T;
    let kind = header.packet_type()?;
    // Two bytes: a remaining length of zero.
    if frame.len() == 2 {
        return match kind {
            T::PingResp => Ok(Ok(ServerPacket::PingResp)),
            T::Disconnect => Ok(Ok(ServerPacket::Unexpected("DISCONNECT"))),
            _ => Err(CodecError::PayloadRequired),
        };
    }
    Ok(match kind {
        T::ConnAck => from_v4(v4::Packet::ConnAck(v4::ConnAck::read(header, frame)?)),
        T::Publish => from_v4(v4::Packet::Publish(v4::Publish::read(header, frame)?)),
        T::PubAck => from_v4(v4::Packet::PubAck(v4::PubAck::read(header, frame)?)),
        T::SubAck => from_v4(v4::Packet::SubAck(v4::SubAck::read(header, frame)?)),
        other => Ok(ServerPacket::Unexpected(type_name(other as u8))),
    })
}

/// An error of a packet read from a whole frame: running out of bytes there means the
/// packet is shorter than its contents say (malformed), not that more bytes are needed;
/// [`Parser::next_packet`] would otherwise wait for bytes while the frame is gone.
fn whole_frame(e: CodecError) -> CodecError {
    match e {
        CodecError::InsufficientBytes(_) => CodecError::MalformedPacket,
        e => e,
    }
}

/// The name of packet type `n` (the fixed header's upper four bits).
fn type_name(n: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "reserved packet type 0",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ];
    NAMES[usize::from(n & 15)]
}

/// A refusal by reason-code name.
fn refused(kind: Refusal, code: impl Into<String>) -> Refused {
    Refused {
        kind,
        code: code.into(),
    }
}

/// Decodes the MQTT 5 packets a client can receive.
fn from_v5(packet: v5::Packet) -> Result<ServerPacket, ProtocolError> {
    use v5::ConnectReturnCode as C;
    Ok(match packet {
        v5::Packet::ConnAck(ack) => {
            let kind = match ack.code {
                C::Success => None,
                C::BadUserNamePassword
                | C::NotAuthorized
                | C::Banned
                | C::BadAuthenticationMethod => Some(Refusal::Permission),
                C::ServerUnavailable
                | C::ServerBusy
                | C::ServiceUnavailable
                | C::QuotaExceeded
                | C::UseAnotherServer
                | C::ServerMoved
                | C::ConnectionRateExceeded => Some(Refusal::Transient),
                C::UnsupportedProtocolVersion | C::RefusedProtocolVersion => Some(Refusal::Version),
                _ => Some(Refusal::Other),
            };
            let mut connack = ConnAck {
                session_present: ack.session_present,
                refused: kind.map(|k| refused(k, format!("{:?}", ack.code))),
                ..ConnAck::default()
            };
            if let Some(p) = ack.properties {
                connack.receive_maximum = p.receive_max;
                connack.max_packet_size = p.max_packet_size;
                connack.server_keep_alive = p.server_keep_alive;
                connack.reason = p.reason_string;
            }
            ServerPacket::ConnAck(connack)
        }
        v5::Packet::Publish(p) => {
            let topic = String::from_utf8(p.topic.to_vec())
                .map_err(|_| ProtocolError("a PUBLISH topic is not UTF-8".into()))?;
            let qos = match p.qos {
                QoS::AtMostOnce => 0,
                QoS::AtLeastOnce => 1,
                QoS::ExactlyOnce => return Err(ProtocolError("a PUBLISH at QoS 2".into())),
            };
            let properties = p.properties.unwrap_or_default();
            ServerPacket::Publish(Publish {
                topic,
                pkid: p.pkid,
                qos,
                retain: p.retain,
                dup: p.dup,
                payload: p.payload.to_vec(),
                content_type: properties.content_type,
                user_properties: properties.user_properties,
                response_topic: properties.response_topic,
                correlation_data: properties.correlation_data.map(|c| c.to_vec()),
            })
        }
        v5::Packet::PubAck(ack) => {
            use v5::PubAckReason as R;
            let refusal = match ack.reason {
                R::Success | R::NoMatchingSubscribers => None,
                R::NotAuthorized => Some(refused(Refusal::Permission, "NotAuthorized")),
                R::QuotaExceeded => Some(refused(Refusal::Transient, "QuotaExceeded")),
                other => Some(refused(Refusal::Other, format!("{other:?}"))),
            };
            ServerPacket::PubAck(ack.pkid, refusal)
        }
        v5::Packet::SubAck(ack) => {
            use v5::SubscribeReasonCode as S;
            let codes = ack.return_codes.iter().map(|code| match code {
                S::Success(_) => None,
                S::NotAuthorized => Some(refused(Refusal::Permission, "NotAuthorized")),
                S::TopicFilterInvalid => Some(refused(Refusal::Other, "TopicFilterInvalid")),
                S::SharedSubscriptionsNotSupported => {
                    Some(refused(Refusal::Other, "SharedSubscriptionsNotSupported"))
                }
                S::WildcardSubscriptionsNotSupported => {
                    Some(refused(Refusal::Other, "WildcardSubscriptionsNotSupported"))
                }
                S::QuotaExceeded => Some(refused(Refusal::Other, "QuotaExceeded")),
                _ => Some(refused(Refusal::Other, "UnspecifiedError")),
            });
            ServerPacket::SubAck(ack.pkid, codes.collect())
        }
        v5::Packet::PingResp(_) => ServerPacket::PingResp,
        v5::Packet::Disconnect(d) => {
            ServerPacket::Disconnect(format!("reason code {}", d.reason_code as u8))
        }
        _ => ServerPacket::Unexpected("an unexpected packet"),
    })
}

/// Decodes the MQTT 3.1.1 packets a client can receive.
fn from_v4(packet: v4::Packet) -> Result<ServerPacket, ProtocolError> {
    use v4::ConnectReturnCode as C;
    Ok(match packet {
        v4::Packet::ConnAck(ack) => {
            let kind = match ack.code {
                C::Success => None,
                C::BadUserNamePassword | C::NotAuthorized => Some(Refusal::Permission),
                C::ServiceUnavailable => Some(Refusal::Transient),
                C::RefusedProtocolVersion => Some(Refusal::Version),
                C::BadClientId => Some(Refusal::Other),
            };
            ServerPacket::ConnAck(ConnAck {
                session_present: ack.session_present,
                refused: kind.map(|k| refused(k, format!("{:?}", ack.code))),
                ..ConnAck::default()
            })
        }
        v4::Packet::Publish(p) => {
            let qos = match p.qos {
                QoS::AtMostOnce => 0,
                QoS::AtLeastOnce => 1,
                QoS::ExactlyOnce => return Err(ProtocolError("a PUBLISH at QoS 2".into())),
            };
            ServerPacket::Publish(Publish {
                topic: p.topic,
                pkid: p.pkid,
                qos,
                retain: p.retain,
                dup: p.dup,
                payload: p.payload.to_vec(),
                ..Publish::default()
            })
        }
        v4::Packet::PubAck(ack) => ServerPacket::PubAck(ack.pkid, None),
        v4::Packet::SubAck(ack) => {
            let codes = ack.return_codes.iter().map(|code| match code {
                v4::SubscribeReasonCode::Success(_) => None,
                v4::SubscribeReasonCode::Failure => Some(refused(Refusal::Other, "Failure")),
            });
            ServerPacket::SubAck(ack.pkid, codes.collect())
        }
        v4::Packet::PingResp => ServerPacket::PingResp,
        _ => ServerPacket::Unexpected("an unexpected packet"),
    })
}

#[cfg(test)]
mod tests {
    //! Property tests over seeded random packets (the same every run): each client packet
    //! encoded here decodes with `mqttbytes-ng` to the same values, each broker packet
    //! `mqttbytes-ng` encodes decodes here to the same values, fed whole or split at every
    //! byte boundary, and garbage gives errors, never a panic.

    use bytes::Bytes;

    use super::*;

    /// A small xorshift generator: reproducible random values without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bool(&mut self) -> bool {
            self.next() & 1 == 1
        }
        fn bytes(&mut self, max: u64) -> Vec<u8> {
            (0..self.below(max + 1))
                .map(|_| self.next() as u8)
                .collect()
        }
        fn text(&mut self, max: u64) -> String {
            let alphabet = ['a', 'b', '/', 'é', '0', '€', ' ', '_'];
            (0..self.below(max + 1))
                .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
                .collect()
        }
        fn opt_text(&mut self) -> Option<String> {
            self.bool().then(|| self.text(12))
        }
    }

    fn random_publish(rng: &mut Rng, v5: bool) -> Publish {
        let qos = rng.below(2) as u8;
        let mut p = Publish {
            topic: format!("t{}", rng.text(20)),
            pkid: if qos == 1 {
                1 + rng.below(65_535) as u16
            } else {
                0
            },
            qos,
            retain: rng.bool(),
            dup: qos == 1 && rng.bool(),
            payload: rng.bytes(300),
            ..Publish::default()
        };
        if v5 {
            p.content_type = rng.opt_text();
            p.response_topic = rng.opt_text().map(|t| format!("r{t}"));
            p.correlation_data = rng.bool().then(|| rng.bytes(20));
            p.user_properties = (0..rng.below(4))
                .map(|_| (rng.text(8), rng.text(8)))
                .collect();
        }
        p
    }

    fn random_client_packet(rng: &mut Rng, v5: bool) -> ClientPacket {
        match rng.below(6) {
            0 => ClientPacket::Connect(Connect {
                client_id: rng.text(23),
                clean_start: rng.bool(),
                session_expiry: if v5 { rng.next() as u32 } else { 0 },
                keep_alive: rng.next() as u16,
                receive_maximum: 1 + rng.below(65_535) as u16,
                username: rng.opt_text(),
                password: rng.opt_text(),
            }),
            1 => ClientPacket::Publish(random_publish(rng, v5)),
            2 => ClientPacket::PubAck(1 + rng.below(65_535) as u16),
            3 => ClientPacket::Subscribe {
                pkid: 1 + rng.below(65_535) as u16,
                filters: (0..1 + rng.below(3))
                    .map(|_| format!("f{}", rng.text(10)))
                    .collect(),
            },
            4 => ClientPacket::PingReq,
            _ => ClientPacket::Disconnect,
        }
    }

    /// Decodes a client packet with `mqttbytes-ng` (MQTT 5) into this module's values.
    fn decode_client_v5(bytes: &[u8]) -> ClientPacket {
        let mut buf = BytesMut::from(bytes);
        let packet = v5::Packet::read(&mut buf, None).expect("mqttbytes-ng decodes it");
        assert!(buf.is_empty(), "one whole packet");
        match packet {
            v5::Packet::Connect(c, will, login) => {
                assert!(will.is_none());
                let props = c.properties.expect("properties");
                assert_eq!(props.max_packet_size, Some(MAX_INCOMING_PACKET));
                ClientPacket::Connect(Connect {
                    client_id: c.client_id,
                    clean_start: c.clean_start,
                    session_expiry: props.session_expiry_interval.unwrap_or(0),
                    keep_alive: c.keep_alive,
                    receive_maximum: props.receive_maximum.expect("receive maximum"),
                    username: login.as_ref().map(|l| l.username.clone()),
                    password: login.map(|l| l.password),
                })
            }
            v5::Packet::Publish(p) => {
                let props = p.properties.unwrap_or_default();
                ClientPacket::Publish(Publish {
                    topic: String::from_utf8(p.topic.to_vec()).unwrap(),
                    pkid: p.pkid,
                    qos: p.qos as u8,
                    retain: p.retain,
                    dup: p.dup,
                    payload: p.payload.to_vec(),
                    content_type: props.content_type,
                    user_properties: props.user_properties,
                    response_topic: props.response_topic,
                    correlation_data: props.correlation_data.map(|c| c.to_vec()),
                })
            }
            v5::Packet::PubAck(a) => ClientPacket::PubAck(a.pkid),
            v5::Packet::Subscribe(s) => {
                for f in &s.filters {
                    assert_eq!(f.qos, QoS::AtLeastOnce);
                    assert_eq!(f.retain_forward_rule, v5::RetainForwardRule::OnNewSubscribe);
                    assert!(f.preserve_retain && !f.nolocal);
                }
                ClientPacket::Subscribe {
                    pkid: s.pkid,
                    filters: s.filters.into_iter().map(|f| f.path).collect(),
                }
            }
            v5::Packet::PingReq(_) => ClientPacket::PingReq,
            v5::Packet::Disconnect(d) => {
                assert_eq!(d.reason_code, v5::DisconnectReasonCode::NormalDisconnection);
                ClientPacket::Disconnect
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Decodes a client packet with `mqttbytes-ng` (MQTT 3.1.1) into this module's values.
    fn decode_client_v4(bytes: &[u8]) -> ClientPacket {
        let mut buf = BytesMut::from(bytes);
        let packet = v4::Packet::read(&mut buf, usize::MAX).expect("mqttbytes-ng decodes it");
        assert!(buf.is_empty(), "one whole packet");
        match packet {
            v4::Packet::Connect(c) => ClientPacket::Connect(Connect {
                client_id: c.client_id,
                clean_start: c.clean_session,
                session_expiry: 0,
                keep_alive: c.keep_alive,
                receive_maximum: 0,
                username: c.login.as_ref().map(|l| l.username.clone()),
                password: c.login.map(|l| l.password),
            }),
            v4::Packet::Publish(p) => ClientPacket::Publish(Publish {
                topic: p.topic,
                pkid: p.pkid,
                qos: p.qos as u8,
                retain: p.retain,
                dup: p.dup,
                payload: p.payload.to_vec(),
                ..Publish::default()
            }),
            v4::Packet::PubAck(a) => ClientPacket::PubAck(a.pkid),
            v4::Packet::Subscribe(s) => ClientPacket::Subscribe {
                pkid: s.pkid,
                filters: s.filters.into_iter().map(|f| f.path).collect(),
            },
            v4::Packet::PingReq => ClientPacket::PingReq,
            v4::Packet::Disconnect => ClientPacket::Disconnect,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// What a packet looks like after the trip: a login always has both parts (and
    /// `mqttbytes-ng` reads an empty one as none), and 3.1.1 has no properties.
    fn normalised(packet: ClientPacket, v5: bool) -> ClientPacket {
        match packet {
            ClientPacket::Connect(mut c) => {
                if c.username.is_some() || c.password.is_some() {
                    c.username.get_or_insert_with(String::new);
                    c.password.get_or_insert_with(String::new);
                }
                if c.username.as_deref() == Some("") && c.password.as_deref() == Some("") {
                    (c.username, c.password) = (None, None);
                }
                if !v5 {
                    c.session_expiry = 0;
                    c.receive_maximum = 0;
                }
                ClientPacket::Connect(c)
            }
            other => other,
        }
    }

    #[test]
    fn client_packets_round_trip_through_an_independent_decoder() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for version in [Version::V5, Version::V311] {
            let v5 = version == Version::V5;
            for _ in 0..2_000 {
                let packet = random_client_packet(&mut rng, v5);
                let mut out = Vec::new();
                encode(version, &packet, &mut out).unwrap();
                let decoded = match version {
                    Version::V5 => decode_client_v5(&out),
                    Version::V311 => decode_client_v4(&out),
                };
                assert_eq!(decoded, normalised(packet, v5), "{version:?}: {out:02x?}");
            }
        }
    }

    #[test]
    fn oversized_fields_are_errors() {
        let long = "x".repeat(70_000);
        let packet = ClientPacket::Publish(Publish {
            topic: long,
            ..Publish::default()
        });
        let e = encode(Version::V5, &packet, &mut Vec::new()).unwrap_err();
        assert!(e.0.contains("longer than MQTT's 65535"), "{e}");
    }

    /// A random packet the broker sends, encoded by `mqttbytes-ng`, and what it decodes to.
    fn random_server_packet(rng: &mut Rng, v5: bool) -> (Vec<u8>, ServerPacket) {
        let mut buf = BytesMut::new();
        let expected = match (rng.below(5), v5) {
            (0, true) => {
                let props = v5::ConnAckProperties {
                    session_expiry_interval: None,
                    receive_max: rng.bool().then(|| 1 + rng.below(100) as u16),
                    max_qos: None,
                    retain_available: None,
                    max_packet_size: rng.bool().then(|| rng.next() as u32),
                    assigned_client_identifier: None,
                    topic_alias_max: None,
                    reason_string: rng.opt_text(),
                    user_properties: Vec::new(),
                    wildcard_subscription_available: None,
                    subscription_identifiers_available: None,
                    shared_subscription_available: None,
                    server_keep_alive: rng.bool().then(|| rng.next() as u16),
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                };
                let code = match rng.below(3) {
                    0 => v5::ConnectReturnCode::Success,
                    1 => v5::ConnectReturnCode::NotAuthorized,
                    _ => v5::ConnectReturnCode::ServerBusy,
                };
                let ack = v5::ConnAck {
                    session_present: rng.bool(),
                    code,
                    properties: Some(props.clone()),
                };
                ack.write(&mut buf).unwrap();
                let refused = match code {
                    v5::ConnectReturnCode::Success => None,
                    v5::ConnectReturnCode::NotAuthorized => {
                        Some(refused(Refusal::Permission, "NotAuthorized"))
                    }
                    _ => Some(refused(Refusal::Transient, "ServerBusy")),
                };
                ServerPacket::ConnAck(ConnAck {
                    session_present: ack.session_present,
                    refused,
                    receive_maximum: props.receive_max,
                    max_packet_size: props.max_packet_size,
                    server_keep_alive: props.server_keep_alive,
                    reason: props.reason_string,
                })
            }
            (0, false) => {
                let session_present = rng.bool();
                v4::ConnAck::new(v4::ConnectReturnCode::BadUserNamePassword, session_present)
                    .write(&mut buf)
                    .unwrap();
                ServerPacket::ConnAck(ConnAck {
                    session_present,
                    refused: Some(refused(Refusal::Permission, "BadUserNamePassword")),
                    ..ConnAck::default()
                })
            }
            (1, _) => {
                let p = random_publish(rng, v5);
                encode(
                    if v5 { Version::V5 } else { Version::V311 },
                    &ClientPacket::Publish(p.clone()),
                    &mut Vec::new(),
                )
                .unwrap();
                if v5 {
                    let props = v5::PublishProperties {
                        content_type: p.content_type.clone(),
                        response_topic: p.response_topic.clone(),
                        correlation_data: p.correlation_data.clone().map(Bytes::from),
                        user_properties: p.user_properties.clone(),
                        ..v5::PublishProperties::default()
                    };
                    let mut publish =
                        v5::Publish::new(p.topic.clone(), qos_of(p.qos), p.payload.clone(), None);
                    publish.pkid = p.pkid;
                    publish.retain = p.retain;
                    publish.dup = p.dup;
                    publish.properties = Some(props);
                    publish.write(&mut buf).unwrap();
                } else {
                    let mut publish =
                        v4::Publish::new(p.topic.clone(), qos_of(p.qos), p.payload.clone());
                    publish.pkid = p.pkid;
                    publish.retain = p.retain;
                    publish.dup = p.dup;
                    publish.write(&mut buf).unwrap();
                }
                ServerPacket::Publish(p)
            }
            (2, _) => {
                let pkid = 1 + rng.below(65_535) as u16;
                if v5 {
                    v5::PubAck::new(pkid, None).write(&mut buf).unwrap();
                } else {
                    v4::PubAck::new(pkid).write(&mut buf).unwrap();
                }
                ServerPacket::PubAck(pkid, None)
            }
            (3, _) => {
                let pkid = 1 + rng.below(65_535) as u16;
                let granted = rng.bool();
                if v5 {
                    let code = match granted {
                        true => v5::SubscribeReasonCode::Success(QoS::AtLeastOnce),
                        false => v5::SubscribeReasonCode::NotAuthorized,
                    };
                    v5::SubAck {
                        pkid,
                        return_codes: vec![code],
                        properties: None,
                    }
                    .write(&mut buf)
                    .unwrap();
                } else {
                    let code = match granted {
                        true => v4::SubscribeReasonCode::Success(QoS::AtLeastOnce),
                        false => v4::SubscribeReasonCode::Failure,
                    };
                    v4::SubAck::new(pkid, vec![code]).write(&mut buf).unwrap();
                }
                let refusal = match (granted, v5) {
                    (true, _) => None,
                    (false, true) => Some(refused(Refusal::Permission, "NotAuthorized")),
                    (false, false) => Some(refused(Refusal::Other, "Failure")),
                };
                ServerPacket::SubAck(pkid, vec![refusal])
            }
            _ => {
                buf.extend_from_slice(&[0xD0, 0x00]);
                ServerPacket::PingResp
            }
        };
        (buf.to_vec(), expected)
    }

    fn qos_of(qos: u8) -> QoS {
        match qos {
            0 => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        }
    }

    #[test]
    fn broker_packets_decode_whole_and_split_at_every_byte() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for version in [Version::V5, Version::V311] {
            let v5 = version == Version::V5;
            for _ in 0..300 {
                let (first, a) = random_server_packet(&mut rng, v5);
                let (second, b) = random_server_packet(&mut rng, v5);
                let stream = [first, second].concat();
                for split in 0..=stream.len() {
                    let mut parser = Parser::new(version);
                    let mut got = Vec::new();
                    for part in [&stream[..split], &stream[split..]] {
                        parser.push(part);
                        while let Some(packet) = parser.next_packet().unwrap() {
                            got.push(packet);
                        }
                    }
                    assert_eq!(got, [a.clone(), b.clone()], "{version:?} split at {split}");
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut errors = 0;
        for version in [Version::V5, Version::V311] {
            for round in 0..20_000 {
                let mut bytes = rng.bytes(40);
                if round % 2 == 0 && bytes.len() >= 2 {
                    // A plausible fixed header: a real type and the right length.
                    bytes[0] = [0x20, 0x30, 0x32, 0x40, 0x90, 0xD0, 0xE0][rng.below(7) as usize];
                    bytes[1] = (bytes.len() - 2) as u8;
                }
                let mut parser = Parser::new(version);
                parser.push(&bytes);
                for _ in 0..bytes.len() + 1 {
                    match parser.next_packet() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
            }
        }
        assert!(errors > 1_000, "garbage was mostly rejected ({errors})");
        let mut parser = Parser::new(Version::V5);
        parser.push(&[0xF0, 0x00]);
        assert!(
            parser.next_packet().is_err(),
            "packet type 15 with no AUTH body"
        );
        let mut parser = Parser::new(Version::V5);
        parser.push(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert!(
            parser.next_packet().is_err(),
            "a remaining length of five bytes"
        );
    }

    #[test]
    fn a_packet_shorter_than_its_contents_is_malformed_not_awaited() {
        // Found by the fuzz target mqtt_packets: a whole frame whose contents ran past its
        // end was dropped as "need more bytes", so the packets after it (here a PUBACK)
        // waited for the next read. The inputs the fuzzer saved, shortened:
        let cases: [(Version, &[u8]); 3] = [
            // MQTT 5 CONNACK without its properties length.
            (
                Version::V5,
                &[0x20, 0x02, 0x00, 0x00, 0x40, 0x02, 0x00, 0x01],
            ),
            // MQTT 5 CONNACK whose properties run past the packet.
            (
                Version::V5,
                &[0x20, 0x03, 0x00, 0x00, 0x90, 0x40, 0x02, 0x00, 0x01],
            ),
            // MQTT 3.1.1 PUBLISH whose topic length runs past the packet.
            (
                Version::V311,
                &[0x30, 0x02, 0x00, 0x09, 0x40, 0x02, 0x00, 0x01],
            ),
        ];
        for (version, bytes) in cases {
            let mut parser = Parser::new(version);
            parser.push(bytes);
            let e = parser.next_packet().unwrap_err();
            assert!(e.0.contains("alformed"), "{version:?} {bytes:02x?}: {e}");
        }
        // The inputs as the fuzzer saved them: fed whole or a byte at a time, the parser
        // gives the same packets and the same error.
        let saved: [&[u8]; 6] = [
            &[
                0x20, 0x02, 0x00, 0x00, 0x32, 0x09, 0x00, 0x03, 0x61, 0x2f, 0x62, 0x00, 0x01, 0x68,
                0x69, 0x90, 0x03, 0x00, 0x01, 0x01, 0x40, 0x02, 0x00, 0x01, 0xd0, 0x00,
            ],
            &[
                0x20, 0x03, 0x00, 0xf9, 0xff, 0xcd, 0xf5, 0xff, 0xfc, 0x9e, 0xd0, 0x5d, 0x00, 0x01,
                0x00, 0x68, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x02, 0x00, 0x01,
            ],
            &[
                0x20, 0x03, 0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x69,
                0x94, 0x01, 0x00, 0x66, 0xb2, 0x00, 0x00, 0x90, 0x04, 0x32, 0x10, 0x00,
            ],
            &[
                0x20, 0x03, 0x00, 0x85, 0xd2, 0x62, 0x00, 0x01, 0x00, 0x68, 0x69, 0x90, 0x04, 0x00,
                0x05, 0x00, 0x00, 0x40, 0x02, 0x00, 0x01,
            ],
            &[
                0x20, 0x03, 0xdd, 0xfc, 0xff, 0xff, 0x10, 0x00, 0x00, 0x0a, 0xff, 0x00, 0x69, 0x94,
                0x01, 0x00, 0x69, 0x00, 0x00, 0x90, 0x04, 0x32, 0x10, 0x00,
            ],
            &[
                0x20, 0x03, 0x00, 0x00, 0x90, 0x04, 0x00, 0x01, 0x94, 0x01, 0x40, 0x02, 0x00, 0x01,
            ],
        ];
        for bytes in saved {
            for version in [Version::V5, Version::V311] {
                let read = |pieces: &mut dyn Iterator<Item = &[u8]>| {
                    let mut parser = Parser::new(version);
                    let mut got = Vec::new();
                    for piece in pieces {
                        parser.push(piece);
                        loop {
                            match parser.next_packet() {
                                Ok(Some(packet)) => got.push(Ok(packet)),
                                Ok(None) => break,
                                Err(e) => return [got, vec![Err(e)]].concat(),
                            }
                        }
                    }
                    got
                };
                let whole = read(&mut std::iter::once(bytes));
                assert_eq!(
                    read(&mut bytes.chunks(1)),
                    whole,
                    "{version:?} {bytes:02x?}"
                );
            }
        }
    }
}
