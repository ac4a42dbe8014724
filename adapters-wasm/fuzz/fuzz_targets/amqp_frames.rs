//! AMQP 0-9-1 frames, methods and content (`backend-amqp`) as a broker sends them,
//! split anywhere.
#![no_main]

use backend_amqp::fuzzing::Reader;
use libfuzzer_sys::fuzz_target;
use msgplug_adapters_fuzz::assert_split_equals_whole;

fuzz_target!(|input: &[u8]| {
    assert_split_equals_whole(input, Reader::default, Reader::push, Reader::next);
});
