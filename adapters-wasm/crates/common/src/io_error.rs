//! I/O errors as text for error messages (the socket-based backends).

use std::io::Error;

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

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::text;

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
}
