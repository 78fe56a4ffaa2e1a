//! SigmaHQ regression data: every listed rule matches its positive sample, read with the same
//! file reader as `nmc hunt` (some samples hold several JSON objects run together) and routed by
//! the event's own logsource (channel and event id).

use std::path::Path;

use nmc_node::hunt::for_each_record;
use nmc_shared::event::Event;
use nmc_shared::mapping::detect_source;
use nmc_shared::sigma::{RuleSet, parse_rules};
use serde_json::Value;

fn data() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/sigma"))
}

#[test]
fn every_regression_rule_matches_its_sample() {
    let manifest = std::fs::read_to_string(data().join("MANIFEST.jsonl")).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in manifest.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let rule_path = data().join(entry["rule_path"].as_str().unwrap());
        let text = std::fs::read_to_string(&rule_path).unwrap();
        let docs: Vec<_> = parse_rules(&rule_path.display().to_string(), &text)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", rule_path.display()));
        let (set, errors) = RuleSet::compile(docs);
        assert!(errors.is_empty(), "{}: {errors:?}", rule_path.display());
        let id = entry["rule_id"].as_str().unwrap();
        let rule = set
            .rules()
            .iter()
            .position(|r| r.meta.id == id)
            .expect("rule id in file");

        let mut matched = false;
        let mut events = 0;
        for_each_record(
            &data().join(entry["sample_json"].as_str().unwrap()),
            |_, rec| {
                let body = rec.expect("sample is JSON");
                let source = detect_source(&body).expect("sample is a Windows event");
                let ev = Event::from_value(source, body).expect("sample has an event time");
                events += 1;
                matched |= set.matching(&ev).any(|i| i == rule);
            },
        )
        .unwrap();
        assert!(events > 0);
        if !matched {
            failures.push(format!("{id} {} ({events} events)", entry["rule_title"]));
        }
        checked += 1;
    }
    assert_eq!(checked, 202);
    assert!(
        failures.is_empty(),
        "{} rules did not match their sample:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The literal prefilter is exact: over every sample and every regression rule together, it
/// selects exactly the rules that exhaustive evaluation selects.
#[test]
fn prefilter_matches_exhaustive_evaluation() {
    let (set, errors) = nmc_node::rules::load(&[
        data().join("rules"),
        data().join("rules-emerging-threats"),
        data().join("rules-threat-hunting"),
    ])
    .unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let mut events = 0;
    let mut matches = 0;
    for f in nmc_node::hunt::input_files(&[data().join("regression_data")]).unwrap() {
        for_each_record(&f, |_, rec| {
            let body = rec.unwrap();
            let ev = Event::from_value(detect_source(&body).unwrap(), body).unwrap();
            let fast: Vec<usize> = set.matching(&ev).collect();
            let slow: Vec<usize> = set.matching_exhaustive(&ev).collect();
            assert_eq!(fast, slow, "{}", f.display());
            events += 1;
            matches += fast.len();
        })
        .unwrap();
    }
    assert!(
        events > 200 && matches > 200,
        "{events} events, {matches} matches"
    );
}
