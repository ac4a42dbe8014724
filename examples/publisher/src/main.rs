//! `publisher`: a command that publishes a few greetings and exits.
//!
//! Written against the standard `wasi:messaging@0.2.0-draft` world `imports`
//! (it only imports `producer`); its `fn main` makes the component export
//! `wasi:cli/run`, so no trigger is needed. It sends `COUNT` messages (env var,
//! default 3) to the topic `TOPIC` (env var, default `greetings`), with data
//! `hello #<i>` (i from 1), content-type `text/plain` and the metadata
//! `seq=<i>`. Diagnostics go to stderr: stdout belongs to the data stream of
//! the local backend.

wit_bindgen::generate!({
    path: "../../wit/deps/messaging",
    world: "imports",
});

use std::process::ExitCode;
use wasi::messaging::producer;
use wasi::messaging::types::{Client, Error, Message};

fn main() -> ExitCode {
    let count = match std::env::var("COUNT") {
        Err(std::env::VarError::NotPresent) => 3,
        Ok(value) => match value.parse::<u32>() {
            Ok(count) => count,
            Err(_) => {
                eprintln!("publisher: invalid COUNT `{value}`: expected a non-negative integer");
                return ExitCode::FAILURE;
            }
        },
        Err(err) => {
            eprintln!("publisher: invalid COUNT: {err}");
            return ExitCode::FAILURE;
        }
    };
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "greetings".into());
    match publish(&topic, count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("publisher: send failed: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

fn publish(topic: &str, count: u32) -> Result<(), Error> {
    let client = Client::connect("default")?;
    for i in 1..=count {
        let message = Message::new(format!("hello #{i}").as_bytes());
        message.set_content_type("text/plain");
        message.add_metadata("seq", &i.to_string());
        producer::send(&client, topic, message)?;
    }
    Ok(())
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
