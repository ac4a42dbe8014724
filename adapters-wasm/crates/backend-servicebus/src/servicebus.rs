//! The [`Backend`] over the Service Bus REST protocol: the only part that does I/O.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    log, Backend, Backoff, Deliveries, DeliveryId, Error, Event, Lease, MessageData,
    RequestOptions, Settings,
};

use http_client::Failure;

use crate::config::{self, Namespace};
use crate::protocol::{self, BrokerProperties, Settle, Source};
use crate::sas::Signer;

/// The Service Bus backend's component type.
type Component = common::Adapter<ServiceBus>;
common::export!(Component);

/// How long a peek-lock waits for a message when there is one source to poll.
const LONG_POLL_SECS: u32 = 30;
/// How long each peek-lock waits when several sources are polled in turn.
const SHORT_POLL_SECS: u32 = 1;
/// How much longer than the service's wait the HTTP exchange may take.
const EXCHANGE_MARGIN: Duration = Duration::from_secs(15);
/// The bound on one send, complete or unlock exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest pause after a transient failure.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The pauses after a transient failure: 250 ms, doubling up to [`BACKOFF_MAX`].
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), BACKOFF_MAX);
/// How many times completing or unlocking is tried when the service is failing.
const SETTLE_ATTEMPTS: u32 = 5;
/// The pauses between tries of a send the service is too busy for: 250 ms, doubling up
/// to 5 s, or the service's `Retry-After`.
const SEND_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
/// How long a send keeps trying while the service is busy or failing, before the handler
/// gets the error (and its input is unlocked for redelivery).
const SEND_WITHIN: Duration = Duration::from_secs(30);
/// The lock duration assumed when the service does not say (its default LockDuration).
const DEFAULT_LOCK: Duration = Duration::from_secs(60);

/// A delivery that is not settled yet.
struct Lock {
    /// The entity path it was received from (what its SAS token is for).
    source: String,
    /// Where to complete, unlock or renew it.
    uri: String,
    /// When it was taken or last renewed, and how long it lasts from then (the entity's
    /// LockDuration, as far as known).
    lease: Lease,
    /// Set once the service said the lock is gone: it is not renewed again.
    lost: bool,
}

impl Lock {
    /// Whether the lock should be renewed now (see [`Lease::renewal_due`]).
    fn renewal_due(&self) -> bool {
        !self.lost && self.lease.renewal_due(Instant::now())
    }
}

/// What to do about a lock that runs out while the handler computes.
const LONGER_LOCK: &str = "raise the entity's LockDuration (up to 5 minutes) above the handler's longest run, or have the handler send more often (each send renews the lock)";

/// How long the lock of a message received now lasts: until its `LockedUntilUtc`, or
/// [`DEFAULT_LOCK`] when the service gives no date (at least a second, at most 5 min).
fn lock_duration(properties: &BrokerProperties) -> Duration {
    let until = properties
        .locked_until_utc
        .as_deref()
        .and_then(protocol::parse_http_date);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok();
    match (until, now) {
        (Some(until), Some(now)) => Duration::from_secs(until)
            .saturating_sub(now)
            .clamp(Duration::from_secs(1), Duration::from_secs(300)),
        _ => DEFAULT_LOCK,
    }
}

/// The state of the Service Bus backend.
pub struct ServiceBus {
    /// Where the namespace is, with its credentials.
    namespace: Namespace,
    /// Makes SAS tokens.
    signer: Signer,
    /// What `next` receives from, polled in turn.
    sources: Vec<Source>,
    /// The source `next` polls next.
    turn: usize,
    /// Unsettled deliveries.
    locks: Deliveries<Lock>,
    /// The `ReplyTo` and `MessageId` of the latest delivery, if it asked for replies: a
    /// reply to that address gets the id as its `CorrelationId` (the `run` driver handles
    /// one delivery at a time).
    replying: Option<(String, String)>,
    /// The pauses between retries of a failing receive.
    backoff: Backoff,
}

impl ServiceBus {
    /// Returns a SAS token for operations on `entity` and below it.
    fn authorization(&mut self, entity: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let resource = format!("{}/{entity}", self.namespace.base_url);
        self.signer.authorization(&resource, now)
    }

    /// Sends `message` to `entity` with `properties`; `Ok` once the service accepted it.
    /// While the service is busy or failing (429, 503, 5xx, a lost connection) the send is
    /// tried again, after the service's `Retry-After` or a capped backoff, for up to
    /// [`SEND_WITHIN`]; every try carries the same `MessageId`. Before each try, the locks
    /// held on the handler's input are renewed when due.
    fn post(
        &mut self,
        entity: &str,
        message: &MessageData,
        mut properties: BrokerProperties,
    ) -> Result<(), Error> {
        properties.message_id = Some(common::random_id());
        let what = format!("sending to `{entity}`");
        let attempt = || {
            // A send that keeps being retried must not outlast the input's lock.
            self.renew_locks();
            let authorization = self.authorization(entity);
            let request = protocol::send_request(
                &self.namespace.base_url,
                entity,
                message,
                &properties,
                &authorization,
            )
            .map_err(Failure::lasting)?
            .timeout(REQUEST_TIMEOUT);
            let response = http_client::send(&request).map_err(|e| transport_failure(&what, e))?;
            if response.is_success() {
                return Ok(());
            }
            Err(protocol::send_failure(&what, entity, &response))
        };
        http_client::retry_within(SEND_BACKOFF, SEND_WITHIN, attempt, |failure, pause| {
            log(Self::NAME, &format!("{failure}; retrying in {pause:?}"))
        })
    }

    /// Renews each lock held on an unsettled delivery whose renewal is due (Renew-Lock,
    /// `POST` on the lock URI). WASI 0.2 gives the backend no thread or timer of its own,
    /// so this runs when the handler calls the backend (a send or reply) and before a
    /// receive. A lock the service says is gone is logged and marked lost; completing
    /// that delivery then reports it. Other failures are logged and tried again later.
    fn renew_locks(&mut self) {
        let due: Vec<(DeliveryId, String, String)> = self
            .locks
            .unsettled_mut()
            .filter(|(_, lock)| lock.renewal_due())
            .map(|(id, lock)| (id, lock.source.clone(), lock.uri.clone()))
            .collect();
        for (id, source, uri) in due {
            let what = format!("renewing the lock on a message from `{source}`");
            let authorization = self.authorization(&source);
            let request = protocol::renew_request(&uri, &authorization).timeout(REQUEST_TIMEOUT);
            let (renewed, lost) = match http_client::send(&request) {
                Ok(response) if response.is_success() => (true, false),
                Ok(response) if protocol::is_lock_lost(&response) => {
                    log(
                        Self::NAME,
                        &protocol::lock_failure(&what, &response).to_string(),
                    );
                    (false, true)
                }
                Ok(response) => {
                    let text = http_client::status_text(&what, &response);
                    log(
                        Self::NAME,
                        &format!("{text}; trying again on the next call"),
                    );
                    (false, false)
                }
                Err(e) => {
                    log(
                        Self::NAME,
                        &format!("{what}: {e}; trying again on the next call"),
                    );
                    (false, false)
                }
            };
            if let Some((_, lock)) = self.locks.unsettled_mut().find(|(open, _)| *open == id) {
                if renewed {
                    lock.lease.renewed(Instant::now());
                }
                lock.lost = lost;
            }
        }
    }

    /// Polls `source` once, waiting up to `wait_secs`: a locked message, or `None` when
    /// none came.
    fn receive(
        &mut self,
        source: &Source,
        wait_secs: u32,
    ) -> Result<Option<protocol::Locked>, Failure> {
        let authorization = self.authorization(&source.path);
        let request =
            protocol::receive_request(&self.namespace.base_url, source, wait_secs, &authorization)
                .timeout(Duration::from_secs(wait_secs.into()) + EXCHANGE_MARGIN);
        let what = format!("receiving from `{}`", source.path);
        let response = http_client::send(&request).map_err(|e| transport_failure(&what, e))?;
        if !response.is_success() {
            return Err(protocol::failure(&what, &source.path, &response));
        }
        protocol::parse_received(&self.namespace.base_url, source, &response)
            .map_err(Failure::lasting)
    }

    /// Completes or unlocks delivery `id`, retrying a few times while the service fails.
    /// A lock lost before the message is completed is an error that says so (the service
    /// delivers the message again); a lost lock on unlocking only gets a log line.
    fn settle(&mut self, id: DeliveryId, settle: Settle) -> Result<(), Error> {
        let lock = self.locks.settle(id)?;
        if settle == Settle::Complete {
            let note =
                lock.lease
                    .overrun_note(Instant::now(), &lock.source, "the lock", LONGER_LOCK);
            if let Some(note) = note {
                log(Self::NAME, &note);
            }
        }
        let what = match settle {
            Settle::Complete => format!("completing a message from `{}`", lock.source),
            Settle::Unlock => format!("unlocking a message from `{}`", lock.source),
        };
        let attempt = || {
            let authorization = self.authorization(&lock.source);
            let request = protocol::settle_request(&lock.uri, settle, &authorization)
                .timeout(REQUEST_TIMEOUT);
            match http_client::send(&request) {
                Ok(response) if response.is_success() => Ok(()),
                Ok(response) if settle == Settle::Unlock && protocol::is_lock_lost(&response) => {
                    // Unlocked already: the service delivers the message again either way.
                    log(
                        Self::NAME,
                        &protocol::lock_failure(&what, &response).to_string(),
                    );
                    Ok(())
                }
                Ok(response) => Err(protocol::lock_failure(&what, &response)),
                Err(e) => Err(transport_failure(&what, e)),
            }
        };
        BACKOFF
            .tries(SETTLE_ATTEMPTS)
            .retry(
                attempt,
                |failure| failure.transient,
                |failure, pause| log(Self::NAME, &format!("{failure}; retrying in {pause:?}")),
            )
            .map_err(|failure| failure.error)
    }
}

/// Classifies a failed exchange for `what`: a lost connection or a timeout is transient;
/// a request that cannot be made (or is denied by the host) is not.
fn transport_failure(what: &str, error: Error) -> Failure {
    match error {
        Error::Connection(text) => {
            Failure::of_exchange(Error::connection(format!("{what}: {text}")))
        }
        Error::Timeout => Failure::of_exchange(Error::connection(format!("{what}: timed out"))),
        Error::Other(_) | Error::PermissionDenied(_) => Failure::lasting(error),
    }
}

impl Backend for ServiceBus {
    const NAME: &'static str = "servicebus";

    fn open(settings: Settings) -> Result<Self, Error> {
        if !config::is_servicebus(&settings.broker) {
            return Err(settings.wrong_backend(Self::NAME));
        }
        let namespace = Namespace::parse(&settings.broker, |name| std::env::var(name).ok())?;
        let entries = if settings.subscribe.is_empty() {
            namespace.entity_path.iter().cloned().collect()
        } else {
            settings.subscribe
        };
        let sources = entries
            .iter()
            .map(|entry| Source::parse(entry))
            .collect::<Result<Vec<_>, _>>()?;
        if settings.queue_group.is_some() {
            log(
                Self::NAME,
                "the queue group has no effect: consumers of one queue or subscription always compete for its messages",
            );
        }
        let signer = Signer::new(namespace.key_name.clone(), namespace.key.clone());
        Ok(Self {
            namespace,
            signer,
            sources,
            turn: 0,
            locks: Deliveries::new(),
            replying: None,
            backoff: BACKOFF,
        })
    }

    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        let properties = BrokerProperties {
            reply_to: message.reply_to.clone(),
            ..BrokerProperties::default()
        };
        self.post(topic, message, properties)
    }

    fn request(
        &mut self,
        _topic: &str,
        _message: &MessageData,
        _options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        self.renew_locks();
        Err(Error::other(
            "request-reply is not supported by the Service Bus backend: its REST protocol cannot receive from sessions or temporary reply queues; send the request to a queue and consume the replies from another one instead",
        ))
    }

    fn reply(&mut self, reply_to: &str, reply: &MessageData) -> Result<(), Error> {
        let properties = BrokerProperties {
            correlation_id: self
                .replying
                .as_ref()
                .filter(|(to, _)| to == reply_to)
                .map(|(_, id)| id.clone()),
            ..BrokerProperties::default()
        };
        self.post(reply_to, reply, properties)
    }

    fn next(&mut self) -> Result<Event, Error> {
        if self.sources.is_empty() {
            return Err(Error::other(
                "nothing to receive from: pass --subscribe QUEUE (or TOPIC/subscriptions/SUBSCRIPTION), or name the entity in the broker setting (EntityPath=... or servicebus://HOST/ENTITY)",
            ));
        }
        let wait = if self.sources.len() == 1 {
            LONG_POLL_SECS
        } else {
            SHORT_POLL_SECS
        };
        self.renew_locks();
        loop {
            let source = self.sources[self.turn].clone();
            self.turn = (self.turn + 1) % self.sources.len();
            match self.receive(&source, wait) {
                Ok(Some(locked)) => {
                    self.backoff.reset();
                    for name in &locked.unusual {
                        log(
                            Self::NAME,
                            &format!("a message from `{}` has custom property `{name}` with a value that is neither quoted nor a number or boolean; kept as sent", source.path),
                        );
                    }
                    self.replying = locked
                        .message
                        .reply_to
                        .clone()
                        .zip(locked.properties.message_id.clone());
                    let lock = Lock {
                        source: source.path,
                        uri: locked.lock_uri,
                        lease: Lease::new(Instant::now(), lock_duration(&locked.properties)),
                        lost: false,
                    };
                    return Ok(Event::Delivery(self.locks.deliver(lock), locked.message));
                }
                Ok(None) => self.backoff.reset(),
                Err(failure) if !failure.transient => return Err(failure.error),
                Err(failure) => {
                    let Some(pause) = self.backoff.failed() else {
                        return Err(failure.error);
                    };
                    // The service's Retry-After, within the backoff's longest pause.
                    let pause = failure
                        .retry_after
                        .map_or(pause, |after| after.min(BACKOFF_MAX));
                    log(Self::NAME, &format!("{failure}; retrying in {pause:?}"));
                    std::thread::sleep(pause);
                }
            }
        }
    }

    fn ack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.settle(id, Settle::Complete)
    }

    fn nack(&mut self, id: DeliveryId) -> Result<(), Error> {
        self.settle(id, Settle::Unlock)
    }

    fn flush(&mut self) -> Result<(), Error> {
        // Every send waited for the service's 201 before it returned.
        Ok(())
    }
}
