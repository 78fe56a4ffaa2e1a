//! One event as correlation remembers it: its event time and stream sequence (the evidence of
//! alerts, the order of the reorder buffer, the steps of sequences).

use serde::{Deserialize, Serialize};

/// One event as correlation remembers it: event time and stream sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Seen {
    /// Event time (ms).
    pub t: i64,
    /// Stream sequence.
    pub seq: u64,
}
