//! End to end: three forces on two nodes, real nats-server, real sled. Exactly the expected
//! alerts arrive on each force's alert subject, and none on another force's.

mod harness;

use std::time::Duration;

use harness::*;

#[tokio::test]
async fn three_forces_two_nodes_exact_alerts() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = vec![rules_dir("identity")];
    let all = vec!["kent".to_string(), "essex".into(), "cumbria".into()];
    let _a = Node::start(
        &nats,
        &dir.path().join("a"),
        &NodeSpec {
            id: "node-a".into(),
            forces: all.clone(),
            triage: true,
            rules: rules.clone(),
            ..Default::default()
        },
    );
    let _b = Node::start(
        &nats,
        &dir.path().join("b"),
        &NodeSpec {
            id: "node-b".into(),
            forces: all.clone(),
            rules: rules.clone(),
            ..Default::default()
        },
    );
    let js = nats.js().await;
    wait_stream(&js, "NMC_ALERTS").await;
    // The cluster shares the forces out by rendezvous hashing once both nodes are up.
    let owners = desired_owners(&["kent", "essex", "cumbria"], &["node-a", "node-b"]);
    wait_owners(&js, &owners, Duration::from_secs(30)).await;

    let plan = [
        ("kent", scenario("kent", 400, true, false, 0)),
        ("essex", scenario("essex", 400, false, true, 0)),
        ("cumbria", scenario("cumbria", 400, false, false, 3)),
    ];
    let mut expected = Vec::new();
    for (force, lines) in &plan {
        let subject = format!("nmc.events.{force}.entra_signin");
        let seqs = publish(&js, &subject, lines).await;
        let events: Vec<_> = seqs
            .iter()
            .zip(lines)
            .map(|(s, l)| (*s, subject.clone(), l.clone()))
            .collect();
        expected.push((*force, expected_alerts(&rules, force, &events)));
    }
    // The scenario itself: one spray in kent; in essex a brute force (30 failures: one alert,
    // the other 20 suppressed) whose final success, from abroad, completes "brute force followed
    // by success" and is impossible travel, as is the real user's next sign-in from home; three
    // legacy sign-ins in cumbria. Guards against a vacuous comparison below.
    let titles = |i: usize| -> Vec<&str> {
        let mut t: Vec<&str> = expected[i]
            .1
            .iter()
            .map(|a| a.rule.title.as_str())
            .collect();
        t.sort();
        t
    };
    assert_eq!(titles(0), vec!["Entra ID password spray from one address"]);
    assert_eq!(
        titles(1),
        vec![
            "Entra ID brute force against one account",
            "Entra ID brute force followed by a successful sign-in",
            "Entra ID impossible travel",
            "Entra ID impossible travel",
        ]
    );
    assert_eq!(
        titles(2),
        vec!["Entra ID sign-in with a legacy authentication protocol"; 3]
    );
    let brute = expected[1]
        .1
        .iter()
        .find(|a| a.rule.kind == "event_count")
        .unwrap();
    assert_eq!((brute.count, brute.suppressed), (10, 0));
    assert_eq!(expected[0].1[0].distinct, Some(15));

    for (force, want) in &expected {
        let got = wait_for(
            &js,
            "NMC_ALERTS",
            &format!("nmc.alerts.{force}.>"),
            want.len(),
            Duration::from_secs(60),
            Duration::from_secs(1),
        )
        .await;
        let got = alerts(&got);
        assert_eq!(&got, want, "alerts of {force}");
        let node = owners[*force].as_str();
        let raw = read_all(&js, "NMC_ALERTS", &format!("nmc.alerts.{force}.>")).await;
        assert!(raw.iter().all(|r| r.json()["node"] == node));
    }
    let total = read_all(&js, "NMC_ALERTS", "nmc.alerts.>").await;
    let want_total: usize = expected.iter().map(|(_, a)| a.len()).sum();
    assert_eq!(total.len(), want_total, "no alert on any other subject");
    assert!(
        read_all(&js, "NMC_DLQ", "nmc.dlq.>").await.is_empty(),
        "clean input, no dead letters"
    );
}
