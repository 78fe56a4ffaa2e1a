//! Sigma rules: YAML documents -> rule AST ([`parse`]) -> compiled rule set ([`RuleSet`]), routed
//! by logsource class.
//!
//! Inside (private to the crate): `compile` builds the [`RuleSet`] from condition expressions
//! (`condition`) and value matchers (`matcher`); `needs` derives what an event must hold for each
//! rule to match, and `prefilter` indexes those needs per class so that an event is only tested
//! against the rules whose needs it holds, with `scan` searching field values for literals and
//! `fields` resolving each field of an event once. [`reads`] says which parts of each source's
//! events the rules read, so that parsing builds only those.
//!
//! Detection rules follow the Sigma specification v2.1 with every modifier of its appendix;
//! Sigma filter documents are applied to the rules they name. Correlations support ten types:
//! `event_count`, `value_count`, `temporal`, `temporal_ordered`, `value_sum`, `value_avg`,
//! `value_percentile`, and nmc's `new_term`, `impossible_travel` and `silent_feed` (see
//! `docs/correlation-semantics.md`). Anything else is rejected with
//! [`RuleErrorKind::Unsupported`], never silently changed.

pub(crate) mod compile;
pub(crate) mod condition;
pub(crate) mod fields;
pub(crate) mod matcher;
pub(crate) mod needs;
pub mod parse;
pub(crate) mod prefilter;
pub mod reads;
pub mod referenced;
pub(crate) mod scan;

pub use compile::{CompiledCorrelation, CompiledRule, Input, RuleSet};
pub use matcher::Placeholders;
pub use parse::{RuleDoc, parse_rules};
pub use reads::ReadPlan;
pub use referenced::referenced_fields;

/// A rule that could not be loaded, with where it came from and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}{}: {kind}", id.as_deref().map(|i| format!(" (rule {i})")).unwrap_or_default())]
pub struct RuleError {
    /// File name and document index, e.g. `brute_force.yml#1`.
    pub origin: String,
    /// The rule id, when it could be read.
    pub id: Option<String>,
    /// What is wrong.
    pub kind: RuleErrorKind,
}

/// Whether a rule is wrong, or valid Sigma that nmc does not run yet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleErrorKind {
    /// The document is not a valid Sigma rule; fix the rule.
    #[error("invalid rule: {0}")]
    Invalid(String),
    /// Valid Sigma using a feature nmc does not support yet; the rule is not loaded.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The rule uses a `%placeholder%` (`expand`) with no configured values.
    #[error(
        "placeholder `%{0}%` has no values: define it under `placeholders` in the config (or `--placeholders FILE`)"
    )]
    Placeholder(String),
}
