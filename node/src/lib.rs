//! `nmc-node`: the runtime of nmc. Configuration ([`config`]), NATS and JetStream ([`bus`]),
//! sled persistence ([`store`]), cluster coordination ([`cluster`]), the supervised force actors
//! ([`force`]), triage of unknown forces ([`triage`]), rule loading ([`rules`]), the node itself
//! ([`runtime`]), telemetry ([`telemetry`]), synthetic telemetry ([`synth`]) and the command line
//! ([`cli`]).

pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod force;
pub mod hunt;
pub mod rules;
pub mod runtime;
pub mod store;
pub mod synth;
pub mod telemetry;
pub mod triage;
