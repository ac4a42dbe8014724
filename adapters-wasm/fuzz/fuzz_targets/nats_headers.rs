//! NATS header blocks (`backend-nats`): any block decodes or is an error, and what one
//! decodes to encodes back to a block that decodes the same.
#![no_main]

use backend_nats::fuzzing::{decode_headers, encode_headers};
use common::MessageData;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(headers) = decode_headers(input) else {
        return;
    };
    let message = MessageData {
        content_type: headers.content_type.clone(),
        metadata: headers.metadata.clone(),
        ..MessageData::new(Vec::new())
    };
    match encode_headers(&message) {
        Ok(Some(block)) => {
            let again = decode_headers(&block).expect("an encoded block decodes");
            assert_eq!(again.content_type, headers.content_type);
            assert_eq!(again.metadata, headers.metadata);
        }
        Ok(None) => assert!(headers.content_type.is_none() && headers.metadata.is_empty()),
        Err(_) => {}
    }
});
