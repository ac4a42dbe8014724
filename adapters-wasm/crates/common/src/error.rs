//! The error every backend operation returns.

use std::fmt;

/// A failure, shaped like the `error` variant of `wasi:messaging/types`.
///
/// Plain Rust (no bindings), so backend code and its tests need no WASI; the glue
/// converts it into the WIT variant.
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
}
