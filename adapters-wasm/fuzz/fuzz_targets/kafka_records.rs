//! Kafka record batches (`backend-kafka`): any fetched bytes, gzip or snappy compressed
//! or not, decode or are an error; decoded records encode (plain and gzip) to a batch
//! that decodes the same.
#![no_main]

use backend_kafka::fuzzing::{decode_batches, decompress, encode_batch, ProducerId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&which, data)) = input.split_first() else {
        return;
    };
    if which & 0x80 != 0 {
        let _ = decompress(i16::from(which & 0x07), data);
        return;
    }
    let Ok(records) = decode_batches(data, 0, decompress) else {
        return;
    };
    // A batch holds records with offsets from its base; the timestamps are relative to
    // the first record's, so records whose timestamps a batch cannot hold are left out.
    let Some(first) = records.first() else {
        return;
    };
    let base = first.timestamp;
    let mut records: Vec<_> = records
        .iter()
        .filter(|r| r.timestamp.checked_sub(base).is_some())
        .cloned()
        .collect();
    for (offset, record) in records.iter_mut().enumerate() {
        record.offset = offset as i64;
    }
    let producer = Some((ProducerId { id: 7, epoch: 0 }, 0));
    for gzip in [false, true] {
        let batch = encode_batch(&records, producer, gzip);
        let again = decode_batches(&batch, 0, decompress).expect("an encoded batch decodes");
        assert_eq!(again, records);
    }
});
