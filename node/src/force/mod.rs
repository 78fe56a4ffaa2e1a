//! Force actors: one supervised actix actor per force owned by this node, reading the force's
//! events in stream order from the sequence after its sled cursor, and committing state, outbox
//! and cursor atomically, under the fencing of the force's lease ([`control`]).

pub mod actor;
pub mod batch;
pub mod control;
pub mod fault;
pub mod worker;

pub use actor::{Exported, ForceActor, Handoff, Snapshot, spawn_force};
pub use control::ForceControl;
