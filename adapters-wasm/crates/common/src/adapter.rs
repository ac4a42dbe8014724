//! The exports of world `msgplug:adapter/backend`, written once for every [`Backend`].

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;

use crate::bindings::exports::msgplug::adapter::{consumer, outbox, pusher};
use crate::bindings::exports::wasi::messaging::request_reply::{
    self, GuestRequestOptions, RequestOptions as RequestOptionsHandle,
};
use crate::bindings::exports::wasi::messaging::types::{
    Client, ClientBorrow, GuestClient, GuestMessage, Message, MessageBorrow,
};
use crate::bindings::exports::wasi::messaging::{producer, types};
use crate::bindings::msgplug::adapter::config;
use crate::{Backend, DeliveryId, Error, Event, MessageData, Metadata, RequestOptions, Settings};

/// The component type of a backend adapter: export it with
/// `type Component = common::Adapter<MyBackend>; common::export!(Component);`.
pub struct Adapter<B>(PhantomData<B>);

/// Reads the baked config and applies the `MSGPLUG_*` environment overrides.
pub fn load_settings() -> Result<Settings, Error> {
    Settings::parse(&config::get(), |name| std::env::var(name).ok())
}

thread_local! {
    /// The one backend value, made on first use (a component instance is single-threaded).
    static BACKEND: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// Which injected message `take-replies` answers for, and its replies so far.
    static PUSHED: RefCell<(u64, Vec<MessageData>)> = const { RefCell::new((0, Vec::new())) };
    /// How many `client` handles the app holds.
    static CLIENTS: Cell<usize> = const { Cell::new(0) };
    /// True once a driver asked for messages (`consumer.next` or `pusher.inject`).
    static RECEIVING: Cell<bool> = const { Cell::new(false) };
    /// True when the run wrapper flushes at the end (`Settings::final_flush`): the backend
    /// is closed after that flush, not when the app drops its last client.
    static FINAL_FLUSH: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on the backend, opening it first if needed.
fn with_backend<B: Backend, R>(f: impl FnOnce(&mut B) -> Result<R, Error>) -> Result<R, Error> {
    BACKEND.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let settings = load_settings()?;
            FINAL_FLUSH.with(|f| f.set(settings.final_flush));
            *slot = Some(Box::new(B::open(settings)?));
        }
        let backend = slot
            .as_mut()
            .and_then(|b| b.downcast_mut::<B>())
            .expect("a component exports exactly one backend type");
        f(backend)
    })
}

/// Runs `f` on the backend if it is open; otherwise there is nothing to do.
fn with_open_backend<B: Backend>(f: impl FnOnce(&mut B) -> Result<(), Error>) -> Result<(), Error> {
    BACKEND.with(|cell| match cell.borrow_mut().as_mut() {
        Some(backend) => f(backend
            .downcast_mut::<B>()
            .expect("a component exports exactly one backend type")),
        None => Ok(()),
    })
}

messaging_error::conversions!(types::Error);

/// The `client` resource: a handle on the shared backend.
pub struct ClientState<B: Backend>(PhantomData<B>);

impl<B: Backend> GuestClient for ClientState<B> {
    fn connect(_name: String) -> Result<Client, types::Error> {
        with_backend::<B, _>(|_| Ok(()))?;
        CLIENTS.with(|n| n.set(n.get() + 1));
        Ok(Client::new(ClientState::<B>(PhantomData)))
    }

    fn disconnect(&self) -> Result<(), types::Error> {
        Ok(())
    }
}

/// When the app drops its last client and no driver receives (a publisher or requester
/// that is done), the backend may [`Backend::close`] its connection; with the run wrapper
/// only after its final flush, since sends may still wait for their confirmation.
impl<B: Backend> Drop for ClientState<B> {
    fn drop(&mut self) {
        CLIENTS.with(|n| n.set(n.get().saturating_sub(1)));
        if !FINAL_FLUSH.with(Cell::get) {
            close_when_done::<B>();
        }
    }
}

/// Closes the backend if the app holds no client and no driver receives.
fn close_when_done<B: Backend>() {
    if CLIENTS.with(Cell::get) == 0 && !RECEIVING.with(Cell::get) {
        let _ = with_open_backend::<B>(|backend| {
            backend.close();
            Ok(())
        });
    }
}

/// The `message` resource.
pub struct MessageState {
    /// The message's content; resource methods take `&self`.
    data: RefCell<MessageData>,
    /// The `inject` generation this message came from, if it was injected.
    injected: Option<u64>,
}

impl MessageState {
    /// Wraps received content in a new `message` handle.
    fn handle(data: MessageData) -> Message {
        Message::new(Self {
            data: RefCell::new(data),
            injected: None,
        })
    }
}

impl GuestMessage for MessageState {
    fn new(data: Vec<u8>) -> Self {
        Self {
            data: RefCell::new(MessageData::new(data)),
            injected: None,
        }
    }

    fn topic(&self) -> Option<String> {
        self.data.borrow().topic.clone()
    }

    fn content_type(&self) -> Option<String> {
        self.data.borrow().content_type.clone()
    }

    fn set_content_type(&self, content_type: String) {
        self.data.borrow_mut().content_type = Some(content_type);
    }

    fn data(&self) -> Vec<u8> {
        self.data.borrow().data.clone()
    }

    fn set_data(&self, data: Vec<u8>) {
        self.data.borrow_mut().data = data;
    }

    fn metadata(&self) -> Option<types::Metadata> {
        let data = self.data.borrow();
        (!data.metadata.is_empty()).then(|| data.metadata.clone().into_pairs())
    }

    fn add_metadata(&self, key: String, value: String) {
        self.data.borrow_mut().metadata.insert(key, value);
    }

    fn set_metadata(&self, meta: types::Metadata) {
        self.data.borrow_mut().metadata = Metadata::from_pairs(meta);
    }

    fn remove_metadata(&self, key: String) {
        self.data.borrow_mut().metadata.remove(&key);
    }
}

/// The `request-options` resource.
pub struct RequestOptionsState(Cell<RequestOptions>);

impl GuestRequestOptions for RequestOptionsState {
    fn new() -> Self {
        Self(Cell::new(RequestOptions::default()))
    }

    fn set_timeout_ms(&self, timeout_ms: u32) {
        let mut options = self.0.get();
        options.timeout_ms = Some(timeout_ms);
        self.0.set(options);
    }

    fn set_expected_replies(&self, expected_replies: u32) {
        let mut options = self.0.get();
        options.expected_replies = (expected_replies > 0).then_some(expected_replies);
        self.0.set(options);
    }
}

impl<B: Backend> types::Guest for Adapter<B> {
    type Client = ClientState<B>;
    type Message = MessageState;
}

impl<B: Backend> producer::Guest for Adapter<B> {
    fn send(_c: ClientBorrow<'_>, topic: String, message: Message) -> Result<(), types::Error> {
        let message = message.get::<MessageState>().data.borrow();
        Ok(with_backend::<B, _>(|b| b.send(&topic, &message))?)
    }
}

impl<B: Backend> request_reply::Guest for Adapter<B> {
    type RequestOptions = RequestOptionsState;

    fn request(
        _c: ClientBorrow<'_>,
        topic: String,
        message: MessageBorrow<'_>,
        options: Option<RequestOptionsHandle>,
    ) -> Result<Vec<Message>, types::Error> {
        let options = options
            .map(|o| o.get::<RequestOptionsState>().0.get())
            .unwrap_or_default();
        let message = message.get::<MessageState>().data.borrow();
        let replies = with_backend::<B, _>(|b| b.request(&topic, &message, options))?;
        Ok(replies.into_iter().map(MessageState::handle).collect())
    }

    fn reply(reply_to: MessageBorrow<'_>, message: Message) -> Result<(), types::Error> {
        let original = reply_to.get::<MessageState>();
        let reply = message.get::<MessageState>().data.borrow();
        if let Some(generation) = original.injected {
            PUSHED.with(|pushed| {
                let mut pushed = pushed.borrow_mut();
                if pushed.0 == generation {
                    pushed.1.push(reply.clone());
                }
            });
            return Ok(());
        }
        match original.data.borrow().reply_to.as_deref() {
            Some(address) => Ok(with_backend::<B, _>(|b| b.reply(address, &reply))?),
            None => Ok(()),
        }
    }
}

impl<B: Backend> consumer::Guest for Adapter<B> {
    fn next() -> Result<consumer::Event, types::Error> {
        RECEIVING.with(|r| r.set(true));
        Ok(match with_backend::<B, _>(|b| b.next())? {
            Event::Delivery(id, data) => consumer::Event::Delivery(consumer::Delivery {
                id,
                message: MessageState::handle(data),
            }),
            Event::Rejected(text) => consumer::Event::Rejected(text),
            Event::End => consumer::Event::End,
        })
    }

    fn ack(id: DeliveryId) -> Result<(), types::Error> {
        Ok(with_open_backend::<B>(|b| b.ack(id))?)
    }

    fn nack(id: DeliveryId) -> Result<(), types::Error> {
        Ok(with_open_backend::<B>(|b| b.nack(id))?)
    }
}

impl<B: Backend> pusher::Guest for Adapter<B> {
    fn inject(inbound: pusher::Inbound) -> Message {
        RECEIVING.with(|r| r.set(true));
        let generation = PUSHED.with(|pushed| {
            let mut pushed = pushed.borrow_mut();
            pushed.0 += 1;
            pushed.1.clear();
            pushed.0
        });
        Message::new(MessageState {
            data: RefCell::new(MessageData {
                topic: Some(inbound.topic),
                data: inbound.data,
                content_type: inbound.content_type,
                metadata: Metadata::from_pairs(inbound.metadata),
                reply_to: None,
            }),
            injected: Some(generation),
        })
    }

    fn take_replies() -> Vec<Message> {
        let replies = PUSHED.with(|pushed| std::mem::take(&mut pushed.borrow_mut().1));
        replies.into_iter().map(MessageState::handle).collect()
    }
}

impl<B: Backend> outbox::Guest for Adapter<B> {
    fn flush() -> Result<(), types::Error> {
        let flushed = with_open_backend::<B>(|b| b.flush());
        if FINAL_FLUSH.with(Cell::get) {
            close_when_done::<B>();
        }
        Ok(flushed?)
    }
}
