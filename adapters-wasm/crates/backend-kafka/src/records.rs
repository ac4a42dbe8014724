//! Record batches (magic 2): encoding the batches a producer sends, decoding the ones
//! a fetch returns, the CRC-32C that guards them, and murmur2 key partitioning.

use crate::wire::{Malformed, Reader, Writer};

/// One record to produce or one fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The key, if any (partitioning, compaction).
    pub key: Option<Vec<u8>>,
    /// The value (payload); `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers, in order (values may be null on the wire; read as empty).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The offset (fetched records only).
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// The producer identity of an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerId {
    /// The id the broker handed out (`InitProducerId`).
    pub id: i64,
    /// Its epoch.
    pub epoch: i16,
}

/// Bit 5 of a batch's attributes: a control batch (transaction markers), never data.
const CONTROL: i16 = 0x20;

/// Encodes `records` as one batch (offsets 0..n, timestamps relative to the first),
/// idempotent with `producer` and `sequence` when given, its records gzip-compressed when
/// `gzip`.
pub fn encode_batch(
    records: &[Record],
    producer: Option<(ProducerId, i32)>,
    gzip: bool,
) -> Vec<u8> {
    let base_timestamp = records.first().map_or(0, |r| r.timestamp);
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(base_timestamp);
    let mut body = Writer::default();
    let (pid, epoch, sequence) = producer.map_or((-1, -1, -1), |(p, s)| (p.id, p.epoch, s));
    body.i16(i16::from(gzip)) // attributes: codec 1 (gzip) or none, create time
        .i32(records.len().saturating_sub(1) as i32)
        .i64(base_timestamp)
        .i64(max_timestamp)
        .i64(pid)
        .i16(epoch)
        .i32(sequence)
        .len(records.len());
    let mut all = Writer::default();
    for (delta, record) in records.iter().enumerate() {
        let mut r = Writer::default();
        r.i8(0)
            .varint(record.timestamp - base_timestamp)
            .varint(delta as i64)
            .varbytes(record.key.as_deref())
            .varbytes(record.value.as_deref())
            .varint(record.headers.len() as i64);
        for (key, value) in &record.headers {
            r.varbytes(Some(key.as_bytes())).varbytes(Some(value));
        }
        all.varint(r.0.len() as i64);
        all.0.extend_from_slice(&r.0);
    }
    match gzip {
        true => body.0.extend_from_slice(&crate::compression::gzip(&all.0)),
        false => body.0.extend_from_slice(&all.0),
    }
    let crc = crc32c(&body.0);
    let mut batch = Writer::default();
    batch
        .i64(0) // base offset: the broker assigns
        .i32((4 + 1 + 4 + body.0.len()) as i32) // epoch, magic, crc, the rest
        .i32(-1) // partition leader epoch
        .i8(2)
        .i32(crc as i32);
    batch.0.extend_from_slice(&body.0);
    batch.0
}

/// Decodes the record batches of one fetched partition, keeping records at `from` or
/// later. A batch cut off at the end (the broker fills up to the size limit) is left
/// out; control batches are skipped. `decompress` turns a compressed batch's records
/// into plain bytes (its argument is the codec number, 1 to 4).
pub fn decode_batches(
    mut data: &[u8],
    from: i64,
    decompress: impl Fn(i16, &[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    while data.len() >= 12 {
        let mut head = Reader::new(data);
        let base_offset = head.i64("batch offset").map_err(text)?;
        let length = head.i32("batch length").map_err(text)?;
        let Ok(length) = usize::try_from(length) else {
            return Err(text(Malformed("batch length")));
        };
        if head.remaining() < length {
            break;
        }
        let (batch, rest) = data[12..].split_at(length);
        data = rest;
        let mut r = Reader::new(batch);
        r.i32("leader epoch").map_err(text)?;
        let magic = r.i8("magic").map_err(text)?;
        if magic != 2 {
            return Err(format!(
                "record batch format (magic) {magic} is not supported; only 2 (Kafka 0.11+) is"
            ));
        }
        let crc = r.i32("crc").map_err(text)? as u32;
        let checked = &batch[r_offset(batch.len(), r.remaining())..];
        if crc32c(checked) != crc {
            return Err("record batch CRC-32C mismatch (corrupt data)".to_string());
        }
        let attributes = r.i16("attributes").map_err(text)?;
        r.i32("last offset delta").map_err(text)?;
        let base_timestamp = r.i64("base timestamp").map_err(text)?;
        r.i64("max timestamp").map_err(text)?;
        r.take(8 + 2 + 4, "producer").map_err(text)?;
        let count = r.i32("record count").map_err(text)?;
        if attributes & CONTROL != 0 {
            continue;
        }
        let codec = attributes & 0x07;
        let plain;
        let mut records = if codec == 0 {
            r
        } else {
            plain = decompress(codec, r.take(r.remaining(), "records").map_err(text)?)?;
            Reader::new(&plain)
        };
        for _ in 0..count.max(0) {
            let record = decode_record(&mut records, base_offset, base_timestamp).map_err(text)?;
            if record.offset >= from {
                out.push(record);
            }
        }
    }
    Ok(out)
}

/// Where the CRC-covered part starts: everything after the CRC field.
fn r_offset(total: usize, remaining: usize) -> usize {
    total - remaining
}

/// Words a [`Malformed`] for an error message.
fn text(e: Malformed) -> String {
    e.to_string()
}

/// Decodes one record of a batch.
fn decode_record(
    r: &mut Reader,
    base_offset: i64,
    base_timestamp: i64,
) -> Result<Record, Malformed> {
    let length = r.varint("record length")?;
    let length = usize::try_from(length).map_err(|_| Malformed("record length"))?;
    let mut r = Reader::new(r.take(length, "record")?);
    r.i8("record attributes")?;
    let timestamp_delta = r.varint("timestamp delta")?;
    let offset_delta = r.varint("offset delta")?;
    let key = r.varbytes("key")?.map(<[u8]>::to_vec);
    let value = r.varbytes("value")?.map(<[u8]>::to_vec);
    let n = r.varint("header count")?;
    let n = usize::try_from(n).unwrap_or(0);
    if n > r.remaining() {
        return Err(Malformed("header count"));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.varbytes("header key")?.unwrap_or_default();
        let key = String::from_utf8(key.to_vec()).map_err(|_| Malformed("header key"))?;
        let value = r.varbytes("header value")?.unwrap_or_default().to_vec();
        headers.push((key, value));
    }
    Ok(Record {
        key,
        value,
        headers,
        offset: base_offset.wrapping_add(offset_delta),
        timestamp: base_timestamp.wrapping_add(timestamp_delta),
    })
}

/// CRC-32C (Castagnoli), as record batches use.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = crc_table(0x82f6_3b78);
    crc32_with(&TABLE, data)
}

/// CRC-32 (IEEE 802.3), as the gzip trailer uses.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = crc_table(0xedb8_8320);
    crc32_with(&TABLE, data)
}

/// The byte table of the reflected CRC-32 with polynomial `poly`.
const fn crc_table(poly: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { poly ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// A reflected CRC-32 of `data` by `table`.
fn crc32_with(table: &[u32; 256], data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// The partition the Java client's default partitioner picks for `key`:
/// `toPositive(murmur2(key)) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % partitions.max(1)
}

/// Kafka's murmur2 (seed 0x9747b28c), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_codec(codec: i16, _: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!("codec {codec}"))
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from the Java client's UtilsTest / DefaultPartitionerTest.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        assert_eq!(partition_for_key(b"key1", 3), partition_for_key(b"key1", 3));
    }

    #[test]
    fn batches_round_trip() {
        let records = vec![
            Record {
                key: Some(b"k".to_vec()),
                value: Some(b"one".to_vec()),
                headers: vec![("content-type".into(), b"text/plain".to_vec())],
                offset: 0,
                timestamp: 1_700_000_000_000,
            },
            Record {
                key: None,
                value: Some(vec![0, 1, 2]),
                headers: vec![],
                offset: 1,
                timestamp: 1_700_000_000_005,
            },
        ];
        let mut batch = encode_batch(&records, Some((ProducerId { id: 7, epoch: 0 }, 3)), false);
        // The broker assigns offsets: pretend it put the batch at 40.
        batch[..8].copy_from_slice(&40i64.to_be_bytes());
        let decoded = decode_batches(&batch, 0, no_codec).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].offset, 40);
        assert_eq!(decoded[1].offset, 41);
        assert_eq!(decoded[0].key, records[0].key);
        assert_eq!(decoded[0].headers, records[0].headers);
        assert_eq!(decoded[1].value, records[1].value);
        assert_eq!(decoded[1].timestamp, records[1].timestamp);
        // Records before the fetch offset are dropped; a cut-off batch is ignored.
        assert_eq!(decode_batches(&batch, 41, no_codec).unwrap().len(), 1);
        assert!(decode_batches(&batch[..batch.len() - 1], 0, no_codec)
            .unwrap()
            .is_empty());
        // A flipped byte fails the CRC.
        let mut bad = batch.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_batches(&bad, 0, no_codec)
            .unwrap_err()
            .contains("CRC"));
    }

    #[test]
    fn compressed_batches_go_through_the_codec() {
        let mut batch = encode_batch(&[Record::default()], None, false);
        // Mark it gzip (attributes are right after the CRC), then fix the CRC.
        batch[22] = 0;
        batch[21 + 1] = 1;
        let crc = crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode_batches(&batch, 0, no_codec).unwrap_err(), "codec 1");
    }

    #[test]
    fn gzip_batches_round_trip() {
        let record = Record {
            value: Some(b"compressible ".repeat(50)),
            ..Record::default()
        };
        let plain = encode_batch(std::slice::from_ref(&record), None, false);
        let packed = encode_batch(std::slice::from_ref(&record), None, true);
        assert!(packed.len() < plain.len() / 4);
        let decoded = decode_batches(&packed, 0, crate::compression::decompress).unwrap();
        assert_eq!(decoded[0].value, record.value);
    }

    /// A small deterministic generator for the garbage tests (no dependency needed).
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = encode_batch(
            &[Record {
                value: Some(b"v".to_vec()),
                ..Record::default()
            }],
            None,
            false,
        );
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for round in 0..3_000 {
            let mut bytes = good.clone();
            if round % 2 == 0 {
                let at = xorshift(&mut state) as usize % bytes.len();
                bytes[at] = xorshift(&mut state) as u8;
            } else {
                let n = xorshift(&mut state) as usize % 64;
                bytes = (0..n).map(|_| xorshift(&mut state) as u8).collect();
            }
            let cut = xorshift(&mut state) as usize % (bytes.len() + 1);
            let _ = decode_batches(&bytes[..cut], 0, no_codec);
            let _ = decode_batches(&bytes, 0, no_codec);
        }
    }
}
