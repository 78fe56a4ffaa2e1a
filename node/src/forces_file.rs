//! The forces file: the declarative list of onboarded forces that `nmc forces apply` makes the
//! cluster match (what a Helm upgrade carries), and that `nmc auth nats-config` can generate
//! identities from before the cluster runs.
//!
//! ```yaml
//! forces:
//!   - id: kent
//!     phase: cloud            # or cloud_and_onprem
//!     weight: 2               # relative size, default 1
//!     contacts:               # optional: when present, the force's contacts become exactly these
//!       - name: soc-lead
//!         role: SOC lead
//!         channels: [{type: email, to: soc@kent.police.example}]
//!         min_level: medium
//! duty_contacts:              # optional: the centre's national duty contacts, likewise
//!   - name: ncsoc-duty
//!     channels: [{type: email, to: duty@ncsoc.example}]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use nmc_shared::ForceId;
use nmc_shared::contact::Contact;
use nmc_shared::onboarding::{ForceRecord, OnboardingPhase};
use serde::Deserialize;

/// Largest forces file read (a national list is a few kilobytes).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A forces file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForcesFile {
    /// The forces that must be onboarded, each once.
    pub forces: Vec<ForceEntry>,
    /// The national duty contacts, when the file manages them.
    #[serde(default)]
    pub duty_contacts: Option<Vec<Contact>>,
}

/// One force of a forces file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForceEntry {
    /// Force id (one of the registry's: `nmc forces add` lists them on error).
    pub id: ForceId,
    /// Onboarding phase.
    pub phase: OnboardingPhase,
    /// Relative size of the force (placement weight), at least 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// The force's contacts, when the file manages them (absent: left as they are).
    #[serde(default)]
    pub contacts: Option<Vec<Contact>>,
}

fn one() -> u32 {
    1
}

impl ForcesFile {
    /// Reads and checks `path` (YAML; JSON is YAML too).
    pub fn read(path: &Path) -> Result<ForcesFile> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading the forces file {}", path.display()))?
            .len();
        if size > MAX_FILE_BYTES {
            bail!(
                "the forces file {} is {size} bytes, more than the {MAX_FILE_BYTES} a forces file may have",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the forces file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the forces file {}", path.display()))
    }

    /// Parses and checks a forces file's text: known forces, each once, weights at least 1.
    pub fn parse(text: &str) -> Result<ForcesFile> {
        let file: ForcesFile = serde_norway::from_str(text)
            .context("not a forces file (`forces:` then a list of `id`, `phase`, `weight`)")?;
        let mut seen = BTreeSet::new();
        for f in &file.forces {
            if nmc_shared::force::lookup(f.id.as_str()).is_none() {
                bail!("`{}` is not in the force registry", f.id);
            }
            if !seen.insert(&f.id) {
                bail!("`{}` is listed twice", f.id);
            }
            if f.weight == 0 {
                bail!("`{}` has weight 0: weights are at least 1", f.id);
            }
            if let Some(list) = &f.contacts {
                crate::contacts::check_list(list)
                    .with_context(|| format!("the contacts of `{}`", f.id))?;
            }
        }
        if let Some(list) = &file.duty_contacts {
            crate::contacts::check_list(list).context("the duty contacts")?;
        }
        Ok(file)
    }

    /// The forces listed.
    pub fn ids(&self) -> BTreeSet<ForceId> {
        self.forces.iter().map(|f| f.id.clone()).collect()
    }

    /// The contact lists the file manages: (scope, contacts).
    pub fn contact_lists(&self) -> Vec<(crate::contacts::Scope, &[Contact])> {
        let mut out: Vec<(crate::contacts::Scope, &[Contact])> = self
            .forces
            .iter()
            .filter_map(|f| {
                f.contacts
                    .as_deref()
                    .map(|c| (crate::contacts::Scope::Force(f.id.clone()), c))
            })
            .collect();
        if let Some(d) = &self.duty_contacts {
            out.push((crate::contacts::Scope::National, d));
        }
        out
    }
}

/// One change that makes the cluster match a forces file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Onboard a force.
    Add(ForceEntry),
    /// Change an onboarded force's phase and/or weight.
    Update {
        /// The force.
        id: ForceId,
        /// What it is now.
        from: (OnboardingPhase, u32),
        /// What it becomes.
        to: (OnboardingPhase, u32),
    },
    /// Offboard a force that the file does not list (only with `--prune`).
    Remove(ForceId),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Add(e) => write!(f, "+ {} ({}, weight {})", e.id, e.phase.as_str(), e.weight),
            Change::Update { id, from, to } => write!(
                f,
                "~ {id} ({}, weight {} -> {}, weight {})",
                from.0.as_str(),
                from.1,
                to.0.as_str(),
                to.1
            ),
            Change::Remove(id) => write!(f, "- {id}"),
        }
    }
}

/// The changes that take `current` to `file` (removals only when `prune`), in force order:
/// empty when they already match, so applying twice changes nothing the second time.
pub fn plan(
    current: &BTreeMap<ForceId, ForceRecord>,
    file: &ForcesFile,
    prune: bool,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let wanted: BTreeMap<&ForceId, &ForceEntry> = file.forces.iter().map(|f| (&f.id, f)).collect();
    for (id, want) in &wanted {
        match current.get(*id) {
            None => changes.push(Change::Add((*want).clone())),
            Some(have) if have.phase != want.phase || have.weight != want.weight => {
                changes.push(Change::Update {
                    id: (*id).clone(),
                    from: (have.phase, have.weight),
                    to: (want.phase, want.weight),
                })
            }
            Some(_) => {}
        }
    }
    if prune {
        for id in current.keys() {
            if !wanted.contains_key(id) {
                changes.push(Change::Remove(id.clone()));
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phase: OnboardingPhase, weight: u32) -> ForceRecord {
        ForceRecord {
            phase,
            weight,
            added_ms: 0,
            state_generation: 0,
        }
    }

    fn id(s: &str) -> ForceId {
        ForceId::new(s).unwrap()
    }

    #[test]
    fn parses_and_refuses_bad_files_clearly() {
        let f = ForcesFile::parse(
            "forces:\n  - id: kent\n    phase: cloud\n    weight: 2\n  - id: essex\n    phase: cloud_and_onprem\n",
        )
        .unwrap();
        assert_eq!(f.forces.len(), 2);
        assert_eq!(f.forces[1].weight, 1);
        let err = |t: &str| format!("{:#}", ForcesFile::parse(t).unwrap_err());
        assert!(
            err("forces:\n  - id: atlantis\n    phase: cloud\n")
                .contains("`atlantis` is not in the force registry")
        );
        assert!(
            err("forces:\n  - id: kent\n    phase: cloud\n  - id: kent\n    phase: cloud\n")
                .contains("listed twice")
        );
        assert!(err("forces:\n  - id: kent\n    phase: onprem\n").contains("not a forces file"));
        assert!(
            err("forces:\n  - id: kent\n    phase: cloud\n    colour: red\n")
                .contains("not a forces file")
        );
        assert!(
            err("forces:\n  - id: kent\n    phase: cloud\n    weight: 0\n").contains("weight 0")
        );
    }

    #[test]
    fn plans_adds_updates_and_prunes_and_nothing_when_matching() {
        let current = BTreeMap::from([
            (id("kent"), record(OnboardingPhase::Cloud, 1)),
            (id("essex"), record(OnboardingPhase::Cloud, 1)),
            (id("durham"), record(OnboardingPhase::Cloud, 1)),
        ]);
        let file = ForcesFile::parse(
            "forces:\n  - {id: kent, phase: cloud}\n  - {id: essex, phase: cloud_and_onprem, weight: 3}\n  - {id: surrey, phase: cloud}\n",
        )
        .unwrap();
        let without = plan(&current, &file, false);
        assert_eq!(
            without.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "~ essex (cloud, weight 1 -> cloud_and_onprem, weight 3)",
                "+ surrey (cloud, weight 1)"
            ]
        );
        let with = plan(&current, &file, true);
        assert_eq!(with.last(), Some(&Change::Remove(id("durham"))));
        assert_eq!(with.len(), 3);
        let applied = BTreeMap::from([
            (id("kent"), record(OnboardingPhase::Cloud, 1)),
            (id("essex"), record(OnboardingPhase::CloudAndOnprem, 3)),
            (id("surrey"), record(OnboardingPhase::Cloud, 1)),
        ]);
        assert!(plan(&applied, &file, true).is_empty());
    }
}
