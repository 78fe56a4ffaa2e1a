//! `nmc-shared`: the deterministic core of nmc.
//!
//! Everything here is a pure function of (rules, events, event time): no I/O, no async runtime, no
//! wall clock. The runtime in `nmc-node` feeds events in stream order and persists what this crate
//! returns; the offline `nmc hunt` feeds files. Both get the same alerts, byte for byte.
//!
//! Modules follow the data: [`force`] and [`source`] name tenants and telemetry kinds, [`subject`]
//! names the NATS subjects, [`event`] parses a raw payload and extracts event time, [`json`]
//! reads plain JSON fields, [`mapping`] classifies events into Sigma logsources and finds rule
//! fields in them, [`sigma`] parses and compiles rules, [`correlate`] holds the per-force state
//! machines, [`alert`] is the output record and [`state`] the versioned encoding of persisted
//! state. [`dead_letter`] names why an event is set aside, [`onboarding`] says which sources a
//! force's onboarding phase admits and [`rendezvous`] which node should own a force. After an alert
//! is raised: [`lifecycle`] (its states and audit entries), [`contact`] (who is told, when) and
//! [`minimise`] (which evidence fields a message may carry).

pub mod alert;
pub mod contact;
pub mod correlate;
pub mod dead_letter;
pub mod event;
pub mod evidence_view;
pub mod force;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod lifecycle;
pub mod mapping;
pub mod minimise;
pub mod onboarding;
pub mod rendezvous;
pub mod sigma;
pub mod source;
pub mod state;
pub mod subject;
pub mod time;

pub use alert::{Alert, Level};
pub use dead_letter::DeadLetterReason;
pub use event::Event;
pub use force::ForceId;
pub use source::SourceKind;
