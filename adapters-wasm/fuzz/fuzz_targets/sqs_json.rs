//! SQS JSON-protocol responses (`backend-sqs`): `ReceiveMessage` and `GetQueueUrl`
//! bodies, and error responses, from any bytes.
#![no_main]

use backend_sqs::protocol::{queue_url, received, response_error};
use http_client::Response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(messages) = received(body, "orders") {
        for message in messages.into_iter().filter_map(|m| m.message.ok()) {
            assert_eq!(message.topic.as_deref(), Some("orders"));
        }
    }
    let _ = queue_url(body);
    let response = Response {
        status: 400,
        headers: Vec::new(),
        body: body.to_vec(),
    };
    let _ = response_error("ReceiveMessage", "orders", &response);
});
