//! Parsing only what the rules read (`RuleSet::parse_event`, as a node does: the rule set's
//! `ReadPlan`, and the whole event when a keyword search may match it) changes nothing the rules
//! see. With the identity pack and SigmaHQ's AWS, Azure and
//! Microsoft 365 rules, over real CloudTrail records (Stratus Red Team detonations), the load
//! generator's mix of Entra sign-ins, M365 audit and CloudTrail (with its attacks), and variants
//! of each in the other shapes a field is read in (keys in another case, nested objects
//! flattened into dotted keys, the record under `properties`, broken payloads):
//! - every payload is refused, or accepted with the same time and class, as by a whole parse;
//! - every field the rules of its logsource and the correlations read looks up the same value;
//! - the same rules match, and a force's state raises the same alerts, byte for byte;
//! - and the kept events are much smaller than the whole ones (the point of it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nmc_node::hunt::{for_each_record, input_files};
use nmc_node::synth::{self, Mix, Rng, Scenario};
use nmc_shared::correlate::ForceState;
use nmc_shared::event::Event;
use nmc_shared::mapping::{CLASSES, class_of_source};
use nmc_shared::sigma::parse::RuleBody;
use nmc_shared::sigma::{RuleSet, referenced_fields};
use nmc_shared::{ForceId, SourceKind};
use serde_json::{Map, Value};

const MAX_BYTES: usize = 1 << 20;
/// 2026-11-01T00:00:00Z.
const START: i64 = 1_793_491_200_000;

fn repo(p: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(p)
}

/// The rules, and per source the fields they read of its events: the fields of the detection
/// rules of its logsource (and of their filters), and the correlations' group-by, alias, counted
/// and coordinate fields.
fn rules() -> (RuleSet, BTreeMap<SourceKind, Vec<String>>) {
    let dirs = [
        repo("deploy/rules/identity"),
        repo("tests/data/sigma/rules/cloud"),
    ];
    let files = nmc_node::rules::read_texts(&dirs).unwrap();
    let (docs, errors) = nmc_node::rules::parse_texts(&files);
    assert!(errors.is_empty(), "{errors:?}");
    let (set, errors) = nmc_node::rules::compile_texts(&files, &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(set.rules().len() > 200, "{} rules", set.rules().len());
    let mut correlated: Vec<String> = Vec::new();
    for c in set.correlations() {
        correlated.extend(c.group_fields.iter().flatten().cloned());
        correlated.extend(c.field.clone());
        correlated.extend(c.params.detector.latitude.clone());
        correlated.extend(c.params.detector.longitude.clone());
    }
    let mut per_source = BTreeMap::new();
    for source in synth::MIXABLE {
        let class = &CLASSES.all[class_of_source(source).unwrap()];
        let mut fields = correlated.clone();
        for d in &docs {
            if let RuleBody::Detection { logsource: l, .. } = &d.body
                && class.accepts(
                    l.product.as_deref(),
                    l.service.as_deref(),
                    l.category.as_deref(),
                )
            {
                fields.extend(referenced_fields(&docs, &d.id));
            }
        }
        fields.sort();
        fields.dedup();
        assert!(fields.len() > 10, "{source}: {fields:?}");
        per_source.insert(source, fields);
    }
    (set, per_source)
}

/// The records: Stratus Red Team's CloudTrail, and two forces of the load generator's mix.
fn records() -> Vec<(SourceKind, Value)> {
    let mut out = Vec::new();
    for f in input_files(&[repo("tests/data/stratus")]).unwrap() {
        for_each_record(&f, |_, r| {
            out.push((SourceKind::AwsCloudtrail, r.unwrap()));
        })
        .unwrap();
    }
    let mix: Mix = "entra_signin=50,m365_audit=30,aws_cloudtrail=20"
        .parse()
        .unwrap();
    for (seed, force) in ["kent", "cumbria"].into_iter().enumerate() {
        let s = Scenario {
            force: ForceId::new(force).unwrap(),
            users: 300,
            normal: 6_000,
            span_ms: 3_600_000,
            spray: true,
            brute_force: true,
            legacy: 3,
        };
        out.extend(
            synth::mixed(&s, &mix, seed as u64, START)
                .into_iter()
                .map(|(_, kind, v)| (kind, v)),
        );
    }
    out
}

/// `v` in another shape a field is read in (0: as it is).
fn variant(v: &Value, shape: u64, rng: &mut Rng) -> Value {
    match shape {
        1 => recase(v, rng),
        2 => flatten(v),
        3 => {
            // Under `properties`, time fields included (read there too, or missing: the same).
            let mut o = Map::new();
            o.insert("properties".into(), v.clone());
            Value::Object(o)
        }
        _ => v.clone(),
    }
}

/// Keys in another case, at random (never two keys the same).
fn recase(v: &Value, rng: &mut Rng) -> Value {
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, x) in o {
                let mut key = match rng.below(4) {
                    0 => k.to_ascii_uppercase(),
                    1 => k.to_ascii_lowercase(),
                    _ => k.clone(),
                };
                if out.contains_key(&key) || (key != *k && o.contains_key(&key)) {
                    key.clone_from(k);
                }
                out.insert(key, recase(x, rng));
            }
            Value::Object(out)
        }
        Value::Array(xs) => Value::Array(xs.iter().map(|x| recase(x, rng)).collect()),
        other => other.clone(),
    }
}

/// Nested objects of the top level flattened into dotted keys (`a.b`), as some collectors do.
fn flatten(v: &Value) -> Value {
    fn walk(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
        match v {
            Value::Object(o) if !o.is_empty() => {
                for (k, x) in o {
                    walk(&format!("{prefix}.{k}"), x, out);
                }
            }
            other => {
                out.entry(prefix.to_owned())
                    .or_insert_with(|| other.clone());
            }
        }
    }
    let Value::Object(o) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, x) in o {
        match x {
            Value::Object(inner) if !inner.is_empty() => {
                for (k2, y) in inner {
                    walk(&format!("{k}.{k2}"), y, &mut out);
                }
            }
            other => {
                out.entry(k.clone()).or_insert_with(|| other.clone());
            }
        }
    }
    Value::Object(out)
}

/// A payload broken in a part no rule reads, in one of the ways a node refuses.
fn broken(bytes: &[u8], how: u64) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let body = text.trim_end().strip_suffix('}').unwrap_or(&text);
    match how {
        0 => format!(r#"{body}, "zz_noise": {{"a": 1, "a": 2}}}}"#).into_bytes(),
        1 => format!(
            r#"{body}, "zz_noise": {}1{}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        )
        .into_bytes(),
        2 => [body.as_bytes(), b", \"zz_noise\": \"\xff\"}"].concat(),
        3 => format!(r#"{body}, "zz_noise": 1e999}}"#).into_bytes(),
        _ => format!(r#"{body}, "zz_noise": [1, 2,]}}"#).into_bytes(),
    }
}

#[test]
fn parsing_only_what_the_rules_read_changes_nothing_they_see() {
    let (rules, fields) = rules();
    let force = ForceId::new("kent").unwrap();
    let mut rng = Rng::new(7);
    let (mut whole_state, mut kept_state) = (ForceState::new(), ForceState::new());
    let (mut whole_alerts, mut kept_alerts) = (Vec::new(), Vec::new());
    let (mut whole_bytes, mut kept_bytes) = (0usize, 0usize);
    let (mut events, mut matched, mut refused, mut seq) = (0usize, 0usize, 0usize, 0u64);
    // M365 records parsed whole: a keyword search of the identity pack (forwarding inbox rules)
    // may match them.
    let mut searched = 0;
    let forward_rule = (rules.rules().iter())
        .position(|r| r.name.as_deref() == Some("m365_inbox_forward_rule"))
        .unwrap();
    let mut forwarding = 0;
    for (n, (source, record)) in records().iter().enumerate() {
        let v = variant(record, n as u64 % 4, &mut rng);
        let mut payload = serde_json::to_vec(&v).unwrap();
        if n % 97 == 0 {
            payload = broken(&payload, n as u64 / 97 % 5);
        }
        let keep = rules.reads().keep(*source);
        assert!(!keep.is_everything(), "{source} is read by name");
        let whole = Event::parse(*source, &payload, MAX_BYTES);
        let kept = rules.parse_event(*source, &payload, MAX_BYTES);
        let (whole, kept) = match (whole, kept) {
            (Ok(w), Ok(k)) => (w, k),
            (Err(w), Err(k)) => {
                assert_eq!(w, k, "{}", String::from_utf8_lossy(&payload));
                refused += 1;
                continue;
            }
            (w, k) => panic!(
                "whole {:?} but kept {:?}: {}",
                w.err(),
                k.err(),
                String::from_utf8_lossy(&payload)
            ),
        };
        assert_eq!(
            (whole.time_ms, whole.time_from, whole.class),
            (kept.time_ms, kept.time_from, kept.class)
        );
        for f in &fields[source] {
            assert_eq!(whole.field(f), kept.field(f), "field {f} of {}", whole.body);
        }
        let hits: Vec<usize> = rules.matching(&whole).collect();
        assert_eq!(
            hits,
            rules.matching(&kept).collect::<Vec<_>>(),
            "{}",
            whole.body
        );
        matched += usize::from(!hits.is_empty());
        forwarding += usize::from(hits.contains(&forward_rule));
        seq += 1;
        whole_state.apply(&rules, &force, seq, &whole, &mut whole_alerts);
        kept_state.apply(&rules, &force, seq, &kept, &mut kept_alerts);
        whole_bytes += serde_json::to_vec(&whole.body).unwrap().len();
        kept_bytes += serde_json::to_vec(&kept.body).unwrap().len();
        searched += usize::from(kept.body == whole.body && *source == SourceKind::M365Audit);
        events += 1;
    }
    whole_state.drain(&rules, &force, &mut whole_alerts);
    kept_state.drain(&rules, &force, &mut kept_alerts);
    let json = |alerts: &[nmc_shared::Alert]| -> Vec<String> {
        alerts
            .iter()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect()
    };
    assert_eq!(json(&whole_alerts), json(&kept_alerts));
    eprintln!(
        "{events} events ({refused} refused), {matched} matched, {} alerts, {searched} M365 \
         records searched whole; kept {kept_bytes} of {whole_bytes} bytes",
        whole_alerts.len()
    );
    assert!(
        events > 5_000 && refused > 100,
        "{events} events, {refused} refused"
    );
    assert!(matched > 100, "only {matched} events matched a rule");
    assert!(
        searched > 0 && forwarding > 0,
        "{searched} M365 records searched whole, {forwarding} matched the keyword rule"
    );
    let correlated = whole_alerts.iter().filter(|a| !a.group.is_empty()).count();
    assert!(correlated > 0, "no correlation fired");
    assert!(
        kept_bytes * 2 < whole_bytes,
        "kept {kept_bytes} of {whole_bytes} bytes"
    );
}
