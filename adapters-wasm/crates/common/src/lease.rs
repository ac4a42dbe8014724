//! The broker's hold on one delivery (JetStream's ack wait, SQS's visibility timeout, a
//! Service Bus lock): when it was last taken or renewed, how long it lasts, and what to say
//! when a handler outlived it.
//!
//! WASI 0.2 gives a backend no thread or timer of its own, so a lease can only be renewed
//! when the handler calls into the backend (a send, a request) or before the backend hands
//! out a delivery it received earlier. A handler that computes for longer than the lease
//! without calling out loses it, and the broker delivers the message again, perhaps to
//! another instance; [`Lease::overrun`] detects that at settle time so a log line can
//! explain the duplicate.

use std::time::{Duration, Instant};

/// The option that sets the lease at receive time where the broker allows it.
pub const HANDLER_TIMEOUT_OPTION: &str = "handler_timeout_ms";

/// What to do about a lease that runs out, where [`HANDLER_TIMEOUT_OPTION`] sets it.
pub const SET_HANDLER_TIMEOUT: &str = "set --option handler_timeout_ms above the handler's longest run, or have the handler send or request more often (each call renews the lease)";

/// One delivery's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// When it was taken or last renewed.
    renewed: Instant,
    /// How long it lasts from then.
    lasts: Duration,
}

impl Lease {
    /// A lease taken at `now` that lasts `lasts`.
    pub fn new(now: Instant, lasts: Duration) -> Self {
        Self {
            renewed: now,
            lasts,
        }
    }

    /// How long the lease lasts from each renewal.
    pub fn lasts(&self) -> Duration {
        self.lasts
    }

    /// Whether renewing at `now` is worth a call to the broker: a quarter of the lease
    /// has passed. Renewing more often would cost a call per send; less often would leave
    /// a handler that calls out at long intervals without its lease.
    pub fn renewal_due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.renewed) >= self.lasts / 4
    }

    /// Records a renewal at `now`: the lease lasts as long again from then.
    pub fn renewed(&mut self, now: Instant) {
        self.renewed = now;
    }

    /// How long has passed at `now` since the last renewal, if that is longer than the
    /// lease: the broker may have delivered the message again meanwhile.
    pub fn overrun(&self, now: Instant) -> Option<Duration> {
        let held = now.saturating_duration_since(self.renewed);
        (held > self.lasts).then_some(held)
    }

    /// The log line for a delivery from `source` whose lease had run out by `now` when its
    /// handler finished (`None` while it holds): names the broker's deadline (`deadline`:
    /// `the ack wait`, `the visibility timeout`, `the lock`) and what to do about it
    /// (`remedy`, such as [`SET_HANDLER_TIMEOUT`]).
    pub fn overrun_note(
        &self,
        now: Instant,
        source: &str,
        deadline: &str,
        remedy: &str,
    ) -> Option<String> {
        let held = self.overrun(now)?;
        Some(format!(
            "the handler of a message from `{source}` ran {} s since its lease was last renewed, longer than {deadline} of {} s: the broker may have delivered it again meanwhile (to this or another instance), so it may be handled twice; {remedy}",
            Seconds(held),
            Seconds(self.lasts),
        ))
    }
}

/// A duration shown as seconds with one decimal (`4.0`), for log lines. Integer arithmetic
/// on purpose: `{:.1}` of an `f64` pulls Rust's float formatting into the adapter (about
/// 20 KB of wasm).
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0.as_millis() + 50) / 100;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

/// Reads option [`HANDLER_TIMEOUT_OPTION`] from a backend's options: `None` when it is
/// not given, the duration when it is a positive whole number of milliseconds no larger
/// than `max`, else an error saying what is allowed.
pub fn handler_timeout(
    options: &std::collections::BTreeMap<String, String>,
    max: Duration,
) -> Result<Option<Duration>, crate::Error> {
    let Some(text) = options
        .get(HANDLER_TIMEOUT_OPTION)
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    text.parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0 && u128::from(ms) <= max.as_millis())
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| {
            crate::Error::other(format!(
                "option `{HANDLER_TIMEOUT_OPTION}` must be a whole number of milliseconds from 1 to {}, not `{text}`",
                max.as_millis()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn seconds_show_one_decimal_rounded() {
        let shown = |ms| Seconds(Duration::from_millis(ms)).to_string();
        assert_eq!(shown(0), "0.0");
        assert_eq!(shown(4_000), "4.0");
        assert_eq!(shown(2_049), "2.0");
        assert_eq!(shown(2_050), "2.1");
        assert_eq!(shown(59_960), "60.0");
    }

    #[test]
    fn renewal_is_due_after_a_quarter_of_the_lease() {
        let start = Instant::now();
        let lease = Lease::new(start, 4 * SECOND);
        assert!(!lease.renewal_due(start));
        assert!(!lease.renewal_due(start + SECOND / 2));
        assert!(lease.renewal_due(start + SECOND));
    }

    #[test]
    fn a_renewal_restarts_the_lease() {
        let start = Instant::now();
        let mut lease = Lease::new(start, 2 * SECOND);
        assert_eq!(
            lease.overrun(start + 2 * SECOND),
            None,
            "held exactly as long"
        );
        assert_eq!(lease.overrun(start + 3 * SECOND), Some(3 * SECOND));
        lease.renewed(start + 2 * SECOND);
        assert_eq!(lease.overrun(start + 3 * SECOND), None);
        assert!(!lease.renewal_due(start + 2 * SECOND));
    }

    #[test]
    fn the_overrun_note_names_the_source_the_deadline_and_the_option() {
        let start = Instant::now();
        let lease = Lease::new(start, 2 * SECOND);
        let note = |at| lease.overrun_note(at, "jobs", "the ack wait", SET_HANDLER_TIMEOUT);
        assert_eq!(note(start + SECOND), None);
        let note = note(start + 4 * SECOND).unwrap();
        assert!(
            note.starts_with(
                "the handler of a message from `jobs` ran 4.0 s since its lease was last renewed, longer than the ack wait of 2.0 s"
            ),
            "{note}"
        );
        assert!(note.contains("--option handler_timeout_ms"), "{note}");
    }

    #[test]
    fn handler_timeout_is_a_bounded_positive_number_of_milliseconds() {
        let max = Duration::from_secs(60);
        let of = |value: &str| {
            let options = [(HANDLER_TIMEOUT_OPTION.to_string(), value.to_string())].into();
            handler_timeout(&options, max)
        };
        assert_eq!(handler_timeout(&Default::default(), max), Ok(None));
        assert_eq!(of(""), Ok(None));
        assert_eq!(of("1500"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(of("60000"), Ok(Some(max)));
        for bad in ["0", "-1", "1.5", "60001", "soon"] {
            assert_eq!(
                of(bad).unwrap_err().to_string(),
                format!("option `handler_timeout_ms` must be a whole number of milliseconds from 1 to 60000, not `{bad}`")
            );
        }
    }
}
