//! The coordinator's decisions, as pure functions of what it sees (the live nodes, the onboarded
//! forces, what this node holds): which forces to take, which to hand off, which phases to pass
//! on, which checkpoints are due. The coordinator carries them out; keeping them here lets them
//! be tested without NATS, actors or clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nmc_shared::ForceId;
use nmc_shared::onboarding::{ForceRecord, OnboardingPhase};
use nmc_shared::rendezvous::{self, NodeWeight};

/// What the coordinator does after one look at the cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Forces this node should own and does not hold yet, with their phase: try their leases.
    pub take: Vec<(ForceId, OnboardingPhase)>,
    /// Forces this node holds but should not (another live node is their desired owner, or
    /// they were offboarded): hand them off.
    pub hand_off: Vec<ForceId>,
    /// Forces this node keeps, with their phase as recorded (the actor follows it).
    pub keep: Vec<(ForceId, OnboardingPhase)>,
}

/// Decides from the live nodes, the onboarded forces and the forces `me` holds. `me` counts as
/// live even when its own heartbeat is missing for a moment (a NATS restart): a node that runs
/// is alive.
pub fn plan(
    me: &NodeWeight,
    live: &[NodeWeight],
    onboarded: &BTreeMap<ForceId, ForceRecord>,
    held: &BTreeSet<ForceId>,
) -> Plan {
    let mut nodes = live.to_vec();
    if !nodes.iter().any(|n| n.id == me.id) {
        nodes.push(me.clone());
    }
    let desired: BTreeMap<&ForceId, OnboardingPhase> = onboarded
        .iter()
        .filter(|(f, _)| rendezvous::owner(f.as_str(), &nodes) == Some(me.id.as_str()))
        .map(|(f, r)| (f, r.phase))
        .collect();
    let mut plan = Plan::default();
    for f in held {
        match desired.get(f) {
            Some(&phase) => plan.keep.push((f.clone(), phase)),
            None => plan.hand_off.push(f.clone()),
        }
    }
    plan.take = desired
        .into_iter()
        .filter(|(f, _)| !held.contains(*f))
        .map(|(f, phase)| (f.clone(), phase))
        .collect();
    plan
}

/// How one held force stands with its checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointClock {
    /// Time since its last checkpoint was started (or since it was acquired).
    pub since_last: Duration,
    /// Whether a checkpoint of it is being written now.
    pub in_flight: bool,
}

/// The forces whose checkpoint is due: `every` has passed since the last one started and none
/// is being written (at most one checkpoint per force at a time).
pub fn checkpoints_due<'a>(
    forces: impl IntoIterator<Item = (&'a ForceId, CheckpointClock)>,
    every: Duration,
) -> Vec<ForceId> {
    forces
        .into_iter()
        .filter(|(_, c)| !c.in_flight && c.since_last >= every)
        .map(|(f, _)| f.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn force(f: &str) -> ForceId {
        ForceId::new(f).unwrap()
    }

    fn node(id: &str) -> NodeWeight {
        NodeWeight::new(id, 1)
    }

    fn onboarded(forces: &[&str], phase: OnboardingPhase) -> BTreeMap<ForceId, ForceRecord> {
        forces
            .iter()
            .map(|f| {
                (
                    force(f),
                    ForceRecord {
                        phase,
                        weight: 1,
                        added_ms: 0,
                        state_generation: 0,
                    },
                )
            })
            .collect()
    }

    const FORCES: &[&str] = &[
        "kent", "essex", "cumbria", "surrey", "sussex", "norfolk", "suffolk", "dorset", "durham",
        "gwent",
    ];

    #[test]
    fn a_lone_node_takes_every_onboarded_force() {
        let all = onboarded(FORCES, OnboardingPhase::Cloud);
        let p = plan(&node("a"), &[node("a")], &all, &BTreeSet::new());
        assert_eq!(p.take.len(), FORCES.len());
        assert!(p.take.iter().all(|(_, ph)| *ph == OnboardingPhase::Cloud));
        assert!(p.hand_off.is_empty() && p.keep.is_empty());
    }

    #[test]
    fn a_node_missing_from_membership_still_counts_itself() {
        let all = onboarded(FORCES, OnboardingPhase::Cloud);
        let p = plan(&node("a"), &[], &all, &BTreeSet::new());
        assert_eq!(
            p.take.len(),
            FORCES.len(),
            "its heartbeat may be a moment late"
        );
    }

    #[test]
    fn a_joining_node_gets_its_share_and_only_that_moves() {
        let all = onboarded(FORCES, OnboardingPhase::Cloud);
        let held: BTreeSet<ForceId> = all.keys().cloned().collect();
        let both = [node("a"), node("b")];
        let on_a = plan(&node("a"), &both, &all, &held);
        let on_b = plan(&node("b"), &both, &all, &BTreeSet::new());
        let moved: BTreeSet<&ForceId> = on_a.hand_off.iter().collect();
        let taken: BTreeSet<&ForceId> = on_b.take.iter().map(|(f, _)| f).collect();
        assert_eq!(moved, taken, "what a hands off is what b takes");
        assert!(!moved.is_empty() && moved.len() < FORCES.len());
        assert!(on_a.take.is_empty());
        assert_eq!(on_a.keep.len() + on_a.hand_off.len(), FORCES.len());
        for f in &on_a.hand_off {
            assert_eq!(
                rendezvous::owner(f.as_str(), &both),
                Some("b"),
                "{f} moves to its desired owner"
            );
        }
    }

    #[test]
    fn offboarded_forces_are_handed_off_and_phases_follow_the_record() {
        let mut all = onboarded(&["kent", "essex"], OnboardingPhase::CloudAndOnprem);
        let held: BTreeSet<ForceId> = [force("kent"), force("essex"), force("surrey")].into();
        all.get_mut(&force("essex")).unwrap().phase = OnboardingPhase::Cloud;
        let p = plan(&node("a"), &[node("a")], &all, &held);
        assert_eq!(p.hand_off, vec![force("surrey")]);
        assert_eq!(
            p.keep,
            vec![
                (force("essex"), OnboardingPhase::Cloud),
                (force("kent"), OnboardingPhase::CloudAndOnprem)
            ]
        );
        assert!(p.take.is_empty());
    }

    #[test]
    fn checkpoints_are_due_after_the_interval_one_at_a_time_per_force() {
        let (a, b, c) = (force("kent"), force("essex"), force("surrey"));
        let every = Duration::from_secs(60);
        let clock = |secs, in_flight| CheckpointClock {
            since_last: Duration::from_secs(secs),
            in_flight,
        };
        let due = checkpoints_due(
            [
                (&a, clock(61, false)),
                (&b, clock(59, false)),
                (&c, clock(600, true)),
            ],
            every,
        );
        assert_eq!(due, vec![a], "b is not due yet; c is still being written");
    }
}
