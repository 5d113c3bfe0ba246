//! Binary-mode CloudEvents: `ce-*` headers and the body, built from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tekflux_fuzz::cloudevent::BinaryRequest;

fuzz_target!(|request: BinaryRequest| {
    let (headers, body) = request.into_parts();
    tekflux_fuzz::cloudevent::check(&headers, &body);
});
