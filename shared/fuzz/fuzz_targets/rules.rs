//! A Sigma rule file: YAML parsing, conditions, compiling, evaluation of the compiled rules.
//! The body is `nmc_shared::fuzzing::rules`, which `shared/tests/fuzz_regressions.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nmc_shared::fuzzing::rules(data));
