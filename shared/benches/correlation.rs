//! The correlation step alone, on one core: [`ForceState::apply_matched`] with the detection
//! matches computed outside the timed loop, 50 correlation rules and about 50,000 live group keys,
//! persisting included ([`ForceState::take_changes`] once per batch of 500 events, as the node
//! does). Two shapes:
//!
//! - **realistic**: 50 detection rules, each counted by one correlation (event_count,
//!   value_count, value_sum and temporal_ordered in turn; a temporal_ordered rule's second step is
//!   a 51st..63rd detection rule, matched by 5% of that rule's events). Every event matches one
//!   detection rule and so feeds one correlation. 1,000 users, each with one to three IP addresses.
//! - **worst case**: one detection rule that every event matches, counted by all 50 correlations
//!   (event_count, value_count, value_sum), so every event feeds 50 groups.
//!
//! Each with an allowed lateness of 0 (events reach the correlations on arrival) and of 300 s
//! (events wait in the reorder buffer, which is persisted too). Event time advances 10 ms per
//! event through the whole run; every iteration gets fresh events, generated and matched outside
//! the timed part, a batch at a time just before the batch is applied (as warm in the cache as
//! the node's freshly parsed events; the state is not: its groups are hit at random). Baseline in the same run, per shape: the same loop over the same events with the
//! correlation rules absent (each match raises its detection alert).
//!
//! Printed before the measurements: live keys, persisted bytes per live key by correlation kind
//! (key and value, as written to the store), heap bytes per live key, and persisted bytes per
//! event in the reorder buffer. The lateness-0 measurement continues from the warmed state
//! reloaded from its persisted entries (as after a restart).
//!
//! Run: `cargo bench -p nmc-shared --bench correlation` (`NMC_BENCH_SHAPE=realistic` or
//! `worst_case` for one shape).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nmc_shared::correlate::ForceState;
use nmc_shared::event::Event;
use nmc_shared::sigma::{RuleSet, parse_rules};
use nmc_shared::{ForceId, SourceKind};
use serde_json::json;

/// Counts live heap bytes while enabled (to measure the state's memory per key).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const USERS: u64 = 1000;
const CORRELATIONS: usize = 50;
/// Event time between two events.
const STEP_MS: i64 = 10;
/// Events per timed iteration.
const BATCH: usize = 20_000;
/// Events between two persists (the node's batch).
const PERSIST_EVERY: usize = 500;
const T0: i64 = 1_793_606_400_000;

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Realistic,
    Worst,
}

fn compile(text: &str) -> RuleSet {
    let docs = parse_rules("bench.yml", text)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (rs, errs) = RuleSet::compile(docs);
    assert!(errs.is_empty(), "{errs:?}");
    rs
}

fn detection(id: &str, op: &str) -> String {
    format!(
        "---\ntitle: {id}\nid: {id}\nlogsource: {{product: azure, service: signinlogs}}\ndetection: {{s: {{op: {op}}}, condition: s}}\n"
    )
}

/// The rule set of a shape, with or without its correlations.
fn rules(shape: Shape, with_correlations: bool) -> RuleSet {
    let mut text = String::new();
    match shape {
        Shape::Worst => text.push_str(
            "title: sign-in\nid: signin\nlogsource: {product: azure, service: signinlogs}\ndetection: {s: {category: SignInLogs}, condition: s}\n",
        ),
        Shape::Realistic => {
            for i in 0..CORRELATIONS {
                text.push_str(&detection(&format!("d{i}"), &format!("k{i}")));
                if i % 4 == 3 {
                    text.push_str(&detection(&format!("e{i}"), &format!("s{i}")));
                }
            }
        }
    }
    if !with_correlations {
        return compile(&text);
    }
    for i in 0..CORRELATIONS {
        // Count thresholds are high enough that groups live through the run instead of firing
        // and clearing; temporal_ordered rules fire whenever their two steps meet.
        let (kind, extra) = match (shape, i % 4) {
            (Shape::Worst, _) => match i % 3 {
                0 => ("event_count", "condition: {gte: 100000}"),
                1 => ("value_count", "condition: {gte: 100000, field: ip}"),
                _ => ("value_sum", "condition: {gt: 1.0e12, field: bytes}"),
            },
            (_, 0) => ("event_count", "condition: {gte: 100000}"),
            (_, 1) => ("value_count", "condition: {gte: 100000, field: ip}"),
            (_, 2) => ("value_sum", "condition: {gt: 1.0e12, field: bytes}"),
            _ => ("temporal_ordered", ""),
        };
        let inputs = match shape {
            Shape::Worst => "signin".to_string(),
            Shape::Realistic if i % 4 == 3 => format!("[d{i}, e{i}]"),
            Shape::Realistic => format!("d{i}"),
        };
        let (timespan, sep) = match shape {
            Shape::Worst => (5 + i % 30, if extra.is_empty() { "" } else { ", " }),
            Shape::Realistic => (30 + i % 31, if extra.is_empty() { "" } else { ", " }),
        };
        text.push_str(&format!(
            "---\ntitle: c{i}\nid: c{i}\ncorrelation: {{type: {kind}, rules: {inputs}, group-by: [user], timespan: {timespan}m{sep}{extra}}}\n"
        ));
    }
    compile(&text)
}

/// A deterministic, endless event stream of a shape.
#[derive(Clone)]
struct Stream {
    shape: Shape,
    x: u64,
    n: u64,
}

impl Stream {
    fn new(shape: Shape) -> Stream {
        Stream {
            shape,
            x: 0x2545_F491_4F6C_DD1D,
            n: 0,
        }
    }

    fn next(&mut self) -> (u64, Event) {
        let x = &mut self.x;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        let r = *x;
        let seq = self.n + 1;
        let t = T0 + self.n as i64 * STEP_MS;
        self.n += 1;
        let user = r % USERS;
        let body = match self.shape {
            Shape::Worst => {
                let ip = (r >> 20) % 100;
                json!({"category": "SignInLogs", "user": format!("user{user}@force.police.uk"),
                       "ip": format!("10.1.{}.{}", ip / 10, ip % 10), "bytes": (r >> 40) % 5000})
            }
            Shape::Realistic => {
                let rule = (r >> 10) % CORRELATIONS as u64;
                let op = if rule % 4 == 3 && (r >> 20).is_multiple_of(20) {
                    format!("s{rule}")
                } else {
                    format!("k{rule}")
                };
                // Each user signs in from one to three addresses of their own.
                let ip = (r >> 30) % (1 + user % 3);
                json!({"category": "SignInLogs", "op": op,
                       "user": format!("user{user}@force.police.uk"),
                       "ip": format!("10.{}.{}.{ip}", user / 256, user % 256),
                       "bytes": (r >> 40) % 5000})
            }
        };
        (seq, Event::with_time(SourceKind::EntraSignin, t, body))
    }

    /// The next `n` events with their sequences and detection matches (untimed work).
    fn batch(&mut self, rules: &RuleSet, n: usize) -> Vec<(u64, Event, Vec<usize>)> {
        (0..n)
            .map(|_| {
                let (seq, e) = self.next();
                let m: Vec<usize> = rules.matching(&e).collect();
                assert_eq!(m.len(), 1, "every event matches one detection rule");
                (seq, e, m)
            })
            .collect()
    }
}

/// One timed iteration: `BATCH` events in batches of `PERSIST_EVERY`, each generated and
/// matched (untimed) just before it is applied and persisted (timed), as the node parses and
/// matches a batch's events as it applies them: the events are as warm in the cache as there,
/// the groups (hit at random) are not.
fn run(
    st: &mut ForceState,
    stream: &mut Stream,
    rules: &RuleSet,
    force: &ForceId,
    out: &mut Vec<nmc_shared::Alert>,
) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..BATCH / PERSIST_EVERY {
        let evs = stream.batch(rules, PERSIST_EVERY);
        let start = Instant::now();
        for (seq, e, m) in &evs {
            st.apply_matched(rules, force, *seq, e, m, out);
        }
        black_box(st.take_changes(rules));
        timed += start.elapsed();
        out.clear();
    }
    timed
}

/// Longest timespan of a shape's correlations.
fn longest_ms(rules: &RuleSet) -> i64 {
    rules
        .correlations()
        .iter()
        .map(|c| c.params.timespan_ms)
        .max()
        .unwrap_or(0)
}

/// A state warmed up to steady state (every group's timespan filled), its generator positioned
/// after the warm-up events, and the persisted store (key to value) as the node would hold it.
fn warm(
    shape: Shape,
    rules: &RuleSet,
    lateness_ms: i64,
    force: &ForceId,
) -> (ForceState, Stream, BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut stream = Stream::new(shape);
    let mut st = ForceState::new().with_lateness(lateness_ms);
    let mut store = BTreeMap::new();
    let mut out = Vec::new();
    let events = (longest_ms(rules) + 2 * lateness_ms + 600_000) / STEP_MS;
    for _ in 0..(events as usize).div_ceil(BATCH) {
        for chunk in stream.batch(rules, BATCH).chunks(PERSIST_EVERY) {
            for (seq, e, m) in chunk {
                st.apply_matched(rules, force, *seq, e, m, &mut out);
            }
            out.clear();
            for (k, v) in st.take_changes(rules) {
                match v {
                    Some(v) => store.insert(k, v),
                    None => store.remove(&k),
                };
            }
        }
    }
    (st, stream, store)
}

/// Prints live keys, persisted bytes per key by correlation kind and heap bytes per key of a
/// warmed state with no lateness; returns an identical state, loaded from the persisted store.
fn report(shape: Shape, name: &str, rules: &RuleSet, force: &ForceId) -> (ForceState, Stream) {
    let (st, stream, store) = warm(shape, rules, 0, force);
    let kind_of: BTreeMap<&str, &str> = rules
        .correlations()
        .iter()
        .map(|c| (c.meta.id.as_str(), c.meta.kind.as_str()))
        .collect();
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (k, v) in &store {
        let Some(zero) = k.iter().position(|&b| b == 0) else {
            continue;
        };
        let rule = std::str::from_utf8(&k[..zero]).unwrap();
        let Some(kind) = kind_of.get(rule) else {
            continue;
        };
        let e = by_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += k.len() + v.len();
    }
    let keys: usize = by_kind.values().map(|e| e.0).sum();
    let bytes: usize = by_kind.values().map(|e| e.1).sum();
    eprintln!(
        "{name}: {} live keys ({keys} persisted); persisted bytes per live key: {:.0} overall",
        st.live_groups(),
        bytes as f64 / keys.max(1) as f64
    );
    for (kind, (n, b)) in &by_kind {
        eprintln!(
            "{name}:   {kind}: {n} keys, {:.0} bytes per key",
            *b as f64 / (*n).max(1) as f64
        );
    }
    let loaded = ForceState::load(
        rules,
        st.watermark_ms(),
        store.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .unwrap();
    let live = st.live_groups();
    // The heap the warmed state held: what dropping it frees.
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    drop(st);
    COUNTING.store(false, Ordering::Relaxed);
    eprintln!(
        "{name}: heap held by the state: {:.0} bytes per live key",
        -LIVE.load(Ordering::Relaxed) as f64 / live.max(1) as f64
    );
    (loaded, stream)
}

fn bench_shape(c: &mut Criterion, shape: Shape, name: &str) {
    let force = ForceId::new("kent").unwrap();
    let with = rules(shape, true);
    let without = rules(shape, false);
    let (loaded, stream) = report(shape, name, &with, &force);

    let mut g = c.benchmark_group(format!("correlation_{name}"));
    g.throughput(Throughput::Elements(BATCH as u64));
    {
        let mut stream = Stream::new(shape);
        let mut st = ForceState::new();
        let mut out = Vec::new();
        g.bench_function("detection_only_baseline", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run(&mut st, &mut stream, &without, &force, &mut out))
                    .sum()
            })
        });
    }
    let mut warmed = Some((loaded, stream));
    for lateness_s in [0i64, 300] {
        let (mut st, mut stream) = match warmed.take() {
            Some(w) => w,
            None => {
                let (st, stream, store) = warm(shape, &with, lateness_s * 1000, &force);
                // Pending events are persisted in segments, one per batch that added any.
                let (segments, b) = store
                    .iter()
                    .filter(|(k, _)| k.starts_with(b"\x01s"))
                    .fold((0, 0), |(n, b), (k, v)| (n + 1, b + k.len() + v.len()));
                let n = st.pending_events();
                eprintln!(
                    "{name}: lateness {lateness_s} s: {n} events pending in {segments} segments, {:.0} persisted bytes per pending event",
                    b as f64 / n.max(1) as f64
                );
                (st, stream)
            }
        };
        let mut out = Vec::new();
        g.bench_function(format!("50_rules_lateness_{lateness_s}s"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run(&mut st, &mut stream, &with, &force, &mut out))
                    .sum()
            })
        });
        eprintln!(
            "{name}: lateness {lateness_s} s: {} live keys after the measurement",
            st.live_groups()
        );
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    // `NMC_BENCH_SHAPE=realistic` (or `worst_case`) runs one shape only, warm-up included (for
    // profiling).
    let only = std::env::var("NMC_BENCH_SHAPE").ok();
    for (shape, name) in [
        (Shape::Realistic, "realistic"),
        (Shape::Worst, "worst_case"),
    ] {
        if only.as_deref().is_none_or(|o| o == name) {
            bench_shape(c, shape, name);
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
