//! Source kinds: what telemetry an event is, which Sigma logsource it feeds and where its time is.

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

/// A kind of telemetry, the last token of `nmc.events.<force>.<source>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Entra ID (Azure AD) sign-in logs.
    EntraSignin,
    /// Entra ID audit logs.
    EntraAudit,
    /// Microsoft 365 unified audit log.
    M365Audit,
    /// Azure activity log.
    AzureActivity,
    /// AWS CloudTrail records.
    AwsCloudtrail,
    /// Windows Security event log.
    WindowsSecurity,
    /// Sysmon event log.
    Sysmon,
    /// Linux auditd.
    LinuxAuditd,
    /// Generic syslog.
    Syslog,
    /// Firewall logs.
    Firewall,
}

/// The Sigma `logsource` a source kind provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSource {
    /// Sigma `product`.
    pub product: &'static str,
    /// Sigma `service`, if the source is one service.
    pub service: Option<&'static str>,
    /// Sigma `category`, if the source is one category.
    pub category: Option<&'static str>,
}

/// Why a string is not a source kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source `{0}`; known sources: {known}", known = SourceKind::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownSource(pub String);

impl SourceKind {
    /// Every source kind, in a fixed order.
    pub const ALL: [SourceKind; 10] = [
        SourceKind::EntraSignin,
        SourceKind::EntraAudit,
        SourceKind::M365Audit,
        SourceKind::AzureActivity,
        SourceKind::AwsCloudtrail,
        SourceKind::WindowsSecurity,
        SourceKind::Sysmon,
        SourceKind::LinuxAuditd,
        SourceKind::Syslog,
        SourceKind::Firewall,
    ];

    /// The subject token of this source.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::EntraSignin => "entra_signin",
            SourceKind::EntraAudit => "entra_audit",
            SourceKind::M365Audit => "m365_audit",
            SourceKind::AzureActivity => "azure_activity",
            SourceKind::AwsCloudtrail => "aws_cloudtrail",
            SourceKind::WindowsSecurity => "windows_security",
            SourceKind::Sysmon => "sysmon",
            SourceKind::LinuxAuditd => "linux_auditd",
            SourceKind::Syslog => "syslog",
            SourceKind::Firewall => "firewall",
        }
    }

    /// The onboarding phase this source belongs to.
    pub fn phase(self) -> Phase {
        match self {
            SourceKind::EntraSignin
            | SourceKind::EntraAudit
            | SourceKind::M365Audit
            | SourceKind::AzureActivity
            | SourceKind::AwsCloudtrail => Phase::Cloud,
            _ => Phase::OnPrem,
        }
    }

    /// The Sigma logsource this source provides.
    pub fn logsource(self) -> LogSource {
        let (product, service, category) = match self {
            SourceKind::EntraSignin => ("azure", Some("signinlogs"), None),
            SourceKind::EntraAudit => ("azure", Some("auditlogs"), None),
            SourceKind::M365Audit => ("m365", Some("audit"), None),
            SourceKind::AzureActivity => ("azure", Some("activitylogs"), None),
            SourceKind::AwsCloudtrail => ("aws", Some("cloudtrail"), None),
            SourceKind::WindowsSecurity => ("windows", Some("security"), None),
            SourceKind::Sysmon => ("windows", Some("sysmon"), None),
            SourceKind::LinuxAuditd => ("linux", Some("auditd"), None),
            SourceKind::Syslog => ("linux", Some("syslog"), None),
            SourceKind::Firewall => ("", None, Some("firewall")),
        };
        LogSource {
            product,
            service,
            category,
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
    fn phases() {
        assert_eq!(SourceKind::AwsCloudtrail.phase(), Phase::Cloud);
        assert_eq!(SourceKind::Sysmon.phase(), Phase::OnPrem);
    }
}
