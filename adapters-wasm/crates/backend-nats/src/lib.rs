//! msgplug's `nats` backend adapter: core NATS and JetStream over `wasi:sockets`.
//!
//! No NATS client crate builds for wasm32-wasip2, so this crate speaks the protocol
//! itself: [`protocol`] is a sans-IO codec of the client protocol, [`headers`] carries a
//! message's content type and metadata as NATS headers, [`config`] reads the settings,
//! [`auth`] signs the server's nonce with a user's NKey,
//! [`jetstream`] makes the JetStream API bodies and takes the decisions on the answers
//! (stream and consumer set-up, pulls, publish acknowledgements) — all plain Rust,
//! unit-tested with `cargo test`. The thin I/O layer (`conn`: a blocking driver over
//! `std::net::TcpStream`; `nats`: the [`common::Backend`]) is left out of test builds.
//!
//! Core mode subscribes to the `--subscribe` subjects (in a queue group if given) on
//! the first `next`; with `--jetstream STREAM --durable NAME` the backend reads from a
//! durable pull consumer instead and acks each delivery after the handler returned. The
//! consumer's ack wait (`ack_wait_ms` or `handler_timeout_ms`) is each delivery's lease:
//! the deliveries held (handled or prefetched) are renewed with `+WPI` on each send,
//! request or reply and before the next delivery, a prefetched one whose ack wait passed
//! is skipped (JetStream delivers it again), and a handler that outran it is logged at
//! the ack ([`common::Lease`]).

// With `fuzzing` the I/O is left out, and with it the only users of much of the rest.
#![cfg_attr(feature = "fuzzing", allow(dead_code))]

mod auth;
mod config;
#[cfg(not(any(test, feature = "fuzzing")))]
mod conn;
mod headers;
mod jetstream;
#[cfg(not(any(test, feature = "fuzzing")))]
mod nats;
mod protocol;

/// The parsers of bytes from outside, for the native fuzz targets in `adapters-wasm/fuzz`
/// (feature `fuzzing`, which also leaves out the I/O; never part of the component).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::headers::{decode as decode_headers, encode as encode_headers, Headers};
    pub use crate::protocol::{Msg, Parser, ProtocolError, ServerOp};
}
