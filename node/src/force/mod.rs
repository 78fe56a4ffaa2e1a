//! Force actors: one supervised actix actor per force, reading the force's events in stream order
//! from the sequence after its sled cursor, and committing state, outbox and cursor atomically.

pub mod actor;
pub mod batch;
pub mod worker;

pub use actor::{ForceActor, spawn_force};
