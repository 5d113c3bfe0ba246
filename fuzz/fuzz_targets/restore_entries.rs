//! Workspace restore of a tar.zst built from a list of entries (hostile paths, links, hard
//! links, special files), with the "nothing outside the target" oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tekflux_fuzz::restore::ArchiveSpec;

fuzz_target!(|archive: ArchiveSpec| archive.run());
