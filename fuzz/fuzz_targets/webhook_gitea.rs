//! Gitea, Gogs and Forgejo webhooks (one payload format): the body is the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tekflux_git_push::Provider;

fuzz_target!(|body: &[u8]| {
    tekflux_fuzz::webhook::check(Provider::Gitea, body);
    tekflux_fuzz::webhook::check(Provider::Forgejo, body);
});
