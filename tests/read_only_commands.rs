//! On a three-server JetStream cluster (as production runs: R3 streams and buckets), only
//! `nmc node` creates or changes nmc's streams and buckets. Every other command leaves every
//! stream's and bucket's configuration as it was, and before any node ran they fail with a
//! message that says to start one, creating nothing. A node configured for fewer replicas than
//! the cluster's buckets have does not lower them.

mod harness;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::*;
use tokio::process::Command;

/// Every stream of the account (KV buckets and object stores included) and its configuration.
async fn configs(js: &async_nats::jetstream::Context) -> BTreeMap<String, serde_json::Value> {
    let mut names = js.stream_names();
    let mut out = BTreeMap::new();
    while let Some(name) = names.next().await {
        let name = name.expect("listing streams");
        let mut s = js.get_stream(&name).await.expect("stream");
        let config = s.info().await.expect("stream info").config.clone();
        out.insert(name, serde_json::to_value(config).unwrap());
    }
    out
}

/// Runs `nmc args...` against `url`, with a deadline.
async fn nmc(url: &str, args: &[&str]) -> Output {
    let run = Command::new(nmc_bin())
        .args(args)
        .env("NMC_NATS_URL", url)
        .env("NMC_LOG", "warn")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("nmc {args:?} did not finish in 60s"))
        .expect("running nmc")
}

/// Runs `nmc args...`, which must succeed; its standard output.
async fn ok(url: &str, args: &[&str]) -> String {
    let out = nmc(url, args).await;
    assert!(
        out.status.success(),
        "nmc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The streams and buckets a node provisions.
const PROVISIONED: &[&str] = &[
    "NMC_EVENTS_kent",
    "NMC_EVENTS_essex",
    "NMC_ALERTS",
    "NMC_DLQ",
    "KV_NMC_NODES",
    "KV_NMC_LEASES",
    "KV_NMC_FORCES",
    "KV_NMC_RULES",
    "OBJ_NMC_CHECKPOINTS",
    "OBJ_NMC_RULEPACKS",
];

#[tokio::test]
async fn only_nodes_create_or_change_streams_and_buckets() {
    let nats = NatsCluster::start(3).await;
    let url = nats.url.clone();
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();

    // Before any node: tools refuse with a clear message and create nothing.
    for args in [
        vec!["cluster", "status"],
        vec!["forces", "list"],
        vec!["forces", "add", "kent"],
        vec!["rules", "push", rules_dir("identity").to_str().unwrap()],
        vec!["alerts", "tail", "--all", "--idle", "1"],
    ] {
        let out = nmc(&url, &args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "nmc {args:?} must fail without a node"
        );
        assert!(
            err.contains("start an `nmc node` first"),
            "nmc {args:?} says what to do: {err}"
        );
    }
    assert!(configs(&js).await.is_empty(), "no tool created anything");

    // A node configured for R3 provisions everything with three replicas.
    let spec = |id: &str, replicas: &str| NodeSpec {
        id: id.into(),
        forces: vec!["kent".into()],
        triage: true,
        rules: vec![rules_dir("identity")],
        env: vec![("NMC_STREAM_REPLICAS".into(), replicas.into())],
    };
    let _a = Node::start(&nats, &dir.path().join("a"), &spec("node-a", "3"));
    let want: BTreeMap<String, String> = [("kent".to_string(), "node-a".to_string())].into();
    wait_owners(&js, &want, Duration::from_secs(60)).await;
    let before = configs(&js).await;
    for name in PROVISIONED {
        let c = before
            .get(*name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(c["num_replicas"], 3, "{name}: {c}");
    }

    // Every command that talks to NATS, the read-only ones and those that write data.
    let events = dir.path().join("kent.entra_signin.jsonl");
    let lines: Vec<String> = scenario("kent", 50, false, true, 0)
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    std::fs::write(&events, lines.join("\n")).unwrap();
    // Every shipped rule, the bench's probe included.
    let shipped = rules_dir("");
    let commands: Vec<Vec<&str>> = vec![
        vec!["cluster", "status"],
        vec!["cluster", "status", "--json"],
        vec!["forces", "list"],
        vec!["forces", "add", "essex", "--phase", "cloud"],
        vec!["forces", "add", "surrey"],
        vec!["forces", "set-phase", "essex", "cloud-and-onprem"],
        vec!["forces", "list", "--json"],
        vec!["rules", "push", shipped.to_str().unwrap()],
        vec!["replay", events.to_str().unwrap()],
        vec!["alerts", "tail", "--all", "--idle", "2"],
        vec!["dlq", "tail", "--all", "--idle", "1"],
        // Two fresh forces: their probes have the same sequences, each in its force's stream.
        vec![
            "bench",
            "--forces",
            "essex,surrey",
            "--events",
            "200",
            "--timeout",
            "30",
        ],
        vec!["forces", "remove", "essex"],
        vec!["forces", "remove", "surrey"],
    ];
    for args in &commands {
        ok(&url, args).await;
    }
    // The bench's two floors read the same backlog: the forces' streams one after the other
    // with one reader, and all at once with a reader each.
    let count = |out: &str, phase: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(v["phase"], phase, "{out}");
        assert!(
            v[format!("{}_events_per_sec", phase.replace('-', "_"))]
                .as_f64()
                .unwrap()
                > 0.0
        );
        v["events"].as_u64().unwrap()
    };
    let floor = ok(
        &url,
        &["bench", "--phase", "floor", "--forces", "kent,essex,surrey"],
    )
    .await;
    let per_force = ok(
        &url,
        &[
            "bench",
            "--phase",
            "force-floor",
            "--forces",
            "kent,essex,surrey",
        ],
    )
    .await;
    let n = count(&floor, "floor");
    assert!(n >= 250, "the replayed and the bench's events: {floor}");
    assert_eq!(count(&per_force, "force-floor"), n);
    let status = ok(&url, &["cluster", "status", "--json"]).await;
    assert!(status.contains("node-a"), "{status}");

    // A second node configured for one replica must not lower the cluster's three.
    let _b = Node::start(&nats, &dir.path().join("b"), &spec("node-b", "1"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok(&url, &["cluster", "status"]).await.contains("node-b") {
        assert!(Instant::now() < deadline, "node-b did not join");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = configs(&js).await;
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            format!(
                "{k}:\n  before {:?}\n  after  {:?}",
                before.get(k),
                after.get(k)
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "every stream's and bucket's configuration is unchanged; changed: {changed:#?}"
    );
}
