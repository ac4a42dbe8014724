//! Confirming sends in windows when the run wrapper flushes at the end.
//!
//! Outside a handler a send is normally confirmed by the broker before it returns: nothing
//! else would tell the backend when the app is done. When compose plugs the run wrapper
//! (`driver-wrap`, settings `final_flush`), the wrapper calls `outbox.flush` after the app's
//! run, so a backend may let sends return once written and confirm them in windows: at
//! most [`ConfirmWindow::messages`] sends, or [`ConfirmWindow::time`] after the first of
//! them (checked at each send), whichever comes first. A failure a window's confirmation
//! finds is returned by the send that closed the window, and the final flush fails too, so
//! the process exits non-zero: a failure is never dropped.

use std::time::{Duration, Instant};

use crate::{Error, Settings};

/// The default of the `confirm_window` option: sends per window.
pub const DEFAULT_WINDOW_MESSAGES: u64 = 4096;

/// The default of the `confirm_window_ms` option: how long a window stays open.
pub const DEFAULT_WINDOW_MS: u64 = 100;

/// How many sends, and for how long, may stay unconfirmed outside a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmWindow {
    /// A window is confirmed once it holds this many sends (`confirm_window`).
    pub messages: u64,
    /// A window is confirmed at the first send this long after it opened
    /// (`confirm_window_ms`).
    pub time: Duration,
}

impl ConfirmWindow {
    /// The window the settings ask for: `None` (confirm each send) unless the run wrapper
    /// flushes at the end; the options `confirm_window` and `confirm_window_ms` (positive
    /// integers) change the bounds, and `confirm_window=1` confirms each send.
    pub fn from_settings(settings: &Settings) -> Result<Option<ConfirmWindow>, Error> {
        let positive = |key: &str, default: u64| match settings.options.get(key) {
            None => Ok(default),
            Some(text) => text.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::other(format!(
                    "option `{key}` must be a positive integer, not `{text}`"
                ))
            }),
        };
        let messages = positive("confirm_window", DEFAULT_WINDOW_MESSAGES)?;
        let ms = positive("confirm_window_ms", DEFAULT_WINDOW_MS)?;
        Ok(settings.final_flush.then_some(ConfirmWindow {
            messages,
            time: Duration::from_millis(ms),
        }))
    }
}

/// The open window of unconfirmed sends, and the failures earlier windows found.
#[derive(Debug)]
pub struct Window {
    /// The bounds.
    limits: ConfirmWindow,
    /// When the first send of the open window was made (`None`: no window is open).
    opened: Option<Instant>,
    /// Sends in the open window.
    sent: u64,
    /// Windows whose confirmation failed.
    failed: u64,
    /// Why the first of them failed.
    first_failure: Option<Error>,
}

impl Window {
    /// No window open yet.
    pub fn new(limits: ConfirmWindow) -> Window {
        Window {
            limits,
            opened: None,
            sent: 0,
            failed: 0,
            first_failure: None,
        }
    }

    /// Counts a send; true when the window must be confirmed now (then pass the
    /// confirmation's result to [`Window::confirmed`]).
    pub fn send(&mut self, now: Instant) -> bool {
        let opened = *self.opened.get_or_insert(now);
        self.sent += 1;
        self.sent >= self.limits.messages || now.duration_since(opened) >= self.limits.time
    }

    /// Closes the window with the result of its confirmation, which is returned; a
    /// failure is also remembered for [`Window::finish`].
    pub fn confirmed(&mut self, result: Result<(), Error>) -> Result<(), Error> {
        self.opened = None;
        self.sent = 0;
        if let Err(e) = &result {
            self.failed += 1;
            self.first_failure.get_or_insert_with(|| e.clone());
        }
        result
    }

    /// A backend's `outbox.flush`, given the result of confirming what was sent: with
    /// windows (the run wrapper), [`Window::finish`]; without, that result as it is.
    pub fn flushed(window: Option<&mut Window>, confirmed: Result<(), Error>) -> Result<(), Error> {
        match window {
            Some(window) => window.finish(confirmed),
            None => confirmed,
        }
    }

    /// The result of the final flush, given the result of its own confirmation: it fails
    /// if that or any earlier window's confirmation failed (even one the app was told
    /// about by a send and went on), so the run wrapper exits non-zero.
    pub fn finish(&mut self, result: Result<(), Error>) -> Result<(), Error> {
        // A failure of this confirmation is recorded like any other.
        let _ = self.confirmed(result);
        let failed = std::mem::take(&mut self.failed);
        match self.first_failure.take() {
            None => Ok(()),
            Some(only) if failed == 1 => Err(only),
            Some(first) => Err(Error::other(format!(
                "{failed} confirmations of sent messages failed during the run; the first: {first}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(final_flush: bool, options: &[(&str, &str)]) -> Settings {
        Settings {
            msgplug: 1,
            final_flush,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Settings::default()
        }
    }

    #[test]
    fn windows_only_with_the_final_flush() {
        assert_eq!(
            ConfirmWindow::from_settings(&settings(false, &[])).unwrap(),
            None
        );
        assert_eq!(
            ConfirmWindow::from_settings(&settings(true, &[])).unwrap(),
            Some(ConfirmWindow {
                messages: DEFAULT_WINDOW_MESSAGES,
                time: Duration::from_millis(DEFAULT_WINDOW_MS),
            })
        );
        let custom = &[("confirm_window", "10"), ("confirm_window_ms", "5")];
        assert_eq!(
            ConfirmWindow::from_settings(&settings(true, custom)).unwrap(),
            Some(ConfirmWindow {
                messages: 10,
                time: Duration::from_millis(5),
            })
        );
        let err = ConfirmWindow::from_settings(&settings(true, &[("confirm_window", "0")]));
        assert_eq!(
            err,
            Err(Error::other(
                "option `confirm_window` must be a positive integer, not `0`"
            ))
        );
    }

    #[test]
    fn a_window_closes_at_its_size_or_its_age() {
        let start = Instant::now();
        let mut window = Window::new(ConfirmWindow {
            messages: 3,
            time: Duration::from_millis(50),
        });
        assert!(!window.send(start));
        assert!(!window.send(start));
        assert!(window.send(start), "the third send fills the window");
        window.confirmed(Ok(())).unwrap();
        assert!(!window.send(start + Duration::from_millis(10)));
        assert!(
            window.send(start + Duration::from_millis(60)),
            "50 ms after the window opened"
        );
    }

    #[test]
    fn a_failure_is_returned_and_fails_the_final_flush() {
        let limits = ConfirmWindow {
            messages: 1,
            time: Duration::from_secs(1),
        };
        let mut window = Window::new(limits);
        let denied = Error::PermissionDenied("publish to `secret`".into());
        assert_eq!(window.confirmed(Err(denied.clone())), Err(denied.clone()));
        window.confirmed(Ok(())).unwrap();
        assert_eq!(
            window.finish(Ok(())),
            Err(denied.clone()),
            "a failure a send returned fails the final flush too"
        );
        assert_eq!(window.finish(Ok(())), Ok(()), "reported once");
        window.confirmed(Err(denied.clone())).unwrap_err();
        assert_eq!(
            window.finish(Err(Error::Timeout)),
            Err(Error::other(
                "2 confirmations of sent messages failed during the run; the first: permission denied: publish to `secret`"
            ))
        );
        assert_eq!(window.finish(Err(Error::Timeout)), Err(Error::Timeout));
    }
}
