//! The alert lifecycle: the states an alert goes through once raised (new, acknowledged,
//! investigating, closed with an outcome), the actions analysts and force contacts take on it,
//! and the audit entry each action leaves. Pure: the runtime keeps each alert's [`Lifecycle`]
//! in a bucket and appends the [`AuditEntry`]s to a stream; escalation asks
//! [`Lifecycle::is_acknowledged`]. The command line and the console share these rules.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ForceId;

/// Longest name of whoever acts (an e-mail address or a user id).
pub const MAX_ACTOR_LEN: usize = 128;
/// Longest note kept with an action.
pub const MAX_NOTE_LEN: usize = 4096;

/// Where an alert stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Raised; nobody has acted on it.
    New,
    /// Somebody has seen it (escalation stops).
    Acknowledged,
    /// Somebody is assigned to it.
    Investigating,
    /// Done, with an [`Outcome`].
    Closed,
}

/// What a closed alert turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A real attack or policy breach.
    TruePositive,
    /// Real activity, but allowed or harmless.
    Benign,
    /// The rule matched what it should not have (tune the rule).
    FalsePositive,
}

/// What somebody does to an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// "I have seen it": stops escalation.
    Acknowledge,
    /// Give it to somebody to investigate (acknowledges it too).
    Assign {
        /// Who investigates.
        to: String,
    },
    /// Close it with what it turned out to be (acknowledges it too).
    Close {
        /// The outcome.
        outcome: Outcome,
    },
    /// Open a closed alert again (it is investigated again).
    Reopen,
}

/// An alert's lifecycle record: its state and who did what last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Where it stands.
    pub state: State,
    /// Who investigates it, once assigned.
    pub assignee: Option<String>,
    /// What it turned out to be, once closed.
    pub outcome: Option<Outcome>,
    /// When it was first acknowledged (explicitly, or by an assignment or a close), Unix ms.
    pub acknowledged_ms: Option<i64>,
    /// When it last changed, Unix ms.
    pub updated_ms: i64,
    /// Who changed it last (empty for a new alert).
    pub updated_by: String,
}

/// One action as the audit trail keeps it: append-only, one per change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The alert.
    pub alert: Uuid,
    /// Its force.
    pub force: ForceId,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Who.
    pub by: String,
    /// What.
    #[serde(flatten)]
    pub action: Action,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why, in the actor's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why an action cannot be taken; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The alert is closed: only a reopen changes it.
    #[error("the alert is closed: reopen it first")]
    Closed,
    /// A reopen of an alert that is not closed.
    #[error("the alert is not closed, so it cannot be reopened")]
    NotClosed,
    /// An acknowledgement of an alert somebody already acknowledged.
    #[error("the alert is already {0:?}: assign or close it instead")]
    AlreadyAcknowledged(State),
    /// A missing or unusable actor or assignee name.
    #[error("`{0}` is not a usable name: 1 to 128 characters, no control characters")]
    BadName(String),
    /// A note over [`MAX_NOTE_LEN`].
    #[error("the note has {0} characters, more than the 4096 allowed")]
    NoteTooLong(usize),
}

impl Lifecycle {
    /// The record of an alert raised at `raised_ms`.
    pub fn new(raised_ms: i64) -> Lifecycle {
        Lifecycle {
            state: State::New,
            assignee: None,
            outcome: None,
            acknowledged_ms: None,
            updated_ms: raised_ms,
            updated_by: String::new(),
        }
    }

    /// Whether somebody has acknowledged it (then it does not escalate).
    pub fn is_acknowledged(&self) -> bool {
        self.acknowledged_ms.is_some()
    }

    /// The record after `by` takes `action` at `at_ms` with `note`, and its audit entry; the
    /// record itself is unchanged when the action is refused.
    pub fn apply(
        &self,
        alert: Uuid,
        force: &ForceId,
        action: &Action,
        by: &str,
        at_ms: i64,
        note: Option<&str>,
    ) -> Result<(Lifecycle, AuditEntry), TransitionError> {
        check_name(by)?;
        if let Some(n) = note {
            let len = n.chars().count();
            if len > MAX_NOTE_LEN {
                return Err(TransitionError::NoteTooLong(len));
            }
        }
        let mut next = self.clone();
        match action {
            Action::Reopen => {
                if self.state != State::Closed {
                    return Err(TransitionError::NotClosed);
                }
                next.state = State::Investigating;
                next.outcome = None;
            }
            _ if self.state == State::Closed => return Err(TransitionError::Closed),
            Action::Acknowledge => {
                if self.state != State::New {
                    return Err(TransitionError::AlreadyAcknowledged(self.state));
                }
                next.state = State::Acknowledged;
            }
            Action::Assign { to } => {
                check_name(to)?;
                next.state = State::Investigating;
                next.assignee = Some(to.clone());
            }
            Action::Close { outcome } => {
                next.state = State::Closed;
                next.outcome = Some(*outcome);
            }
        }
        next.acknowledged_ms = self.acknowledged_ms.or(Some(at_ms));
        next.updated_ms = at_ms;
        next.updated_by = by.to_owned();
        let entry = AuditEntry {
            alert,
            force: force.clone(),
            at_ms,
            by: by.to_owned(),
            action: action.clone(),
            from: self.state,
            to: next.state,
            note: note.map(str::to_owned),
        };
        Ok((next, entry))
    }
}

fn check_name(name: &str) -> Result<(), TransitionError> {
    let len = name.chars().count();
    if len == 0 || len > MAX_ACTOR_LEN || name.chars().any(char::is_control) {
        let shown: String = name.chars().take(MAX_ACTOR_LEN).collect();
        return Err(TransitionError::BadName(shown));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kent() -> ForceId {
        ForceId::new("kent").unwrap()
    }

    fn act(l: &Lifecycle, a: Action, at: i64) -> Result<Lifecycle, TransitionError> {
        l.apply(Uuid::nil(), &kent(), &a, "analyst@centre", at, None)
            .map(|(l, _)| l)
    }

    #[test]
    fn the_usual_path_new_acknowledged_investigating_closed() {
        let l = Lifecycle::new(1_000);
        assert!(!l.is_acknowledged());
        let l = act(&l, Action::Acknowledge, 2_000).unwrap();
        assert_eq!(
            (l.state, l.acknowledged_ms),
            (State::Acknowledged, Some(2_000))
        );
        let l = act(
            &l,
            Action::Assign {
                to: "soc-kent@kent.police.uk".into(),
            },
            3_000,
        )
        .unwrap();
        assert_eq!(l.state, State::Investigating);
        assert_eq!(
            l.acknowledged_ms,
            Some(2_000),
            "the first acknowledgement stays"
        );
        let (closed, entry) = l
            .apply(
                Uuid::nil(),
                &kent(),
                &Action::Close {
                    outcome: Outcome::TruePositive,
                },
                "soc-kent@kent.police.uk",
                4_000,
                Some("password reset, sessions revoked"),
            )
            .unwrap();
        assert_eq!(closed.state, State::Closed);
        assert_eq!(closed.outcome, Some(Outcome::TruePositive));
        assert_eq!(
            (entry.from, entry.to),
            (State::Investigating, State::Closed)
        );
        let json = serde_json::to_value(&entry).unwrap();
        let back: AuditEntry = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, entry, "the audit trail reads back what it wrote");
        assert_eq!(
            json,
            serde_json::json!({
                "alert": "00000000-0000-0000-0000-000000000000",
                "force": "kent",
                "at_ms": 4000,
                "by": "soc-kent@kent.police.uk",
                "action": "close",
                "outcome": "true_positive",
                "from": "investigating",
                "to": "closed",
                "note": "password reset, sessions revoked",
            })
        );
    }

    #[test]
    fn closing_or_assigning_acknowledges_and_closed_alerts_only_reopen() {
        let l = Lifecycle::new(0);
        let closed = act(
            &l,
            Action::Close {
                outcome: Outcome::FalsePositive,
            },
            5,
        )
        .unwrap();
        assert_eq!(closed.acknowledged_ms, Some(5));
        for a in [
            Action::Acknowledge,
            Action::Assign { to: "x".into() },
            Action::Close {
                outcome: Outcome::Benign,
            },
        ] {
            assert_eq!(act(&closed, a, 6), Err(TransitionError::Closed));
        }
        let reopened = act(&closed, Action::Reopen, 7).unwrap();
        assert_eq!(
            (reopened.state, reopened.outcome),
            (State::Investigating, None)
        );
        assert_eq!(
            act(&reopened, Action::Reopen, 8),
            Err(TransitionError::NotClosed)
        );
        assert_eq!(
            act(&reopened, Action::Acknowledge, 8),
            Err(TransitionError::AlreadyAcknowledged(State::Investigating))
        );
        let assigned = act(&l, Action::Assign { to: "y".into() }, 9).unwrap();
        assert!(assigned.is_acknowledged());
    }

    #[test]
    fn names_and_notes_are_bounded_and_refusals_change_nothing() {
        let l = Lifecycle::new(0);
        let refuse = |by: &str, note: Option<&str>, a: Action| {
            l.apply(Uuid::nil(), &kent(), &a, by, 1, note).unwrap_err()
        };
        assert!(matches!(
            refuse("", None, Action::Acknowledge),
            TransitionError::BadName(_)
        ));
        assert!(matches!(
            refuse("a\nb", None, Action::Acknowledge),
            TransitionError::BadName(_)
        ));
        assert!(matches!(
            refuse(&"x".repeat(129), None, Action::Acknowledge),
            TransitionError::BadName(_)
        ));
        assert!(matches!(
            refuse("ok", None, Action::Assign { to: String::new() }),
            TransitionError::BadName(_)
        ));
        assert_eq!(
            refuse("ok", Some(&"n".repeat(4097)), Action::Acknowledge),
            TransitionError::NoteTooLong(4097)
        );
        assert_eq!(l, Lifecycle::new(0));
        let action: Action = serde_json::from_str(r#"{"action":"assign","to":"z"}"#).unwrap();
        assert_eq!(action, Action::Assign { to: "z".into() });
    }
}
