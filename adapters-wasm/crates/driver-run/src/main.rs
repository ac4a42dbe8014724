//! msgplug's `run` driver (world `msgplug:adapter/driver-run`): the trigger loop
//! behind `wasmtime run`.
//!
//! It pulls events from the backend's `consumer` until `end`, hands each delivery
//! to the app's `incoming-handler`, flushes the backend's `outbox` and acks the
//! delivery when the handler returned `Ok`, and nacks it otherwise. Failures are
//! reported on stderr; the exit status is 1 when any message failed.
//! `fn main` makes this component export `wasi:cli/run`.

mod bindings {
    #![allow(missing_docs)]

    wit_bindgen::generate!({
        world: "msgplug:adapter/driver-run",
        path: "../../../wit",
        generate_all,
    });
}

use std::process::ExitCode;

use bindings::msgplug::adapter::{consumer, outbox};
use bindings::wasi::messaging::incoming_handler;
use bindings::wasi::messaging::types::Error;

/// Renders a WIT error: `timeout`, `connection: TEXT`, `permission denied: TEXT`
/// or `TEXT`.
fn render(error: &Error) -> String {
    match error {
        Error::Timeout => "timeout".to_string(),
        Error::Connection(text) => format!("connection: {text}"),
        Error::PermissionDenied(text) => format!("permission denied: {text}"),
        Error::Other(text) => text.clone(),
    }
}

/// Reports a fatal backend error (`what` is e.g. `receiving`) and gives the exit status.
fn fatal(what: &str, error: &Error) -> ExitCode {
    eprintln!("msgplug: {what} failed: {}", render(error));
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let mut total = 0u64;
    let mut failed = 0u64;
    loop {
        let event = match consumer::next() {
            Ok(event) => event,
            Err(e) => return fatal("receiving", &e),
        };
        match event {
            consumer::Event::Delivery(delivery) => {
                total += 1;
                let topic = delivery.message.topic().unwrap_or_default();
                match incoming_handler::handle(delivery.message) {
                    Ok(()) => {
                        if let Err(e) = outbox::flush() {
                            return fatal("flushing", &e);
                        }
                        if let Err(e) = consumer::ack(delivery.id) {
                            return fatal("acknowledging", &e);
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("msgplug: message on `{topic}` failed: {}", render(&e));
                        if let Err(e) = consumer::nack(delivery.id) {
                            return fatal("acknowledging", &e);
                        }
                    }
                }
            }
            consumer::Event::Rejected(text) => {
                total += 1;
                failed += 1;
                eprintln!("msgplug: {text}");
            }
            consumer::Event::End => break,
        }
    }
    if failed > 0 {
        eprintln!("msgplug: {failed} of {total} messages failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
