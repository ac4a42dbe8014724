//! `responder`: answers requests with a greeting.
//!
//! Written against the standard `wasi:messaging@0.2.0-draft` world
//! `messaging-request-reply`: it exports `incoming-handler` and replies with
//! `request-reply.reply`. The reply to a message carrying `NAME` is
//! `hello, NAME` (content-type `text/plain`). With the env var `REPLIES=N`
//! (N > 1) it replies N times, `hello, NAME (k/N)` for k in 1..=N, to show
//! that one request may get several replies. A message without a reply-to
//! still succeeds: the reply is then a no-op.

wit_bindgen::generate!({
    path: "../../wit/deps/messaging",
    world: "messaging-request-reply",
});

use exports::wasi::messaging::incoming_handler::Guest;
use wasi::messaging::request_reply;
use wasi::messaging::types::{Error, Message};

struct Responder;

impl Guest for Responder {
    fn handle(message: Message) -> Result<(), Error> {
        let name = String::from_utf8_lossy(&message.data()).into_owned();
        let replies = std::env::var("REPLIES")
            .ok()
            .and_then(|value| value.parse::<u32>().ok())
            .unwrap_or(1);

        if replies <= 1 {
            return reply(&message, &format!("hello, {name}"));
        }
        for k in 1..=replies {
            reply(&message, &format!("hello, {name} ({k}/{replies})"))?;
        }
        Ok(())
    }
}

/// Replies to `request` with a `text/plain` message holding `text`.
fn reply(request: &Message, text: &str) -> Result<(), Error> {
    let response = Message::new(text.as_bytes());
    response.set_content_type("text/plain");
    request_reply::reply(request, response)
}

export!(Responder);
