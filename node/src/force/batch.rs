//! Evaluating one batch of raw stream messages against a force's state: parse, route bad input to
//! dead letters, apply good events, and catch a panicking evaluation so that it can be retried and
//! finally dead-lettered instead of killing the force.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use nmc_shared::correlate::ForceState;
use nmc_shared::event::Event;
use nmc_shared::sigma::RuleSet;
use nmc_shared::{ForceId, subject};

use crate::bus::DeadLetter;
use crate::store::{BatchCommit, OutboxEntry, Poison};

/// One message as read from `NMC_EVENTS`.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was published to.
    pub subject: String,
    /// Payload.
    pub payload: Bytes,
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
    /// Fault injection field (empty: off).
    pub panic_field: String,
    /// Events stamped further ahead of `now_ms` are dead-lettered (`future_time`).
    pub max_future_ms: i64,
    /// The node's clock when the batch was read.
    pub now_ms: i64,
}

/// What a batch produced.
pub enum Outcome {
    /// The batch was evaluated: write `commit` once `dead` letters are acknowledged.
    Done {
        /// The atomic sled write.
        commit: BatchCommit,
        /// Events to dead-letter first.
        dead: Vec<DeadLetter>,
        /// Events applied to state.
        applied: usize,
    },
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

/// Evaluates `raws` (in stream order) for `force`, mutating `state`.
pub fn evaluate(
    force: &ForceId,
    rules: &RuleSet,
    state: &mut ForceState,
    raws: &[Raw],
    poison: Option<&Poison>,
    s: &EvalSettings,
) -> Outcome {
    let mut commit = BatchCommit::default();
    let mut dead = Vec::new();
    let mut applied = 0;
    let mut alerts = Vec::new();
    let dlq = subject::dlq(force);
    for raw in raws {
        let dead_letter = |reason: &'static str, error: String| DeadLetter {
            subject: dlq.clone(),
            seq: raw.seq,
            from_subject: raw.subject.clone(),
            reason,
            error,
            payload: raw.payload.clone(),
        };
        commit.cursor = raw.seq;
        if let Some(p) = poison.filter(|p| p.seq == raw.seq && p.attempts >= s.max_attempts) {
            dead.push(dead_letter(
                "evaluation_panic",
                format!(
                    "rule evaluation panicked {} times on this event: {}",
                    p.attempts, p.reason
                ),
            ));
            commit.clear_poison = true;
            continue;
        }
        let source = match subject::parse_events(&raw.subject) {
            Ok((_, source)) => source,
            Err(e) => {
                let reason = match e {
                    subject::SubjectError::Source { .. } => "unknown_source",
                    _ => "bad_subject",
                };
                dead.push(dead_letter(reason, e.to_string()));
                continue;
            }
        };
        if !s.phase.admits(source) {
            dead.push(dead_letter(
                "source_not_in_phase",
                format!(
                    "force `{force}` is onboarded for {:?} sources only; `{source}` events are not processed until `nmc forces set-phase {force} cloud_and_onprem`",
                    s.phase
                ),
            ));
            continue;
        }
        let event = match Event::parse(source, &raw.payload, s.max_event_bytes) {
            Ok(ev) => ev,
            Err(e) => {
                dead.push(dead_letter(e.code(), e.to_string()));
                continue;
            }
        };
        if ev_too_far_ahead(&event, s) {
            dead.push(dead_letter(
                "future_time",
                format!(
                    "event time {} is more than {} s ahead of this node's clock; fix the source's clock or time field",
                    nmc_shared::time::format_ms(event.time_ms),
                    s.max_future_ms / 1000
                ),
            ));
            continue;
        }
        let before = alerts.len();
        let result = catch_unwind(AssertUnwindSafe(|| {
            if !s.panic_field.is_empty() && event.body.get(&s.panic_field).is_some() {
                panic!("fault injection: event carries `{}`", s.panic_field);
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
        for (n, mut alert) in alerts.drain(before..).enumerate() {
            alert.node.clone_from(&s.node);
            alert.epoch = s.epoch;
            alert.rule_pack.clone_from(&s.rule_pack);
            let payload = serde_json::to_vec(&alert).expect("alerts serialize");
            commit.outbox.push((
                (raw.seq, n as u16),
                OutboxEntry {
                    subject: subject::alerts(force, alert.rule.level),
                    id: alert.id.to_string(),
                    payload,
                },
            ));
        }
    }
    commit.watermark_ms = state.watermark_ms();
    commit.state = state.take_changes(rules);
    Outcome::Done {
        commit,
        dead,
        applied,
    }
}
