//! Capped exponential backoff between retries of a failing operation.

use std::time::Duration;

use crate::{log, Error};

/// Pauses between tries that double from a first pause up to a longest one, with an
/// optional limit on the number of tries.
///
/// Sans-IO except for [`Backoff::retry`], which sleeps: a backend that loops itself
/// (and keeps the backoff across calls) asks [`Backoff::failed`] for each pause and
/// [`Backoff::reset`]s after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The pause after the first failure.
    first: Duration,
    /// The longest pause.
    max: Duration,
    /// How many tries in all before giving up; `None` tries forever.
    tries: Option<u32>,
    /// The pause after the next failure.
    pause: Duration,
    /// Failures since the start or the last reset.
    failures: u32,
}

impl Backoff {
    /// Pauses `first`, then twice as long after each further failure, up to `max`;
    /// tries forever unless [`Backoff::tries`] limits it.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            tries: None,
            pause: first,
            failures: 0,
        }
    }

    /// Gives up after `tries` tries in all (`tries - 1` pauses).
    pub const fn tries(mut self, tries: u32) -> Self {
        self.tries = Some(tries);
        self
    }

    /// Records a failed try: returns the pause before the next one, or `None` when the
    /// tries are used up.
    pub fn failed(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.tries.is_some_and(|n| self.failures >= n) {
            return None;
        }
        let pause = self.pause;
        self.pause = pause.saturating_mul(2).min(self.max);
        Some(pause)
    }

    /// Starts over after a success: the next failure pauses the first pause again.
    pub fn reset(&mut self) {
        self.pause = self.first;
        self.failures = 0;
    }

    /// Runs `attempt` until it succeeds, fails with an error `retry_on` does not accept,
    /// or the tries are used up, and returns its last result. Before each retry it calls
    /// `on_retry` with the error and the pause (to log them), then sleeps for the pause.
    pub fn retry<T, E>(
        mut self,
        mut attempt: impl FnMut() -> Result<T, E>,
        retry_on: impl Fn(&E) -> bool,
        mut on_retry: impl FnMut(&E, Duration),
    ) -> Result<T, E> {
        loop {
            match attempt() {
                Err(e) if retry_on(&e) => {
                    let Some(pause) = self.failed() else {
                        return Err(e);
                    };
                    on_retry(&e, pause);
                    std::thread::sleep(pause);
                }
                outcome => return outcome,
            }
        }
    }
}

/// What a backend's reconnect loop says about a failed step: the connection to `url` was
/// `lost` (it was up), or a reconnect attempt failed, because of `e`.
pub fn reconnect_message(url: &str, lost: bool, e: &Error, pause: Duration) -> String {
    let why = match e {
        Error::Connection(text) => text.clone(),
        e => e.to_string(),
    };
    let ms = pause.as_millis();
    match lost {
        true => format!("lost the connection to {url}: {why}; reconnecting in {ms} ms"),
        false => format!("{why}; retrying in {ms} ms"),
    }
}

impl Backoff {
    /// One turn of a backend's reconnect loop after the transient error `e`: logs it as
    /// `backend` (see [`reconnect_message`]) and sleeps the pause; `Err(e)` once the tries
    /// are used up.
    pub fn reconnect(
        &mut self,
        backend: &str,
        url: &str,
        lost: bool,
        e: Error,
    ) -> Result<(), Error> {
        let Some(pause) = self.failed() else {
            return Err(e);
        };
        log(backend, &reconnect_message(url, lost, &e, pause));
        std::thread::sleep(pause);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_messages_and_giving_up() {
        let e = Error::connection("refused");
        assert_eq!(
            reconnect_message("nats://h:1", true, &e, Duration::from_millis(100)),
            "lost the connection to nats://h:1: refused; reconnecting in 100 ms"
        );
        assert_eq!(
            reconnect_message("nats://h:1", false, &Error::Timeout, Duration::from_secs(5)),
            "timeout; retrying in 5000 ms"
        );
        let mut b = Backoff::new(Duration::from_nanos(1), Duration::from_nanos(1)).tries(2);
        assert_eq!(b.reconnect("x", "u", true, e.clone()), Ok(()));
        assert_eq!(b.reconnect("x", "u", true, e.clone()), Err(e));
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pauses_double_up_to_the_cap() {
        // The NATS reconnect schedule.
        let mut b = Backoff::new(100 * MS, 5_000 * MS);
        let pauses: Vec<_> = (0..8).map(|_| b.failed().unwrap().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.failed(), Some(100 * MS));
    }

    #[test]
    fn a_limit_counts_every_try() {
        let mut b = Backoff::new(MS, 30 * MS).tries(3);
        assert_eq!(b.failed(), Some(MS));
        assert_eq!(b.failed(), Some(2 * MS));
        assert_eq!(b.failed(), None, "the third failure was the last try");
        b.reset();
        assert_eq!(b.failed(), Some(MS));
    }

    #[test]
    fn retry_retries_transient_errors_until_the_tries_are_used_up() {
        let pause = Duration::from_nanos(1);
        let b = Backoff::new(pause, 2 * pause).tries(4);
        let (mut tries, mut logged) = (0, Vec::new());
        let outcome: Result<(), Error> = b.retry(
            || {
                tries += 1;
                Err(Error::connection(format!("refused {tries}")))
            },
            Error::is_transient,
            |e, pause| logged.push((e.to_string(), pause.as_nanos())),
        );
        assert_eq!(outcome, Err(Error::connection("refused 4")));
        assert_eq!(
            logged,
            [
                ("connection: refused 1".to_string(), 1),
                ("connection: refused 2".to_string(), 2),
                ("connection: refused 3".to_string(), 2),
            ]
        );
    }

    #[test]
    fn retry_stops_at_success_or_a_lasting_error() {
        let b = Backoff::new(Duration::from_nanos(1), Duration::from_nanos(1));
        let mut tries = 0;
        let ok = b.retry(
            || {
                tries += 1;
                match tries {
                    1 => Err(Error::Timeout),
                    _ => Ok(tries),
                }
            },
            Error::is_transient,
            |_, _| {},
        );
        assert_eq!(ok, Ok(2));
        let mut tries = 0;
        let lasting: Result<(), Error> = b.retry(
            || {
                tries += 1;
                Err(Error::other("no such queue"))
            },
            Error::is_transient,
            |_, _| panic!("a lasting error is not retried"),
        );
        assert_eq!((lasting, tries), (Err(Error::other("no such queue")), 1));
    }
}
