//! Blocking HTTP requests over outgoing `wasi:http`, for msgplug's http-based
//! backends (http/CloudEvents, SQS, Service Bus).
//!
//! A composed component that uses it imports `wasi:http/outgoing-handler` and no
//! `wasi:sockets`: the host makes the connection (and does TLS for `https`), so it
//! runs on `wasmtime run -S http` or under `wasmtime serve`.
//!
//! Only [`send`] touches WASI; [`parse_url`] and [`status_error`] are plain Rust.

use std::fmt;
use std::time::Duration;

use common::{Backoff, Error};

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
}

impl Method {
    /// The method's name as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// A request to send with [`send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order; `host` is set from the URL by the host.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
    /// How long the whole exchange may take; `None` uses the host's defaults.
    pub timeout: Option<Duration>,
}

impl Request {
    /// Makes a request with no headers, no body and no timeout.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Bounds the whole exchange; running out is [`Error::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A response, read completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case, as wasmtime gives them) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The parts of an `http://` or `https://` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    /// `http` or `https`, lower case.
    pub scheme: &'a str,
    /// `host[:port]` (user info is not allowed).
    pub authority: &'a str,
    /// The path, starting with `/` (`/` when the URL has none).
    pub path: &'a str,
    /// The query without `?` (empty when there is none).
    pub query: &'a str,
}

impl Url<'_> {
    /// The path and, if any, `?query`.
    pub fn path_with_query(&self) -> String {
        if self.query.is_empty() {
            self.path.to_string()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// Splits an absolute `http://` or `https://` URL; anything else is [`Error::Other`].
pub fn parse_url(url: &str) -> Result<Url<'_>, Error> {
    let bad = |why: &str| Error::other(format!("invalid URL `{url}`: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme {
        s if s.eq_ignore_ascii_case("http") => "http",
        s if s.eq_ignore_ascii_case("https") => "https",
        _ => return Err(bad("only http:// and https:// are supported")),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad("user info is not supported in the URL"));
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Ok(Url {
        scheme,
        authority,
        path: if path.is_empty() { "/" } else { path },
        query,
    })
}

/// Maps a non-2xx `response` to the WIT error variant: 401/403 are
/// [`Error::PermissionDenied`], 408/504 [`Error::Timeout`], anything else
/// [`Error::Other`] with the status and the start of the body. `what` names the
/// operation (`sending to `orders``).
pub fn status_error(what: &str, response: &Response) -> Error {
    let text = status_text(what, response);
    match response.status {
        401 | 403 => Error::PermissionDenied(text),
        408 | 504 => Error::Timeout,
        _ => Error::Other(text),
    }
}

/// `WHAT: HTTP STATUS: BODY` with the start of the body (without it when it is empty).
pub fn status_text(what: &str, response: &Response) -> String {
    let excerpt = body_excerpt(&response.body);
    if excerpt.is_empty() {
        format!("{what}: HTTP {}", response.status)
    } else {
        format!("{what}: HTTP {}: {excerpt}", response.status)
    }
}

/// The first 200 bytes of `body` as one line of text.
fn body_excerpt(body: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(LIMIT)]);
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > LIMIT {
        line.push('…');
    }
    line
}

/// The headers `request` goes out with: names and values as given (the host decides the
/// case of the names on the wire: wasmtime sends them in lower case), plus a
/// `content-length` when the request sets none. Without it the host sends a body
/// chunked, which some servers read as empty, and a `POST`, `PUT` or `DELETE` with no
/// body goes out without any length, which some services answer with `411 Length
/// Required`; so those get `content-length: 0`.
pub fn wire_headers(request: &Request) -> Vec<(String, Vec<u8>)> {
    let mut headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let needs_length = !request.body.is_empty() || request.method != Method::Get;
    if needs_length
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        headers.push((
            "content-length".into(),
            request.body.len().to_string().into_bytes(),
        ));
    }
    headers
}

/// How long the server asks the client to wait before trying again: a `Retry-After` of
/// whole seconds (an HTTP date is not understood: `None`, as for no header).
pub fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response.header("Retry-After")?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// A failed try of an operation over HTTP: the error it ends with, whether trying again
/// may help, and how long the server asked to wait first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error, as the operation reports it when it gives up.
    pub error: Error,
    /// True when the service is busy or failing for now (throttling, 5xx, a lost
    /// connection): trying again later may help.
    pub transient: bool,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure that trying again cannot mend.
    pub fn lasting(error: Error) -> Self {
        Self {
            error,
            transient: false,
            retry_after: None,
        }
    }

    /// A failure of the exchange itself, `error` from [`send`]: a lost connection or a
    /// timeout is transient.
    pub fn of_exchange(error: Error) -> Self {
        Self {
            transient: error.is_transient(),
            error,
            retry_after: None,
        }
    }

    /// A failure that is transient when `response`'s status says the service is busy or
    /// failing (408, 429, 5xx), with its `Retry-After`; `error` is how the caller reads
    /// the response.
    pub fn of_response(error: Error, response: &Response) -> Self {
        Self {
            error,
            transient: matches!(response.status, 408 | 429 | 500..=599),
            retry_after: retry_after(response),
        }
    }
}

impl fmt::Display for Failure {
    /// Writes the error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

/// The pause before the next try after a transient failure: the server's `retry_after`
/// when it gave one, the `backoff` pause otherwise; `None` (give up now) when that pause
/// would end after the `left` time of the operation's bound.
pub fn pause_before_retry(
    backoff: Duration,
    retry_after: Option<Duration>,
    left: Duration,
) -> Option<Duration> {
    let pause = retry_after.unwrap_or(backoff);
    (pause <= left).then_some(pause)
}

/// Runs `attempt` until it succeeds, fails for good, the `backoff`'s tries are used up,
/// or the next pause would pass `within` from the start; between tries it pauses as
/// [`pause_before_retry`] says, after calling `on_retry` with the failure and the pause
/// (to log them). Returns the last error.
pub fn retry_within<T>(
    mut backoff: Backoff,
    within: Duration,
    mut attempt: impl FnMut() -> Result<T, Failure>,
    mut on_retry: impl FnMut(&Failure, Duration),
) -> Result<T, Error> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let failure = match attempt() {
            Ok(value) => return Ok(value),
            Err(failure) if failure.transient => failure,
            Err(failure) => return Err(failure.error),
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let pause = backoff
            .failed()
            .and_then(|pause| pause_before_retry(pause, failure.retry_after, left));
        let Some(pause) = pause else {
            return Err(failure.error);
        };
        on_retry(&failure, pause);
        std::thread::sleep(pause);
    }
}

/// Sends `request` over outgoing `wasi:http` and reads the whole response.
///
/// A non-2xx status is not an error (see [`status_error`]). A failure to connect is
/// [`Error::Connection`], running out of [`Request::timeout`] is [`Error::Timeout`]
/// and a malformed request is [`Error::Other`].
#[cfg(not(test))]
pub fn send(request: &Request) -> Result<Response, Error> {
    wasi::send(request)
}

/// The part that talks to the host.
#[cfg(not(test))]
mod wasi {
    use std::time::Instant;

    use super::*;
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, IncomingBody, Method as WasiMethod, OutgoingBody, OutgoingRequest,
        RequestOptions, Scheme,
    };
    use wasip2::io::streams::StreamError;

    /// How much is written to or read from a stream at a time.
    const CHUNK: usize = 64 * 1024;

    pub(super) fn send(request: &Request) -> Result<Response, Error> {
        let deadline = request.timeout.map(|t| Instant::now() + t);
        let url = parse_url(&request.url)?;
        let headers = wire_headers(request);
        let fields = Fields::from_list(&headers)
            .map_err(|e| Error::other(format!("invalid header for {}: {e:?}", request.url)))?;
        let outgoing = OutgoingRequest::new(fields);
        let method = match request.method {
            Method::Get => WasiMethod::Get,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Delete => WasiMethod::Delete,
        };
        let scheme = if url.scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let invalid = |what: &str| Error::other(format!("invalid {what} in `{}`", request.url));
        outgoing
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        outgoing
            .set_authority(Some(url.authority))
            .map_err(|()| invalid("host"))?;
        outgoing
            .set_path_with_query(Some(&url.path_with_query()))
            .map_err(|()| invalid("path"))?;
        let body = outgoing.body().expect("a new request's body is taken once");

        let options = match remaining(deadline)? {
            Some(left) => {
                let options = RequestOptions::new();
                let nanos = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
                // Hosts may not support every timeout; the deadline below still holds.
                let _ = options.set_connect_timeout(Some(nanos));
                let _ = options.set_first_byte_timeout(Some(nanos));
                let _ = options.set_between_bytes_timeout(Some(nanos));
                Some(options)
            }
            None => None,
        };
        let future =
            outgoing_handler::handle(outgoing, options).map_err(|e| error_from(e, &request.url))?;

        let pollable = future.subscribe();
        // A refused connection shows up first as a closed body stream: then the response
        // future says why (or holds a response the server sent before reading the body).
        let write_error = write_body(body, &request.body, &request.url).err();
        let response = loop {
            if let Some(result) = future.get() {
                match result.expect("a response is taken once") {
                    Ok(response) => break response,
                    Err(code) => return Err(error_from(code, &request.url)),
                }
            }
            if let Some(error) = &write_error {
                if remaining(deadline).is_err() {
                    return Err(error.clone());
                }
            }
            match remaining(deadline)? {
                Some(left) => {
                    let timer = wasip2::clocks::monotonic_clock::subscribe_duration(
                        u64::try_from(left.as_nanos()).unwrap_or(u64::MAX),
                    );
                    wasip2::io::poll::poll(&[&pollable, &timer]);
                }
                None => pollable.block(),
            }
        };
        drop(pollable);

        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let body = response.consume().expect("a response body is taken once");
        let body = read_body(body, deadline, &request.url)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Time left until `deadline`, or [`Error::Timeout`] when it has passed.
    fn remaining(deadline: Option<Instant>) -> Result<Option<Duration>, Error> {
        match deadline {
            None => Ok(None),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(Error::Timeout),
            },
        }
    }

    fn write_body(body: OutgoingBody, data: &[u8], url: &str) -> Result<(), Error> {
        {
            let stream = body.write().expect("a body's stream is taken once");
            for chunk in data.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| stream_error(e, url))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| error_from(e, url))
    }

    fn read_body(
        body: IncomingBody,
        deadline: Option<Instant>,
        url: &str,
    ) -> Result<Vec<u8>, Error> {
        let mut data = Vec::new();
        {
            let stream = body.stream().expect("a body's stream is taken once");
            loop {
                remaining(deadline)?;
                match stream.blocking_read(CHUNK as u64) {
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(stream_error(e, url)),
                }
            }
        }
        drop(body);
        Ok(data)
    }

    /// The name of a TLS error code, without the `ErrorCode::` prefix.
    fn tls_error_name(error: &ErrorCode) -> String {
        let text = format!("{error:?}");
        text.trim_start_matches("ErrorCode::").to_string()
    }

    fn stream_error(error: StreamError, url: &str) -> Error {
        match error {
            StreamError::LastOperationFailed(e) => {
                // The host's text may carry a backtrace after the first line.
                let text = e.to_debug_string();
                let first_line = text.lines().next().unwrap_or_default();
                Error::connection(format!("{url}: {first_line}"))
            }
            StreamError::Closed => Error::connection(format!("{url}: connection closed")),
        }
    }

    fn error_from(error: ErrorCode, url: &str) -> Error {
        match error {
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout => Error::Timeout,
            ErrorCode::HttpRequestDenied => Error::PermissionDenied(format!(
                "{url}: the host denied outgoing HTTP (run with `wasmtime run -S http`)"
            )),
            ErrorCode::DnsError(_)
            | ErrorCode::DnsTimeout
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTerminated
            | ErrorCode::ConnectionLimitReached
            // What a connection that breaks mid-request gives (the server went away).
            | ErrorCode::HttpProtocolError => Error::connection(format!("{url}: {error:?}")),
            // Not transient: a certificate the host does not trust stays untrusted.
            ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsAlertReceived(_) => Error::other(format!(
                "{url}: the TLS handshake failed ({}): wasmtime checks the server's certificate against its built-in web PKI roots (webpki-roots) only",
                tls_error_name(&error)
            )),
            other => Error::other(format!("{url}: {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/support/broker_urls.rs");

    /// The parser the `http` backend checks its broker URL with agrees with `msgplug
    /// compose` on the cases of `tests/broker-urls.txt`.
    #[test]
    fn agrees_with_compose_on_the_shared_broker_urls() {
        assert_agrees_with_broker_url_cases("http", &[], |url, _env| parse_url(url).map(drop));
    }

    #[test]
    fn splits_urls() {
        let url = parse_url("https://sqs.us-east-1.amazonaws.com/123/q?x=1#frag").unwrap();
        assert_eq!(
            url,
            Url {
                scheme: "https",
                authority: "sqs.us-east-1.amazonaws.com",
                path: "/123/q",
                query: "x=1"
            }
        );
        assert_eq!(url.path_with_query(), "/123/q?x=1");
        let url = parse_url("HTTP://127.0.0.1:8080").unwrap();
        assert_eq!(
            (url.scheme, url.authority, url.path),
            ("http", "127.0.0.1:8080", "/")
        );
        let url = parse_url("http://h?q").unwrap();
        assert_eq!(
            (url.path, url.query, url.path_with_query()),
            ("/", "q", "/?q".into())
        );
        for bad in ["ftp://h/", "h/x", "http:///x", "http://u:p@h/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn maps_statuses_onto_the_wit_error() {
        assert_eq!(
            status_error("sending", &response(403, "no\n  way")),
            Error::PermissionDenied("sending: HTTP 403: no way".into())
        );
        assert_eq!(
            status_error("x", &response(401, "")),
            Error::PermissionDenied("x: HTTP 401".into())
        );
        assert_eq!(status_error("x", &response(504, "slow")), Error::Timeout);
        assert_eq!(status_error("x", &response(408, "")), Error::Timeout);
        let long = "a".repeat(300);
        match status_error("x", &response(500, &long)) {
            Error::Other(text) => {
                assert!(text.starts_with("x: HTTP 500: aaaa"), "{text}");
                assert!(text.ends_with('…') && text.len() < 220, "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_without_a_body_but_get_carry_a_zero_length() {
        let text = |r: &Request| -> Vec<(String, String)> {
            wire_headers(r)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
                .collect()
        };
        for method in [Method::Post, Method::Put, Method::Delete] {
            let request = Request::new(method, "http://h/").header("Authorization", "x");
            assert_eq!(
                text(&request),
                [
                    ("Authorization".to_string(), "x".to_string()),
                    ("content-length".to_string(), "0".to_string())
                ],
                "{method:?}"
            );
        }
        assert!(text(&Request::new(Method::Get, "http://h/")).is_empty());
        let request = Request::new(Method::Post, "http://h/")
            .header("OrderId", "déjà")
            .body("abc");
        assert_eq!(
            text(&request),
            [
                ("OrderId".to_string(), "déjà".to_string()),
                ("content-length".to_string(), "3".to_string())
            ],
            "values go out as UTF-8 bytes, names as given"
        );
    }

    #[test]
    fn retries_honour_retry_after_within_the_bound() {
        let ms = Duration::from_millis;
        assert_eq!(pause_before_retry(ms(250), None, ms(1000)), Some(ms(250)));
        assert_eq!(
            pause_before_retry(ms(250), Some(ms(800)), ms(1000)),
            Some(ms(800))
        );
        assert_eq!(pause_before_retry(ms(250), Some(ms(2000)), ms(1000)), None);
        assert_eq!(pause_before_retry(ms(2000), None, ms(1000)), None);

        let mut busy = response(503, "busy");
        busy.headers.push(("retry-after".into(), " 2 ".into()));
        assert_eq!(retry_after(&busy), Some(Duration::from_secs(2)));
        let failure = Failure::of_response(status_error("x", &busy), &busy);
        assert!(failure.transient);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(2)));
        let bad = response(400, "");
        assert!(!Failure::of_response(status_error("x", &bad), &bad).transient);
        assert!(Failure::of_response(Error::other("x"), &response(429, "")).transient);
        assert!(Failure::of_exchange(Error::connection("refused")).transient);
        assert!(!Failure::of_exchange(Error::other("bad url")).transient);

        let pause = Duration::from_nanos(1);
        let mut tries = 0;
        let mut logged = Vec::new();
        let outcome = retry_within(
            Backoff::new(pause, pause),
            Duration::from_secs(5),
            || {
                tries += 1;
                match tries {
                    1 | 2 => Err(Failure::of_exchange(Error::connection(format!(
                        "try {tries}"
                    )))),
                    _ => Ok(tries),
                }
            },
            |failure, _| logged.push(failure.to_string()),
        );
        assert_eq!(outcome, Ok(3));
        assert_eq!(logged, ["connection: try 1", "connection: try 2"]);
        let mut tries = 0;
        let too_long = retry_within(
            Backoff::new(pause, pause),
            Duration::from_millis(10),
            || -> Result<(), Failure> {
                tries += 1;
                Err(Failure {
                    error: Error::connection("busy"),
                    transient: true,
                    retry_after: Some(Duration::from_secs(60)),
                })
            },
            |_, _| panic!("a Retry-After beyond the bound is not waited for"),
        );
        assert_eq!((too_long, tries), (Err(Error::connection("busy")), 1));
        let lasting = retry_within(
            Backoff::new(pause, pause),
            Duration::from_secs(5),
            || -> Result<(), Failure> { Err(Failure::lasting(Error::other("no"))) },
            |_, _| panic!("a lasting failure is not retried"),
        );
        assert_eq!(lasting, Err(Error::other("no")));
    }

    #[test]
    fn finds_headers_case_insensitively() {
        let r = response(200, "");
        assert!(r.is_success());
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert_eq!(r.header("missing"), None);
        assert!(!response(302, "").is_success());
        assert_eq!(Method::Delete.as_str(), "DELETE");
    }
}
