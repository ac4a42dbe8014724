//! msgplug's `http` driver (world `msgplug:adapter/driver-http`): the trigger behind
//! `wasmtime serve`. Each HTTP request becomes one message for the app's handler.
//!
//! * Requests: `POST` only (`OPTIONS` answers `Allow: POST` and the CloudEvents web hook
//!   handshake; other methods get 405). The body may be a CloudEvent 1.0 in binary mode
//!   (`ce-*` headers, the body is the data), in structured mode
//!   (`Content-Type: application/cloudevents+json`, with `data` or `data_base64`), or
//!   anything else (a plain POST). Bodies over `options.max_body_bytes` (default 1 MiB;
//!   `MSGPLUG_MAX_BODY_BYTES` overrides) get 413.
//! * The message ([`push::inbound`]): the topic is the request path without its leading
//!   `/` (percent-decoded, query dropped), or for `/` the CloudEvent's `type` (a plain
//!   POST to `/` gets 400). The data and content type are the body and `Content-Type`
//!   (a CloudEvent's data and `datacontenttype`). A CloudEvent's attributes (`specversion`,
//!   `id`, `source`, `type`, then the rest by name, such as `subject` and extensions)
//!   become metadata under their CloudEvents names; no other header does.
//! * The response: the backend makes the message (`pusher.inject`), the app's handler
//!   runs, and on `Ok` the driver flushes the backend's `outbox` and answers 200 with the
//!   first reply the handler made (its data and content type), or 204 without one. A
//!   handler `Err` gives 500 and a flush error 502, each with a one-line text body, so
//!   push systems retry; a malformed request gives 4xx with the reason.
//!
//! Everything but the `wasi:http` glue (`serve`) is plain Rust, unit-tested with
//! `cargo test -p driver-http`; the CloudEvents codec is the `cloudevents` crate,
//! which the `http` backend shares.

mod limit;
mod push;
mod response;
#[cfg(not(test))]
mod serve;

/// Request headers as the wasi:http glue hands them over, from `(name, value)` pairs.
#[cfg(test)]
fn test_headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}
