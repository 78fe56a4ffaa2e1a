//! State written by the release before per-kind state (`testdata/legacy_state.txt`, captured
//! from that release's code by `write_legacy_fixture`) still loads, and the alerts after it are
//! the ones that release raised.
//!
//! The scenario covers every kind (count kinds with values, sums and a suppression running,
//! sequences, a chained sequence, `new_term`'s baseline, `impossible_travel`'s last place, a
//! silent feed and a rate drop), the reorder buffer (segments) and the late counter.

use std::collections::BTreeMap;

use super::*;
use crate::sigma::parse_rules;
use crate::source::SourceKind;
use serde_json::json;

/// Correlations of every kind (shared with the fuzz targets, which feed them the same way).
const RULES: &str = crate::fuzzing::CORRELATION_RULES;

pub(super) fn rules() -> RuleSet {
    let docs = parse_rules("compat.yml", RULES)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (rs, errs) = RuleSet::compile(docs);
    assert!(errs.is_empty(), "{errs:?}");
    rs
}

const T0: i64 = 1_790_000_000_000;
const LATENESS: i64 = 60_000;
/// Events applied before the state is persisted (the cut).
pub(super) const CUT: usize = 260;

/// A deterministic stream: sign-ins of five users from a few places, with failures, byte counts
/// and apps; CloudTrail events that stop for a while; sign-ins that thin out (a rate drop); a
/// few events later than the lateness.
pub(super) fn stream() -> Vec<(u64, Event)> {
    let cities = [
        (51.507, -0.128, "GB"),
        (53.480, -2.242, "GB"),
        (55.756, 37.617, "RU"),
        (48.857, 2.352, "FR"),
        (40.713, -74.006, "US"),
        (35.676, 139.650, "JP"),
    ];
    let apps = [
        "mail",
        "mail",
        "mail",
        "teams",
        "mail",
        "sharepoint",
        "mail",
        "teams",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = T0;
    let mut out = Vec::new();
    for i in 0..520u64 {
        let r = next();
        // Busy for the first ~4 hours (every 40-60 s), then sparse (a drop).
        t += if i < 300 {
            40_000 + (r % 20_000) as i64
        } else {
            180_000 + (r % 60_000) as i64
        };
        let u = (r >> 8) % 5;
        let user = format!("u{u}");
        // Users stay in a city for a while; a few jumps (to Tokyo only late in the stream).
        let city = if r % 20 == 0 {
            ((r >> 16) % if i < 350 { 5 } else { 6 }) as usize
        } else {
            ((u + i / 120) % 5) as usize
        };
        let (lat, lon, country) = cities[city];
        let ev = match (r >> 24) % 10 {
            0..=2 => Event::with_time(
                SourceKind::EntraSignin,
                t,
                json!({"resultType": "50126", "user": user, "ip": format!("10.0.0.{}", (r >> 32) % 3)}),
            ),
            3 if !(100..200).contains(&i) => {
                Event::with_time(SourceKind::AwsCloudtrail, t, json!({"eventName": "X"}))
            }
            _ => Event::with_time(
                SourceKind::EntraSignin,
                t,
                json!({
                    "resultType": "0", "user": user, "ip": "10.0.1.1",
                    "bytes": ((r >> 40) % 1500).to_string(), "app": apps[((r >> 48) % 8) as usize],
                    "country": country, "lat": lat, "lon": lon,
                }),
            ),
        };
        // Every 50th event arrives late (stamped before the frontier).
        let ev = if i % 50 == 49 {
            Event::with_time(ev.source, t - 5 * LATENESS, ev.body.clone())
        } else {
            ev
        };
        out.push((i + 1, ev));
    }
    out
}

fn force() -> ForceId {
    ForceId::new("kent").unwrap()
}

fn to_json(alerts: &[Alert]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Applies events `evs` to `st`, returning the alerts (drained at the end when `drain`).
fn apply(rs: &RuleSet, st: &mut ForceState, evs: &[(u64, Event)], drain: bool) -> Vec<Alert> {
    let mut out = Vec::new();
    for (seq, e) in evs {
        st.apply(rs, &force(), *seq, e, &mut out);
    }
    if drain {
        st.drain(rs, &force(), &mut out);
    }
    out
}

/// Writes the fixture from the code at hand: `NMC_WRITE_FIXTURE=path cargo test ... --ignored`.
/// `testdata/legacy_state.txt` was written so at b6e450f, before per-kind state: do not
/// overwrite it (it would then hold the current form); write a new file to pin the current form
/// before its next change.
#[test]
#[ignore]
fn write_legacy_fixture() {
    let Ok(path) = std::env::var("NMC_WRITE_FIXTURE") else {
        return;
    };
    let rs = rules();
    let evs = stream();
    let mut st = ForceState::new().with_lateness(LATENESS);
    apply(&rs, &mut st, &evs[..CUT], false);
    let mut text = format!("# watermark {}\n", st.watermark_ms());
    let store: BTreeMap<Vec<u8>, Vec<u8>> = st
        .take_changes(&rs)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let after = apply(&rs, &mut st, &evs[CUT..], true);
    for (k, v) in &store {
        text.push_str(&format!("{} {}\n", hex(k), hex(v)));
    }
    text.push_str("---\n");
    for a in to_json(&after) {
        text.push_str(&a);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Persisted entries: keys and values.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The fixture: watermark, persisted entries, and the alerts after the cut, as JSON lines.
fn fixture() -> (i64, Entries, Vec<&'static str>) {
    let text = include_str!("testdata/legacy_state.txt");
    let (head, alerts) = text.split_once("---\n").unwrap();
    let mut lines = head.lines();
    let wm = lines.next().unwrap().strip_prefix("# watermark ").unwrap();
    let store = lines
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (unhex(k), unhex(v))
        })
        .collect();
    (wm.parse().unwrap(), store, alerts.lines().collect())
}

#[test]
fn state_of_the_previous_release_loads_and_raises_its_alerts() {
    let rs = rules();
    let evs = stream();
    let (wm, store, expected) = fixture();
    let mut st = ForceState::load(
        &rs,
        wm,
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap()
    .with_lateness(LATENESS);
    assert_eq!(st.late_events(), 5, "the late counter of the old Meta");
    assert_eq!(st.bad_values(), 0);
    assert!(st.pending_events() > 0, "the fixture holds buffered events");
    // Every kind's groups are there, and none is larger in the current form.
    let kinds: Vec<&str> = rs
        .correlations()
        .iter()
        .enumerate()
        .filter(|(c, _)| st.groups[*c].len() > 0)
        .map(|(_, corr)| corr.meta.id.as_str())
        .collect();
    assert_eq!(kinds.len(), rs.correlations().len(), "{kinds:?}");
    for (k, v) in &store {
        let Some((rule, key)) = split_group_key(k) else {
            continue;
        };
        let Some(c) = rs.correlations().iter().position(|c| c.meta.id == rule) else {
            continue;
        };
        let g = st.groups[c].get_mut(st.prints.of(key)).unwrap();
        assert!(
            g.encode().len() <= v.len(),
            "{rule} {key}: {} > {}",
            g.encode().len(),
            v.len()
        );
    }
    let after = apply(&rs, &mut st, &evs[CUT..], true);
    assert_eq!(to_json(&after), expected);
    // The same stream uninterrupted gives them too.
    let mut st = ForceState::new().with_lateness(LATENESS);
    apply(&rs, &mut st, &evs[..CUT], false);
    assert_eq!(to_json(&apply(&rs, &mut st, &evs[CUT..], true)), expected);
}

#[test]
fn state_loaded_from_the_previous_release_persists_in_the_current_form() {
    let rs = rules();
    let evs = stream();
    let (wm, store, expected) = fixture();
    let mut st = ForceState::load(
        &rs,
        wm,
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap()
    .with_lateness(LATENESS);
    // A few more events, persisted (the changed groups in the current form, the rest still in
    // the legacy one), reloaded, then the rest.
    let mut out = apply(&rs, &mut st, &evs[CUT..CUT + 40], false);
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = store.into_iter().collect();
    for (k, v) in st.take_changes(&rs) {
        match v {
            Some(v) => store.insert(k, v),
            None => store.remove(&k),
        };
    }
    let mut st = ForceState::load(
        &rs,
        st.watermark_ms(),
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap()
    .with_lateness(LATENESS);
    out.extend(apply(&rs, &mut st, &evs[CUT + 40..], true));
    assert_eq!(to_json(&out), expected);
}
