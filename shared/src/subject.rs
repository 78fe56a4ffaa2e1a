//! NATS subjects and stream names: the wire contract between collectors, nodes and analysts.

use crate::alert::Level;
use crate::dead_letter::DeadLetterReason;
use crate::force::{ForceId, ForceIdError};
use crate::source::{SourceKind, UnknownSource};

/// Prefix of the JetStream streams of events: one per force, [`events_stream`].
pub const EVENTS_STREAM_PREFIX: &str = "NMC_EVENTS_";
/// The single events stream of nmc before it had one per force; a node refuses to start while
/// it exists (its subjects overlap every force's stream: `docs/operations.md`).
pub const LEGACY_EVENTS_STREAM: &str = "NMC_EVENTS";
/// JetStream stream holding alerts (`nmc.alerts.>`), de-duplicated by `Nats-Msg-Id`.
pub const ALERTS_STREAM: &str = "NMC_ALERTS";
/// JetStream stream holding dead-lettered input (`nmc.dlq.>`).
pub const DLQ_STREAM: &str = "NMC_DLQ";
/// Every force's events subjects (each force's are captured by its own [`events_stream`]).
pub const EVENTS_ALL: &str = "nmc.events.>";
/// Subjects captured by [`ALERTS_STREAM`].
pub const ALERTS_ALL: &str = "nmc.alerts.>";
/// Subjects captured by [`DLQ_STREAM`].
pub const DLQ_ALL: &str = "nmc.dlq.>";
/// JetStream stream holding the audit trail of alert lifecycle actions (`nmc.audit.>`).
pub const AUDIT_STREAM: &str = "NMC_AUDIT";
/// Subjects captured by [`AUDIT_STREAM`].
pub const AUDIT_ALL: &str = "nmc.audit.>";
/// Subjects of failed notification deliveries (`nmc.notify.failed.<force>`), captured by
/// [`NOTIFY_STREAM`].
pub const NOTIFY_ALL: &str = "nmc.notify.>";
/// JetStream stream holding failed-delivery records.
pub const NOTIFY_STREAM: &str = "NMC_NOTIFY";
/// Dead-letter subject for events whose subject names no valid or onboarded force.
pub const DLQ_UNKNOWN: &str = "nmc.dlq._unknown";

/// The subject a collector publishes a force's events of one source to.
pub fn events(force: &ForceId, source: SourceKind) -> String {
    format!("nmc.events.{force}.{source}")
}

/// The filter that selects all of one force's events.
pub fn events_of(force: &ForceId) -> String {
    format!("nmc.events.{force}.>")
}

/// The JetStream stream holding one force's events (`NMC_EVENTS_<force>`). A stream per force,
/// not one for all: a force's reader then reads only its own messages (on one shared stream
/// the server walks every other force's messages to serve each filtered reader), and one
/// force's flood cannot push another's events out of retention.
pub fn events_stream(force: &ForceId) -> String {
    format!("{EVENTS_STREAM_PREFIX}{force}")
}

/// The subjects [`events_stream`] captures: the force's events, and the bare
/// `nmc.events.<force>` (a malformed subject, dead-lettered by whoever reads the stream).
pub fn events_stream_subjects(force: &ForceId) -> Vec<String> {
    vec![format!("nmc.events.{force}"), events_of(force)]
}

/// The subject an alert of `level` for `force` is published to.
pub fn alerts(force: &ForceId, level: Level) -> String {
    format!("nmc.alerts.{force}.{}", level.as_str())
}

/// The filter that selects all alerts of one force.
pub fn alerts_of(force: &ForceId) -> String {
    format!("nmc.alerts.{force}.>")
}

/// The audit subject of a force's alert lifecycle actions.
pub fn audit(force: &ForceId) -> String {
    format!("nmc.audit.{force}")
}

/// The subject a failed delivery of one of `force`'s alerts is published to.
pub fn notify_failed(force: &ForceId) -> String {
    format!("nmc.notify.failed.{force}")
}

/// The dead-letter subject of a force.
pub fn dlq(force: &ForceId) -> String {
    format!("nmc.dlq.{force}")
}

/// Why an events subject cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Not of the form `nmc.events.<force>.<source>`.
    #[error("subject `{0}` is not of the form nmc.events.<force>.<source>")]
    Shape(String),
    /// The force token is not a valid force id.
    #[error("subject `{subject}`: {source}")]
    Force {
        /// The offending subject.
        subject: String,
        /// Why the force token is invalid.
        source: ForceIdError,
    },
    /// The source token is not a known source.
    #[error("subject `{subject}`: {source}")]
    Source {
        /// The offending subject.
        subject: String,
        /// Why the source token is unknown.
        source: UnknownSource,
    },
}

impl SubjectError {
    /// The dead-letter reason of an event on such a subject.
    pub fn reason(&self) -> DeadLetterReason {
        match self {
            SubjectError::Shape(_) | SubjectError::Force { .. } => DeadLetterReason::BadSubject,
            SubjectError::Source { .. } => DeadLetterReason::UnknownSource,
        }
    }
}

/// Splits `nmc.events.<force>.<source>` into its force token (unvalidated) and source token.
pub fn split_events(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("nmc.events.")?;
    let (force, source) = rest.split_once('.')?;
    if force.is_empty() || source.is_empty() || source.contains('.') {
        return None;
    }
    Some((force, source))
}

/// Parses an events subject into a validated force and source.
pub fn parse_events(subject: &str) -> Result<(ForceId, SourceKind), SubjectError> {
    let (force, source) =
        split_events(subject).ok_or_else(|| SubjectError::Shape(subject.to_owned()))?;
    let force = ForceId::new(force).map_err(|source| SubjectError::Force {
        subject: subject.to_owned(),
        source,
    })?;
    let source = source.parse().map_err(|source| SubjectError::Source {
        subject: subject.to_owned(),
        source,
    })?;
    Ok((force, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kent() -> ForceId {
        ForceId::new("kent").unwrap()
    }

    #[test]
    fn builds_subjects() {
        assert_eq!(
            events(&kent(), SourceKind::EntraSignin),
            "nmc.events.kent.entra_signin"
        );
        assert_eq!(events_of(&kent()), "nmc.events.kent.>");
        assert_eq!(alerts(&kent(), Level::High), "nmc.alerts.kent.high");
        assert_eq!(alerts_of(&kent()), "nmc.alerts.kent.>");
        assert_eq!(dlq(&kent()), "nmc.dlq.kent");
    }

    #[test]
    fn parses_events_subjects() {
        assert_eq!(
            parse_events("nmc.events.kent.aws_cloudtrail").unwrap(),
            (kent(), SourceKind::AwsCloudtrail)
        );
        assert!(matches!(
            parse_events("nmc.events.kent"),
            Err(SubjectError::Shape(_))
        ));
        assert!(matches!(
            parse_events("nmc.events.kent.a.b"),
            Err(SubjectError::Shape(_))
        ));
        assert!(matches!(
            parse_events("nmc.alerts.kent.high"),
            Err(SubjectError::Shape(_))
        ));
        assert!(matches!(
            parse_events("nmc.events.KENT.sysmon"),
            Err(SubjectError::Force { .. })
        ));
        assert!(matches!(
            parse_events("nmc.events.kent.netflow"),
            Err(SubjectError::Source { .. })
        ));
    }

    #[test]
    fn subject_errors_give_their_dead_letter_reason() {
        let reason = |s: &str| parse_events(s).unwrap_err().reason();
        assert_eq!(reason("nmc.events.kent"), DeadLetterReason::BadSubject);
        assert_eq!(
            reason("nmc.events.KENT.sysmon"),
            DeadLetterReason::BadSubject
        );
        assert_eq!(
            reason("nmc.events.kent.netflow"),
            DeadLetterReason::UnknownSource
        );
    }

    #[test]
    fn every_built_subject_parses_back() {
        for s in SourceKind::ALL {
            assert_eq!(parse_events(&events(&kent(), s)).unwrap().1, s);
        }
    }
}
