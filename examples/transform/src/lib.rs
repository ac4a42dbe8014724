//! `transform`: an event handler that republishes text upper-cased.
//!
//! Written against the standard `wasi:messaging@0.2.0-draft` world
//! `messaging-core`: it exports `incoming-handler` and imports `producer`.
//! Every message whose data is UTF-8 text is published again, upper-cased, to
//! `<topic>.upper` (`unknown.upper` when the message has no topic), keeping its
//! content-type and metadata and adding the metadata `transformed-by=transform`
//! (or the value of the env var `TRANSFORMED_BY`, to tell instances apart).
//! Data that is not UTF-8 makes the handler fail, so the message is not
//! acknowledged and the broker may redeliver it.

wit_bindgen::generate!({
    path: "../../wit/deps/messaging",
    world: "messaging-core",
});

use exports::wasi::messaging::incoming_handler::Guest;
use wasi::messaging::producer;
use wasi::messaging::types::{Client, Error, Message};

struct Transform;

impl Guest for Transform {
    fn handle(message: Message) -> Result<(), Error> {
        let text = String::from_utf8(message.data())
            .map_err(|_| Error::Other("payload is not UTF-8 text".into()))?;
        let topic = message.topic().unwrap_or_else(|| "unknown".into());

        let upper = Message::new(text.to_uppercase().as_bytes());
        if let Some(content_type) = message.content_type() {
            upper.set_content_type(&content_type);
        }
        if let Some(metadata) = message.metadata() {
            upper.set_metadata(&metadata);
        }
        let by = std::env::var("TRANSFORMED_BY").unwrap_or_else(|_| "transform".into());
        upper.add_metadata("transformed-by", &by);

        let client = Client::connect("default")?;
        producer::send(&client, &format!("{topic}.upper"), upper)
    }
}

export!(Transform);
