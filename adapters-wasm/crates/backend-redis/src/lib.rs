//! msgplug's `redis` backend adapter: Redis pub/sub and Streams over `wasi:sockets`.
//!
//! No Redis client with a blocking transport builds for wasm32-wasip2 without an async
//! runtime, so this crate has a thin one of its own: [`protocol`] is a sans-IO RESP2/RESP3
//! codec (see there why not `redis-protocol`), [`envelope`] carries a message's parts in a JSON
//! envelope or a stream entry's fields, [`config`] reads the settings; all plain Rust,
//! unit-tested with `cargo test`. The I/O layer (`conn`: a blocking RESP3 connection over
//! `std::net::TcpStream`; `redis`: the [`common::Backend`]) is left out of test builds.
//! I/O and connection errors are worded by `common::io_error`, as in every TCP backend.
//!
//! Two modes, chosen by `?mode=` in the URL (or `--option mode=`):
//!
//! * `pubsub` (the default, at-most-once): `send` is `PUBLISH` (a reply of 0 receivers
//!   is not an error: nobody listening is normal for pub/sub); `--subscribe` entries are
//!   channels, or glob patterns (`*`, `?`, `[`) for `PSUBSCRIBE`. A message sent while no
//!   instance is connected is gone.
//! * `streams` (at-least-once): `send` is `XADD`; the backend reads with `XREADGROUP` in
//!   the `--queue-group` group (created with `MKSTREAM`, from the stream's start, when
//!   missing) and acknowledges with `XACK` only after the handler returned `Ok`. An entry
//!   whose handler failed (or whose instance died) stays pending and is claimed with
//!   `XAUTOCLAIM` after `claim_after_ms` by any instance of the group; after
//!   `max_deliveries` it goes to the dead-letter stream `<stream>:dead-letter`.
//!   `claim_after_ms` (or `handler_timeout_ms`) is each entry's lease: the entries held
//!   (handled or read ahead) are renewed with `XCLAIM` to this consumer on each send,
//!   request or reply and before the next delivery, one whose time passed while it
//!   waited is skipped, and a handler that outran it is logged at the ack
//!   ([`common::Lease`]).
//!
//! Request-reply works the same in both modes: the reply address is a fresh list key
//! `msgplug:reply:<instance>:<n>`; a reply is `RPUSH`ed there (as a JSON envelope, with a
//! 60 s expiry) and the requester waits with `BLPOP`.

// With `fuzzing` the I/O is left out, and with it the only users of much of the rest.
#![cfg_attr(feature = "fuzzing", allow(dead_code))]

mod config;
#[cfg(not(any(test, feature = "fuzzing")))]
mod conn;
mod envelope;
mod protocol;
#[cfg(not(any(test, feature = "fuzzing")))]
mod redis;

/// The parsers of bytes from outside, for the native fuzz targets in `adapters-wasm/fuzz`
/// (feature `fuzzing`, which also leaves out the I/O; never part of the component).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::protocol::{Cmd, Parser, ProtocolError, Value};
}
