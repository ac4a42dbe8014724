//! The code every msgplug backend adapter shares.
//!
//! A backend adapter is a component of world `msgplug:adapter/backend`: it exports
//! `wasi:messaging/{types,producer,request-reply}` plus `msgplug:adapter/{consumer,
//! pusher,outbox}`. This crate owns the bindings of that world and implements every
//! exported function once ([`Adapter`]); a backend crate only implements the small
//! [`Backend`] trait (connect, send, request, next, ...) and exports the result:
//!
//! ```ignore
//! struct MyBackend { /* connection */ }
//! impl common::Backend for MyBackend { /* ... */ }
//!
//! type Component = common::Adapter<MyBackend>;
//! common::export!(Component);
//! ```
//!
//! Everything except the glue is plain Rust with no WASI in it, so it is unit-tested
//! with `cargo test` (the glue is left out of test builds: a test binary cannot
//! carry the exports of world `backend`).

mod authority;
mod backend;
mod backoff;
mod deliveries;
pub mod io_error;
mod lease;
mod message;
mod settings;
mod subject;
mod window;

#[cfg(not(test))]
mod adapter;
#[cfg(not(test))]
pub mod bindings;

#[cfg(not(test))]
pub use adapter::{load_settings, Adapter};
pub use authority::Authority;
pub use backend::{Backend, DeliveryId, Event, RequestOptions};
pub use backoff::{reconnect_message, Backoff};
/// Exports a backend: `type Component = common::Adapter<MyBackend>; common::export!(Component);`.
#[cfg(not(test))]
pub use bindings::export;
pub use deliveries::Deliveries;
pub use lease::{handler_timeout, Lease, Seconds, HANDLER_TIMEOUT_OPTION, SET_HANDLER_TIMEOUT};
pub use message::{MessageData, Metadata};
pub use messaging_error::Error;
pub use settings::{Settings, SETTINGS_FORMAT};
pub use subject::{matches_any, subject_matches};
pub use window::{ConfirmWindow, Window, DEFAULT_WINDOW_MESSAGES, DEFAULT_WINDOW_MS};

/// Returns 32 random lower-case hex digits (128 bits from `wasi:random`): fresh inboxes,
/// message ids and event ids.
#[cfg(not(test))]
pub fn random_id() -> String {
    let bytes = wasip2::random::random::get_random_bytes(16);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `msgplug[BACKEND]: TEXT` to stderr, the only place adapters log to
/// (stdout belongs to the data).
pub fn log(backend: &str, text: &str) {
    eprintln!("msgplug[{backend}]: {text}");
}
