//! Checkpoint hand-off: a force's state is exported mid-stream from one node's data directory
//! with `nmc state export`, imported into another with `nmc state import`, and a node on the new
//! directory finishes the stream. The alerts equal one uninterrupted run's: nothing lost, nothing
//! duplicated, correlation windows carried across.

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
