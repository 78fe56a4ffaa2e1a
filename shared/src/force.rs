//! Force ids (the tenant key) and the registry of police forces of England and Wales.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted force id, so that subjects and sled keys stay short.
pub const MAX_FORCE_ID_LEN: usize = 48;

/// A validated force id: a lowercase slug usable as one NATS subject token and one sled tree name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ForceId(String);

/// Why a string is not a force id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForceIdError {
    /// The id is empty.
    #[error("force id is empty; use a lowercase slug such as `cumbria`")]
    Empty,
    /// The id is longer than [`MAX_FORCE_ID_LEN`].
    #[error("force id `{0}` is longer than {MAX_FORCE_ID_LEN} characters")]
    TooLong(String),
    /// The id holds a character outside `[a-z0-9-]`.
    #[error("force id `{0}` may only contain lowercase letters, digits and `-`")]
    BadChar(String),
    /// The id starts or ends with `-`.
    #[error("force id `{0}` must not start or end with `-`")]
    EdgeDash(String),
}

impl ForceId {
    /// Validates `s` as a force id.
    pub fn new(s: &str) -> Result<Self, ForceIdError> {
        if s.is_empty() {
            return Err(ForceIdError::Empty);
        }
        if s.len() > MAX_FORCE_ID_LEN {
            return Err(ForceIdError::TooLong(s.to_owned()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ForceIdError::BadChar(s.to_owned()));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(ForceIdError::EdgeDash(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The registry entry for this id, if it names a known police force.
    pub fn info(&self) -> Option<&'static ForceInfo> {
        lookup(&self.0)
    }
}

impl FromStr for ForceId {
    type Err = ForceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ForceId {
    type Error = ForceIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<ForceId> for String {
    fn from(f: ForceId) -> String {
        f.0
    }
}

impl fmt::Display for ForceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a force is one of the territorial forces or a national/special force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForceKind {
    /// One of the 43 territorial forces of England and Wales.
    Territorial,
    /// A national or special police force.
    National,
}

/// One entry of the force registry shipped with nmc.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ForceInfo {
    /// The force id used in subjects and configuration.
    pub id: &'static str,
    /// The force's official name.
    pub name: &'static str,
    /// Territorial or national.
    pub kind: ForceKind,
}

const fn t(id: &'static str, name: &'static str) -> ForceInfo {
    ForceInfo {
        id,
        name,
        kind: ForceKind::Territorial,
    }
}

const fn n(id: &'static str, name: &'static str) -> ForceInfo {
    ForceInfo {
        id,
        name,
        kind: ForceKind::National,
    }
}

/// The police forces of England and Wales that nmc knows, sorted by id.
pub static FORCES: &[ForceInfo] = &[
    t("avon-somerset", "Avon and Somerset Constabulary"),
    t("bedfordshire", "Bedfordshire Police"),
    n("british-transport", "British Transport Police"),
    t("cambridgeshire", "Cambridgeshire Constabulary"),
    t("cheshire", "Cheshire Constabulary"),
    t("city-of-london", "City of London Police"),
    n("civil-nuclear", "Civil Nuclear Constabulary"),
    t("cleveland", "Cleveland Police"),
    t("cumbria", "Cumbria Constabulary"),
    t("derbyshire", "Derbyshire Constabulary"),
    t("devon-cornwall", "Devon and Cornwall Police"),
    t("dorset", "Dorset Police"),
    t("durham", "Durham Constabulary"),
    t("dyfed-powys", "Dyfed-Powys Police"),
    t("essex", "Essex Police"),
    t("gloucestershire", "Gloucestershire Constabulary"),
    t("greater-manchester", "Greater Manchester Police"),
    t("gwent", "Gwent Police"),
    t("hampshire", "Hampshire and Isle of Wight Constabulary"),
    t("hertfordshire", "Hertfordshire Constabulary"),
    t("humberside", "Humberside Police"),
    t("kent", "Kent Police"),
    t("lancashire", "Lancashire Constabulary"),
    t("leicestershire", "Leicestershire Police"),
    t("lincolnshire", "Lincolnshire Police"),
    t("merseyside", "Merseyside Police"),
    t("metropolitan", "Metropolitan Police Service"),
    n("ministry-of-defence", "Ministry of Defence Police"),
    t("norfolk", "Norfolk Constabulary"),
    t("north-wales", "North Wales Police"),
    t("north-yorkshire", "North Yorkshire Police"),
    t("northamptonshire", "Northamptonshire Police"),
    t("northumbria", "Northumbria Police"),
    t("nottinghamshire", "Nottinghamshire Police"),
    t("south-wales", "South Wales Police"),
    t("south-yorkshire", "South Yorkshire Police"),
    t("staffordshire", "Staffordshire Police"),
    t("suffolk", "Suffolk Constabulary"),
    t("surrey", "Surrey Police"),
    t("sussex", "Sussex Police"),
    t("thames-valley", "Thames Valley Police"),
    t("warwickshire", "Warwickshire Police"),
    t("west-mercia", "West Mercia Police"),
    t("west-midlands", "West Midlands Police"),
    t("west-yorkshire", "West Yorkshire Police"),
    t("wiltshire", "Wiltshire Police"),
];

/// The ids of every force of the registry (each has its events stream, onboarded or not).
pub fn registered() -> impl Iterator<Item = ForceId> {
    FORCES
        .iter()
        .map(|f| ForceId::new(f.id).expect("the registry holds valid force ids"))
}

/// Finds a force in the registry by id.
pub fn lookup(id: &str) -> Option<&'static ForceInfo> {
    FORCES
        .binary_search_by(|f| f.id.cmp(id))
        .ok()
        .map(|i| &FORCES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs() {
        for ok in ["cumbria", "avon-somerset", "metropolitan", "force-2"] {
            assert_eq!(ForceId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_non_slugs() {
        assert_eq!(ForceId::new(""), Err(ForceIdError::Empty));
        assert!(matches!(
            ForceId::new("Cumbria"),
            Err(ForceIdError::BadChar(_))
        ));
        assert!(matches!(
            ForceId::new("cum.bria"),
            Err(ForceIdError::BadChar(_))
        ));
        assert!(matches!(
            ForceId::new("cum*"),
            Err(ForceIdError::BadChar(_))
        ));
        assert!(matches!(ForceId::new("a b"), Err(ForceIdError::BadChar(_))));
        assert!(matches!(
            ForceId::new("-kent"),
            Err(ForceIdError::EdgeDash(_))
        ));
        assert!(matches!(
            ForceId::new(&"a".repeat(49)),
            Err(ForceIdError::TooLong(_))
        ));
    }

    #[test]
    fn serde_validates() {
        let f: ForceId = serde_json::from_str("\"kent\"").unwrap();
        assert_eq!(f.as_str(), "kent");
        assert!(serde_json::from_str::<ForceId>("\"KENT\"").is_err());
    }

    #[test]
    fn registry_is_sorted_valid_and_complete() {
        for w in FORCES.windows(2) {
            assert!(w[0].id < w[1].id, "registry not sorted at {}", w[1].id);
        }
        for f in FORCES {
            ForceId::new(f.id).unwrap();
        }
        let territorial = FORCES
            .iter()
            .filter(|f| f.kind == ForceKind::Territorial)
            .count();
        assert_eq!(
            territorial, 43,
            "England and Wales have 43 territorial forces"
        );
        assert_eq!(lookup("cumbria").unwrap().name, "Cumbria Constabulary");
        assert!(lookup("atlantis").is_none());
    }
}
