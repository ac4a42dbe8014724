//! The `error` variant of `wasi:messaging/types` as plain Rust, shared by every msgplug
//! adapter: the backends (through `common`) return it, and the drivers turn the WIT
//! variant of their own bindings into it to print it.
//!
//! It is its own crate, with no WASI and no bindings in it, because the drivers cannot
//! link `common` (which carries the bindings of world `backend`).

use std::fmt;

/// A failure, shaped like the `error` variant of `wasi:messaging/types`.
///
/// Plain Rust (no bindings), so backend code and its tests need no WASI; the glue
/// converts it into the WIT variant, and the drivers convert the WIT variant into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The operation timed out.
    Timeout,
    /// The connection to the broker (or the local input) failed.
    Connection(String),
    /// The broker refused the operation.
    PermissionDenied(String),
    /// Anything else, such as a configuration mistake.
    Other(String),
}

impl Error {
    /// Makes a [`Error::Connection`] from anything printable.
    pub fn connection(text: impl fmt::Display) -> Self {
        Self::Connection(text.to_string())
    }

    /// Makes a [`Error::Other`] from anything printable.
    pub fn other(text: impl fmt::Display) -> Self {
        Self::Other(text.to_string())
    }

    /// True for a failure that trying again later may cure: a lost connection or a
    /// timeout. A refusal ([`Error::PermissionDenied`]) or a mistake ([`Error::Other`])
    /// fails the same way every time.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::Timeout)
    }
}

impl fmt::Display for Error {
    /// Renders the error as the drivers print it: `timeout`, `connection: TEXT`,
    /// `permission denied: TEXT` or `TEXT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::Connection(text) => write!(f, "connection: {text}"),
            Self::PermissionDenied(text) => write!(f, "permission denied: {text}"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for Error {}

/// Converts between [`Error`] and the `error` variant of `wasi:messaging/types` in the
/// calling crate's own bindings, both ways (each crate generates its own bindings, so
/// each has its own type): `messaging_error::conversions!(bindings::…::types::Error);`.
/// The backends' glue returns its errors through it; the drivers render the errors
/// they are given with it (`messaging_error::Error::from(e).to_string()`).
#[macro_export]
macro_rules! conversions {
    ($wit:ty) => {
        impl ::core::convert::From<$crate::Error> for $wit {
            fn from(error: $crate::Error) -> Self {
                match error {
                    $crate::Error::Timeout => Self::Timeout,
                    $crate::Error::Connection(text) => Self::Connection(text),
                    $crate::Error::PermissionDenied(text) => Self::PermissionDenied(text),
                    $crate::Error::Other(text) => Self::Other(text),
                }
            }
        }

        impl ::core::convert::From<$wit> for $crate::Error {
            fn from(error: $wit) -> Self {
                type WitVariant = $wit;
                match error {
                    WitVariant::Timeout => Self::Timeout,
                    WitVariant::Connection(text) => Self::Connection(text),
                    WitVariant::PermissionDenied(text) => Self::PermissionDenied(text),
                    WitVariant::Other(text) => Self::Other(text),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_driver() {
        assert_eq!(Error::Timeout.to_string(), "timeout");
        assert_eq!(
            Error::connection("refused").to_string(),
            "connection: refused"
        );
        assert_eq!(
            Error::PermissionDenied("no".into()).to_string(),
            "permission denied: no"
        );
        assert_eq!(Error::other("bad").to_string(), "bad");
    }

    /// A stand-in for the `error` variant of some crate's bindings.
    #[derive(Debug, PartialEq)]
    enum Wit {
        Timeout,
        Connection(String),
        PermissionDenied(String),
        Other(String),
    }

    conversions!(Wit);

    #[test]
    fn converts_both_ways() {
        let pairs = [
            (Error::Timeout, Wit::Timeout),
            (Error::connection("c"), Wit::Connection("c".into())),
            (
                Error::PermissionDenied("p".into()),
                Wit::PermissionDenied("p".into()),
            ),
            (Error::other("o"), Wit::Other("o".into())),
        ];
        for (error, wit) in pairs {
            assert_eq!(Wit::from(error.clone()), wit);
            assert_eq!(Error::from(wit), error);
        }
    }

    #[test]
    fn only_lost_connections_and_timeouts_are_transient() {
        assert!(Error::Timeout.is_transient());
        assert!(Error::connection("reset").is_transient());
        assert!(!Error::PermissionDenied("no".into()).is_transient());
        assert!(!Error::other("bad config").is_transient());
    }
}
