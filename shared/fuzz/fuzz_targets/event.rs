//! A raw event payload of a source (the first byte picks it): parsing, field mapping, matching.
//! The body is `nmc_shared::fuzzing::event`, which `shared/tests/fuzz_regressions.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nmc_shared::fuzzing::event(data));
