//! Actor panic: a poison event crashes a force actor's evaluation. The supervisor restarts it from
//! sled, the event is retried a bounded number of times and then dead-lettered with the reason,
//! other forces keep processing, and the force resumes with its state intact.

mod harness;

use std::time::Duration;

use harness::*;
use nmc_node::synth::signin;
use serde_json::json;

fn legacy(t: i64, user: &str) -> Vec<u8> {
    let v = signin(
        t,
        1,
        user,
        "81.2.69.144",
        "Office 365 Exchange Online",
        "IMAP4",
        0,
        ("London", 51.5, -0.1),
        "GB",
    );
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "fault injection (NMC_FAULT_PANIC_FIELD) exists in debug builds only"
)]
async fn poison_event_is_retried_then_dead_lettered_and_state_survives() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        &nats,
        &dir.path().join("n"),
        &NodeSpec {
            id: "node-a".into(),
            forces: vec!["kent".into(), "essex".into()],
            rules: vec![rules_dir("identity")],
            env: vec![
                ("NMC_FAULT_PANIC_FIELD".into(), "nmc_test_panic".into()),
                ("NMC_MAX_ATTEMPTS".into(), "3".into()),
            ],
            ..Default::default()
        },
    );
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    let kent = "nmc.events.kent.entra_signin";

    // Five failures for bob, then a legacy sign-in whose alert proves they were committed.
    let mut first: Vec<Vec<u8>> = (0..5).map(failure).collect();
    first.push(legacy(T0 + 26_000, "carol.jones@kent.police.uk"));
    publish(&js, kent, &first).await;
    wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.kent.>",
        1,
        Duration::from_secs(30),
        Duration::ZERO,
    )
    .await;

    // The poison event, then five more failures.
    let mut poison = serde_json::from_slice::<serde_json::Value>(&failure(5)).unwrap();
    poison["nmc_test_panic"] = json!(true);
    let poison_seq = publish(&js, kent, &[serde_json::to_vec(&poison).unwrap()]).await[0];
    publish(&js, kent, &(6..11).map(failure).collect::<Vec<_>>()).await;
    // Event time moves past the allowed lateness: the failures reach the correlations.
    publish(&js, kent, &[clock(600)]).await;
    // Meanwhile another force keeps working.
    publish(
        &js,
        "nmc.events.essex.entra_signin",
        &[legacy(T0, "dan.evans@essex.police.uk")],
    )
    .await;

    let dlq = wait_for(
        &js,
        "NMC_DLQ",
        "nmc.dlq.>",
        1,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(dlq.len(), 1, "exactly the poison event is dead-lettered");
    let d = &dlq[0];
    assert_eq!(d.subject, "nmc.dlq.kent");
    assert_eq!(d.header("Nmc-Reason"), Some("evaluation_panic"));
    assert_eq!(d.header("Nmc-Seq"), Some(poison_seq.to_string().as_str()));
    assert_eq!(d.header("Nmc-Subject"), Some(kent));
    assert!(
        d.header("Nmc-Error").unwrap().contains("panicked 3 times"),
        "{:?}",
        d.header("Nmc-Error")
    );
    assert_eq!(
        d.json()["nmc_test_panic"],
        json!(true),
        "payload kept for analysis"
    );

    // Bob's ten non-poison failures straddle the restarts: the brute force sees all ten.
    let kent_alerts = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.kent.>",
        2,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    let kent_alerts = alerts(&kent_alerts);
    assert_eq!(kent_alerts.len(), 2, "{kent_alerts:#?}");
    let brute = kent_alerts
        .iter()
        .find(|a| a.rule.kind == "event_count")
        .expect("brute force alert");
    assert_eq!(brute.count, 10);
    assert!(brute.evidence.iter().all(|e| e.seq != poison_seq));
    assert_eq!(brute.evidence.len(), 10);

    let essex = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.essex.>",
        1,
        Duration::from_secs(30),
        Duration::ZERO,
    )
    .await;
    assert_eq!(essex.len(), 1, "other force unaffected");

    let log = node.log();
    assert_eq!(
        log.matches("rule evaluation panicked; restarting").count(),
        3,
        "bounded retries"
    );
    assert!(log.contains("force actor restarting from sled"));
}
