//! Onboarding: how far a force has been brought into nmc, and which sources that admits.
//!
//! The cluster keeps one [`ForceRecord`] per onboarded force (JSON in the `NMC_FORCES` bucket).

use serde::{Deserialize, Serialize};

use crate::source::{Phase, SourceKind};

/// How far a force is onboarded: cloud sources first, on-premise sources later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnboardingPhase {
    /// Only cloud sources (Entra ID, Microsoft 365, Azure, AWS).
    Cloud,
    /// Cloud and on-premise sources.
    CloudAndOnprem,
}

impl OnboardingPhase {
    /// Its name as configuration, files and metrics spell it (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            OnboardingPhase::Cloud => "cloud",
            OnboardingPhase::CloudAndOnprem => "cloud_and_onprem",
        }
    }

    /// Whether a force in this phase accepts events of `source`.
    pub fn admits(self, source: SourceKind) -> bool {
        match self {
            OnboardingPhase::Cloud => source.phase() == Phase::Cloud,
            OnboardingPhase::CloudAndOnprem => true,
        }
    }
}

/// What the cluster records about one onboarded force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceRecord {
    /// Onboarding phase.
    pub phase: OnboardingPhase,
    /// Relative load of the force (for placement), at least 1 in practice.
    pub weight: u32,
    /// When the force was onboarded, in Unix milliseconds.
    pub added_ms: i64,
    /// How many times the force's state was reset (`nmc forces reset-state`): a node holding
    /// its state from an earlier generation discards it and reads the stream from its start,
    /// and a checkpoint of one is not restored. Absent (0) until the first reset.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub state_generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_admit_their_sources() {
        for s in SourceKind::ALL {
            assert!(OnboardingPhase::CloudAndOnprem.admits(s));
            assert_eq!(
                OnboardingPhase::Cloud.admits(s),
                s.phase() == Phase::Cloud,
                "{s}"
            );
        }
        assert!(OnboardingPhase::Cloud.admits(SourceKind::EntraSignin));
        assert!(!OnboardingPhase::Cloud.admits(SourceKind::WindowsSecurity));
    }

    #[test]
    fn record_json_shape() {
        let r = ForceRecord {
            phase: OnboardingPhase::CloudAndOnprem,
            weight: 3,
            added_ms: 1_793_606_400_000,
            state_generation: 0,
        };
        let json = serde_json::to_string(&r).unwrap();
        // No generation until a reset: nodes of earlier builds read the record alike.
        assert_eq!(
            json,
            r#"{"phase":"cloud_and_onprem","weight":3,"added_ms":1793606400000}"#
        );
        let reset = ForceRecord {
            state_generation: 2,
            ..r.clone()
        };
        let reset_json = serde_json::to_string(&reset).unwrap();
        assert!(
            reset_json.ends_with(r#","state_generation":2}"#),
            "{reset_json}"
        );
        assert_eq!(
            serde_json::from_str::<ForceRecord>(&reset_json).unwrap(),
            reset
        );
        for p in [OnboardingPhase::Cloud, OnboardingPhase::CloudAndOnprem] {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert_eq!(serde_json::from_str::<ForceRecord>(&json).unwrap(), r);
        assert!(
            serde_json::from_str::<ForceRecord>(r#"{"phase":"onprem","weight":1,"added_ms":0}"#)
                .is_err()
        );
    }
}
