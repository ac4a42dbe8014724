//! msgplug's run wrapper (world `msgplug:adapter/driver-wrap`): the entry point of an
//! output whose app exports its own `wasi:cli/run` (`--trigger none`).
//!
//! It calls the app's `run` (imported as `msgplug:adapter/app-run`), then the backend's
//! `outbox.flush`, so every message the app sent is confirmed by the broker before the
//! process exits; knowing this flush will come, the backend may confirm sends in windows
//! instead of one round trip each. The exit status is 1 when the app's run failed (the app
//! says why itself, as it would unwrapped) or the broker did not confirm everything (then
//! with one line on stderr).
//! `fn main` makes this component export `wasi:cli/run`.

mod bindings {
    #![allow(missing_docs)]

    wit_bindgen::generate!({
        world: "msgplug:adapter/driver-wrap",
        path: "../../../wit",
        generate_all,
    });
}

use std::process::ExitCode;

use bindings::msgplug::adapter::{app_run, outbox};
use bindings::wasi::messaging::types::Error;
use messaging_error::Error as Rendered;

// A WIT error renders as `timeout`, `connection: TEXT`, `permission denied: TEXT` or
// `TEXT` once it is a `Rendered`.
messaging_error::conversions!(Error);

fn main() -> ExitCode {
    let ran = app_run::run();
    // Flushed even when the app failed: what it sent before is confirmed (or reported).
    let flushed = outbox::flush();
    if let Err(e) = &flushed {
        eprintln!(
            "msgplug: the broker did not confirm every message the app sent: {}",
            Rendered::from(e.clone())
        );
    }
    match ran.is_ok() && flushed.is_ok() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}
