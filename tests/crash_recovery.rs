//! Crash: `nmc node` is killed with SIGKILL in the middle of a stream, several times, and
//! restarted on the same sled directory. The final alert set equals the uninterrupted run's, with
//! no alert lost and none duplicated on the alert stream.
//!
//! Kills are triggered by observed progress, not by time: the stream arrives in parts, and each
//! incarnation is killed as soon as it reports (with its lease renewal) a cursor inside the
//! newest part, so every kill lands mid-stream however fast or slow the machine is.

mod harness;

use std::time::Duration;

use harness::*;

/// Sum of the force cursors in a (stopped) node's sled database.
fn cursors(data_dir: &std::path::Path, forces: &[&str]) -> u64 {
    let store = nmc_node::store::Store::open(data_dir).unwrap();
    forces
        .iter()
        .map(|f| {
            store
                .force(&nmc_shared::ForceId::new(f).unwrap())
                .unwrap()
                .cursor()
                .unwrap()
        })
        .sum()
}

/// Committing after every batch: every kill lands between or inside commits, after the last
/// incarnation committed progress.
#[tokio::test]
async fn sigkill_mid_stream_loses_and_duplicates_nothing_committing_every_batch() {
    sigkill_mid_stream("0").await;
}

/// Committing once a second (the default): kills land with applied state not yet committed,
/// whose alerts are already published; the replay adds no duplicate.
#[tokio::test]
async fn sigkill_mid_stream_loses_and_duplicates_nothing_committing_by_interval() {
    sigkill_mid_stream("1000").await;
}

async fn sigkill_mid_stream(commit_interval_ms: &str) {
    let every_batch = commit_interval_ms == "0";
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let rules = vec![rules_dir("identity")];
    let forces = ["kent", "essex", "cumbria"];
    let spec = NodeSpec {
        id: "node-a".into(),
        forces: forces.iter().map(|f| f.to_string()).collect(),
        rules: rules.clone(),
        env: vec![
            // Small batches: many commits, so a kill lands between and inside them.
            ("NMC_BATCH_SIZE".into(), "25".into()),
            // Progress is reported with every lease renewal (a third of the TTL).
            ("NMC_LEASE_TTL_SECS".into(), "2".into()),
            ("NMC_COMMIT_INTERVAL_MS".into(), commit_interval_ms.into()),
        ],
        ..Default::default()
    };
    // A first start creates the streams; the node is then down while each part of the events
    // arrives, so that each later incarnation starts with a backlog.
    let mut node = Node::start(&nats, &data, &spec);
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    node.kill9();

    let plan = [
        ("kent", scenario("kent", 3000, true, true, 2)),
        ("essex", scenario("essex", 3000, false, true, 3)),
        ("cumbria", scenario("cumbria", 3000, true, false, 3)),
    ];
    const PARTS: usize = 4;
    let mut events: Vec<Vec<(u64, String, Vec<u8>)>> = vec![Vec::new(); plan.len()];
    let mut published = 0u64;
    let mut at_kills = Vec::new();
    for part in 0..PARTS {
        // Publish this part interleaved in chunks, as live collectors would.
        for chunk in 0..4 {
            for (i, (force, lines)) in plan.iter().enumerate() {
                let per_part = lines.len().div_ceil(PARTS);
                let subject = format!("nmc.events.{force}.entra_signin");
                let part: Vec<Vec<u8>> = lines
                    .iter()
                    .skip(part * per_part)
                    .take(per_part)
                    .skip(chunk * per_part.div_ceil(4))
                    .take(per_part.div_ceil(4))
                    .cloned()
                    .collect();
                if part.is_empty() {
                    continue;
                }
                let seqs = publish(&js, &subject, &part).await;
                events[i].extend(
                    seqs.into_iter()
                        .zip(part)
                        .map(|(s, l)| (s, subject.clone(), l)),
                );
            }
        }
        let before = published;
        published = events.iter().map(|e| e.last().unwrap().0).max().unwrap();
        assert!(published > before);
        node = Node::start(&nats, &data, &spec);
        if part + 1 == PARTS {
            break;
        }
        // Kill as soon as this incarnation is seen applying the new part: whatever the
        // machine's speed, the kill lands mid-stream (later parts are not published yet).
        wait_applied_past(&js, &forces, before, Duration::from_secs(60)).await;
        node.kill9();
        at_kills.push(cursors(&data, &forces));
    }
    let last_seqs: u64 = events.iter().map(|e| e.last().unwrap().0).sum();
    assert_eq!(at_kills.len(), PARTS - 1);
    // Each incarnation was seen applying the new part before its kill; committing every
    // batch, sled holds that progress too (by interval, the kill may come before the commit).
    assert!(
        at_kills.windows(2).all(|w| if every_batch {
            w[0] < w[1]
        } else {
            w[0] <= w[1]
        }) && at_kills.iter().all(|&c| c < last_seqs),
        "every kill landed mid-stream: {at_kills:?} of {last_seqs}"
    );
    let want: Vec<Vec<nmc_shared::Alert>> = plan
        .iter()
        .zip(&events)
        .map(|((force, _), evs)| expected_alerts(&rules, force, evs))
        .collect();
    let want_total: usize = want.iter().map(Vec::len).sum();
    assert!(
        want_total >= 10,
        "scenario raises enough alerts to notice loss: {want_total}"
    );

    let got = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.>",
        want_total,
        Duration::from_secs(120),
        Duration::from_secs(2),
    )
    .await;
    assert!(node.alive());
    assert_same_alerts_once(&got, want.into_iter().flatten().collect());
    drop(node);
    assert_eq!(cursors(&data, &forces), last_seqs, "every event applied");
}

/// Alerts go out before the state that raised them is committed: a node that never commits
/// (interval and quiet time of a minute) publishes every alert, is killed with nothing
/// committed, and its successor replays the whole stream and raises the same alerts again,
/// which `NMC_ALERTS` drops as duplicates. A graceful stop then commits.
#[tokio::test]
async fn alerts_published_before_their_commit_are_raised_again_and_dropped_after_a_crash() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let rules = vec![rules_dir("identity")];
    let spec = NodeSpec {
        id: "node-a".into(),
        forces: vec!["kent".into()],
        rules: rules.clone(),
        env: vec![
            ("NMC_COMMIT_INTERVAL_MS".into(), "60000".into()),
            ("NMC_COMMIT_QUIET_MS".into(), "60000".into()),
            ("NMC_BATCH_SIZE".into(), "50".into()),
        ],
        ..Default::default()
    };
    let mut node = Node::start(&nats, &data, &spec);
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    let subject = "nmc.events.kent.entra_signin";
    let lines = scenario("kent", 600, true, true, 2);
    let seqs = publish(&js, subject, &lines).await;
    let events: Vec<_> = seqs
        .iter()
        .zip(&lines)
        .map(|(s, l)| (*s, subject.to_string(), l.clone()))
        .collect();
    let want = expected_alerts(&rules, "kent", &events);
    assert!(
        want.len() >= 3,
        "the scenario raises alerts: {}",
        want.len()
    );
    let first = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.>",
        want.len(),
        Duration::from_secs(60),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(first.len(), want.len(), "every alert published");
    node.kill9();
    assert_eq!(
        cursors(&data, &["kent"]),
        0,
        "nothing was committed: the alerts went out first"
    );

    let mut node = Node::start(&nats, &data, &spec);
    // The successor replays everything: its applied cursor reaches the end again.
    wait_applied_past(
        &js,
        &["kent"],
        *seqs.last().unwrap() - 1,
        Duration::from_secs(60),
    )
    .await;
    let got = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.>",
        want.len(),
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;
    assert_same_alerts_once(&got, want);

    // A graceful stop hands the force off: what was applied is committed first.
    node.signal("TERM");
    assert!(node.wait_exit(Duration::from_secs(30)).await.is_some());
    assert_eq!(cursors(&data, &["kent"]), *seqs.last().unwrap());
}
