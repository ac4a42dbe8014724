//! msgplug's `local` backend adapter: no broker, NDJSON messages on stdin and stdout.
//!
//! Each stdin line is one message (`{"topic": "...", "data": "..."}`, see
//! [`protocol`] for the NDJSON schema); every message the app sends is written to stdout
//! the same way. `request` writes the request with a fresh `_INBOX.<hex>` reply
//! address and reads stdin until replies on it arrive. Logs go to stderr.

#[cfg(not(test))]
mod local;
mod protocol;
#[cfg(not(test))]
mod stdin;
