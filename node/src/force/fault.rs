//! Fault injection, for tests only: compiled into debug builds (which the test suite runs) and
//! absent from release builds, so that no production configuration can turn it on.
//!
//! With `NMC_FAULT_PANIC_FIELD=<name>` in a debug build's environment, rule evaluation panics
//! on every event that carries the top-level field `<name>`: the supervision path (caught
//! panic, restart from sled, dead letter after `max_attempts`) can then be tested end to end.

/// The field whose presence makes evaluation panic, if fault injection is on.
pub fn panic_field() -> Option<String> {
    if cfg!(debug_assertions) {
        std::env::var("NMC_FAULT_PANIC_FIELD")
            .ok()
            .filter(|f| !f.is_empty())
    } else {
        None
    }
}
