//! msgplug's `local` backend adapter: no broker, NDJSON messages on stdin and stdout.
//!
//! Each stdin line is one message (`{"topic": "...", "data": "..."}`, see
//! [`protocol`] for the NDJSON schema); every message the app sends is written to stdout
//! the same way. `request` writes the request with a fresh `_INBOX.<hex>` reply
//! address and reads stdin until replies on it arrive. Logs go to stderr.

// With `fuzzing` the I/O is left out, and with it the only users of much of the rest.
#![cfg_attr(feature = "fuzzing", allow(dead_code))]

#[cfg(not(any(test, feature = "fuzzing")))]
mod local;
mod protocol;
#[cfg(not(any(test, feature = "fuzzing")))]
mod stdin;

/// The parsers of bytes from outside, for the native fuzz targets in `adapters-wasm/fuzz`
/// (feature `fuzzing`, which also leaves out the I/O; never part of the component).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::protocol::{decode, encode};
}
