//! Structured-mode CloudEvents: the input is the `application/cloudevents+json` body.
#![no_main]

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json"),
    );
    tekflux_fuzz::cloudevent::check(&headers, body);
});
