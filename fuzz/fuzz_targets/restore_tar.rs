//! Workspace restore of any byte string as a tar stream (compressed here), with the same oracle
//! as `restore_entries`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|tar: &[u8]| tekflux_fuzz::restore::run_raw(tar));
