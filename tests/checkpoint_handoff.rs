//! Checkpoint hand-off: a force's state is exported mid-stream from one node's data directory
//! with `nmc state export`, imported into another with `nmc state import`, and a node on the new
//! directory finishes the stream. The alerts equal one uninterrupted run's: nothing lost, nothing
//! duplicated, correlation windows carried across. Periodic checkpoints leave the running force
//! as it is.

mod harness;

use std::process::Command;
use std::time::Duration;

use harness::*;

fn nmc(args: &[&str]) {
    let out = Command::new(nmc_bin())
        .args(args)
        .output()
        .expect("running nmc");
    assert!(
        out.status.success(),
        "nmc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn exported_state_continues_on_another_node() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let rules = vec![rules_dir("identity")];
    let spec = |id: &str| NodeSpec {
        id: id.into(),
        forces: vec!["essex".into()],
        rules: rules.clone(),
        ..Default::default()
    };
    let mut a = Node::start(&nats, &a_dir, &spec("node-a"));
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;

    // The brute force of this scenario straddles the hand-off: the first half of the failures is
    // counted on node A, the rest on node B.
    let lines = scenario("essex", 400, false, true, 0);
    let subject = "nmc.events.essex.entra_signin";
    let cut = lines.len() * 55 / 100;
    let first = publish(&js, subject, &lines[..cut]).await;
    let last_first = *first.last().unwrap();
    // Wait until A has applied the first half, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        a.kill9();
        let cursor = nmc_node::store::Store::open(&a_dir)
            .unwrap()
            .force(&nmc_shared::ForceId::new("essex").unwrap())
            .unwrap()
            .cursor()
            .unwrap();
        if cursor == last_first || std::time::Instant::now() > deadline {
            assert_eq!(cursor, last_first, "node A applied the first half");
            break;
        }
        a = Node::start(&nats, &a_dir, &spec("node-a"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let file = dir.path().join("essex.ckpt");
    let (a_s, b_s, f_s) = (
        a_dir.display().to_string(),
        b_dir.display().to_string(),
        file.display().to_string(),
    );
    nmc(&[
        "state",
        "export",
        "--data-dir",
        &a_s,
        "--force",
        "essex",
        "--out",
        &f_s,
    ]);
    nmc(&[
        "state",
        "import",
        "--data-dir",
        &b_s,
        "--force",
        "essex",
        &f_s,
    ]);
    drop(a);

    let _b = Node::start(&nats, &b_dir, &spec("node-b"));
    let second = publish(&js, subject, &lines[cut..]).await;
    let events: Vec<_> = first
        .iter()
        .chain(&second)
        .zip(&lines)
        .map(|(s, l)| (*s, subject.to_string(), l.clone()))
        .collect();
    let want = expected_alerts(&rules, "essex", &events);
    assert!(
        want.iter()
            .any(|w| w.evidence.iter().any(|e| e.seq <= last_first)
                && w.evidence.iter().any(|e| e.seq > last_first)),
        "some alert's evidence straddles the hand-off: {want:#?}"
    );
    let got = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.essex.>",
        want.len(),
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .await;
    assert_same_alerts_once(&got, want);
}

/// A periodic checkpoint is read from what the force committed while its worker goes on: the
/// worker keeps its state in memory and is not rebuilt from sled at every checkpoint (which
/// would cost a large force a full reload per checkpoint interval).
#[tokio::test]
async fn periodic_checkpoints_do_not_reload_the_force() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        &nats,
        dir.path(),
        &NodeSpec {
            id: "node-a".into(),
            forces: vec!["essex".into()],
            rules: vec![rules_dir("identity")],
            env: vec![("NMC_CHECKPOINT_INTERVAL_SECS".into(), "1".into())],
            ..Default::default()
        },
    );
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    let lines = scenario("essex", 200, false, true, 0);
    let seqs = publish(&js, "nmc.events.essex.entra_signin", &lines).await;
    wait_applied_past(
        &js,
        &["essex"],
        seqs[seqs.len() - 2],
        Duration::from_secs(60),
    )
    .await;
    // Idle from here on: each checkpoint finds the worker waiting for its next message.
    let checkpoints = || async {
        let (_, text) = http_get(&format!("{}/metrics", node.http)).await.unwrap();
        text.lines()
            .filter(|l| l.starts_with("nmc_checkpoints_total") && l.contains("outcome=\"ok\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let start = checkpoints().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while checkpoints().await < start + 5.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "five more checkpoints within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = node.log();
    assert_eq!(
        log.matches("force state loaded").count(),
        1,
        "the force was loaded once, at its start:\n{log}"
    );
}
