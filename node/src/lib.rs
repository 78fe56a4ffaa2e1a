//! `nmc-node`: the runtime of nmc and the `nmc` binary.
//!
//! - [`node`]: start-up and shutdown of `nmc node`; [`context`]: what a node's tasks share;
//!   [`status`]: what a node knows about itself; [`http`]: its health, readiness, metrics and
//!   status endpoints.
//! - [`config`]: the node's configuration (a TOML file, `NMC_*` overrides).
//! - [`bus`]: NATS and JetStream (connection, streams, readers, publishing; who may create
//!   streams and buckets: [`bus::provision`]).
//! - [`store`]: sled persistence of each force's cursor and state (a snapshot plus a journal).
//! - [`cluster`]: membership, leases, the coordinator and its decisions, checkpoints, onboarding.
//! - [`force`]: the supervised force actor, its worker and the pure evaluation of a batch.
//! - [`triage`]: dead-lettering events of forces that are not onboarded.
//! - [`notify`]: alerts to force contacts (delivery, retries, digests, escalation);
//!   [`contacts`]: who they are; [`alert_state`]: each alert's lifecycle and audit trail.
//! - [`console`]: the analyst console's index of alerts and states.
//! - [`rules`]: rule files, rule packs and hot reload.
//! - [`hunt`]: the offline engine of `nmc hunt`; [`synth`]: synthetic telemetry.
//! - [`telemetry`]: logs, traces and metrics; [`clock`]: the wall clock, for records and input
//!   checks.
//! - [`cli`]: the command line, one module per command.
//! - [`allocator`]: the process's allocator (mimalloc).

pub mod alert_state;
pub mod allocator;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod contacts;
pub mod context;
pub mod force;
pub mod forces_file;
pub mod http;
pub mod hunt;
pub mod node;
pub mod notify;
pub mod rules;
pub mod secret;
pub mod status;
pub mod store;
pub mod synth;
pub mod telemetry;
pub mod triage;
