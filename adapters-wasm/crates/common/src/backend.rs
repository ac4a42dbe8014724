//! The trait a backend implements; [`crate::Adapter`] turns it into the exports of
//! world `msgplug:adapter/backend`.

use crate::{Error, MessageData, Settings};

/// Names one delivery until it is settled (`msgplug:adapter/consumer.delivery-id`).
pub type DeliveryId = u64;

/// What [`Backend::next`] found (`msgplug:adapter/consumer.event` without resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message for the app's handler, with the id to settle it by.
    Delivery(DeliveryId, MessageData),
    /// Input that could not be made into a message; the text says where and why.
    Rejected(String),
    /// No message will ever come again.
    End,
}

/// The options of one `request-reply.request` call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// How long to wait for replies; `None` waits without limit.
    pub timeout_ms: Option<u32>,
    /// How many replies to wait for at most; `None` means one when there is no
    /// timeout, and as many as arrive within the timeout otherwise.
    pub expected_replies: Option<u32>,
}

/// A broker family: the only code a new backend has to write.
///
/// One value is made, lazily, the first time the app or the driver needs the broker;
/// every `client` the app connects shares it. The glue has turned resources into
/// plain [`MessageData`] already, and it handles the `pusher` interface
/// (injected messages and their replies) itself.
pub trait Backend: Sized + 'static {
    /// The backend's name, as in `msgplug[NAME]:` log lines and `--backend`.
    const NAME: &'static str;

    /// Connects to the broker described by `settings`.
    fn open(settings: Settings) -> Result<Self, Error>;

    /// Publishes `message` on `topic` (`producer.send`). A send outside a handler
    /// must be flushed before it returns, unless the run wrapper flushes at the end
    /// (`Settings::final_flush`: it may then be confirmed in a [`crate::Window`]);
    /// inside one, [`Backend::flush`] follows.
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error>;

    /// Publishes `message` on `topic` with a fresh reply address and collects the
    /// replies as the `request-reply.request` doc describes.
    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error>;

    /// Sends `reply` to the address `reply_to` of a received message.
    fn reply(&mut self, reply_to: &str, reply: &MessageData) -> Result<(), Error> {
        self.send(reply_to, reply)
    }

    /// Blocks until the next event on the subscriptions (`consumer.next`).
    fn next(&mut self) -> Result<Event, Error>;

    /// Settles a delivery as handled (`consumer.ack`).
    fn ack(&mut self, id: DeliveryId) -> Result<(), Error>;

    /// Settles a delivery as failed, for redelivery (`consumer.nack`).
    fn nack(&mut self, id: DeliveryId) -> Result<(), Error>;

    /// Blocks until everything sent so far is accepted (`outbox.flush`).
    fn flush(&mut self) -> Result<(), Error>;

    /// Ends the connection politely (MQTT's `DISCONNECT`): called when the app dropped its
    /// last client and no driver receives, as a publisher or requester does before it
    /// exits (a component gets no other end-of-run signal); with the run wrapper, after
    /// its final flush instead. Everything sent was flushed already; a backend used again
    /// afterwards connects again. By default nothing.
    fn close(&mut self) {}
}
