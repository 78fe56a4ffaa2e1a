//! Data minimisation: the few fields of an evidence event that a notification may carry.
//!
//! A message leaves the centre (e-mail, chat, a force's ITSM tool), so it carries only what a
//! contact needs to start: who, from where, on what host, doing what. Each source has an
//! allowlist of labelled field paths; nothing else of the raw event goes out (the console shows
//! the whole event to those allowed to see it).

use serde_json::Value;

use crate::json::get_field;
use crate::source::SourceKind;

/// Longest value copied into a message (longer ones are cut, marked with `…`).
pub const MAX_VALUE_CHARS: usize = 200;

/// The allowlist of a source: (label, candidate paths, first present wins).
pub fn allowlist(source: SourceKind) -> &'static [(&'static str, &'static [&'static str])] {
    match source {
        SourceKind::EntraSignin => &[
            (
                "user",
                &["properties.userPrincipalName", "userPrincipalName"],
            ),
            ("source_ip", &["properties.ipAddress", "callerIpAddress"]),
            ("country", &["properties.location.countryOrRegion"]),
            ("app", &["properties.appDisplayName"]),
            ("result", &["properties.status.errorCode", "resultType"]),
        ],
        SourceKind::EntraAudit => &[
            ("user", &["properties.initiatedBy.user.userPrincipalName"]),
            (
                "source_ip",
                &["properties.initiatedBy.user.ipAddress", "callerIpAddress"],
            ),
            (
                "operation",
                &["properties.activityDisplayName", "operationName"],
            ),
            ("result", &["properties.result", "resultType"]),
        ],
        SourceKind::M365Audit => &[
            ("user", &["UserId"]),
            ("source_ip", &["ClientIP", "ClientIPAddress"]),
            ("operation", &["Operation"]),
            ("workload", &["Workload"]),
        ],
        SourceKind::AzureActivity => &[
            ("user", &["caller", "identity.claims.name"]),
            ("source_ip", &["callerIpAddress"]),
            ("operation", &["operationName.value", "operationName"]),
            ("resource", &["resourceId"]),
        ],
        SourceKind::AwsCloudtrail => &[
            ("user", &["userIdentity.arn", "userIdentity.userName"]),
            ("source_ip", &["sourceIPAddress"]),
            ("operation", &["eventName"]),
            ("service", &["eventSource"]),
            ("region", &["awsRegion"]),
        ],
        SourceKind::WindowsSecurity => &[
            ("user", &["TargetUserName", "SubjectUserName"]),
            ("host", &["Computer"]),
            ("source_ip", &["IpAddress"]),
            ("event_id", &["EventID"]),
        ],
        SourceKind::Sysmon => &[
            ("user", &["User"]),
            ("host", &["Computer"]),
            ("image", &["Image"]),
            ("event_id", &["EventID"]),
        ],
        SourceKind::LinuxAuditd => &[
            ("user", &["auid", "uid"]),
            ("host", &["host", "hostname"]),
            ("executable", &["exe"]),
        ],
        SourceKind::Syslog => &[
            ("host", &["host", "hostname"]),
            ("program", &["program", "app_name"]),
        ],
        SourceKind::Firewall => &[
            ("source_ip", &["src_ip", "src"]),
            ("destination_ip", &["dst_ip", "dst"]),
            ("destination_port", &["dst_port", "dpt"]),
            ("action", &["action"]),
            ("host", &["host", "hostname"]),
        ],
    }
}

/// The allowlisted fields of one event, labelled, in allowlist order; absent ones left out.
/// Values are scalars rendered as text (objects and arrays are never copied).
pub fn key_fields(source: SourceKind, body: &Value) -> Vec<(&'static str, String)> {
    allowlist(source)
        .iter()
        .filter_map(|(label, paths)| {
            paths.iter().find_map(|p| {
                let text = match get_field(body, p)? {
                    Value::String(s) if !s.is_empty() => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((*label, cut(&text)))
            })
        })
        .collect()
}

/// A value as messages may carry it: control characters dropped, at most
/// [`MAX_VALUE_CHARS`] characters (then `…`).
pub fn clip(s: &str) -> String {
    cut(s)
}

fn cut(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() <= MAX_VALUE_CHARS {
        clean
    } else {
        let mut out: String = clean.chars().take(MAX_VALUE_CHARS).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_allowlisted_scalars_leave() {
        let body = json!({
            "properties": {
                "userPrincipalName": "a.smith@kent.police.example",
                "ipAddress": "203.0.113.9",
                "location": {"countryOrRegion": "RU", "city": "Moscow"},
                "deviceDetail": {"deviceId": "secret-device"},
                "status": {"errorCode": 50126},
            },
            "correlationId": "abc",
        });
        let f = key_fields(SourceKind::EntraSignin, &body);
        assert_eq!(
            f,
            [
                ("user", "a.smith@kent.police.example".to_string()),
                ("source_ip", "203.0.113.9".into()),
                ("country", "RU".into()),
                ("result", "50126".into()),
            ]
        );
        let text = format!("{f:?}");
        assert!(!text.contains("Moscow") && !text.contains("secret-device"));
    }

    #[test]
    fn long_values_are_cut_and_control_characters_dropped() {
        let body = json!({"eventName": format!("a\u{7}{}", "x".repeat(500))});
        let f = key_fields(SourceKind::AwsCloudtrail, &body);
        assert_eq!(f[0].0, "operation");
        assert_eq!(f[0].1.chars().count(), MAX_VALUE_CHARS + 1);
        assert!(f[0].1.starts_with("ax"));
    }

    #[test]
    fn every_source_has_an_allowlist() {
        for s in SourceKind::ALL {
            assert!(!allowlist(s).is_empty(), "{s:?}");
        }
    }
}
