//! Reading Sigma rule files from directories and compiling them into a [`RuleSet`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nmc_shared::sigma::{Placeholders, RuleDoc, RuleError, RuleErrorKind, RuleSet, parse_rules};

/// Every `.yml`/`.yaml` file under `dirs` (recursively), sorted for a stable load order. Entries
/// whose names start with `.` are skipped inside directories: a Kubernetes ConfigMap or Secret
/// volume holds each file three times (`x.yml`, `..data/x.yml`, `..<timestamp>/x.yml`), and
/// editors and VCS leave hidden files; a path given explicitly is always read.
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
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Largest rule file, in bytes. The largest SigmaHQ rule file (a list of vulnerable driver
/// hashes) is 290 KB.
pub const MAX_RULE_FILE_BYTES: usize = 4 << 20;
/// Largest rule pack (all its files' texts together), in bytes. All of SigmaHQ's rules are
/// 5.5 MB.
pub const MAX_PACK_BYTES: usize = 64 << 20;
/// Most rule documents in one pack (SigmaHQ has about 3,700).
pub const MAX_PACK_RULES: usize = 20_000;

/// The rule files under `dirs` as (path, text), skipping YAML files that hold no Sigma
/// documents. A file over [`MAX_RULE_FILE_BYTES`], or files over [`MAX_PACK_BYTES`] in all, are
/// an error that names the file and the limit (nothing is read past the limit).
pub fn read_texts(dirs: &[PathBuf]) -> Result<Vec<(String, String)>> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut total = 0usize;
    for f in rule_files(dirs)? {
        let mut text = String::new();
        std::fs::File::open(&f)
            .and_then(|file| {
                file.take(MAX_RULE_FILE_BYTES as u64 + 1)
                    .read_to_string(&mut text)
            })
            .with_context(|| format!("reading rule file {}", f.display()))?;
        let name = f.display().to_string();
        check_file(&name, text.len())?;
        if looks_like_rules(&text) {
            total += text.len();
            check_total(total, &name)?;
            out.push((name, text));
        }
    }
    Ok(out)
}

fn check_file(name: &str, len: usize) -> Result<()> {
    if len > MAX_RULE_FILE_BYTES {
        anyhow::bail!(
            "rule file {name} is larger than {MAX_RULE_FILE_BYTES} bytes, nmc's limit for one rule file: refused (split it)"
        );
    }
    Ok(())
}

fn check_total(total: usize, at: &str) -> Result<()> {
    if total > MAX_PACK_BYTES {
        anyhow::bail!(
            "rule files reach {total} bytes at {at}, over {MAX_PACK_BYTES} bytes, nmc's limit for one rule pack: refused"
        );
    }
    Ok(())
}

/// Checks a pack's files (as pushed, or as fetched by a node: it may not come from `nmc rules
/// push`) against [`MAX_RULE_FILE_BYTES`] and [`MAX_PACK_BYTES`].
pub fn check_limits(files: &[(String, String)]) -> Result<()> {
    let mut total = 0usize;
    for (name, text) in files {
        check_file(name, text.len())?;
        total += text.len();
        check_total(total, name)?;
    }
    Ok(())
}

/// Rule documents parsed from (origin, text) pairs, and the documents that failed to parse.
/// Past [`MAX_PACK_RULES`] documents the rest is not parsed, and that is an error. Files are
/// parsed on every core (thousands of SigmaHQ files), the results kept in file order.
pub fn parse_texts(files: &[(String, String)]) -> (Vec<RuleDoc>, Vec<RuleError>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().div_ceil(64).max(1));
    let per_file: Vec<Vec<Result<RuleDoc, RuleError>>> = if threads <= 1 {
        files.iter().map(|(o, t)| parse_rules(o, t)).collect()
    } else {
        let chunk = files.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(o, t)| parse_rules(o, t))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().expect("a rule-parsing thread panicked"))
                .collect()
        })
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for ((origin, _), parsed) in files.iter().zip(per_file) {
        if docs.len() + errors.len() >= MAX_PACK_RULES {
            errors.push(RuleError {
                origin: origin.clone(),
                id: None,
                kind: RuleErrorKind::Invalid(format!(
                    "more than {MAX_PACK_RULES} rule documents, nmc's limit for one rule pack: this file and the ones after it are not loaded"
                )),
            });
            break;
        }
        for r in parsed {
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

    #[test]
    fn oversize_files_and_packs_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yml");
        let mut text =
            String::from("title: x\nid: x\ndetection:\n  sel:\n    a: b\n  condition: sel\n");
        text.push_str(&format!("# {}\n", "x".repeat(MAX_RULE_FILE_BYTES)));
        std::fs::write(&big, &text).unwrap();
        let e = read_texts(&[dir.path().to_owned()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("big.yml") && e.contains("4194304 bytes"), "{e}");
        let files = vec![("a.yml".to_string(), text)];
        let e = check_limits(&files).unwrap_err().to_string();
        assert!(e.contains("a.yml") && e.contains("4194304"), "{e}");
        let many: Vec<(String, String)> = (0..20)
            .map(|i| (format!("f{i}.yml"), "x".repeat(MAX_RULE_FILE_BYTES)))
            .collect();
        let e = check_limits(&many).unwrap_err().to_string();
        assert!(e.contains("67108864") && e.contains("f16.yml"), "{e}");
        assert!(
            check_limits(&many[..16]).is_ok(),
            "exactly 64 MiB is allowed"
        );
    }

    #[test]
    fn rule_count_is_bounded() {
        let doc = "title: x\nid: x\nlogsource: {product: azure, service: signinlogs}\ndetection:\n  sel:\n    a: b\n  condition: sel\n---\n";
        let files: Vec<(String, String)> = (0..3)
            .map(|i| (format!("f{i}.yml"), doc.repeat(MAX_PACK_RULES / 2)))
            .collect();
        let (docs, errors) = parse_texts(&files);
        assert_eq!(docs.len(), MAX_PACK_RULES);
        assert_eq!(errors.len(), 1);
        let e = errors[0].to_string();
        assert!(
            e.starts_with("f2.yml") && e.contains("20000 rule documents"),
            "{e}"
        );
    }

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

    /// A ConfigMap volume's layout (`..data` and a timestamped folder beside symlinks to them)
    /// yields each rule file once.
    #[test]
    fn hidden_entries_such_as_configmap_volumes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = dir.path().join("..2026_11_30_12_00_00.000000001");
        std::fs::create_dir(&stamp).unwrap();
        std::fs::write(stamp.join("a.yml"), "title: a\n").unwrap();
        std::os::unix::fs::symlink(&stamp, dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("..data/a.yml"), dir.path().join("a.yml"))
            .unwrap();
        std::fs::write(dir.path().join(".hidden.yml"), "title: h\n").unwrap();
        let files = rule_files(&[dir.path().to_owned()]).unwrap();
        assert_eq!(files, vec![dir.path().join("a.yml")]);
    }
}
