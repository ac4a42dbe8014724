//! Redis RESP2/RESP3 replies and pushes (`backend-redis`), split anywhere; and a command
//! made of any arguments reads back as the array of blobs it is.
#![no_main]

use backend_redis::fuzzing::{Cmd, Parser, Value};
use libfuzzer_sys::fuzz_target;
use msgplug_adapters_fuzz::{assert_split_equals_whole, fields};

fuzz_target!(|input: &[u8]| {
    assert_split_equals_whole(input, Parser::default, Parser::push, Parser::next_value);

    let args = fields(input, 8);
    let name = String::from_utf8_lossy(args[0]);
    let command = args[1..]
        .iter()
        .fold(Cmd::new(&name), |cmd, arg| cmd.arg(arg));
    let mut encoded = Vec::new();
    command.encode(&mut encoded);
    let mut parser = Parser::default();
    parser.push(&encoded);
    let expected: Vec<Value> = std::iter::once(name.as_bytes())
        .chain(args[1..].iter().copied())
        .map(|arg| Value::Bytes(arg.to_vec()))
        .collect();
    assert_eq!(parser.next_value(), Ok(Some(Value::Array(expected))));
    assert_eq!(parser.next_value(), Ok(None), "the command is read whole");
});
