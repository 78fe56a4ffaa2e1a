//! Load for the cluster tests: synthetic sign-ins per force, published in the background, and
//! the check every scenario ends with (each force's alerts equal one uninterrupted run of the
//! pure core: nothing lost, nothing duplicated).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use super::*;

/// What was published per force: (stream sequence, subject, payload) in publish order.
pub type Events = BTreeMap<String, Vec<(u64, String, Vec<u8>)>>;

/// Synthetic sign-ins per force (attacks in some), as JSON lines.
pub fn plan(forces: &[&str], normal: usize) -> Vec<(String, Vec<Vec<u8>>)> {
    forces
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                f.to_string(),
                scenario(f, normal, i % 3 == 0, i % 3 == 1, 10),
            )
        })
        .collect()
}

/// What [`steady_load`] did.
pub struct Published {
    /// The events, with the sequences JetStream gave them.
    pub events: Events,
    /// The longest a publish waited for its acknowledgement, retries included.
    pub max_stall: Duration,
    /// Publishes that had to be retried.
    pub retries: u64,
}

/// Publishes the plan round-robin, one event per force every `every`, in the background, each
/// with a message id so that a publish retried across a NATS failure (no ack, a leader
/// election) is stored once. Resolves to what was published.
pub fn steady_load(
    js: jetstream::Context,
    plan: Vec<(String, Vec<Vec<u8>>)>,
    every: Duration,
) -> tokio::task::JoinHandle<Published> {
    tokio::spawn(async move {
        let mut out = Published {
            events: BTreeMap::new(),
            max_stall: Duration::ZERO,
            retries: 0,
        };
        let longest = plan.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
        for i in 0..longest {
            for (force, lines) in &plan {
                let Some(line) = lines.get(i) else { continue };
                let subject = format!("nmc.events.{force}.entra_signin");
                let started = Instant::now();
                let seq = loop {
                    let mut h = HeaderMap::new();
                    h.insert("Nats-Msg-Id", format!("load-{force}-{i}").as_str());
                    let attempt = async {
                        js.publish_with_headers(subject.clone(), h, Bytes::from(line.clone()))
                            .await?
                            .await
                            .map_err(async_nats::Error::from)
                    };
                    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                        Ok(Ok(ack)) => break ack.sequence,
                        _ => {
                            out.retries += 1;
                            assert!(
                                started.elapsed() < Duration::from_secs(120),
                                "{subject}: no ack for 120 s"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                out.max_stall = out.max_stall.max(started.elapsed());
                out.events
                    .entry(force.clone())
                    .or_default()
                    .push((seq, subject, line.clone()));
            }
            tokio::time::sleep(every).await;
        }
        out
    })
}

/// Each force's alerts equal one uninterrupted run's (rules `identity`); no alert id twice in
/// the stream, no other alert.
pub async fn assert_exact(js: &jetstream::Context, events: &Events) {
    let rules = vec![rules_dir("identity")];
    let mut total = 0;
    for (force, evs) in events {
        let want = expected_alerts(&rules, force, evs);
        total += want.len();
        let got = wait_for(
            js,
            "NMC_ALERTS",
            &format!("nmc.alerts.{force}.>"),
            want.len(),
            Duration::from_secs(90),
            Duration::from_millis(500),
        )
        .await;
        let mut got = alerts(&got);
        let mut want = want;
        got.sort_by_key(|a| a.id);
        want.sort_by_key(|a| a.id);
        assert_eq!(got, want, "alerts of {force}");
    }
    assert!(total > 20, "the scenario raises alerts ({total})");
    let all = read_all(js, "NMC_ALERTS", "nmc.alerts.>").await;
    let ids: BTreeSet<String> = all
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), all.len(), "no alert id twice");
    assert_eq!(all.len(), total, "no other alert");
}
