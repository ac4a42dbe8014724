//! The HTTP responses the driver gives, as plain data (the glue writes them).

use cloudevents::is_header_value;

/// Why a request was refused before it reached the app: a 4xx status and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The 4xx status code.
    pub status: u16,
    /// One line that says what was wrong and what to send instead.
    pub reason: String,
}

impl Rejection {
    /// A malformed request: 400 Bad Request.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: 400,
            reason: reason.into(),
        }
    }

    /// A body over the configured limit: 413 Content Too Large.
    pub fn too_large(reason: impl Into<String>) -> Self {
        Self {
            status: 413,
            reason: reason.into(),
        }
    }

    /// A content type the driver cannot read: 415 Unsupported Media Type.
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Self {
            status: 415,
            reason: reason.into(),
        }
    }
}

/// One HTTP response: status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values, all valid HTTP header values.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The content type of the driver's own short text bodies.
const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    /// A short `text/plain` body (a line break is added) with `status`.
    pub fn text(status: u16, text: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", TEXT.to_string())],
            body: format!("{text}\n").into_bytes(),
        }
    }

    /// 204 No Content: the handler returned `Ok` and made no reply.
    pub fn handled() -> Self {
        Self {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// 200 OK carrying the handler's reply, with the reply's content type if it has one.
    ///
    /// A content type that is not a valid HTTP header value gives a 500 instead, since
    /// the reply cannot be sent as the app made it.
    pub fn reply(content_type: Option<String>, data: Vec<u8>) -> Self {
        match content_type {
            Some(ct) if !is_header_value(&ct) => Self::text(
                500,
                "the handler's reply has a content type that is not a valid HTTP header value",
            ),
            content_type => Self {
                status: 200,
                headers: content_type
                    .map(|ct| vec![("content-type", ct)])
                    .unwrap_or_default(),
                body: data,
            },
        }
    }

    /// 405 Method Not Allowed for `method`, with `Allow: POST`.
    pub fn method_not_allowed(method: &str) -> Self {
        let mut response = Self::text(
            405,
            &format!("method {method} is not allowed: POST the message (plain, or a CloudEvent)"),
        );
        response.headers.push(("allow", "POST".to_string()));
        response
    }

    /// The answer to `OPTIONS`: 200 with `Allow: POST`, and the CloudEvents web hook
    /// handshake (`WebHook-Allowed-Origin` echoing `WebHook-Request-Origin`) when asked.
    pub fn options(request_origin: Option<&str>) -> Self {
        let mut headers = vec![("allow", "POST".to_string())];
        if let Some(origin) = request_origin.filter(|o| is_header_value(o)) {
            headers.push(("webhook-allowed-origin", origin.to_string()));
        }
        Self {
            status: 200,
            headers,
            body: Vec::new(),
        }
    }
}

impl From<cloudevents::Error> for Rejection {
    /// A CloudEvent the codec does not read is 415, a malformed one 400.
    fn from(error: cloudevents::Error) -> Self {
        match error {
            cloudevents::Error::Unsupported(reason) => Self::unsupported(reason),
            cloudevents::Error::Malformed(reason) => Self::bad_request(reason),
        }
    }
}

impl From<Rejection> for Response {
    fn from(rejection: Rejection) -> Self {
        Self::text(rejection.status, &rejection.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies_end_in_a_line_break() {
        let r = Response::from(Rejection::bad_request("no topic"));
        assert_eq!(r.status, 400);
        assert_eq!(r.body, b"no topic\n");
        assert_eq!(r.headers, [("content-type", TEXT.to_string())]);
        assert_eq!(Response::from(Rejection::too_large("x")).status, 413);
        assert_eq!(Response::from(Rejection::unsupported("x")).status, 415);
        let unsupported = cloudevents::Error::Unsupported("batch".into());
        assert_eq!(
            Rejection::from(unsupported),
            Rejection::unsupported("batch")
        );
        let malformed = cloudevents::Error::Malformed("no id".into());
        assert_eq!(Rejection::from(malformed), Rejection::bad_request("no id"));
    }

    #[test]
    fn replies_carry_their_content_type() {
        let r = Response::reply(Some("text/plain".into()), b"hi".to_vec());
        assert_eq!(r.status, 200);
        assert_eq!(r.headers, [("content-type", "text/plain".to_string())]);
        assert_eq!(r.body, b"hi");
        let r = Response::reply(None, Vec::new());
        assert_eq!((r.status, r.headers.len(), r.body.len()), (200, 0, 0));
        let r = Response::reply(Some("text/plain\r\nx: y".into()), b"hi".to_vec());
        assert_eq!(r.status, 500);
        assert_eq!(Response::handled().status, 204);
    }

    #[test]
    fn wrong_methods_are_told_to_post() {
        let r = Response::method_not_allowed("GET");
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("allow", "POST".to_string())));
        assert!(String::from_utf8(r.body)
            .unwrap()
            .starts_with("method GET is not allowed"));
    }

    #[test]
    fn options_answers_the_web_hook_handshake() {
        let r = Response::options(Some("eventemitter.example.com"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers,
            [
                ("allow", "POST".to_string()),
                (
                    "webhook-allowed-origin",
                    "eventemitter.example.com".to_string()
                )
            ]
        );
        assert_eq!(Response::options(None).headers.len(), 1);
        assert_eq!(Response::options(Some("a\u{7f}")).headers.len(), 1);
    }
}
