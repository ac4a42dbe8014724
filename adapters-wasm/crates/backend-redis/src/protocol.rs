//! RESP2 / RESP3: commands out, replies and pushes in. Sans-IO, so it is tested here.
//!
//! A small codec of its own rather than a crate: `redis-protocol` (6.0, features `std`
//! and `resp3` only) builds for wasm32-wasip2 without an async runtime and was tried
//! first, but its parser recurses once per nesting level, so a hostile
//! `*1\r\n*1\r\n...` overflows the stack (an abort, not an error), and it made the
//! adapter 76 KB larger (nom, its frame types), over the 300 KB budget. [`Parser`] reads
//! one frame without recursion, bounding the nesting depth, the line length, the blob
//! size and up-front allocation, and turns anything else into a [`ProtocolError`].
//! The connection speaks RESP3 (`HELLO 3`); RESP2's nulls (`$-1`, `*-1`), which a
//! server may send before `HELLO 3` took effect, are read too. Commands are arrays of
//! blob strings ([`Cmd`]).

use std::fmt;

/// The deepest nesting of aggregates accepted (Redis replies nest three or four levels).
const MAX_DEPTH: usize = 32;

/// The longest line (a simple string, an error, a length) accepted.
const MAX_LINE: usize = 64 * 1024;

/// The largest blob accepted: Redis's own `proto-max-bulk-len` default.
const MAX_BLOB: u64 = 512 * 1024 * 1024;

/// The most elements one aggregate may announce.
const MAX_ELEMENTS: u64 = 1 << 32;

/// How many elements are allocated up front at most, whatever an aggregate announces.
const MAX_PREALLOCATED: usize = 1024;

/// A decoded reply or push, reduced to what the client needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A null (RESP3 `_`, RESP2 `$-1` / `*-1`).
    Nil,
    /// An integer (a boolean is 0 or 1).
    Int(i64),
    /// A simple, blob or verbatim string, a big number or a double (as its text).
    Bytes(Vec<u8>),
    /// An error reply: its text, such as `WRONGTYPE Operation against a key ...`.
    Error(String),
    /// An array or set; a map as its keys and values in turn.
    Array(Vec<Value>),
    /// An out-of-band push (RESP3 `>`): pub/sub messages and confirmations.
    Push(Vec<Value>),
}

impl Value {
    /// The bytes of a string value.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The text of a UTF-8 string value.
    pub fn text(&self) -> Option<&str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The elements of an array.
    pub fn array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The number of an integer, or of a string holding one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => self.text()?.parse().ok(),
        }
    }
}

/// Bytes that are not RESP (or exceed the limits above): the connection is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits the bytes the server sends into [`Value`]s.
#[derive(Debug, Default)]
pub struct Parser {
    /// Received bytes; those before `start` are consumed.
    buffer: Vec<u8>,
    /// Where the next frame starts.
    start: usize,
}

impl Parser {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Returns the next complete frame, `None` when more bytes are needed.
    pub fn next_value(&mut self) -> Result<Option<Value>, ProtocolError> {
        match parse(&self.buffer[self.start..])? {
            Some((value, used)) => {
                self.start += used;
                Ok(Some(value))
            }
            None => {
                if self.start > 0 {
                    self.buffer.drain(..self.start);
                    self.start = 0;
                }
                Ok(None)
            }
        }
    }
}

/// What an open aggregate becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    /// An array, set or map.
    Array,
    /// A push.
    Push,
    /// Attributes: their pairs are dropped, the frame after them is the value.
    Attributes,
}

/// An aggregate being read.
struct Open {
    /// What it becomes.
    kind: Aggregate,
    /// The elements read so far.
    items: Vec<Value>,
    /// How many elements are still due.
    remaining: u64,
}

/// Reads the frame at the start of `buf` without recursion: the value and its length
/// when complete, `None` when more bytes are needed, an error when it is not RESP or
/// exceeds the limits.
fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    let bad = |why: String| Err(ProtocolError(why));
    let mut open: Vec<Open> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(kind) = buf.get(pos).copied() else {
            return Ok(None);
        };
        let line_start = pos + 1;
        let Some(line_len) = buf[line_start..]
            .windows(2)
            .take(MAX_LINE + 1)
            .position(|w| w == b"\r\n")
        else {
            if buf.len() - line_start > MAX_LINE {
                return bad(format!("a line longer than {MAX_LINE} bytes"));
            }
            return Ok(None);
        };
        let line = &buf[line_start..line_start + line_len];
        pos = line_start + line_len + 2;
        let text = || String::from_utf8_lossy(line).into_owned();
        let number = || {
            std::str::from_utf8(line)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
        };
        // A length: `None` for RESP2's -1 (null).
        let length = |limit: u64| match number() {
            Some(-1) => Ok(None),
            Some(n) if (0..=limit as i64).contains(&n) => Ok(Some(n as u64)),
            _ => Err(ProtocolError(format!(
                "bad length `{}` after `{}`",
                text(),
                kind as char
            ))),
        };
        let mut value = match kind {
            b'+' | b',' | b'(' => Value::Bytes(line.to_vec()),
            b'-' => Value::Error(text()),
            b':' => match number() {
                Some(n) => Value::Int(n),
                None => return bad(format!("bad integer `{}`", text())),
            },
            b'_' => Value::Nil,
            b'#' => match line {
                b"t" => Value::Int(1),
                b"f" => Value::Int(0),
                _ => return bad(format!("bad boolean `{}`", text())),
            },
            b'$' | b'!' | b'=' => match length(MAX_BLOB)? {
                None => Value::Nil,
                Some(n) => {
                    let end = pos + n as usize;
                    if buf.len() < end + 2 {
                        return Ok(None);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return bad("a blob not followed by CRLF".into());
                    }
                    let blob = &buf[pos..end];
                    pos = end + 2;
                    match kind {
                        b'!' => Value::Error(String::from_utf8_lossy(blob).into_owned()),
                        // `txt:` or `mkd:` first.
                        b'=' => Value::Bytes(blob.get(4..).unwrap_or_default().to_vec()),
                        _ => Value::Bytes(blob.to_vec()),
                    }
                }
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let (aggregate, elements) = match (kind, length(MAX_ELEMENTS)?) {
                    (b'*', None) => (Aggregate::Array, None),
                    (_, None) => return bad(format!("bad length `-1` after `{}`", kind as char)),
                    (b'>', Some(n)) => (Aggregate::Push, Some(n)),
                    (b'%', Some(n)) => (Aggregate::Array, Some(2 * n)),
                    (b'|', Some(n)) => (Aggregate::Attributes, Some(2 * n + 1)),
                    (_, Some(n)) => (Aggregate::Array, Some(n)),
                };
                match elements {
                    None => Value::Nil,
                    Some(0) if aggregate == Aggregate::Push => Value::Push(Vec::new()),
                    Some(0) => Value::Array(Vec::new()),
                    Some(n) => {
                        if open.len() >= MAX_DEPTH {
                            return bad(format!("aggregates nested deeper than {MAX_DEPTH}"));
                        }
                        open.push(Open {
                            kind: aggregate,
                            items: Vec::with_capacity((n as usize).min(MAX_PREALLOCATED)),
                            remaining: n,
                        });
                        continue;
                    }
                }
            }
            other => return bad(format!("unknown frame type byte 0x{other:02x}")),
        };
        // A frame ended: it is an element of the aggregate around it, which may end too.
        loop {
            let Some(top) = open.last_mut() else {
                return Ok(Some((value, pos)));
            };
            top.items.push(value);
            top.remaining -= 1;
            if top.remaining > 0 {
                break;
            }
            let done = open.pop().expect("there is an open aggregate");
            value = match done.kind {
                Aggregate::Array => Value::Array(done.items),
                Aggregate::Push => Value::Push(done.items),
                Aggregate::Attributes => done.items.into_iter().last().unwrap_or(Value::Nil),
            };
        }
    }
}

/// A command: an array of blob strings.
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    /// The name and the arguments.
    args: Vec<Vec<u8>>,
}

impl Cmd {
    /// Starts a command named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            args: vec![name.as_bytes().to_vec()],
        }
    }

    /// Adds an argument.
    pub fn arg(self, arg: impl AsRef<[u8]>) -> Self {
        self.push(arg.as_ref())
    }

    /// Adds an argument: the one copy of the code behind every [`Cmd::arg`].
    #[inline(never)]
    fn push(mut self, arg: &[u8]) -> Self {
        self.args.push(arg.to_vec());
        self
    }

    /// The command's name, for error messages.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.args[0]).into_owned()
    }

    /// Appends the command's RESP encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("*{}\r\n", self.args.len()).as_bytes());
        for arg in &self.args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<Vec<Value>, ProtocolError> {
        let mut parser = Parser::default();
        parser.push(bytes);
        let mut values = Vec::new();
        while let Some(value) = parser.next_value()? {
            values.push(value);
        }
        Ok(values)
    }

    fn b(text: &str) -> Value {
        Value::Bytes(text.as_bytes().to_vec())
    }

    #[test]
    fn value_accessors() {
        assert_eq!(b("42").int(), Some(42));
        assert_eq!(Value::Int(7).int(), Some(7));
        assert_eq!(b("x").text(), Some("x"));
        assert_eq!(Value::Bytes(vec![0xff]).text(), None);
        assert_eq!(Value::Bytes(vec![0xff]).bytes(), Some(&[0xff][..]));
        assert_eq!(Value::Nil.bytes(), None);
        assert_eq!(
            Value::Array(vec![Value::Nil]).array(),
            Some(&[Value::Nil][..])
        );
        assert_eq!(Value::Push(vec![]).array(), None);
    }

    #[test]
    fn encodes_commands_as_arrays_of_blobs() {
        let mut out = Vec::new();
        let cmd = Cmd::new("PUBLISH").arg("ch").arg(b"a\r\n\0");
        assert_eq!(cmd.name(), "PUBLISH");
        cmd.encode(&mut out);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$4\r\na\r\n\0\r\n");
    }

    #[test]
    fn decodes_resp2_and_resp3_replies() {
        let values = parse_all(
            b"+OK\r\n-ERR no\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n_\r\n#t\r\n,1.5\r\n\
              *2\r\n$1\r\nx\r\n:1\r\n%1\r\n+k\r\n+v\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n\
              |1\r\n+a\r\n+b\r\n:7\r\n=7\r\ntxt:abc\r\n!3\r\nbad\r\n*3\r\n$-1\r\n*0\r\n>0\r\n",
        )
        .unwrap();
        assert_eq!(
            values,
            [
                b("OK"),
                Value::Error("ERR no".into()),
                Value::Int(42),
                b("a\r\n"),
                Value::Nil,
                Value::Nil,
                Value::Nil,
                Value::Int(1),
                b("1.5"),
                Value::Array(vec![b("x"), Value::Int(1)]),
                Value::Array(vec![b("k"), b("v")]),
                Value::Push(vec![b("message"), b("c"), b("p")]),
                Value::Int(7),
                b("abc"),
                Value::Error("bad".into()),
                Value::Array(vec![Value::Nil, Value::Array(vec![]), Value::Push(vec![])]),
            ]
        );
    }

    #[test]
    fn garbage_and_limits_are_errors() {
        for bad in [
            &b"?what\r\n"[..],
            b"$abc\r\n",
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b"*99999999999999\r\n",
            b"$999999999999\r\n",
        ] {
            assert!(
                parse_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = b"*1\r\n".repeat(100_000);
        assert!(parse_all(&deep).is_err());
        assert!(parse_all(&vec![b'+'; MAX_LINE + 10]).is_err());
        // Within the limits but unfinished: more bytes are needed.
        assert_eq!(parse_all(b"*2\r\n:1\r\n").unwrap(), []);
        assert_eq!(parse_all(b"$10\r\nabc").unwrap(), []);
    }

    /// A small deterministic generator (xorshift), so the property tests need no crate.
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
    }

    /// A random valid frame and the value it decodes to.
    fn random_frame(rng: &mut Rng, depth: u32, out: &mut Vec<u8>) -> Value {
        match rng.below(if depth > 3 { 3 } else { 5 }) {
            0 => {
                let n = rng.below(1_000_000) as i64 - 500_000;
                out.extend_from_slice(format!(":{n}\r\n").as_bytes());
                Value::Int(n)
            }
            1 => {
                let data: Vec<u8> = (0..rng.below(40)).map(|_| rng.below(256) as u8).collect();
                out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
                Value::Bytes(data)
            }
            2 => {
                out.extend_from_slice(b"+OK\r\n");
                b("OK")
            }
            kind => {
                let n = rng.below(4);
                out.extend_from_slice(
                    format!("{}{n}\r\n", if kind == 3 { '*' } else { '>' }).as_bytes(),
                );
                let items = (0..n).map(|_| random_frame(rng, depth + 1, out)).collect();
                match kind {
                    3 => Value::Array(items),
                    _ => Value::Push(items),
                }
            }
        }
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_values() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let mut bytes = Vec::new();
            let expected: Vec<Value> = (0..rng.below(6) + 1)
                .map(|_| random_frame(&mut rng, 0, &mut bytes))
                .collect();
            let mut parser = Parser::default();
            let mut values = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let step = (rng.below(7) + 1) as usize;
                let end = (at + step).min(bytes.len());
                parser.push(&bytes[at..end]);
                at = end;
                while let Some(value) = parser.next_value().expect("valid input") {
                    values.push(value);
                }
            }
            assert_eq!(values, expected);
        }
    }

    #[test]
    fn garbage_is_an_error_or_needs_more_bytes_never_a_panic() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let alphabet = b"*$:+-_>%|~#,(!=\r\n0123456789-?x";
        for _ in 0..3000 {
            let mut bytes: Vec<u8> = Vec::new();
            if rng.below(2) == 0 {
                random_frame(&mut rng, 0, &mut bytes);
                // Corrupt a valid frame in a few places.
                for _ in 0..rng.below(3) + 1 {
                    if !bytes.is_empty() {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] = rng.below(256) as u8;
                    }
                }
            } else {
                bytes = (0..rng.below(60))
                    .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                    .collect();
            }
            let mut parser = Parser::default();
            'input: for chunk in bytes.chunks((rng.below(5) + 1) as usize) {
                parser.push(chunk);
                loop {
                    match parser.next_value() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'input,
                    }
                }
            }
        }
    }
}
