//! Compressing record batches with gzip, and decompressing them: gzip (pure Rust,
//! `miniz_oxide`) and snappy (`snap`; raw, or in the xerial framing the Java client writes);
//! lz4 and zstd are refused with an error that names the codec.

/// The largest decompressed batch accepted (a guard against decompression bombs).
const MAX_PLAIN: usize = 64 << 20;

/// Decompresses the records of a batch compressed with `codec` (a batch's attribute bits
/// 0-2: 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub fn decompress(codec: i16, data: &[u8]) -> Result<Vec<u8>, String> {
    match codec {
        1 => gunzip(data),
        2 => unsnappy(data),
        _ => {
            let name = match codec {
                3 => "lz4",
                4 => "zstd",
                _ => "an unknown codec",
            };
            Err(format!(
                "the record batch is compressed with {name} (codec {codec}), which this adapter cannot decompress; it reads uncompressed, gzip and snappy batches (set the producer's compression.type to none, gzip or snappy)"
            ))
        }
    }
}

/// The xerial snappy framing's header: magic, version and compatible version.
const XERIAL: &[u8; 8] = b"\x82SNAPPY\0";

/// Decompresses snappy data: xerial-framed (`XERIAL`, two version words, then blocks of a
/// 4-byte big-endian length and raw snappy data), or raw snappy.
fn unsnappy(data: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |why: String| format!("snappy record batch: {why}");
    let raw = |block: &[u8], out: &mut Vec<u8>| {
        let len = snap::raw::decompress_len(block).map_err(|e| bad(e.to_string()))?;
        if out.len() + len > MAX_PLAIN {
            return Err(bad(format!("more than {MAX_PLAIN} bytes")));
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| bad(e.to_string()))?;
        Ok(())
    };
    let mut out = Vec::new();
    match data.strip_prefix(XERIAL) {
        None => raw(data, &mut out)?,
        Some(rest) => {
            let mut rest = rest.get(8..).ok_or_else(|| bad("cut-off header".into()))?;
            while !rest.is_empty() {
                let (len, tail) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| bad("cut-off block length".into()))?;
                let len = u32::from_be_bytes(*len) as usize;
                let block = tail.get(..len).ok_or_else(|| bad("cut-off block".into()))?;
                raw(block, &mut out)?;
                rest = &tail[len..];
            }
        }
    }
    Ok(out)
}

/// One gzip member (RFC 1952) of `data`: a bare header, raw deflate data (level 6), the
/// CRC-32 and length trailer.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend_from_slice(&crate::records::crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Decompresses one gzip member (RFC 1952): header, raw deflate data, trailer.
fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |why: &str| format!("gzip record batch: {why}");
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        return Err(bad("no gzip header"));
    }
    let flags = data[3];
    let mut at = 10;
    if flags & 0x04 != 0 {
        let extra = data
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| bad("cut-off extra field"))?;
        at += 2 + extra;
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            let end = data
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
                .ok_or_else(|| bad("cut-off name or comment"))?;
            at += end + 1;
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    let body = data
        .get(at..data.len() - 8)
        .ok_or_else(|| bad("cut-off data"))?;
    miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_PLAIN)
        .map_err(|e| bad(&format!("{:?}", e.status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf 'hello hello hello' | gzip -n`.
    const HELLO_GZ: [u8; 28] = [
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9,
        0x57, 0xc8, 0x40, 0x90, 0x00, 0x80, 0x88, 0xf9, 0xe5, 0x11, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn gzip_decompresses() {
        assert_eq!(decompress(1, &HELLO_GZ).unwrap(), b"hello hello hello");
        // With a file name (FNAME) in the header.
        let mut named = HELLO_GZ.to_vec();
        named[3] = 0x08;
        named.splice(10..10, *b"f.txt\0");
        assert_eq!(gunzip(&named).unwrap(), b"hello hello hello");
        for cut in 0..HELLO_GZ.len() - 1 {
            assert!(gunzip(&HELLO_GZ[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn gzip_round_trips_and_has_the_gzip_crc() {
        let text = b"hello hello hello".repeat(100);
        let packed = gzip(&text);
        assert!(packed.len() < text.len() / 10);
        assert_eq!(gunzip(&packed).unwrap(), text);
        // The trailer of `printf 'hello hello hello' | gzip -n`: CRC-32 and length.
        let hello = gzip(b"hello hello hello");
        assert_eq!(hello[hello.len() - 8..], HELLO_GZ[20..]);
    }

    #[test]
    fn snappy_decompresses_raw_and_xerial_framed() {
        let text = b"hello hello hello".repeat(20);
        let block = snap::raw::Encoder::new().compress_vec(&text).unwrap();
        assert_eq!(decompress(2, &block).unwrap(), text);
        let mut framed = XERIAL.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for _ in 0..2 {
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(decompress(2, &framed).unwrap(), text.repeat(2));
        for cut in [7, 12, 17, framed.len() - 1] {
            assert!(decompress(2, &framed[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn other_codecs_are_named() {
        for (codec, name) in [(3, "lz4"), (4, "zstd"), (7, "unknown")] {
            let e = decompress(codec, b"x").unwrap_err();
            assert!(e.contains(name), "{e}");
        }
        assert!(decompress(1, b"not gzip at all, really").is_err());
    }
}
