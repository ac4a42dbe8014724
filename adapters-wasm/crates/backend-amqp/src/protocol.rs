//! AMQP 0-9-1 as a sans-IO codec, written from the specification
//! (<https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf> and its errata as RabbitMQ
//! implements them): [`Reader`] turns the bytes a broker sends into [`Incoming`] frames
//! and assembled messages (a content-bearing method, its content header and body frames),
//! and [`encode_method`], [`encode_content`] and [`HEARTBEAT`] write what a client sends.
//!
//! Only the methods a publishing and consuming client needs are modelled; any other
//! method decodes to [`Method::Other`] (its arguments skipped).
//!
//! Wire format: a frame is `type: u8, channel: u16, size: u32, payload[size], 0xCE`; a
//! method payload is `class: u16, method: u16, arguments`. Integers are big-endian,
//! `shortstr` is `u8` length + bytes, `longstr` and tables are `u32` length + bytes, and
//! consecutive `bit` arguments share octets (least significant bit first).

use std::fmt;

/// What a client sends first: `AMQP`, 0, then protocol version 0-9-1.
pub const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// A heartbeat frame (type 8, channel 0, empty payload).
pub const HEARTBEAT: &[u8] = &[8, 0, 0, 0, 0, 0, 0, FRAME_END];

/// The byte that ends every frame.
const FRAME_END: u8 = 0xCE;

/// Frame type of a method frame.
const FRAME_METHOD: u8 = 1;
/// Frame type of a content header frame.
const FRAME_HEADER: u8 = 2;
/// Frame type of a content body frame.
const FRAME_BODY: u8 = 3;
/// Frame type of a heartbeat frame.
const FRAME_HEARTBEAT: u8 = 8;

/// The bytes of a frame around its payload: type, channel, size and the end byte.
const FRAME_OVERHEAD: usize = 8;

/// The smallest `frame-max` a peer may set (the specification's `frame-min-size`).
pub const MIN_FRAME_MAX: u32 = 4096;

/// The class id of `basic`, whose methods carry content.
const BASIC: u16 = 60;

/// Bytes that are not AMQP 0-9-1; the connection cannot continue after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes a [`ProtocolError`] result.
fn bad<T>(text: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(text.into()))
}

/// A field table: names and values, in wire order.
pub type Table = Vec<(String, FieldValue)>;

/// A value in a field table (the types RabbitMQ sends, per its errata of 0-9-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s`
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l`
    I64(i64),
    /// `f`, as its bits (so values compare exactly)
    F32(u32),
    /// `d`, as its bits
    F64(u64),
    /// `D`: scale (decimal places) and unscaled value
    Decimal(u8, u32),
    /// `S`: a long string (bytes, usually UTF-8)
    LongStr(Vec<u8>),
    /// `A`
    Array(Vec<FieldValue>),
    /// `T`: seconds since the Unix epoch
    Timestamp(u64),
    /// `F`
    Table(Table),
    /// `V`
    Void,
    /// `x`: a byte array
    Bytes(Vec<u8>),
}

impl FieldValue {
    /// A long string value.
    pub fn text(text: &str) -> Self {
        FieldValue::LongStr(text.as_bytes().to_vec())
    }

    /// The value as text: strings as (lossy) UTF-8, numbers in decimal, booleans as
    /// `true` / `false`, a timestamp as its seconds, arrays as `[a, b]`, tables as
    /// `{k: v, ...}`, void as the empty string, a byte array as lossy UTF-8.
    pub fn to_text(&self) -> String {
        match self {
            FieldValue::Bool(v) => v.to_string(),
            FieldValue::I8(v) => v.to_string(),
            FieldValue::U8(v) => v.to_string(),
            FieldValue::I16(v) => v.to_string(),
            FieldValue::U16(v) => v.to_string(),
            FieldValue::I32(v) => v.to_string(),
            FieldValue::U32(v) => v.to_string(),
            FieldValue::I64(v) => v.to_string(),
            FieldValue::F32(bits) => float_text(f64::from(f32::from_bits(*bits))),
            FieldValue::F64(bits) => float_text(f64::from_bits(*bits)),
            FieldValue::Decimal(scale, value) => decimal_text(*scale, *value),
            FieldValue::LongStr(bytes) | FieldValue::Bytes(bytes) => {
                String::from_utf8_lossy(bytes).into_owned()
            }
            FieldValue::Array(values) => {
                let items: Vec<String> = values.iter().map(FieldValue::to_text).collect();
                format!("[{}]", items.join(", "))
            }
            FieldValue::Timestamp(seconds) => seconds.to_string(),
            FieldValue::Table(table) => {
                let items: Vec<String> = table
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.to_text()))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
            FieldValue::Void => String::new(),
        }
    }
}

/// A float in decimal with at most six decimal places (`1.5`, `-0.333333`), `NaN`,
/// `inf` or `-inf`. (Not `f64`'s `Display`: its shortest-representation algorithm
/// would add some 15 KB to the adapter for a rare header type.)
fn float_text(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    let sign = if value.is_sign_negative() && value != 0.0 {
        "-"
    } else {
        ""
    };
    let magnitude = value.abs();
    if magnitude >= 1e18 {
        return format!("{sign}inf");
    }
    let micros = (magnitude * 1e6 + 0.5) as u64;
    let (whole, fraction) = (micros / 1_000_000, micros % 1_000_000);
    let fraction = format!("{fraction:06}");
    match fraction.trim_end_matches('0') {
        "" => format!("{sign}{whole}"),
        digits => format!("{sign}{whole}.{digits}"),
    }
}

/// `value` with `scale` decimal places, as text (`12345`, 2 → `123.45`).
fn decimal_text(scale: u8, value: u32) -> String {
    let digits = value.to_string();
    let scale = usize::from(scale);
    if scale == 0 {
        return digits;
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{whole}.{fraction}")
}

/// The arguments of `connection.close` and `channel.close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The reply code (`403` ACCESS_REFUSED, `404` NOT_FOUND, `406` PRECONDITION_FAILED, ...).
    pub reply_code: u16,
    /// The broker's explanation.
    pub reply_text: String,
    /// The class of the method that caused it (0 if none).
    pub class_id: u16,
    /// The method that caused it (0 if none).
    pub method_id: u16,
}

/// The methods this client sends or understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `connection.start` (10, 10)
    ConnectionStart {
        /// The broker's protocol major version.
        version_major: u8,
        /// The broker's protocol minor version.
        version_minor: u8,
        /// What the broker says about itself.
        server_properties: Table,
        /// The SASL mechanisms it offers, space-separated.
        mechanisms: Vec<u8>,
        /// The locales it offers, space-separated.
        locales: Vec<u8>,
    },
    /// `connection.start-ok` (10, 11)
    ConnectionStartOk {
        /// What the client says about itself (capabilities, connection name).
        client_properties: Table,
        /// The SASL mechanism chosen.
        mechanism: String,
        /// The SASL response (`\0user\0password` for PLAIN).
        response: Vec<u8>,
        /// The locale chosen.
        locale: String,
    },
    /// `connection.tune` (10, 30) and, with `ok`, `connection.tune-ok` (10, 31)
    ConnectionTune {
        /// False for `tune` (from the broker), true for `tune-ok` (the client's choice).
        ok: bool,
        /// The highest channel number (0: no limit).
        channel_max: u16,
        /// The largest frame (0: no limit).
        frame_max: u32,
        /// Seconds between heartbeats (0: none).
        heartbeat: u16,
    },
    /// `connection.open` (10, 40)
    ConnectionOpen {
        /// The virtual host.
        vhost: String,
    },
    /// `connection.open-ok` (10, 41)
    ConnectionOpenOk,
    /// `connection.close` (10, 50)
    ConnectionClose(Close),
    /// `connection.close-ok` (10, 51)
    ConnectionCloseOk,
    /// `connection.blocked` (10, 60): the broker stopped reading publishes.
    ConnectionBlocked {
        /// Why (a resource alarm).
        reason: String,
    },
    /// `connection.unblocked` (10, 61)
    ConnectionUnblocked,
    /// `channel.open` (20, 10)
    ChannelOpen,
    /// `channel.open-ok` (20, 11)
    ChannelOpenOk,
    /// `channel.close` (20, 40)
    ChannelClose(Close),
    /// `channel.close-ok` (20, 41)
    ChannelCloseOk,
    /// `queue.declare` (50, 10)
    QueueDeclare {
        /// The queue's name (empty: the broker names it).
        queue: String,
        /// Only check that it exists.
        passive: bool,
        /// Survives a broker restart.
        durable: bool,
        /// Only this connection may use it; deleted when it closes.
        exclusive: bool,
        /// Deleted when its last consumer is gone.
        auto_delete: bool,
    },
    /// `queue.declare-ok` (50, 11)
    QueueDeclareOk {
        /// The queue's name.
        queue: String,
        /// Messages ready in it.
        message_count: u32,
        /// Consumers on it.
        consumer_count: u32,
    },
    /// `queue.bind` (50, 20)
    QueueBind {
        /// The queue.
        queue: String,
        /// The exchange.
        exchange: String,
        /// The binding key.
        routing_key: String,
    },
    /// `queue.bind-ok` (50, 21)
    QueueBindOk,
    /// `basic.qos` (60, 10)
    BasicQos {
        /// How many unacknowledged deliveries the consumer may hold.
        prefetch_count: u16,
    },
    /// `basic.qos-ok` (60, 11)
    BasicQosOk,
    /// `basic.consume` (60, 20)
    BasicConsume {
        /// The queue.
        queue: String,
        /// The consumer tag (empty: the broker makes one).
        consumer_tag: String,
        /// Deliveries count as acknowledged when sent.
        no_ack: bool,
        /// The only consumer of the queue.
        exclusive: bool,
    },
    /// `basic.consume-ok` (60, 21)
    BasicConsumeOk {
        /// The consumer tag.
        consumer_tag: String,
    },
    /// `basic.cancel` (60, 30): from the broker, a consumer ended (its queue was deleted).
    BasicCancel {
        /// The consumer tag.
        consumer_tag: String,
        /// No `cancel-ok` is expected.
        no_wait: bool,
    },
    /// `basic.publish` (60, 40), followed by content
    BasicPublish {
        /// The exchange (empty: the default exchange).
        exchange: String,
        /// The routing key.
        routing_key: String,
        /// Return the message when no queue is bound for it.
        mandatory: bool,
    },
    /// `basic.return` (60, 50), followed by content: a mandatory message had no queue.
    BasicReturn {
        /// The reply code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's explanation.
        reply_text: String,
        /// The exchange it was published to.
        exchange: String,
        /// The routing key it was published with.
        routing_key: String,
    },
    /// `basic.deliver` (60, 60), followed by content
    BasicDeliver {
        /// The consumer it is for.
        consumer_tag: String,
        /// What acknowledges it, on this channel.
        delivery_tag: u64,
        /// It was delivered before and not acknowledged.
        redelivered: bool,
        /// The exchange it was published to.
        exchange: String,
        /// The routing key it was published with.
        routing_key: String,
    },
    /// `basic.ack` (60, 80): a consumer's acknowledgement, or a publisher confirm.
    BasicAck {
        /// The delivery (or publish sequence number).
        delivery_tag: u64,
        /// Every tag up to this one.
        multiple: bool,
    },
    /// `basic.nack` (60, 120)
    BasicNack {
        /// The delivery (or publish sequence number).
        delivery_tag: u64,
        /// Every tag up to this one.
        multiple: bool,
        /// Deliver the message again.
        requeue: bool,
    },
    /// `confirm.select` (85, 10)
    ConfirmSelect,
    /// `confirm.select-ok` (85, 11)
    ConfirmSelectOk,
    /// A method this client does not model; its arguments are skipped.
    Other {
        /// Its class id.
        class_id: u16,
        /// Its method id.
        method_id: u16,
    },
}

impl Method {
    /// The method's `(class, method)` ids.
    pub fn ids(&self) -> (u16, u16) {
        match self {
            Method::ConnectionStart { .. } => (10, 10),
            Method::ConnectionStartOk { .. } => (10, 11),
            Method::ConnectionTune { ok: false, .. } => (10, 30),
            Method::ConnectionTune { ok: true, .. } => (10, 31),
            Method::ConnectionOpen { .. } => (10, 40),
            Method::ConnectionOpenOk => (10, 41),
            Method::ConnectionClose(_) => (10, 50),
            Method::ConnectionCloseOk => (10, 51),
            Method::ConnectionBlocked { .. } => (10, 60),
            Method::ConnectionUnblocked => (10, 61),
            Method::ChannelOpen => (20, 10),
            Method::ChannelOpenOk => (20, 11),
            Method::ChannelClose(_) => (20, 40),
            Method::ChannelCloseOk => (20, 41),
            Method::QueueDeclare { .. } => (50, 10),
            Method::QueueDeclareOk { .. } => (50, 11),
            Method::QueueBind { .. } => (50, 20),
            Method::QueueBindOk => (50, 21),
            Method::BasicQos { .. } => (60, 10),
            Method::BasicQosOk => (60, 11),
            Method::BasicConsume { .. } => (60, 20),
            Method::BasicConsumeOk { .. } => (60, 21),
            Method::BasicCancel { .. } => (60, 30),
            Method::BasicPublish { .. } => (60, 40),
            Method::BasicReturn { .. } => (60, 50),
            Method::BasicDeliver { .. } => (60, 60),
            Method::BasicAck { .. } => (60, 80),
            Method::BasicNack { .. } => (60, 120),
            Method::ConfirmSelect => (85, 10),
            Method::ConfirmSelectOk => (85, 11),
            Method::Other {
                class_id,
                method_id,
            } => (*class_id, *method_id),
        }
    }

    /// The method's ids as text, `class.method` (`60.40`), for messages.
    pub fn name(&self) -> String {
        let (class_id, method_id) = self.ids();
        format!("{class_id}.{method_id}")
    }

    /// Whether content (a header frame and body frames) follows the method.
    fn has_content(&self) -> bool {
        matches!(
            self,
            Method::BasicPublish { .. } | Method::BasicReturn { .. } | Method::BasicDeliver { .. }
        )
    }
}

/// The properties of a message (the `basic` class's content header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// MIME content type.
    pub content_type: Option<String>,
    /// MIME content encoding.
    pub content_encoding: Option<String>,
    /// Application headers.
    pub headers: Option<Table>,
    /// 1 transient, 2 persistent.
    pub delivery_mode: Option<u8>,
    /// 0 to 9.
    pub priority: Option<u8>,
    /// Application correlation id.
    pub correlation_id: Option<String>,
    /// Where replies go.
    pub reply_to: Option<String>,
    /// Per-message TTL, in milliseconds as text.
    pub expiration: Option<String>,
    /// Application message id.
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Message type name.
    pub kind: Option<String>,
    /// The publishing user (checked by RabbitMQ).
    pub user_id: Option<String>,
    /// The publishing application.
    pub app_id: Option<String>,
    /// Deprecated, unused.
    pub cluster_id: Option<String>,
}

/// A message assembled from a content-bearing method and its content frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The method (`basic.deliver` or `basic.return`).
    pub method: Method,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Vec<u8>,
}

/// What [`Reader::next`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A method without content, on a channel.
    Method(u16, Method),
    /// A message, on a channel.
    Content(u16, Content),
    /// A heartbeat.
    Heartbeat,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A method frame: channel and method.
    Method(u16, Method),
    /// A content header: channel, class id, body size and properties.
    Header(u16, u16, u64, Properties),
    /// A body frame: channel and bytes.
    Body(u16, Vec<u8>),
    /// A heartbeat.
    Heartbeat,
}

/// Splits the broker's byte stream into frames and messages, however it was cut into
/// reads.
#[derive(Debug)]
pub struct Reader {
    /// Received bytes; those before `start` are consumed.
    buffer: Vec<u8>,
    /// Where the next frame begins in `buffer`.
    start: usize,
    /// The largest frame accepted (payload and overhead).
    frame_max: usize,
    /// A message being assembled: channel, method, then its header once it came.
    partial: Option<Partial>,
    /// Whether a frame was read: only the broker's first bytes may be a protocol header
    /// (`start` is 0 again whenever the buffer was used up).
    framed: bool,
}

/// A message whose content frames have not all arrived.
#[derive(Debug)]
struct Partial {
    /// The channel.
    channel: u16,
    /// The content-bearing method.
    method: Method,
    /// Its body size and properties, once the header arrived.
    header: Option<(u64, Properties)>,
    /// The body so far.
    body: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            frame_max: 128 * 1024,
            partial: None,
            framed: false,
        }
    }
}

impl Reader {
    /// Sets the largest frame accepted once `connection.tune` agreed on it (0: no limit,
    /// which this reader caps at 16 MiB).
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = match frame_max {
            0 => 16 << 20,
            n => (n as usize).max(MIN_FRAME_MAX as usize),
        };
    }

    /// Adds bytes read from the broker.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Returns the next complete method, message or heartbeat, or `None` when more bytes
    /// are needed.
    // Not an `Iterator`: `None` means "feed more bytes", not the end, and an error does not
    // end the stream. (The lint fires only with feature `fuzzing`, which makes this public.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        loop {
            let Some(frame) = self.next_frame()? else {
                return Ok(None);
            };
            if let Some(incoming) = self.assemble(frame)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Returns the next complete frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let input = &self.buffer[self.start..];
        if input.len() < 7 {
            return Ok(None);
        }
        if !self.framed && input.starts_with(b"AMQP") {
            // A protocol header (8 bytes): the broker refuses the version and closes.
            let Some(version) = input.get(4..8) else {
                return Ok(None);
            };
            return bad(format!(
                "the broker does not speak AMQP 0-9-1 (it answered with protocol header {})",
                version
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join("-")
            ));
        }
        let size = u32::from_be_bytes([input[3], input[4], input[5], input[6]]) as usize;
        if size + FRAME_OVERHEAD > self.frame_max {
            return bad(format!(
                "frame of {size} bytes is larger than the agreed frame-max of {} bytes",
                self.frame_max
            ));
        }
        if input.len() < size + FRAME_OVERHEAD {
            return Ok(None);
        }
        let frame = decode_frame(&input[..size + FRAME_OVERHEAD])?;
        self.framed = true;
        self.start += size + FRAME_OVERHEAD;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Feeds a frame to the message being assembled; returns what is complete.
    fn assemble(&mut self, frame: Frame) -> Result<Option<Incoming>, ProtocolError> {
        if let Some(partial) = &mut self.partial {
            match frame {
                Frame::Header(channel, _, size, properties)
                    if channel == partial.channel && partial.header.is_none() =>
                {
                    partial.header = Some((size, properties));
                }
                Frame::Body(channel, bytes)
                    if channel == partial.channel && partial.header.is_some() =>
                {
                    partial.body.extend_from_slice(&bytes);
                }
                Frame::Heartbeat => return Ok(Some(Incoming::Heartbeat)),
                _ => {
                    return bad(format!(
                        "a frame interrupted the content of method {} on channel {}",
                        partial.method.name(),
                        partial.channel
                    ))
                }
            }
            let size = partial.header.as_ref().map_or(0, |h| h.0);
            let received = partial.body.len() as u64;
            if received > size {
                return bad(format!(
                    "content body of {received} bytes is larger than its header's {size}"
                ));
            }
            if partial.header.is_none() || received < size {
                return Ok(None);
            }
            let partial = self.partial.take().expect("checked above");
            let (_, properties) = partial.header.expect("checked above");
            return Ok(Some(Incoming::Content(
                partial.channel,
                Content {
                    method: partial.method,
                    properties,
                    body: partial.body,
                },
            )));
        }
        match frame {
            Frame::Method(channel, method) if method.has_content() => {
                self.partial = Some(Partial {
                    channel,
                    method,
                    header: None,
                    body: Vec::new(),
                });
                Ok(None)
            }
            Frame::Method(channel, method) => Ok(Some(Incoming::Method(channel, method))),
            Frame::Heartbeat => Ok(Some(Incoming::Heartbeat)),
            _ => bad("content frame without a method"),
        }
    }
}

/// Decodes one whole frame (`bytes` is exactly the frame).
fn decode_frame(bytes: &[u8]) -> Result<Frame, ProtocolError> {
    let kind = bytes[0];
    let channel = u16::from_be_bytes([bytes[1], bytes[2]]);
    let payload = &bytes[7..bytes.len() - 1];
    if bytes[bytes.len() - 1] != FRAME_END {
        return bad(format!(
            "frame does not end with 0xCE (type {kind}, {} bytes)",
            payload.len()
        ));
    }
    let mut r = Cursor(payload);
    let frame = match kind {
        FRAME_METHOD => Frame::Method(channel, decode_method(&mut r)?),
        FRAME_HEADER => {
            let class_id = r.u16()?;
            let _weight = r.u16()?;
            let size = r.u64()?;
            Frame::Header(channel, class_id, size, decode_properties(&mut r)?)
        }
        FRAME_BODY => {
            r = Cursor(&[]);
            Frame::Body(channel, payload.to_vec())
        }
        FRAME_HEARTBEAT if channel == 0 => Frame::Heartbeat,
        FRAME_HEARTBEAT => return bad(format!("heartbeat on channel {channel}")),
        other => return bad(format!("unknown frame type {other}")),
    };
    if !r.0.is_empty() && !matches!(frame, Frame::Method(_, Method::Other { .. })) {
        return bad(format!(
            "{} unexpected bytes at the end of a frame of type {kind}",
            r.0.len()
        ));
    }
    Ok(frame)
}

/// Reads the arguments of a method frame. The methods only a client sends are decoded in
/// test builds alone (for the round-trip tests): a broker never sends them, and leaving
/// them out keeps the adapter under its size budget.
fn decode_method(r: &mut Cursor) -> Result<Method, ProtocolError> {
    let ids = (r.u16()?, r.u16()?);
    Ok(match ids {
        (10, 10) => Method::ConnectionStart {
            version_major: r.u8()?,
            version_minor: r.u8()?,
            server_properties: r.table()?,
            mechanisms: r.longstr()?,
            locales: r.longstr()?,
        },
        #[cfg(test)]
        (10, 11) => Method::ConnectionStartOk {
            client_properties: r.table()?,
            mechanism: r.shortstr()?,
            response: r.longstr()?,
            locale: r.shortstr()?,
        },
        (10, 30) | (10, 31) => Method::ConnectionTune {
            ok: ids.1 == 31,
            channel_max: r.u16()?,
            frame_max: r.u32()?,
            heartbeat: r.u16()?,
        },
        #[cfg(test)]
        (10, 40) => {
            let vhost = r.shortstr()?;
            r.shortstr()?;
            r.u8()?;
            Method::ConnectionOpen { vhost }
        }
        (10, 41) => {
            r.shortstr()?;
            Method::ConnectionOpenOk
        }
        (10, 50) => Method::ConnectionClose(r.close()?),
        (10, 51) => Method::ConnectionCloseOk,
        (10, 60) => Method::ConnectionBlocked {
            reason: r.shortstr()?,
        },
        (10, 61) => Method::ConnectionUnblocked,
        #[cfg(test)]
        (20, 10) => {
            r.shortstr()?;
            Method::ChannelOpen
        }
        (20, 11) => {
            r.longstr()?;
            Method::ChannelOpenOk
        }
        (20, 40) => Method::ChannelClose(r.close()?),
        (20, 41) => Method::ChannelCloseOk,
        #[cfg(test)]
        (50, 10) => {
            r.u16()?;
            let queue = r.shortstr()?;
            let bits = r.u8()?;
            r.table()?;
            Method::QueueDeclare {
                queue,
                passive: bits & 1 != 0,
                durable: bits & 2 != 0,
                exclusive: bits & 4 != 0,
                auto_delete: bits & 8 != 0,
            }
        }
        (50, 11) => Method::QueueDeclareOk {
            queue: r.shortstr()?,
            message_count: r.u32()?,
            consumer_count: r.u32()?,
        },
        #[cfg(test)]
        (50, 20) => {
            r.u16()?;
            let method = Method::QueueBind {
                queue: r.shortstr()?,
                exchange: r.shortstr()?,
                routing_key: r.shortstr()?,
            };
            r.u8()?;
            r.table()?;
            method
        }
        (50, 21) => Method::QueueBindOk,
        #[cfg(test)]
        (60, 10) => {
            r.u32()?;
            let prefetch_count = r.u16()?;
            r.u8()?;
            Method::BasicQos { prefetch_count }
        }
        (60, 11) => Method::BasicQosOk,
        #[cfg(test)]
        (60, 20) => {
            r.u16()?;
            let queue = r.shortstr()?;
            let consumer_tag = r.shortstr()?;
            let bits = r.u8()?;
            r.table()?;
            Method::BasicConsume {
                queue,
                consumer_tag,
                no_ack: bits & 2 != 0,
                exclusive: bits & 4 != 0,
            }
        }
        (60, 21) => Method::BasicConsumeOk {
            consumer_tag: r.shortstr()?,
        },
        (60, 30) => Method::BasicCancel {
            consumer_tag: r.shortstr()?,
            no_wait: r.u8()? & 1 != 0,
        },
        #[cfg(test)]
        (60, 40) => {
            r.u16()?;
            let exchange = r.shortstr()?;
            let routing_key = r.shortstr()?;
            Method::BasicPublish {
                exchange,
                routing_key,
                mandatory: r.u8()? & 1 != 0,
            }
        }
        (60, 50) => Method::BasicReturn {
            reply_code: r.u16()?,
            reply_text: r.shortstr()?,
            exchange: r.shortstr()?,
            routing_key: r.shortstr()?,
        },
        (60, 60) => Method::BasicDeliver {
            consumer_tag: r.shortstr()?,
            delivery_tag: r.u64()?,
            redelivered: r.u8()? & 1 != 0,
            exchange: r.shortstr()?,
            routing_key: r.shortstr()?,
        },
        (60, 80) => Method::BasicAck {
            delivery_tag: r.u64()?,
            multiple: r.u8()? & 1 != 0,
        },
        (60, 120) => {
            let delivery_tag = r.u64()?;
            let bits = r.u8()?;
            Method::BasicNack {
                delivery_tag,
                multiple: bits & 1 != 0,
                requeue: bits & 2 != 0,
            }
        }
        #[cfg(test)]
        (85, 10) => {
            r.u8()?;
            Method::ConfirmSelect
        }
        (85, 11) => Method::ConfirmSelectOk,
        (class_id, method_id) => Method::Other {
            class_id,
            method_id,
        },
    })
}

/// Reads the property flags and the properties they announce.
fn decode_properties(r: &mut Cursor) -> Result<Properties, ProtocolError> {
    let mut flags = r.u16()?;
    // Bit 0 says another flags word follows; `basic` has 14 properties, so any further
    // words carry no flags this client knows.
    let mut more = flags & 1 != 0;
    while more {
        more = r.u16()? & 1 != 0;
    }
    let mut has = |bit: u16| {
        let set = flags & (1 << bit) != 0;
        flags &= !(1 << bit);
        set
    };
    let mut p = Properties::default();
    if has(15) {
        p.content_type = Some(r.shortstr()?);
    }
    if has(14) {
        p.content_encoding = Some(r.shortstr()?);
    }
    if has(13) {
        p.headers = Some(r.table()?);
    }
    if has(12) {
        p.delivery_mode = Some(r.u8()?);
    }
    if has(11) {
        p.priority = Some(r.u8()?);
    }
    if has(10) {
        p.correlation_id = Some(r.shortstr()?);
    }
    if has(9) {
        p.reply_to = Some(r.shortstr()?);
    }
    if has(8) {
        p.expiration = Some(r.shortstr()?);
    }
    if has(7) {
        p.message_id = Some(r.shortstr()?);
    }
    if has(6) {
        p.timestamp = Some(r.u64()?);
    }
    if has(5) {
        p.kind = Some(r.shortstr()?);
    }
    if has(4) {
        p.user_id = Some(r.shortstr()?);
    }
    if has(3) {
        p.app_id = Some(r.shortstr()?);
    }
    if has(2) {
        p.cluster_id = Some(r.shortstr()?);
    }
    if flags & !1 != 0 {
        return bad(format!("unknown content property flags {flags:#06x}"));
    }
    Ok(p)
}

/// Reads big-endian values off the front of a byte slice.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// Takes `n` bytes.
    fn take(&mut self, n: usize) -> Result<&[u8], ProtocolError> {
        if self.0.len() < n {
            return bad(format!(
                "frame ends early: {n} bytes needed, {} left",
                self.0.len()
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// Takes `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A short string, as (lossy) UTF-8.
    fn shortstr(&mut self) -> Result<String, ProtocolError> {
        let len = usize::from(self.u8()?);
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn longstr(&mut self) -> Result<Vec<u8>, ProtocolError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    fn close(&mut self) -> Result<Close, ProtocolError> {
        Ok(Close {
            reply_code: self.u16()?,
            reply_text: self.shortstr()?,
            class_id: self.u16()?,
            method_id: self.u16()?,
        })
    }

    fn table(&mut self) -> Result<Table, ProtocolError> {
        let len = self.u32()? as usize;
        let mut inner = Cursor(self.take(len)?);
        let mut table = Vec::new();
        while !inner.0.is_empty() {
            let name = inner.shortstr()?;
            table.push((name, inner.value()?));
        }
        Ok(table)
    }

    fn value(&mut self) -> Result<FieldValue, ProtocolError> {
        Ok(match self.u8()? {
            b't' => FieldValue::Bool(self.u8()? != 0),
            b'b' => FieldValue::I8(i8::from_be_bytes(self.array()?)),
            b'B' => FieldValue::U8(self.u8()?),
            b's' => FieldValue::I16(i16::from_be_bytes(self.array()?)),
            b'u' => FieldValue::U16(self.u16()?),
            b'I' => FieldValue::I32(i32::from_be_bytes(self.array()?)),
            b'i' => FieldValue::U32(self.u32()?),
            b'l' => FieldValue::I64(i64::from_be_bytes(self.array()?)),
            b'f' => FieldValue::F32(self.u32()?),
            b'd' => FieldValue::F64(self.u64()?),
            b'D' => FieldValue::Decimal(self.u8()?, self.u32()?),
            b'S' => FieldValue::LongStr(self.longstr()?),
            b'A' => {
                let len = self.u32()? as usize;
                let mut inner = Cursor(self.take(len)?);
                let mut values = Vec::new();
                while !inner.0.is_empty() {
                    values.push(inner.value()?);
                }
                FieldValue::Array(values)
            }
            b'T' => FieldValue::Timestamp(self.u64()?),
            b'F' => FieldValue::Table(self.table()?),
            b'V' => FieldValue::Void,
            b'x' => FieldValue::Bytes(self.longstr()?),
            other => return bad(format!("unknown field type {other}")),
        })
    }
}

/// Writes big-endian values.
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn shortstr(&mut self, text: &str) -> Result<(), ProtocolError> {
        let Ok(len) = u8::try_from(text.len()) else {
            return bad(format!(
                "`{text}` is longer than AMQP's 255-byte limit for names"
            ));
        };
        self.u8(len);
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }

    fn longstr(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.u32(long_len(bytes.len())?);
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes a `u32` length placeholder, runs `body`, then fills the length in.
    fn sized(
        &mut self,
        body: impl FnOnce(&mut Writer) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let at = self.0.len();
        self.u32(0);
        body(self)?;
        let len = long_len(self.0.len() - at - 4)?;
        self.0[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn table(&mut self, table: &[(String, FieldValue)]) -> Result<(), ProtocolError> {
        self.sized(|w| {
            for (name, value) in table {
                w.shortstr(name)?;
                w.value(value)?;
            }
            Ok(())
        })
    }

    fn value(&mut self, value: &FieldValue) -> Result<(), ProtocolError> {
        match value {
            FieldValue::Bool(v) => {
                self.u8(b't');
                self.u8(u8::from(*v));
            }
            FieldValue::I8(v) => {
                self.u8(b'b');
                self.0.extend_from_slice(&v.to_be_bytes());
            }
            FieldValue::U8(v) => {
                self.u8(b'B');
                self.u8(*v);
            }
            FieldValue::I16(v) => {
                self.u8(b's');
                self.0.extend_from_slice(&v.to_be_bytes());
            }
            FieldValue::U16(v) => {
                self.u8(b'u');
                self.u16(*v);
            }
            FieldValue::I32(v) => {
                self.u8(b'I');
                self.0.extend_from_slice(&v.to_be_bytes());
            }
            FieldValue::U32(v) => {
                self.u8(b'i');
                self.u32(*v);
            }
            FieldValue::I64(v) => {
                self.u8(b'l');
                self.0.extend_from_slice(&v.to_be_bytes());
            }
            FieldValue::F32(bits) => {
                self.u8(b'f');
                self.u32(*bits);
            }
            FieldValue::F64(bits) => {
                self.u8(b'd');
                self.u64(*bits);
            }
            FieldValue::Decimal(scale, v) => {
                self.u8(b'D');
                self.u8(*scale);
                self.u32(*v);
            }
            FieldValue::LongStr(bytes) => {
                self.u8(b'S');
                self.longstr(bytes)?;
            }
            FieldValue::Array(values) => {
                self.u8(b'A');
                self.sized(|w| values.iter().try_for_each(|v| w.value(v)))?;
            }
            FieldValue::Timestamp(v) => {
                self.u8(b'T');
                self.u64(*v);
            }
            FieldValue::Table(table) => {
                self.u8(b'F');
                self.table(table)?;
            }
            FieldValue::Void => self.u8(b'V'),
            FieldValue::Bytes(bytes) => {
                self.u8(b'x');
                self.longstr(bytes)?;
            }
        }
        Ok(())
    }

    fn close(&mut self, close: &Close) -> Result<(), ProtocolError> {
        self.u16(close.reply_code);
        self.shortstr(&close.reply_text)?;
        self.u16(close.class_id);
        self.u16(close.method_id);
        Ok(())
    }
}

/// A length that must fit in 32 bits.
fn long_len(len: usize) -> Result<u32, ProtocolError> {
    u32::try_from(len).or_else(|_| bad(format!("{len} bytes do not fit in one AMQP field")))
}

/// Packs bits into an octet, the first in the least significant bit.
fn bits(flags: &[bool]) -> u8 {
    flags
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &set)| acc | (u8::from(set) << i))
}

/// Appends a frame of type `kind` on `channel` whose payload `payload` writes.
fn frame(
    out: &mut Vec<u8>,
    kind: u8,
    channel: u16,
    payload: impl FnOnce(&mut Writer) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    let at = out.len();
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let result = Writer(out).sized(payload);
    if result.is_err() {
        out.truncate(at);
        return result;
    }
    out.push(FRAME_END);
    Ok(())
}

/// Appends a method frame; fails (appending nothing) when a name is longer than 255
/// bytes.
pub fn encode_method(
    out: &mut Vec<u8>,
    channel: u16,
    method: &Method,
) -> Result<(), ProtocolError> {
    frame(out, FRAME_METHOD, channel, |w| {
        let (class_id, method_id) = method.ids();
        w.u16(class_id);
        w.u16(method_id);
        encode_arguments(w, method)
    })
}

/// Writes a method's arguments. The methods only a broker sends are encoded in test builds
/// alone (for the round-trip tests); see [`decode_method`].
fn encode_arguments(w: &mut Writer, method: &Method) -> Result<(), ProtocolError> {
    match method {
        #[cfg(test)]
        Method::ConnectionStart {
            version_major,
            version_minor,
            server_properties,
            mechanisms,
            locales,
        } => {
            w.u8(*version_major);
            w.u8(*version_minor);
            w.table(server_properties)?;
            w.longstr(mechanisms)?;
            w.longstr(locales)?;
        }
        Method::ConnectionStartOk {
            client_properties,
            mechanism,
            response,
            locale,
        } => {
            w.table(client_properties)?;
            w.shortstr(mechanism)?;
            w.longstr(response)?;
            w.shortstr(locale)?;
        }
        Method::ConnectionTune {
            channel_max,
            frame_max,
            heartbeat,
            ..
        } => {
            w.u16(*channel_max);
            w.u32(*frame_max);
            w.u16(*heartbeat);
        }
        Method::ConnectionOpen { vhost } => {
            w.shortstr(vhost)?;
            w.shortstr("")?;
            w.u8(0);
        }
        #[cfg(test)]
        Method::ConnectionOpenOk => w.shortstr("")?,
        Method::ConnectionClose(close) | Method::ChannelClose(close) => w.close(close)?,
        #[cfg(test)]
        Method::ConnectionBlocked { reason } => w.shortstr(reason)?,
        Method::ChannelOpen => w.shortstr("")?,
        #[cfg(test)]
        Method::ChannelOpenOk => w.longstr(b"")?,
        Method::QueueDeclare {
            queue,
            passive,
            durable,
            exclusive,
            auto_delete,
        } => {
            w.u16(0);
            w.shortstr(queue)?;
            w.u8(bits(&[*passive, *durable, *exclusive, *auto_delete, false]));
            w.table(&[])?;
        }
        #[cfg(test)]
        Method::QueueDeclareOk {
            queue,
            message_count,
            consumer_count,
        } => {
            w.shortstr(queue)?;
            w.u32(*message_count);
            w.u32(*consumer_count);
        }
        Method::QueueBind {
            queue,
            exchange,
            routing_key,
        } => {
            w.u16(0);
            w.shortstr(queue)?;
            w.shortstr(exchange)?;
            w.shortstr(routing_key)?;
            w.u8(0);
            w.table(&[])?;
        }
        Method::BasicQos { prefetch_count } => {
            w.u32(0);
            w.u16(*prefetch_count);
            w.u8(0);
        }
        Method::BasicConsume {
            queue,
            consumer_tag,
            no_ack,
            exclusive,
        } => {
            w.u16(0);
            w.shortstr(queue)?;
            w.shortstr(consumer_tag)?;
            w.u8(bits(&[false, *no_ack, *exclusive, false]));
            w.table(&[])?;
        }
        #[cfg(test)]
        Method::BasicConsumeOk { consumer_tag } => w.shortstr(consumer_tag)?,
        Method::BasicCancel {
            consumer_tag,
            no_wait,
        } => {
            w.shortstr(consumer_tag)?;
            w.u8(bits(&[*no_wait]));
        }
        Method::BasicPublish {
            exchange,
            routing_key,
            mandatory,
        } => {
            w.u16(0);
            w.shortstr(exchange)?;
            w.shortstr(routing_key)?;
            w.u8(bits(&[*mandatory, false]));
        }
        #[cfg(test)]
        Method::BasicReturn {
            reply_code,
            reply_text,
            exchange,
            routing_key,
        } => {
            w.u16(*reply_code);
            w.shortstr(reply_text)?;
            w.shortstr(exchange)?;
            w.shortstr(routing_key)?;
        }
        #[cfg(test)]
        Method::BasicDeliver {
            consumer_tag,
            delivery_tag,
            redelivered,
            exchange,
            routing_key,
        } => {
            w.shortstr(consumer_tag)?;
            w.u64(*delivery_tag);
            w.u8(bits(&[*redelivered]));
            w.shortstr(exchange)?;
            w.shortstr(routing_key)?;
        }
        Method::BasicAck {
            delivery_tag,
            multiple,
        } => {
            w.u64(*delivery_tag);
            w.u8(bits(&[*multiple]));
        }
        Method::BasicNack {
            delivery_tag,
            multiple,
            requeue,
        } => {
            w.u64(*delivery_tag);
            w.u8(bits(&[*multiple, *requeue]));
        }
        Method::ConfirmSelect => w.u8(0),
        Method::ConnectionCloseOk
        | Method::ConnectionUnblocked
        | Method::ChannelCloseOk
        | Method::QueueBindOk
        | Method::BasicQosOk
        | Method::ConfirmSelectOk
        | Method::Other { .. } => {}
        #[cfg(not(test))]
        _ => {}
    }
    Ok(())
}

/// Appends the content of a `basic.publish` (or a returned or delivered message): a
/// header frame and the body in frames of at most `frame_max` bytes. Fails (appending
/// nothing) when a property does not fit its field.
pub fn encode_content(
    out: &mut Vec<u8>,
    channel: u16,
    properties: &Properties,
    body: &[u8],
    frame_max: u32,
) -> Result<(), ProtocolError> {
    let at = out.len();
    let result = frame(out, FRAME_HEADER, channel, |w| {
        w.u16(BASIC);
        w.u16(0);
        w.u64(body.len() as u64);
        encode_properties(w, properties)
    });
    if result.is_err() {
        out.truncate(at);
        return result;
    }
    let chunk = (frame_max.max(MIN_FRAME_MAX) as usize) - FRAME_OVERHEAD;
    for part in body.chunks(chunk) {
        frame(out, FRAME_BODY, channel, |w| {
            w.0.extend_from_slice(part);
            Ok(())
        })?;
    }
    Ok(())
}

/// Writes the property flags and the properties that are set.
fn encode_properties(w: &mut Writer, p: &Properties) -> Result<(), ProtocolError> {
    let present = [
        p.content_type.is_some(),
        p.content_encoding.is_some(),
        p.headers.is_some(),
        p.delivery_mode.is_some(),
        p.priority.is_some(),
        p.correlation_id.is_some(),
        p.reply_to.is_some(),
        p.expiration.is_some(),
        p.message_id.is_some(),
        p.timestamp.is_some(),
        p.kind.is_some(),
        p.user_id.is_some(),
        p.app_id.is_some(),
        p.cluster_id.is_some(),
    ];
    let flags = present
        .iter()
        .enumerate()
        .fold(0u16, |acc, (i, &set)| acc | (u16::from(set) << (15 - i)));
    w.u16(flags);
    let short = |w: &mut Writer, v: &Option<String>| match v {
        Some(text) => w.shortstr(text),
        None => Ok(()),
    };
    short(w, &p.content_type)?;
    short(w, &p.content_encoding)?;
    if let Some(headers) = &p.headers {
        w.table(headers)?;
    }
    if let Some(v) = p.delivery_mode {
        w.u8(v);
    }
    if let Some(v) = p.priority {
        w.u8(v);
    }
    short(w, &p.correlation_id)?;
    short(w, &p.reply_to)?;
    short(w, &p.expiration)?;
    short(w, &p.message_id)?;
    if let Some(v) = p.timestamp {
        w.u64(v);
    }
    short(w, &p.kind)?;
    short(w, &p.user_id)?;
    short(w, &p.app_id)?;
    short(w, &p.cluster_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic pseudo-random generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
        }

        fn flip(&mut self) -> bool {
            self.below(2) == 1
        }

        fn u64(&mut self) -> u64 {
            (self.below(1 << 30) as u64) << 34 | self.below(1 << 30) as u64
        }

        fn text(&mut self) -> String {
            let len = self.below(12);
            (0..len)
                .map(|_| ['a', 'Z', '.', '#', '*', ' ', 'é', '0'][self.below(8)])
                .collect()
        }

        fn maybe_text(&mut self) -> Option<String> {
            self.flip().then(|| self.text())
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.below(256) as u8).collect()
        }

        fn value(&mut self, depth: usize) -> FieldValue {
            match self.below(if depth > 1 { 15 } else { 17 }) {
                0 => FieldValue::Bool(self.flip()),
                1 => FieldValue::I8(self.below(256) as u8 as i8),
                2 => FieldValue::U8(self.below(256) as u8),
                3 => FieldValue::I16(self.below(65536) as u16 as i16),
                4 => FieldValue::U16(self.below(65536) as u16),
                5 => FieldValue::I32(self.u64() as i32),
                6 => FieldValue::U32(self.u64() as u32),
                7 => FieldValue::I64(self.u64() as i64),
                8 => FieldValue::F32(self.u64() as u32),
                9 => FieldValue::F64(self.u64()),
                10 => FieldValue::Decimal(self.below(5) as u8, self.u64() as u32),
                11 => FieldValue::text(&self.text()),
                12 => FieldValue::Timestamp(self.u64()),
                13 => FieldValue::Void,
                14 => {
                    let len = self.below(20);
                    FieldValue::Bytes(self.bytes(len))
                }
                15 => {
                    FieldValue::Array((0..self.below(3)).map(|_| self.value(depth + 1)).collect())
                }
                _ => FieldValue::Table(self.table(depth + 1)),
            }
        }

        fn table(&mut self, depth: usize) -> Table {
            (0..self.below(4))
                .map(|_| (self.text(), self.value(depth)))
                .collect()
        }

        fn properties(&mut self) -> Properties {
            Properties {
                content_type: self.maybe_text(),
                content_encoding: self.maybe_text(),
                headers: self.flip().then(|| self.table(0)),
                delivery_mode: self.flip().then(|| self.below(3) as u8),
                priority: self.flip().then(|| self.below(10) as u8),
                correlation_id: self.maybe_text(),
                reply_to: self.maybe_text(),
                expiration: self.maybe_text(),
                message_id: self.maybe_text(),
                timestamp: self.flip().then(|| self.u64()),
                kind: self.maybe_text(),
                user_id: self.maybe_text(),
                app_id: self.maybe_text(),
                cluster_id: self.maybe_text(),
            }
        }

        fn close(&mut self) -> Close {
            Close {
                reply_code: self.below(600) as u16,
                reply_text: self.text(),
                class_id: self.below(100) as u16,
                method_id: self.below(100) as u16,
            }
        }

        fn method(&mut self) -> Method {
            match self.below(30) {
                0 => Method::ConnectionStart {
                    version_major: 0,
                    version_minor: 9,
                    server_properties: self.table(0),
                    mechanisms: b"PLAIN AMQPLAIN".to_vec(),
                    locales: b"en_US".to_vec(),
                },
                1 => Method::ConnectionStartOk {
                    client_properties: self.table(0),
                    mechanism: "PLAIN".into(),
                    response: self.bytes(10),
                    locale: self.text(),
                },
                2 => Method::ConnectionTune {
                    ok: self.flip(),
                    channel_max: self.below(65536) as u16,
                    frame_max: self.u64() as u32,
                    heartbeat: self.below(65536) as u16,
                },
                3 => Method::ConnectionOpen { vhost: self.text() },
                4 => Method::ConnectionOpenOk,
                5 => Method::ConnectionClose(self.close()),
                6 => Method::ConnectionCloseOk,
                7 => Method::ConnectionBlocked {
                    reason: self.text(),
                },
                8 => Method::ConnectionUnblocked,
                9 => Method::ChannelOpen,
                10 => Method::ChannelOpenOk,
                11 => Method::ChannelClose(self.close()),
                12 => Method::ChannelCloseOk,
                13 => Method::QueueDeclare {
                    queue: self.text(),
                    passive: self.flip(),
                    durable: self.flip(),
                    exclusive: self.flip(),
                    auto_delete: self.flip(),
                },
                14 => Method::QueueDeclareOk {
                    queue: self.text(),
                    message_count: self.u64() as u32,
                    consumer_count: self.u64() as u32,
                },
                15 => Method::QueueBind {
                    queue: self.text(),
                    exchange: self.text(),
                    routing_key: self.text(),
                },
                16 => Method::QueueBindOk,
                17 => Method::BasicQos {
                    prefetch_count: self.below(65536) as u16,
                },
                18 => Method::BasicQosOk,
                19 => Method::BasicConsume {
                    queue: self.text(),
                    consumer_tag: self.text(),
                    no_ack: self.flip(),
                    exclusive: self.flip(),
                },
                20 => Method::BasicConsumeOk {
                    consumer_tag: self.text(),
                },
                21 => Method::BasicCancel {
                    consumer_tag: self.text(),
                    no_wait: self.flip(),
                },
                22 => Method::BasicAck {
                    delivery_tag: self.u64(),
                    multiple: self.flip(),
                },
                23 => Method::BasicNack {
                    delivery_tag: self.u64(),
                    multiple: self.flip(),
                    requeue: self.flip(),
                },
                24 => Method::ConfirmSelect,
                25 => Method::ConfirmSelectOk,
                26 => Method::Other {
                    class_id: 90,
                    method_id: 11,
                },
                _ => Method::BasicQosOk,
            }
        }

        fn content_method(&mut self) -> Method {
            match self.below(2) {
                0 => Method::BasicDeliver {
                    consumer_tag: self.text(),
                    delivery_tag: self.u64(),
                    redelivered: self.flip(),
                    exchange: self.text(),
                    routing_key: self.text(),
                },
                _ => Method::BasicReturn {
                    reply_code: 312,
                    reply_text: self.text(),
                    exchange: self.text(),
                    routing_key: self.text(),
                },
            }
        }
    }

    /// A random sequence of what a broker sends, and its bytes.
    fn random_stream(rng: &mut Rng, frame_max: u32) -> (Vec<Incoming>, Vec<u8>) {
        let mut expected = Vec::new();
        let mut bytes = Vec::new();
        for _ in 0..rng.below(6) + 1 {
            let channel = rng.below(3) as u16;
            match rng.below(3) {
                0 => {
                    let method = rng.method();
                    encode_method(&mut bytes, channel, &method).unwrap();
                    expected.push(Incoming::Method(channel, method));
                }
                1 => {
                    bytes.extend_from_slice(HEARTBEAT);
                    expected.push(Incoming::Heartbeat);
                }
                _ => {
                    let method = rng.content_method();
                    let properties = rng.properties();
                    let len = rng.below(3 * frame_max as usize);
                    let body = rng.bytes(len);
                    encode_method(&mut bytes, channel, &method).unwrap();
                    encode_content(&mut bytes, channel, &properties, &body, frame_max).unwrap();
                    expected.push(Incoming::Content(
                        channel,
                        Content {
                            method,
                            properties,
                            body,
                        },
                    ));
                }
            }
        }
        (expected, bytes)
    }

    fn read_all(reader: &mut Reader) -> Result<Vec<Incoming>, ProtocolError> {
        let mut out = Vec::new();
        while let Some(incoming) = reader.next()? {
            out.push(incoming);
        }
        Ok(out)
    }

    #[test]
    fn frames_round_trip() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..500 {
            let (expected, bytes) = random_stream(&mut rng, MIN_FRAME_MAX);
            let mut reader = Reader::default();
            reader.set_frame_max(MIN_FRAME_MAX);
            reader.push(&bytes);
            assert_eq!(read_all(&mut reader).unwrap(), expected);
        }
    }

    #[test]
    fn split_reads_at_every_byte_boundary_give_the_same_result() {
        let mut rng = Rng(42);
        for _ in 0..40 {
            let (expected, bytes) = random_stream(&mut rng, MIN_FRAME_MAX);
            for cut in 0..=bytes.len() {
                let mut reader = Reader::default();
                reader.set_frame_max(MIN_FRAME_MAX);
                reader.push(&bytes[..cut]);
                let mut got = read_all(&mut reader).unwrap();
                reader.push(&bytes[cut..]);
                got.extend(read_all(&mut reader).unwrap());
                assert_eq!(got, expected, "cut at {cut} of {}", bytes.len());
            }
        }
        // Byte by byte.
        let (expected, bytes) = random_stream(&mut rng, MIN_FRAME_MAX);
        let mut reader = Reader::default();
        let mut got = Vec::new();
        for byte in &bytes {
            reader.push(std::slice::from_ref(byte));
            got.extend(read_all(&mut reader).unwrap());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut rng = Rng(7);
        let mut errors = 0;
        for round in 0..3000 {
            let bytes = if round % 2 == 0 {
                let len = rng.below(64);
                rng.bytes(len)
            } else {
                // A valid stream with one byte changed.
                let (_, mut bytes) = random_stream(&mut rng, MIN_FRAME_MAX);
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
                bytes
            };
            let mut reader = Reader::default();
            reader.push(&bytes);
            if read_all(&mut reader).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 1000, "only {errors} of 3000 inputs were rejected");
    }

    #[test]
    fn a_protocol_header_is_read_whole_however_it_arrives() {
        // Found by the fuzz target amqp_frames: with 7 of its 8 bytes in, the error named
        // a 3-part version, so the error depended on how the socket cut the stream.
        let mut whole = Reader::default();
        whole.push(b"AMQP\x00\x00\x09\x01");
        let expected = whole.next().unwrap_err();
        assert!(
            expected.0.ends_with("protocol header 0-0-9-1)"),
            "{expected}"
        );
        let mut split = Reader::default();
        split.push(b"AMQP\x00\x00\x09");
        assert_eq!(split.next(), Ok(None));
        split.push(b"\x01");
        assert_eq!(split.next(), Err(expected));
        // After a frame, `AMQP` is the start of a frame like any other (type 0x41, an
        // error), also when the frame used up the buffer; it was taken for a protocol
        // header when the socket happened to cut the stream right before it.
        let heartbeat = [8, 0, 0, 0, 0, 0, 0, 0xce];
        let mut reader = Reader::default();
        reader.push(&heartbeat);
        assert_eq!(reader.next(), Ok(Some(Incoming::Heartbeat)));
        reader.push(b"AMQP\x00\x00\x09\x01");
        let e = reader.next().unwrap_err();
        assert!(!e.0.contains("protocol header"), "{e}");
        // The inputs as the fuzzer saved them: fed whole or a byte at a time, the same error.
        let saved: [&[u8]; 7] = [
            &[
                0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x0a, 0x00, 0xcc, 0xfe, 0x6c, 0xf1,
                0xc1, 0x46, 0x55, 0x53, 0x45, 0x44, 0x00, 0x00, 0x00, 0x00, 0xce, 0x41, 0x4d, 0x51,
                0x50, 0x00, 0x00, 0x00, 0xce,
            ],
            &[
                0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20, 0x00, 0x3c, 0x00, 0x38, 0x00, 0x00, 0x00,
                0x02, 0x00, 0x01, 0x00, 0x00, 0x19, 0xe4, 0x00, 0xf6, 0x00, 0x04, 0x09, 0x61, 0x6d,
                0x71, 0x2e, 0x74, 0x6f, 0x70, 0x01, 0x00, 0x00, 0x00, 0x2e, 0x62, 0xce, 0x41, 0x4d,
                0x51, 0x50, 0x00, 0xff, 0x00,
            ],
            &[0x41, 0x4d, 0x51, 0x50, 0x00, 0x26, 0x00, 0x00],
            &[0x41, 0x4d, 0x51, 0x50, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00],
            &[
                0x41, 0x4d, 0x51, 0x50, 0x00, 0x16, 0x00, 0x82, 0x19, 0x00, 0x00,
            ],
            &[
                0x41, 0x4d, 0x51, 0x50, 0x41, 0x4d, 0x51, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00,
            ],
            &[0x41, 0x4d, 0x51, 0x50, 0xff, 0x27, 0x00, 0x46],
        ];
        for bytes in saved {
            let read_all = |pieces: &mut dyn Iterator<Item = &[u8]>| {
                let mut reader = Reader::default();
                let mut got = Vec::new();
                for piece in pieces {
                    reader.push(piece);
                    loop {
                        match reader.next() {
                            Ok(Some(incoming)) => got.push(Ok(incoming)),
                            Ok(None) => break,
                            Err(e) => return [got, vec![Err(e)]].concat(),
                        }
                    }
                }
                got
            };
            let whole = read_all(&mut std::iter::once(bytes));
            assert!(whole.last().is_some_and(Result::is_err), "{bytes:02x?}");
            assert_eq!(read_all(&mut bytes.chunks(1)), whole, "{bytes:02x?}");
        }
    }

    #[test]
    fn rejects_what_is_not_amqp() {
        let mut reader = Reader::default();
        reader.push(b"AMQP\x00\x00\x09\x01");
        let e = reader.next().unwrap_err().to_string();
        assert!(e.contains("does not speak AMQP 0-9-1"), "{e}");
        let mut reader = Reader::default();
        reader.push(&[1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 41, 0]);
        assert!(reader.next().unwrap_err().to_string().contains("0xCE"));
        let mut reader = Reader::default();
        reader.push(&[9, 0, 0, 0, 0, 0, 0, FRAME_END]);
        assert!(reader.next().is_err());
        let mut reader = Reader::default();
        reader.set_frame_max(MIN_FRAME_MAX);
        reader.push(&[3, 0, 1, 0, 1, 0, 0]);
        let e = reader.next().unwrap_err().to_string();
        assert!(e.contains("larger than the agreed frame-max"), "{e}");
        let mut reader = Reader::default();
        reader.push(&[3, 0, 1, 0, 0, 0, 1, b'x', FRAME_END]);
        let e = reader.next().unwrap_err().to_string();
        assert!(e.contains("content frame without a method"), "{e}");
    }

    #[test]
    fn encodes_known_bytes() {
        assert_eq!(PROTOCOL_HEADER, [b'A', b'M', b'Q', b'P', 0, 0, 9, 1]);
        let mut out = Vec::new();
        encode_method(
            &mut out,
            1,
            &Method::BasicAck {
                delivery_tag: 5,
                multiple: false,
            },
        )
        .unwrap();
        assert_eq!(
            out,
            [1, 0, 1, 0, 0, 0, 13, 0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 5, 0, FRAME_END]
        );
        let long = "x".repeat(256);
        let mut out = Vec::new();
        let e = encode_method(
            &mut out,
            1,
            &Method::QueueBind {
                queue: "q".into(),
                exchange: "amq.topic".into(),
                routing_key: long,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("255-byte limit"), "{e}");
        assert!(out.is_empty(), "nothing is appended on error");
    }

    #[test]
    fn large_bodies_are_split_into_frames() {
        let body = vec![7u8; 10_000];
        let mut out = Vec::new();
        encode_content(&mut out, 1, &Properties::default(), &body, MIN_FRAME_MAX).unwrap();
        let mut reader = Reader::default();
        reader.set_frame_max(MIN_FRAME_MAX);
        reader.push(&out);
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame().unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames.len(), 4, "a header and three body frames");
        assert!(matches!(frames[0], Frame::Header(1, 60, 10_000, _)));
    }

    #[test]
    fn field_values_as_text() {
        assert_eq!(FieldValue::text("hé").to_text(), "hé");
        assert_eq!(FieldValue::I32(-5).to_text(), "-5");
        assert_eq!(FieldValue::Bool(true).to_text(), "true");
        assert_eq!(FieldValue::Decimal(2, 12345).to_text(), "123.45");
        assert_eq!(FieldValue::Decimal(3, 5).to_text(), "0.005");
        assert_eq!(FieldValue::F64(1.5f64.to_bits()).to_text(), "1.5");
        assert_eq!(
            FieldValue::F64((-1.0f64 / 3.0).to_bits()).to_text(),
            "-0.333333"
        );
        assert_eq!(FieldValue::F32(2.0f32.to_bits()).to_text(), "2");
        assert_eq!(FieldValue::F64(f64::NAN.to_bits()).to_text(), "NaN");
        assert_eq!(
            FieldValue::F64(f64::NEG_INFINITY.to_bits()).to_text(),
            "-inf"
        );
        assert_eq!(FieldValue::F64(0.0f64.to_bits()).to_text(), "0");
        assert_eq!(
            FieldValue::Array(vec![FieldValue::U8(1), FieldValue::text("a")]).to_text(),
            "[1, a]"
        );
        assert_eq!(
            FieldValue::Table(vec![("k".into(), FieldValue::Void)]).to_text(),
            "{k: }"
        );
        assert_eq!(FieldValue::Timestamp(1700000000).to_text(), "1700000000");
    }
}
