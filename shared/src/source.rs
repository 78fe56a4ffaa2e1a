//! Source kinds: what telemetry an event is, which onboarding phase it belongs to and where its
//! time is. Which Sigma logsources a kind feeds is in [`crate::mapping`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Onboarding phase a source belongs to: forces start with cloud sources, later add on-premise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Cloud estate: Entra ID, Microsoft 365, Azure, AWS.
    Cloud,
    /// On-premise systems: Windows, Linux, network devices.
    OnPrem,
}

/// Declares [`SourceKind`] from one table of variants and their subject tokens, so that
/// [`SourceKind::ALL`], [`SourceKind::as_str`], parsing and the serde form cannot leave a kind
/// out or spell it differently: a new kind is one line here, and the compiler then asks for its
/// phase, its time fields and its logsource class (exhaustive matches, no wildcard).
macro_rules! source_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $token:literal,)+) => {
        /// A kind of telemetry, the last token of `nmc.events.<force>.<source>`.
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub enum SourceKind {
            $($(#[doc = $doc])* #[serde(rename = $token)] $variant,)+
        }

        impl SourceKind {
            /// Every source kind, in declaration order.
            pub const ALL: [SourceKind; [$($token),+].len()] = [$(SourceKind::$variant),+];

            /// The subject token of this source.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(SourceKind::$variant => $token,)+
                }
            }
        }
    };
}

source_kinds! {
    /// Entra ID (Azure AD) sign-in logs.
    EntraSignin => "entra_signin",
    /// Entra ID audit logs.
    EntraAudit => "entra_audit",
    /// Microsoft 365 unified audit log.
    M365Audit => "m365_audit",
    /// Azure activity log.
    AzureActivity => "azure_activity",
    /// AWS CloudTrail records.
    AwsCloudtrail => "aws_cloudtrail",
    /// Windows Security event log.
    WindowsSecurity => "windows_security",
    /// Sysmon event log.
    Sysmon => "sysmon",
    /// Linux auditd.
    LinuxAuditd => "linux_auditd",
    /// Generic syslog.
    Syslog => "syslog",
    /// Firewall logs.
    Firewall => "firewall",
}

/// Why a string is not a source kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source `{0}`; known sources: {known}", known = SourceKind::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownSource(pub String);

impl SourceKind {
    /// The onboarding phase this source belongs to.
    pub fn phase(self) -> Phase {
        match self {
            SourceKind::EntraSignin
            | SourceKind::EntraAudit
            | SourceKind::M365Audit
            | SourceKind::AzureActivity
            | SourceKind::AwsCloudtrail => Phase::Cloud,
            SourceKind::WindowsSecurity
            | SourceKind::Sysmon
            | SourceKind::LinuxAuditd
            | SourceKind::Syslog
            | SourceKind::Firewall => Phase::OnPrem,
        }
    }

    /// Fields that may hold the event time, most specific first (dotted paths into the JSON).
    ///
    /// Each source arrives in a few shapes (raw diagnostic export, Graph API, Sentinel tables,
    /// collector-flattened Windows events), so several candidates are tried in order.
    pub fn time_fields(self) -> &'static [&'static str] {
        match self {
            SourceKind::EntraSignin => &[
                "time",
                "createdDateTime",
                "properties.createdDateTime",
                "TimeGenerated",
            ],
            SourceKind::EntraAudit => &[
                "time",
                "activityDateTime",
                "properties.activityDateTime",
                "TimeGenerated",
            ],
            SourceKind::M365Audit => &["CreationTime", "TimeGenerated", "time"],
            SourceKind::AzureActivity => &["time", "eventTimestamp", "TimeGenerated"],
            SourceKind::AwsCloudtrail => &["eventTime"],
            SourceKind::WindowsSecurity | SourceKind::Sysmon => &[
                "Event.System.TimeCreated.#attributes.SystemTime",
                "Event.System.TimeCreated.SystemTime",
                "TimeCreated",
                "EventTime",
                "UtcTime",
                "@timestamp",
                "TimeGenerated",
            ],
            SourceKind::LinuxAuditd | SourceKind::Syslog | SourceKind::Firewall => {
                &["@timestamp", "timestamp", "time"]
            }
        }
    }
}

impl FromStr for SourceKind {
    type Err = UnknownSource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        for k in SourceKind::ALL {
            assert_eq!(k.as_str().parse::<SourceKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let err = "netflow".parse::<SourceKind>().unwrap_err().to_string();
        assert!(err.contains("entra_signin"), "{err}");
    }

    #[test]
    fn all_lists_every_kind_once_in_order() {
        let mut sorted = SourceKind::ALL.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, SourceKind::ALL, "declaration order, no duplicates");
        let mut tokens: Vec<&str> = SourceKind::ALL.iter().map(|k| k.as_str()).collect();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), SourceKind::ALL.len(), "distinct tokens");
    }

    #[test]
    fn phases() {
        assert_eq!(SourceKind::AwsCloudtrail.phase(), Phase::Cloud);
        assert_eq!(SourceKind::M365Audit.phase(), Phase::Cloud);
        assert_eq!(SourceKind::Sysmon.phase(), Phase::OnPrem);
        assert_eq!(SourceKind::Firewall.phase(), Phase::OnPrem);
    }
}
