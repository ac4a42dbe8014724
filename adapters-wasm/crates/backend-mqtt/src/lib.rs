//! msgplug's `mqtt` backend adapter: MQTT 5.0 (default) and 3.1.1 over `wasi:sockets`.
//!
//! The packet codec is the `mqttbytes-ng` crate (sans-IO, `bytes` and `thiserror` only;
//! it builds for wasm32-wasip2 without an async runtime and keeps the adapter small;
//! `mqtt-protocol-core` pulls in serde_json, strum, indexmap and more, `mqtt5-protocol`
//! has no 3.1.1). [`protocol`] wraps it into one set of types for both versions;
//! [`config`] reads the settings; [`message`] maps messages to and from `PUBLISH`
//! packets — all plain Rust, unit-tested with `cargo test`. The thin I/O layer (`conn`:
//! a blocking driver over `std::net::TcpStream`; `mqtt`: the [`common::Backend`]) is left
//! out of test builds.
//!
//! * **send**: a `PUBLISH` at `--option qos` (default 1). Outside a handler it returns
//!   once the broker's `PUBACK` arrived; inside one sends are pipelined (up to the
//!   broker's Receive Maximum) and the driver's `flush` waits for every `PUBACK`. A
//!   message larger than the broker's Maximum Packet Size is an error.
//! * **subscriptions**: `--subscribe` entries are MQTT topic filters (`+`, `#`; none means
//!   `#`), subscribed at QoS 1; `--queue-group G` subscribes to `$share/G/FILTER`.
//! * **delivery**: without `--durable` the session is clean: at-most-once (a delivery is
//!   acknowledged after the handler, whatever it returned). With `--durable CLIENT-ID`
//!   (or `MSGPLUG_CLIENT_ID` at run time) the session is persistent (Clean Start 0 and a
//!   Session Expiry Interval on 5.0, clean session 0 on 3.1.1): the `PUBACK` goes out
//!   only after the handler's `Ok`; on `Err` the message is not acknowledged and the
//!   backend resumes the session (disconnect, reconnect), so the broker sends it again
//!   with DUP set.
//! * **metadata**: MQTT 5 user properties and the content type property; received
//!   messages carry `mqtt-retain: true`, `mqtt-dup: true` and `mqtt-qos: 0` when those
//!   apply (see [`message`]). MQTT 3.1.1 has no properties: they are not sent.
//! * **request-reply** (MQTT 5 only): response topic `msgplug/reply/<random>/<n>` plus
//!   correlation data; replies go to a received message's response topic with its
//!   correlation data.

// With `fuzzing` the I/O is left out, and with it the only users of much of the rest.
#![cfg_attr(feature = "fuzzing", allow(dead_code))]

mod config;
#[cfg(not(any(test, feature = "fuzzing")))]
mod conn;
mod message;
#[cfg(not(any(test, feature = "fuzzing")))]
mod mqtt;
mod protocol;

/// The parsers of bytes from outside, for the native fuzz targets in `adapters-wasm/fuzz`
/// (feature `fuzzing`, which also leaves out the I/O; never part of the component).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::protocol::{Parser, ProtocolError, ServerPacket, Version};
}
