//! msgplug's Azure Service Bus backend adapter, over the documented Service Bus REST
//! protocol on outgoing `wasi:http` (`wasmtime run -S http`): no `wasi:sockets`.
//!
//! * Broker: an Azure connection string (`Endpoint=sb://...;SharedAccessKeyName=...;
//!   SharedAccessKey=...[;EntityPath=...]`) or `servicebus://HOST/ENTITY` with the SAS
//!   policy in `SERVICEBUS_SAS_KEY_NAME` / `SERVICEBUS_SAS_KEY` ([`config`]).
//!   Always HTTPS, but `PlainHttpForTests=true` (plain http to a loopback address only).
//!   Requests carry SAS tokens ([`sas`]).
//! * `send(topic)` posts to the queue or topic named `topic`, with content type,
//!   metadata as custom properties and a fresh `MessageId` ([`protocol`]); while the
//!   service is busy or failing (429, 503, 5xx) it is tried again, after the service's
//!   `Retry-After` or a capped backoff, for up to 30 s.
//! * The `run` driver receives with peek-lock from each `--subscribe` entry (a queue, or
//!   `TOPIC/subscriptions/SUB`; none: the broker's entity path), completes (`DELETE` on
//!   the lock URI) after the handler's `Ok` and unlocks (`PUT`) after `Err`, so a failed
//!   message is redelivered: at-least-once. Locks are renewed (`POST` on the lock URI)
//!   once half their time has passed, when the handler sends (WASI 0.2 gives the adapter
//!   no timer of its own); a lock lost before complete is reported as such.
//! * `reply` sends to the received message's `ReplyTo` entity with `CorrelationId` set to
//!   its `MessageId`; `request` is not supported (the REST protocol has no sessions or
//!   temporary reply queues).

// With `fuzzing` the I/O is left out, and with it the only users of much of the rest.
#![cfg_attr(feature = "fuzzing", allow(dead_code))]

mod config;
mod protocol;
mod sas;
#[cfg(not(any(test, feature = "fuzzing")))]
mod servicebus;

/// The parsers of bytes from outside, for the native fuzz targets in `adapters-wasm/fuzz`
/// (feature `fuzzing`, which also leaves out the I/O; never part of the component).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::protocol::{parse_http_date, parse_received, BrokerProperties, Locked, Source};
}
