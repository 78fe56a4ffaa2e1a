//! Sigma rules: YAML documents -> rule AST ([`parse`]) -> compiled, source-routed rule set
//! ([`compile`]) built from condition expressions ([`condition`]) and value matchers ([`matcher`]).
//!
//! Detection rules follow the Sigma specification v2.1 with every modifier of its appendix
//! (see [`matcher`]); Sigma filter documents are applied to the rules they name. Correlations
//! currently support `event_count` and `value_count`. Anything else is rejected with
//! [`RuleErrorKind::Unsupported`], never silently changed.

pub mod compile;
pub mod condition;
pub mod fields;
pub mod matcher;
pub mod needs;
pub mod parse;
pub mod prefilter;
pub mod scan;

pub use compile::{CompiledCorrelation, CompiledRule, Input, RuleSet};
pub use matcher::Placeholders;
pub use parse::{RuleDoc, parse_rules};

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
