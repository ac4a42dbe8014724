//! The NATS client protocol as a sans-IO codec: [`Parser`] turns the bytes a server
//! sends into [`ServerOp`]s, and the `encode_*` functions write what a client sends.
//!
//! Wire format (<https://docs.nats.io/reference/reference-protocols/nats-protocol>):
//! every operation is a control line ending in `\r\n`; `MSG` and `HMSG` are followed
//! by a payload of the announced size and another `\r\n`. Operation names are
//! case-insensitive; arguments are separated by spaces or tabs.

use std::fmt;

/// The longest control line accepted (an `INFO` of a large cluster is the longest).
const MAX_CONTROL_LINE: usize = 1 << 20;

/// The largest `MSG` / `HMSG` size accepted: the largest `max_payload` a server allows.
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// The bytes of a client `PING`.
pub const PING: &[u8] = b"PING\r\n";

/// The bytes of a client `PONG` (the answer to a server's `PING`).
pub const PONG: &[u8] = b"PONG\r\n";

/// One operation sent by a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`: the server's description (raw JSON text).
    Info(String),
    /// `MSG` or `HMSG`: a message for one of the client's subscriptions.
    Msg(Msg),
    /// `PING`: the server checks the client is alive; answer with [`PONG`].
    Ping,
    /// `PONG`: the answer to a client `PING`.
    Pong,
    /// `+OK`: an acknowledgement in verbose mode.
    Ok,
    /// `-ERR 'text'`: an error, without the quotes.
    Err(String),
}

/// A message delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The subject it was published on.
    pub subject: String,
    /// The id of the subscription it is delivered to.
    pub sid: u64,
    /// Where replies go, if the publisher gave an address.
    pub reply: Option<String>,
    /// The raw header block of an `HMSG` (`NATS/1.0\r\n...\r\n\r\n`), if any.
    pub headers: Option<Vec<u8>>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Bytes that are not the NATS protocol; the connection cannot continue after it.
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

/// Splits the server's byte stream into operations, however it was cut into reads.
#[derive(Debug, Default)]
pub struct Parser {
    /// Received bytes; those before `start` are consumed.
    buffer: Vec<u8>,
    /// Where the next operation begins in `buffer`.
    start: usize,
}

impl Parser {
    /// Adds bytes read from the server.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Returns the next complete operation, or `None` when more bytes are needed.
    pub fn next_op(&mut self) -> Result<Option<ServerOp>, ProtocolError> {
        let input = &self.buffer[self.start..];
        let Some((op, used)) = parse(input)? else {
            return Ok(None);
        };
        self.start += used;
        Ok(Some(op))
    }
}

/// Parses one operation from the start of `input`: the operation and how many bytes
/// it took, or `None` if `input` ends before the operation does.
fn parse(input: &[u8]) -> Result<Option<(ServerOp, usize)>, ProtocolError> {
    let Some(end) = input
        .iter()
        .take(MAX_CONTROL_LINE)
        .position(|&b| b == b'\n')
    else {
        if input.len() >= MAX_CONTROL_LINE {
            return bad(format!("control line longer than {MAX_CONTROL_LINE} bytes"));
        }
        return Ok(None);
    };
    let line = input[..end].strip_suffix(b"\r").unwrap_or(&input[..end]);
    let line =
        std::str::from_utf8(line).map_err(|_| ProtocolError("control line is not UTF-8".into()))?;
    let after_line = end + 1;
    let (name, rest) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i..].trim_matches([' ', '\t'])),
        None => (line, ""),
    };
    let simple = |op| {
        if rest.is_empty() {
            Ok(Some((op, after_line)))
        } else {
            bad(format!("unexpected arguments after `{name}`"))
        }
    };
    match name.to_ascii_uppercase().as_str() {
        "PING" => simple(ServerOp::Ping),
        "PONG" => simple(ServerOp::Pong),
        "+OK" => simple(ServerOp::Ok),
        "-ERR" => {
            let text = rest.strip_prefix('\'').unwrap_or(rest);
            let text = text.strip_suffix('\'').unwrap_or(text);
            Ok(Some((ServerOp::Err(text.to_string()), after_line)))
        }
        "INFO" if !rest.is_empty() => Ok(Some((ServerOp::Info(rest.to_string()), after_line))),
        "MSG" => parse_msg(rest, false, &input[after_line..], after_line),
        "HMSG" => parse_msg(rest, true, &input[after_line..], after_line),
        _ => {
            let shown: String = line.chars().take(40).collect();
            bad(format!("unknown operation `{shown}`"))
        }
    }
}

/// Parses the arguments of `MSG` / `HMSG` and the payload that follows in `body`;
/// `offset` is where `body` starts in the operation.
fn parse_msg(
    args: &str,
    with_headers: bool,
    body: &[u8],
    offset: usize,
) -> Result<Option<(ServerOp, usize)>, ProtocolError> {
    let args: Vec<&str> = args.split([' ', '\t']).filter(|a| !a.is_empty()).collect();
    let op = if with_headers { "HMSG" } else { "MSG" };
    let sizes = if with_headers { 2 } else { 1 };
    if args.len() != 2 + sizes && args.len() != 3 + sizes {
        return bad(format!("`{op}` with {} arguments", args.len()));
    }
    let (names, sizes) = args.split_at(args.len() - sizes);
    let size = |text: &str| match text.parse::<usize>() {
        Ok(n) if n <= MAX_MESSAGE_SIZE => Ok(n),
        _ => bad(format!("`{op}` with bad size `{text}`")),
    };
    let total = size(sizes[sizes.len() - 1])?;
    let header_size = if with_headers { size(sizes[0])? } else { 0 };
    if header_size > total {
        return bad(format!(
            "`HMSG` header size {header_size} exceeds total size {total}"
        ));
    }
    let sid = names[1]
        .parse::<u64>()
        .map_err(|_| ProtocolError(format!("`{op}` with bad subscription id `{}`", names[1])))?;
    if body.len() < total + 2 {
        return Ok(None);
    }
    if &body[total..total + 2] != b"\r\n" {
        return bad(format!("`{op}` payload not followed by CRLF"));
    }
    let msg = Msg {
        subject: names[0].to_string(),
        sid,
        reply: names.get(2).map(|r| r.to_string()),
        headers: with_headers.then(|| body[..header_size].to_vec()),
        payload: body[header_size..total].to_vec(),
    };
    Ok(Some((ServerOp::Msg(msg), offset + total + 2)))
}

/// Appends `CONNECT {json}` to `out`.
pub fn encode_connect(out: &mut Vec<u8>, json: &str) {
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `PUB` (or `HPUB` when `headers` is given) of `payload` on `subject` to `out`.
pub fn encode_publish(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    let mut line = String::with_capacity(subject.len() + 32);
    line.push_str(if headers.is_some() { "HPUB " } else { "PUB " });
    line.push_str(subject);
    if let Some(reply) = reply {
        line.push(' ');
        line.push_str(reply);
    }
    let header_len = headers.map_or(0, <[u8]>::len);
    if headers.is_some() {
        line.push_str(&format!(" {header_len}"));
    }
    line.push_str(&format!(" {}\r\n", header_len + payload.len()));
    out.extend_from_slice(line.as_bytes());
    if let Some(headers) = headers {
        out.extend_from_slice(headers);
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SUB subject [queue] sid` to `out`.
pub fn encode_subscribe(out: &mut Vec<u8>, subject: &str, queue: Option<&str>, sid: u64) {
    let line = match queue {
        Some(queue) => format!("SUB {subject} {queue} {sid}\r\n"),
        None => format!("SUB {subject} {sid}\r\n"),
    };
    out.extend_from_slice(line.as_bytes());
}

/// Checks that `subject` can be published to (`wildcards` false) or subscribed to
/// (`wildcards` true): non-empty tokens separated by `.`, no whitespace, and `*` / `>`
/// only as whole tokens (`>` last) when wildcards are allowed.
pub fn check_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    if subject.is_empty() {
        return Err("subject is empty".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("subject `{subject}` contains whitespace"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "" => return Err(format!("subject `{subject}` has an empty token")),
            "*" | ">" if !wildcards => {
                return Err(format!(
                    "subject `{subject}` has a wildcard; publish to a concrete subject"
                ))
            }
            ">" if i + 1 != tokens.len() => {
                return Err(format!("subject `{subject}` has `>` before its last token"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a name that becomes one token of a subject or a protocol argument (a queue
/// group, a JetStream stream or consumer name): non-empty, no whitespace, no `.`, `*`, `>`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
    {
        return Err(format!("`{name}` contains whitespace, `.`, `*` or `>`"));
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Writes `op` the way a server does (the reverse of [`Parser`]), for tests.
    pub fn server_bytes(op: &ServerOp) -> Vec<u8> {
        match op {
            ServerOp::Info(json) => format!("INFO {json}\r\n").into_bytes(),
            ServerOp::Ping => b"PING\r\n".to_vec(),
            ServerOp::Pong => b"PONG\r\n".to_vec(),
            ServerOp::Ok => b"+OK\r\n".to_vec(),
            ServerOp::Err(text) => format!("-ERR '{text}'\r\n").into_bytes(),
            ServerOp::Msg(msg) => {
                let reply = msg
                    .reply
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default();
                let total = msg.payload.len() + msg.headers.as_ref().map_or(0, Vec::len);
                let mut out = match &msg.headers {
                    Some(h) => format!(
                        "HMSG {} {}{reply} {} {total}\r\n",
                        msg.subject,
                        msg.sid,
                        h.len()
                    ),
                    None => format!("MSG {} {}{reply} {total}\r\n", msg.subject, msg.sid),
                }
                .into_bytes();
                out.extend_from_slice(msg.headers.as_deref().unwrap_or_default());
                out.extend_from_slice(&msg.payload);
                out.extend_from_slice(b"\r\n");
                out
            }
        }
    }

    /// Parses every complete operation in `bytes`.
    fn parse_all(bytes: &[u8]) -> Result<Vec<ServerOp>, ProtocolError> {
        let mut parser = Parser::default();
        parser.push(bytes);
        let mut ops = Vec::new();
        while let Some(op) = parser.next_op()? {
            ops.push(op);
        }
        Ok(ops)
    }

    fn msg(
        subject: &str,
        sid: u64,
        reply: Option<&str>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> ServerOp {
        ServerOp::Msg(Msg {
            subject: subject.into(),
            sid,
            reply: reply.map(String::from),
            headers: headers.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        })
    }

    #[test]
    fn parses_every_operation() {
        let input = b"INFO {\"max_payload\":1048576}\r\nPING\r\npong\r\n+OK\r\n-ERR 'Authorization Violation'\r\n\
MSG a.b 7 5\r\nhello\r\nMSG a.b 7 _INBOX.x.1 0\r\n\r\nHMSG c 9 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
HMSG c 9 r 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";
        assert_eq!(
            parse_all(input).unwrap(),
            [
                ServerOp::Info("{\"max_payload\":1048576}".into()),
                ServerOp::Ping,
                ServerOp::Pong,
                ServerOp::Ok,
                ServerOp::Err("Authorization Violation".into()),
                msg("a.b", 7, None, None, b"hello"),
                msg("a.b", 7, Some("_INBOX.x.1"), None, b""),
                msg("c", 9, None, Some(b"NATS/1.0\r\n\r\n"), b"hi"),
                msg("c", 9, Some("r"), Some(b"NATS/1.0 503\r\n\r\n"), b""),
            ]
        );
    }

    #[test]
    fn payload_may_hold_crlf_and_binary() {
        let ops = parse_all(b"MSG s 1 6\r\n\r\n\0\xff\r\n\r\n").unwrap();
        assert_eq!(ops, [msg("s", 1, None, None, b"\r\n\0\xff\r\n")]);
    }

    #[test]
    fn tolerates_tabs_and_bare_newlines() {
        let ops = parse_all(b"msg\ts\t1\t2\r\nhi\r\nPING\n").unwrap();
        assert_eq!(ops, [msg("s", 1, None, None, b"hi"), ServerOp::Ping]);
    }

    #[test]
    fn waits_for_incomplete_input() {
        for partial in [
            &b"PIN"[..],
            b"MSG s 1 5\r\nhel",
            b"MSG s 1 5\r\nhello\r",
            b"HMSG s 1 2",
        ] {
            assert_eq!(parse_all(partial).unwrap(), [], "{partial:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        let cases: [(&[u8], &str); 10] = [
            (b"HELLO\r\n", "unknown operation `HELLO`"),
            (b"PING now\r\n", "unexpected arguments after `PING`"),
            (b"INFO\r\n", "unknown operation `INFO`"),
            (b"MSG s 1\r\n", "`MSG` with 2 arguments"),
            (b"MSG s x 1\r\nx\r\n", "`MSG` with bad subscription id `x`"),
            (b"MSG s 1 -1\r\n", "`MSG` with bad size `-1`"),
            (
                b"MSG s 1 99999999999\r\n",
                "`MSG` with bad size `99999999999`",
            ),
            (b"MSG s 1 2\r\nhiXX", "`MSG` payload not followed by CRLF"),
            (
                b"HMSG s 1 5 2\r\n",
                "`HMSG` header size 5 exceeds total size 2",
            ),
            (b"\xff\r\n", "control line is not UTF-8"),
        ];
        for (input, error) in cases {
            assert_eq!(
                parse_all(input),
                Err(ProtocolError(error.into())),
                "{input:?}"
            );
        }
        let long = vec![b'x'; MAX_CONTROL_LINE + 1];
        assert!(parse_all(&long)
            .unwrap_err()
            .0
            .starts_with("control line longer"));
    }

    /// A small deterministic pseudo-random generator (xorshift64*).
    pub struct Rng(u64);

    impl Rng {
        /// Seeds the generator (any seed but 0).
        pub fn new(seed: u64) -> Self {
            Self(seed.max(1))
        }

        /// Returns a number below `n`.
        pub fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        /// Returns `len` random bytes from `alphabet`.
        pub fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    /// A random valid server operation.
    fn random_op(rng: &mut Rng) -> ServerOp {
        const TOKEN: &[u8] = b"abcxyz_-0123456789$";
        let subject = |rng: &mut Rng| {
            let tokens = 1 + rng.below(3);
            (0..tokens)
                .map(|_| {
                    let len = 1 + rng.below(6);
                    String::from_utf8(rng.bytes(len, TOKEN)).unwrap()
                })
                .collect::<Vec<_>>()
                .join(".")
        };
        match rng.below(7) {
            0 => ServerOp::Info(format!("{{\"max_payload\":{}}}", rng.below(1 << 20))),
            1 => ServerOp::Ping,
            2 => ServerOp::Pong,
            3 => ServerOp::Ok,
            4 => ServerOp::Err(format!(
                "Permissions Violation for Publish to {}",
                subject(rng)
            )),
            _ => {
                let len = rng.below(40);
                ServerOp::Msg(Msg {
                    subject: subject(rng),
                    sid: rng.below(1000) as u64,
                    reply: (rng.below(2) == 0).then(|| subject(rng)),
                    headers: (rng.below(2) == 0)
                        .then(|| format!("NATS/1.0\r\nK: {}\r\n\r\n", subject(rng)).into_bytes()),
                    payload: rng.bytes(len, b"ab\r\n\0\xff MSG PING"),
                })
            }
        }
    }

    #[test]
    fn any_split_gives_the_same_operations() {
        let mut rng = Rng::new(0x5eed);
        for _ in 0..40 {
            let ops: Vec<ServerOp> = (0..1 + rng.below(8)).map(|_| random_op(&mut rng)).collect();
            let bytes: Vec<u8> = ops.iter().flat_map(server_bytes).collect();
            assert_eq!(parse_all(&bytes).unwrap(), ops);
            for split in 0..=bytes.len() {
                let mut parser = Parser::default();
                let mut got = Vec::new();
                for part in [&bytes[..split], &bytes[split..]] {
                    parser.push(part);
                    while let Some(op) = parser.next_op().unwrap() {
                        got.push(op);
                    }
                }
                assert_eq!(got, ops, "split at {split}");
            }
            let mut parser = Parser::default();
            let mut got = Vec::new();
            for byte in &bytes {
                parser.push(std::slice::from_ref(byte));
                while let Some(op) = parser.next_op().unwrap() {
                    got.push(op);
                }
            }
            assert_eq!(got, ops, "byte by byte");
        }
    }

    /// Feeds `bytes` in random chunks until the parser errors or runs dry; never panics.
    fn drain(bytes: &[u8], rng: &mut Rng) -> Result<usize, ProtocolError> {
        let mut parser = Parser::default();
        let mut count = 0;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(1 + rng.below(rest.len()));
            rest = tail;
            parser.push(chunk);
            while parser.next_op()?.is_some() {
                count += 1;
            }
        }
        Ok(count)
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut rng = Rng::new(42);
        let mut errors = 0;
        for _ in 0..2000 {
            let len = 1 + rng.below(64);
            let garbage = rng.bytes(len, b"MSGHPINOKER+-\r\n 0123456789\t.\xff{}");
            if drain(&garbage, &mut rng).is_err() {
                errors += 1;
            }
        }
        assert!(
            errors > 1000,
            "only {errors} of 2000 garbage inputs were rejected"
        );
        // Valid streams with one byte changed: an error or other operations, no panic.
        for _ in 0..300 {
            let ops: Vec<ServerOp> = (0..1 + rng.below(5)).map(|_| random_op(&mut rng)).collect();
            let mut bytes: Vec<u8> = ops.iter().flat_map(server_bytes).collect();
            let at = rng.below(bytes.len());
            bytes[at] = b"\r\n 9x\0"[rng.below(6)];
            let _ = drain(&bytes, &mut rng);
        }
    }

    #[test]
    fn encodes_client_operations() {
        let mut out = Vec::new();
        encode_connect(&mut out, "{}");
        encode_publish(&mut out, "a.b", None, None, b"hi");
        encode_publish(&mut out, "a.b", Some("_INBOX.x.1"), None, b"");
        encode_publish(&mut out, "c", None, Some(b"NATS/1.0\r\n\r\n"), b"xyz");
        encode_publish(&mut out, "c", Some("r"), Some(b"NATS/1.0\r\n\r\n"), b"");
        encode_subscribe(&mut out, "a.>", None, 3);
        encode_subscribe(&mut out, "a.*", Some("workers"), 4);
        out.extend_from_slice(PING);
        out.extend_from_slice(PONG);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONNECT {}\r\nPUB a.b 2\r\nhi\r\nPUB a.b _INBOX.x.1 0\r\n\r\n\
HPUB c 12 15\r\nNATS/1.0\r\n\r\nxyz\r\nHPUB c r 12 12\r\nNATS/1.0\r\n\r\n\r\n\
SUB a.> 3\r\nSUB a.* workers 4\r\nPING\r\nPONG\r\n"
        );
    }

    #[test]
    fn checks_subjects_and_names() {
        assert_eq!(check_subject("a.b", false), Ok(()));
        assert_eq!(check_subject("a.*.>", true), Ok(()));
        assert_eq!(check_subject(">", true), Ok(()));
        assert_eq!(check_subject("", true), Err("subject is empty".into()));
        assert_eq!(
            check_subject("a b", true),
            Err("subject `a b` contains whitespace".into())
        );
        assert_eq!(
            check_subject("a..b", true),
            Err("subject `a..b` has an empty token".into())
        );
        assert_eq!(
            check_subject("a.*", false),
            Err("subject `a.*` has a wildcard; publish to a concrete subject".into())
        );
        assert_eq!(
            check_subject("a.>.b", true),
            Err("subject `a.>.b` has `>` before its last token".into())
        );
        assert_eq!(check_subject("a*b", false), Ok(()));
        assert_eq!(check_name("ORDERS"), Ok(()));
        assert!(check_name("a.b").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
    }
}
