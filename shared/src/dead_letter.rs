//! Dead-letter reasons: why an event was set aside instead of processed, as the stable code in
//! a dead letter's `Nmc-Reason` header.
//!
//! The codes are a contract with operators (dashboards, alerting on dead-letter rates, `nmc dlq
//! tail` filters): never rename one, add a new reason instead. Each is documented, with who emits
//! it and what to do about it, in `docs/dead-letters.md` (a test checks that every code is).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Declares [`DeadLetterReason`] from one table of variants, codes and descriptions, so that
/// [`DeadLetterReason::ALL`], the code, the description, parsing and the serde form cannot leave
/// a reason out or spell it differently.
macro_rules! dead_letter_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $code:literal, $description:literal;)+) => {
        /// Why an event was dead-lettered: the `Nmc-Reason` header (see the module docs).
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub enum DeadLetterReason {
            $($(#[doc = $doc])* #[serde(rename = $code)] $variant,)+
        }

        impl DeadLetterReason {
            /// Every reason, in declaration order.
            pub const ALL: [DeadLetterReason; [$($code),+].len()] =
                [$(DeadLetterReason::$variant),+];

            /// The stable code, as sent in the `Nmc-Reason` header.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DeadLetterReason::$variant => $code,)+
                }
            }

            /// One line saying what the reason means, for listings and help texts.
            pub fn description(self) -> &'static str {
                match self {
                    $(DeadLetterReason::$variant => $description,)+
                }
            }
        }
    };
}

dead_letter_reasons! {
    /// The payload is larger than `max_event_bytes`.
    Oversize => "oversize",
        "the payload is larger than the node's max_event_bytes";
    /// The payload is not valid JSON.
    MalformedJson => "malformed_json",
        "the payload is not valid JSON";
    /// The payload is JSON but not one object.
    NotAnObject => "not_an_object",
        "the payload is JSON but not one JSON object";
    /// No time field of the source, nor an ingest-time field, is present.
    MissingTime => "missing_time",
        "none of the source's time fields, nor an ingest-time field (@timestamp), is present";
    /// A time field is present but not a usable time.
    BadTime => "bad_time",
        "the event's time field is not a timestamp, or is outside 2000-2100";
    /// The subject's source token is not a known source kind.
    UnknownSource => "unknown_source",
        "the subject's source token is not a source nmc knows";
    /// The subject is not `nmc.events.<force>.<source>`.
    BadSubject => "bad_subject",
        "the subject is not of the form nmc.events.<force>.<source>";
    /// The source is not part of the force's onboarding phase.
    SourceNotInPhase => "source_not_in_phase",
        "the force is onboarded for cloud sources only and this is an on-premise source";
    /// The event time is too far ahead of the node's clock.
    FutureTime => "future_time",
        "the event time is more than max_future_secs ahead of the node's clock";
    /// Rule evaluation panicked on this event `max_attempts` times.
    EvaluationPanic => "evaluation_panic",
        "rule evaluation panicked on this event max_attempts times";
    /// The force is registered but not onboarded on this cluster.
    ForceNotOnboarded => "force_not_onboarded",
        "the force is in the registry but not onboarded on this cluster";
    /// The subject's force token names no registered force.
    UnknownForce => "unknown_force",
        "the subject's force token is not a force in the nmc registry";
    /// The payload is not UTF-8.
    InvalidUtf8 => "invalid_utf8",
        "the payload is not UTF-8 text";
    /// An object of the payload names the same key twice.
    DuplicateKey => "duplicate_key",
        "an object in the payload names the same key twice (readers disagree on which counts)";
    /// Arrays and objects nested deeper than the limit.
    TooDeep => "too_deep",
        "the payload nests arrays and objects deeper than 64 levels";
    /// The message's NATS headers are larger than `max_header_bytes`.
    OversizeHeaders => "oversize_headers",
        "the message's NATS headers are larger than the node's max_header_bytes";
    /// The event time is further in the past than `max_past_secs`.
    PastTime => "past_time",
        "the event time is more than max_past_secs behind the node's clock";
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a dead-letter reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dead-letter reason `{0}`; known reasons: {known}", known = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownReason(pub String);

impl FromStr for DeadLetterReason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeadLetterReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator documentation of every reason.
    const DOC: &str = include_str!("../../docs/dead-letters.md");

    #[test]
    fn every_reason_is_documented() {
        for r in DeadLetterReason::ALL {
            let heading = format!("\n### `{}`\n", r.as_str());
            assert!(
                DOC.contains(&heading),
                "docs/dead-letters.md has no section `### `{r}``"
            );
        }
    }

    #[test]
    fn codes_are_stable_and_round_trip() {
        let codes: Vec<&str> = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            codes,
            [
                "oversize",
                "malformed_json",
                "not_an_object",
                "missing_time",
                "bad_time",
                "unknown_source",
                "bad_subject",
                "source_not_in_phase",
                "future_time",
                "evaluation_panic",
                "force_not_onboarded",
                "unknown_force",
                "invalid_utf8",
                "duplicate_key",
                "too_deep",
                "oversize_headers",
                "past_time",
            ],
            "codes are a contract: add reasons, never rename them"
        );
        for r in DeadLetterReason::ALL {
            assert_eq!(r.as_str().parse::<DeadLetterReason>().unwrap(), r);
            assert_eq!(r.to_string(), r.as_str());
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
            assert_eq!(
                serde_json::from_str::<DeadLetterReason>(&format!("\"{r}\"")).unwrap(),
                r
            );
            assert!(!r.description().is_empty());
        }
        let err = "nope".parse::<DeadLetterReason>().unwrap_err().to_string();
        assert!(err.contains("malformed_json"), "{err}");
    }
}
