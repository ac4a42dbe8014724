//! The Kafka wire primitives: big-endian integers, strings, byte arrays, arrays and
//! zig-zag varints, written to a `Vec<u8>` and read back with bounds checks.
//!
//! Reading never panics: every read of a truncated or inconsistent buffer is a
//! [`Malformed`] error, and a length is checked against the bytes left before anything
//! is allocated for it.

use std::fmt;

/// Bytes from the broker that do not follow the protocol: what was being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed Kafka data ({})", self.0)
    }
}

/// Appends wire values to a buffer.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// An `INT8`.
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.0.push(v as u8);
        self
    }

    /// An `INT16`.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An `INT32`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An `INT64`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An array's length (`INT32`).
    pub fn len(&mut self, n: usize) -> &mut Self {
        self.i32(i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// A `STRING` (`INT16` length).
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// A `NULLABLE_STRING`.
    pub fn nstr(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.str(s),
            None => self.i16(-1),
        }
    }

    /// `BYTES` / `NULLABLE_BYTES` (`INT32` length, -1 for null).
    pub fn bytes(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            Some(b) => {
                self.len(b.len());
                self.0.extend_from_slice(b);
            }
            None => {
                self.i32(-1);
            }
        }
        self
    }

    /// A zig-zag `VARINT` / `VARLONG`.
    pub fn varint(&mut self, v: i64) -> &mut Self {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                self.0.push(byte);
                return self;
            }
            self.0.push(byte | 0x80);
        }
    }

    /// A record's varint-length bytes (-1 for null).
    pub fn varbytes(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            Some(b) => {
                self.varint(b.len() as i64);
                self.0.extend_from_slice(b);
            }
            None => {
                self.varint(-1);
            }
        }
        self
    }
}

/// Reads wire values from a buffer, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes `N` bytes as an array.
    fn array_of<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Malformed> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// An `INT8`.
    pub fn i8(&mut self, what: &'static str) -> Result<i8, Malformed> {
        Ok(i8::from_be_bytes(self.array_of(what)?))
    }

    /// An `INT16`.
    pub fn i16(&mut self, what: &'static str) -> Result<i16, Malformed> {
        Ok(i16::from_be_bytes(self.array_of(what)?))
    }

    /// An `INT32`.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, Malformed> {
        Ok(i32::from_be_bytes(self.array_of(what)?))
    }

    /// An `INT64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.array_of(what)?))
    }

    /// A `NULLABLE_STRING`.
    pub fn nstr(&mut self, what: &'static str) -> Result<Option<String>, Malformed> {
        let n = self.i16(what)?;
        if n < 0 {
            return Ok(None);
        }
        let raw = self.take(n as usize, what)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| Malformed(what))
    }

    /// A `STRING` (null reads as empty).
    pub fn str(&mut self, what: &'static str) -> Result<String, Malformed> {
        Ok(self.nstr(what)?.unwrap_or_default())
    }

    /// `NULLABLE_BYTES`.
    pub fn bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, Malformed> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(None);
        }
        self.take(n as usize, what).map(Some)
    }

    /// An `ARRAY` of items read by `item` (null reads as empty). The count is checked
    /// against the bytes left (every item takes at least one byte) before allocating.
    pub fn array<T>(
        &mut self,
        what: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<T, Malformed>,
    ) -> Result<Vec<T>, Malformed> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(Vec::new());
        }
        let n = n as usize;
        if n > self.rest.len() {
            return Err(Malformed(what));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// A zig-zag `VARINT` / `VARLONG`.
    pub fn varint(&mut self, what: &'static str) -> Result<i64, Malformed> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let [byte] = self.array_of::<1>(what)?;
            if shift == 63 && byte > 1 {
                return Err(Malformed(what));
            }
            z |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(Malformed(what))
    }

    /// An unsigned `UNSIGNED_VARINT` (flexible versions' lengths and tags).
    pub fn uvarint(&mut self, what: &'static str) -> Result<u64, Malformed> {
        let mut v: u64 = 0;
        for shift in (0..35).step_by(7) {
            let [byte] = self.array_of::<1>(what)?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Malformed(what))
    }

    /// A record's varint-length bytes (negative for null).
    pub fn varbytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, Malformed> {
        let n = self.varint(what)?;
        if n < 0 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| Malformed(what))?;
        self.take(n, what).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_strings_round_trip() {
        let mut w = Writer::default();
        w.i8(-3)
            .i16(-2)
            .i32(70_000)
            .i64(-5)
            .str("héllo")
            .nstr(None)
            .bytes(Some(b"ab"))
            .bytes(None);
        let mut r = Reader::new(&w.0);
        assert_eq!(r.i8("a").unwrap(), -3);
        assert_eq!(r.i16("a").unwrap(), -2);
        assert_eq!(r.i32("a").unwrap(), 70_000);
        assert_eq!(r.i64("a").unwrap(), -5);
        assert_eq!(r.str("a").unwrap(), "héllo");
        assert_eq!(r.nstr("a").unwrap(), None);
        assert_eq!(r.bytes("a").unwrap(), Some(&b"ab"[..]));
        assert_eq!(r.bytes("a").unwrap(), None);
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.i8("end"), Err(Malformed("end")));
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut w = Writer::default();
            w.varint(v);
            let mut r = Reader::new(&w.0);
            assert_eq!(r.varint("v").unwrap(), v, "{v}");
            assert_eq!(r.remaining(), 0);
        }
        // Known encodings from the Kafka docs: 1 is 0x02, -1 is 0x01, 150 is 0xac 0x02.
        let mut w = Writer::default();
        w.varint(1).varint(-1).varint(150);
        assert_eq!(w.0, [0x02, 0x01, 0xac, 0x02]);
        assert!(Reader::new(&[0xff; 11]).varint("long").is_err());
        assert!(Reader::new(&[0x80]).varint("cut").is_err());
    }

    #[test]
    fn lengths_beyond_the_buffer_are_errors() {
        assert!(Reader::new(&[0, 5, b'a']).str("s").is_err());
        assert!(Reader::new(&[0, 0, 0, 9, 1]).bytes("b").is_err());
        assert!(Reader::new(&[0x7f, 0xff, 0xff, 0xff])
            .array("a", |r| r.i8("x"))
            .is_err());
        assert!(Reader::new(&[0, 1, 0xff]).str("utf8").is_err());
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff])
                .array("null", |r| r.i8("x"))
                .unwrap(),
            Vec::<i8>::new()
        );
    }
}
