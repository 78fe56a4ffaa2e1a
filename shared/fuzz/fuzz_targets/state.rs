//! Persisted force state: a checkpoint or state entries, decoded, loaded, used, persisted again.
//! The body is `nmc_shared::fuzzing::state`, which `shared/tests/fuzz_regressions.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nmc_shared::fuzzing::state(data));
