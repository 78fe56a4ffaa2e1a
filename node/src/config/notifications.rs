//! The `[notifications]` table: how a node with `notify = true` reaches force contacts (SMTP,
//! webhooks), how hard it tries, when it escalates and how it keeps the noise down.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// How mail leaves: STARTTLS on 587 (the default), implicit TLS on 465, or plain (loopback
/// relays and tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded by STARTTLS; refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No TLS: only to a relay on 127.0.0.1/localhost.
    None,
}

/// Notification settings (used by nodes with `notify = true`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// SMTP server host name; empty: no e-mail (e-mail deliveries fail and escalate).
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// Transport security to the SMTP server.
    pub smtp_tls: SmtpTls,
    /// PEM file of the CA that signs the SMTP server's certificate; empty: the system's.
    pub smtp_tls_ca: PathBuf,
    /// SMTP user (AUTH PLAIN/LOGIN over TLS); empty: no authentication.
    pub smtp_user: String,
    /// SMTP password (best as `NMC_NOTIFICATIONS__SMTP_PASSWORD` from a secret).
    pub smtp_password: Secret,
    /// The `From:` address of every message.
    pub from: String,
    /// Base URL of the analyst console: messages link to `<console_url>/alerts/<id>`.
    pub console_url: String,
    /// Directory of template overrides: `<name>` for every force, `<force>/<name>` for one.
    pub templates_dir: PathBuf,
    /// Directory of webhook signing secrets, one file per name (a mounted Kubernetes Secret);
    /// contacts name them (`secret = "kent-itsm"`), never hold them.
    pub secrets_dir: PathBuf,
    /// PEM file of extra CAs that webhook servers' certificates may chain to.
    pub webhook_tls_ca: PathBuf,
    /// Attempts at one delivery before it is marked failed and escalated.
    pub attempts: u32,
    /// First retry delay, ms (doubled each attempt, with jitter).
    pub backoff_initial_ms: u64,
    /// Longest retry delay, ms.
    pub backoff_max_ms: u64,
    /// Seconds one attempt (connect, send, answer) may take.
    pub attempt_timeout_secs: u64,
    /// Seconds a high alert may stay unacknowledged before the next tier is told.
    pub ack_timeout_high_secs: u64,
    /// Seconds a critical alert may stay unacknowledged before the next tier is told.
    pub ack_timeout_critical_secs: u64,
    /// Single messages a contact gets a minute before the rest go into a digest (a contact's
    /// own `max_per_minute` wins). Critical alerts never wait.
    pub max_per_minute: u32,
    /// Seconds between digests.
    pub digest_interval_secs: u64,
    /// Alerts in delivery at once in the whole cluster (the shared consumer's
    /// `max_ack_pending`; held ones included: escalation waits and digests hold their alert
    /// until done). When it is reached, new alerts wait until held ones finish.
    pub max_in_flight: usize,
    /// When the notify consumer is first created, alerts raised up to this many seconds
    /// before are still delivered (older history is not sent).
    pub backfill_secs: u64,
    /// Days delivery records are kept (what was sent, attempts, answers).
    pub delivery_records_days: u64,
    /// Days the lifecycle audit trail is kept.
    pub audit_days: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_tls_ca: PathBuf::new(),
            smtp_user: String::new(),
            smtp_password: Secret::default(),
            from: "nmc@localhost".into(),
            console_url: String::new(),
            templates_dir: PathBuf::new(),
            secrets_dir: PathBuf::new(),
            webhook_tls_ca: PathBuf::new(),
            attempts: 10,
            backoff_initial_ms: 1000,
            backoff_max_ms: 60_000,
            attempt_timeout_secs: 20,
            ack_timeout_high_secs: 30 * 60,
            ack_timeout_critical_secs: 15 * 60,
            max_per_minute: 10,
            digest_interval_secs: 300,
            max_in_flight: 20_000,
            backfill_secs: 3600,
            delivery_records_days: 30,
            audit_days: 400,
        }
    }
}

impl NotifyConfig {
    /// Checks what spans fields, saying what to change.
    pub fn validate(&self) -> Result<()> {
        if self.attempts == 0 {
            bail!("notifications.attempts must be at least 1");
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            bail!("notifications.backoff_initial_ms must be at least 1 and at most backoff_max_ms");
        }
        if self.max_per_minute == 0 || self.digest_interval_secs == 0 {
            bail!("notifications.max_per_minute and digest_interval_secs must be at least 1");
        }
        if self.max_in_flight == 0 || self.attempt_timeout_secs == 0 {
            bail!("notifications.max_in_flight and attempt_timeout_secs must be at least 1");
        }
        let limits: [(&str, u64, u64); 6] = [
            ("backfill_secs", self.backfill_secs, 30 * 86_400),
            (
                "ack_timeout_high_secs",
                self.ack_timeout_high_secs,
                7 * 86_400,
            ),
            (
                "ack_timeout_critical_secs",
                self.ack_timeout_critical_secs,
                7 * 86_400,
            ),
            ("digest_interval_secs", self.digest_interval_secs, 86_400),
            ("backoff_max_ms", self.backoff_max_ms, 3_600_000),
            ("attempt_timeout_secs", self.attempt_timeout_secs, 600),
        ];
        for (key, value, max) in limits {
            if value > max {
                bail!("notifications.{key} = {value} is more than the {max} allowed");
            }
        }
        if self.smtp_tls == SmtpTls::None
            && !self.smtp_host.is_empty()
            && !matches!(self.smtp_host.as_str(), "127.0.0.1" | "localhost" | "::1")
        {
            bail!(
                "notifications.smtp_tls = \"none\" is only allowed to a relay on 127.0.0.1 or localhost: use starttls or tls for {}",
                self.smtp_host
            );
        }
        if self.smtp_user.is_empty() != self.smtp_password.is_empty() {
            bail!("notifications.smtp_user and smtp_password go together: set both, or neither");
        }
        if !self.smtp_host.is_empty() && !self.from.contains('@') {
            bail!(
                "notifications.from `{}` is not an e-mail address",
                self.from
            );
        }
        Ok(())
    }

    /// How long a level's unacknowledged alert waits before escalating; `None`: it does not.
    pub fn ack_timeout(&self, level: nmc_shared::Level) -> Option<std::time::Duration> {
        use nmc_shared::Level;
        match level {
            Level::Critical => Some(self.ack_timeout_critical_secs),
            Level::High => Some(self.ack_timeout_high_secs),
            _ => None,
        }
        .map(std::time::Duration::from_secs)
    }
}
