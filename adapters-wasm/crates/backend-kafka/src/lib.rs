//! msgplug's `kafka` backend adapter: a Kafka client over `wasi:sockets`.
//!
//! No Kafka client crate builds for wasm32-wasip2 as a small component, so this crate
//! speaks the protocol itself, one hand-written version per API (see
//! [`protocol::REQUIRED`]): [`wire`] holds the primitives, [`protocol`] the requests and
//! responses, [`records`] the record batches (CRC-32C, murmur2 partitioning),
//! [`headers`] maps messages to records and back, [`group`] holds the range assignor and
//! the commit bookkeeping, [`sasl`] makes the SASL PLAIN and SCRAM messages, [`config`]
//! reads the settings — all plain Rust, unit-tested
//! with `cargo test`. The I/O layer (`conn`: one blocking connection per broker;
//! `kafka`: the [`common::Backend`]) is left out of test builds.
//!
//! Produce: `acks=all`, idempotent when the broker offers `InitProducerId`; metadata
//! `key` is the record key (murmur2 partitioning like the Java client), other metadata
//! and the content type travel as record headers. Consume: a consumer group
//! (`--queue-group`) with the range assignor; offsets are committed only up to the
//! highest contiguous handled offset per partition; a failed record rewinds its
//! partition and is retried after a backoff, which holds back that partition only.
//! Request-reply: a request carries `reply-to` (this instance's reply topic) and a fresh
//! `correlation-id`; the replies are read from the reply topic's end and matched by it.

// With `fuzzing` the I/O is left out, and with it the only users of much of the rest.
#![cfg_attr(feature = "fuzzing", allow(dead_code))]

mod compression;
mod config;
#[cfg(not(any(test, feature = "fuzzing")))]
mod conn;
mod group;
mod headers;
#[cfg(not(any(test, feature = "fuzzing")))]
mod kafka;
mod protocol;
mod records;
mod sasl;
mod wire;

/// The parsers of bytes from outside, for the native fuzz targets in `adapters-wasm/fuzz`
/// (feature `fuzzing`, which also leaves out the I/O; never part of the component).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::compression::decompress;
    pub use crate::protocol::{
        decode_api_versions, decode_assignment, decode_error_only, decode_fetch,
        decode_find_coordinator, decode_init_producer_id, decode_join_group, decode_list_offsets,
        decode_metadata, decode_offset_commit, decode_offset_fetch, decode_produce,
        decode_subscription, decode_sync_group, frame_size, response,
    };
    pub use crate::records::{decode_batches, encode_batch, ProducerId, Record};
}
