//! Gitlab webhooks: the body is the input, the headers are Gitlab's push (and other) events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tekflux_git_push::Provider;

fuzz_target!(|body: &[u8]| tekflux_fuzz::webhook::check(Provider::Gitlab, body));
