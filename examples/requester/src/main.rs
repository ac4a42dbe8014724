//! `requester`: a command that sends one request and prints the replies.
//!
//! Written against the standard `wasi:messaging@0.2.0-draft` world
//! `imports-request-reply`; its `fn main` makes the component export
//! `wasi:cli/run`. It sends `NAME` (env var, default `world`) to the topic
//! `TOPIC` (env var, default `greet`) and prints each reply as
//! `reply: <data>` on stderr (stdout belongs to the data stream of the local
//! backend). `TIMEOUT_MS` and `EXPECT` set the request's timeout and expected
//! number of replies; without either, no options are passed and the request
//! waits for a single reply.

wit_bindgen::generate!({
    path: "../../wit/deps/messaging",
    world: "imports-request-reply",
});

use std::process::ExitCode;
use wasi::messaging::request_reply::{self, RequestOptions};
use wasi::messaging::types::{Client, Error, Message};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("requester: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let name = std::env::var("NAME").unwrap_or_else(|_| "world".into());
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "greet".into());
    let timeout_ms = env_u32("TIMEOUT_MS")?;
    let expected_replies = env_u32("EXPECT")?;

    let options = (timeout_ms.is_some() || expected_replies.is_some()).then(|| {
        let options = RequestOptions::new();
        if let Some(timeout_ms) = timeout_ms {
            options.set_timeout_ms(timeout_ms);
        }
        if let Some(expected_replies) = expected_replies {
            options.set_expected_replies(expected_replies);
        }
        options
    });

    let replies = request(&topic, &name, options)
        .map_err(|err| format!("request failed: {}", describe(&err)))?;
    for reply in replies {
        eprintln!("reply: {}", String::from_utf8_lossy(&reply.data()));
    }
    Ok(())
}

fn request(
    topic: &str,
    name: &str,
    options: Option<RequestOptions>,
) -> Result<Vec<Message>, Error> {
    let client = Client::connect("default")?;
    let message = Message::new(name.as_bytes());
    request_reply::request(&client, topic, &message, options)
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
