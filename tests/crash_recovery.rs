//! Crash: `nmc node` is killed with SIGKILL in the middle of a stream, several times, and
//! restarted on the same sled directory. The final alert set equals the uninterrupted run's, with
//! no alert lost and none duplicated on the alert stream.

mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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

#[tokio::test]
async fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let rules = vec![rules_dir("identity")];
    let forces = ["kent", "essex", "cumbria"];
    let spec = NodeSpec {
        id: "node-a".into(),
        forces: forces.iter().map(|f| f.to_string()).collect(),
        rules: rules.clone(),
        // Small batches: many commits, so a kill lands between and inside them.
        env: vec![("NMC_BATCH_SIZE".into(), "25".into())],
        ..Default::default()
    };
    // A first start creates the streams; the node is then down while the events arrive, so that
    // each later incarnation starts with a backlog and is killed while working through it.
    let mut node = Node::start(&nats, &data, &spec);
    let js = nats.js().await;
    wait_stream(&js, "NMC_EVENTS").await;
    node.kill9();

    let plan = [
        ("kent", scenario("kent", 3000, true, true, 2)),
        ("essex", scenario("essex", 3000, false, true, 3)),
        ("cumbria", scenario("cumbria", 3000, true, false, 3)),
    ];
    // Publish interleaved in chunks, as live collectors would.
    let mut events: Vec<Vec<(u64, String, Vec<u8>)>> = vec![Vec::new(); plan.len()];
    for chunk in 0..10 {
        for (i, (force, lines)) in plan.iter().enumerate() {
            let subject = format!("nmc.events.{force}.entra_signin");
            let part: Vec<Vec<u8>> = lines.iter().skip(chunk * 320).take(320).cloned().collect();
            let seqs = publish(&js, &subject, &part).await;
            events[i].extend(
                seqs.into_iter()
                    .zip(part)
                    .map(|(s, l)| (s, subject.clone(), l)),
            );
        }
    }
    let last_seqs: u64 = events.iter().map(|e| e.last().unwrap().0).sum();
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

    // Kill three times while processing is under way, restarting on the same data dir.
    let mut mid_stream_kills = 0;
    for round in 1..=3u64 {
        node = Node::start(&nats, &data, &spec);
        let before = count(&js, "NMC_ALERTS", "nmc.alerts.>").await;
        let deadline = Instant::now() + Duration::from_millis(400 * round);
        // Kill once this incarnation has made progress (a new alert), or after a short while.
        while count(&js, "NMC_ALERTS", "nmc.alerts.>").await == before && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.kill9();
        if cursors(&data, &forces) < last_seqs {
            mid_stream_kills += 1;
        }
    }
    node = Node::start(&nats, &data, &spec);
    eprintln!("{mid_stream_kills} of 3 kills landed mid-stream");
    assert!(
        mid_stream_kills >= 1,
        "at least one kill must land mid-stream"
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
    let ids: BTreeSet<_> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), got.len(), "duplicate alert on the stream");
    let mut got = alerts(&got);
    let mut want: Vec<_> = want.into_iter().flatten().collect();
    got.sort_by_key(|a| a.id);
    want.sort_by_key(|a| a.id);
    assert_eq!(got, want, "final alerts equal the uninterrupted run's");
    drop(node);
    assert_eq!(cursors(&data, &forces), last_seqs, "every event applied");
}
