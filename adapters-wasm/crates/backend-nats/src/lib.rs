//! msgplug's `nats` backend adapter: core NATS and JetStream over `wasi:sockets`.
//!
//! No NATS client crate builds for wasm32-wasip2, so this crate speaks the protocol
//! itself: [`protocol`] is a sans-IO codec of the client protocol, [`headers`] carries a
//! message's content type and metadata as NATS headers, [`config`] reads the settings,
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

mod config;
#[cfg(not(test))]
mod conn;
mod headers;
mod jetstream;
#[cfg(not(test))]
mod nats;
mod protocol;
