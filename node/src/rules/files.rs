//! Reading Sigma rule files from directories and compiling them into a [`RuleSet`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nmc_shared::sigma::{Placeholders, RuleDoc, RuleError, RuleSet, parse_rules};

/// Every `.yml`/`.yaml` file under `dirs` (recursively), sorted for a stable load order.
pub fn rule_files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in dirs {
        collect(d, &mut out).with_context(|| format!("reading rules from {}", d.display()))?;
    }
    out.sort();
    Ok(out)
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_file() {
        out.push(p.to_owned());
        return Ok(());
    }
    for entry in std::fs::read_dir(p)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The rule files under `dirs` as (path, text), skipping YAML files that hold no Sigma
/// documents.
pub fn read_texts(dirs: &[PathBuf]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in rule_files(dirs)? {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("reading rule file {}", f.display()))?;
        if looks_like_rules(&text) {
            out.push((f.display().to_string(), text));
        }
    }
    Ok(out)
}

/// Rule documents parsed from (origin, text) pairs, and the documents that failed to parse.
pub fn parse_texts(files: &[(String, String)]) -> (Vec<RuleDoc>, Vec<RuleError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (origin, text) in files {
        for r in parse_rules(origin, text) {
            match r {
                Ok(doc) => docs.push(doc),
                Err(e) => errors.push(e),
            }
        }
    }
    (docs, errors)
}

/// Compiles (origin, text) pairs; broken rules are returned as errors and left out.
pub fn compile_texts(
    files: &[(String, String)],
    placeholders: &Placeholders,
) -> (RuleSet, Vec<RuleError>) {
    let (docs, mut errors) = parse_texts(files);
    let (set, mut compile_errors) = RuleSet::compile_with(docs, placeholders);
    errors.append(&mut compile_errors);
    (set, errors)
}

/// Rule documents read from `dirs`, and the documents that failed to parse.
pub fn read(dirs: &[PathBuf]) -> Result<(Vec<RuleDoc>, Vec<RuleError>)> {
    Ok(parse_texts(&read_texts(dirs)?))
}

/// Whether a YAML file holds Sigma documents at all (rule folders also hold test metadata).
fn looks_like_rules(text: &str) -> bool {
    text.lines().any(|l| {
        l.starts_with("detection:") || l.starts_with("correlation:") || l.starts_with("filter:")
    })
}

/// Loads and compiles rules; broken rules are returned as errors and left out.
pub fn load(dirs: &[PathBuf]) -> Result<(RuleSet, Vec<RuleError>)> {
    load_with(dirs, &Placeholders::new())
}

/// Like [`load`], resolving `expand` placeholders.
pub fn load_with(
    dirs: &[PathBuf],
    placeholders: &Placeholders,
) -> Result<(RuleSet, Vec<RuleError>)> {
    Ok(compile_texts(&read_texts(dirs)?, placeholders))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules nmc ships (identity, cloud and bench) all load and compile.
    #[test]
    fn shipped_rules_compile() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules");
        let (set, errors) = load(&[dir]).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            set.correlations().len() >= 8,
            "{}",
            set.correlations().len()
        );
    }
}
