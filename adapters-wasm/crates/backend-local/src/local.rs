//! The [`Backend`] over stdin and stdout.

use std::collections::VecDeque;
use std::io::Write;

use common::{
    log, matches_any, Backend, Deliveries, DeliveryId, Error, Event, MessageData, RequestOptions,
    Settings,
};

use crate::protocol;
use crate::stdin::{Lines, Read};

/// The local backend's component type.
type Component = common::Adapter<Local>;
common::export!(Component);

/// How many finished requests' inboxes are remembered to drop late replies; older
/// late replies reach the handler like any other line.
const REMEMBERED_INBOXES: usize = 1024;

/// The state of the local backend.
pub struct Local {
    /// Subscription patterns; empty means every topic.
    subscribe: Vec<String>,
    /// Stdin, line by line.
    input: Lines,
    /// Lines read while waiting for replies, for `next`: line number and the
    /// message or the reason it was rejected.
    pending: VecDeque<(usize, Result<MessageData, String>)>,
    /// The reply addresses of the most recent finished requests (late replies to them
    /// are dropped), at most [`REMEMBERED_INBOXES`].
    inboxes: VecDeque<String>,
    /// The deliveries not settled yet (there is nothing to settle them with).
    deliveries: Deliveries<()>,
}

impl Local {
    /// Writes one NDJSON line to stdout and flushes it.
    fn write(
        &mut self,
        topic: &str,
        message: &MessageData,
        reply_to: Option<&str>,
    ) -> Result<(), Error> {
        let mut line = protocol::encode(topic, message, reply_to);
        line.push('\n');
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| Error::connection(format!("writing stdout failed: {e}")))
    }

    /// Reads and decodes the next non-blank line, waiting until `deadline` if given.
    fn read(&mut self, deadline: Option<u64>) -> Result<Input, Error> {
        loop {
            return Ok(match self.input.read(deadline)? {
                Read::Line(number, bytes) => match protocol::decode(&bytes) {
                    Ok(None) => continue,
                    Ok(Some(message)) => Input::Line(number, Ok(message)),
                    Err(reason) => Input::Line(number, Err(reason)),
                },
                Read::Eof => Input::Eof,
                Read::TimedOut => Input::TimedOut,
            });
        }
    }
}

/// A decoded stdin line, or why there is none.
enum Input {
    /// A non-blank line: its number, and its message or why it was rejected.
    Line(usize, Result<MessageData, String>),
    /// Stdin ended.
    Eof,
    /// The deadline passed.
    TimedOut,
}

impl Backend for Local {
    const NAME: &'static str = "local";

    fn open(settings: Settings) -> Result<Self, Error> {
        match settings.broker.as_str() {
            "" | "local" | "local:" | "local://" => {}
            broker if settings.broker_scheme() == "local" => {
                return Err(Error::other(format!(
                    "broker `{broker}` names no local broker; use `local:`"
                )))
            }
            _ => return Err(settings.wrong_backend(Self::NAME)),
        }
        Ok(Self {
            subscribe: settings.subscribe,
            input: Lines::stdin(),
            pending: VecDeque::new(),
            inboxes: VecDeque::new(),
            deliveries: Deliveries::new(),
        })
    }

    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        self.write(topic, message, None)
    }

    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        let inbox = format!("_INBOX.{}", common::random_id());
        self.write(topic, message, Some(&inbox))?;
        let deadline = options
            .timeout_ms
            .map(|ms| monotonic_now().saturating_add(u64::from(ms).saturating_mul(1_000_000)));
        let wanted = match (options.expected_replies, options.timeout_ms) {
            (Some(n), _) => Some(n as usize),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        };
        let mut replies = Vec::new();
        let outcome = loop {
            if wanted.is_some_and(|n| replies.len() >= n) {
                break Ok(());
            }
            match self.read(deadline)? {
                Input::Line(_, Ok(reply)) if reply.topic.as_deref() == Some(inbox.as_str()) => {
                    replies.push(reply)
                }
                Input::Line(number, other) => self.pending.push_back((number, other)),
                Input::Eof => {
                    break Err(Error::connection(format!(
                        "stdin ended before a reply on `{inbox}` arrived"
                    )))
                }
                Input::TimedOut => break Err(Error::Timeout),
            }
        };
        if self.inboxes.len() == REMEMBERED_INBOXES {
            self.inboxes.pop_front();
        }
        self.inboxes.push_back(inbox);
        match outcome {
            Err(e) if replies.is_empty() => Err(e),
            _ => Ok(replies),
        }
    }

    fn next(&mut self) -> Result<Event, Error> {
        loop {
            let (number, item) = match self.pending.pop_front() {
                Some(item) => item,
                None => match self.read(None)? {
                    Input::Line(number, item) => (number, item),
                    Input::Eof | Input::TimedOut => return Ok(Event::End),
                },
            };
            let message = match item {
                Ok(message) => message,
                Err(reason) => {
                    return Ok(Event::Rejected(format!("stdin line {number}: {reason}")))
                }
            };
            let topic = message.topic.as_deref().unwrap_or_default();
            if self.inboxes.iter().any(|inbox| inbox == topic) {
                log(
                    Self::NAME,
                    &format!("stdin line {number}: late reply on `{topic}`; skipped"),
                );
                continue;
            }
            if !matches_any(&self.subscribe, topic) {
                log(
                    Self::NAME,
                    &format!(
                        "stdin line {number}: topic `{topic}` matches no subscription; skipped"
                    ),
                );
                continue;
            }
            return Ok(Event::Delivery(self.deliveries.deliver(()), message));
        }
    }

    fn ack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.deliveries.settle(id)
    }

    /// Like `ack`: stdin cannot give a line again.
    fn nack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.deliveries.settle(id)
    }

    fn flush(&mut self) -> Result<(), Error> {
        std::io::stdout()
            .flush()
            .map_err(|e| Error::connection(format!("flushing stdout failed: {e}")))
    }
}

/// Returns the monotonic clock's current instant in nanoseconds.
fn monotonic_now() -> u64 {
    wasip2::clocks::monotonic_clock::now()
}
