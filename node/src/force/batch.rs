//! Evaluating one batch of raw stream messages against a force's state: parse, route bad input to
//! dead letters, apply good events, and catch a panicking evaluation so that it can be retried and
//! finally dead-lettered instead of killing the force.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use nmc_shared::correlate::ForceState;
use nmc_shared::dead_letter::DeadLetterReason;
use nmc_shared::event::Event;
use nmc_shared::sigma::RuleSet;
use nmc_shared::{ForceId, Level, subject};

use crate::bus::DeadLetter;
use crate::store::{OutboxEntry, Poison};
use crate::telemetry::metrics::BatchStats;

/// One message as read from `NMC_EVENTS_<force>`.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was published to.
    pub subject: String,
    /// Payload.
    pub payload: Bytes,
    /// When the stream stored it (Unix ms): the event's ingest time.
    pub ingest_ms: i64,
    /// Its W3C `traceparent` header, if a collector set one (not read from oversize headers).
    pub traceparent: Option<String>,
    /// Total size of its NATS headers (names and values), in bytes.
    pub header_bytes: usize,
}

/// Settings that shape evaluation.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Node id written on alerts.
    pub node: String,
    /// Lease epoch written on alerts.
    pub epoch: u64,
    /// Rule pack version written on alerts.
    pub rule_pack: String,
    /// The force's onboarding phase: events of sources it does not admit are dead-lettered.
    pub phase: nmc_shared::onboarding::OnboardingPhase,
    /// Largest accepted payload.
    pub max_event_bytes: usize,
    /// Attempts before a panicking event is dead-lettered.
    pub max_attempts: u32,
    /// Test fault injection: events carrying this top-level field panic ([`super::fault`]).
    pub panic_field: Option<String>,
    /// Events stamped further ahead of `now_ms` are dead-lettered (`future_time`).
    pub max_future_ms: i64,
    /// Events stamped further behind `now_ms` are dead-lettered (`past_time`); 0: no limit.
    pub max_past_ms: i64,
    /// Messages whose headers are larger are dead-lettered (`oversize_headers`).
    pub max_header_bytes: usize,
    /// The node's clock when the batch was read.
    pub now_ms: i64,
}

/// An alert a batch raised: what to publish, and what its latency is measured from.
#[derive(Debug, Clone)]
pub struct Raised {
    /// Its outbox key: (sequence of the event that raised it, index within the event).
    pub key: (u64, u16),
    /// Its level.
    pub level: Level,
    /// Its rule's id.
    pub rule: String,
    /// Ingest time of the event that raised it (Unix ms).
    pub ingest_ms: i64,
    /// Event time of that event (Unix ms).
    pub event_ms: i64,
    /// Its subject, id and stamped JSON.
    pub entry: OutboxEntry,
}

/// A batch evaluated: the force's state in memory has moved on to `cursor`; its changes are
/// taken from the state when the worker commits (see `ForceState::take_changes`).
pub struct Evaluated {
    /// The last sequence of the batch: the cursor once its state is committed.
    pub cursor: u64,
    /// Whether the poison record can go (its event is now behind `cursor`).
    pub clear_poison: bool,
    /// Events to dead-letter first.
    pub dead: Vec<DeadLetter>,
    /// Events applied to state.
    pub applied: usize,
    /// Of those, events whose time came from an ingest-time field (none of their source's own
    /// time fields was present), and the last such field.
    pub ingest_time: (usize, Option<&'static str>),
    /// What the batch did, per source, reason and level (for the metrics).
    pub stats: BatchStats,
    /// The alerts it raised, in the order they are published (sequence, then index).
    pub raised: Vec<Raised>,
}

/// What a batch produced.
pub enum Outcome {
    /// The batch was evaluated (boxed: it is large, and made once per batch).
    Done(Box<Evaluated>),
    /// Evaluating the event at `seq` panicked; the in-memory state is no longer trustworthy.
    Panicked {
        /// The poison event's sequence.
        seq: u64,
        /// The panic message.
        message: String,
    },
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

fn ev_too_far_ahead(ev: &Event, s: &EvalSettings) -> bool {
    s.now_ms > 0 && ev.time_ms > s.now_ms.saturating_add(s.max_future_ms)
}

fn ev_too_far_behind(ev: &Event, s: &EvalSettings) -> bool {
    s.now_ms > 0 && s.max_past_ms > 0 && ev.time_ms < s.now_ms.saturating_sub(s.max_past_ms)
}

/// Evaluates `raws` (in stream order) for `force`, mutating `state`.
pub fn evaluate(
    force: &ForceId,
    rules: &RuleSet,
    state: &mut ForceState,
    raws: &[Raw],
    poison: Option<&Poison>,
    s: &EvalSettings,
) -> Outcome {
    let (mut cursor, mut clear_poison) = (0, false);
    let mut dead = Vec::new();
    let mut applied = 0;
    let mut ingest_time = (0, None);
    let mut stats = BatchStats::default();
    let mut raised = Vec::new();
    let mut alerts = Vec::new();
    let dlq = subject::dlq(force);
    for raw in raws {
        let source = subject::parse_events(&raw.subject).map(|(_, source)| source);
        let per_source = stats
            .sources
            .entry(source.as_ref().ok().copied())
            .or_default();
        per_source.received += 1;
        per_source.newest_ingest_ms = per_source.newest_ingest_ms.max(raw.ingest_ms);
        let dead_letter = |reason: DeadLetterReason, error: String| DeadLetter {
            subject: dlq.clone(),
            seq: raw.seq,
            from_subject: raw.subject.clone(),
            reason,
            error,
            payload: raw.payload.clone(),
        };
        cursor = raw.seq;
        if let Some(p) = poison.filter(|p| p.seq == raw.seq && p.attempts >= s.max_attempts) {
            dead.push(dead_letter(
                DeadLetterReason::EvaluationPanic,
                format!(
                    "rule evaluation panicked {} times on this event: {}",
                    p.attempts, p.reason
                ),
            ));
            clear_poison = true;
            continue;
        }
        let source = match source {
            Ok(source) => source,
            Err(e) => {
                dead.push(dead_letter(e.reason(), e.to_string()));
                continue;
            }
        };
        if raw.header_bytes > s.max_header_bytes {
            dead.push(dead_letter(
                DeadLetterReason::OversizeHeaders,
                format!(
                    "NATS headers of {} bytes exceed the limit of {} bytes (nmc `max_header_bytes`); they were not read",
                    raw.header_bytes, s.max_header_bytes
                ),
            ));
            continue;
        }
        if !s.phase.admits(source) {
            dead.push(dead_letter(
                DeadLetterReason::SourceNotInPhase,
                format!(
                    "force `{force}` is onboarded for {:?} sources only; `{source}` events are not processed until `nmc forces set-phase {force} cloud_and_onprem`",
                    s.phase
                ),
            ));
            continue;
        }
        // Only what the rules read is built (whole events when a test injects faults by field).
        let parsed = match s.panic_field {
            Some(_) => Event::parse(source, &raw.payload, s.max_event_bytes),
            None => rules.parse_event(source, &raw.payload, s.max_event_bytes),
        };
        let event = match parsed {
            Ok(ev) => ev,
            Err(e) => {
                dead.push(dead_letter(e.reason(), e.to_string()));
                continue;
            }
        };
        if ev_too_far_ahead(&event, s) {
            dead.push(dead_letter(
                DeadLetterReason::FutureTime,
                format!(
                    "event time {} is more than {} s ahead of this node's clock; fix the source's clock or time field",
                    nmc_shared::time::format_ms(event.time_ms),
                    s.max_future_ms / 1000
                ),
            ));
            continue;
        }
        if ev_too_far_behind(&event, s) {
            dead.push(dead_letter(
                DeadLetterReason::PastTime,
                format!(
                    "event time {} is more than {} s behind this node's clock (nmc `max_past_secs`); fix the source's clock, or raise the limit for a backfill",
                    nmc_shared::time::format_ms(event.time_ms),
                    s.max_past_ms / 1000
                ),
            ));
            continue;
        }
        let before = alerts.len();
        let late = event.time_ms < state.frontier_ms();
        let result = catch_unwind(AssertUnwindSafe(|| {
            if let Some(f) = &s.panic_field
                && event.body.get(f).is_some()
            {
                panic!("fault injection: event carries `{f}`");
            }
            state.apply(rules, force, raw.seq, &event, &mut alerts);
        }));
        if let Err(p) = result {
            return Outcome::Panicked {
                seq: raw.seq,
                message: panic_message(p.as_ref()),
            };
        }
        applied += 1;
        let per_source = stats.sources.entry(Some(source)).or_default();
        per_source.applied += 1;
        per_source.late += u64::from(late);
        per_source.newest_event_ms = per_source.newest_event_ms.max(event.time_ms);
        if let Some(field) = event.time_from.fallback() {
            ingest_time = (ingest_time.0 + 1, Some(field));
            per_source.ingest_time += 1;
        }
        for (n, mut alert) in alerts.drain(before..).enumerate() {
            alert.node.clone_from(&s.node);
            alert.epoch = s.epoch;
            alert.rule_pack.clone_from(&s.rule_pack);
            let payload = serde_json::to_vec(&alert).expect("alerts serialize");
            *stats.alerts.entry(alert.rule.level).or_default() += 1;
            raised.push(Raised {
                key: (raw.seq, n as u16),
                level: alert.rule.level,
                rule: alert.rule.id.clone(),
                ingest_ms: raw.ingest_ms,
                event_ms: event.time_ms,
                entry: OutboxEntry {
                    subject: subject::alerts(force, alert.rule.level),
                    id: alert.id.to_string(),
                    payload,
                },
            });
        }
    }
    for d in &dead {
        *stats.dead.entry(d.reason).or_default() += 1;
    }
    Outcome::Done(Box::new(Evaluated {
        cursor,
        clear_poison,
        dead,
        applied,
        ingest_time,
        stats,
        raised,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use nmc_shared::onboarding::OnboardingPhase;

    use super::*;

    const T0: i64 = 1_793_606_400_000;

    /// One detection of wrong passwords (alerting on its own), and the identity pack, whose
    /// correlations the same events feed.
    fn rules() -> RuleSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules/identity");
        let mut files = crate::rules::read_texts(&[dir]).unwrap();
        files.push((
            "wrong_password.yml".into(),
            "title: Wrong password\nid: 0b9e3c52-0000-4000-8000-000000000001\nlogsource:\n  product: azure\n  service: signinlogs\ndetection:\n  selection:\n    resultType: 50126\n  condition: selection\nlevel: high\n".into(),
        ));
        let (set, errors) = crate::rules::compile_texts(&files, &Default::default());
        assert!(errors.is_empty(), "{errors:?}");
        set
    }

    fn settings() -> EvalSettings {
        EvalSettings {
            node: "node-a".into(),
            epoch: 7,
            rule_pack: "pack-3".into(),
            phase: OnboardingPhase::Cloud,
            max_event_bytes: 4096,
            max_attempts: 3,
            panic_field: None,
            max_future_ms: 900_000,
            max_past_ms: 0,
            max_header_bytes: 8192,
            now_ms: T0 + 3_600_000,
        }
    }

    /// A sign-in of bob at `T0 + secs`, failed with a wrong password or not.
    fn signin(secs: i64, failed: bool) -> Vec<u8> {
        let v = crate::synth::signin(
            T0 + secs * 1000,
            secs as u64,
            "bob.smith@kent.police.uk",
            "45.155.205.99",
            "Azure Portal",
            "Browser",
            if failed { 50126 } else { 0 },
            ("Amsterdam", 52.37, 4.89),
            "NL",
        );
        serde_json::to_vec(&v).unwrap()
    }

    fn raw(seq: u64, subject: &str, payload: &[u8]) -> Raw {
        Raw {
            seq,
            subject: subject.into(),
            payload: Bytes::copy_from_slice(payload),
            ingest_ms: T0 + 600_000 + seq as i64,
            traceparent: None,
            header_bytes: 0,
        }
    }

    const SIGNIN: &str = "nmc.events.kent.entra_signin";

    fn evaluated(o: Outcome) -> Evaluated {
        match o {
            Outcome::Done(e) => *e,
            Outcome::Panicked { seq, message } => panic!("panicked at {seq}: {message}"),
        }
    }

    fn done(o: Outcome) -> (Evaluated, Vec<DeadLetter>, usize) {
        let mut e = evaluated(o);
        let dead = std::mem::take(&mut e.dead);
        let applied = e.applied;
        (e, dead, applied)
    }

    #[test]
    fn good_events_raise_stamped_alerts() {
        let (rules, force) = (rules(), ForceId::new("kent").unwrap());
        let mut state = ForceState::new();
        let raws = [
            raw(11, SIGNIN, &signin(0, true)),
            raw(12, SIGNIN, &signin(5, false)),
        ];
        let (commit, dead, applied) = done(evaluate(
            &force,
            &rules,
            &mut state,
            &raws,
            None,
            &settings(),
        ));
        assert!(dead.is_empty());
        assert_eq!((applied, commit.cursor), (2, 12));
        assert_eq!(state.watermark_ms(), T0 + 5_000);
        let failed: Vec<_> = commit.raised.iter().filter(|r| r.key.0 == 11).collect();
        assert!(
            !failed.is_empty(),
            "the failed sign-in raises its detection"
        );
        for e in commit.raised.iter().map(|r| &r.entry) {
            let a: nmc_shared::Alert = serde_json::from_slice(&e.payload).unwrap();
            assert_eq!(
                (a.node.as_str(), a.epoch, a.rule_pack.as_str()),
                ("node-a", 7, "pack-3")
            );
            assert_eq!(e.subject, subject::alerts(&force, a.rule.level));
            assert_eq!(e.id, a.id.to_string());
        }
    }

    #[test]
    fn bad_input_is_dead_lettered_with_its_reason_and_the_cursor_moves_on() {
        let (rules, force) = (rules(), ForceId::new("kent").unwrap());
        let mut state = ForceState::new();
        let far_future = {
            let mut s = settings();
            s.now_ms = T0;
            s.max_future_ms = 0;
            s
        };
        let raws = [
            raw(1, SIGNIN, b"{not json"),
            raw(2, SIGNIN, b"[1, 2]"),
            raw(3, SIGNIN, br#"{"no": "time"}"#),
            raw(4, "nmc.events.kent.netflow", &signin(0, true)),
            raw(5, "nmc.events.kent.sysmon", &signin(0, true)),
            raw(6, SIGNIN, &[b' '; 5000]),
            raw(7, SIGNIN, &signin(60, true)),
        ];
        let (commit, dead, applied) = done(evaluate(
            &force,
            &rules,
            &mut state,
            &raws,
            None,
            &far_future,
        ));
        let reasons: Vec<(u64, &str)> = dead.iter().map(|d| (d.seq, d.reason.as_str())).collect();
        assert_eq!(
            reasons,
            vec![
                (1, "malformed_json"),
                (2, "not_an_object"),
                (3, "missing_time"),
                (4, "unknown_source"),
                (5, "source_not_in_phase"),
                (6, "oversize"),
                (7, "future_time"),
            ]
        );
        assert!(dead.iter().all(|d| d.subject == "nmc.dlq.kent"));
        assert_eq!(
            dead[0].payload.as_ref(),
            b"{not json",
            "the original payload"
        );
        assert_eq!((applied, commit.cursor), (0, 7));
        assert!(commit.raised.is_empty());
    }

    #[test]
    fn events_without_their_own_time_field_take_the_ingest_time_and_are_counted() {
        let (rules, force) = (rules(), ForceId::new("kent").unwrap());
        let mut shipped: serde_json::Value = serde_json::from_slice(&signin(30, true)).unwrap();
        // As shipped through Logstash: the source's own time fields gone, `@timestamp` set.
        let own = shipped.as_object_mut().unwrap().remove("time").unwrap();
        shipped["properties"]
            .as_object_mut()
            .unwrap()
            .remove("createdDateTime");
        shipped["@timestamp"] = own;
        let raws = [
            raw(1, SIGNIN, &signin(0, true)),
            raw(2, SIGNIN, &serde_json::to_vec(&shipped).unwrap()),
        ];
        let mut state = ForceState::new();
        let e = evaluated(evaluate(
            &force,
            &rules,
            &mut state,
            &raws,
            None,
            &settings(),
        ));
        assert!(e.dead.is_empty(), "{:?}", e.dead);
        assert_eq!(e.applied, 2);
        assert_eq!(e.ingest_time, (1, Some("@timestamp")));
        assert_eq!(
            state.watermark_ms(),
            T0 + 30_000,
            "the ingest time is the event time"
        );
        let s = e.stats.sources[&Some(nmc_shared::SourceKind::EntraSignin)];
        assert_eq!((s.received, s.applied, s.ingest_time), (2, 2, 1));
    }

    #[test]
    fn a_panicking_event_is_retried_then_dead_lettered() {
        let (rules, force) = (rules(), ForceId::new("kent").unwrap());
        let mut s = settings();
        s.panic_field = Some("boom".into());
        let mut poisoned: serde_json::Value = serde_json::from_slice(&signin(1, true)).unwrap();
        poisoned["boom"] = true.into();
        let raws = [
            raw(1, SIGNIN, &signin(0, true)),
            raw(2, SIGNIN, &serde_json::to_vec(&poisoned).unwrap()),
            raw(3, SIGNIN, &signin(2, true)),
        ];
        match evaluate(&force, &rules, &mut ForceState::new(), &raws, None, &s) {
            Outcome::Panicked { seq, message } => {
                assert_eq!(seq, 2);
                assert!(message.contains("boom"), "{message}");
            }
            Outcome::Done(_) => panic!("the fault injection must panic"),
        }
        // Not yet at the limit: evaluated (and panicking) again.
        let tried = Poison {
            seq: 2,
            attempts: 2,
            reason: "boom".into(),
        };
        assert!(matches!(
            evaluate(
                &force,
                &rules,
                &mut ForceState::new(),
                &raws,
                Some(&tried),
                &s
            ),
            Outcome::Panicked { seq: 2, .. }
        ));
        let spent = Poison {
            attempts: 3,
            ..tried
        };
        let (commit, dead, applied) = done(evaluate(
            &force,
            &rules,
            &mut ForceState::new(),
            &raws,
            Some(&spent),
            &s,
        ));
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].seq, dead[0].reason),
            (2, DeadLetterReason::EvaluationPanic)
        );
        assert!(commit.clear_poison);
        assert_eq!(
            (applied, commit.cursor),
            (2, 3),
            "the events around it are applied"
        );
    }
}
