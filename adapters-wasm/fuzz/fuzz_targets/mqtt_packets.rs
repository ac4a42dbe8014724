//! MQTT 5.0 and 3.1.1 packets a broker sends (`backend-mqtt`), split anywhere.
#![no_main]

use backend_mqtt::fuzzing::{Parser, Version};
use libfuzzer_sys::fuzz_target;
use msgplug_adapters_fuzz::assert_split_equals_whole;

fuzz_target!(|input: &[u8]| {
    for version in [Version::V5, Version::V311] {
        assert_split_equals_whole(
            input,
            || Parser::new(version),
            Parser::push,
            Parser::next_packet,
        );
    }
});
