//! The notifier (nodes with `notify = true`): every alert to the force's nominated contacts,
//! acknowledged or escalated, never lost.
//!
//! Notify nodes share one durable consumer on `NMC_ALERTS` (like triage), so delivery scales
//! with them and survives the loss of any. For each alert a notifier:
//! 1. records it as new in the lifecycle bucket ([`crate::alert_state`]);
//! 2. tells the force's tier-1 contacts who receive its level now ([`Contact::receives`]), on
//!    every channel, each (alert, contact, channel) once ([`delivery`]), retrying with backoff;
//!    a contact over its message limit gets it in a digest ([`digest`]), critical alerts never
//!    wait;
//! 3. for a high or critical alert, waits its level's ack timeout and, if nobody acknowledged
//!    it, tells the next tier, and so on to the national duty contacts; a tier that could not
//!    be reached at all (no contact receives it now, or every delivery failed) passes it on at
//!    once, whatever the level;
//! 4. acknowledges the alert's message only then: while it waits (retries, digest, escalation)
//!    it keeps the message in progress, so a notifier that dies hands its alerts to another,
//!    which resumes from the delivery records (sent ones are not sent again; escalation waits
//!    count from when the previous tier was reached).
//!
//! Failed deliveries are published to `nmc.notify.failed.<force>` (stream `NMC_NOTIFY`).

pub mod acks;
pub mod delivery;
pub mod digest;
pub mod email;
pub mod message;
pub mod sample;
pub mod templates;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind, stream};
use futures::StreamExt;
use nmc_shared::alert::{Alert, Level};
use nmc_shared::contact::{self, Channel, Contact};
use nmc_shared::subject::{self, ALERTS_ALL, ALERTS_STREAM, NOTIFY_ALL, NOTIFY_STREAM};
use serde_json::json;
use tracing::{info, warn};

use crate::alert_state::{self, AlertStates};
use crate::bus::{self, H_MSG_ID, provision};
use crate::clock::now_ms;
use crate::config::{Config, NotifyConfig};
use crate::contacts::{self, Directory, Scope};
use crate::telemetry::metrics::Metrics;
use delivery::{Deliveries, Record, Status};
use digest::{DigestQueue, RateLimiter};
use email::{Email, Mailer};
use message::{AlertView, Fetched};
use sample::ContactView;
use webhook::{Post, Poster};

/// Name of the durable consumer that all notify nodes share.
pub const NOTIFY_CONSUMER: &str = "nmc-notify";
/// How often a held alert's message is marked in progress (the consumer's ack wait is 30 s).
const KEEPALIVE: Duration = Duration::from_secs(10);
/// How often an escalation wait reads the alert's state even without a change seen by the
/// acknowledgement watch (in case the watch lagged).
const ACK_POLL: Duration = Duration::from_secs(30);
/// Most alerts in one digest message (Teams cards and Slack messages have size limits).
const DIGEST_MAX: usize = 16;

/// Creates what notification and the alert lifecycle need (nodes only, whatever their roles:
/// `nmc alerts ack` and `nmc contacts` must work on any cluster).
pub async fn ensure(js: &jetstream::Context, cfg: &Config) -> Result<()> {
    let replicas = cfg.stream_replicas;
    contacts::ensure(js, replicas).await?;
    alert_state::ensure(
        js,
        replicas,
        Duration::from_secs(cfg.alerts_max_age_secs),
        cfg.notifications.audit_days,
    )
    .await?;
    delivery::ensure(js, replicas, cfg.notifications.delivery_records_days).await?;
    digest::ensure(js, replicas).await?;
    let failed = stream::Config {
        name: NOTIFY_STREAM.into(),
        description: Some("nmc failed notification deliveries".into()),
        subjects: vec![NOTIFY_ALL.into()],
        max_age: Duration::from_secs(cfg.alerts_max_age_secs),
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let limits = provision::Limits {
        max_age: Some(failed.max_age),
        duplicate_window: None,
        replicas,
    };
    provision::ensure(js, NOTIFY_STREAM, &limits, async || {
        js.create_stream(failed).await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Everything a notify node delivers with.
pub struct Notifier {
    cfg: NotifyConfig,
    node: String,
    /// `NMC_NODES`: whose claims are alive (none for `nmc contacts test`).
    live: Option<async_nats::jetstream::kv::Store>,
    acks: Arc<acks::AckWatch>,
    js: jetstream::Context,
    directory: Directory,
    states: AlertStates,
    records: Deliveries,
    rate: RateLimiter,
    digests: DigestQueue,
    mailer: Mailer,
    poster: Poster,
    templates: templates::Templates,
    metrics: Option<Arc<Metrics>>,
    /// Alerts being delivered by this node: a redelivery of one of them (its keep-alive came
    /// too late) is left to the delivery under way, which acknowledges it.
    in_flight: std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
}

impl Notifier {
    /// Sets the notifier up (after [`ensure`]): SMTP, HTTP and templates are checked here, so
    /// a misconfigured notify node stops at start with what to fix.
    pub async fn new(
        js: &jetstream::Context,
        cfg: &NotifyConfig,
        node: &str,
        live: Option<async_nats::jetstream::kv::Store>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Arc<Notifier>> {
        Ok(Arc::new(Notifier {
            cfg: cfg.clone(),
            node: node.to_owned(),
            live,
            acks: Arc::default(),
            js: js.clone(),
            directory: contacts::open(js).await?,
            states: alert_state::open(js).await?,
            records: delivery::open(js).await?,
            rate: RateLimiter::open(js).await?,
            digests: DigestQueue::default(),
            mailer: Mailer::new(cfg)?,
            poster: Poster::new(cfg)?,
            templates: templates::Templates::load(&cfg.templates_dir)?,
            metrics,
            in_flight: Default::default(),
        }))
    }

    /// The instruments, or a sink when there are none (`nmc contacts test`).
    fn count(&self, f: impl FnOnce(&Metrics)) {
        if let Some(m) = &self.metrics {
            f(m);
        }
    }

    /// Sends the sample alert once to every channel of `c` (`nmc contacts test`), without
    /// records or retries: what each channel answered.
    pub async fn test_contact(
        &self,
        scope: &Scope,
        c: &Contact,
    ) -> Vec<(String, Result<delivery::Sent, delivery::Failure>)> {
        let mut view = sample::alert_view();
        let run = now_ms();
        // Each test its own id, so a receiver that drops repeats does not drop the next test.
        view.id = uuid::Uuid::new_v5(
            &nmc_shared::alert::ALERT_NAMESPACE,
            format!("test/{scope}/{}/{run}", c.name).as_bytes(),
        )
        .to_string();
        if let Scope::Force(f) = scope {
            view.force = f.to_string();
            view.force_name = nmc_shared::force::lookup(f.as_str())
                .map_or_else(|| f.to_string(), |i| i.name.to_string());
        }
        let what = What::Alert(&view);
        let mut out = Vec::new();
        for ch in &c.channels {
            let label = format!("{} {}", ch.kind(), ch.display_target());
            let key = format!("test.{run}.{}.{}", c.name, ch.id());
            let result = match self.render(&what, c, ch, &key) {
                Ok(Rendered::Email(mail)) => self.mailer.send(&mail).await,
                Ok(Rendered::Post(post)) => self.poster.post(&post, now_ms() / 1000).await,
                Err(e) => Err(delivery::Failure::permanent(format!("{e:#}"))),
            };
            out.push((label, result));
        }
        out
    }

    /// Delivers alerts forever (restarting the consumer after errors), with the digest timer.
    pub async fn run(self: Arc<Self>) {
        tokio::task::spawn_local(self.clone().digests_forever());
        tokio::task::spawn_local(self.acks.clone().follow(self.states.clone()));
        loop {
            if let Err(e) = self.clone().consume().await {
                warn!(
                    error = format!("{e:#}"),
                    "notifier failed; restarting in 1s"
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn consume(self: Arc<Self>) -> Result<()> {
        let stream = self.js.get_stream(ALERTS_STREAM).await?;
        let start = time::OffsetDateTime::now_utc()
            - time::Duration::seconds(self.cfg.backfill_secs.min(i64::MAX as u64) as i64);
        let want = i64::try_from(self.cfg.max_in_flight).unwrap_or(i64::MAX);
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                NOTIFY_CONSUMER,
                pull::Config {
                    durable_name: Some(NOTIFY_CONSUMER.to_owned()),
                    description: Some("nmc notify nodes".into()),
                    filter_subject: ALERTS_ALL.to_owned(),
                    deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: want,
                    ..Default::default()
                },
            )
            .await
            .context("creating the notify consumer")?;
        // The consumer is shared: its in-flight bound is the configuration's, whichever node
        // created it (the rest of its settings stay as created).
        let have = consumer.info().await?.config.clone();
        if have.max_ack_pending != want {
            let mut next = have;
            next.max_ack_pending = want;
            stream
                .update_consumer(next)
                .await
                .context("updating the notify consumer's max_in_flight")?;
        }
        let mut messages = consumer.messages().await?;
        info!("notifier reading alerts");
        while let Some(m) = messages.next().await {
            let m = m?;
            tokio::task::spawn_local(self.clone().handle(m));
        }
        Ok(())
    }

    /// One alert, from its message to its acknowledgement.
    async fn handle(self: Arc<Self>, msg: jetstream::Message) {
        let alert: Alert = match serde_json::from_slice(&msg.payload) {
            Ok(a) => a,
            Err(e) => {
                warn!(subject = %msg.subject, error = %e, "not an alert record; not delivered");
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        if !self
            .in_flight
            .lock()
            .expect("in-flight set")
            .insert(alert.id)
        {
            return;
        }
        let published_ms = msg
            .info()
            .map(|i| (i.published.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or_else(|_| now_ms());
        let _done = InFlight(&self.in_flight, alert.id);
        // Another notifier may still be at this alert (its keep-alive came too late): it
        // acknowledges it when done; if it dies, its claim dies with its cluster membership.
        let prefix = format!("{}.{}", alert.force, alert.id);
        if let Some(live) = &self.live {
            match self.records.claim(&prefix, &self.node, live).await {
                Ok(Ok(())) => {}
                Ok(Err(holder)) => {
                    info!(alert = %alert.id, holder, "alert in delivery on another notifier; left to it");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(30))))
                        .await;
                    return;
                }
                Err(e) => {
                    warn!(alert = %alert.id, error = format!("{e:#}"), "claiming an alert failed; retrying in 5s");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                        .await;
                    return;
                }
            }
        }
        let held = msg.clone();
        let _keepalive = AbortOnDrop(tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                let _ = held.ack_with(AckKind::Progress).await;
            }
        }));
        let result = self.deliver(&alert, published_ms).await;
        match result {
            Ok(Done::Told | Done::Unreachable) => {
                self.records.release(&prefix).await;
                if let Err(e) = msg.ack().await {
                    warn!(alert = %alert.id, error = %e, "acknowledging a delivered alert failed (it will be redelivered; sent messages are not sent again)");
                }
            }
            Ok(Done::RetryLater) => {
                // Nobody could be told and some channel may come back: the whole alert again.
                let wait =
                    Duration::from_millis(self.cfg.backoff_max_ms).max(Duration::from_secs(30));
                warn!(alert = %alert.id, retry_in_s = wait.as_secs(), "no contact could be reached (channels down); the alert is delivered again later");
                self.records.release(&prefix).await;
                let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
            }
            Err(e) => {
                warn!(alert = %alert.id, error = format!("{e:#}"), "delivering an alert failed; retrying in 5s");
                self.records.release(&prefix).await;
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
            }
        }
    }

    /// Tells the tiers of the alert's force, then the national duty contacts, as the module
    /// documentation says.
    async fn deliver(&self, alert: &Alert, published_ms: i64) -> Result<Done> {
        let force = &alert.force;
        self.states
            .record_new(force, alert.id, published_ms)
            .await?;
        let view = AlertView::new(alert, &self.evidence(alert).await, &self.cfg.console_url);
        let own = self.directory.list(&Scope::Force(force.clone())).await?;
        let mut tiers: Vec<Vec<Contact>> = contact::tiers(&own)
            .into_iter()
            .map(|(_, cs)| cs.into_iter().cloned().collect())
            .collect();
        let duty = self.directory.list(&Scope::National).await?;
        if !duty.is_empty() {
            tiers.push(duty);
        }
        let level = alert.rule.level;
        let mut reached: Option<i64> = None;
        let mut transient = false;
        for (i, tier) in tiers.iter().enumerate() {
            if i > 0 {
                if let Some(at) = reached {
                    // The previous tier was reached: only high and critical alerts escalate,
                    // after their level's ack timeout, if nobody acknowledged them.
                    let Some(timeout) = self.cfg.ack_timeout(level) else {
                        return Ok(Done::Told);
                    };
                    let due =
                        at.saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
                    if self.acknowledged_by(force, alert, due).await? {
                        return Ok(Done::Told);
                    }
                    self.count(|m| m.escalation(force, "unacknowledged"));
                } else {
                    if self.states.is_acknowledged(force, alert.id).await? {
                        return Ok(Done::Told);
                    }
                    self.count(|m| m.escalation(force, "unreached"));
                }
                info!(alert = %alert.id, force = %force, tier = i + 1, "escalating");
            }
            // Who receives it now, and whoever was already told or is being told (a
            // redelivery decides on the records, not on the clock alone).
            let now = now_ms();
            let mut eligible = Vec::new();
            for c in tier {
                if c.receives(level, now) || self.has_records(alert, c).await {
                    eligible.push(c);
                }
            }
            let results = futures::future::join_all(
                eligible
                    .iter()
                    .map(|c| self.deliver_to_contact(alert, &view, c, published_ms, i == 0)),
            )
            .await;
            reached = results.iter().filter_map(|r| r.sent).max();
            transient |= results.iter().any(|r| r.transient_failure);
        }
        if reached.is_none() {
            if transient {
                return Ok(Done::RetryLater);
            }
            warn!(alert = %alert.id, force = %force, level = %level, "no contact could be told of this alert (none receives it now, or every delivery failed for good): it waits in the queue");
            return Ok(Done::Unreachable);
        }
        Ok(Done::Told)
    }

    /// Whether any delivery of the alert to `c` was recorded.
    async fn has_records(&self, alert: &Alert, c: &Contact) -> bool {
        let (force, id) = (alert.force.as_str(), alert.id.to_string());
        for ch in &c.channels {
            if let Ok(Some(_)) = self
                .records
                .get(&delivery::key(force, &id, &c.name, &ch.id()))
                .await
            {
                return true;
            }
        }
        false
    }

    /// Waits until `due_ms` for an acknowledgement; `true` as soon as there is one.
    async fn acknowledged_by(
        &self,
        force: &nmc_shared::ForceId,
        alert: &Alert,
        due_ms: i64,
    ) -> Result<bool> {
        let key = alert_state::key(force, alert.id);
        let wake = self.acks.register(&key);
        let result = async {
            loop {
                if self.states.is_acknowledged(force, alert.id).await? {
                    return Ok(true);
                }
                let left = due_ms - now_ms();
                if left <= 0 {
                    return Ok(false);
                }
                let nap = ACK_POLL.min(Duration::from_millis(left as u64));
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(nap) => {}
                }
            }
        }
        .await;
        self.acks.forget(&key);
        result
    }

    /// Tells one contact on all their channels; when one of them accepted it (`None`: none).
    async fn deliver_to_contact(
        &self,
        alert: &Alert,
        view: &AlertView,
        c: &Contact,
        published_ms: i64,
        first_tier: bool,
    ) -> Reach {
        let force = alert.force.as_str();
        let id = alert.id.to_string();
        let mut sent: Option<i64> = None;
        let mut pending = Vec::new();
        for ch in &c.channels {
            let key = delivery::key(force, &id, &c.name, &ch.id());
            match self.records.get(&key).await {
                Ok(Some(r)) if r.status == Status::Sent => sent = sent.max(r.sent_ms),
                // Failed for good: not again. A transient failure is tried again when the
                // alert comes round again (it reached nobody).
                Ok(Some(r)) if r.status == Status::Failed && r.permanent => {}
                Ok(r) => pending.push((ch, key, r)),
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        key, "delivery record unreadable; sending"
                    );
                    pending.push((ch, key, None));
                }
            }
        }
        if pending.is_empty() {
            return Reach {
                sent,
                transient_failure: false,
            };
        }
        let limit = c.max_per_minute.unwrap_or(self.cfg.max_per_minute);
        let direct = alert.rule.level == Level::Critical
            || self
                .rate
                .take(force, &c.name, limit, now_ms())
                .await
                .unwrap_or(true);
        if !direct {
            for (ch, key, old) in &pending {
                let mut r = old
                    .clone()
                    .unwrap_or_else(|| Record::new(ch.kind(), ch.display_target()));
                r.status = Status::Digest;
                let _ = self.records.put(key, &r).await;
                self.count(|m| m.delivery(&alert.force, ch.kind(), "digested"));
            }
            return match self.digests.push(force, c, view.clone()).await {
                Ok(Ok((at, _))) => Reach {
                    sent: sent.max(Some(at)),
                    transient_failure: false,
                },
                Ok(Err(why)) => Reach {
                    sent,
                    transient_failure: !why.permanent,
                },
                Err(_) => Reach {
                    sent,
                    transient_failure: true,
                },
            };
        }
        let results = futures::future::join_all(
            pending
                .into_iter()
                .map(|(ch, key, old)| self.send_alert(alert, view, c, ch, key, old)),
        )
        .await;
        let now_sent = results.iter().filter_map(|r| r.sent_ms).max();
        if let Some(at) = now_sent
            && first_tier
        {
            self.count(|m| m.delivery_latency((at - published_ms) as f64 / 1000.0));
        }
        Reach {
            sent: sent.max(now_sent),
            transient_failure: results
                .iter()
                .any(|r| r.status == Status::Failed && !r.permanent),
        }
    }

    /// One alert to one channel of one contact, with retries (continuing the record of an
    /// earlier round or notifier); the final record.
    async fn send_alert(
        &self,
        alert: &Alert,
        view: &AlertView,
        c: &Contact,
        ch: &Channel,
        key: String,
        old: Option<Record>,
    ) -> Record {
        let what = What::Alert(view);
        let record = old.unwrap_or_else(|| Record::new(ch.kind(), ch.display_target()));
        let done = self.send(&what, c, ch, &key, record).await;
        self.finish(&alert.force, &alert.id.to_string(), c, ch, &done)
            .await;
        done
    }

    /// Renders and sends one message on `ch`, with retries; the final record.
    async fn send(
        &self,
        what: &What<'_>,
        c: &Contact,
        ch: &Channel,
        key: &str,
        record: Record,
    ) -> Record {
        match self.render(what, c, ch, key) {
            Ok(Rendered::Email(mail)) => {
                delivery::attempt(&self.cfg, &self.records, key, record, || {
                    self.mailer.send(&mail)
                })
                .await
            }
            Ok(Rendered::Post(post)) => {
                delivery::attempt(&self.cfg, &self.records, key, record, || {
                    self.poster.post(&post, now_ms() / 1000)
                })
                .await
            }
            Err(e) => {
                let fail = delivery::Failure::permanent(format!("{e:#}"));
                delivery::attempt(&self.cfg, &self.records, key, record, || {
                    futures::future::ready(Err(fail.clone()))
                })
                .await
            }
        }
    }

    /// The message of `what` for `c` on `ch`, from the force's templates.
    fn render(&self, what: &What<'_>, c: &Contact, ch: &Channel, key: &str) -> Result<Rendered> {
        let who = ContactView {
            name: c.name.clone(),
            role: c.role.clone(),
        };
        let force_name = match what {
            What::Alert(v) => v.force_name.clone(),
            What::Digest { views, .. } => views
                .first()
                .map(|v| v.force_name.clone())
                .unwrap_or_default(),
        };
        let (force, ctx, names, idempotency_key) = match what {
            What::Alert(v) => (
                v.force.as_str(),
                minijinja::Value::from(minijinja::value::Serde(templates::AlertContext {
                    alert: v,
                    contact: &who,
                })),
                ["subject.txt", "summary.txt", "email.txt", "email.html"],
                v.id.clone(),
            ),
            What::Digest { id, force, views } => (
                *force,
                minijinja::Value::from(minijinja::value::Serde(templates::DigestContext {
                    alerts: views,
                    force,
                    force_name: &force_name,
                    contact: &who,
                })),
                [
                    "digest_subject.txt",
                    "digest_subject.txt",
                    "digest.txt",
                    "digest.html",
                ],
                id.clone(),
            ),
        };
        let [subject, summary, text, html] = names;
        let views: Vec<AlertView> = match what {
            What::Alert(v) => vec![(*v).clone()],
            What::Digest { views, .. } => views.to_vec(),
        };
        let post = |url: &str, body: serde_json::Value, secret: Option<Vec<u8>>| {
            Rendered::Post(Post {
                url: url.to_owned(),
                body: serde_json::to_vec(&body).expect("JSON"),
                secret,
                idempotency_key: idempotency_key.clone(),
            })
        };
        Ok(match ch {
            Channel::Email { to } => Rendered::Email(Email {
                to: to.clone(),
                subject: self.templates.render(force, subject, &ctx)?,
                text: self.templates.render(force, text, &ctx)?,
                html: self.templates.render(force, html, &ctx)?,
                message_id: key.replace('.', "-"),
                headers: vec![
                    ("X-Nmc-Force", force.to_owned()),
                    (
                        "X-Nmc-Alert-Ids",
                        views
                            .iter()
                            .map(|v| v.id.as_str())
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    (
                        "X-Nmc-Level",
                        views
                            .iter()
                            .map(|v| v.level.as_str())
                            .max_by_key(|l| level_rank(l))
                            .unwrap_or("")
                            .to_owned(),
                    ),
                ],
            }),
            Channel::Webhook { url, secret } => {
                let summary = self.templates.render(force, summary, &ctx)?;
                let body = match what {
                    What::Alert(v) => webhook::generic(v, &summary, &c.name),
                    What::Digest { id, force, views } => {
                        webhook::generic_digest(id, force, views, &summary, &c.name)
                    }
                };
                post(url, body, Some(self.secret(secret)?))
            }
            Channel::Teams { url } => {
                let summary = self.templates.render(force, summary, &ctx)?;
                post(url, webhook::teams(&views, &summary), None)
            }
            Channel::Slack { url } => {
                let summary = self.templates.render(force, summary, &ctx)?;
                post(url, webhook::slack(&views, &summary), None)
            }
        })
    }

    /// A webhook signing secret from `secrets_dir` (at least 16 bytes).
    fn secret(&self, name: &str) -> Result<Vec<u8>> {
        if self.cfg.secrets_dir.as_os_str().is_empty() {
            anyhow::bail!(
                "webhook secret `{name}` cannot be read: notifications.secrets_dir is not set"
            );
        }
        let bytes = std::fs::read(self.cfg.secrets_dir.join(name)).with_context(|| {
            format!("webhook secret `{name}` is not in notifications.secrets_dir")
        })?;
        let trimmed = bytes.trim_ascii().to_vec();
        if trimmed.len() < 16 {
            anyhow::bail!(
                "webhook secret `{name}` is shorter than 16 bytes: use a long random one"
            );
        }
        Ok(trimmed)
    }

    /// Counts the outcome and publishes a failure to `nmc.notify.failed.<force>`.
    async fn finish(
        &self,
        force: &nmc_shared::ForceId,
        alert: &str,
        c: &Contact,
        ch: &Channel,
        record: &Record,
    ) {
        let outcome = if record.status == Status::Sent {
            "sent"
        } else {
            "failed"
        };
        self.count(|m| m.delivery(force, ch.kind(), outcome));
        if record.status != Status::Failed {
            return;
        }
        warn!(
            alert,
            force = %force,
            contact = %c.name,
            channel = ch.kind(),
            target = %ch.display_target(),
            attempts = record.attempt_count,
            last = record.attempts.last().map(|a| a.response.as_str()).unwrap_or(""),
            "delivery failed; escalating"
        );
        let body = json!({
            "alert": alert,
            "force": force,
            "contact": c.name,
            "channel": ch.kind(),
            "target": ch.display_target(),
            "record": record,
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            H_MSG_ID,
            format!("failed-{alert}-{}-{}", c.name, ch.id()).as_str(),
        );
        let sent = async {
            self.js
                .publish_with_headers(
                    subject::notify_failed(force),
                    headers,
                    serde_json::to_vec(&body).expect("JSON").into(),
                )
                .await?
                .await
        };
        if let Err(e) = sent.await {
            warn!(error = %e, alert, "publishing a failed delivery failed");
        }
    }

    /// The alert's first evidence events, fetched from its force's events stream while retained.
    async fn evidence(&self, alert: &Alert) -> Vec<Fetched> {
        let mut out = Vec::new();
        for e in alert
            .evidence
            .iter()
            .filter(|e| e.seq > 0)
            .take(message::MAX_EVIDENCE_SHOWN)
        {
            // Never another force's event, nor another event, whatever a record says.
            let Some((source, raw)) = bus::evidence_event(&self.js, &alert.force, e).await else {
                continue;
            };
            if let Ok(body) = serde_json::from_slice(&raw.payload) {
                out.push(Fetched {
                    time: e.time.clone(),
                    source,
                    body,
                });
            }
        }
        out
    }

    /// Sends the digests every `digest_interval_secs`.
    async fn digests_forever(self: Arc<Self>) {
        let every = Duration::from_secs(self.cfg.digest_interval_secs);
        loop {
            tokio::time::sleep(every).await;
            for (force, c, queued) in self.digests.take_all() {
                let me = self.clone();
                tokio::task::spawn_local(async move { me.send_digest(force, c, queued).await });
            }
        }
    }

    /// The digests of one contact: messages of at most [`DIGEST_MAX`] alerts, on all channels
    /// at once; each alert's own record follows each channel as soon as it is done.
    async fn send_digest(&self, force: String, c: Contact, queued: Vec<digest::Queued>) {
        let Ok(force_id) = nmc_shared::ForceId::new(&force) else {
            return;
        };
        let mut queued = queued;
        while !queued.is_empty() {
            let rest = queued.split_off(queued.len().min(DIGEST_MAX));
            let chunk = std::mem::replace(&mut queued, rest);
            self.send_digest_chunk(&force_id, &c, chunk).await;
        }
    }

    async fn send_digest_chunk(
        &self,
        force: &nmc_shared::ForceId,
        c: &Contact,
        queued: Vec<digest::Queued>,
    ) {
        let views: Vec<AlertView> = queued.iter().map(|q| q.view.clone()).collect();
        let id = digest::digest_id(force.as_str(), &c.name, &views);
        let what = What::Digest {
            id: id.clone(),
            force: force.as_str(),
            views: &views,
        };
        let outcomes = futures::future::join_all(c.channels.iter().map(|ch| {
            let (what, id, views) = (&what, &id, &views);
            async move {
                let key = delivery::key(force.as_str(), &format!("digest-{id}"), &c.name, &ch.id());
                let mut record = Record::new(ch.kind(), ch.display_target());
                record.digest = Some(id.clone());
                let done = self.send(what, c, ch, &key, record).await;
                self.finish(force, &format!("digest-{id}"), c, ch, &done)
                    .await;
                for v in views {
                    let key = delivery::key(force.as_str(), &v.id, &c.name, &ch.id());
                    if let Err(e) = self.records.put(&key, &done).await {
                        warn!(error = format!("{e:#}"), key, "delivery record not stored");
                    }
                }
                done
            }
        }))
        .await;
        let sent_at = outcomes.iter().filter_map(|r| r.sent_ms).max();
        let permanent = outcomes.iter().all(|r| r.permanent);
        for q in queued {
            let _ = q.done.send(match sent_at {
                Some(at) => Ok((at, id.clone())),
                None => Err(digest::NotSent { permanent }),
            });
        }
    }
}

/// How one alert's delivery ended.
enum Done {
    /// Somebody was told (and escalation, if any, is over).
    Told,
    /// Nobody receives it now, or every delivery failed for good: it waits in the queue.
    Unreachable,
    /// Nobody could be told, and a channel that failed may come back: deliver it again later.
    RetryLater,
}

/// What telling one contact came to.
struct Reach {
    /// When a channel accepted it.
    sent: Option<i64>,
    /// A channel failed in a way that may pass.
    transient_failure: bool,
}

/// Removes an alert from the in-flight set when its handling ends (however it ends).
struct InFlight<'a>(
    &'a std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
    uuid::Uuid,
);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("in-flight set").remove(&self.1);
    }
}

/// Stops a task when dropped (a keep-alive must not outlive its alert's handling, even after a
/// panic).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a message is about.
enum What<'a> {
    /// One alert.
    Alert(&'a AlertView),
    /// A digest of several.
    Digest {
        id: String,
        force: &'a str,
        views: &'a [AlertView],
    },
}

/// A message ready to send.
enum Rendered {
    Email(Email),
    Post(Post),
}

fn level_rank(l: &str) -> u8 {
    l.parse::<Level>().map_or(0, |l| l as u8)
}
