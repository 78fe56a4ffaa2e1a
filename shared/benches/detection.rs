//! Detection throughput on realistic events: the SigmaHQ regression samples (Sysmon, evtx_dump
//! JSON) and the Stratus Red Team CloudTrail records, against (a) 100 rules and (b) every SigmaHQ
//! rule, with events pre-parsed, and (c) including JSON parsing. JSON parsing alone is measured
//! in the same run as the baseline. `cloud_parse`: the CloudTrail records parsed whole and as the
//! cloud rules read them.
//!
//! Rules come from `$NMC_SIGMA_DIR` (default: `../shared/datasets/sigma` beside the repository,
//! else the copy in `tests/data/sigma`). Run: `cargo bench -p nmc-shared --bench detection`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nmc_shared::event::Event;
use nmc_shared::mapping::detect_source;
use nmc_shared::sigma::{Placeholders, RuleDoc, RuleSet, parse_rules};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sigma_dir() -> PathBuf {
    if let Ok(d) = std::env::var("NMC_SIGMA_DIR") {
        return d.into();
    }
    let shared = repo().join("../shared/datasets/sigma");
    if shared.is_dir() {
        shared
    } else {
        repo().join("tests/data/sigma")
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if !p.ends_with("regression_data") {
                yaml_files(&p, out);
            }
        } else if p.extension().is_some_and(|e| e == "yml") {
            out.push(p);
        }
    }
}

fn docs(dir: &Path) -> Vec<RuleDoc> {
    let mut files = Vec::new();
    yaml_files(dir, &mut files);
    files
        .iter()
        .flat_map(|f| {
            parse_rules(
                &f.display().to_string(),
                &std::fs::read_to_string(f).unwrap(),
            )
        })
        .filter_map(Result::ok)
        .collect()
}

fn placeholders() -> Placeholders {
    toml_lite(&std::fs::read_to_string(repo().join("deploy/placeholders.example.toml")).unwrap())
}

/// Reads `name = ["a", "b"]` lines (enough for the example file; keeps the bench dependency-free).
fn toml_lite(text: &str) -> Placeholders {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            let vals: Vec<String> = serde_json::from_str(v.trim()).unwrap();
            (k.trim().trim_matches('"').to_owned(), vals)
        })
        .collect()
}

/// Raw event payloads (one JSON object each) with their source.
fn raw_events() -> Vec<(nmc_shared::SourceKind, Vec<u8>)> {
    let mut out = Vec::new();
    let mut push_value = |v: Value| {
        let items = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        for item in items {
            let source = detect_source(&item).expect("known shape");
            out.push((source, serde_json::to_vec(&item).unwrap()));
        }
    };
    let data = repo().join("tests/data");
    let mut files = Vec::new();
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else if p.extension().is_some_and(|e| e == "json") {
                out.push(p)
            }
        }
    }
    walk(&data.join("sigma/regression_data"), &mut files);
    walk(&data.join("stratus"), &mut files);
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for v in serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>() {
            push_value(v.unwrap());
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let raw = raw_events();
    let events: Vec<Event> = raw
        .iter()
        .map(|(s, b)| Event::parse(*s, b, usize::MAX).unwrap())
        .collect();
    let all_docs = docs(&sigma_dir());
    let (all, errors) = RuleSet::compile_with(all_docs.clone(), &placeholders());
    assert!(errors.is_empty(), "{errors:?}");
    // 100 rules: the regression-tested ones first (they match these events), then AWS rules.
    // (The Azure and M365 rules, copied later for another test, stay out of it.)
    let regression = docs(&repo().join("tests/data/sigma/rules"))
        .into_iter()
        .filter(|d| !d.origin.contains("/cloud/azure/") && !d.origin.contains("/cloud/m365/"))
        .chain(docs(
            &repo().join("tests/data/sigma/rules-emerging-threats"),
        ));
    let (hundred, _) = RuleSet::compile(regression.take(100).collect());
    eprintln!(
        "{} events ({} bytes avg), {} rules in all, {} in the small set",
        events.len(),
        raw.iter().map(|r| r.1.len()).sum::<usize>() / raw.len(),
        all.len(),
        hundred.len()
    );

    // The prefilter must be exact over the whole corpus, not only the regression rules.
    let mut matched = 0;
    for e in &events {
        let fast: Vec<usize> = all.matching(e).collect();
        assert_eq!(fast, all.matching_exhaustive(e).collect::<Vec<_>>());
        matched += fast.len();
    }
    eprintln!("{matched} rule matches over the events with all rules (prefilter verified exact)");
    let (routed, cands) = events
        .iter()
        .map(|e| all.selectivity(e))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    eprintln!(
        "per event: {:.0} rules routed, {:.1} candidates after the prefilter",
        routed as f64 / events.len() as f64,
        cands as f64 / events.len() as f64
    );

    let (lits, occ) = events
        .iter()
        .map(|e| all.prefilter_stats(e))
        .fold((0, 0), |a, b| (a.0.max(b.0), a.1 + b.1));
    eprintln!(
        "prefilter: up to {lits} literals per class, {:.1} occurrences per event",
        occ as f64 / events.len() as f64
    );
    if std::env::var("NMC_BENCH_DIAG").is_ok() {
        let mut counts = std::collections::BTreeMap::new();
        for e in &events {
            let matched: Vec<usize> = all.matching(e).collect();
            for i in all.candidates(e) {
                if !matched.contains(&i) {
                    *counts.entry(all.rules()[i].meta.title.clone()).or_insert(0) += 1;
                }
            }
        }
        let mut cost: std::collections::BTreeMap<String, std::time::Duration> = Default::default();
        for _ in 0..20 {
            for e in &events {
                for i in all.candidates(e) {
                    let t = std::time::Instant::now();
                    black_box(all.rules()[i].matches(e));
                    *cost.entry(all.rules()[i].meta.title.clone()).or_default() += t.elapsed();
                }
            }
        }
        let mut c: Vec<_> = cost.into_iter().collect();
        c.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        for (t, d) in c.iter().take(15) {
            eprintln!(
                "cost: {:>8.1} us/event {t}",
                d.as_secs_f64() * 1e6 / 20.0 / events.len() as f64
            );
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        for (t, n) in v.iter().take(25) {
            eprintln!("wasted candidate: {n} {t}");
        }
    }
    let mut g = c.benchmark_group("detection");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("parse_only_baseline", |b| {
        b.iter(|| {
            for (s, bytes) in &raw {
                black_box(Event::parse(*s, bytes, usize::MAX).unwrap());
            }
        })
    });
    // The parse as it was before the strict reader (no duplicate-key or depth check): the
    // baseline of `parse_only_baseline`'s cost in the same run.
    g.bench_function("parse_lax_serde_value", |b| {
        b.iter(|| {
            for (s, bytes) in &raw {
                let v: Value = serde_json::from_slice(bytes).unwrap();
                black_box(Event::from_value(*s, v).unwrap());
            }
        })
    });
    g.bench_function("detect_100_rules", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| hundred.matching(e).count())
                .sum::<usize>()
        })
    });
    g.bench_function("prefilter_only_all_rules", |b| {
        b.iter(|| events.iter().map(|e| all.selectivity(e).1).sum::<usize>())
    });
    g.bench_function("detect_all_rules", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| all.matching(e).count())
                .sum::<usize>()
        })
    });
    g.bench_function("parse_and_detect_all_rules", |b| {
        b.iter(|| {
            raw.iter()
                .map(|(s, bytes)| {
                    all.matching(&Event::parse(*s, bytes, usize::MAX).unwrap())
                        .count()
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

/// Parsing only what the rules read (`RuleSet::parse_event`, as a node does) against a whole
/// parse, in the same run: the Stratus Red Team CloudTrail records, with the identity pack and
/// SigmaHQ's cloud rules.
fn cloud_parse(c: &mut Criterion) {
    let raw: Vec<(nmc_shared::SourceKind, Vec<u8>)> = raw_events()
        .into_iter()
        .filter(|(s, _)| *s == nmc_shared::SourceKind::AwsCloudtrail)
        .collect();
    let docs: Vec<RuleDoc> = docs(&repo().join("deploy/rules/identity"))
        .into_iter()
        .chain(docs(&sigma_dir().join("rules/cloud")))
        .collect();
    let (rules, errors) = RuleSet::compile(docs);
    assert!(errors.is_empty(), "{errors:?}");
    for (s, bytes) in &raw {
        let whole = Event::parse(*s, bytes, usize::MAX).unwrap();
        let kept = rules.parse_event(*s, bytes, usize::MAX).unwrap();
        assert_eq!(
            rules.matching(&whole).collect::<Vec<_>>(),
            rules.matching(&kept).collect::<Vec<_>>()
        );
    }
    let mut g = c.benchmark_group("cloud_parse");
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("parse_whole_baseline", |b| {
        b.iter(|| {
            for (s, bytes) in &raw {
                black_box(Event::parse(*s, bytes, usize::MAX).unwrap());
            }
        })
    });
    // The floor of a kept parse: nothing kept, every part read and checked.
    let nothing = nmc_shared::json::kept::KeepTree::new();
    g.bench_function("parse_keeping_nothing_floor", |b| {
        b.iter(|| {
            for (_, bytes) in &raw {
                black_box(nmc_shared::json::kept::parse_kept(bytes, &nothing).unwrap());
            }
        })
    });
    g.bench_function("parse_as_rules_read", |b| {
        b.iter(|| {
            for (s, bytes) in &raw {
                black_box(rules.parse_event(*s, bytes, usize::MAX).unwrap());
            }
        })
    });
    g.bench_function("parse_whole_and_detect", |b| {
        b.iter(|| {
            raw.iter()
                .map(|(s, bytes)| {
                    rules
                        .matching(&Event::parse(*s, bytes, usize::MAX).unwrap())
                        .count()
                })
                .sum::<usize>()
        })
    });
    g.bench_function("parse_as_read_and_detect", |b| {
        b.iter(|| {
            raw.iter()
                .map(|(s, bytes)| {
                    rules
                        .matching(&rules.parse_event(*s, bytes, usize::MAX).unwrap())
                        .count()
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench, cloud_parse
}
criterion_main!(benches);
