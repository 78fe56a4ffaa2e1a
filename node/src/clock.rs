//! The node's wall clock, in Unix milliseconds: for records people read (when a pack was
//! pushed, a force onboarded, a node started) and for sanity checks on input (events stamped
//! far in the future). Never for decisions the deterministic core makes: those use event time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
