//! Windows Security 4688 as Sigma `process_creation`: rules written for Sysmon event 1 fire on
//! 4688 events, in the evtx_dump shape (`Event.EventData.*`) and the flattened shape (fields at
//! the top level), through the whole matching path (literal index, walked fields) and the
//! exhaustive one.
//!
//! 4688 writes the integrity level as a SID in `MandatoryLabel` (`S-1-16-12288`); Sysmon writes a
//! name in `IntegrityLevel` (`High`). A 4688 event's `IntegrityLevel` holds both forms, so rules
//! naming either match, and a negation excludes both.

use nmc_shared::SourceKind;
use nmc_shared::event::Event;
use nmc_shared::sigma::{RuleSet, parse_rules};
use serde_json::{Value, json};

/// Rules by title, each a Sysmon-style process-creation rule.
const RULES: &str = r"
title: high
id: high
logsource: {product: windows, category: process_creation}
detection: {s: {IntegrityLevel: High}, condition: s}
---
title: system
id: system
logsource: {product: windows, category: process_creation}
detection: {s: {IntegrityLevel: System}, condition: s}
---
title: system sid
id: system-sid
logsource: {product: windows, category: process_creation}
detection: {s: {IntegrityLevel: 'S-1-16-16384'}, condition: s}
---
title: elevated cmd
id: elevated-cmd
logsource: {product: windows, category: process_creation}
detection:
    s:
        Image|endswith: '\cmd.exe'
        ParentImage|endswith: '\explorer.exe'
        IntegrityLevel: [High, System, 'S-1-16-12288', 'S-1-16-16384']
    condition: s
---
title: not medium
id: not-medium
logsource: {product: windows, category: process_creation}
detection:
    s: {Image|endswith: '\cmd.exe'}
    medium: {IntegrityLevel: [Medium, 'S-1-16-8192']}
    condition: s and not medium
---
title: many levels
id: many-levels
logsource: {product: windows, category: process_creation}
detection:
    s:
        IntegrityLevel: [High, Elevated, Admin, Root, Full, Top, Max, Super, Ultra]
    condition: s
";

fn rules() -> RuleSet {
    let docs = parse_rules("4688.yml", RULES)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (rules, errors) = RuleSet::compile(docs);
    assert!(errors.is_empty(), "{errors:?}");
    rules
}

/// A 4688 event of `cmd.exe` started by Explorer with mandatory label `label`, in the evtx_dump
/// shape and in the flattened shape.
fn events(label: &str) -> [Event; 2] {
    let data = json!({
        "NewProcessName": "C:\\Windows\\System32\\cmd.exe",
        "ParentProcessName": "C:\\Windows\\explorer.exe",
        "CommandLine": "cmd.exe /c whoami",
        "MandatoryLabel": label,
    });
    let dumped = json!({"Event": {
        "System": {"EventID": 4688, "Channel": "Security"},
        "EventData": data,
    }});
    let mut flat = json!({"EventID": 4688, "Channel": "Security"});
    flat.as_object_mut()
        .unwrap()
        .extend(data.as_object().unwrap().clone());
    [dumped, flat].map(|body| Event::with_time(SourceKind::WindowsSecurity, 0, body))
}

/// Titles of the rules matching `ev`, checking the literal index against exhaustive evaluation.
fn fired(rules: &RuleSet, ev: &Event) -> Vec<String> {
    let fast: Vec<usize> = rules.matching(ev).collect();
    assert_eq!(
        fast,
        rules.matching_exhaustive(ev).collect::<Vec<_>>(),
        "the literal index sees what exhaustive evaluation sees in {}",
        ev.body
    );
    fast.into_iter()
        .map(|i| rules.rules()[i].meta.title.clone())
        .collect()
}

#[test]
fn high_label_fires_rules_on_high() {
    let rules = rules();
    for ev in events("S-1-16-12288") {
        assert!(
            ev.class()
                .accepts(Some("windows"), None, Some("process_creation"))
        );
        assert_eq!(
            fired(&rules, &ev),
            ["high", "elevated cmd", "not medium", "many levels"],
            "{}",
            ev.body
        );
    }
}

#[test]
fn system_label_fires_rules_on_system_and_its_sid() {
    let rules = rules();
    for ev in events("S-1-16-16384") {
        assert_eq!(
            fired(&rules, &ev),
            ["system", "system sid", "elevated cmd", "not medium"],
            "{}",
            ev.body
        );
    }
}

#[test]
fn medium_label_is_excluded_by_either_form() {
    let rules = rules();
    for ev in events("S-1-16-8192") {
        assert!(fired(&rules, &ev).is_empty(), "{}", ev.body);
    }
}

#[test]
fn integrity_level_reads_as_name_and_sid() {
    let [dumped, flat] = events("S-1-16-12288");
    for ev in [&dumped, &flat] {
        assert_eq!(
            ev.field("IntegrityLevel"),
            Some(&json!(["High", "S-1-16-12288"]))
        );
        assert_eq!(ev.field("MandatoryLabel"), Some(&json!("S-1-16-12288")));
        assert_eq!(
            ev.field("Image"),
            Some(&json!("C:\\Windows\\System32\\cmd.exe"))
        );
    }
    // A label that is not a known SID is read as it is.
    let [odd, _] = events("S-1-16-8448");
    assert_eq!(odd.field("IntegrityLevel"), Some(&json!("S-1-16-8448")));
}

#[test]
fn sysmon_integrity_level_is_unchanged() {
    let body: Value = json!({"Event": {
        "System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational"},
        "EventData": {"Image": "C:\\Windows\\System32\\cmd.exe", "IntegrityLevel": "System"},
    }});
    let ev = Event::with_time(SourceKind::Sysmon, 0, body);
    assert_eq!(ev.field("IntegrityLevel"), Some(&json!("System")));
    assert_eq!(fired(&rules(), &ev), ["system", "not medium"]);
}
