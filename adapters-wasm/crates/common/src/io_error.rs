//! I/O errors as text for error messages, and as the connection errors of a TCP backend
//! (every backend that speaks to its broker over `std::net`).

use std::io::{Error, ErrorKind};

/// The text of `e` without the ` (os error N)` that std appends to an OS error: on
/// wasm32-wasip2 `N` is a WASI errno, which misleads anyone who reads it as the host's
/// (WASI's `ECONNREFUSED` is 14, Linux's 111). Starts lower-case, like the messages it
/// goes into: `connection refused`.
pub fn text(e: &Error) -> String {
    let full = e.to_string();
    let text = match e.raw_os_error() {
        Some(code) => full
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&full),
        None => &full,
    };
    let mut text = text.to_string();
    if let Some(first) = text.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    text
}

/// A connection error: `doing` failed with `e`.
pub fn failed(doing: &str, e: &Error) -> crate::Error {
    crate::Error::connection(format!("{doing} failed: {}", text(e)))
}

/// Explains a failed `connect` to `url`, with the `wasmtime` flag that is usually missing.
pub fn connect_error(url: &str, e: &Error) -> crate::Error {
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => {
            "; run wasmtime with `-S inherit-network` so the component may open sockets"
        }
        _ if e.to_string().contains("Non-recoverable") => {
            "; run wasmtime with `-S allow-ip-name-lookup` to resolve host names"
        }
        _ => "",
    };
    crate::Error::connection(format!("cannot connect to {url}: {}{hint}", text(e)))
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::{connect_error, failed, text};

    #[test]
    fn os_errors_read_without_their_wasi_errno() {
        // The unit tests run on wasm32-wasip2, where 14 is WASI's `ECONNREFUSED`.
        let refused = Error::from_raw_os_error(14);
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        assert_eq!(text(&refused), "connection refused");
    }

    #[test]
    fn other_errors_keep_their_text() {
        let lookup = Error::other("failed to lookup address information: Non-recoverable error");
        assert_eq!(
            text(&lookup),
            "failed to lookup address information: Non-recoverable error"
        );
        assert_eq!(text(&Error::from(ErrorKind::TimedOut)), "timed out");
    }

    #[test]
    fn connection_errors_name_what_failed_and_the_missing_flag() {
        let e = failed("reading from the server", &Error::from(ErrorKind::TimedOut));
        assert_eq!(
            e.to_string(),
            "connection: reading from the server failed: timed out"
        );
        let denied = connect_error("nats://h:1", &Error::from(ErrorKind::PermissionDenied));
        assert!(
            denied.to_string().contains("`-S inherit-network`"),
            "{denied}"
        );
        let lookup = Error::other("failed to lookup address information: Non-recoverable error");
        let lookup = connect_error("redis://h:1", &lookup);
        assert!(lookup
            .to_string()
            .starts_with("connection: cannot connect to redis://h:1: "));
        assert!(
            lookup.to_string().contains("`-S allow-ip-name-lookup`"),
            "{lookup}"
        );
    }
}
