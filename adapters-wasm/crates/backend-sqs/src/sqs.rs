//! The [`Backend`] over SQS: signed JSON-protocol calls through outgoing `wasi:http`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    log, Backend, Backoff, ConfirmWindow, Deliveries, DeliveryId, Error, Event, Lease, MessageData,
    RequestOptions, Settings, Window, SET_HANDLER_TIMEOUT,
};
use http_client::{Failure, Method, Request};

use crate::config::Config;
use crate::protocol::{
    self, BatchEntry, Queue, Received, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_MESSAGES,
    MAX_WAIT_SECONDS,
};
use crate::sigv4;

/// The SQS backend's component type.
type Component = common::Adapter<Sqs>;
common::export!(Component);

/// How long a call other than a long poll may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than its `WaitTimeSeconds` a long poll may take.
const POLL_GRACE: Duration = Duration::from_secs(30);
/// The pauses before retrying a transient failure: 1 s, doubling up to 30 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// How often `ack` and `nack` try before giving up.
const SETTLE_ATTEMPTS: u32 = 3;
/// The pauses between tries of a send SQS is throttling or failing: 250 ms, doubling up
/// to 5 s, or the service's `Retry-After`.
const SEND_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
/// How long a send keeps trying while SQS throttles or fails, before the handler gets
/// the error.
const SEND_WITHIN: Duration = Duration::from_secs(30);

/// With the run wrapper, a window of sends is also sent once its messages hold this many
/// bytes (bodies and attributes), which bounds the memory they take.
const WINDOW_BYTES: usize = 1 << 20;

/// A received message the consumer holds (buffered or handed to the handler).
struct Held {
    /// What `DeleteMessage` and `ChangeMessageVisibility` take.
    receipt: String,
    /// Its visibility timeout, when known (`None`: the queue's could not be read).
    lease: Option<Lease>,
}

/// The state of the SQS backend.
pub struct Sqs {
    /// Endpoint, credentials and the consumed queue's name.
    config: Config,
    /// Queue URLs by name, as `GetQueueUrl` returned them.
    urls: HashMap<String, String>,
    /// Received messages not yet handed to the driver.
    buffer: VecDeque<(Held, Result<MessageData, String>)>,
    /// Each delivery not yet settled.
    receipts: Deliveries<Held>,
    /// How long a received message stays invisible to other consumers: `handler_timeout_ms`,
    /// else the queue's `VisibilityTimeout` (read once; `None` when that failed). Unset
    /// until the first receive.
    lease: Option<Option<Duration>>,
    /// With the run wrapper: the window of sends not yet sent.
    window: Option<Window>,
    /// The sends of the open window, in order: the queue URL and the message.
    pending: Vec<(String, BatchEntry)>,
    /// The bytes of `pending` (see [`WINDOW_BYTES`]).
    pending_bytes: usize,
}

impl Sqs {
    /// Calls `action` with the JSON `body`; `queue` names the queue in errors.
    /// Returns the body of a 2xx response.
    fn call(
        &self,
        action: &str,
        queue: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        self.try_call(action, queue, body, timeout)
            .map_err(|failure| failure.error)
    }

    /// [`Sqs::call`], saying whether trying again may help: throttling
    /// (`ThrottlingException`, `RequestThrottled`, ...), `ServiceUnavailable`, 5xx and a
    /// lost connection are transient, with the service's `Retry-After`.
    fn try_call(
        &self,
        action: &str,
        queue: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Failure> {
        let url = http_client::parse_url(&self.config.endpoint).map_err(Failure::lasting)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| {
            Failure::lasting(Error::other(
                "the system clock is before 1970; SigV4 needs the time",
            ))
        })?;
        let amz_date = sigv4::amz_date(now.as_secs());
        let mut headers = vec![
            (
                "content-type".to_string(),
                protocol::CONTENT_TYPE.to_string(),
            ),
            ("x-amz-target".to_string(), format!("AmazonSQS.{action}")),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        if let Some(token) = &self.config.signer.credentials.session_token {
            headers.push(("x-amz-security-token".to_string(), token.clone()));
        }
        let mut signed = headers.clone();
        signed.push(("host".to_string(), url.authority.to_string()));
        let authorization = self.config.signer.authorization(
            &sigv4::Request {
                method: "POST",
                path: url.path,
                query: url.query,
                headers: &signed,
                payload: &body,
            },
            &amz_date,
        );
        headers.push(("authorization".to_string(), authorization));
        let request = Request {
            method: Method::Post,
            url: self.config.endpoint.clone(),
            headers,
            body,
            timeout: Some(timeout),
        };
        let response = http_client::send(&request).map_err(Failure::of_exchange)?;
        if response.is_success() {
            return Ok(response.body);
        }
        let error = protocol::response_error(action, queue, &response);
        let mut failure = Failure::of_response(error, &response);
        // Throttling comes as a 400 with its code in the body.
        failure.transient |= matches!(failure.error, Error::Connection(_));
        Err(failure)
    }

    /// Returns the URL of the queue `topic` names, looking names up once.
    fn queue_url(&mut self, topic: &str) -> Result<String, Error> {
        let name = match protocol::queue_for_topic(topic)? {
            Queue::Url(url) => return Ok(url),
            Queue::Name(name) => name,
        };
        if let Some(url) = self.urls.get(&name) {
            return Ok(url.clone());
        }
        let body = self.call(
            "GetQueueUrl",
            &name,
            protocol::get_queue_url(&name),
            CALL_TIMEOUT,
        )?;
        let url = protocol::queue_url(&body)?;
        self.urls.insert(name, url.clone());
        Ok(url)
    }

    /// Long-polls the queue at `url` for at most `max` messages, with the visibility
    /// timeout `visibility` instead of the queue's, if given.
    fn receive(
        &self,
        url: &str,
        max: u32,
        wait_seconds: u32,
        visibility: Option<Duration>,
    ) -> Result<Vec<Received>, Error> {
        let name = protocol::queue_name(url);
        let visibility = visibility.map(protocol::visibility_seconds);
        let body = self.call(
            "ReceiveMessage",
            name,
            protocol::receive_message(url, max, wait_seconds, visibility),
            Duration::from_secs(wait_seconds.into()) + POLL_GRACE,
        )?;
        protocol::received(&body, name)
    }

    /// Runs `f` until it succeeds or fails with a non-transient error, pausing as
    /// `backoff` says after each transient one ([`Error::is_transient`]). `what`
    /// names the operation in the log line of each retry.
    fn retrying<T>(
        &mut self,
        what: &str,
        backoff: Backoff,
        mut f: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        backoff.retry(
            || f(self),
            Error::is_transient,
            |e, pause| {
                log(
                    Self::NAME,
                    &format!("{what} failed: {e}; retrying in {}s", pause.as_secs()),
                )
            },
        )
    }

    /// Settles delivery `id` with `action` (`DeleteMessage` or
    /// `ChangeMessageVisibility`), whose body `body` makes from the queue URL and
    /// the receipt handle.
    fn settle(
        &mut self,
        id: DeliveryId,
        action: &str,
        body: fn(&str, &str) -> Vec<u8>,
    ) -> Result<(), Error> {
        let Held { receipt, lease } = self.receipts.settle(id)?;
        let queue = self.consumed_queue()?.to_string();
        if action == "DeleteMessage" {
            let note = lease.and_then(|l| {
                l.overrun_note(
                    Instant::now(),
                    &queue,
                    "the visibility timeout",
                    SET_HANDLER_TIMEOUT,
                )
            });
            if let Some(note) = note {
                log(Self::NAME, &note);
            }
        }
        let url = self.queue_url(&queue)?;
        self.retrying(
            &format!("{action} on `{queue}`"),
            BACKOFF.tries(SETTLE_ATTEMPTS),
            |sqs| {
                sqs.call(action, &queue, body(&url, &receipt), CALL_TIMEOUT)
                    .map(drop)
            },
        )
    }

    /// The lease of a message received now: `handler_timeout_ms`, else the queue's
    /// `VisibilityTimeout`, read once with `GetQueueAttributes` (when that fails, leases
    /// are neither renewed nor checked, and a log line says so).
    fn lease_length(&mut self, url: &str) -> Option<Duration> {
        if let Some(known) = self.lease {
            return known;
        }
        let known = match self.config.handler_timeout {
            Some(timeout) => Some(timeout),
            None => {
                let name = protocol::queue_name(url).to_string();
                let answer = self
                    .call(
                        "GetQueueAttributes",
                        &name,
                        protocol::get_visibility_timeout(url),
                        CALL_TIMEOUT,
                    )
                    .and_then(|body| protocol::visibility_timeout(&body));
                match answer {
                    Ok(lease) => Some(lease),
                    Err(e) => {
                        log(
                            Self::NAME,
                            &format!("cannot read the visibility timeout of `{name}` ({e}): a long handler's message is not kept invisible by ChangeMessageVisibility; set --option handler_timeout_ms"),
                        );
                        None
                    }
                }
            }
        };
        self.lease = Some(known);
        known
    }

    /// Renews the lease of every message held (handed to the handler or buffered) whose
    /// renewal is due, with `ChangeMessageVisibility`. WASI 0.2 gives the backend no
    /// timer, so this runs when the handler calls the backend (send, request) and before
    /// `next` hands out a buffered message. A lease that ran out already is left alone:
    /// SQS may have delivered the message again, and the ack reports it. A failed renewal
    /// is logged; it is tried again on the next call.
    fn renew_leases(&mut self) {
        let now = Instant::now();
        let due = |held: &Held| {
            held.lease
                .is_some_and(|l| l.renewal_due(now) && l.overrun(now).is_none())
        };
        let receipts: Vec<(String, Duration)> = self
            .receipts
            .unsettled_mut()
            .map(|(_, held)| &*held)
            .chain(self.buffer.iter().map(|(held, _)| held))
            .filter(|held| due(held))
            .filter_map(|held| Some((held.receipt.clone(), held.lease?.lasts())))
            .collect();
        if receipts.is_empty() {
            return;
        }
        let Some(url) = self
            .config
            .queue
            .as_ref()
            .and_then(|queue| self.urls.get(queue))
            .cloned()
        else {
            return;
        };
        let name = protocol::queue_name(&url).to_string();
        for (receipt, lasts) in receipts {
            let seconds = protocol::visibility_seconds(lasts);
            let body = protocol::change_visibility(&url, &receipt, seconds);
            match self.call("ChangeMessageVisibility", &name, body, CALL_TIMEOUT) {
                Ok(_) => {
                    let held = self
                        .receipts
                        .unsettled_mut()
                        .map(|(_, held)| held)
                        .chain(self.buffer.iter_mut().map(|(held, _)| held))
                        .find(|held| held.receipt == receipt);
                    if let Some(lease) = held.and_then(|held| held.lease.as_mut()) {
                        lease.renewed(now);
                    }
                }
                Err(e) => log(
                    Self::NAME,
                    &format!("renewing the visibility timeout of a message from `{name}` failed: {e}; trying again on the next call"),
                ),
            }
        }
    }

    /// Takes the next buffered message for `next`: renews what is held first, and skips
    /// a message whose visibility timeout passed while it waited behind earlier handlers
    /// (SQS delivers it again; handling this copy would make a duplicate).
    fn next_buffered(&mut self) -> Option<Event> {
        self.renew_leases();
        let now = Instant::now();
        while let Some((held, message)) = self.buffer.pop_front() {
            if let Some(lease) = held.lease.filter(|l| l.overrun(now).is_some()) {
                log(
                    Self::NAME,
                    &format!(
                        "skipped a message from `{}` whose visibility timeout of {} s passed while it waited behind earlier handlers: SQS delivers it again; set --option handler_timeout_ms higher",
                        self.config.queue.as_deref().unwrap_or_default(),
                        common::Seconds(lease.lasts())
                    ),
                );
                continue;
            }
            return Some(match message {
                Ok(message) => Event::Delivery(self.receipts.deliver(held), message),
                Err(reason) => Event::Rejected(reason),
            });
        }
        None
    }

    /// Sends `message` to the queue at `url` with `SendMessage`; while SQS throttles or
    /// fails, tries again after its `Retry-After` or a capped backoff, for up to
    /// [`SEND_WITHIN`].
    fn send_message(&mut self, url: &str, message: &MessageData) -> Result<(), Error> {
        self.send_alone(url, protocol::send_message(url, message))
    }

    /// Sends the `SendMessage` request `body` to the queue at `url`, retrying as
    /// [`Sqs::send_message`] says.
    fn send_alone(&mut self, url: &str, body: Vec<u8>) -> Result<(), Error> {
        let name = protocol::queue_name(url).to_string();
        let sent = http_client::retry_within(
            SEND_BACKOFF,
            SEND_WITHIN,
            || self.try_call("SendMessage", &name, body.clone(), CALL_TIMEOUT),
            |failure, pause| log(Self::NAME, &format!("{failure}; retrying in {pause:?}")),
        );
        if sent.is_err() {
            // The queue may have been deleted since it was looked up.
            self.urls.retain(|_, u| u != url);
        }
        sent.map(drop)
    }

    /// Sends the open window (run wrapper) and closes it with the result, which is
    /// returned.
    fn send_window(&mut self) -> Result<(), Error> {
        let sent = self.send_pending();
        match self.window.as_mut() {
            Some(window) => window.confirmed(sent),
            None => sent,
        }
    }

    /// Sends every pending message, in order: runs of messages to the same queue go in
    /// `SendMessageBatch` requests of at most [`MAX_BATCH_ENTRIES`] and
    /// [`MAX_BATCH_BYTES`]; a message larger than a batch may be goes alone with
    /// `SendMessage`. Every batch is tried even when an earlier one failed, unless SQS
    /// could not be reached (a transient failure that outlasted the retries, which share
    /// one [`SEND_WITHIN`] for the window): then the rest fail with the same error
    /// unsent. The error says how many messages SQS did not take and each distinct reason.
    fn send_pending(&mut self) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let deadline = Instant::now() + SEND_WITHIN;
        let mut unreachable: Option<Error> = None;
        let mut failures: Vec<Error> = Vec::new();
        let mut rest = &pending[..];
        while let Some((url, _)) = rest.first() {
            let (mut count, mut bytes) = (0, 0);
            for (other, entry) in rest {
                let full = count == MAX_BATCH_ENTRIES || bytes + entry.size > MAX_BATCH_BYTES;
                if other != url || (count > 0 && full) {
                    break;
                }
                count += 1;
                bytes += entry.size;
            }
            let (batch, after) = rest.split_at(count);
            rest = after;
            if let Some(e) = &unreachable {
                failures.extend(batch.iter().map(|_| e.clone()));
                continue;
            }
            let entries: Vec<&BatchEntry> = batch.iter().map(|(_, entry)| entry).collect();
            let whole = match entries[..] {
                [alone] if alone.size > MAX_BATCH_BYTES => {
                    self.send_alone(url, alone.send_message(url)).err()
                }
                _ => match self.send_batch(url, entries, deadline) {
                    Ok(failed) => {
                        failures.extend(failed);
                        None
                    }
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = whole {
                failures.extend(batch.iter().map(|_| e.clone()));
                if e.is_transient() {
                    unreachable = Some(e);
                }
            }
        }
        not_taken(failures, pending.len())
    }

    /// Sends `entries` to the queue at `url` in one `SendMessageBatch`, retrying the
    /// whole request while SQS throttles or fails, and entries it failed on its side
    /// (not the sender's fault), until `deadline`. Returns one error per message SQS did
    /// not take, or the error of the whole request when SQS took none of them.
    fn send_batch(
        &mut self,
        url: &str,
        mut entries: Vec<&BatchEntry>,
        deadline: Instant,
    ) -> Result<Vec<Error>, Error> {
        let name = protocol::queue_name(url).to_string();
        let mut backoff = SEND_BACKOFF;
        let mut failures = Vec::new();
        let mut first_try = true;
        loop {
            let body = protocol::send_message_batch(url, entries.iter().copied());
            let answer = http_client::retry_within(
                SEND_BACKOFF,
                deadline.saturating_duration_since(Instant::now()),
                || self.try_call("SendMessageBatch", &name, body.clone(), CALL_TIMEOUT),
                |failure, pause| log(Self::NAME, &format!("{failure}; retrying in {pause:?}")),
            )
            .and_then(|body| protocol::batch_failures(&body));
            let failed = match answer {
                Ok(failed) => failed,
                Err(e) if first_try => {
                    // The queue may have been deleted since it was looked up.
                    self.urls.retain(|_, u| u != url);
                    return Err(e);
                }
                Err(e) => {
                    // A retry of failed entries: earlier ones were taken.
                    self.urls.retain(|_, u| u != url);
                    failures.extend(entries.iter().map(|_| e.clone()));
                    return Ok(failures);
                }
            };
            let mut again = Vec::new();
            for failure in failed {
                let text = format!(
                    "SQS SendMessageBatch on `{name}` did not take a message: {}",
                    failure.reason
                );
                match entries.get(failure.index) {
                    Some(entry) if !failure.sender_fault => {
                        again.push((*entry, Error::connection(text)))
                    }
                    _ => failures.push(Error::other(text)),
                }
            }
            let pause = backoff
                .failed()
                .filter(|pause| Instant::now() + *pause < deadline);
            match (again.is_empty(), pause) {
                (true, _) => return Ok(failures),
                (false, None) => {
                    failures.extend(again.into_iter().map(|(_, e)| e));
                    return Ok(failures);
                }
                (false, Some(pause)) => {
                    log(
                        Self::NAME,
                        &format!(
                            "{}; retrying {} message(s) in {pause:?}",
                            again[0].1,
                            again.len()
                        ),
                    );
                    std::thread::sleep(pause);
                    first_try = false;
                    entries = again.into_iter().map(|(entry, _)| entry).collect();
                }
            }
        }
    }

    /// The name of the queue the consumer reads, from the broker URL.
    fn consumed_queue(&self) -> Result<&str, Error> {
        self.config.queue.as_deref().ok_or_else(|| {
            Error::other(
                "the broker URL names no queue to consume; compose with --broker sqs://REGION/QUEUE-NAME",
            )
        })
    }

    /// Sends `message` to `topic` with the reply queue `reply_url` and collects the
    /// replies there as `request-reply.request` describes.
    fn exchange(
        &mut self,
        topic: &str,
        message: &MessageData,
        reply_url: &str,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        let mut request = message.clone();
        request.reply_to = Some(reply_url.to_string());
        // Sends of an open window go first, as they were made first.
        if !self.pending.is_empty() {
            self.send_window()?;
        }
        let url = self.queue_url(topic)?;
        self.send_message(&url, &request)?;
        let deadline = options
            .timeout_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms.into()));
        let wanted = match (options.expected_replies, options.timeout_ms) {
            (Some(n), _) => Some(n as usize),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        };
        let mut replies = Vec::new();
        loop {
            let missing = match wanted {
                Some(n) if replies.len() >= n => return Ok(replies),
                Some(n) => u32::try_from(n - replies.len()).unwrap_or(MAX_MESSAGES),
                None => MAX_MESSAGES,
            };
            // Long polling waits whole seconds: round up, so the deadline may pass by
            // less than a second.
            let wait = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                None => MAX_WAIT_SECONDS,
                Some(left) if left.is_zero() => break,
                Some(left) => {
                    let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    u32::try_from(seconds).unwrap_or(MAX_WAIT_SECONDS)
                }
            };
            for received in self.receive(reply_url, missing, wait, None)? {
                match received.message {
                    Ok(reply) => replies.push(reply),
                    Err(reason) => log(Self::NAME, &format!("skipped a reply: {reason}")),
                }
            }
        }
        if replies.is_empty() {
            Err(Error::Timeout)
        } else {
            Ok(replies)
        }
    }
}

impl Backend for Sqs {
    const NAME: &'static str = "sqs";

    fn open(settings: Settings) -> Result<Self, Error> {
        let config = Config::from_settings(&settings, |name| std::env::var(name).ok())?;
        if !settings.subscribe.is_empty() {
            log(
                Self::NAME,
                &format!(
                    "subscriptions ({}) are ignored: SQS consumes the queue named in the broker URL ({})",
                    settings.subscribe.join(", "),
                    config.queue.as_deref().map_or_else(
                        || "none: sqs://REGION/QUEUE-NAME".to_string(),
                        |q| format!("`{q}`")
                    ),
                ),
            );
        }
        let window = ConfirmWindow::from_settings(&settings)?.map(Window::new);
        Ok(Self {
            config,
            urls: HashMap::new(),
            buffer: VecDeque::new(),
            receipts: Deliveries::new(),
            lease: None,
            window,
            pending: Vec::new(),
            pending_bytes: 0,
        })
    }

    /// Sends with `SendMessage` (see [`Sqs::send_message`]) before returning; with the
    /// run wrapper, the message joins the open window instead, which is sent with
    /// `SendMessageBatch` once it is full ([`ConfirmWindow`], [`WINDOW_BYTES`]) or old:
    /// then this returns what sending the window found.
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        self.renew_leases();
        let url = self.queue_url(topic)?;
        let Some(window) = self.window.as_mut() else {
            return self.send_message(&url, message);
        };
        let entry = BatchEntry::new(&url, message);
        self.pending_bytes += entry.size;
        self.pending.push((url, entry));
        match window.send(Instant::now()) || self.pending_bytes >= WINDOW_BYTES {
            true => self.send_window(),
            false => Ok(()),
        }
    }

    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        self.renew_leases();
        let reply_queue = format!("msgplug-reply-{}", common::random_id());
        let body = self.call(
            "CreateQueue",
            &reply_queue,
            protocol::create_queue(&reply_queue),
            CALL_TIMEOUT,
        )?;
        let reply_url = protocol::queue_url(&body)?;
        let outcome = self.exchange(topic, message, &reply_url, options);
        if let Err(e) = self.call(
            "DeleteQueue",
            &reply_queue,
            protocol::delete_queue(&reply_url),
            CALL_TIMEOUT,
        ) {
            log(
                Self::NAME,
                &format!("could not delete the reply queue `{reply_queue}`: {e}"),
            );
        }
        outcome
    }

    fn next(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(event) = self.next_buffered() {
                return Ok(event);
            }
            let queue = self.consumed_queue()?.to_string();
            let (batch, lasts) =
                self.retrying(&format!("receiving from `{queue}`"), BACKOFF, |sqs| {
                    let url = sqs.queue_url(&queue)?;
                    let lasts = sqs.lease_length(&url);
                    let visibility = sqs.config.handler_timeout;
                    Ok((
                        sqs.receive(&url, MAX_MESSAGES, MAX_WAIT_SECONDS, visibility)?,
                        lasts,
                    ))
                })?;
            // The visibility timeout runs from when SQS answered.
            let now = Instant::now();
            self.buffer.extend(batch.into_iter().map(|received| {
                let held = Held {
                    receipt: received.receipt_handle,
                    lease: lasts.map(|lasts| Lease::new(now, lasts)),
                };
                (held, received.message)
            }));
        }
    }

    fn ack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.settle(id, "DeleteMessage", protocol::delete_message)
    }

    fn nack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.settle(id, "ChangeMessageVisibility", protocol::release_message)
    }

    /// Without the run wrapper `SendMessage` returned 2xx for every send: SQS has
    /// accepted each already. With it, sends the open window, and fails if that or an
    /// earlier window lost messages.
    fn flush(&mut self) -> Result<(), Error> {
        if self.window.is_none() {
            return Ok(());
        }
        let sent = self.send_pending();
        let window = self.window.as_mut().expect("checked above");
        window.finish(sent)
    }
}

/// The result of sending `total` messages of which `failures` (one error per message)
/// were not taken: the error names how many and each distinct reason once, with the kind
/// (connection, permission, other) of the first.
fn not_taken(failures: Vec<Error>, total: usize) -> Result<(), Error> {
    let Some(first) = failures.first() else {
        return Ok(());
    };
    let mut reasons: Vec<String> = Vec::new();
    for failure in &failures {
        let reason = failure.to_string();
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    let text = format!(
        "SQS did not take {} of {total} sent message(s): {}",
        failures.len(),
        reasons.join("; ")
    );
    Err(match first {
        Error::PermissionDenied(_) => Error::PermissionDenied(text),
        Error::Connection(_) | Error::Timeout => Error::Connection(text),
        Error::Other(_) => Error::Other(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_not_taken_are_counted_and_each_reason_said_once() {
        assert_eq!(not_taken(Vec::new(), 3), Ok(()));
        let too_big = Error::other("SQS SendMessageBatch on `q` failed: too big");
        let throttled = Error::connection("throttled");
        assert_eq!(
            not_taken(vec![too_big.clone(), too_big.clone(), throttled], 12),
            Err(Error::other(
                "SQS did not take 3 of 12 sent message(s): SQS SendMessageBatch on `q` failed: too big; connection: throttled"
            ))
        );
        let denied = Error::PermissionDenied("AccessDenied".into());
        assert!(matches!(
            not_taken(vec![denied], 1),
            Err(Error::PermissionDenied(_))
        ));
    }
}
