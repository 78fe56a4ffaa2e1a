//! The bodies of the fuzz targets (`shared/fuzz`, cargo-fuzz), kept here so that ordinary tests
//! run the same code over every saved input (`shared/tests/fuzz_regressions.rs`). Not an API.
//!
//! Each function takes arbitrary bytes and returns: whatever they hold, it must not panic, hang or
//! exhaust memory. Where two paths must agree (the indexed matcher and the exhaustive one; state
//! written by [`ForceState::take_changes`] and [`ForceState::load`]), the function asserts it, so
//! the fuzzer finds wrong answers as well as crashes.
//!
//! - [`event`]: a raw payload of a source, as a node reads it from `nmc.events.<force>.<source>`
//!   (the first byte picks the source): [`Event::parse`] (and [`RuleSet::parse_event`], which
//!   must agree), the logsource class and the field mapping, the matcher, and one correlation
//!   step;
//! - [`rules`]: a Sigma YAML file: [`parse_rules`], [`RuleSet::compile_with`], the compiled rules
//!   evaluated on sample events, the text as a condition expression;
//! - [`state`]: persisted force state: a [`Checkpoint`] (first byte even) or state entries
//!   (first byte odd) loaded by [`ForceState::load`], then used and persisted again.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::correlate::ForceState;
use crate::event::Event;
use crate::force::ForceId;
use crate::mapping;
use crate::sigma::{Placeholders, RuleDoc, RuleSet, parse_rules};
use crate::source::SourceKind;
use crate::state::Checkpoint;
use crate::time::{MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS};

/// The node's default `max_event_bytes`.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Allowed lateness of the correlation states the targets drive (the reorder buffer is used).
const LATENESS_MS: i64 = 60_000;

/// 2026-09-21T10:40:00Z: the time of the sample events.
const T0: i64 = 1_790_000_000_000;

/// Detection rules over every source, with most modifiers, for [`event`].
pub const DETECTION_RULES: &str = r#"
title: sysmon process
id: f_proc
logsource: {product: windows, category: process_creation}
detection:
  sel:
    Image|endswith: ['\powershell.exe', '\cmd.exe']
    CommandLine|contains|all: [' -enc', 'bypass']
  b64:
    CommandLine|base64offset|contains: 'IEX'
  dash:
    CommandLine|windash|contains: '-nop'
  filter:
    ParentImage|startswith: 'C:\Windows\System32\'
    IntegrityLevel: System
  condition: (sel or b64 or dash) and not filter
---
title: security logon
id: f_logon
logsource: {product: windows, service: security}
detection:
  sel:
    EventID: [4624, 4625]
    LogonType|gte: 3
    IpAddress|cidr: ['10.0.0.0/8', 'fe80::/10']
  name:
    TargetUserName|re: '^adm(in)?[0-9]*$'
    TargetUserName|re|i: 'SVC_'
  condition: sel and 1 of name*
---
title: keywords
id: f_kw
logsource: {product: windows, service: security}
detection:
  keywords: ['mimikatz', 'sekurlsa::']
  condition: keywords
---
title: sign-in
id: f_signin
logsource: {product: azure, service: signinlogs}
detection:
  fail: {ResultType: [50126, 50053]}
  where: {Location|contains: 'R', IPAddress|cidr: '192.168.0.0/16'}
  ua: {userAgent|exists: true, userAgent|cased|contains: 'Python'}
  condition: fail or all of where or ua
---
title: audit
id: f_audit
logsource: {product: azure, service: auditlogs}
detection:
  sel: {OperationName|startswith: 'Add ', Result: success}
  empty: {TargetResources: null}
  condition: sel and not empty
---
title: activity
id: f_activity
logsource: {product: azure, service: activitylogs}
detection:
  sel: {OperationNameValue|endswith: '/delete', ResultType|contains: 'Succ'}
  condition: sel
---
title: m365
id: f_m365
logsource: {product: m365, service: exchange}
detection:
  sel: {Operation: [New-InboxRule, Set-InboxRule], Parameters|contains: 'ForwardTo'}
  condition: sel
---
title: cloudtrail
id: f_aws
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventSource: cloudtrail.amazonaws.com, eventName: [StopLogging, DeleteTrail]}
  same: {userIdentity.arn|fieldref: userIdentity.principalId}
  err: {errorCode|exists: false}
  condition: (sel and err) or same
---
title: auditd
id: f_auditd
logsource: {product: linux, service: auditd}
detection:
  sel: {type: EXECVE, a0|contains: [nc, ncat], a1|utf16le|base64offset|contains: '-e'}
  num: {uid|lt: 1000, gid|gt: 0}
  condition: sel or num
---
title: syslog
id: f_syslog
logsource: {product: linux, service: syslog}
detection:
  keywords: ['Accepted password', 'session opened for user root']
  condition: keywords
---
title: firewall
id: f_fw
logsource: {category: firewall}
detection:
  sel: {dst_port: [22, 3389, 445], action|re: '(?i)^(allow|accept)'}
  src: {src_ip|cidr: '0.0.0.0/0'}
  condition: sel and src
"#;

/// Correlations of every kind over sign-ins and CloudTrail, for [`event`], [`rules`] and [`state`].
pub const CORRELATION_RULES: &str = r#"
title: failed
id: d_fail
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 50126}, condition: s}
---
title: success
id: d_ok
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 0}, condition: s}
---
title: any aws
id: d_aws
logsource: {product: aws, service: cloudtrail}
detection: {s: {eventName|exists: true}, condition: s}
---
title: count
id: c_count
correlation: {type: event_count, rules: d_fail, group-by: [user], timespan: 10m, condition: {gte: 3}}
---
title: distinct users
id: c_vcount
correlation: {type: value_count, rules: d_fail, group-by: [ip], timespan: 30m, condition: {gte: 3, field: user}}
---
title: sum
id: c_sum
correlation: {type: value_sum, rules: d_ok, group-by: [user], timespan: 1h, condition: {gte: 2000, field: bytes}}
---
title: avg
id: c_avg
correlation: {type: value_avg, rules: d_ok, group-by: [user], timespan: 1h, condition: {gte: 700, field: bytes}}
---
title: rare app
id: c_pct
correlation: {type: value_percentile, rules: d_ok, group-by: [user], timespan: 1h, condition: {lte: 34, field: app}}
---
title: both
id: c_temporal
correlation: {type: temporal, rules: [d_fail, d_ok], group-by: [user], timespan: 10m}
---
title: count then success
id: c_ordered
correlation: {type: temporal_ordered, rules: [c_count, d_ok], group-by: [user], timespan: 20m, generate: true}
---
title: new country
id: c_new
correlation: {type: new_term, rules: d_ok, group-by: [user], field: country, learning: 1h}
---
title: travel
id: c_travel
correlation: {type: impossible_travel, rules: d_ok, group-by: [user], latitude: lat, longitude: lon}
---
title: aws silent
id: c_silent
correlation: {type: silent_feed, rules: d_aws, timespan: 30m}
---
title: sign-ins drop
id: c_rate
correlation: {type: silent_feed, rules: d_ok, timespan: 10m, below: 30%, baseline: 1h}
"#;

fn compile(name: &str, text: &str) -> RuleSet {
    let docs: Vec<RuleDoc> = parse_rules(name, text)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let (set, errors) = RuleSet::compile(docs);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

/// [`DETECTION_RULES`] and [`CORRELATION_RULES`], compiled together.
static EVENT_RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    compile(
        "fuzz_event.yml",
        &format!("{DETECTION_RULES}\n---\n{CORRELATION_RULES}"),
    )
});

/// [`CORRELATION_RULES`], compiled.
static STATE_RULES: LazyLock<RuleSet> =
    LazyLock::new(|| compile("fuzz_state.yml", CORRELATION_RULES));

/// Placeholders for fuzzed rules that use `expand`.
static PLACEHOLDERS: LazyLock<Placeholders> = LazyLock::new(|| {
    Placeholders::from([
        (
            "Admins".to_owned(),
            vec!["adm*".to_owned(), "root".to_owned()],
        ),
        ("DomainControllers".to_owned(), vec!["dc?".to_owned()]),
    ])
});

/// Sigma field names looked up in every fuzzed event: renamed, Windows `System` and
/// `EventData`, cloud columns in either case and `properties.` nesting, dotted paths.
const FIELDS: &[&str] = &[
    "Image",
    "ParentImage",
    "CommandLine",
    "IntegrityLevel",
    "ProcessId",
    "ParentProcessId",
    "User",
    "LogonId",
    "EventID",
    "Channel",
    "Provider_Name",
    "ThreatName",
    "ResultType",
    "ResultDescription",
    "UserPrincipalName",
    "IPAddress",
    "Location",
    "OperationName",
    "OperationNameValue",
    "Category",
    "ActivityDisplayName",
    "LoggedByService",
    "Result",
    "eventName",
    "userIdentity.arn",
    "requestParameters.bucketName",
    "properties.status.errorCode",
    "Event.System.EventID",
    "a0",
    "",
    ".",
    "a..b",
];

fn force() -> ForceId {
    ForceId::new("fuzz").expect("a valid force id")
}

/// Sample events for fuzzed rules: one or two per source, with the fields rules name most.
pub static SAMPLES: LazyLock<Vec<Event>> = LazyLock::new(|| {
    let bodies = [
        (
            SourceKind::Sysmon,
            json!({"Event": {"System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                "TimeCreated": {"#attributes": {"SystemTime": "2026-09-21T10:40:00Z"}}},
              "EventData": {"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd.exe /c whoami -enc bypass",
                "ParentImage": "C:\\Program Files\\x.exe", "User": "CORP\\adm1", "IntegrityLevel": "High",
                "Hashes": "SHA256=ABCDEF,MD5=0123", "ProcessId": 4242}}}),
        ),
        (
            SourceKind::WindowsSecurity,
            json!({"EventID": 4688, "Channel": "Security", "NewProcessName": "C:\\Windows\\powershell.exe",
              "CommandLine": "powershell -nop -w hidden", "MandatoryLabel": "S-1-16-12288",
              "SubjectUserName": "svc_backup", "ProcessId": "0x1a2c"}),
        ),
        (
            SourceKind::WindowsSecurity,
            json!({"EventID": "4625", "Channel": "Security", "LogonType": 3, "IpAddress": "10.1.2.3",
              "TargetUserName": "admin7", "Message": "mimikatz sekurlsa::logonpasswords"}),
        ),
        (
            SourceKind::EntraSignin,
            json!({"resultType": "50126", "user": "u1", "ip": "10.0.0.1",
              "properties": {"userPrincipalName": "u1@example.org", "ipAddress": "192.168.1.9",
                "location": {"countryOrRegion": "GB"}}, "userAgent": "Python-urllib"}),
        ),
        (
            SourceKind::EntraSignin,
            json!({"resultType": "0", "user": "u1", "ip": "10.0.1.1", "bytes": "900", "app": "mail",
              "country": "RU", "lat": 55.756, "lon": 37.617}),
        ),
        (
            SourceKind::EntraAudit,
            json!({"operationName": "Add member to role", "properties": {"result": "success",
              "targetResources": [{"id": "x"}]}}),
        ),
        (
            SourceKind::AzureActivity,
            json!({"operationName": "MICROSOFT.COMPUTE/VIRTUALMACHINES/DELETE", "resultType": "Success",
              "category": "Administrative"}),
        ),
        (
            SourceKind::M365Audit,
            json!({"Workload": "Exchange", "Operation": "New-InboxRule",
              "Parameters": [{"Name": "ForwardTo", "Value": "x@evil.example"}]}),
        ),
        (
            SourceKind::AwsCloudtrail,
            json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging",
              "awsRegion": "eu-west-2", "userIdentity": {"arn": "arn:aws:iam::1:user/a", "principalId": "AIDA1"}}),
        ),
        (
            SourceKind::LinuxAuditd,
            json!({"type": "EXECVE", "a0": "ncat", "a1": "-e", "uid": 0, "gid": 10}),
        ),
        (
            SourceKind::Syslog,
            json!({"message": "Accepted password for root from 10.0.0.9 port 22 ssh2", "host": "web1"}),
        ),
        (
            SourceKind::Firewall,
            json!({"src_ip": "203.0.113.7", "dst_port": 3389, "action": "ALLOW", "proto": 6}),
        ),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, (source, body))| Event::with_time(source, T0 + i as i64 * 61_000, body))
        .collect()
});

/// Indices of the rules matching `ev`, through the literal index and exhaustively: they must
/// agree (the index only narrows which rules are evaluated).
fn matching(rules: &RuleSet, ev: &Event) -> Vec<usize> {
    let mut fast: Vec<usize> = rules.matching(ev).collect();
    let mut slow: Vec<usize> = rules.matching_exhaustive(ev).collect();
    fast.sort_unstable();
    slow.sort_unstable();
    assert_eq!(
        fast, slow,
        "indexed and exhaustive matching disagree on {}",
        ev.body
    );
    fast
}

/// Feeds `events` to `st` (at sequences from `seq`), drains it, and returns the changes to
/// persist, applied to `store`.
fn drive<'a>(
    rules: &RuleSet,
    st: &mut ForceState,
    events: impl IntoIterator<Item = &'a Event>,
    store: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) {
    let force = force();
    let mut alerts = Vec::new();
    for (i, ev) in events.into_iter().enumerate() {
        st.apply(rules, &force, 1 + i as u64, ev, &mut alerts);
    }
    st.expire(rules);
    for (k, v) in st.take_changes(rules) {
        match v {
            Some(v) => store.insert(k, v),
            None => store.remove(&k),
        };
    }
    st.drain(rules, &force, &mut alerts);
    for a in &alerts {
        serde_json::to_string(a).expect("an alert serializes");
    }
}

/// Event parsing with field mapping: the first byte picks the source, the rest is the payload.
pub fn event(data: &[u8]) {
    let Some((&first, payload)) = data.split_first() else {
        return;
    };
    let source = SourceKind::ALL[usize::from(first) % SourceKind::ALL.len()];
    let rules = &*EVENT_RULES;
    // The fast scanner builds what serde_json builds, and leaves it every refusal.
    let keep = rules.reads().keep(source);
    if !keep.is_everything() {
        assert_eq!(
            crate::json::kept::parse_kept(payload, keep),
            crate::json::kept::parse_kept_by_serde(payload, keep),
            "the fast scanner and serde_json read the payload otherwise"
        );
    }
    // Parsing only what the rules read refuses the same payloads, and the rules match the same.
    let kept = rules.parse_event(source, payload, MAX_EVENT_BYTES);
    let ev = match (Event::parse(source, payload, MAX_EVENT_BYTES), kept) {
        (Ok(ev), Ok(kept)) => {
            assert_eq!(
                matching(rules, &ev),
                matching(rules, &kept),
                "the event as the rules read it matches other rules"
            );
            ev
        }
        (Err(e), Err(kept)) => {
            assert_eq!(
                e, kept,
                "refused otherwise when parsed as the rules read it"
            );
            // Every rejection has a reason and a message (the dead letter's headers).
            let _ = (e.code(), e.to_string());
            return;
        }
        (whole, kept) => panic!("parsed whole: {whole:?}; as the rules read it: {kept:?}"),
    };
    assert!(
        (MIN_EVENT_TIME_MS..=MAX_EVENT_TIME_MS).contains(&ev.time_ms),
        "event time {} out of range",
        ev.time_ms
    );
    let class = ev.class();
    let _ = mapping::detect_source(&ev.body);
    let _ = mapping::windows_event_id(&ev.body);
    for field in FIELDS {
        let _ = ev.field(field);
    }
    if let Some(o) = ev.body.as_object() {
        for k in o.keys().take(64) {
            let _ = mapping::lookup(class, &ev.body, k);
        }
    }
    matching(rules, &ev);
    let mut st = ForceState::new().with_lateness(LATENESS_MS);
    drive(rules, &mut st, [&ev], &mut BTreeMap::new());
}

/// Sigma rule and condition parsing and compiling: the bytes are a rule file.
pub fn rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The text as a condition over a few selection names (the condition grammar, directly).
    if text.len() <= 1024 {
        let names = ["sel", "sel1", "sel2", "filter", "keywords"].map(String::from);
        let _ = crate::sigma::condition::parse_condition(text, &names);
    }
    let mut docs = Vec::new();
    for r in parse_rules("fuzz.yml", text) {
        match r {
            Ok(doc) => docs.push(doc),
            Err(e) => drop(e.to_string()),
        }
    }
    let (set, errors) = RuleSet::compile_with(docs, &PLACEHOLDERS);
    for e in &errors {
        let _ = e.to_string();
    }
    if set.is_empty() {
        return;
    }
    let _ = set.dormant();
    for ev in SAMPLES.iter() {
        matching(&set, ev);
    }
    let mut st = ForceState::new().with_lateness(LATENESS_MS);
    let mut store = BTreeMap::new();
    drive(&set, &mut st, SAMPLES.iter(), &mut store);
    ForceState::load(
        &set,
        st.watermark_ms(),
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .expect("state persisted by take_changes loads again");
}

/// Key prefix of the correlation state in a node's store (as in a [`Checkpoint`]).
const STATE_PREFIX: &[u8] = b"s/";
/// Key of the watermark in a node's store (8 bytes, big-endian).
const WATERMARK_KEY: &[u8] = b"m/watermark";

/// State keys an entry of the entries form can have: the first byte of an entry picks one.
fn state_key(selector: u8) -> Vec<u8> {
    let rules = &*STATE_RULES;
    let fixed: [&[u8]; 4] = [
        b"\x01m",
        b"\x01f",
        b"\x01s\x00\x00\x00\x00\x00\x00\x00\x01",
        b"\x01p\x00\x00\x00\x00\x00\x00\x00\x01",
    ];
    let i = usize::from(selector);
    if let Some(k) = fixed.get(i) {
        return k.to_vec();
    }
    let corrs = rules.correlations();
    let j = i - fixed.len();
    let corr = &corrs[j % corrs.len()];
    // A rule id, a zero byte and a group key: three per correlation (by user, by address,
    // and the empty key of correlations without `group-by`), so that several groups load.
    let group = ["user=u1", "ip=10.0.0.1", ""][(j / corrs.len()) % 3];
    [corr.meta.id.as_bytes(), b"\0", group.as_bytes()].concat()
}

/// The versioned state decoder: a [`Checkpoint`] when the first byte is even; otherwise state
/// entries, each a key selector byte, a length byte and that many value bytes. The loaded state
/// is then used (events applied, groups expired, changes persisted), and the state it persists
/// must load again.
pub fn state(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rules = &*STATE_RULES;
    let (watermark, store): (i64, BTreeMap<Vec<u8>, Vec<u8>>) = if mode % 2 == 0 {
        let Ok(c) = Checkpoint::from_bytes(rest) else {
            return;
        };
        assert_eq!(
            Checkpoint::from_bytes(&c.to_bytes()).expect("a re-encoded checkpoint decodes"),
            c
        );
        // As a node imports it: the watermark entry, and the correlation state's entries.
        let watermark = c
            .entries
            .iter()
            .find(|(k, _)| k == WATERMARK_KEY)
            .and_then(|(_, v)| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, |b| u64::from_be_bytes(b) as i64);
        let store = c
            .entries
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(STATE_PREFIX)?.to_vec(), v)))
            .collect();
        (watermark, store)
    } else {
        let mut store = BTreeMap::new();
        let mut rest = rest;
        while let [selector, len, tail @ ..] = rest {
            let n = usize::from(*len).min(tail.len());
            store.insert(state_key(*selector), tail[..n].to_vec());
            rest = &tail[n..];
        }
        (T0, store)
    };
    let Ok(st) = ForceState::load(
        rules,
        watermark,
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    ) else {
        return;
    };
    let _ = (st.live_groups(), st.pending_events(), st.late_events());
    let mut st = st.with_lateness(LATENESS_MS);
    // Events around the watermark (within the times a node accepts), then well after it.
    let base = watermark.clamp(MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS - 86_400_000);
    let mut store = store;
    let events: Vec<Event> = SAMPLES
        .iter()
        .filter(|e| {
            matches!(
                e.source,
                SourceKind::EntraSignin | SourceKind::AwsCloudtrail
            )
        })
        .flat_map(|e| {
            [-120_000, 1_000, 7_200_000]
                .map(|dt| Event::with_time(e.source, base + dt, sign_in_fields(e.body.clone())))
        })
        .collect();
    drive(rules, &mut st, &events, &mut store);
    ForceState::load(
        rules,
        st.watermark_ms(),
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .expect("state persisted by take_changes loads again");
}

/// Gives a sample event the fields [`CORRELATION_RULES`] read, if it has none.
fn sign_in_fields(mut body: Value) -> Value {
    if let Some(o) = body.as_object_mut() {
        o.entry("user").or_insert_with(|| json!("u1"));
        o.entry("ip").or_insert_with(|| json!("10.0.0.1"));
    }
    body
}

/// Seeds for [`state`]: checkpoints of the state [`CORRELATION_RULES`] build from a short
/// stream, cut at a few points, and the same state as entries.
pub fn state_seeds() -> Vec<Vec<u8>> {
    let rules = &*STATE_RULES;
    let mut seeds = Vec::new();
    let mut st = ForceState::new().with_lateness(LATENESS_MS);
    let mut store = BTreeMap::new();
    let stream: Vec<Event> = (0..40)
        .map(|i| {
            let body = match i % 4 {
                0 | 1 => {
                    json!({"resultType": "50126", "user": format!("u{}", i % 3), "ip": "10.0.0.1"})
                }
                2 => json!({"resultType": "0", "user": format!("u{}", i % 3), "bytes": "700",
                    "app": "mail", "country": (["GB", "FR"][i % 2]), "lat": 51.5, "lon": -0.1}),
                _ => json!({"eventName": "X"}),
            };
            let source = if i % 4 == 3 {
                SourceKind::AwsCloudtrail
            } else {
                SourceKind::EntraSignin
            };
            Event::with_time(source, T0 + i as i64 * 45_000, body)
        })
        .collect();
    for chunk in stream.chunks(10) {
        drive(rules, &mut st, chunk, &mut store);
        let wm = st.watermark_ms();
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = store
            .iter()
            .map(|(k, v)| ([STATE_PREFIX, k].concat(), v.clone()))
            .collect();
        entries.push((WATERMARK_KEY.to_vec(), (wm as u64).to_be_bytes().to_vec()));
        let c = Checkpoint {
            force: "fuzz".into(),
            seq: 0,
            entries,
        };
        seeds.push([&[0u8][..], &c.to_bytes()].concat());
    }
    // The entries form: each persisted value under the selector of its key, where it fits.
    let mut entries = vec![1u8];
    for (k, v) in &store {
        let Some(selector) = (0..=u8::MAX).find(|&s| state_key(s) == *k) else {
            continue;
        };
        if let Ok(len) = u8::try_from(v.len()) {
            entries.extend([selector, len]);
            entries.extend_from_slice(v);
        }
    }
    seeds.push(entries);
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_their_seeds_and_garbage() {
        for seed in state_seeds() {
            state(&seed);
        }
        assert!(state_seeds().len() > 2);
        for ev in SAMPLES.iter() {
            let mut data = vec![
                SourceKind::ALL
                    .iter()
                    .position(|&s| s == ev.source)
                    .unwrap() as u8,
            ];
            let mut body = ev.body.clone();
            body["@timestamp"] = json!("2026-09-21T10:40:00Z");
            data.extend(serde_json::to_vec(&body).unwrap());
            event(&data);
        }
        rules(DETECTION_RULES.as_bytes());
        rules(CORRELATION_RULES.as_bytes());
        for junk in [&b""[..], b"\x00", b"\x01\xff", b"{]", b"\x02\x03\x04"] {
            event(junk);
            rules(junk);
            state(junk);
        }
    }
}
