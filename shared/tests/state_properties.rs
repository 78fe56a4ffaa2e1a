//! Properties of the correlation state (proptest), for random event streams:
//! (a) any arrival order within the allowed lateness gives the alerts of sorted input;
//! (b) persisting the state at random points and rebuilding it from the persisted entries (a crash
//!     and restart) gives exactly the alerts of one uninterrupted run, including when the events
//!     since the last persist are redelivered;
//! (c) exporting a checkpoint mid-stream and importing it into a fresh state (another node)
//!     gives the same alerts.

use std::collections::BTreeMap;

use nmc_shared::correlate::ForceState;
use nmc_shared::event::Event;
use nmc_shared::sigma::{RuleSet, parse_rules};
use nmc_shared::state::Checkpoint;
use nmc_shared::{Alert, ForceId, SourceKind};
use proptest::prelude::*;
use serde_json::json;

const RULES: &str = r#"
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
title: brute
id: brute
correlation: {type: event_count, rules: failed, group-by: [user], timespan: 5m, condition: {gte: 4}}
---
title: spray
id: spray
correlation: {type: value_count, rules: failed, group-by: [ip], timespan: 10m, condition: {gte: 3, field: user}}
---
title: then success
id: then_success
correlation: {type: temporal_ordered, rules: [brute, success], group-by: [user], timespan: 10m, generate: true}
---
title: new ip
id: new_ip
correlation: {type: new_term, rules: success, group-by: [user], field: ip, learning: 20m}
"#;

fn rules() -> RuleSet {
    let docs = parse_rules("p.yml", RULES)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (rs, errs) = RuleSet::compile(docs);
    assert!(errs.is_empty(), "{errs:?}");
    rs
}

/// (user, ip, success?, seconds since the previous event)
type Step = (u8, u8, bool, u16);

fn events(steps: &[Step]) -> Vec<Event> {
    let mut t = 1_793_606_400_000i64;
    steps
        .iter()
        .map(|&(u, ip, ok, gap)| {
            t += i64::from(gap) * 1000;
            Event::with_time(
                SourceKind::EntraSignin,
                t,
                json!({"resultType": if ok { "0" } else { "50126" }, "user": format!("u{u}"), "ip": format!("10.0.0.{ip}")}),
            )
        })
        .collect()
}

fn persist(rs: &RuleSet, st: &mut ForceState, store: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    for (k, v) in st.take_changes(rs) {
        match v {
            Some(v) => store.insert(k, v),
            None => store.remove(&k),
        };
    }
}

/// Allowed lateness of the runs (ms).
const LATENESS: i64 = 120_000;

fn reload(rs: &RuleSet, wm: i64, store: &BTreeMap<Vec<u8>, Vec<u8>>) -> ForceState {
    ForceState::load(
        rs,
        wm,
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap()
    .with_lateness(LATENESS)
}

/// Applies `(seq, event)` in the given order, then drains the reorder buffer.
fn run(rs: &RuleSet, evs: &[(u64, &Event)]) -> Vec<Alert> {
    let force = ForceId::new("kent").unwrap();
    let mut st = ForceState::new().with_lateness(LATENESS);
    let mut out = Vec::new();
    for (seq, e) in evs {
        st.apply(rs, &force, *seq, e, &mut out);
    }
    st.drain(rs, &force, &mut out);
    out
}

fn uninterrupted(rs: &RuleSet, evs: &[Event]) -> Vec<Alert> {
    let numbered: Vec<(u64, &Event)> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e))
        .collect();
    run(rs, &numbered)
}

fn sorted(mut alerts: Vec<Alert>) -> Vec<String> {
    let mut v: Vec<String> = alerts
        .drain(..)
        .map(|a| serde_json::to_string(&a).unwrap())
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Crashes after random batches: state rolls back to the last persist, the events since are
    /// redelivered, and the alerts raised in the lost batch are raised again identically.
    #[test]
    fn restarts_with_redelivery_change_nothing(
        steps in prop::collection::vec((0u8..4, 0u8..5, any::<bool>(), 0u16..120), 1..150),
        cuts in prop::collection::vec(1usize..150, 0..40),
    ) {
        let rs = rules();
        let evs = events(&steps);
        let want = uninterrupted(&rs, &evs);
        let force = ForceId::new("kent").unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c < evs.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        // Commit points are the cuts; after each commit, the node "crashes" once mid-batch.
        let mut store = BTreeMap::new();
        let mut wm = 0;
        let mut committed: Vec<Alert> = Vec::new();
        let mut start = 0;
        for end in cuts.into_iter().chain(std::iter::once(evs.len())) {
            // A doomed attempt at the batch, lost in the crash.
            let mut doomed = reload(&rs, wm, &store);
            let mut lost = Vec::new();
            for (i, e) in evs.iter().enumerate().take(end).skip(start) {
                doomed.apply(&rs, &force, i as u64 + 1, e, &mut lost);
            }
            // The restarted actor redoes it from the persisted state, and commits.
            let mut st = reload(&rs, wm, &store);
            let mut out = Vec::new();
            for (i, e) in evs.iter().enumerate().take(end).skip(start) {
                st.apply(&rs, &force, i as u64 + 1, e, &mut out);
            }
            prop_assert_eq!(&lost, &out, "a redelivered batch raises the same alerts");
            persist(&rs, &mut st, &mut store);
            wm = st.watermark_ms();
            committed.extend(out);
            start = end;
        }
        let mut st = reload(&rs, wm, &store);
        st.drain(&rs, &force, &mut committed);
        prop_assert_eq!(committed, want);
    }

    /// Each event is delayed by a random amount below the lateness: the arrival order changes,
    /// no event is late, and the alerts are the same as for sorted input (same set; each event
    /// keeps its sequence as its identity).
    #[test]
    fn arrival_order_within_the_lateness_changes_nothing(
        steps in prop::collection::vec((0u8..4, 0u8..5, any::<bool>(), 0u16..120), 1..150),
        delays in prop::collection::vec(0i64..LATENESS, 150),
    ) {
        let rs = rules();
        let evs = events(&steps);
        let want = sorted(uninterrupted(&rs, &evs));
        let mut arrival: Vec<(i64, u64, &Event)> = evs
            .iter()
            .enumerate()
            .map(|(i, e)| (e.time_ms + delays[i], i as u64 + 1, e))
            .collect();
        arrival.sort_by_key(|(at, seq, _)| (*at, *seq));
        let shuffled: Vec<(u64, &Event)> = arrival.into_iter().map(|(_, s, e)| (s, e)).collect();
        prop_assert_eq!(sorted(run(&rs, &shuffled)), want);
    }

    /// A checkpoint exported at a random point and imported into a fresh state (another node),
    /// which then replays the rest of the stream, raises exactly the alerts of one run.
    #[test]
    fn checkpoint_export_import_mid_stream_changes_nothing(
        steps in prop::collection::vec((0u8..4, 0u8..5, any::<bool>(), 0u16..120), 1..150),
        cut in 0usize..150,
    ) {
        let rs = rules();
        let evs = events(&steps);
        let want = uninterrupted(&rs, &evs);
        let force = ForceId::new("kent").unwrap();
        let cut = cut.min(evs.len());
        let mut st = ForceState::new().with_lateness(LATENESS);
        let mut out = Vec::new();
        for (i, e) in evs.iter().enumerate().take(cut) {
            st.apply(&rs, &force, i as u64 + 1, e, &mut out);
        }
        let mut store = BTreeMap::new();
        persist(&rs, &mut st, &mut store);
        let exported = Checkpoint {
            force: "kent".into(),
            seq: cut as u64,
            entries: store.into_iter().collect(),
        }
        .to_bytes();
        drop(st);
        let imported = Checkpoint::from_bytes(&exported).unwrap();
        let mut st = ForceState::load(
            &rs,
            evs[..cut].iter().map(|e| e.time_ms).max().unwrap_or(0),
            imported.entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .unwrap()
        .with_lateness(LATENESS);
        for (i, e) in evs.iter().enumerate().skip(imported.seq as usize) {
            st.apply(&rs, &force, i as u64 + 1, e, &mut out);
        }
        st.drain(&rs, &force, &mut out);
        prop_assert_eq!(out, want);
    }
}

/// The rules above do fire on streams like the generated ones (the property is not vacuous).
#[test]
fn the_rules_fire_on_such_streams() {
    let rs = rules();
    let mut steps: Vec<Step> = (0..4).map(|i| (1, i, false, 10)).collect(); // brute force on u1
    steps.push((1, 4, true, 10)); // ... then a success: completes the sequence; u1 learns 10.0.0.4
    steps.extend((0..3).map(|u| (u + 2, 3, false, 5))); // spray from 10.0.0.3
    steps.push((1, 1, true, 1500)); // u1 learnt 10.0.0.4; 25 min later a new address
    let alerts = uninterrupted(&rs, &events(&steps));
    let ids: Vec<&str> = alerts.iter().map(|a| a.rule.id.as_str()).collect();
    for want in ["brute", "then_success", "spray", "new_ip"] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
}
