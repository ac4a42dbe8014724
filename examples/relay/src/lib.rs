//! `relay`: an event handler that relays every message verbatim.
//!
//! Written against the standard `wasi:messaging@0.2.0-draft` world
//! `messaging-core`: it exports `incoming-handler` and imports `producer`.
//! Each message is sent again, byte for byte (binary data too), to
//! `<topic>.relayed` (`unknown.relayed` when it has no topic), with its
//! content-type and metadata unchanged. A send error is the handler's error.
//!
//! Failing on demand: a message with the metadata `fail: once` makes the
//! handler return `Err` the first time this instance sees its data, and relays
//! it when it comes again. A broker that redelivers after an `Err` shows
//! up as one failure and one relayed message; one that does not, as one failure
//! and nothing relayed. The conformance suite (`tests/conformance/`) uses this.
//!
//! Trapping on demand: when the environment variable `TRAP_ON_METADATA` is set,
//! a message with the metadata `trap: yes` makes the handler panic (a trap:
//! the instance is gone and `wasmtime run` exits non-zero). Without the
//! variable such a message is relayed like any other, so a second instance
//! started without it handles what the first one left unsettled. Nothing is
//! kept across instances: the variable alone decides.
//!
//! Slow on demand: the metadata `sleep-ms: N` makes the handler wait N ms (with
//! `wasi:clocks`, without calling into messaging) before it relays: a handler slower
//! than the broker's redelivery deadline. `sleep-ms: N,M,...` waits each time in turn
//! and sends the data to `<topic>.progress` between two waits: a long handler that calls
//! into messaging as it goes. The lease tests (`tests/nats.rs`, `tests/sqs.rs`,
//! `tests/redis.rs`) use this.

wit_bindgen::generate!({
    path: "../../wit/deps/messaging",
    world: "messaging-core",
});

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use exports::wasi::messaging::incoming_handler::Guest;
use wasi::messaging::producer;
use wasi::messaging::types::{Client, Error, Message};

thread_local! {
    /// The data of the `fail: once` messages that failed already.
    static FAILED: RefCell<HashSet<Vec<u8>>> = RefCell::new(HashSet::new());
}

struct Relay;

impl Guest for Relay {
    fn handle(message: Message) -> Result<(), Error> {
        let data = message.data();
        let metadata = message.metadata().unwrap_or_default();
        let has = |key: &str, value: &str| metadata.iter().any(|(k, v)| k == key && v == value);
        if has("trap", "yes") && std::env::var_os("TRAP_ON_METADATA").is_some() {
            panic!("trapping, as the metadata `trap: yes` and `TRAP_ON_METADATA` ask");
        }
        let fail_once = has("fail", "once");
        if fail_once && FAILED.with(|failed| failed.borrow_mut().insert(data.clone())) {
            return Err(Error::Other(
                "failing once, as the metadata `fail: once` asks".into(),
            ));
        }
        let topic = message.topic().unwrap_or_else(|| "unknown".into());
        if let Some((_, waits)) = metadata.iter().find(|(k, _)| k == "sleep-ms") {
            work_slowly(waits, &topic, &data)?;
        }
        let relayed = Message::new(&data);
        if let Some(content_type) = message.content_type() {
            relayed.set_content_type(&content_type);
        }
        if !metadata.is_empty() {
            relayed.set_metadata(&metadata);
        }
        let client = Client::connect("default")?;
        producer::send(&client, &format!("{topic}.relayed"), relayed)
    }
}

/// Waits each of the comma-separated milliseconds in `waits`, sending `data` to
/// `<topic>.progress` between two waits.
fn work_slowly(waits: &str, topic: &str, data: &[u8]) -> Result<(), Error> {
    for (step, wait) in waits.split(',').enumerate() {
        let ms: u64 = wait.trim().parse().map_err(|_| {
            Error::Other(format!(
                "metadata `sleep-ms` must be milliseconds separated by commas, not `{waits}`"
            ))
        })?;
        if step > 0 {
            let client = Client::connect("default")?;
            producer::send(&client, &format!("{topic}.progress"), Message::new(data))?;
        }
        std::thread::sleep(Duration::from_millis(ms));
    }
    Ok(())
}

export!(Relay);
