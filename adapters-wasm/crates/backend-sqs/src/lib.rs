//! msgplug's `sqs` backend adapter: AWS SQS over outgoing `wasi:http`, with the SQS
//! JSON protocol and SigV4 signing (run with `wasmtime run -S http`).
//!
//! * **Broker URL** `sqs://REGION/QUEUE-NAME`: the run driver consumes QUEUE-NAME
//!   (looked up with `GetQueueUrl`); `sqs://REGION` serves apps that only send.
//!   `--subscribe` does not apply (a log line says it is ignored) and a queue group
//!   is implicit: every consumer of a queue competes for its messages.
//! * **Run-time environment** (never baked): `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`; `AWS_REGION` overrides
//!   the URL's region; `AWS_ENDPOINT_URL_SQS`, else `AWS_ENDPOINT_URL`, overrides the
//!   endpoint `https://sqs.REGION.amazonaws.com/` as in the AWS SDKs (that is how a
//!   local server such as moto is used).
//! * **Sending**: a topic names a queue (`GetQueueUrl` once per name, cached); each
//!   character SQS queue names do not allow becomes `-` (`orders.upper` is the queue
//!   `orders-upper`), and an `http(s)://` topic is a queue URL. Queues are never
//!   created. `send` returns once `SendMessage` answered 2xx. Content-type, metadata,
//!   binary data and FIFO queues map as [`protocol`] describes.
//! * **Consuming**: `ReceiveMessage` long polling (20 s, up to 10 messages, all
//!   attributes), the batch buffered; the topic the app sees is the queue name. A
//!   delivery is deleted (`DeleteMessage`) only after the handler returned `Ok`; on
//!   `Err` its visibility is set to 0 (`ChangeMessageVisibility`) so it is received
//!   again at once — at-least-once delivery. A message that always fails is retried
//!   without pause: give the queue a redrive policy (`maxReceiveCount`) so SQS moves it
//!   to a dead-letter queue. `--option handler_timeout_ms=N` is the `VisibilityTimeout`
//!   of each `ReceiveMessage` (else the queue's own, read once with `GetQueueAttributes`);
//!   the messages held (handled or buffered) are renewed with `ChangeMessageVisibility`
//!   on each `send` or `request` and before the next delivery, once a quarter of it has
//!   passed; a buffered message whose visibility timeout passed is skipped (SQS delivers
//!   it again), and a handler that outran it is logged when its message is deleted
//!   ([`common::Lease`]). While consuming, throttling and
//!   connection failures are retried with capped exponential backoff (1 s to 30 s;
//!   `ack`/`nack` try 3 times). A `send` SQS throttles or fails (`ThrottlingException`,
//!   `RequestThrottled`, `ServiceUnavailable`, 5xx, a lost connection) is tried again after
//!   its `Retry-After` or a capped backoff (250 ms to 5 s), for up to 30 s; then, or on
//!   any other error, the error is returned to the app.
//! * **request-reply**: `request` creates a temporary queue `msgplug-reply-<hex>`,
//!   sends the request with its URL in the attribute `reply-to`, long-polls it for the
//!   replies and deletes it (so the credentials need `sqs:CreateQueue` and
//!   `sqs:DeleteQueue`); timeouts are honoured to the second. `reply` sends to the
//!   `reply-to` URL of the received message.
//!
//! The signer ([`sigv4`]), the settings ([`config`]) and the request and response
//! mapping ([`protocol`]) are plain Rust with unit tests; only [`sqs`] does I/O.

pub mod config;
pub mod protocol;
pub mod sigv4;
#[cfg(not(any(test, feature = "fuzzing")))]
pub mod sqs;
