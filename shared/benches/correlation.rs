//! The correlation step alone: 50 correlation rules over one detection rule that every event
//! matches, with about 50,000 live group keys (1,000 users x 50 rules), on one core. Reports
//! events/s (criterion) and the persisted bytes per live key (printed). Baseline in the same run:
//! the same events through the detection rule alone (no correlation).
//!
//! Run: `cargo bench -p nmc-shared --bench correlation`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nmc_shared::correlate::ForceState;
use nmc_shared::event::Event;
use nmc_shared::sigma::{RuleSet, parse_rules};
use nmc_shared::{ForceId, SourceKind};
use serde_json::json;

fn rules(correlations: usize) -> RuleSet {
    let mut text = String::from(
        "title: sign-in\nid: signin\nlogsource: {product: azure, service: signinlogs}\ndetection: {s: {category: SignInLogs}, condition: s}\n",
    );
    for i in 0..correlations {
        // Thresholds high enough that groups live through the run instead of firing and clearing.
        let (kind, extra) = match i % 3 {
            0 => ("event_count", "condition: {gte: 100000}".to_string()),
            1 => (
                "value_count",
                "condition: {gte: 100000, field: ip}".to_string(),
            ),
            _ => (
                "value_sum",
                "condition: {gt: 1.0e12, field: bytes}".to_string(),
            ),
        };
        text.push_str(&format!(
            "---\ntitle: c{i}\nid: c{i}\ncorrelation: {{type: {kind}, rules: [signin], group-by: [user], timespan: {}m, {extra}}}\n",
            5 + i % 30
        ));
    }
    let docs = parse_rules("bench.yml", &text)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (rs, errs) = RuleSet::compile(docs);
    assert!(errs.is_empty(), "{errs:?}");
    rs
}

fn events(n: usize) -> Vec<Event> {
    let t0 = 1_793_606_400_000i64;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let user = x % 1000;
            let ip = (x >> 20) % 100;
            Event::with_time(
                SourceKind::EntraSignin,
                t0 + i as i64 * 10,
                json!({"category": "SignInLogs", "user": format!("user{user}@force.police.uk"),
                       "ip": format!("10.1.{}.{}", ip / 10, ip % 10), "bytes": (x >> 40) % 5000}),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let force = ForceId::new("kent").unwrap();
    let evs = events(20_000);
    let with = rules(50);
    let without = rules(0);

    // Warm state: 1,000 users x 50 rules live groups.
    let mut st = ForceState::new();
    let mut out = Vec::new();
    for (i, e) in events(60_000).iter().enumerate() {
        st.apply(&with, &force, i as u64, e, &mut out);
    }
    let changes = st.take_changes(&with);
    let bytes: usize = changes
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    eprintln!(
        "{} live groups, {} persisted bytes, {:.0} bytes per live key",
        st.live_groups(),
        bytes,
        bytes as f64 / st.live_groups().max(1) as f64
    );

    let mut g = c.benchmark_group("correlation");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("detection_only_baseline", |b| {
        let mut st = ForceState::new();
        let mut out = Vec::new();
        b.iter(|| {
            for (i, e) in evs.iter().enumerate() {
                st.apply(&without, &force, i as u64, e, &mut out);
            }
            black_box(out.len())
        })
    });
    g.bench_function("50_rules_50k_keys", |b| {
        b.iter(|| {
            for (i, e) in evs.iter().enumerate() {
                st.apply(&with, &force, i as u64, e, &mut out);
            }
            black_box(st.take_changes(&with).len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
