//! A force's nominated contacts and who of them is told of an alert, when.
//!
//! Pure: the runtime keeps contacts in a bucket and asks [`Contact::receives`] (level, working
//! hours) and [`tiers`] (escalation order) what to do with each alert. Working hours are kept in
//! the contact's own time zone: `Europe/London` (the default: British summer time from 01:00 UTC
//! on the last Sunday of March to 01:00 UTC on the last Sunday of October) or `UTC`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::Level;

/// Longest contact name.
pub const MAX_NAME_LEN: usize = 64;
/// Most channels one contact may have.
pub const MAX_CHANNELS: usize = 8;
/// Longest e-mail address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest webhook URL.
pub const MAX_URL_LEN: usize = 2048;
/// Deepest escalation tier.
pub const MAX_TIER: u8 = 9;

/// Who a contact is and how to reach them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Unique within the force: lowercase letters, digits and `-` (part of bucket keys).
    pub name: String,
    /// What they are (e.g. "SOC lead", "ISO"): shown in messages and listings.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// How to reach them, all of them used for each alert they receive.
    pub channels: Vec<Channel>,
    /// The lowest level they are told of.
    #[serde(default = "default_min_level")]
    pub min_level: Level,
    /// Escalation order: tier 1 is told at once; tier n+1 when tier n has not acknowledged a
    /// high or critical alert within its level's ack timeout (or could not be reached).
    #[serde(default = "one")]
    pub tier: u8,
    /// When they work; `None`: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<WorkingHours>,
    /// The lowest level they are told of outside working hours (critical always goes out).
    #[serde(default = "critical")]
    pub out_of_hours_level: Level,
    /// Most single messages a minute; the rest go out as a digest (critical alerts never wait).
    /// `None`: the notifier's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
}

fn default_min_level() -> Level {
    Level::Medium
}

fn one() -> u8 {
    1
}

fn critical() -> Level {
    Level::Critical
}

/// One way of reaching a contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum Channel {
    /// E-mail over SMTP.
    Email {
        /// The address.
        to: String,
    },
    /// A JSON POST signed with HMAC-SHA256 (for ITSM tools and the force's own automation).
    Webhook {
        /// Where to POST.
        url: String,
        /// Name of the signing secret in the notifier's secrets (never the secret itself).
        secret: String,
    },
    /// A Microsoft Teams incoming webhook (Adaptive Card).
    Teams {
        /// The webhook URL (a secret in itself: kept out of logs).
        url: String,
    },
    /// A Slack incoming webhook (Block Kit).
    Slack {
        /// The webhook URL (a secret in itself: kept out of logs).
        url: String,
    },
}

impl Channel {
    /// The kind, as in files and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Email { .. } => "email",
            Channel::Webhook { .. } => "webhook",
            Channel::Teams { .. } => "teams",
            Channel::Slack { .. } => "slack",
        }
    }

    /// A stable id of this channel within its contact (kind and a hash of the target): part of
    /// delivery record keys, so an edit of another channel does not re-send this one.
    pub fn id(&self) -> String {
        let target = match self {
            Channel::Email { to } => to.to_ascii_lowercase(),
            Channel::Webhook { url, .. } | Channel::Teams { url } | Channel::Slack { url } => {
                url.clone()
            }
        };
        let hash = uuid::Uuid::new_v5(&crate::alert::ALERT_NAMESPACE, target.as_bytes());
        format!("{}-{}", self.kind(), &hash.simple().to_string()[..10])
    }

    /// Where it goes, safe to print: the e-mail address, or a URL's scheme and host only (the
    /// path of an incoming-webhook URL is its credential).
    pub fn display_target(&self) -> String {
        match self {
            Channel::Email { to } => to.clone(),
            Channel::Webhook { url, .. } | Channel::Teams { url } | Channel::Slack { url } => {
                redact_url(url)
            }
        }
    }
}

/// `https://host/...` for a URL: scheme and host, never the path or query.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

/// When a contact works: days of the week and a daily window in their time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingHours {
    /// Working days, Monday = 1 … Sunday = 7 (e.g. `[1, 2, 3, 4, 5]`).
    pub days: Vec<u8>,
    /// Start, `HH:MM`.
    pub start: String,
    /// End, `HH:MM` (after `start`).
    pub end: String,
    /// `Europe/London` or `UTC`.
    #[serde(default = "london")]
    pub timezone: String,
}

fn london() -> String {
    "Europe/London".into()
}

/// Why contact data is refused; each says what a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// A name outside `[a-z0-9-]{1,64}`.
    #[error(
        "contact name `{0}` is not usable: 1 to 64 lowercase letters, digits or `-`, starting with a letter or digit"
    )]
    Name(String),
    /// No channel, or too many.
    #[error("a contact needs 1 to 8 channels (email, webhook, teams, slack); this one has {0}")]
    Channels(usize),
    /// A malformed e-mail address.
    #[error("`{0}` is not an e-mail address (local@domain, at most 254 characters)")]
    Email(String),
    /// A URL that is not https (or http to a loopback address, for tests).
    #[error(
        "webhook URL `{0}` is not usable: https://host/path, at most 2048 characters (http only to 127.0.0.1 or localhost)"
    )]
    Url(String),
    /// A bad secret reference.
    #[error(
        "webhook secret reference `{0}` is not usable: the name of a notifier secret (letters, digits, `-`, `_`), not the secret itself"
    )]
    Secret(String),
    /// A tier outside 1..=9.
    #[error("tier {0} is not usable: escalation tiers are 1 (told at once) to 9")]
    Tier(u8),
    /// Bad working hours.
    #[error("working hours are not usable: {0}")]
    Hours(String),
    /// A zero message rate.
    #[error("max_per_minute 0 would hold every message for the digest: use at least 1")]
    Rate,
    /// The same channel twice.
    #[error("the channel {0} is listed twice")]
    DuplicateChannel(String),
}

impl Contact {
    /// Checks everything a contact holds; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ContactError> {
        check_name(&self.name)?;
        if self.channels.is_empty() || self.channels.len() > MAX_CHANNELS {
            return Err(ContactError::Channels(self.channels.len()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for c in &self.channels {
            match c {
                Channel::Email { to } => check_email(to)?,
                Channel::Webhook { url, secret } => {
                    check_url(url)?;
                    let ok = !secret.is_empty()
                        && secret.len() <= 64
                        && secret
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !ok {
                        return Err(ContactError::Secret(secret.chars().take(64).collect()));
                    }
                }
                Channel::Teams { url } | Channel::Slack { url } => check_url(url)?,
            }
            if !ids.insert(c.id()) {
                return Err(ContactError::DuplicateChannel(c.display_target()));
            }
        }
        if self.tier == 0 || self.tier > MAX_TIER {
            return Err(ContactError::Tier(self.tier));
        }
        if let Some(h) = &self.hours {
            h.window()?;
        }
        if self.max_per_minute == Some(0) {
            return Err(ContactError::Rate);
        }
        Ok(())
    }

    /// The contact with every webhook URL shown as scheme and host only (for listings: an
    /// incoming-webhook URL is a credential).
    pub fn redacted(&self) -> Contact {
        let mut c = self.clone();
        for ch in &mut c.channels {
            match ch {
                Channel::Email { .. } => {}
                Channel::Webhook { url, .. } | Channel::Teams { url } | Channel::Slack { url } => {
                    *url = redact_url(url);
                }
            }
        }
        c
    }

    /// Whether this contact is told of an alert of `level` at `now_ms` (Unix ms): at or above
    /// `min_level`, and outside working hours at or above `out_of_hours_level`; critical
    /// alerts always.
    pub fn receives(&self, level: Level, now_ms: i64) -> bool {
        if level == Level::Critical {
            return true;
        }
        if level < self.min_level {
            return false;
        }
        match &self.hours {
            Some(h) if !h.contains(now_ms) => level >= self.out_of_hours_level,
            _ => true,
        }
    }
}

/// Contacts by escalation tier, lowest tier first, each tier's names in order.
pub fn tiers(contacts: &[Contact]) -> Vec<(u8, Vec<&Contact>)> {
    let mut by: BTreeMap<u8, Vec<&Contact>> = BTreeMap::new();
    for c in contacts {
        by.entry(c.tier).or_default().push(c);
    }
    by.into_iter()
        .map(|(t, mut cs)| {
            cs.sort_by(|a, b| a.name.cmp(&b.name));
            (t, cs)
        })
        .collect()
}

/// Checks a contact name: `[a-z0-9][a-z0-9-]{0,63}`.
pub fn check_name(name: &str) -> Result<(), ContactError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ContactError::Name(name.chars().take(80).collect()))
    }
}

fn check_email(to: &str) -> Result<(), ContactError> {
    let bad = || ContactError::Email(to.chars().take(80).collect());
    if to.len() > MAX_EMAIL_LEN || to.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let (local, domain) = to.rsplit_once('@').ok_or_else(bad)?;
    let domain_ok = !domain.is_empty()
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if local.is_empty()
        || local.len() > 64
        || local.contains(['<', '>', ',', ';', '"'])
        || !domain_ok
    {
        return Err(bad());
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), ContactError> {
    let bad = || ContactError::Url(redact_url(url));
    if url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit('@')
        .next()
        .unwrap_or(authority)
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h);
    if host.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    match scheme {
        "https" => Ok(()),
        "http" if host == "127.0.0.1" || host == "localhost" || host == "[::1]" => Ok(()),
        _ => Err(bad()),
    }
}

impl WorkingHours {
    /// The daily window in minutes after midnight, checked.
    fn window(&self) -> Result<(u32, u32), ContactError> {
        let bad = |why: String| ContactError::Hours(why);
        if self.days.is_empty() || self.days.iter().any(|d| !(1..=7).contains(d)) {
            return Err(bad(format!(
                "days {:?}: list weekdays as 1 (Monday) to 7 (Sunday)",
                self.days
            )));
        }
        if self.timezone != "Europe/London" && self.timezone != "UTC" {
            return Err(bad(format!(
                "time zone `{}`: use Europe/London or UTC",
                self.timezone
            )));
        }
        let minutes = |s: &str| -> Result<u32, ContactError> {
            let (h, m) = s
                .split_once(':')
                .ok_or_else(|| bad(format!("`{s}` is not HH:MM")))?;
            let h: u32 = h.parse().map_err(|_| bad(format!("`{s}` is not HH:MM")))?;
            let m: u32 = m.parse().map_err(|_| bad(format!("`{s}` is not HH:MM")))?;
            if h > 23 || m > 59 {
                return Err(bad(format!("`{s}` is not a time of day")));
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (minutes(&self.start)?, minutes(&self.end)?);
        if end <= start {
            return Err(bad(format!(
                "{} to {}: the end must be after the start (split a night shift into two contacts or tiers)",
                self.start, self.end
            )));
        }
        Ok((start, end))
    }

    /// Whether `now_ms` (Unix ms) falls in these hours.
    pub fn contains(&self, now_ms: i64) -> bool {
        let Ok((start, end)) = self.window() else {
            return true; // Unreachable for validated contacts: fail open, tell rather than not.
        };
        let offset = if self.timezone == "Europe/London" && british_summer_time(now_ms) {
            3_600_000
        } else {
            0
        };
        let local = now_ms + offset;
        let days = local.div_euclid(86_400_000);
        let minute = (local.rem_euclid(86_400_000) / 60_000) as u32;
        // 1970-01-01 was a Thursday (4).
        let weekday = ((days + 3).rem_euclid(7) + 1) as u8;
        self.days.contains(&weekday) && minute >= start && minute < end
    }
}

/// Whether British summer time is in effect at `ms` (Unix ms): from 01:00 UTC on the last
/// Sunday of March to 01:00 UTC on the last Sunday of October.
pub fn british_summer_time(ms: i64) -> bool {
    let days = ms.div_euclid(86_400_000);
    let (year, _, _) = civil_from_days(days);
    let start = last_sunday_ms(year, 3) + 3_600_000;
    let end = last_sunday_ms(year, 10) + 3_600_000;
    ms >= start && ms < end
}

/// Midnight UTC of the last Sunday of `month` (31-day months only: March, October).
fn last_sunday_ms(year: i64, month: u32) -> i64 {
    let last = days_from_civil(year, month, 31);
    let weekday = (last + 3).rem_euclid(7); // 0 = Monday … 6 = Sunday
    (last - (weekday + 1).rem_euclid(7)) * 86_400_000
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp;

    fn ms(s: &str) -> i64 {
        parse_timestamp(s).unwrap()
    }

    fn contact() -> Contact {
        Contact {
            name: "soc-lead".into(),
            role: "SOC lead".into(),
            channels: vec![Channel::Email {
                to: "soc@kent.police.example".into(),
            }],
            min_level: Level::Medium,
            tier: 1,
            hours: Some(WorkingHours {
                days: vec![1, 2, 3, 4, 5],
                start: "08:00".into(),
                end: "18:00".into(),
                timezone: "Europe/London".into(),
            }),
            out_of_hours_level: Level::High,
            max_per_minute: None,
        }
    }

    #[test]
    fn british_summer_time_starts_and_ends_at_one_utc_on_the_last_sundays() {
        assert!(!british_summer_time(ms("2026-03-29T00:59:59Z")));
        assert!(british_summer_time(ms("2026-03-29T01:00:00Z")));
        assert!(british_summer_time(ms("2026-10-25T00:59:59Z")));
        assert!(!british_summer_time(ms("2026-10-25T01:00:00Z")));
        assert!(british_summer_time(ms("2024-03-31T01:00:00Z")), "2024");
        assert!(!british_summer_time(ms("2025-01-15T12:00:00Z")));
    }

    #[test]
    fn working_hours_follow_london_time() {
        let c = contact();
        let h = c.hours.as_ref().unwrap();
        // Monday 30 November 2026 (GMT): 08:00 local is 08:00 UTC.
        assert!(!h.contains(ms("2026-11-30T07:59:00Z")));
        assert!(h.contains(ms("2026-11-30T08:00:00Z")));
        assert!(!h.contains(ms("2026-11-30T18:00:00Z")));
        // Monday 1 June 2026 (BST): 08:00 local is 07:00 UTC.
        assert!(h.contains(ms("2026-06-01T07:00:00Z")));
        assert!(!h.contains(ms("2026-06-01T17:00:00Z")));
        // Saturday.
        assert!(!h.contains(ms("2026-11-28T12:00:00Z")));
    }

    #[test]
    fn out_of_hours_only_high_enough_alerts_and_critical_always() {
        let c = contact();
        let monday_noon = ms("2026-11-30T12:00:00Z");
        let saturday = ms("2026-11-28T12:00:00Z");
        assert!(c.receives(Level::Medium, monday_noon));
        assert!(!c.receives(Level::Low, monday_noon), "below min_level");
        assert!(!c.receives(Level::Medium, saturday));
        assert!(c.receives(Level::High, saturday));
        let strict = Contact {
            min_level: Level::Critical,
            out_of_hours_level: Level::Critical,
            ..c
        };
        assert!(strict.receives(Level::Critical, saturday));
        assert!(!strict.receives(Level::High, monday_noon));
    }

    #[test]
    fn refuses_bad_contact_data_with_what_to_do() {
        let bad = |f: &dyn Fn(&mut Contact)| {
            let mut c = contact();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.name = "Soc Lead".into()).contains("lowercase"));
        assert!(bad(&|c| c.channels.clear()).contains("1 to 8 channels"));
        assert!(
            bad(&|c| c.channels = vec![Channel::Email {
                to: "nobody".into()
            }])
            .contains("not an e-mail")
        );
        assert!(
            bad(&|c| c.channels = vec![Channel::Teams {
                url: "http://hooks.example/x".into()
            }])
            .contains("https://")
        );
        let secret = bad(&|c| {
            c.channels = vec![Channel::Webhook {
                url: "https://itsm.example/hook".into(),
                secret: "s3cr3t value!".into(),
            }]
        });
        assert!(secret.contains("not the secret itself"));
        assert!(bad(&|c| c.tier = 0).contains("tier 0"));
        assert!(bad(&|c| c.hours.as_mut().unwrap().end = "07:00".into()).contains("after"));
        assert!(bad(&|c| c.hours.as_mut().unwrap().days = vec![8]).contains("1 (Monday)"));
        assert!(bad(&|c| c.max_per_minute = Some(0)).contains("at least 1"));
        assert!(bad(&|c| c.channels.push(c.channels[0].clone())).contains("listed twice"));
        assert_eq!(contact().validate(), Ok(()));
        let loopback = Contact {
            channels: vec![Channel::Webhook {
                url: "http://127.0.0.1:8080/kent".into(),
                secret: "kent-itsm".into(),
            }],
            ..contact()
        };
        assert_eq!(loopback.validate(), Ok(()));
    }

    #[test]
    fn urls_are_shown_without_their_credential_path() {
        let c = Channel::Slack {
            url: "https://hooks.slack.com/services/T000/B000/XXXXSECRET".into(),
        };
        assert_eq!(c.display_target(), "https://hooks.slack.com/…");
        let listed = Contact {
            channels: vec![c.clone()],
            ..contact()
        }
        .redacted();
        assert!(!format!("{listed:?}").contains("SECRET"));
        assert_eq!(c.id(), c.clone().id(), "stable");
        assert!(c.id().starts_with("slack-"));
    }

    #[test]
    fn tiers_group_contacts_in_escalation_order() {
        let mut b = contact();
        b.name = "duty-2".into();
        b.tier = 2;
        let mut a = contact();
        a.name = "analyst".into();
        let all = [b, contact(), a];
        let t = tiers(&all);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].0, 1);
        assert_eq!(
            t[0].1.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["analyst", "soc-lead"]
        );
        assert_eq!(t[1].1[0].name, "duty-2");
    }
}
