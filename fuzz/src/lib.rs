//! What the fuzz targets under `fuzz_targets/` share: the request each provider sends, the
//! properties every parsed push must have, and the restore oracle.
//!
//! A target fails on a panic in the code under test and on a broken property asserted here;
//! errors returned by the parsers are the expected answer to most inputs. See docs/fuzzing.md.

pub mod cloudevent;
pub mod config;
pub mod restore;
pub mod webhook;
