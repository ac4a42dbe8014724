//! msgplug's `amqp` backend adapter: AMQP 0-9-1 (RabbitMQ) over `wasi:sockets`.
//!
//! **Codec.** The frames are encoded and decoded by [`protocol`], written by hand from
//! the 0-9-1 specification. `amq-protocol` (the codec under `lapin`) was tried first:
//! even with its default features off, version 10 depends on `amq-protocol-tcp` and
//! `async-rs`, which do not build for wasm32-wasip2, and on `url` with its IDNA and ICU
//! tables, which alone would take much of the 300 KB budget. The hand-written codec
//! models only the methods a publishing and consuming client needs.
//!
//! **Topic mapping.** `send(topic)` publishes to the exchange (`--option exchange`,
//! default `amq.topic`) with the topic as routing key, persistent (delivery mode 2) and
//! mandatory: a message no queue is bound for comes back as `basic.return`, which is an
//! error. Each `--subscribe` pattern is a binding key (`*` one word, `#` zero or more)
//! of the consumer's queue on that exchange (none means `#`). Without `--queue-group`
//! each instance declares its own exclusive, auto-delete queue (every instance sees every
//! message); with `--queue-group NAME` the instances share the durable queue `NAME`
//! (each message goes to one of them); `--option queue=NAME` consumes an existing queue
//! as it is, declaring and binding nothing.
//!
//! **Publishing.** The channel is in confirm mode. Outside a handler `send` returns once
//! the broker confirmed the message (`basic.ack`); inside one, publishes are pipelined
//! and the driver's `flush` waits for every confirm before the delivery is acked. A
//! `basic.nack`, a `basic.return` or a connection lost before the confirm is an error.
//! While the broker blocks publishers (`connection.blocked`), sends wait up to 10 s, then
//! fail with `connection`.
//!
//! **Consuming.** `basic.qos` prefetch (`--option prefetch`, default
//! [`config::DEFAULT_PREFETCH`]); a delivery is acked (`basic.ack`) after the handler
//! returned `Ok`, and nacked with requeue after `Err`; a redelivery carries the metadata
//! `amqp-redelivered: true`. Metadata and properties: see [`message`].
//!
//! **Request-reply** uses RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`) and a
//! fresh correlation id per request; `reply` publishes to the request's `reply-to`
//! through the default exchange with its correlation id.
//!
//! **Connection.** Credentials come from `AMQP_USERNAME` / `AMQP_PASSWORD` (or the URL);
//! there are no default ones. Heartbeats are negotiated (at most 60 s) and sent while the
//! backend waits for the broker (not while the app's handler runs). A lost connection is
//! re-made by `next` with capped backoff (100 ms to 5 s) and the topology declared again;
//! deliveries of the lost connection are not acked on the new one (the broker delivers
//! them again). A send while the broker is unreachable fails with `connection`. A
//! `connection.close` or `channel.close` from the broker becomes an error with its reply
//! text (ACCESS_REFUSED: `permission-denied`); the connection is then made again.
//!
//! Plain modules ([`protocol`], [`config`], [`message`]) are unit-tested with `cargo
//! test`; the I/O (`conn`, `amqp`) is left out of test builds.

// With `fuzzing` the I/O is left out, and with it the only users of much of the rest.
#![cfg_attr(feature = "fuzzing", allow(dead_code))]

#[cfg(not(any(test, feature = "fuzzing")))]
mod amqp;
mod config;
#[cfg(not(any(test, feature = "fuzzing")))]
mod conn;
mod message;
mod protocol;

/// The parsers of bytes from outside, for the native fuzz targets in `adapters-wasm/fuzz`
/// (feature `fuzzing`, which also leaves out the I/O; never part of the component).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::protocol::{Frame, Incoming, ProtocolError, Reader};
}
