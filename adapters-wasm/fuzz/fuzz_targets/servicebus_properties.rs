//! Service Bus peek-lock responses (`backend-servicebus`): the `BrokerProperties` JSON,
//! the `Location` lock URI, custom properties as headers, and HTTP dates.
//!
//! Input: `Location` 0xff `BrokerProperties` 0xff header lines (`name: value`,
//! `\n`-separated) 0xff body.
#![no_main]

use backend_servicebus::fuzzing::{parse_http_date, parse_received, Source};
use http_client::Response;
use libfuzzer_sys::fuzz_target;
use msgplug_adapters_fuzz::fields;

fuzz_target!(|input: &[u8]| {
    let [location, properties, headers, body] = fields(input, 4)[..] else {
        unreachable!()
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut response = Response {
        status: 201,
        headers: vec![
            ("location".to_string(), text(location)),
            ("brokerproperties".to_string(), text(properties)),
        ],
        body: body.to_vec(),
    };
    for line in text(headers).lines() {
        if let Some((name, value)) = line.split_once(':') {
            response
                .headers
                .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let source = Source::parse("orders/subscriptions/audit").expect("a valid entity");
    let base_url = "https://example.servicebus.windows.net";
    if let Ok(Some(locked)) = parse_received(base_url, &source, &response) {
        assert!(
            locked.lock_uri.starts_with(base_url),
            "the lock URI stays on the namespace"
        );
        assert_eq!(locked.message.data, body);
    }
    let _ = parse_http_date(&text(properties));
});
