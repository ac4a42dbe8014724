//! The [`Backend`] over SQS: signed JSON-protocol calls through outgoing `wasi:http`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    log, Backend, Backoff, Deliveries, DeliveryId, Error, Event, Lease, MessageData,
    RequestOptions, Settings, SET_HANDLER_TIMEOUT,
};
use http_client::{Failure, Method, Request};

use crate::config::Config;
use crate::protocol::{self, Queue, Received, MAX_MESSAGES, MAX_WAIT_SECONDS};
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
        self.send(topic, &request)?;
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
        Ok(Self {
            config,
            urls: HashMap::new(),
            buffer: VecDeque::new(),
            receipts: Deliveries::new(),
            lease: None,
        })
    }

    /// Sends with `SendMessage`; while SQS throttles or fails, tries again after its
    /// `Retry-After` or a capped backoff, for up to [`SEND_WITHIN`].
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        self.renew_leases();
        let url = self.queue_url(topic)?;
        let name = protocol::queue_name(&url).to_string();
        let sent = http_client::retry_within(
            SEND_BACKOFF,
            SEND_WITHIN,
            || {
                self.try_call(
                    "SendMessage",
                    &name,
                    protocol::send_message(&url, message),
                    CALL_TIMEOUT,
                )
            },
            |failure, pause| log(Self::NAME, &format!("{failure}; retrying in {pause:?}")),
        );
        if sent.is_err() {
            // The queue may have been deleted since it was looked up.
            self.urls.retain(|_, u| *u != url);
        }
        sent.map(drop)
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

    fn flush(&mut self) -> Result<(), Error> {
        // `SendMessage` returned 2xx for every send: SQS has accepted each already.
        Ok(())
    }
}
