//! The `wasi:http/incoming-handler` export: reads the request, runs the message
//! through the app's handler, and writes the response.

mod bindings {
    #![allow(missing_docs)]

    wit_bindgen::generate!({
        world: "msgplug:adapter/driver-http",
        path: "../../../wit",
        generate_all,
    });
}

use std::io::Write;

use bindings::msgplug::adapter::{config, outbox, pusher};
use bindings::wasi::messaging::incoming_handler;
use bindings::wasi::messaging::types::Error;
use messaging_error::Error as Rendered;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

use crate::limit::max_body_bytes;
use crate::push::{check_length, inbound, too_large};
use crate::response::{Rejection, Response};

wasip2::http::proxy::export!(Driver);

/// The driver's component type.
struct Driver;

impl wasip2::exports::http::incoming_handler::Guest for Driver {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        write(respond(&request), response_out);
    }
}

/// How many body bytes one read asks for.
const CHUNK: u64 = 64 * 1024;

/// Turns one request into its response.
fn respond(request: &IncomingRequest) -> Response {
    let headers = request.headers().entries();
    match request.method() {
        Method::Post => {}
        Method::Options => {
            let origin = headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("webhook-request-origin"))
                .and_then(|(_, value)| std::str::from_utf8(value).ok());
            return Response::options(origin);
        }
        other => return Response::method_not_allowed(&method_name(&other)),
    }
    let limit = match max_body_bytes(
        &config::get(),
        std::env::var("MSGPLUG_MAX_BODY_BYTES").ok().as_deref(),
    ) {
        Ok(limit) => limit,
        Err(text) => {
            eprintln!("msgplug: {text}");
            return Response::text(
                500,
                "the msgplug configuration is invalid; see the server log",
            );
        }
    };
    let message = check_length(&headers, limit)
        .and_then(|()| read_body(request, limit))
        .and_then(|body| inbound(request.path_with_query().as_deref(), &headers, body));
    let message = match message {
        Ok(message) => message,
        Err(rejection) => {
            eprintln!(
                "msgplug: request refused ({}): {}",
                rejection.status, rejection.reason
            );
            return rejection.into();
        }
    };
    let topic = message.topic.clone();
    let message = pusher::inject(&pusher::Inbound {
        topic: message.topic,
        data: message.data,
        content_type: message.content_type,
        metadata: message.metadata,
    });
    if let Err(e) = incoming_handler::handle(message) {
        let text = Rendered::from(e).to_string();
        eprintln!("msgplug: message on `{topic}` failed: {text}");
        return Response::text(500, &format!("the handler failed: {text}"));
    }
    if let Err(e) = outbox::flush() {
        let text = Rendered::from(e).to_string();
        eprintln!("msgplug: flushing the messages sent for `{topic}` failed: {text}");
        return Response::text(
            502,
            &format!("flushing the handler's messages failed: {text}"),
        );
    }
    let mut replies = pusher::take_replies().into_iter();
    let Some(reply) = replies.next() else {
        return Response::handled();
    };
    let dropped = replies.len();
    if dropped > 0 {
        eprintln!(
            "msgplug: the handler replied {} times to `{topic}`; the response carries the first",
            dropped + 1
        );
    }
    Response::reply(reply.content_type(), reply.data())
}

/// Reads the whole request body, refusing it once it grows over `limit` bytes.
fn read_body(request: &IncomingRequest, limit: u64) -> Result<Vec<u8>, Rejection> {
    let failed =
        |what: &str| Rejection::bad_request(format!("reading the request body failed: {what}"));
    let body = request
        .consume()
        .map_err(|()| failed("it was taken already"))?;
    let stream = body.stream().map_err(|()| failed("it was taken already"))?;
    let mut data = Vec::new();
    loop {
        match stream.blocking_read(CHUNK) {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                // The host's text may go on with a backtrace: the first line says it.
                let text = e.to_debug_string();
                return Err(failed(text.lines().next().unwrap_or_default()));
            }
        }
        if data.len() as u64 > limit {
            return Err(too_large(&format!("more than {limit} bytes"), limit));
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok(data)
}

/// Writes `response`; a failure here can only be logged (the client went away).
fn write(response: Response, response_out: ResponseOutparam) {
    let headers: Vec<(String, Vec<u8>)> = response
        .headers
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.into_bytes()))
        .collect();
    let headers = Fields::from_list(&headers).expect("Response holds only valid header values");
    let outgoing = OutgoingResponse::new(headers);
    outgoing
        .set_status_code(response.status)
        .expect("Response holds only valid status codes");
    let body = outgoing
        .body()
        .expect("the body of a new response is not taken yet");
    ResponseOutparam::set(response_out, Ok(outgoing));
    // A body-less answer (204) is not written to at all: the host has closed its stream.
    let written = if response.body.is_empty() {
        Ok(())
    } else {
        let mut stream = body
            .write()
            .expect("the stream of a new body is not taken yet");
        let written = stream
            .write_all(&response.body)
            .and_then(|()| Write::flush(&mut stream));
        drop(stream);
        written
    };
    let finished =
        OutgoingBody::finish(body, None).map_err(|e| std::io::Error::other(format!("{e:?}")));
    if let Err(e) = written.and(finished) {
        eprintln!("msgplug: writing the response failed: {e}");
    }
}

/// Returns a method's name as sent (`GET`, `PUT`, ...).
fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(name) => name,
    }
    .to_string()
}

// A WIT error renders as `timeout`, `connection: TEXT`, `permission denied: TEXT` or
// `TEXT` once it is a `Rendered`.
messaging_error::conversions!(Error);
