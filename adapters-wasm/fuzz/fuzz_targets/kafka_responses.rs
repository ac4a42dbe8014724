//! Kafka response frames and bodies (`backend-kafka`): the first byte picks the decoder,
//! the rest is the response. A body `response` returns lies inside the frame.
#![no_main]

use backend_kafka::fuzzing as kafka;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&which, body)) = input.split_first() else {
        return;
    };
    match which % 16 {
        0 | 1 => {
            if let Ok((_, inner)) = kafka::response(body, which % 2 == 1) {
                assert!(inner.len() <= body.len());
                let offset = inner.as_ptr() as usize - body.as_ptr() as usize;
                assert!(
                    offset + inner.len() <= body.len(),
                    "the body is inside the frame"
                );
            }
            if let Some(prefix) = body.first_chunk::<4>() {
                let _ = kafka::frame_size(*prefix);
            }
        }
        2 => drop(kafka::decode_api_versions(body)),
        3 => drop(kafka::decode_metadata(body)),
        4 => drop(kafka::decode_init_producer_id(body)),
        5 => drop(kafka::decode_produce(body)),
        6 => drop(kafka::decode_fetch(body)),
        7 => drop(kafka::decode_list_offsets(body)),
        8 => drop(kafka::decode_find_coordinator(body)),
        9 => drop(kafka::decode_subscription(body)),
        10 => drop(kafka::decode_assignment(body)),
        11 => drop(kafka::decode_join_group(body)),
        12 => drop(kafka::decode_sync_group(body)),
        13 => drop(kafka::decode_error_only(body)),
        14 => drop(kafka::decode_offset_commit(body)),
        _ => drop(kafka::decode_offset_fetch(body)),
    }
});
