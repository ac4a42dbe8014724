//! NATS server operations (`backend-nats`): INFO, MSG, HMSG, PING, +OK, -ERR as the
//! server sends them, split anywhere.
#![no_main]

use backend_nats::fuzzing::Parser;
use libfuzzer_sys::fuzz_target;
use msgplug_adapters_fuzz::assert_split_equals_whole;

fuzz_target!(|input: &[u8]| {
    assert_split_equals_whole(input, Parser::default, Parser::push, Parser::next_op);
});
