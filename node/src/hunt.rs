//! Offline evaluation (`nmc hunt`): the same engine as a node, over files instead of a stream.
//!
//! Inputs are JSON lines (`.jsonl`, `.ndjson`, or anything line-per-object), or `.json` files
//! holding one object, several objects run together, an array of records, or CloudTrail's
//! `{"Records": [...]}`. Every record is numbered (1-based line for JSON lines, record number
//! otherwise) so that alerts name the file and line of their evidence.
//!
//! Offline there is no stream sequence: a record's "sequence" packs the input file index and the
//! record number (`file << 40 | line`), which keeps alert ids deterministic for the same inputs
//! and lets evidence be traced back without a table.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nmc_shared::correlate::ForceState;
use nmc_shared::event::Event;
use nmc_shared::sigma::RuleSet;
use nmc_shared::{Alert, ForceId, SourceKind, mapping};
use serde_json::Value;

/// Default allowed lateness of `nmc hunt` (as a node's default for cloud sources).
pub const DEFAULT_LATENESS_MS: i64 = 5 * 60_000;

/// Bits of a hunt sequence used for the record number.
const LINE_BITS: u32 = 40;

/// Every input file under `paths` (directories recursively: `.json`, `.jsonl`, `.ndjson`),
/// sorted within each directory.
pub fn input_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                walk(&e, out)?;
            } else if e
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "json" | "jsonl" | "ndjson"))
            {
                out.push(e);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out).with_context(|| format!("reading {}", p.display()))?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

/// Calls `f(number, record)` for every record of a file, in order.
pub fn for_each_record(path: &Path, mut f: impl FnMut(u64, Result<Value, String>)) -> Result<()> {
    let lines = path
        .extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x != "json");
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if lines {
        for (i, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            f(
                i as u64 + 1,
                // As strict as a node: duplicate keys and deep nesting are refused.
                nmc_shared::json::parse_strict(&line).map_err(|e| e.to_string()),
            );
        }
        return Ok(());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut n = 0u64;
    let mut emit = |v: Value, f: &mut dyn FnMut(u64, Result<Value, String>)| match v {
        Value::Array(items) => items.into_iter().for_each(|x| {
            n += 1;
            f(n, Ok(x))
        }),
        Value::Object(mut o) if matches!(o.get("Records"), Some(Value::Array(_))) => {
            if let Some(Value::Array(items)) = o.remove("Records") {
                items.into_iter().for_each(|x| {
                    n += 1;
                    f(n, Ok(x))
                })
            }
        }
        other => {
            n += 1;
            f(n, Ok(other))
        }
    };
    let mut stream = serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>();
    loop {
        match stream.next() {
            Some(Ok(v)) => emit(v, &mut f),
            Some(Err(e)) => {
                n += 1;
                f(n, Err(e.to_string()));
                break;
            }
            None => break,
        }
    }
    Ok(())
}

/// Counters of a hunt run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct HuntStats {
    /// Files read.
    pub files: u64,
    /// Records read.
    pub records: u64,
    /// Records evaluated.
    pub evaluated: u64,
    /// Records whose source could not be recognised (use `--source`).
    pub undetected: u64,
    /// Records that are not valid events (bad JSON, no time, ...).
    pub bad: u64,
    /// Events more than the lateness behind the newest time seen (applied as they came).
    pub late: u64,
    /// Values correlations could not use (non-finite numbers, places off the globe).
    pub bad_values: u64,
    /// Events whose time came from an ingest-time field (`@timestamp`): none of their source's
    /// own time fields was present.
    pub ingest_time: u64,
    /// Alerts raised.
    pub alerts: u64,
}

/// A hunt over files: rules, one correlation state, and where each record came from.
pub struct Hunt {
    rules: RuleSet,
    state: ForceState,
    force: ForceId,
    source: Option<SourceKind>,
    files: Vec<String>,
    /// Counters so far.
    pub stats: HuntStats,
}

impl Hunt {
    /// A hunt with `rules`, attributing alerts to `force`; `source` forces one field mapping.
    pub fn new(rules: RuleSet, force: ForceId, source: Option<SourceKind>) -> Hunt {
        Hunt {
            rules,
            state: ForceState::new().with_lateness(DEFAULT_LATENESS_MS),
            force,
            source,
            files: Vec::new(),
            stats: HuntStats::default(),
        }
    }

    /// Evaluates one file; `on_alert` gets each alert with evidence naming file and line, and
    /// `on_problem` each record that could not be evaluated.
    ///
    /// Events go through the same correlation state as in a node: detections alert as they are
    /// read, correlations see events in event-time order (ties in file order) through the
    /// state's reorder buffer, so input disordered by less than the lateness gives the same
    /// alerts as sorted input; later events are applied as they come and counted as late. At
    /// the end of the file the buffer is drained (nothing more will arrive).
    pub fn file(
        &mut self,
        path: &Path,
        on_alert: &mut dyn FnMut(Alert),
        on_problem: &mut dyn FnMut(&str, u64, &str),
    ) -> Result<()> {
        let idx = self.files.len() as u64;
        let name = path.display().to_string();
        self.files.push(name.clone());
        self.stats.files += 1;
        let mut out = Vec::new();
        for_each_record(path, |line, rec| {
            self.stats.records += 1;
            let body = match rec {
                Ok(v) => v,
                Err(e) => {
                    self.stats.bad += 1;
                    on_problem(&name, line, &format!("not JSON: {e}"));
                    return;
                }
            };
            let Some(source) = self.source.or_else(|| mapping::detect_source(&body)) else {
                self.stats.undetected += 1;
                on_problem(&name, line, "source not recognised; pass --source");
                return;
            };
            let ev = match Event::from_value(source, body) {
                Ok(ev) => ev,
                Err(e) => {
                    self.stats.bad += 1;
                    on_problem(&name, line, &e.to_string());
                    return;
                }
            };
            self.stats.evaluated += 1;
            if ev.time_from.fallback().is_some() {
                self.stats.ingest_time += 1;
            }
            let seq = (idx << LINE_BITS) | line;
            self.state
                .apply(&self.rules, &self.force, seq, &ev, &mut out);
            self.emit(&mut out, on_alert);
        })?;
        self.state.drain(&self.rules, &self.force, &mut out);
        self.emit(&mut out, on_alert);
        self.stats.late = self.state.late_events();
        self.stats.bad_values = self.state.bad_values();
        Ok(())
    }

    fn emit(&mut self, out: &mut Vec<Alert>, on_alert: &mut dyn FnMut(Alert)) {
        for mut a in out.drain(..) {
            self.locate(&mut a);
            self.stats.alerts += 1;
            on_alert(a);
        }
    }

    /// Sets how far out of event-time order input may be (default 5 minutes).
    pub fn with_lateness(mut self, ms: i64) -> Self {
        self.state = std::mem::take(&mut self.state).with_lateness(ms);
        self
    }

    /// Replaces packed sequences in evidence by file and line.
    fn locate(&self, a: &mut Alert) {
        a.node = "hunt".into();
        for e in &mut a.evidence {
            let file = (e.seq >> LINE_BITS) as usize;
            e.line = Some(e.seq & ((1 << LINE_BITS) - 1));
            e.file = self.files.get(file).cloned();
            e.seq = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disorder_within_the_lateness_gives_the_sorted_alerts() {
        use crate::synth::{Scenario, generate};
        let dir = tempfile::tempdir().unwrap();
        let s = Scenario {
            force: ForceId::new("essex").unwrap(),
            users: 40,
            normal: 300,
            span_ms: 3_600_000,
            spray: true,
            brute_force: true,
            legacy: 2,
        };
        let sorted = generate(&s, 3, 1_793_606_400_000);
        // Swap neighbours: every event moves by at most a few seconds to minutes.
        let mut shuffled = sorted.clone();
        for i in (0..shuffled.len() - 1).step_by(2) {
            shuffled.swap(i, i + 1);
        }
        let write = |name: &str, evs: &[Value]| {
            let p = dir.path().join(name);
            let text: String = evs.iter().map(|v| format!("{v}\n")).collect();
            std::fs::write(&p, text).unwrap();
            p
        };
        let rules_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules/identity");
        let run = |file: &Path| {
            let (rules, errs) = crate::rules::load(std::slice::from_ref(&rules_dir)).unwrap();
            assert!(errs.is_empty());
            let mut h = Hunt::new(
                rules,
                ForceId::new("essex").unwrap(),
                Some(SourceKind::EntraSignin),
            );
            let mut got = Vec::new();
            h.file(
                file,
                &mut |a| got.push((a.rule.id, a.group, a.count, a.first_seen, a.last_seen)),
                &mut |_, _, p| panic!("{p}"),
            )
            .unwrap();
            got.sort();
            (got, h.stats.late)
        };
        let (a, _) = run(&write("sorted.jsonl", &sorted));
        let (b, late) = run(&write("shuffled.jsonl", &shuffled));
        assert!(a.len() >= 3, "{a:?}");
        assert_eq!(late, 0);
        assert_eq!(a, b);
    }

    #[test]
    fn reads_every_json_shape() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let collect = |p: &Path| {
            let mut v = Vec::new();
            for_each_record(p, |n, r| v.push((n, r.map(|x| x["a"].clone()).ok()))).unwrap();
            v
        };
        let one = |n: u64, a: i64| (n, Some(serde_json::json!(a)));
        assert_eq!(
            collect(&w("a.jsonl", "{\"a\":1}\n\n{\"a\":2}\n")),
            vec![one(1, 1), one(3, 2)]
        );
        assert_eq!(
            collect(&w("b.json", "{\"a\":1}\n{\n \"a\":2\n}")),
            vec![one(1, 1), one(2, 2)]
        );
        assert_eq!(
            collect(&w("c.json", "[{\"a\":1},{\"a\":2}]")),
            vec![one(1, 1), one(2, 2)]
        );
        assert_eq!(
            collect(&w("d.json", "{\"Records\":[{\"a\":5}]}")),
            vec![one(1, 5)]
        );
        let bad = collect(&w("e.jsonl", "{\"a\":1}\nnope\n"));
        assert_eq!(bad[1], (2, None));
    }
}
