//! msgplug's `run` driver (world `msgplug:adapter/driver-run`): the trigger loop
//! behind `wasmtime run`.
//!
//! It pulls events from the backend's `consumer` until `end`, hands each delivery
//! to the app's `incoming-handler`, flushes the backend's `outbox` and acks the
//! delivery when the handler returned `Ok` and the flush succeeded, and nacks it
//! otherwise. Failures are reported on stderr; the exit status is 1 when any
//! message failed. Only an error from `next` ends the run early.
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
use messaging_error::Error as Rendered;

// A WIT error renders as `timeout`, `connection: TEXT`, `permission denied: TEXT` or
// `TEXT` once it is a `Rendered`.
messaging_error::conversions!(Error);

/// Reports a fatal backend error (`what` is e.g. `receiving`) and gives the exit status.
fn fatal(what: &str, error: Error) -> ExitCode {
    eprintln!("msgplug: {what} failed: {}", Rendered::from(error));
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let mut total = 0u64;
    let mut failed = 0u64;
    loop {
        let event = match consumer::next() {
            Ok(event) => event,
            Err(e) => return fatal("receiving", e),
        };
        match event {
            consumer::Event::Delivery(delivery) => {
                total += 1;
                let topic = delivery.message.topic().unwrap_or_default();
                // The handler's outputs must be accepted before its input is acked, so a
                // crash in between can only cause a redelivery, never a lost output.
                let outcome = incoming_handler::handle(delivery.message)
                    .map_err(|e| Rendered::from(e).to_string())
                    .and_then(|()| {
                        outbox::flush().map_err(|e| format!("flushing: {}", Rendered::from(e)))
                    });
                let settled = match outcome {
                    Ok(()) => consumer::ack(delivery.id),
                    Err(text) => {
                        failed += 1;
                        eprintln!("msgplug: message on `{topic}` failed: {text}");
                        consumer::nack(delivery.id)
                    }
                };
                // A delivery that cannot be settled is redelivered by the broker later
                // (at-least-once), so the run goes on.
                if let Err(e) = settled {
                    eprintln!(
                        "msgplug: settling the message on `{topic}` failed: {}",
                        Rendered::from(e)
                    );
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
