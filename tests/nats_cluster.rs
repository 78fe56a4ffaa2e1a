//! On a replicated JetStream cluster (three nats-server processes, nmc's streams and buckets at
//! three replicas, nodes given all three URLs), the failures of the cluster nmc stands on lose
//! nothing: the stream leader's server killed and restarted, every server rolled one at a
//! time, one server frozen past the election timeout. Under steady load each time, every
//! force's alerts equal one uninterrupted run of the pure core (none lost, none doubled), and
//! the stall is measured (printed: `docs/benchmarks.md` reports it).

mod harness;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use harness::load::{assert_exact, plan, steady_load};
use harness::*;

const FORCES: [&str; 4] = ["kent", "essex", "surrey", "durham"];

/// Two nodes on the cluster, R3, short checkpoints; waits until each force is owned.
async fn nodes(nats: &NatsCluster, dir: &std::path::Path) -> (Vec<Node>, jetstream::Context) {
    let ids = ["node-a", "node-b"];
    let nodes = ids
        .iter()
        .map(|id| {
            let spec = NodeSpec {
                id: id.to_string(),
                forces: FORCES.iter().map(|f| f.to_string()).collect(),
                triage: true,
                rules: vec![rules_dir("identity")],
                env: vec![
                    ("NMC_STREAM_REPLICAS".into(), "3".into()),
                    ("NMC_CHECKPOINT_INTERVAL_SECS".into(), "2".into()),
                    ("NMC_WORKERS".into(), "1".into()),
                ],
            };
            Node::start(nats, &dir.join(id), &spec)
        })
        .collect();
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    wait_owners(&js, &desired_owners(&FORCES, &ids), Duration::from_secs(60)).await;
    (nodes, js)
}

/// The index of the server leading `stream`.
async fn leader(js: &jetstream::Context, stream: &str) -> usize {
    loop {
        if let Ok(mut s) = js.get_stream(stream).await
            && let Ok(info) = s.info().await
            && let Some(name) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return NatsCluster::index_of(&name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every replica of `stream` is current again (after a server came back).
async fn wait_replicas_current(js: &jetstream::Context, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = js.get_stream(stream).await
            && let Ok(info) = s.info().await
            && let Some(c) = &info.cluster
            && c.leader.is_some()
            && c.replicas.len() == 2
            && c.replicas.iter().all(|r| r.current && !r.offline)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stream}: replicas not current in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `fault` two seconds into a steady load of the four forces, then checks every alert.
async fn under_load<F, Fut>(name: &str, fault: F)
where
    F: FnOnce(NatsCluster, jetstream::Context) -> Fut,
    Fut: std::future::Future<Output = NatsCluster>,
{
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(3).await;
    let (nodes, js) = nodes(&nats, dir.path()).await;
    let load = steady_load(
        nats.js().await,
        plan(&FORCES, 150),
        Duration::from_millis(20),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let nats = fault(nats, js.clone()).await;
    let fault_took = started.elapsed();
    let published = load.await.unwrap();
    assert_exact(&js, &published.events).await;
    eprintln!(
        "{name}: fault {:.1} s, longest publish stall {:.2} s, {} publishes retried",
        fault_took.as_secs_f64(),
        published.max_stall.as_secs_f64(),
        published.retries
    );
    drop(nodes);
    drop(nats);
}

#[tokio::test]
async fn the_stream_leaders_server_killed_and_restarted_loses_nothing() {
    under_load("leader SIGKILL", async |mut nats, js| {
        let i = leader(&js, &format!("NMC_EVENTS_{}", FORCES[0])).await;
        nats.kill(i);
        tokio::time::sleep(Duration::from_secs(3)).await;
        nats.restart(i).await;
        wait_replicas_current(&js, &format!("NMC_EVENTS_{}", FORCES[0])).await;
        nats
    })
    .await;
}

#[tokio::test]
async fn rolling_every_server_loses_nothing() {
    under_load("rolling restart", async |mut nats, js| {
        for i in 0..3 {
            nats.stop(i);
            tokio::time::sleep(Duration::from_secs(1)).await;
            nats.restart(i).await;
            for force in FORCES {
                wait_replicas_current(&js, &format!("NMC_EVENTS_{force}")).await;
            }
            wait_replicas_current(&js, "NMC_ALERTS").await;
        }
        nats
    })
    .await;
}

#[tokio::test]
async fn a_server_frozen_past_the_election_timeout_loses_nothing() {
    under_load("leader SIGSTOP 10 s", async |nats, js| {
        let i = leader(&js, &format!("NMC_EVENTS_{}", FORCES[0])).await;
        nats.signal(i, "STOP");
        tokio::time::sleep(Duration::from_secs(10)).await;
        nats.signal(i, "CONT");
        wait_replicas_current(&js, &format!("NMC_EVENTS_{}", FORCES[0])).await;
        nats
    })
    .await;
}
