//! Scenario tests of every correlation type and detector, with written events.

use super::*;
use crate::sigma::parse_rules;
use crate::source::SourceKind;
use serde_json::{Value, json};

const RULES: &str = r#"
title: failed
id: failed
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 50126}, condition: s}
---
title: brute force
id: brute
correlation: {type: event_count, rules: failed, group-by: [user], timespan: 10m, condition: {gte: 5}}
level: high
---
title: spray
id: spray
correlation: {type: value_count, rules: failed, group-by: [ip], timespan: 30m, condition: {gte: 4, field: user}}
level: high
---
title: legacy
id: legacy
logsource: {product: azure, service: signinlogs}
detection: {s: {client: IMAP4}, condition: s}
level: medium
"#;

fn compile(name: &str, text: &str) -> RuleSet {
    let docs = parse_rules(name, text)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (rs, errs) = RuleSet::compile(docs);
    assert!(errs.is_empty(), "{errs:?}");
    rs
}

fn rules() -> RuleSet {
    compile("t.yml", RULES)
}

const T0: i64 = 1_709_287_200_000;

fn fail(user: &str, ip: &str, t: i64) -> Event {
    Event::with_time(
        SourceKind::EntraSignin,
        t,
        json!({"resultType": "50126", "user": user, "ip": ip}),
    )
}

/// Applies `evs` in order and returns the alerts; checks on the way that events made ready
/// elsewhere ([`ForceState::prepare`], as `nmc hunt --threads` does) give the same alerts and
/// counts.
fn run(rs: &RuleSet, evs: &[Event]) -> Vec<Alert> {
    let (out, other) = both_ways(rs, evs, 0);
    assert_eq!(
        other, out,
        "prepared elsewhere, applied here: the same alerts"
    );
    out
}

/// The alerts of `evs` applied with [`ForceState::apply`] and with [`ForceState::prepare`] then
/// [`ForceState::apply_prepared`], with `lateness` (0: the default); the late and bad-value
/// counts must agree.
fn both_ways(rs: &RuleSet, evs: &[Event], lateness: i64) -> (Vec<Alert>, Vec<Alert>) {
    let kent = ForceId::new("kent").unwrap();
    let new = || {
        if lateness > 0 {
            ForceState::new().with_lateness(lateness)
        } else {
            ForceState::new()
        }
    };
    let (mut st, mut prepared) = (new(), new());
    let (mut out, mut other) = (Vec::new(), Vec::new());
    for (i, e) in evs.iter().enumerate() {
        let seq = i as u64 + 1;
        st.apply(rs, &kent, seq, e, &mut out);
        let matched = rs.matching(e).collect();
        prepared.apply_prepared(
            rs,
            &kent,
            ForceState::prepare(rs, seq, e, matched),
            &mut other,
        );
    }
    st.drain(rs, &kent, &mut out);
    prepared.drain(rs, &kent, &mut other);
    assert_eq!(
        (prepared.late_events(), prepared.bad_values()),
        (st.late_events(), st.bad_values())
    );
    (out, other)
}

#[test]
fn brute_force_fires_then_is_suppressed_then_rearms() {
    let rs = rules();
    // 12 failures 10 s apart, then 6 more once the 10-minute suppression has run out, while the
    // window still holds the suppressed ones.
    let first: Vec<_> = (0..12)
        .map(|i| fail("bob", "1.1.1.1", T0 + i * 10_000))
        .collect();
    let mut evs = first.clone();
    evs.extend((0..6).map(|i| fail("bob", "1.1.1.1", T0 + 650_000 + i * 10_000)));
    let alerts = run(&rs, &evs);
    let brute: Vec<_> = alerts.iter().filter(|a| a.rule.id == "brute").collect();
    assert_eq!(brute.len(), 2, "one alert per attack burst: {brute:#?}");
    assert_eq!(brute[0].count, 5);
    assert_eq!(brute[0].suppressed, 0);
    assert_eq!(brute[0].group.get("user").unwrap(), "bob");
    assert_eq!(
        brute[0].evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // Failures 6..12 fell in the suppression (quiet until the 5th + 10 min) but were counted:
    // the 13th, after the suppression, fires with them and reports the 7 suppressed.
    assert_eq!(brute[1].suppressed, 7);
    assert_eq!(brute[1].count, 8);
    assert_eq!(brute[1].evidence.first().map(|e| e.seq), Some(6));
    assert_ne!(brute[0].id, brute[1].id);
    assert!(
        alerts.iter().all(|a| a.rule.id != "failed"),
        "referenced rule is silent"
    );
    // A burst after a pause longer than the timespan finds the group expired and starts afresh,
    // whatever else the force saw in between (other traffic makes sweeps run at other times).
    let later = |other: bool| {
        let mut evs = first.clone();
        if other {
            evs.push(fail("eve", "2.2.2.2", T0 + 700_000));
        }
        evs.extend((0..6).map(|i| fail("bob", "1.1.1.1", T0 + 1_000_000 + i * 10_000)));
        let alerts = run(&rs, &evs);
        let bob: Vec<Alert> = alerts
            .into_iter()
            .filter(|a| a.rule.id == "brute" && a.group["user"] == "bob")
            .collect();
        assert_eq!(bob.len(), 2);
        assert_eq!(bob[1].suppressed, 0);
        assert_eq!(bob[1].count, 5);
        // (The other event shifts the sequences: compare the windows and evidence times.)
        bob.into_iter()
            .map(|a| {
                let times: Vec<String> = a.evidence.into_iter().map(|e| e.time).collect();
                (a.window_start, a.window_end, a.count, a.suppressed, times)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(later(false), later(true));
}

const SEQUENCES: &str = r#"
title: failed
id: failed
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 50126}, condition: s}
---
title: success
id: success
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 0}, condition: s}
---
title: mfa denied
id: mfa
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 500121}, condition: s}
---
title: failure then success
id: fail_then_success
correlation: {type: temporal_ordered, rules: [failed, success], group-by: [user], timespan: 5m}
level: high
---
title: failure and mfa denial, any order
id: fail_and_mfa
correlation: {type: temporal, rules: [failed, mfa], group-by: [user], timespan: 5m, suppress: 1h}
level: medium
"#;

fn signin(user: &str, code: &str, t: i64) -> Event {
    Event::with_time(
        SourceKind::EntraSignin,
        t,
        json!({"resultType": code, "user": user, "ip": "1.1.1.1"}),
    )
}

fn sequences() -> RuleSet {
    compile("s.yml", SEQUENCES)
}

fn fired<'a>(alerts: &'a [Alert], id: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|a| a.rule.id == id).collect()
}

/// The specification's example of a correlation of a correlation: ten failed logons of a user
/// within ten minutes (`event_count`, silent) followed by a successful logon of that user
/// (`temporal_ordered`).
#[test]
fn spec_example_failed_logins_then_success() {
    let text = include_str!("../../../tests/data/sigma-specification/spec_example_15.yml");
    let rs = compile("spec_example_15.yml", text);
    let logon = |user: &str, eid: u32, t: i64| {
        Event::with_time(
            SourceKind::WindowsSecurity,
            t,
            json!({"EventID": eid, "Channel": "Security", "User": user}),
        )
    };
    let mut evs: Vec<Event> = (0..10)
        .map(|i| logon("bob", 4625, T0 + i * 20_000))
        .collect();
    evs.push(logon("bob", 4624, T0 + 300_000));
    let alerts = run(&rs, &evs);
    assert_eq!(
        alerts.len(),
        1,
        "only the chained correlation alerts: {alerts:#?}"
    );
    let a = &alerts[0];
    assert_eq!(
        a.rule.title,
        "Correlation - Multiple Failed Logins Followed by Successful Login"
    );
    assert_eq!(a.group.get("User").map(String::as_str), Some("bob"));
    assert_eq!(
        a.evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![10, 11],
        "the 10th failure completed the count"
    );
    // Nine failures are not enough; a success without failures neither; another user neither.
    let mut nine: Vec<Event> = (0..9)
        .map(|i| logon("bob", 4625, T0 + i * 20_000))
        .collect();
    nine.push(logon("bob", 4624, T0 + 300_000));
    assert!(run(&rs, &nine).is_empty());
    let mut other: Vec<Event> = (0..10)
        .map(|i| logon("bob", 4625, T0 + i * 20_000))
        .collect();
    other.push(logon("eve", 4624, T0 + 300_000));
    assert!(run(&rs, &other).is_empty());
}

/// Runs a specification example completed with an id (if it has none) and `base` rules over
/// CloudTrail-shaped events (base rules match on the field `kind`), one second apart.
fn spec_run(example: &str, base: &str, events: &[Value]) -> Vec<Alert> {
    let mut text = String::new();
    for (key, line) in [("title:", "title: example\n"), ("id:", "id: example\n")] {
        if !example.lines().any(|l| l.starts_with(key)) {
            text.push_str(line);
        }
    }
    text.push_str(example);
    text.push('\n');
    text.push_str(base);
    let rs = compile("example.yml", &text);
    let evs: Vec<Event> = events
        .iter()
        .enumerate()
        .map(|(i, b)| Event::with_time(SourceKind::AwsCloudtrail, T0 + i as i64 * 1_000, b.clone()))
        .collect();
    run(&rs, &evs)
        .into_iter()
        .filter(|a| a.rule.kind != "detection")
        .collect()
}

/// A base detection rule named `name` (and with id `id`) matching events whose `kind` is `name`.
fn base(id: &str, name: &str) -> String {
    format!(
        "---\ntitle: {name}\nid: {id}\nname: {name}\nlogsource: {{product: aws, service: cloudtrail}}\ndetection: {{s: {{kind: {name}}}, condition: s}}\n"
    )
}

#[test]
fn spec_examples_count_and_value_types() {
    let ex = |n: &str| {
        std::fs::read_to_string(format!(
            "{}/../tests/data/sigma-specification/spec_example_{n}.yml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let failed = base("5638f7c0-ac70-491d-8465-2a65075e0d86", "failed");
    // 05: 100 failed logins on one computer within an hour.
    let evs: Vec<Value> = (0..100)
        .map(|_| json!({"kind": "failed", "ComputerName": "pc1"}))
        .collect();
    let a = spec_run(&ex("05"), &failed, &evs);
    assert_eq!((a.len(), a[0].count), (1, 100));
    assert!(spec_run(&ex("05"), &failed, &evs[..99]).is_empty());
    // 06: 100 distinct users failing on one computer/workstation within a day.
    let evs: Vec<Value> = (0..100)
        .map(|i| json!({"kind": "failed", "ComputerName": "pc1", "WorkstationName": "ws", "User": format!("u{i}")}))
        .collect();
    let a = spec_run(&ex("06"), &failed, &evs);
    assert_eq!((a.len(), a[0].distinct), (1, Some(100)));
    let same: Vec<Value> = (0..150).map(|_| json!({"kind": "failed", "ComputerName": "pc1", "WorkstationName": "ws", "User": "u"})).collect();
    assert!(
        spec_run(&ex("06"), &failed, &same).is_empty(),
        "one user, however many times"
    );
    // 09: more than 1,000,000 bytes sent to websites by one source/user within an hour.
    let site = base("website", "website_access");
    let evs: Vec<Value> = (0..3)
        .map(|_| json!({"kind": "website_access", "SourceIP": "10.0.0.1", "User": "bob", "bytes_sent": 400_000}))
        .collect();
    let a = spec_run(&ex("09"), &site, &evs);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].measured, Some(1_200_000.0));
    assert!(
        spec_run(&ex("09"), &site, &evs[..2]).is_empty(),
        "800,000 is not more than 1,000,000"
    );
    // 10: average BytesOut above 500.
    let r = base("rule_a_id", "rule_a");
    let small = json!({"kind": "rule_a", "SourceIP": "10.0.0.1", "User": "bob", "BytesOut": 100});
    let big = json!({"kind": "rule_a", "SourceIP": "10.0.0.1", "User": "bob", "BytesOut": 2000});
    let a = spec_run(&ex("10"), &r, &[small.clone(), big.clone()]);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].measured, Some(1050.0));
    assert!(spec_run(&ex("10"), &r, &[small.clone(), small]).is_empty());
    // 11: a process name that makes up at most 1% of a computer's process creations.
    let pc = base("pc", "process_creation");
    let mut evs: Vec<Value> = (0..199)
        .map(|_| json!({"kind": "process_creation", "ComputerName": "pc1", "image": "svchost.exe"}))
        .collect();
    evs.push(json!({"kind": "process_creation", "ComputerName": "pc1", "image": "evil.exe"}));
    let a = spec_run(&ex("11"), &pc, &evs);
    assert_eq!(a.len(), 1, "the rare image");
    assert_eq!(a[0].measured, Some(0.5));
    assert_eq!(a[0].evidence.last().map(|e| e.seq), Some(200));
}

#[test]
fn spec_examples_temporal_types_and_aliases() {
    let ex = |n: &str| {
        std::fs::read_to_string(format!(
            "{}/../tests/data/sigma-specification/spec_example_{n}.yml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    // 07: three recon commands by one user on one computer within 5 minutes, any order.
    let recon = [
        base("a", "recon_cmd_a"),
        base("b", "recon_cmd_b"),
        base("c", "recon_cmd_c"),
    ]
    .concat();
    let ev = |k: &str| json!({"kind": k, "ComputerName": "pc1", "User": "bob"});
    let a = spec_run(
        &ex("07"),
        &recon,
        &[ev("recon_cmd_c"), ev("recon_cmd_a"), ev("recon_cmd_b")],
    );
    assert_eq!((a.len(), a[0].count), (1, 3));
    assert!(spec_run(&ex("07"), &recon, &[ev("recon_cmd_c"), ev("recon_cmd_a")]).is_empty());
    // 08: many failed logins (a correlation the example leaves out) then a success.
    let chain = [
        base("f", "failed_login"),
        base("s", "successful_login"),
        "---\ntitle: many\nid: many\nname: many_failed_logins\ncorrelation: {type: event_count, rules: [failed_login], group-by: [User], timespan: 1h, condition: {gte: 3}}\n".to_string(),
    ]
    .concat();
    let ev = |k: &str| json!({"kind": k, "User": "bob"});
    let a = spec_run(
        &ex("08"),
        &chain,
        &[
            ev("failed_login"),
            ev("failed_login"),
            ev("failed_login"),
            ev("successful_login"),
        ],
    );
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].rule.kind, "temporal_ordered");
    assert!(
        spec_run(
            &ex("08"),
            &chain,
            &[
                ev("successful_login"),
                ev("failed_login"),
                ev("failed_login"),
                ev("failed_login")
            ]
        )
        .is_empty()
    );
    // 14: aliases: the two rules name the same addresses with different fields.
    let rules = [
        base("e", "internal_error"),
        base("n", "new_network_connection"),
    ]
    .concat();
    let err = json!({"kind": "internal_error", "destination": {"ip": "10.0.0.5"}, "source": {"ip": "8.8.8.8"}});
    let conn = json!({"kind": "new_network_connection", "source": {"ip": "10.0.0.5"}, "destination": {"ip": "8.8.8.8"}});
    let a = spec_run(&ex("14"), &rules, &[err.clone(), conn]);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].group.get("internal_ip").map(String::as_str),
        Some("10.0.0.5")
    );
    assert_eq!(
        a[0].group.get("remote_ip").map(String::as_str),
        Some("8.8.8.8")
    );
    let other = json!({"kind": "new_network_connection", "source": {"ip": "10.0.0.6"}, "destination": {"ip": "8.8.8.8"}});
    assert!(
        spec_run(&ex("14"), &rules, &[err, other]).is_empty(),
        "different internal address"
    );
    // 01 is an illustration without a type: rejected with that reason.
    let r = parse_rules("01.yml", &ex("01"));
    assert!(
        r[0].as_ref()
            .unwrap_err()
            .to_string()
            .contains("without `type`")
    );
}

const DETECTORS: &str = r#"
title: success
id: success
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 0}, condition: s}
---
title: new country
id: new_country
correlation: {type: new_term, rules: [success], group-by: [user], field: country, learning: 1d}
level: medium
---
title: impossible travel
id: travel
correlation: {type: impossible_travel, rules: [success], group-by: [user], latitude: lat, longitude: lon, speed: 900, min_distance: 300}
level: high
"#;

fn at(user: &str, country: &str, lat: f64, lon: f64, t: i64) -> Event {
    Event::with_time(
        SourceKind::EntraSignin,
        t,
        json!({"resultType": "0", "user": user, "country": country, "lat": lat, "lon": lon}),
    )
}

fn detectors() -> RuleSet {
    compile("d.yml", DETECTORS)
}

const DAY: i64 = 86_400_000;
const LONDON: (f64, f64) = (51.507, -0.128);
const MANCHESTER: (f64, f64) = (53.480, -2.242);
const MOSCOW: (f64, f64) = (55.756, 37.617);

#[test]
fn prepared_events_give_the_alerts_of_apply_in_any_arrival_order() {
    let rs = compile("both.yml", &format!("{RULES}\n---\n{DETECTORS}"));
    let mut evs = Vec::new();
    for i in 0..400i64 {
        let t = T0 + i * 20_000;
        let user = ["ann", "bob", "cat"][(i % 3) as usize];
        evs.push(fail(user, "203.0.113.9", t));
        if i % 7 == 0 {
            let (lat, lon) = [LONDON, MOSCOW, MANCHESTER][(i % 3) as usize];
            evs.push(at(user, "GB", lat, lon, t + 1_000));
        }
        if i % 50 == 0 {
            // A bad value and a late event.
            evs.push(at(user, "GB", 95.0, 0.0, t + 2_000));
            evs.push(fail(user, "198.51.100.1", t - 600_000));
        }
    }
    // Arrivals disordered within and beyond the lateness.
    let mut shuffled = evs.clone();
    for i in (0..shuffled.len() - 3).step_by(3) {
        shuffled.swap(i, i + 2);
    }
    for (evs, lateness) in [(&evs, 0), (&shuffled, 0), (&shuffled, 120_000)] {
        let (out, other) = both_ways(&rs, evs, lateness);
        assert!(out.len() > 10, "{}", out.len());
        assert_eq!(other, out);
    }
}

#[test]
fn new_term_learns_then_alerts_once_per_new_value() {
    let rs = detectors();
    let evs = [
        at("bob", "GB", LONDON.0, LONDON.1, T0),
        at("bob", "FR", LONDON.0, LONDON.1, T0 + DAY / 2), // learning: FR joins the baseline
        at("bob", "GB", LONDON.0, LONDON.1, T0 + 2 * DAY),
        at("bob", "FR", LONDON.0, LONDON.1, T0 + 3 * DAY), // known
        at("bob", "RU", LONDON.0, LONDON.1, T0 + 4 * DAY), // new: alert
        at("bob", "RU", LONDON.0, LONDON.1, T0 + 5 * DAY), // now known
        at("eve", "RU", LONDON.0, LONDON.1, T0 + 5 * DAY), // eve is still learning
    ];
    let alerts = run(&rs, &evs);
    let new: Vec<_> = fired(&alerts, "new_country");
    assert_eq!(new.len(), 1, "{new:#?}");
    assert_eq!(new[0].evidence[0].seq, 5);
    assert_eq!(new[0].group.get("user").map(String::as_str), Some("bob"));
}

#[test]
fn new_term_baseline_lives_while_used_and_is_forgotten_after_timespan() {
    let rs = detectors();
    let gb = |d: i64| at("bob", "GB", LONDON.0, LONDON.1, T0 + d * DAY);
    // Signs in monthly for four months (beyond the 90-day timespan since the first event): the
    // baseline is still known, so a new country alerts.
    let mut evs: Vec<Event> = (0..5).map(|m| gb(30 * m)).collect();
    evs.push(at("bob", "RU", LONDON.0, LONDON.1, T0 + 121 * DAY));
    assert_eq!(fired(&run(&rs, &evs), "new_country").len(), 1);
    // No sign-in for 100 days: the baseline is forgotten and the user learns again.
    let evs = [gb(0), at("bob", "RU", LONDON.0, LONDON.1, T0 + 100 * DAY)];
    assert!(fired(&run(&rs, &evs), "new_country").is_empty());
}

#[test]
fn impossible_travel_needs_distance_and_speed() {
    let rs = detectors();
    // London then Moscow (2,500 km) one hour later: ~2,500 km/h.
    let evs = [
        at("bob", "GB", LONDON.0, LONDON.1, T0),
        at("bob", "RU", MOSCOW.0, MOSCOW.1, T0 + 3_600_000),
    ];
    let alerts = run(&rs, &evs);
    let travel = fired(&alerts, "travel");
    assert_eq!(travel.len(), 1);
    assert_eq!(
        travel[0].evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(
        travel[0].measured.unwrap() > 2000.0,
        "{:?}",
        travel[0].measured
    );
    // London then Moscow 21 hours later is a trip, not impossible travel.
    let slow = [
        at("bob", "GB", LONDON.0, LONDON.1, T0),
        at("bob", "RU", MOSCOW.0, MOSCOW.1, T0 + 7 * DAY / 8),
    ];
    assert!(fired(&run(&rs, &slow), "travel").is_empty());
    // London then Manchester (260 km) ten minutes later: fast, but under the minimum distance
    // (VPN egress and geolocation noise).
    let near = [
        at("bob", "GB", LONDON.0, LONDON.1, T0),
        at("bob", "GB", MANCHESTER.0, MANCHESTER.1, T0 + 600_000),
    ];
    assert!(fired(&run(&rs, &near), "travel").is_empty());
}

#[test]
fn silent_feed_alerts_once_per_silence_on_event_time() {
    let text = r#"
title: any aws
id: any_aws
logsource: {product: aws, service: cloudtrail}
detection: {s: {eventName|exists: true}, condition: s}
---
title: any signin
id: any_signin
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType|exists: true}, condition: s}
---
title: CloudTrail feed silent
id: aws_silent
correlation: {type: silent_feed, rules: [any_aws], timespan: 1h}
level: high
"#;
    let rs = compile("s.yml", text);
    let aws = |t: i64| Event::with_time(SourceKind::AwsCloudtrail, t, json!({"eventName": "X"}));
    let sign = |t: i64| Event::with_time(SourceKind::EntraSignin, t, json!({"resultType": "0"}));
    let min = 60_000;
    // CloudTrail goes quiet at T0 while sign-ins go on: one alert once an hour has passed.
    let mut evs = vec![aws(T0)];
    evs.extend((1..=150).map(|i| sign(T0 + i * min)));
    let alerts: Vec<_> = run(&rs, &evs)
        .into_iter()
        .filter(|a| a.rule.id == "aws_silent")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].evidence[0].seq, 1, "the feed's last event");
    assert_eq!(alerts[0].window_end, format_ms(T0 + 60 * min));
    // The feed comes back, then goes quiet again: a second alert.
    evs.push(aws(T0 + 151 * min));
    evs.extend((152..=300).map(|i| sign(T0 + i * min)));
    let alerts: Vec<_> = run(&rs, &evs)
        .into_iter()
        .filter(|a| a.rule.id == "aws_silent")
        .collect();
    assert_eq!(alerts.len(), 2);
    // A steady feed never alerts; a feed never seen is not watched.
    let steady: Vec<_> = (0..300)
        .map(|i| {
            if i % 30 == 0 {
                aws(T0 + i * min)
            } else {
                sign(T0 + i * min)
            }
        })
        .collect();
    assert!(run(&rs, &steady).iter().all(|a| a.rule.id != "aws_silent"));
    let never: Vec<_> = (0..300).map(|i| sign(T0 + i * min)).collect();
    assert!(run(&rs, &never).iter().all(|a| a.rule.id != "aws_silent"));
}

#[test]
fn correlation_cycles_and_missing_references_are_rejected() {
    let text = r#"
title: a
id: a
correlation: {type: event_count, rules: [b], timespan: 1m, condition: {gte: 1}}
---
title: b
id: b
correlation: {type: event_count, rules: [a], timespan: 1m, condition: {gte: 1}}
---
title: c
id: c
correlation: {type: event_count, rules: [nothing], timespan: 1m, condition: {gte: 1}}
"#;
    let docs = parse_rules("c.yml", text)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (rs, errs) = RuleSet::compile(docs);
    assert!(rs.correlations().is_empty());
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs.iter().any(|e| e.to_string().contains("cycle")));
    assert!(errs.iter().any(|e| e.to_string().contains("nothing")));
}

#[test]
fn temporal_ordered_needs_the_order_and_the_timespan() {
    let rs = sequences();
    let ok = run(
        &rs,
        &[signin("bob", "50126", T0), signin("bob", "0", T0 + 60_000)],
    );
    let a = fired(&ok, "fail_then_success");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].count, 2);
    assert_eq!(
        a[0].evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let reversed = run(
        &rs,
        &[signin("bob", "0", T0), signin("bob", "50126", T0 + 60_000)],
    );
    assert!(
        fired(&reversed, "fail_then_success").is_empty(),
        "wrong order"
    );
    let slow = run(
        &rs,
        &[signin("bob", "50126", T0), signin("bob", "0", T0 + 600_000)],
    );
    assert!(
        fired(&slow, "fail_then_success").is_empty(),
        "outside the timespan"
    );
    let other = run(
        &rs,
        &[signin("bob", "50126", T0), signin("eve", "0", T0 + 1_000)],
    );
    assert!(
        fired(&other, "fail_then_success").is_empty(),
        "different group"
    );
}

#[test]
fn temporal_any_order_and_custom_suppression() {
    let rs = sequences();
    let evs = [
        signin("bob", "500121", T0),
        signin("bob", "50126", T0 + 1_000),
        // Within the 1 h suppression: counted, not raised.
        signin("bob", "500121", T0 + 600_000),
        signin("bob", "50126", T0 + 601_000),
    ];
    let alerts = run(&rs, &evs);
    let a = fired(&alerts, "fail_and_mfa");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].evidence.len(), 2);
    // Activity goes on through the suppression; the first completion after it carries the
    // suppressed count.
    let mut later = evs.to_vec();
    later.push(signin("bob", "500121", T0 + 3_500_000));
    later.push(signin("bob", "50126", T0 + 3_501_000));
    later.push(signin("bob", "500121", T0 + 3_700_000));
    let alerts = run(&rs, &later);
    let a = fired(&alerts, "fail_and_mfa");
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].suppressed, 4);
    // After the suppression and a pause longer than the timespan, the group starts afresh.
    let mut pause = evs.to_vec();
    pause.push(signin("bob", "500121", T0 + 7_200_000));
    pause.push(signin("bob", "50126", T0 + 7_201_000));
    let alerts = run(&rs, &pause);
    let a = fired(&alerts, "fail_and_mfa");
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].suppressed, 0);
}

#[test]
fn slow_failures_do_not_fire() {
    let rs = rules();
    let evs: Vec<_> = (0..20)
        .map(|i| fail("bob", "1.1.1.1", T0 + i * 3_600_000))
        .collect();
    assert!(run(&rs, &evs).iter().all(|a| a.rule.id != "brute"));
}

#[test]
fn spray_counts_distinct_users() {
    let rs = rules();
    let mut evs: Vec<_> = (0..3).map(|i| fail("same", "9.9.9.9", T0 + i)).collect();
    assert!(run(&rs, &evs).iter().all(|a| a.rule.id != "spray"));
    evs.extend((0..4).map(|i| fail(&format!("u{i}"), "9.9.9.9", T0 + 100 + i)));
    let spray: Vec<_> = run(&rs, &evs)
        .into_iter()
        .filter(|a| a.rule.id == "spray")
        .collect();
    assert_eq!(spray.len(), 1);
    assert_eq!(spray[0].distinct, Some(4));
}

#[test]
fn detections_alert_per_event_and_missing_group_fields_are_skipped() {
    let rs = rules();
    let e = Event::with_time(
        SourceKind::EntraSignin,
        T0,
        json!({"client": "imap4", "resultType": 50126}),
    );
    let alerts = run(&rs, &[e.clone(), e]);
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().all(|a| a.rule.id == "legacy"));
    assert_ne!(
        alerts[0].id, alerts[1].id,
        "distinct events give distinct ids"
    );
}

#[test]
fn persisted_state_resumes_identically() {
    let rs = rules();
    let kent = ForceId::new("kent").unwrap();
    let evs: Vec<_> = (0..9)
        .map(|i| fail("bob", "1.1.1.1", T0 + i * 1000))
        .collect();
    let whole = run(&rs, &evs);
    // Apply the first 3, persist, reload, apply the rest.
    let mut st = ForceState::new();
    let mut out = Vec::new();
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (i, e) in evs.iter().enumerate().take(3) {
        st.apply(&rs, &kent, i as u64 + 1, e, &mut out);
    }
    store_changes(&mut store, st.take_changes(&rs));
    let mut st = reload(&rs, &st, &store);
    for (i, e) in evs.iter().enumerate().skip(3) {
        st.apply(&rs, &kent, i as u64 + 1, e, &mut out);
    }
    assert_eq!(out, whole);
}

#[test]
fn expired_groups_are_removed() {
    let rs = rules();
    let kent = ForceId::new("kent").unwrap();
    let mut st = ForceState::new();
    let mut out = Vec::new();
    st.apply(&rs, &kent, 1, &fail("bob", "1.1.1.1", T0), &mut out);
    assert_eq!(st.live_groups(), 2);
    st.take_changes(&rs);
    st.apply(
        &rs,
        &kent,
        2,
        &fail("eve", "2.2.2.2", T0 + 3_600_000),
        &mut out,
    );
    assert_eq!(st.live_groups(), 2, "bob's groups expired, eve's are live");
    let deleted = st
        .take_changes(&rs)
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .count();
    assert_eq!(deleted, 2);
}

const RATE_DROP: &str = r#"
title: any signin
id: any_signin
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType|exists: true}, condition: s}
---
title: any aws
id: any_aws
logsource: {product: aws, service: cloudtrail}
detection: {s: {eventName|exists: true}, condition: s}
---
title: sign-in volume far below baseline
id: signin_drop
correlation: {type: silent_feed, rules: [any_signin], timespan: 1h, below: 10%, baseline: 1d}
"#;

const HOUR: i64 = 3_600_000;

/// Sign-ins at `per_hour[h]` a hour during hour h (spread evenly), from T0 (on the hour).
fn signins(per_hour: &[u32]) -> Vec<Event> {
    let mut evs = Vec::new();
    for (h, &n) in per_hour.iter().enumerate() {
        for i in 0..i64::from(n) {
            let t = T0 + h as i64 * HOUR + i * HOUR / i64::from(n);
            evs.push(Event::with_time(
                SourceKind::EntraSignin,
                t,
                json!({"resultType": "0"}),
            ));
        }
    }
    evs
}

fn drops(alerts: &[Alert]) -> Vec<(String, u64, Option<f64>)> {
    alerts
        .iter()
        .filter(|a| a.rule.id == "signin_drop")
        .map(|a| (a.window_start.clone(), a.count, a.measured))
        .collect()
}

fn rate_rules() -> RuleSet {
    compile("r.yml", RATE_DROP)
}

#[test]
fn silent_feed_rate_drop_alerts_once_per_drop_after_learning() {
    let rs = rate_rules();
    // 30 hours at 60 an hour, two hours at 3 (5% of the baseline), back to 60 for three hours,
    // one hour at 2, then 60 again.
    let mut per_hour = vec![60; 30];
    per_hour.extend([3, 3, 60, 60, 60, 2, 60]);
    let alerts = run(&rs, &signins(&per_hour));
    assert_eq!(
        drops(&alerts),
        vec![
            (format_ms(T0 + 30 * HOUR), 3, Some(60.0)),
            // The baseline (hours 11-34) now holds the first drop: (22 * 60 + 2 * 3) / 24.
            (format_ms(T0 + 35 * HOUR), 2, Some(55.25)),
        ],
        "once for hours 30-31, again after hours 32-34 re-armed it"
    );
    let first = alerts.iter().find(|a| a.rule.id == "signin_drop").unwrap();
    assert_eq!(first.window_end, format_ms(T0 + 31 * HOUR));
    assert_eq!(first.first_seen, format_ms(T0 + 30 * HOUR));
    assert_eq!(first.last_seen, format_ms(T0 + 30 * HOUR + 2 * HOUR / 3));
    assert_eq!(first.evidence.len(), 2, "first and last event of the hour");
}

#[test]
fn silent_feed_rate_drop_negatives() {
    let rs = rate_rules();
    // A steady feed.
    assert!(drops(&run(&rs, &signins(&[60; 40]))).is_empty());
    // A normal dip: 20 an hour is a third of the baseline, above 10%.
    let mut dip = vec![60; 30];
    dip.extend([20, 20, 60]);
    assert!(drops(&run(&rs, &signins(&dip))).is_empty());
    // Learning: a drop before a full day of baseline after the first hour is not judged.
    let mut early = vec![60; 10];
    early.extend([1, 1, 60, 60]);
    assert!(drops(&run(&rs, &signins(&early))).is_empty());
    // The same drop right after the baseline is complete is.
    let mut ready = vec![60; 25];
    ready.extend([1, 60]);
    assert_eq!(drops(&run(&rs, &signins(&ready))).len(), 1);
}

#[test]
fn silent_feed_rate_drop_to_nothing_is_judged_on_the_force_event_time() {
    let rs = rate_rules();
    let mut evs = signins(&[60; 30]);
    // Sign-ins stop; CloudTrail goes on every ten minutes for five hours and moves the frontier.
    evs.extend((0..30).map(|i| {
        Event::with_time(
            SourceKind::AwsCloudtrail,
            T0 + 30 * HOUR + i * 600_000,
            json!({"eventName": "X"}),
        )
    }));
    let alerts = run(&rs, &evs);
    assert_eq!(
        drops(&alerts),
        vec![(format_ms(T0 + 30 * HOUR), 0, Some(60.0))],
        "one alert, for the first empty hour"
    );
    let a = alerts.iter().find(|a| a.rule.id == "signin_drop").unwrap();
    assert_eq!(
        a.evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![30 * 60],
        "the feed's last event before the drop"
    );
}

#[test]
fn silent_feed_rate_drop_is_the_same_in_any_arrival_order_and_across_restarts() {
    let rs = rate_rules();
    let kent = ForceId::new("kent").unwrap();
    let mut per_hour = vec![60; 30];
    per_hour.extend([3, 60, 60, 0, 60]);
    let mut evs = signins(&per_hour);
    evs.extend((0..36).map(|i| {
        Event::with_time(
            SourceKind::AwsCloudtrail,
            T0 + i * HOUR + 1_234,
            json!({"eventName": "X"}),
        )
    }));
    evs.sort_by_key(|e| e.time_ms);
    let want: Vec<String> = run(&rs, &evs)
        .into_iter()
        .filter(|a| a.rule.id == "signin_drop")
        .map(|a| serde_json::to_string(&a).unwrap())
        .collect();
    assert_eq!(want.len(), 2);
    // Delayed by up to 290 s (the lateness is 300 s), persisted and reloaded every 97 events.
    let lateness = 300_000;
    let mut arrival: Vec<(i64, u64, &Event)> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| (e.time_ms + (i as i64 * 7919) % 290_000, i as u64 + 1, e))
        .collect();
    arrival.sort_by_key(|a| (a.0, a.1));
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut st = ForceState::new().with_lateness(lateness);
    let mut out = Vec::new();
    for (n, (_, seq, e)) in arrival.iter().enumerate() {
        st.apply(&rs, &kent, *seq, e, &mut out);
        if n % 97 == 96 {
            store_changes(&mut store, st.take_changes(&rs));
            st = reload(&rs, &st, &store).with_lateness(lateness);
        }
    }
    st.drain(&rs, &kent, &mut out);
    let got: Vec<String> = out
        .into_iter()
        .filter(|a| a.rule.id == "signin_drop")
        .map(|a| serde_json::to_string(&a).unwrap())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn silent_feed_rate_drop_parameters_are_checked() {
    let parse = |extra: &str| {
        let text = format!(
            "title: a\nid: a\ncorrelation: {{type: silent_feed, rules: [x], timespan: 1h{extra}}}\n"
        );
        parse_rules("p.yml", &text).remove(0)
    };
    let below = |extra: &str| {
        let doc = parse(extra).unwrap();
        let crate::sigma::parse::RuleBody::Correlation(c) = doc.body else {
            panic!()
        };
        (c.detector.below, c.detector.baseline_ms)
    };
    assert_eq!(below(", below: 10%"), (Some(0.1), 7 * DAY));
    assert_eq!(below(", below: 0.25, baseline: 2d"), (Some(0.25), 2 * DAY));
    assert_eq!(below("").0, None);
    for bad in [
        ", below: 0%",
        ", below: 150%",
        ", below: often",
        ", baseline: 7d",
        ", below: 10%, baseline: 30m",
        ", below: 10%, baseline: 42d",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    let text = "title: a\nid: a\ncorrelation: {type: event_count, rules: [x], timespan: 1h, below: 10%, condition: {gte: 1}}\n";
    assert!(
        parse_rules("p.yml", text)[0].is_err(),
        "below on event_count"
    );
}

/// Applies `(seq, event)` to `st`, returning the alerts raised.
fn feed_all(rs: &RuleSet, st: &mut ForceState, evs: &[(u64, Event)]) -> Vec<Alert> {
    let kent = ForceId::new("kent").unwrap();
    let mut out = Vec::new();
    for (seq, e) in evs {
        st.apply(rs, &kent, *seq, e, &mut out);
    }
    out
}

fn persist_and_reload(rs: &RuleSet, st: &mut ForceState, lateness: i64) -> ForceState {
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (k, v) in st.take_changes(rs) {
        if let Some(v) = v {
            store.insert(k, v);
        }
    }
    ForceState::load(
        rs,
        st.watermark_ms(),
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap()
    .with_lateness(lateness)
}

const MIN: i64 = 60_000;

#[test]
fn late_events_are_counted_and_the_count_persists() {
    let rs = rules();
    let lateness = MIN;
    let mut st = ForceState::new().with_lateness(lateness);
    // The watermark reaches T0 + 5 min, so the frontier is T0 + 4 min.
    feed_all(
        &rs,
        &mut st,
        &[
            (1, fail("bob", "1.1.1.1", T0)),
            (2, fail("eve", "2.2.2.2", T0 + 5 * MIN)),
        ],
    );
    assert_eq!(st.late_events(), 0);
    // Within the lateness (after the frontier): not late.
    feed_all(
        &rs,
        &mut st,
        &[(3, fail("ann", "3.3.3.3", T0 + 4 * MIN + 1))],
    );
    assert_eq!(st.late_events(), 0);
    // Behind the frontier: late.
    feed_all(&rs, &mut st, &[(4, fail("bob", "1.1.1.1", T0 + MIN))]);
    assert_eq!(st.late_events(), 1);
    let mut st = persist_and_reload(&rs, &mut st, lateness);
    assert_eq!(st.late_events(), 1, "the count survives a restart");
    feed_all(&rs, &mut st, &[(5, fail("bob", "1.1.1.1", T0 + 2 * MIN))]);
    assert_eq!(st.late_events(), 2);
    let st = persist_and_reload(&rs, &mut st, lateness);
    assert_eq!(st.late_events(), 2);
}

#[test]
fn a_late_event_still_raises_its_detection_alert() {
    let rs = rules();
    let mut st = ForceState::new().with_lateness(MIN);
    feed_all(&rs, &mut st, &[(1, fail("eve", "2.2.2.2", T0 + 10 * MIN))]);
    // A failed IMAP sign-in ten minutes behind: it feeds the brute-force count (late) and
    // matches the legacy-protocol detection, which alerts on arrival as ever.
    let imap = Event::with_time(
        SourceKind::EntraSignin,
        T0,
        json!({"client": "IMAP4", "resultType": "50126", "user": "bob", "ip": "1.1.1.1"}),
    );
    let alerts = feed_all(&rs, &mut st, &[(2, imap)]);
    assert_eq!(st.late_events(), 1);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule.id, "legacy");
    assert_eq!(alerts[0].evidence[0].seq, 2);
    assert_eq!(alerts[0].first_seen, format_ms(T0));
    // An event that only matches detection rules waits for nothing, so it is never late.
    let only = Event::with_time(SourceKind::EntraSignin, T0, json!({"client": "IMAP4"}));
    let alerts = feed_all(&rs, &mut st, &[(3, only)]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(st.late_events(), 1);
}

#[test]
fn a_late_event_counts_within_its_groups_window_and_not_beyond() {
    let rs = rules();
    // Four failures of bob from T0 + 5 min (brute force needs five within 10 min), released by
    // eve's event at T0 + 10 min (frontier T0 + 9 min); then a fifth, late.
    let run_with = |late_at: i64| {
        let mut st = ForceState::new().with_lateness(MIN);
        let mut evs: Vec<(u64, Event)> = (0..4)
            .map(|i| {
                (
                    i + 1,
                    fail("bob", "1.1.1.1", T0 + 5 * MIN + i as i64 * 1000),
                )
            })
            .collect();
        evs.push((5, fail("eve", "2.2.2.2", T0 + 10 * MIN)));
        evs.push((6, fail("bob", "1.1.1.1", late_at)));
        let alerts = feed_all(&rs, &mut st, &evs);
        assert_eq!(st.late_events(), 1);
        alerts
            .into_iter()
            .filter(|a| a.rule.id == "brute")
            .collect::<Vec<_>>()
    };
    // Four minutes before the newest: inside bob's window, it completes the count at once.
    let within = run_with(T0 + MIN);
    assert_eq!(within.len(), 1);
    assert_eq!(within[0].count, 5);
    assert_eq!(within[0].first_seen, format_ms(T0 + MIN));
    assert!(within[0].evidence.iter().any(|e| e.seq == 6));
    // Eleven minutes before the newest (beyond the timespan and its one-bucket margin): not
    // counted.
    assert!(run_with(T0 - 6 * MIN).is_empty());
}

#[test]
fn no_lateness_keeps_the_immediate_behaviour() {
    let rs = rules();
    let evs: Vec<(u64, Event)> = (0..5)
        .map(|i| (i + 1, fail("bob", "1.1.1.1", T0 + i as i64 * 1000)))
        .collect();
    // Lateness 0: nothing waits; the fifth failure raises the alert in its own `apply`.
    let mut st = ForceState::new();
    for (i, e) in evs.iter().enumerate() {
        let alerts = feed_all(&rs, &mut st, std::slice::from_ref(e));
        assert_eq!(st.pending_events(), 0);
        assert_eq!(alerts.iter().any(|a| a.rule.id == "brute"), i == 4);
    }
    assert_eq!(st.frontier_ms(), st.watermark_ms());
    // An event older than the watermark is late at once, and applied on arrival.
    let alerts = feed_all(&rs, &mut st, &[(6, fail("ann", "9.9.9.9", T0))]);
    assert_eq!(st.late_events(), 1);
    assert!(alerts.is_empty());
    assert_eq!(st.live_groups(), 4, "bob's two groups and ann's two");
    // With a lateness, the same alert waits until the watermark is the lateness past the fifth.
    let mut st = ForceState::new().with_lateness(MIN);
    let alerts = feed_all(&rs, &mut st, &evs);
    assert!(alerts.is_empty());
    assert_eq!(st.pending_events(), 5);
    let alerts = feed_all(
        &rs,
        &mut st,
        &[(6, fail("eve", "2.2.2.2", T0 + 4000 + MIN))],
    );
    assert_eq!(alerts.iter().filter(|a| a.rule.id == "brute").count(), 1);
}

/// The test rules plus `eleven` and `twelve`: event counts of a user's failures that fire at 11
/// and 12 (with 11 failures, `twelve` fires only if one counted twice).
fn counting_rules() -> RuleSet {
    let text = format!(
        "{RULES}---\ntitle: eleven\nid: eleven\ncorrelation: {{type: event_count, rules: failed, group-by: [user], timespan: 1h, condition: {{gte: 11}}}}\n---\ntitle: twelve\nid: twelve\ncorrelation: {{type: event_count, rules: failed, group-by: [user], timespan: 1h, condition: {{gte: 12}}}}\n"
    );
    compile("t.yml", &text)
}

/// Applies `changes` to a store as the node does.
fn store_changes(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, changes: StateChanges) {
    for (k, v) in changes {
        match v {
            Some(v) => store.insert(k, v),
            None => store.remove(&k),
        };
    }
}

fn reload(rs: &RuleSet, st: &ForceState, store: &BTreeMap<Vec<u8>, Vec<u8>>) -> ForceState {
    ForceState::load(
        rs,
        st.watermark_ms(),
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap()
}

#[test]
fn buffered_events_persist_as_one_segment_per_batch_and_go_when_all_are_released() {
    let rs = rules();
    let kent = ForceId::new("kent").unwrap();
    let mut st = ForceState::new().with_lateness(60_000);
    let mut store = BTreeMap::new();
    let mut out = Vec::new();
    // Two batches of events 10 s apart, all buffered (60 s lateness).
    for (i, t) in (0..6).map(|i| (i, T0 + i * 10_000)) {
        st.apply(
            &rs,
            &kent,
            i as u64 + 1,
            &fail("bob", "1.1.1.1", t),
            &mut out,
        );
        if i == 2 {
            store_changes(&mut store, st.take_changes(&rs));
        }
    }
    store_changes(&mut store, st.take_changes(&rs));
    let segments = |store: &BTreeMap<Vec<u8>, Vec<u8>>| {
        store
            .keys()
            .filter(|k| k.starts_with(SEGMENT_PREFIX))
            .count()
    };
    assert_eq!(segments(&store), 2, "one key per batch, not per event");
    assert_eq!(st.pending_events(), 6);
    // 15 s later: the first two events are released; both segments stay.
    st.apply(
        &rs,
        &kent,
        7,
        &fail("bob", "1.1.1.1", T0 + 75_000),
        &mut out,
    );
    assert_eq!(st.pending_events(), 5);
    store_changes(&mut store, st.take_changes(&rs));
    assert_eq!(segments(&store), 3);
    // Reloaded, the released events are not pending again.
    let mut back = reload(&rs, &st, &store).with_lateness(60_000);
    assert_eq!(back.pending_events(), 5);
    // Once the first batch's events are all released, its segment goes.
    back.apply(
        &rs,
        &kent,
        8,
        &fail("bob", "1.1.1.1", T0 + 85_000),
        &mut out,
    );
    store_changes(&mut store, back.take_changes(&rs));
    assert_eq!(segments(&store), 3, "batch 1 gone, batch of event 8 added");
    back.drain(&rs, &kent, &mut out);
    store_changes(&mut store, back.take_changes(&rs));
    assert_eq!(segments(&store), 0);
}

#[test]
fn lateness_changed_across_a_restart_feeds_no_event_twice() {
    // 11 failures: `eleven` must fire once, `twelve` never (it would if an event counted twice).
    let rs = counting_rules();
    let kent = ForceId::new("kent").unwrap();
    let mut st = ForceState::new().with_lateness(60_000);
    let mut store = BTreeMap::new();
    let mut out = Vec::new();
    for i in 0..10 {
        st.apply(
            &rs,
            &kent,
            i + 1,
            &fail("eve", "2.2.2.2", T0 + i as i64 * 10_000),
            &mut out,
        );
        if i == 4 {
            // The second batch releases events the first one persisted.
            store_changes(&mut store, st.take_changes(&rs));
        }
    }
    store_changes(&mut store, st.take_changes(&rs));
    assert_eq!(st.pending_events(), 6, "4 released, 6 waiting");
    // Restarted with a longer lateness: the 4 released events must not come back.
    let mut st = reload(&rs, &st, &store).with_lateness(600_000);
    assert_eq!(st.pending_events(), 6);
    st.apply(
        &rs,
        &kent,
        11,
        &fail("eve", "2.2.2.2", T0 + 100_000),
        &mut out,
    );
    st.drain(&rs, &kent, &mut out);
    let fired = |id: &str| out.iter().filter(|a| a.rule.id == id).count();
    assert_eq!((fired("eleven"), fired("twelve")), (1, 0));
}

#[test]
fn pending_events_persisted_one_per_key_are_read_and_rewritten_as_a_segment() {
    let rs = rules();
    let kent = ForceId::new("kent").unwrap();
    let evs: Vec<Event> = (0..6)
        .map(|i| fail("bob", &format!("10.0.0.{i}"), T0 + i * 10_000))
        .collect();
    let mut whole = ForceState::new().with_lateness(60_000);
    let mut want = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        whole.apply(&rs, &kent, i as u64 + 1, e, &mut want);
    }
    whole.drain(&rs, &kent, &mut want);
    // The first three as a release before segments would have stored them.
    let mut st = ForceState::new().with_lateness(60_000);
    let mut out = Vec::new();
    let mut store = BTreeMap::new();
    for (i, e) in evs.iter().enumerate().take(3) {
        st.apply(&rs, &kent, i as u64 + 1, e, &mut out);
    }
    let mut first_form = BTreeMap::new();
    for (at, p) in &st.pending {
        let mut k = Vec::new();
        Pending::key_into(*at, &mut k);
        first_form.insert(k, p.encode(&rs));
    }
    assert_eq!(first_form.len(), 3);
    store.extend(first_form.clone());
    let mut st = reload(&rs, &st, &store).with_lateness(60_000);
    assert_eq!(st.pending_events(), 3);
    store_changes(&mut store, st.take_changes(&rs));
    assert!(
        first_form.keys().all(|k| !store.contains_key(k)),
        "old keys deleted"
    );
    assert_eq!(
        store
            .keys()
            .filter(|k| k.starts_with(SEGMENT_PREFIX))
            .count(),
        1
    );
    for (i, e) in evs.iter().enumerate().skip(3) {
        st.apply(&rs, &kent, i as u64 + 1, e, &mut out);
    }
    st.drain(&rs, &kent, &mut out);
    assert_eq!(out, want);
}

#[test]
fn events_after_a_lateness_increase_are_neither_lost_nor_fed_twice() {
    // `eleven` must fire once and `twelve` never: every one of the 11 events counts once.
    let rs = counting_rules();
    let kent = ForceId::new("kent").unwrap();
    let mut st = ForceState::new().with_lateness(60_000);
    let mut store = BTreeMap::new();
    let mut out = Vec::new();
    for i in 0..10 {
        st.apply(
            &rs,
            &kent,
            i + 1,
            &fail("eve", "2.2.2.2", T0 + i as i64 * 10_000),
            &mut out,
        );
    }
    store_changes(&mut store, st.take_changes(&rs));
    // Restarted with a longer lateness, an event older than what was released arrives: it is
    // late (fed at once), not buffered in a segment that the next reload would skip.
    let mut st = reload(&rs, &st, &store).with_lateness(600_000);
    assert_eq!(
        st.frontier_ms(),
        T0 + 30_000,
        "the frontier does not go back"
    );
    st.apply(
        &rs,
        &kent,
        11,
        &fail("eve", "2.2.2.2", T0 + 20_000),
        &mut out,
    );
    assert_eq!(st.late_events(), 1);
    store_changes(&mut store, st.take_changes(&rs));
    let mut st = reload(&rs, &st, &store).with_lateness(600_000);
    st.drain(&rs, &kent, &mut out);
    let fired = |id: &str| out.iter().filter(|a| a.rule.id == id).count();
    assert_eq!((fired("eleven"), fired("twelve")), (1, 0));
}

const SUMS: &str = r#"
title: transfer
id: transfer
logsource: {product: azure, service: signinlogs}
detection: {s: {resultType: 0}, condition: s}
---
title: much data
id: much
correlation: {type: value_sum, rules: transfer, group-by: [user], timespan: 10m, condition: {gte: 100, field: bytes}}
---
title: large on average
id: large
correlation: {type: value_avg, rules: transfer, group-by: [user], timespan: 10m, condition: {gte: 30, field: bytes}, generate: true}
"#;

/// `(seq, event)` pairs applied with lateness `lateness`, persisted and reloaded halfway.
fn run_numbered(rs: &RuleSet, evs: &[(u64, Event)], lateness: i64) -> (Vec<Alert>, ForceState) {
    let kent = ForceId::new("kent").unwrap();
    let mut st = ForceState::new().with_lateness(lateness);
    let mut out = Vec::new();
    let mut store = BTreeMap::new();
    for (i, (seq, e)) in evs.iter().enumerate() {
        if i == evs.len() / 2 {
            store_changes(&mut store, st.take_changes(rs));
            st = reload(rs, &st, &store).with_lateness(lateness);
        }
        st.apply(rs, &kent, *seq, e, &mut out);
    }
    st.drain(rs, &kent, &mut out);
    (out, st)
}

#[test]
fn non_finite_numbers_count_nowhere_and_are_counted_as_bad_values() {
    let rs = compile("sums.yml", SUMS);
    let transfer = |bytes: Value, t: i64| {
        Event::with_time(
            SourceKind::EntraSignin,
            t,
            json!({"resultType": "0", "user": "bob", "bytes": bytes}),
        )
    };
    let good: Vec<(u64, Event)> = (0..8)
        .map(|i| (i + 1, transfer(json!(20 + i), T0 + i as i64 * 10_000)))
        .collect();
    let bad = ["NaN", "inf", "-Infinity", "1e999", " infinity ", "nan"];
    let mut mixed = good.clone();
    for (i, b) in bad.iter().enumerate() {
        mixed.push((
            100 + i as u64,
            transfer(json!(b), T0 + i as i64 * 10_000 + 5_000),
        ));
    }
    mixed.sort_by_key(|(_, e)| e.time_ms);
    for lateness in [0, 60_000] {
        let (expected, clean) = run_numbered(&rs, &good, lateness);
        assert!(!expected.is_empty());
        assert_eq!(clean.bad_values(), 0);
        let (alerts, st) = run_numbered(&rs, &mixed, lateness);
        assert_eq!(alerts, expected, "lateness {lateness}");
        assert!(
            alerts
                .iter()
                .all(|a| a.measured.is_some_and(f64::is_finite))
        );
        assert_eq!(st.bad_values(), bad.len() as u64, "lateness {lateness}");
    }
    // Text that is not a number is a missing value, not a bad one.
    let (_, st) = run_numbered(&rs, &[(1, transfer(json!("lots"), T0))], 0);
    assert_eq!(st.bad_values(), 0);
}

#[test]
fn a_bad_place_keeps_the_last_good_one_and_is_counted() {
    let rs = detectors();
    let place = |lat: Value, lon: Value, t: i64| {
        Event::with_time(
            SourceKind::EntraSignin,
            t,
            json!({"resultType": "0", "user": "bob", "country": "GB", "lat": lat, "lon": lon}),
        )
    };
    let good = vec![
        (1, place(json!(LONDON.0), json!(LONDON.1), T0)),
        (4, place(json!(MOSCOW.0), json!(MOSCOW.1), T0 + 3_600_000)),
    ];
    let mut mixed = good.clone();
    mixed.insert(1, (2, place(json!("NaN"), json!(MOSCOW.1), T0 + 600_000)));
    mixed.insert(2, (3, place(json!(95.0), json!("inf"), T0 + 1_200_000)));
    mixed.insert(
        3,
        (5, place(json!(MOSCOW.0), json!(-181.0), T0 + 1_800_000)),
    );
    for lateness in [0, 60_000] {
        let (expected, _) = run_numbered(&rs, &good, lateness);
        let travel: Vec<_> = fired(&expected, "travel").into_iter().cloned().collect();
        assert_eq!(travel.len(), 1);
        assert_eq!(
            travel[0].evidence.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 4],
            "London to Moscow"
        );
        let (alerts, st) = run_numbered(&rs, &mixed, lateness);
        assert_eq!(fired(&alerts, "travel"), fired(&expected, "travel"));
        assert_eq!(st.bad_values(), 3, "lateness {lateness}");
    }
}
