//! The [`Backend`] over outgoing `wasi:http`.

use std::time::Duration;

use common::{log, Backend, DeliveryId, Error, Event, MessageData, RequestOptions, Settings};
use http_client::{parse_url, send, status_error, Method, Request};

use crate::protocol;

/// The http backend's component type.
type Component = common::Adapter<Http>;
common::export!(Component);

/// How long one HTTP exchange may take unless a request sets `timeout-ms`.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The state of the http backend: where to POST.
pub struct Http {
    /// The broker URL, possibly with a `{topic}` placeholder.
    template: String,
}

impl Http {
    /// POSTs `message` on `topic` as a CloudEvent and returns the 2xx response's
    /// status, headers and body; `what` names the operation in errors.
    fn post(
        &self,
        what: &str,
        topic: &str,
        message: &MessageData,
        timeout: Duration,
    ) -> Result<http_client::Response, Error> {
        let event = protocol::headers(topic, message, &common::random_id());
        for reason in &event.skipped {
            log(Self::NAME, &format!("{what}: metadata {reason}; not sent"));
        }
        let mut request = Request::new(Method::Post, protocol::url(&self.template, topic))
            .body(message.data.clone())
            .timeout(timeout);
        request.headers = event.headers;
        let response = send(&request)?;
        if !response.is_success() {
            return Err(status_error(what, &response));
        }
        Ok(response)
    }
}

impl Backend for Http {
    const NAME: &'static str = "http";

    fn open(settings: Settings) -> Result<Self, Error> {
        if !matches!(settings.broker_scheme(), "http" | "https") {
            return Err(settings.wrong_backend(Self::NAME));
        }
        parse_url(&settings.broker)?;
        Ok(Self {
            template: settings.broker,
        })
    }

    fn send(&mut self, topic: &str, message: &MessageData) -> Result<(), Error> {
        self.post(&format!("sending to `{topic}`"), topic, message, TIMEOUT)
            .map(drop)
    }

    fn request(
        &mut self,
        topic: &str,
        message: &MessageData,
        options: RequestOptions,
    ) -> Result<Vec<MessageData>, Error> {
        let timeout = options
            .timeout_ms
            .map_or(TIMEOUT, |ms| Duration::from_millis(ms.into()));
        let what = format!("requesting on `{topic}`");
        let response = self.post(&what, topic, message, timeout)?;
        let reply =
            protocol::reply(response.status, &response.headers, response.body).map_err(|e| {
                Error::other(format!(
                    "{what}: the response is an unreadable CloudEvent: {e}"
                ))
            })?;
        Ok(reply.into_iter().collect())
    }

    fn next(&mut self) -> Result<Event, Error> {
        Err(Error::other(
            "the http backend only sends: there is nothing to pull. To receive over HTTP, compose with --trigger http and run the component with wasmtime serve -S cli",
        ))
    }

    fn ack(&mut self, _id: DeliveryId) -> Result<(), Error> {
        Ok(())
    }

    fn nack(&mut self, _id: DeliveryId) -> Result<(), Error> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}
