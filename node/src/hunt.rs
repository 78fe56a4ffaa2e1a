//! Offline evaluation (`nmc hunt`): the same engine as a node, over files instead of a stream.
//!
//! Inputs are JSON lines (`.jsonl`, `.ndjson`, or anything line-per-object), or `.json` files
//! holding one object, several objects run together, an array of records, or CloudTrail's
//! `{"Records": [...]}`. Every record is numbered (1-based line for JSON lines, record number
//! otherwise) so that alerts name the file and line of their evidence.
//!
//! With more than one thread (`--threads`, default every core), records are parsed, their source
//! detected and their detection rules matched by a pool of threads, a chunk of records at a
//! time, while one thread applies them to the correlation state in file order: the alerts are
//! the same, in the same order, as with one thread.
//!
//! Offline there is no stream sequence: a record's "sequence" packs the input file index and the
//! record number (`file << 40 | line`), which keeps alert ids deterministic for the same inputs
//! and lets evidence be traced back without a table.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use nmc_shared::correlate::{ForceState, PreparedEvent};
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

/// A record as read from a file: a line still to parse, or a value of a `.json` file.
pub enum RawRecord {
    /// One line of a JSON lines file.
    Line(Vec<u8>),
    /// One record of a `.json` file (already parsed with the file).
    Value(Value),
}

impl RawRecord {
    /// The record's JSON value.
    pub fn parse(self) -> Result<Value, String> {
        match self {
            // As strict as a node: duplicate keys and deep nesting are refused.
            RawRecord::Line(l) => nmc_shared::json::parse_strict(&l).map_err(|e| e.to_string()),
            RawRecord::Value(v) => Ok(v),
        }
    }
}

/// Calls `f(number, record)` for every record of a file, in order.
pub fn for_each_record(path: &Path, mut f: impl FnMut(u64, Result<Value, String>)) -> Result<()> {
    for_each_raw(path, |n, r| f(n, r.and_then(RawRecord::parse)))
}

/// Calls `f(number, record)` for every record of a file, in order, lines unparsed.
pub fn for_each_raw(path: &Path, mut f: impl FnMut(u64, Result<RawRecord, String>)) -> Result<()> {
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
            f(i as u64 + 1, Ok(RawRecord::Line(line)));
        }
        return Ok(());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut n = 0u64;
    let mut emit = |v: Value, f: &mut dyn FnMut(u64, Result<RawRecord, String>)| match v {
        Value::Array(items) => items.into_iter().for_each(|x| {
            n += 1;
            f(n, Ok(RawRecord::Value(x)))
        }),
        Value::Object(mut o) if matches!(o.get("Records"), Some(Value::Array(_))) => {
            if let Some(Value::Array(items)) = o.remove("Records") {
                items.into_iter().for_each(|x| {
                    n += 1;
                    f(n, Ok(RawRecord::Value(x)))
                })
            }
        }
        other => {
            n += 1;
            f(n, Ok(RawRecord::Value(other)))
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

/// A record made ready for correlation (off the correlating thread when there are several).
enum Prepared {
    /// What correlation needs of an event (the event itself is dropped where it was parsed),
    /// and whether its time came from an ingest-time field.
    Event(PreparedEvent, bool),
    /// Not JSON, or not an event.
    Bad(u64, String),
    /// Its source could not be recognised.
    Undetected(u64),
}

/// Parses a record, detects its source, builds its event, finds its matching rules and reads
/// what its correlations need: the part of a hunt that needs no state. `seq` packs the input
/// file and the record number.
fn prepare(
    rules: &RuleSet,
    source: Option<SourceKind>,
    file: u64,
    line: u64,
    rec: Result<RawRecord, String>,
) -> Prepared {
    let body = match rec.and_then(RawRecord::parse) {
        Ok(v) => v,
        Err(e) => return Prepared::Bad(line, format!("not JSON: {e}")),
    };
    let Some(source) = source.or_else(|| mapping::detect_source(&body)) else {
        return Prepared::Undetected(line);
    };
    match Event::from_value(source, body) {
        Ok(ev) => {
            let matched: Vec<usize> = rules.matching(&ev).collect();
            let seq = (file << LINE_BITS) | line;
            let ingest_time = ev.time_from.fallback().is_some();
            Prepared::Event(ForceState::prepare(rules, seq, &ev, matched), ingest_time)
        }
        Err(e) => Prepared::Bad(line, e.to_string()),
    }
}

/// Records a worker prepares at a time.
const CHUNK: usize = 256;

/// A numbered chunk of records to prepare.
type Job = (u64, Vec<(u64, Result<RawRecord, String>)>);

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
    rules: Arc<RuleSet>,
    threads: usize,
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
            rules: Arc::new(rules),
            threads: 1,
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
        if self.threads <= 1 {
            let (rules, source) = (self.rules.clone(), self.source);
            for_each_raw(path, |line, rec| {
                let p = prepare(&rules, source, idx, line, rec);
                self.take(&name, p, &mut out, on_alert, on_problem);
            })?;
        } else {
            self.parallel(path, idx, &name, &mut out, on_alert, on_problem)?;
        }
        self.state.drain(&self.rules, &self.force, &mut out);
        self.emit(&mut out, on_alert);
        self.stats.late = self.state.late_events();
        self.stats.bad_values = self.state.bad_values();
        Ok(())
    }

    /// Applies one prepared record to the state, in file order.
    fn take(
        &mut self,
        name: &str,
        p: Prepared,
        out: &mut Vec<Alert>,
        on_alert: &mut dyn FnMut(Alert),
        on_problem: &mut dyn FnMut(&str, u64, &str),
    ) {
        self.stats.records += 1;
        match p {
            Prepared::Bad(line, why) => {
                self.stats.bad += 1;
                on_problem(name, line, &why);
            }
            Prepared::Undetected(line) => {
                self.stats.undetected += 1;
                on_problem(name, line, "source not recognised; pass --source");
            }
            Prepared::Event(ev, ingest_time) => {
                self.stats.evaluated += 1;
                if ingest_time {
                    self.stats.ingest_time += 1;
                }
                self.state.apply_prepared(&self.rules, &self.force, ev, out);
                self.emit(out, on_alert);
            }
        }
    }

    /// [`Hunt::file`] with a reader thread, `threads` threads preparing chunks of records and
    /// this thread applying them in file order.
    fn parallel(
        &mut self,
        path: &Path,
        idx: u64,
        name: &str,
        out: &mut Vec<Alert>,
        on_alert: &mut dyn FnMut(Alert),
        on_problem: &mut dyn FnMut(&str, u64, &str),
    ) -> Result<()> {
        let threads = self.threads;
        let (job_tx, job_rx): (SyncSender<Job>, Receiver<Job>) = sync_channel(threads * 4);
        // Shared by the workers only: when they are all gone, the reader's sends fail.
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = sync_channel::<(u64, Vec<Prepared>)>(threads * 4);
        std::thread::scope(|scope| -> Result<()> {
            for _ in 0..threads {
                let (rules, source, job_rx, done_tx) = (
                    self.rules.clone(),
                    self.source,
                    job_rx.clone(),
                    done_tx.clone(),
                );
                scope.spawn(move || {
                    loop {
                        let next = job_rx.lock().expect("job queue").recv();
                        let Ok((n, records)) = next else { return };
                        let ready = records
                            .into_iter()
                            .map(|(line, rec)| prepare(&rules, source, idx, line, rec))
                            .collect();
                        if done_tx.send((n, ready)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop((done_tx, job_rx));
            let reader = scope.spawn(move || -> Result<()> {
                let (mut n, mut chunk) = (0u64, Vec::with_capacity(CHUNK));
                let mut stopped = false;
                for_each_raw(path, |line, rec| {
                    chunk.push((line, rec));
                    if chunk.len() == CHUNK && !stopped {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        stopped = job_tx.send((n, full)).is_err();
                        n += 1;
                    }
                })?;
                if !chunk.is_empty() && !stopped {
                    let _ = job_tx.send((n, chunk));
                }
                Ok(())
            });
            // Chunks come back in any order: apply them in file order.
            let (mut next, mut waiting) = (0u64, BTreeMap::new());
            for (n, ready) in done_rx {
                waiting.insert(n, ready);
                while let Some(ready) = waiting.remove(&next) {
                    for p in ready {
                        self.take(name, p, out, on_alert, on_problem);
                    }
                    next += 1;
                }
            }
            reader.join().expect("the hunt's reader thread panicked")
        })
    }

    fn emit(&mut self, out: &mut Vec<Alert>, on_alert: &mut dyn FnMut(Alert)) {
        for mut a in out.drain(..) {
            self.locate(&mut a);
            self.stats.alerts += 1;
            on_alert(a);
        }
    }

    /// Prepares records on `threads` threads (1: all on the calling thread).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
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
    fn threads_give_the_same_alerts_in_the_same_order() {
        use crate::synth::{Scenario, generate};
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (i, force) in ["kent", "essex", "durham"].iter().enumerate() {
            let s = Scenario {
                force: ForceId::new(force).unwrap(),
                users: 40,
                normal: 2_000,
                span_ms: 3_600_000,
                spray: i != 1,
                brute_force: i != 0,
                legacy: 2,
            };
            let evs = generate(&s, i as u64, 1_793_606_400_000);
            let mut text: String = evs.iter().map(|v| format!("{v}\n")).collect();
            // Bad records among the good: counted and reported in the same places.
            text.push_str("{not json\n{\"time\": \"2026-11-02T09:00:00Z\"}\n");
            let p = dir.path().join(format!("{force}.jsonl"));
            std::fs::write(&p, text).unwrap();
            files.push(p);
        }
        let array = dir.path().join("array.json");
        let evs = generate(
            &Scenario {
                force: ForceId::new("kent").unwrap(),
                users: 10,
                normal: 300,
                span_ms: 600_000,
                spray: true,
                brute_force: false,
                legacy: 0,
            },
            9,
            1_793_610_000_000,
        );
        std::fs::write(&array, serde_json::to_vec(&evs).unwrap()).unwrap();
        files.push(array);
        let rules_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules/identity");
        let run = |threads: usize| {
            let (rules, _) = crate::rules::load(std::slice::from_ref(&rules_dir)).unwrap();
            let mut h = Hunt::new(rules, ForceId::new("hunt").unwrap(), None).with_threads(threads);
            let (mut alerts, mut problems) = (Vec::new(), Vec::new());
            for f in &files {
                h.file(
                    f,
                    &mut |a| alerts.push(serde_json::to_string(&a).unwrap()),
                    &mut |file, line, p| problems.push(format!("{file}:{line}: {p}")),
                )
                .unwrap();
            }
            (alerts, problems, serde_json::to_string(&h.stats).unwrap())
        };
        let one = run(1);
        assert!(one.0.len() >= 5, "{:?}", one.0);
        assert_eq!(one.1.len(), 6, "{:?}", one.1);
        for threads in [2, 3, 8] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
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
