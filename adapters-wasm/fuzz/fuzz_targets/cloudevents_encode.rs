//! CloudEvents encode then decode (`cloudevents`): any event with valid attribute names,
//! written by `binary_headers`, decodes as the same event (the `http` backend writes
//! binary mode, the `http` driver reads it).
//!
//! Input: content type 0xff data 0xff then `name 0xff value` pairs.
#![no_main]

use cloudevents::{binary_headers, decode, is_attribute_name, Decoded, Event};
use libfuzzer_sys::fuzz_target;
use msgplug_adapters_fuzz::fields;

fuzz_target!(|input: &[u8]| {
    let parts = fields(input, 64);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut attributes = vec![
        ("specversion".to_string(), "1.0".to_string()),
        ("id".to_string(), "1".to_string()),
        ("source".to_string(), "fuzz".to_string()),
        ("type".to_string(), "fuzz".to_string()),
    ];
    for pair in parts[2..].chunks(2) {
        let (name, value) = (
            text(pair[0]),
            text(pair.get(1).copied().unwrap_or_default()),
        );
        if !is_attribute_name(&name) || name == "specversion" || value.is_empty() {
            continue;
        }
        match attributes.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => attributes.push((name, value)),
        }
    }
    attributes[4..].sort();
    let content_type = Some(text(parts[0])).filter(|t| {
        !t.is_empty()
            && !t
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/cloudevents")
    });
    let event = Event {
        attributes,
        data: parts[1].to_vec(),
        content_type,
    };
    let headers = binary_headers(&event.attributes);
    let decoded = decode(&headers, event.content_type.clone(), event.data.clone());
    assert_eq!(decoded, Ok(Decoded::Event(event)));
});
