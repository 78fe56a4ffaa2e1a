//! Alert lifecycle as stored: each alert's [`Lifecycle`] in the KV bucket `NMC_ALERT_STATES`
//! (key `<force>.<alert id>`) and every action's [`AuditEntry`] appended to the `NMC_AUDIT`
//! stream (`nmc.audit.<force>`). The rules of what may change are in
//! [`nmc_shared::lifecycle`]; this module only keeps them.
//!
//! A change is a compare-and-set on the alert's record, then the audit entry, published with
//! the message id `<alert>-<new revision>`: a retry after a lost reply cannot append it twice,
//! and two people acting at once cannot both win (the second gets the new state and is asked
//! again). Alerts themselves stay immutable in `NMC_ALERTS`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use nmc_shared::ForceId;
use nmc_shared::lifecycle::{Action, AuditEntry, Lifecycle};
use nmc_shared::subject::{self, AUDIT_ALL, AUDIT_STREAM};
use uuid::Uuid;

use crate::bus::{H_MSG_ID, provision};

/// The bucket of lifecycle records.
pub const BUCKET: &str = "NMC_ALERT_STATES";

/// The key of an alert's record.
pub fn key(force: &ForceId, alert: Uuid) -> String {
    format!("{force}.{alert}")
}

/// Creates the bucket and the audit stream if missing (nodes only): records live as long as
/// alerts (`alerts_max_age`), the audit trail `audit_days`.
pub async fn ensure(
    js: &jetstream::Context,
    replicas: usize,
    alerts_max_age: Duration,
    audit_days: u64,
) -> Result<AlertStates> {
    let kv = provision::ensure_kv(
        js,
        kv::Config {
            bucket: BUCKET.into(),
            description: "nmc alert lifecycle: state, assignee, outcome".into(),
            history: 1,
            num_replicas: replicas,
            max_age: alerts_max_age,
            ..Default::default()
        },
    )
    .await?;
    let audit = stream::Config {
        name: AUDIT_STREAM.into(),
        description: Some("nmc alert lifecycle audit trail (append-only)".into()),
        subjects: vec![AUDIT_ALL.into()],
        max_age: Duration::from_secs(audit_days.saturating_mul(86_400)),
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    };
    let limits = provision::Limits {
        max_age: Some(audit.max_age),
        duplicate_window: None,
        replicas,
    };
    provision::ensure(js, AUDIT_STREAM, &limits, async || {
        js.create_stream(audit).await?;
        Ok(())
    })
    .await?;
    Ok(AlertStates { kv, js: js.clone() })
}

/// Opens the bucket (commands, the console).
pub async fn open(js: &jetstream::Context) -> Result<AlertStates> {
    provision::open_stream(js, AUDIT_STREAM).await?;
    Ok(AlertStates {
        kv: provision::open_kv(js, BUCKET).await?,
        js: js.clone(),
    })
}

/// The lifecycle records and their audit trail.
#[derive(Clone)]
pub struct AlertStates {
    kv: kv::Store,
    js: jetstream::Context,
}

impl AlertStates {
    /// The record of an alert, with its revision; `None` if nobody has recorded it.
    pub async fn get(&self, force: &ForceId, alert: Uuid) -> Result<Option<(Lifecycle, u64)>> {
        let k = key(force, alert);
        match self
            .kv
            .entry(&k)
            .await
            .with_context(|| format!("reading the state of alert {alert}"))?
        {
            Some(e) if e.operation == kv::Operation::Put => {
                let l = serde_json::from_slice(&e.value)
                    .with_context(|| format!("the stored state of alert {alert} is malformed"))?;
                Ok(Some((l, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Records a new alert (idempotent: an existing record, whatever its state, is kept).
    pub async fn record_new(&self, force: &ForceId, alert: Uuid, raised_ms: i64) -> Result<()> {
        let value = Bytes::from(serde_json::to_vec(&Lifecycle::new(raised_ms))?);
        match self.kv.create(key(force, alert), value).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e).with_context(|| format!("recording new alert {alert}")),
        }
    }

    /// Every change to a record from now on (the notifier's acknowledgement watch).
    pub async fn watch(&self) -> Result<kv::Watch> {
        self.kv
            .watch_all()
            .await
            .context("watching the alert states")
    }

    /// Whether somebody has acknowledged the alert.
    pub async fn is_acknowledged(&self, force: &ForceId, alert: Uuid) -> Result<bool> {
        Ok(self
            .get(force, alert)
            .await?
            .is_some_and(|(l, _)| l.is_acknowledged()))
    }

    /// `by` takes `action` on the alert at `at_ms`: the new record is stored (compare-and-set)
    /// and the audit entry appended. Refused actions say why
    /// ([`nmc_shared::lifecycle::TransitionError`]); an alert nobody recorded is refused too.
    pub async fn act(
        &self,
        force: &ForceId,
        alert: Uuid,
        action: &Action,
        by: &str,
        note: Option<&str>,
        at_ms: i64,
    ) -> Result<(Lifecycle, AuditEntry)> {
        for _ in 0..10 {
            let Some((current, revision)) = self.get(force, alert).await? else {
                bail!(
                    "no alert {alert} of force {force} is recorded: check the id and the force (alerts are recorded by the nodes with notify = true when they are raised)"
                );
            };
            let (next, entry) = current.apply(alert, force, action, by, at_ms, note)?;
            let value = Bytes::from(serde_json::to_vec(&next)?);
            let new_revision = match self.kv.update(key(force, alert), value, revision).await {
                Ok(r) => r,
                // The update may have been applied with its reply lost: then the record is
                // ours and the audit entry must still follow. Otherwise somebody else acted
                // meanwhile: decide again on the new state.
                Err(_) => match self.get(force, alert).await? {
                    Some((now, r)) if now == next => r,
                    _ => continue,
                },
            };
            let mut headers = HeaderMap::new();
            headers.insert(H_MSG_ID, format!("{alert}-{new_revision}").as_str());
            let body = Bytes::from(serde_json::to_vec(&entry)?);
            let mut last = None;
            // The state is stored: the audit entry must follow (de-duplicated by its id).
            for wait_ms in [0, 200, 1000, 3000] {
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                let sent = async {
                    self.js
                        .publish_with_headers(subject::audit(force), headers.clone(), body.clone())
                        .await?
                        .await
                };
                match sent.await {
                    Ok(_) => return Ok((next, entry)),
                    Err(e) => last = Some(e),
                }
            }
            bail!(
                "alert {alert} is now {:?}, but its audit entry could not be stored: {}",
                next.state,
                last.map(|e| e.to_string()).unwrap_or_default()
            );
        }
        bail!("alert {alert} kept changing under this action: try again")
    }

    /// The audit trail of one alert, oldest first (reads the force's audit subject).
    pub async fn audit_trail(&self, force: &ForceId, alert: Uuid) -> Result<Vec<AuditEntry>> {
        use futures::StreamExt;
        let stream = self.js.get_stream(AUDIT_STREAM).await?;
        let filter = subject::audit(force);
        let last = match stream.get_last_raw_message_by_subject(&filter).await {
            Ok(m) => m.sequence,
            Err(_) => return Ok(Vec::new()),
        };
        let mut reader = crate::bus::ordered_reader(
            &stream,
            filter,
            jetstream::consumer::DeliverPolicy::All,
            false,
        )
        .await?;
        let mut out = Vec::new();
        while let Some(m) = reader.next().await {
            let m = m?;
            let seq = m
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence;
            if let Ok(entry) = serde_json::from_slice::<AuditEntry>(&m.payload)
                && entry.alert == alert
            {
                out.push(entry);
            }
            if seq >= last {
                break;
            }
        }
        Ok(out)
    }
}
