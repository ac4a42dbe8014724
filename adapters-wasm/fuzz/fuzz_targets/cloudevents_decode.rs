//! CloudEvents over HTTP (`cloudevents`), as the `http` driver reads requests and the
//! `http` backend reads replies: structured and binary mode from any headers and body.
//! An event that decodes is written in binary mode and must decode the same.
//!
//! Input: `Content-Type` 0xff header lines (`name: value`, `\n`-separated) 0xff body.
#![no_main]

use cloudevents::{binary_headers, decode, is_attribute_name, Decoded};
use libfuzzer_sys::fuzz_target;
use msgplug_adapters_fuzz::fields;

fuzz_target!(|input: &[u8]| {
    let [content_type, headers, body] = fields(input, 3)[..] else {
        unreachable!()
    };
    let content_type =
        (!content_type.is_empty()).then(|| String::from_utf8_lossy(content_type).into_owned());
    let headers: Vec<(String, &[u8])> = headers
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            Some((name, &line[colon + 1..]))
        })
        .collect();
    let Ok(Decoded::Event(event)) = decode(&headers, content_type, body.to_vec()) else {
        return;
    };
    // Binary mode can carry neither attribute names outside `a-z0-9` (structured mode
    // has them) nor a data type that marks the body as a structured-mode event.
    let structured_type = event.content_type.as_deref().is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/cloudevents")
    });
    if structured_type || !event.attributes.iter().all(|(n, _)| is_attribute_name(n)) {
        return;
    }
    let written = binary_headers(&event.attributes);
    let again = decode(&written, event.content_type.clone(), event.data.clone())
        .expect("what binary_headers writes decodes");
    assert_eq!(again, Decoded::Event(event));
});
