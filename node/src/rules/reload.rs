//! Which rules a node runs: the pack in force in the cluster at start-up (or the node's own
//! `rules_dirs` when none was ever pushed), then every newer pack that compiles here, published
//! on a `watch` channel. A pack that does not compile on this node (a placeholder it lacks, say)
//! is refused and the running one stays in force: a node never runs half a pack.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::RulePack;
use super::pack::{self, Current, Packs};
use crate::config::Config;
use crate::telemetry::metrics::Metrics;

/// The rules a node starts with: the pack in force in the cluster, or its own `rules_dirs`
/// when none was ever pushed (or the pushed one does not compile here).
pub async fn initial(cfg: &Config, packs: &Packs) -> Result<RulePack> {
    if let Some(cur) = pack::current(packs).await? {
        match compile(cfg, packs, &cur).await {
            Ok(p) => return Ok(p),
            Err(e) => error!(
                version = %cur.version,
                error = format!("{e:#}"),
                "the cluster's rule pack does not compile here; using rules_dirs"
            ),
        }
    }
    let dirs = cfg.rules_dirs.clone();
    let placeholders = cfg.placeholders.clone();
    let (rules, errors) =
        tokio::task::spawn_blocking(move || super::files::load_with(&dirs, &placeholders))
            .await??;
    for e in &errors {
        error!(error = %e, "rule not loaded");
    }
    info!(
        rules = rules.len(),
        broken = errors.len(),
        "rules loaded from rules_dirs"
    );
    if rules.is_empty() {
        warn!("no rules loaded: events will be read and checked but raise no alert");
    }
    Ok(RulePack {
        rules: Arc::new(rules),
        version: RulePack::LOCAL.into(),
        revision: 0,
    })
}

/// Fetches and compiles a pack (on a blocking thread: thousands of rules take a while); any
/// broken rule refuses the whole pack.
async fn compile(cfg: &Config, packs: &Packs, cur: &Current) -> Result<RulePack> {
    let files = pack::fetch(packs, &cur.pack).await?;
    let placeholders = cfg.placeholders.clone();
    let (set, errors) = tokio::task::spawn_blocking(move || {
        super::files::compile_texts(&files.files, &placeholders)
    })
    .await?;
    if let Some(e) = errors.first() {
        anyhow::bail!(
            "{} rule(s) do not compile, first: {e}; the pack is refused",
            errors.len()
        );
    }
    info!(version = %cur.version, rules = set.len(), "rule pack compiled");
    Ok(RulePack {
        rules: Arc::new(set),
        version: cur.version.clone(),
        revision: cur.revision,
    })
}

/// Follows `NMC_RULES` forever and publishes each new pack that compiles on `tx` (a refused
/// one is counted in `metrics`).
pub async fn follow(
    cfg: Arc<Config>,
    packs: Packs,
    tx: watch::Sender<RulePack>,
    metrics: Arc<Metrics>,
) {
    loop {
        let mut watch = match packs.kv.watch(pack::CURRENT).await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch rule packs; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        // A pack pushed while the watch was down.
        if let Ok(Some(cur)) = pack::current(&packs).await {
            apply(&cfg, &packs, &tx, &metrics, cur).await;
        }
        loop {
            match pack::next_change(&mut watch).await {
                Ok(Some(cur)) => apply(&cfg, &packs, &tx, &metrics, cur).await,
                Ok(None) => break,
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        "rule pack watch failed; restarting it"
                    );
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Makes `cur` the pack in force if it is newer than the running one and compiles (a watch
/// may deliver an older change after the read that started it saw a newer one).
async fn apply(
    cfg: &Config,
    packs: &Packs,
    tx: &watch::Sender<RulePack>,
    metrics: &Metrics,
    cur: Current,
) {
    let (running, revision) = {
        let p = tx.borrow();
        (p.version.clone(), p.revision)
    };
    if cur.revision <= revision {
        return;
    }
    match compile(cfg, packs, &cur).await {
        Ok(p) => {
            info!(from = %running, to = %p.version, "rule pack hot-reloaded");
            tx.send_replace(p);
        }
        Err(e) => {
            metrics.rulepack_refused();
            error!(
                version = %cur.version,
                error = format!("{e:#}"),
                running = %running,
                "rule pack refused; the running pack stays in force"
            )
        }
    }
}
