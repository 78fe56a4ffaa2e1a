//! Bad input: every kind lands in the dead-letter stream with its reason, the cursor moves past
//! it, and the good events around it are all processed; an event of a force nmc does not know
//! has no stream and is refused when published.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::*;

#[tokio::test]
async fn every_bad_input_kind_is_dead_lettered_with_its_reason() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _node = Node::start(
        &nats,
        &dir.path().join("n"),
        &NodeSpec {
            id: "node-a".into(),
            forces: vec!["kent".into()],
            triage: true,
            rules: vec![rules_dir("identity")],
            env: vec![("NMC_MAX_EVENT_BYTES".into(), "4096".into())],
        },
    );
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    let kent = "nmc.events.kent.entra_signin";

    let oversize = {
        let mut v: serde_json::Value = serde_json::from_slice(&failure(0)).unwrap();
        v["padding"] = "x".repeat(5000).into();
        serde_json::to_vec(&v).unwrap()
    };
    let dlq_kent = "nmc.dlq.kent";
    let bad: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            kent,
            b"{\"time\": \"2026-11-02T08:00:00Z\", ".to_vec(),
            "malformed_json",
            dlq_kent,
        ),
        (kent, b"[1, 2, 3]".to_vec(), "not_an_object", dlq_kent),
        (
            kent,
            b"\"just a string\"".to_vec(),
            "not_an_object",
            dlq_kent,
        ),
        (
            kent,
            b"{\"properties\": {\"userPrincipalName\": \"x\"}}".to_vec(),
            "missing_time",
            dlq_kent,
        ),
        (
            kent,
            b"{\"time\": \"last tuesday\"}".to_vec(),
            "bad_time",
            dlq_kent,
        ),
        (
            kent,
            b"{\"time\": \"1970-01-01T00:00:00Z\"}".to_vec(),
            "bad_time",
            dlq_kent,
        ),
        (kent, b"{\"time\": 17}".to_vec(), "bad_time", dlq_kent),
        (kent, oversize, "oversize", dlq_kent),
        (
            kent,
            b"{\"time\": \"2099-01-01T00:00:00Z\"}".to_vec(),
            "future_time",
            dlq_kent,
        ),
        (
            "nmc.events.kent.netflow",
            failure(0),
            "unknown_source",
            dlq_kent,
        ),
        (
            "nmc.events.kent.entra_signin.extra",
            failure(0),
            "bad_subject",
            dlq_kent,
        ),
        ("nmc.events.kent", failure(0), "bad_subject", dlq_kent),
        (
            "nmc.events.essex.entra_signin",
            failure(0),
            "force_not_onboarded",
            "nmc.dlq.essex",
        ),
        (
            "nmc.events.essex",
            failure(0),
            "bad_subject",
            "nmc.dlq._unknown",
        ),
    ];
    // Interleave: a good failure before each bad event, so that loss of a neighbour shows.
    // Sequences are per force's stream: a dead letter is known by (subject, sequence).
    let mut expect: BTreeMap<(String, u64), (&str, &str)> = BTreeMap::new();
    let mut good = 0;
    for (subject, payload, reason, to) in &bad {
        publish(&js, kent, &[failure(good)]).await;
        good += 1;
        let seq = publish(&js, subject, std::slice::from_ref(payload)).await[0];
        expect.insert((subject.to_string(), seq), (reason, to));
    }
    // A force of no registry has no stream: the server refuses the event (no responders), and
    // the collector sees it at once ("no stream found for given subject").
    let refused = js
        .publish("nmc.events.atlantis.entra_signin", failure(0).into())
        .await
        .expect("sent")
        .await
        .expect_err("no stream captures an unknown force's events");
    assert!(refused.to_string().contains("no stream"), "{refused}");
    publish(&js, kent, &(good..10).map(failure).collect::<Vec<_>>()).await;
    // Event time moves past the allowed lateness: the failures reach the correlations.
    publish(&js, kent, &[clock(600)]).await;

    let dlq = wait_for(
        &js,
        "NMC_DLQ",
        "nmc.dlq.>",
        bad.len(),
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .await;
    let mut got: BTreeMap<(String, u64), (String, String)> = BTreeMap::new();
    for d in &dlq {
        let seq: u64 = d.header("Nmc-Seq").unwrap().parse().unwrap();
        assert!(
            !d.header("Nmc-Error").unwrap_or_default().is_empty(),
            "error text for {seq}"
        );
        got.insert(
            (d.header("Nmc-Subject").unwrap().to_owned(), seq),
            (
                d.header("Nmc-Reason").unwrap().to_owned(),
                d.subject.clone(),
            ),
        );
    }
    assert_eq!(
        dlq.len(),
        bad.len(),
        "each bad event dead-lettered exactly once"
    );
    let want: BTreeMap<(String, u64), (String, String)> = expect
        .iter()
        .map(|(k, (r, to))| (k.clone(), (r.to_string(), to.to_string())))
        .collect();
    assert_eq!(got, want);

    // The ten good failures all counted: the brute force fires with count 10.
    let al = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.kent.>",
        1,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    let al = alerts(&al);
    assert_eq!(al.len(), 1, "{al:#?}");
    assert_eq!(al[0].count, 10);
}
