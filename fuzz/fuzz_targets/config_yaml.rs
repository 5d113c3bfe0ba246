//! Config loading: any UTF-8 text through `Config::from_yaml`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &[u8]| {
    if let Ok(text) = std::str::from_utf8(text) {
        tekflux_fuzz::config::check(text);
    }
});
