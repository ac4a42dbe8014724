//! The [`Backend`] over SQS: signed JSON-protocol calls through outgoing `wasi:http`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    log, Backend, Backoff, Deliveries, DeliveryId, Error, Event, MessageData, RequestOptions,
    Settings,
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

/// The state of the SQS backend.
pub struct Sqs {
    /// Endpoint, credentials and the consumed queue's name.
    config: Config,
    /// Queue URLs by name, as `GetQueueUrl` returned them.
    urls: HashMap<String, String>,
    /// Received messages not yet handed to the driver.
    buffer: VecDeque<Received>,
    /// The receipt handle of each delivery not yet settled.
    receipts: Deliveries<String>,
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

    /// Long-polls the queue at `url` for at most `max` messages.
    fn receive(&self, url: &str, max: u32, wait_seconds: u32) -> Result<Vec<Received>, Error> {
        let name = protocol::queue_name(url);
        let body = self.call(
            "ReceiveMessage",
            name,
            protocol::receive_message(url, max, wait_seconds),
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
        let receipt = self.receipts.settle(id)?;
        let queue = self.consumed_queue()?.to_string();
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
            for received in self.receive(reply_url, missing, wait)? {
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
        })
    }

    /// Sends with `SendMessage`; while SQS throttles or fails, tries again after its
    /// `Retry-After` or a capped backoff, for up to [`SEND_WITHIN`].
    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
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
            if let Some(received) = self.buffer.pop_front() {
                return Ok(match received.message {
                    Ok(message) => {
                        Event::Delivery(self.receipts.deliver(received.receipt_handle), message)
                    }
                    Err(reason) => Event::Rejected(reason),
                });
            }
            let queue = self.consumed_queue()?.to_string();
            let batch = self.retrying(&format!("receiving from `{queue}`"), BACKOFF, |sqs| {
                let url = sqs.queue_url(&queue)?;
                sqs.receive(&url, MAX_MESSAGES, MAX_WAIT_SECONDS)
            })?;
            self.buffer.extend(batch);
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
