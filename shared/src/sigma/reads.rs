//! What a rule set reads of each source's events, so that parsing keeps only that
//! ([`crate::json::kept`]).
//!
//! A field is read through [`crate::mapping::lookup`]: for the sources that are not Windows
//! event logs, a name `a.b` is found as the key `a.b` at the top, as the path `a` → `b` (keys
//! exactly or ignoring case), or as that path under `properties`; a class's renames read their
//! event fields the same way. The plan of a source keeps every one of those places for every
//! field its rules (detection fields and `fieldref` targets), the correlations (group-by, aliases,
//! the counted field, coordinates), its renames and its time fields can read. It keeps the whole
//! event where reads are not by name: the Windows event logs (classified by channel and event
//! id, fields searched under `EventData`, `System` and `UserData`), and a class with a keyword
//! search (every string of the event) that no field test of its rule can rule out. Other keyword
//! searches are left to [`super::RuleSet::parse_event`], which parses the whole event when the
//! rule's field tests cannot rule it out.

use crate::event::INGEST_TIME_FIELDS;
use crate::json::kept::KeepTree;
use crate::mapping::{CLASSES, class_of_source};
use crate::source::SourceKind;

/// Per source, the parts of its events that a rule set reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadPlan {
    /// By position in [`SourceKind::ALL`]; empty: keep every event whole.
    per_source: Vec<KeepTree>,
}

impl ReadPlan {
    /// The plan that keeps every event whole.
    pub fn everything() -> ReadPlan {
        ReadPlan::default()
    }

    /// The plan of a rule set: `class_fields(class)` names the fields the detection rules of a
    /// class read (`None`: the whole event), `shared` the fields read of events of any class
    /// (the correlations').
    pub(crate) fn new<'a>(
        class_fields: impl Fn(usize) -> Option<Vec<&'a str>>,
        shared: &[&str],
    ) -> ReadPlan {
        let per_source = SourceKind::ALL
            .iter()
            .map(|&source| {
                let Some(class) = class_of_source(source) else {
                    return KeepTree::everything().clone();
                };
                let Some(fields) = class_fields(class) else {
                    return KeepTree::everything().clone();
                };
                let renamed = CLASSES.all[class].renames.iter().map(|r| r.event);
                let times = source.time_fields().iter().chain(INGEST_TIME_FIELDS);
                let mut keep = KeepTree::new();
                for field in fields
                    .into_iter()
                    .chain(shared.iter().copied())
                    .chain(renamed)
                    .chain(times.copied())
                {
                    keep_field(&mut keep, field);
                }
                keep
            })
            .collect();
        ReadPlan { per_source }
    }

    /// What to keep of an event of `source`.
    pub fn keep(&self, source: SourceKind) -> &KeepTree {
        SourceKind::ALL
            .iter()
            .position(|&s| s == source)
            .and_then(|i| self.per_source.get(i))
            .unwrap_or(KeepTree::everything())
    }
}

/// Keeps every place [`crate::mapping::lookup`] reads `field` in an event of a source that is
/// not a Windows event log.
fn keep_field(keep: &mut KeepTree, field: &str) {
    keep.keep([field]);
    keep.keep(field.split('.'));
    keep.keep(std::iter::once("properties").chain(field.split('.')));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::kept::parse_kept;
    use serde_json::json;

    #[test]
    fn keeps_each_place_a_field_is_read() {
        let plan = ReadPlan::new(
            |_| Some(vec!["userIdentity.arn", "UserPrincipalName"]),
            &["group.by"],
        );
        let doc = br#"{"eventTime": "2024-03-01T10:00:00Z", "userIdentity.arn": 1,
            "useridentity": {"ARN": 2, "type": "x"}, "properties": {"userPrincipalName": 3,
            "other": 4}, "group": {"by": 5}, "noise": {"a": [1]}, "@timestamp": 6}"#;
        let kept = parse_kept(doc, plan.keep(SourceKind::AwsCloudtrail)).unwrap();
        assert_eq!(
            kept,
            json!({"eventTime": "2024-03-01T10:00:00Z", "userIdentity.arn": 1,
                "useridentity": {"ARN": 2}, "properties": {"userPrincipalName": 3},
                "group": {"by": 5}, "@timestamp": 6})
        );
        // The Entra sign-in renames read their event fields.
        let signin = plan.keep(SourceKind::EntraSignin);
        let kept = parse_kept(
            br#"{"time": "2024-03-01T10:00:00Z", "properties": {"status": {"errorCode": 1, "x": 2}}}"#,
            signin,
        )
        .unwrap();
        assert_eq!(kept["properties"]["status"], json!({"errorCode": 1}));
    }

    #[test]
    fn windows_events_and_keyword_searches_are_kept_whole() {
        let plan = ReadPlan::new(|_| None, &[]);
        assert!(plan.keep(SourceKind::AwsCloudtrail).is_everything());
        let plan = ReadPlan::new(|_| Some(vec!["a"]), &[]);
        assert!(plan.keep(SourceKind::WindowsSecurity).is_everything());
        assert!(plan.keep(SourceKind::Sysmon).is_everything());
        assert!(!plan.keep(SourceKind::Syslog).is_everything());
        assert!(
            ReadPlan::everything()
                .keep(SourceKind::Syslog)
                .is_everything()
        );
    }
}
