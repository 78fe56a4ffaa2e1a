//! Who may see and do what in the console: roles from the identity's groups, mapped in the
//! configuration (`admin`, `analyst`: every force; a force's contact: that force only), and
//! the index [`Scope`] they give. Enforced by the API on every query, alert id, evidence
//! fetch and live stream: the pages only show what the API allows.

use nmc_shared::ForceId;
use serde::{Deserialize, Serialize};

use super::index::Scope;

/// How groups become roles.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleMapping {
    /// Groups whose members are administrators (all forces; onboarding, contacts).
    pub admin_groups: Vec<String>,
    /// Groups whose members are the centre's analysts (all forces).
    pub analyst_groups: Vec<String>,
    /// Prefix of the groups that make a force's contact: `<prefix><force id>`.
    pub force_group_prefix: String,
}

impl Default for RoleMapping {
    fn default() -> Self {
        RoleMapping {
            admin_groups: vec!["nmc-admin".into()],
            analyst_groups: vec!["nmc-analyst".into()],
            force_group_prefix: "nmc-force-".into(),
        }
    }
}

/// A signed-in person's rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// User name or e-mail (recorded in audit entries).
    pub user: String,
    /// Administrator.
    pub admin: bool,
    /// Analyst (every force).
    pub analyst: bool,
    /// The forces whose contact they are.
    pub forces: Vec<ForceId>,
}

impl RoleMapping {
    /// The rights `groups` give `user`; `None` when they give none (refused at sign-in).
    pub fn principal(&self, user: &str, groups: &[String]) -> Option<Principal> {
        let has = |list: &[String]| groups.iter().any(|g| list.contains(g));
        let mut forces: Vec<ForceId> = groups
            .iter()
            .filter_map(|g| g.strip_prefix(&self.force_group_prefix))
            .filter_map(|f| ForceId::new(f).ok())
            .filter(|f| nmc_shared::force::lookup(f.as_str()).is_some())
            .collect();
        forces.sort();
        forces.dedup();
        let p = Principal {
            user: user.to_owned(),
            admin: has(&self.admin_groups),
            analyst: has(&self.analyst_groups),
            forces,
        };
        (p.admin || p.analyst || !p.forces.is_empty()).then_some(p)
    }
}

impl Principal {
    /// What of the index they may see.
    pub fn scope(&self) -> Scope {
        if self.admin || self.analyst {
            Scope::All
        } else {
            Scope::Forces(self.forces.clone())
        }
    }

    /// Whether they may see (and act on) `force`'s alerts.
    pub fn sees(&self, force: &ForceId) -> bool {
        self.admin || self.analyst || self.forces.contains(force)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn groups_map_to_roles_and_scopes() {
        let m = RoleMapping::default();
        let kent = m
            .principal("k@kent.example", &groups(&["nmc-force-kent", "staff"]))
            .unwrap();
        assert_eq!(
            kent.scope(),
            Scope::Forces(vec![ForceId::new("kent").unwrap()])
        );
        assert!(kent.sees(&ForceId::new("kent").unwrap()));
        assert!(!kent.sees(&ForceId::new("essex").unwrap()));
        let analyst = m
            .principal("a@ncsoc.example", &groups(&["nmc-analyst"]))
            .unwrap();
        assert_eq!(analyst.scope(), Scope::All);
        assert!(!analyst.admin);
        assert!(
            m.principal("x", &groups(&["staff"])).is_none(),
            "no role, no access"
        );
        assert!(
            m.principal("x", &groups(&["nmc-force-atlantis"])).is_none(),
            "a force that is not in the registry gives nothing"
        );
    }
}
