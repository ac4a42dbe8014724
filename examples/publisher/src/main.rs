//! `publisher`: a command that publishes a few greetings and exits.
//!
//! Written against the standard `wasi:messaging@0.2.0-draft` world `imports`
//! (it only imports `producer`); its `fn main` makes the component export
//! `wasi:cli/run`, so no trigger is needed. It sends `COUNT` messages (env var,
//! default 3) to the topic `TOPIC` (env var, default `greetings`), with data
//! `hello #<i>` (i from 1), content-type `text/plain` and the metadata
//! `seq=<i>`. With `SIZE=N` (env var) each message's data is instead `N`
//! bytes of `x`, with no content-type or metadata (to probe a broker's size
//! limit). Diagnostics go to stderr: stdout belongs to the data stream of the
//! local backend.

wit_bindgen::generate!({
    path: "../../wit/deps/messaging",
    world: "imports",
});

use std::process::ExitCode;
use wasi::messaging::producer;
use wasi::messaging::types::{Client, Error, Message};

fn main() -> ExitCode {
    let count = match env_u32("COUNT") {
        Ok(count) => count.unwrap_or(3),
        Err(err) => {
            eprintln!("publisher: {err}");
            return ExitCode::FAILURE;
        }
    };
    let size = match env_u32("SIZE") {
        Ok(size) => size,
        Err(err) => {
            eprintln!("publisher: {err}");
            return ExitCode::FAILURE;
        }
    };
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "greetings".into());
    match publish(&topic, count, size) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("publisher: send failed: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

fn publish(topic: &str, count: u32, size: Option<u32>) -> Result<(), Error> {
    let client = Client::connect("default")?;
    for i in 1..=count {
        let message = match size {
            Some(size) => Message::new(&vec![b'x'; size as usize]),
            None => {
                let message = Message::new(format!("hello #{i}").as_bytes());
                message.set_content_type("text/plain");
                message.add_metadata("seq", &i.to_string());
                message
            }
        };
        producer::send(&client, topic, message)?;
    }
    Ok(())
}

/// Reads an optional non-negative integer from the environment.
fn env_u32(key: &str) -> Result<Option<u32>, String> {
    match std::env::var(key) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(value) => value
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid {key} `{value}`: expected a non-negative integer")),
        Err(err) => Err(format!("invalid {key}: {err}")),
    }
}

/// Renders a messaging error for humans.
fn describe(err: &Error) -> String {
    match err {
        Error::Timeout => "timeout".into(),
        Error::Connection(text) => format!("connection: {text}"),
        Error::PermissionDenied(text) => format!("permission denied: {text}"),
        Error::Other(text) => text.clone(),
    }
}
