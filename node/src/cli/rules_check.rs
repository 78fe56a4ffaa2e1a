//! `nmc rules check`: parse and compile rules, say per rule what fails and why.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use nmc_shared::sigma::{RuleErrorKind, RuleSet};
use serde_json::json;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per failing rule, then the summary line.
    Text,
    /// One JSON object.
    Json,
}

/// Arguments of `nmc rules check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Rule files or directories.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// TOML file of `%placeholder%` values for `expand`.
    #[arg(long)]
    placeholders: Option<PathBuf>,
    /// Also list compiled rules whose logsource no nmc source provides yet.
    #[arg(long)]
    dormant: bool,
}

/// Runs `nmc rules check`; exits non-zero when a rule has an error (not for unsupported ones).
pub fn run(args: CheckArgs) -> Result<bool> {
    let ph = super::hunt::read_placeholders(args.placeholders.as_ref())?;
    let (docs, parse_errors) = crate::rules::read(&args.dirs)?;
    let loaded = docs.len() + parse_errors.len();
    let (set, compile_errors): (RuleSet, _) = RuleSet::compile_with(docs, &ph);
    let failures: Vec<_> = parse_errors.iter().chain(&compile_errors).collect();
    let unsupported = failures
        .iter()
        .filter(|e| matches!(e.kind, RuleErrorKind::Unsupported(_)))
        .count();
    let errors = failures.len() - unsupported;
    let compiled = set.len();
    let dormant: Vec<_> = set.dormant().into_iter().map(|i| &set.rules()[i]).collect();
    let mut by_logsource: BTreeMap<String, usize> = BTreeMap::new();
    for r in &dormant {
        let ls = &r.logsource;
        let key = [&ls.product, &ls.service, &ls.category]
            .iter()
            .map(|x| x.as_deref().unwrap_or("*"))
            .collect::<Vec<_>>()
            .join("/");
        *by_logsource.entry(key).or_default() += 1;
    }
    match args.format {
        Format::Text => {
            for e in &failures {
                println!("{e}");
            }
            if args.dormant {
                for r in &dormant {
                    println!(
                        "{} (rule {}): dormant: no nmc source provides {:?}",
                        r.origin, r.meta.id, r.logsource
                    );
                }
            }
            if !dormant.is_empty() {
                let list: Vec<String> = by_logsource
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                println!(
                    "note: {} compiled rules wait for a source: {}",
                    dormant.len(),
                    list.join(", ")
                );
            }
            println!(
                "rules: {loaded} loaded, {compiled} compiled, {unsupported} unsupported, {errors} errors"
            );
        }
        Format::Json => {
            let fails: Vec<_> = failures
                .iter()
                .map(|e| {
                    json!({
                        "origin": e.origin,
                        "id": e.id,
                        "status": if matches!(e.kind, RuleErrorKind::Unsupported(_)) { "unsupported" } else { "error" },
                        "reason": e.kind.to_string(),
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "loaded": loaded,
                    "compiled": compiled,
                    "unsupported": unsupported,
                    "errors": errors,
                    "failures": fails,
                    "dormant_by_logsource": by_logsource,
                })
            );
        }
    }
    Ok(errors == 0)
}
