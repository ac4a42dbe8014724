//! msgplug's `http` backend adapter (`--broker http://…` or `https://…`): each
//! `producer.send` POSTs the message as a binary-mode CloudEvent 1.0.
//!
//! * URL: the broker URL, with `{topic}` in it (also percent-encoded, `%7Btopic%7D`)
//!   replaced by the percent-encoded topic; without a placeholder every message goes
//!   to the URL as is.
//! * Event: `ce-specversion: 1.0`, a fresh random `ce-id` and `ce-type` = the topic
//!   (metadata `specversion`, `id` and `type`, say of an event the app received, are not
//!   sent: each send is a new event), `ce-source` = `msgplug` unless the metadata has a
//!   `source`, `Content-Type` = the message's content type, the data as the body. The
//!   rest of the metadata goes as [`protocol::headers`] says: `ce-KEY` for CloudEvents
//!   attribute names (`a-z0-9`, at most 20 characters), else a plain `KEY` header, else
//!   it is skipped with a `msgplug[http]:` line on stderr.
//! * Outcome: `send` returns once the server answered; 2xx is `Ok`, anything else an
//!   error (401/403 `permission-denied`, 408/504 `timeout`, else `other` with the
//!   status and the start of the body). Each exchange is bounded by 30 s.
//! * `request`: the same POST; the 2xx response is the one reply (a 204 No Content is
//!   an error: no reply was made), bounded by the request's `timeout-ms` when given.
//!   A response that is a CloudEvent (binary or structured mode) gives its data,
//!   content type and attributes (as metadata); it is read as strictly as the `http`
//!   driver reads requests (the shared `cloudevents` crate), so a malformed one is an
//!   error. Any other response gives its body and `Content-Type`, and no metadata.
//! * Nothing to pull: `consumer.next` is an error that says to use `--trigger http`.
//!   `ack`, `nack` and `flush` are no-ops (each send completes before it returns).
//!
//! With the `http` trigger on the receiving side, this gives component-to-component
//! messaging over HTTP.

#[cfg(not(test))]
mod http;
mod protocol;
