//! NDJSON input lines of the `local` backend (`backend-local`): any line decodes or is
//! an error, and a decoded message encodes to a line that decodes the same.
#![no_main]

use backend_local::fuzzing::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let Ok(Some(message)) = decode(line) else {
        return;
    };
    let topic = message.topic.clone().expect("a decoded line has a topic");
    let again = encode(&topic, &message, None);
    assert!(!again.contains('\n'), "an encoded message is one line");
    let decoded = decode(again.as_bytes()).expect("an encoded line decodes");
    assert_eq!(decoded, Some(message));
});
