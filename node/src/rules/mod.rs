//! Rules on a node: reading and compiling Sigma rule files ([`files`]), the cluster's rule
//! packs in JetStream ([`pack`]), and which pack a node runs and its hot reload ([`reload`]).
//!
//! A node starts with the pack in force in the cluster (or its own `rules_dirs` when none was
//! ever pushed), then follows `NMC_RULES` and publishes each new pack that compiles on a
//! `tokio::sync::watch` channel; force actors pick it up at their next step.

pub mod files;
pub mod pack;
pub mod reload;

use std::sync::Arc;

use nmc_shared::sigma::RuleSet;

pub use files::{compile_texts, load, load_with, parse_texts, read, read_texts, rule_files};

/// A compiled rule set and the version of the pack it came from.
#[derive(Clone)]
pub struct RulePack {
    /// Compiled rules.
    pub rules: Arc<RuleSet>,
    /// `pack-<n>` for a pushed pack, `local` for the node's own `rules_dirs`.
    pub version: String,
    /// The pushed pack's revision (`n`), 0 for `local`: a pack is only ever replaced by a
    /// newer one.
    pub revision: u64,
}

impl RulePack {
    /// Version of the rules a node runs before any pack was pushed: its own `rules_dirs`.
    pub const LOCAL: &'static str = "local";
}
