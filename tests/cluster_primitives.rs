//! Cluster coordination primitives against a real nats-server: leases (exclusive, expiring,
//! fenced by a growing epoch, released at once), membership by heartbeat TTL, checkpoints in the
//! object store, and the onboarded forces with the follower that publishes them to a node.

mod harness;

use std::time::{Duration, Instant};

use harness::Nats;
use nmc_node::cluster::lease::{self, Lease, LeaseLost};
use nmc_node::cluster::membership::{self, Membership, NodeInfo};
use nmc_node::cluster::onboarding;
use nmc_node::cluster::{Buckets, ClusterSettings, checkpoint, ensure_buckets};
use nmc_shared::ForceId;
use nmc_shared::onboarding::OnboardingPhase;
use nmc_shared::rendezvous::{NodeWeight, owner};

const TTL: Duration = Duration::from_secs(2);

fn force(id: &str) -> ForceId {
    ForceId::new(id).unwrap()
}

async fn buckets(nats: &Nats) -> Buckets {
    let settings = ClusterSettings {
        node_ttl: TTL,
        lease_ttl: TTL,
        replicas: 1,
    };
    let js = nats.js().await;
    // Twice: opening existing buckets is as good as creating them.
    ensure_buckets(&js, &settings).await.unwrap();
    ensure_buckets(&js, &settings).await.unwrap()
}

#[tokio::test]
async fn one_holder_then_takeover_after_ttl_with_a_greater_epoch() {
    let nats = Nats::start().await;
    let b = buckets(&nats).await;
    assert_eq!(b.leases.stream.cached_info().config.max_age, TTL);
    let (kent, essex) = (force("kent"), force("essex"));

    let start = Instant::now();
    let mut a = Lease::acquire(&b.leases, &kent, "node-a")
        .await
        .unwrap()
        .expect("free lease");
    let mut a_essex = Lease::acquire(&b.leases, &essex, "node-a")
        .await
        .unwrap()
        .unwrap();
    assert!(
        Lease::acquire(&b.leases, &kent, "node-b")
            .await
            .unwrap()
            .is_none()
    );
    // The same node id (a restarted process of node-a) takes its lease back at once, with a
    // new epoch; the old process's handle is fenced off.
    let old_epoch = a.epoch();
    let mut stale = std::mem::replace(
        &mut a,
        Lease::acquire(&b.leases, &kent, "node-a")
            .await
            .unwrap()
            .expect("reclaimed by the same node id"),
    );
    assert!(a.epoch() > old_epoch);
    assert!(stale.renew().await.is_err(), "the old handle is fenced off");
    let h = lease::holder(&b.leases, &kent).await.unwrap().unwrap();
    assert_eq!((h.node_id.as_str(), h.revision), ("node-a", a.epoch()));

    // node-a stops renewing; node-b keeps trying until the key has expired.
    let new = loop {
        if let Some(l) = Lease::acquire(&b.leases, &kent, "node-b").await.unwrap() {
            break l;
        }
        assert!(start.elapsed() < TTL * 3, "lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = start.elapsed();
    eprintln!("expired lease re-acquired {took:?} after acquisition (TTL {TTL:?})");
    assert!(took >= TTL, "taken over after {took:?}, before the TTL");
    assert!(
        a.deadline() <= Instant::now(),
        "the old holder's local deadline passed first"
    );
    assert!(
        new.epoch() > a.epoch(),
        "epoch {} after {}",
        new.epoch(),
        a.epoch()
    );
    let h = lease::holder(&b.leases, &kent).await.unwrap().unwrap();
    assert_eq!(h.node_id, "node-b");

    // The old holder cannot renew, neither over a new holder nor over an expired key.
    assert!(matches!(a.renew().await, Err(LeaseLost::Superseded(f)) if f == kent));
    assert!(matches!(
        a_essex.renew().await,
        Err(LeaseLost::Superseded(_))
    ));
    assert!(lease::holder(&b.leases, &essex).await.unwrap().is_none());
    assert_eq!(
        lease::holder(&b.leases, &kent)
            .await
            .unwrap()
            .unwrap()
            .node_id,
        "node-b"
    );

    // The new holder renews: a new revision, the same epoch.
    let mut new = new;
    let (epoch, rev) = (new.epoch(), new.revision());
    new.renew().await.unwrap();
    assert!(new.revision() > rev);
    assert_eq!(new.epoch(), epoch);
}

#[tokio::test]
async fn renewal_keeps_the_lease_and_release_frees_it_at_once() {
    let nats = Nats::start().await;
    let b = buckets(&nats).await;
    let dorset = force("dorset");
    let mut a = Lease::acquire(&b.leases, &dorset, "node-a")
        .await
        .unwrap()
        .unwrap();
    // Renewed every TTL/3 for longer than the TTL: nobody else gets it.
    let until = Instant::now() + TTL + TTL / 2;
    while Instant::now() < until {
        tokio::time::sleep(TTL / 3).await;
        a.renew().await.unwrap();
        assert!(
            Lease::acquire(&b.leases, &dorset, "node-b")
                .await
                .unwrap()
                .is_none()
        );
    }
    let first = a.epoch();
    a.release().await.unwrap();
    assert!(lease::holder(&b.leases, &dorset).await.unwrap().is_none());
    let c = Lease::acquire(&b.leases, &dorset, "node-b")
        .await
        .unwrap()
        .expect("released");
    assert!(c.epoch() > first);
    // A third owner, after another release, again gets a greater epoch.
    let second = c.epoch();
    c.release().await.unwrap();
    let d = Lease::acquire(&b.leases, &dorset, "node-a")
        .await
        .unwrap()
        .unwrap();
    assert!(d.epoch() > second);
}

#[tokio::test]
async fn a_node_that_stops_heartbeating_leaves_after_the_ttl() {
    let nats = Nats::start().await;
    let b = buckets(&nats).await;
    assert!(membership::live_nodes(&b.nodes).await.unwrap().is_empty());
    let a = Membership::join(&b.nodes, NodeInfo::this_process("node-a", 1))
        .await
        .unwrap();
    let b_info = NodeInfo::this_process("node-b", 2);
    let joined = Instant::now();
    let _silent = Membership::join(&b.nodes, b_info.clone()).await.unwrap();
    let live = membership::live_nodes(&b.nodes).await.unwrap();
    assert_eq!(live, vec![a.info().clone(), b_info]);

    // node-a heartbeats every TTL/4; node-b never again.
    let gone = loop {
        a.heartbeat().await.unwrap();
        let live = membership::live_nodes(&b.nodes).await.unwrap();
        let ids: Vec<&str> = live.iter().map(|n| n.node_id.as_str()).collect();
        if ids == ["node-a"] {
            break joined.elapsed();
        }
        assert_eq!(ids, ["node-a", "node-b"]);
        assert!(joined.elapsed() < TTL * 3, "node-b never expired");
        tokio::time::sleep(TTL / 4).await;
    };
    eprintln!("silent node gone {gone:?} after its last heartbeat (TTL {TTL:?})");
    assert!(gone >= TTL, "gone after {gone:?}, before the TTL");
    let live = membership::live_nodes(&b.nodes).await.unwrap();
    let weights: Vec<NodeWeight> = live.iter().map(NodeWeight::from).collect();
    assert_eq!(owner("kent", &weights), Some("node-a"));

    a.leave().await.unwrap();
    assert!(membership::live_nodes(&b.nodes).await.unwrap().is_empty());
}

fn meta(seq: u64, generation: u64, cursor_time_ms: Option<i64>) -> checkpoint::Meta {
    checkpoint::Meta {
        seq,
        generation,
        cursor_time_ms,
    }
}

#[tokio::test]
async fn checkpoints_round_trip_and_the_newest_wins() {
    let nats = Nats::start().await;
    let b = buckets(&nats).await;
    let (kent, essex) = (force("kent"), force("essex"));
    assert_eq!(checkpoint::get(&b.checkpoints, &kent).await.unwrap(), None);

    // Larger than one 128 KiB chunk.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    checkpoint::put(&b.checkpoints, &kent, &meta(10, 0, None), &big)
        .await
        .unwrap();
    checkpoint::put(&b.checkpoints, &essex, &meta(3, 0, None), b"essex state")
        .await
        .unwrap();
    assert_eq!(
        checkpoint::get(&b.checkpoints, &kent).await.unwrap(),
        Some(checkpoint::Stored {
            meta: meta(10, 0, None),
            state: big
        })
    );

    checkpoint::put(
        &b.checkpoints,
        &kent,
        &meta(25, 2, Some(1_793_606_400_123)),
        b"newer",
    )
    .await
    .unwrap();
    assert_eq!(
        checkpoint::get(&b.checkpoints, &kent).await.unwrap(),
        Some(checkpoint::Stored {
            meta: meta(25, 2, Some(1_793_606_400_123)),
            state: b"newer".to_vec()
        })
    );
    checkpoint::put(&b.checkpoints, &kent, &meta(26, 0, None), b"")
        .await
        .unwrap();
    assert_eq!(
        checkpoint::get(&b.checkpoints, &kent).await.unwrap(),
        Some(checkpoint::Stored {
            meta: meta(26, 0, None),
            state: Vec::new()
        })
    );
    assert_eq!(
        checkpoint::get(&b.checkpoints, &essex).await.unwrap(),
        Some(checkpoint::Stored {
            meta: meta(3, 0, None),
            state: b"essex state".to_vec()
        })
    );
}

#[tokio::test]
async fn onboarding_changes_are_listed_and_followed() {
    let nats = Nats::start().await;
    let b = buckets(&nats).await;
    let (kent, essex) = (force("kent"), force("essex"));
    // A force onboarded before the follower starts is in its first value.
    assert!(
        onboarding::add(&b.forces, &kent, OnboardingPhase::Cloud, 2)
            .await
            .unwrap()
    );
    let (tx, mut rx) = tokio::sync::watch::channel(Default::default());
    let follower = tokio::spawn(onboarding::follow(b.forces.clone(), tx));
    // Waits until the followed forces satisfy `want` (what a node's coordinator and triage see).
    async fn until(
        rx: &mut tokio::sync::watch::Receiver<nmc_node::context::Onboarded>,
        what: &str,
        want: impl Fn(&nmc_node::context::Onboarded) -> bool,
    ) {
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| want(v)))
            .await
            .unwrap_or_else(|_| panic!("the follower never showed {what}"))
            .unwrap();
    }
    until(&mut rx, "kent", |f| f.contains_key(&kent)).await;

    assert!(
        !onboarding::add(&b.forces, &kent, OnboardingPhase::CloudAndOnprem, 9)
            .await
            .unwrap()
    );
    assert!(
        onboarding::add(&b.forces, &essex, OnboardingPhase::Cloud, 1)
            .await
            .unwrap()
    );
    onboarding::set_phase(&b.forces, &kent, OnboardingPhase::CloudAndOnprem)
        .await
        .unwrap();
    let list = onboarding::list(&b.forces).await.unwrap();
    assert_eq!(list.keys().collect::<Vec<_>>(), [&essex, &kent]);
    assert_eq!(list[&kent].phase, OnboardingPhase::CloudAndOnprem);
    assert_eq!(list[&kent].weight, 2, "the second add changed nothing");
    assert_eq!(list[&essex].phase, OnboardingPhase::Cloud);
    until(&mut rx, "essex added and kent's new phase", |f| {
        f.get(&kent).map(|r| r.phase) == Some(OnboardingPhase::CloudAndOnprem)
            && f.contains_key(&essex)
    })
    .await;

    onboarding::remove(&b.forces, &essex).await.unwrap();
    assert!(
        onboarding::set_phase(&b.forces, &essex, OnboardingPhase::Cloud)
            .await
            .is_err()
    );
    let list = onboarding::list(&b.forces).await.unwrap();
    assert_eq!(list.keys().collect::<Vec<_>>(), [&kent]);
    assert_eq!(onboarding::get(&b.forces, &essex).await.unwrap(), None);
    until(&mut rx, "essex removed", |f| !f.contains_key(&essex)).await;
    // A removed force can be onboarded again, and the follower sees it.
    assert!(
        onboarding::add(&b.forces, &essex, OnboardingPhase::Cloud, 1)
            .await
            .unwrap()
    );
    until(&mut rx, "essex again", |f| f.contains_key(&essex)).await;
    assert_eq!(
        *rx.borrow().as_ref(),
        onboarding::list(&b.forces).await.unwrap(),
        "the followed forces are the bucket's"
    );
    follower.abort();
}
