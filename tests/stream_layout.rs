//! The events streams: one per force of the registry, created by the first node with the
//! force's subjects; a node refuses the single `NMC_EVENTS` stream of earlier builds until it is
//! gone; a force whose state has applied past the end of its stream, or was built from an
//! earlier incarnation of it, reads nothing.

mod harness;

use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use harness::*;

fn kent_node(id: &str) -> NodeSpec {
    NodeSpec {
        id: id.into(),
        forces: vec!["kent".into()],
        triage: false,
        rules: vec![rules_dir("identity")],
        env: vec![],
    }
}

/// Kent's signed-in subject.
const KENT: &str = "nmc.events.kent.entra_signin";

/// Runs a node over ten wrong passwords and a clock event of kent until their alert is out,
/// then stops it gracefully: the state in `data` has committed cursor 11 (and, since it records
/// one, the time the stream stored that event).
async fn kent_state_at_11(
    nats: &Nats,
    js: &async_nats::jetstream::Context,
    data: &std::path::Path,
) {
    let mut node = kent_running_at_11(nats, js, data).await;
    node.signal("TERM");
    node.wait_exit(Duration::from_secs(30))
        .await
        .expect("the node stops");
}

/// Waits (30 s at most) for `n` alerts of kent; returns those there are.
async fn kent_alerts(js: &async_nats::jetstream::Context, n: usize) -> Vec<Received> {
    wait_for(
        js,
        "NMC_ALERTS",
        "nmc.alerts.kent.>",
        n,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .await
}

/// Thirty wrong passwords after the state's window and a clock event: a second alert of kent
/// when read from cursor 11, whichever stream holds them.
fn burst() -> Vec<Vec<u8>> {
    (200..230).map(failure).chain([clock(1800)]).collect()
}

/// After `wait`, nothing of a refused stream was applied over kent's state: no second alert,
/// no dead letter, and `node` said why.
async fn nothing_of_the_new_stream_applied(
    js: &async_nats::jetstream::Context,
    node: &Node,
    wait: Duration,
) {
    tokio::time::sleep(wait).await;
    assert_eq!(count(js, "NMC_ALERTS", "nmc.alerts.kent.>").await, 1);
    assert_eq!(count(js, "NMC_DLQ", "nmc.dlq.kent").await, 0);
    assert!(
        node.log()
            .contains("the stream was deleted and created again"),
        "{}",
        node.log()
    );
}

#[tokio::test]
async fn every_registered_force_gets_a_stream_once_the_single_stream_of_old_is_gone() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    js.create_stream(stream::Config {
        name: "NMC_EVENTS".into(),
        subjects: vec!["nmc.events.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&nats, &dir.path().join("a"), &kent_node("node-a"));

    // It waits, unready, saying what to do, and creates no stream of its own.
    node.wait_log("Moving to a stream per force").await;
    wait_ready(&node, false, Duration::from_secs(10)).await;
    assert!(js.get_stream("NMC_EVENTS_kent").await.is_err());

    // Once it is gone, every force of the registry gets its stream and the node is ready.
    js.delete_stream("NMC_EVENTS").await.unwrap();
    wait_ready(&node, true, Duration::from_secs(60)).await;
    for force in nmc_shared::force::FORCES {
        let name = format!("NMC_EVENTS_{}", force.id);
        let mut s = js
            .get_stream(&name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            s.info().await.unwrap().config.subjects,
            [
                format!("nmc.events.{}", force.id),
                format!("nmc.events.{}.>", force.id)
            ]
        );
    }
    // A force's events are in its stream only.
    let seqs = publish(&js, "nmc.events.kent.entra_signin", &[failure(0)]).await;
    assert_eq!(seqs, [1]);
    assert_eq!(count(&js, "NMC_EVENTS_kent", ">").await, 1);
    assert_eq!(count(&js, "NMC_EVENTS_essex", ">").await, 0);
}

#[tokio::test]
async fn a_force_whose_state_is_past_the_end_of_its_stream_reads_nothing() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    // A graceful stop commits the cursor (11).
    kent_state_at_11(&nats, &js, &data).await;

    // The stream is deleted and created again (by the next node): sequences start over.
    js.delete_stream("NMC_EVENTS_kent").await.unwrap();
    let node = Node::start(&nats, &data, &kent_node("node-a"));
    node.wait_log("ends at 0").await;
    publish(&js, KENT, &(0..4).map(failure).collect::<Vec<_>>()).await;
    publish(&js, KENT, &[clock(1200)]).await;
    node.wait_log("ends at 5").await;
    nothing_of_the_new_stream_applied(&js, &node, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_force_whose_stream_was_created_again_and_grew_past_its_state_reads_nothing() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    // A graceful stop commits the cursor (11) and the time its event was stored.
    kent_state_at_11(&nats, &js, &data).await;

    // The stream is deleted and created again, and collectors publish past the old cursor
    // before any node opens it: a burst that would raise a second alert if it were read.
    kent_stream_created_again_with_the_burst(&js).await;

    let node = Node::start(&nats, &data, &kent_node("node-a"));
    node.wait_log("event 11 of its stream NMC_EVENTS_kent was stored at")
        .await;
    nothing_of_the_new_stream_applied(&js, &node, Duration::from_secs(3)).await;
}

/// Waits (30 s at most) until `node` has committed kent's state up to `seq`.
async fn wait_kent_committed(node: &Node, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, body)) = http_get(&format!("{}/api/v1/status", node.http)).await
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            && v["forces"][0]["committed"].as_u64() >= Some(seq)
        {
            return;
        }
        assert!(Instant::now() < deadline, "kent never committed {seq}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts node-a on `data` over ten wrong passwords and a clock event of kent, and returns it
/// running once their alert is out and cursor 11 is committed.
async fn kent_running_at_11(
    nats: &Nats,
    js: &async_nats::jetstream::Context,
    data: &std::path::Path,
) -> Node {
    let node = Node::start(nats, data, &kent_node("node-a"));
    wait_stream(js, "NMC_DLQ").await;
    publish(js, KENT, &(0..10).map(failure).collect::<Vec<_>>()).await;
    publish(js, KENT, &[clock(600)]).await;
    kent_alerts(js, 1).await;
    wait_kent_committed(&node, 11).await;
    node
}

#[tokio::test]
async fn a_running_force_whose_stream_is_created_again_reads_nothing_of_it() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    let node = kent_running_at_11(&nats, &js, &dir.path().join("a")).await;

    // Under the running reader, the stream is deleted and created again and collectors publish
    // past the cursor: the reader's consumer goes with the stream and is created again on the
    // new one from the cursor, where the burst would raise a second alert if it were read.
    kent_stream_created_again_with_the_burst(&js).await;

    node.wait_log("the reader's consumer was created again")
        .await;
    node.wait_log("event 11 of its stream NMC_EVENTS_kent was stored at")
        .await;
    nothing_of_the_new_stream_applied(&js, &node, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_force_restarted_on_the_same_stream_goes_on_from_its_cursor() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    kent_state_at_11(&nats, &js, &data).await;

    // Same stream, more events while the node was down: the event at the cursor is the one
    // the state applied, so the node reads on and raises the burst's alert (the same burst as
    // in the test above: read from the cursor of a stream created again, it would alert too).
    publish(&js, KENT, &burst()).await;
    let node = Node::start(&nats, &data, &kent_node("node-a"));
    assert!(
        kent_alerts(&js, 2).await.len() >= 2,
        "the burst raises its alert: {}",
        node.log()
    );
    let log = node.log();
    assert!(
        !log.contains("deleted and created again") && !log.contains("to check the stream"),
        "{log}"
    );
}

/// Runs `nmc forces reset-state kent` (with `--yes` if `yes`); its output.
fn reset_kent(nats: &Nats, yes: bool) -> std::process::Output {
    let mut args = vec!["forces", "reset-state", "kent"];
    if yes {
        args.push("--yes");
    }
    std::process::Command::new(nmc_bin())
        .args(args)
        .env("NMC_NATS_URL", &nats.url)
        .output()
        .expect("running nmc")
}

/// Kent's stream deleted and created again with the same configuration: sequences start over.
async fn kent_stream_created_again(js: &async_nats::jetstream::Context) {
    let mut old = js.get_stream("NMC_EVENTS_kent").await.unwrap();
    let config = old.info().await.unwrap().config.clone();
    js.delete_stream("NMC_EVENTS_kent").await.unwrap();
    js.create_stream(config).await.unwrap();
}

/// The stream deleted and created again, with the burst published into it.
async fn kent_stream_created_again_with_the_burst(js: &async_nats::jetstream::Context) {
    kent_stream_created_again(js).await;
    publish(js, KENT, &burst()).await;
}

#[tokio::test]
async fn a_running_force_reset_after_a_refusal_reads_its_new_stream_from_the_start() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    let node = kent_running_at_11(&nats, &js, &dir.path().join("a")).await;
    kent_stream_created_again_with_the_burst(&js).await;
    node.wait_log("event 11 of its stream NMC_EVENTS_kent was stored at")
        .await;

    // Without --yes nothing changes.
    let out = reset_kent(&nats, false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{out:?}"
    );
    nothing_of_the_new_stream_applied(&js, &node, Duration::from_secs(1)).await;

    // With it, the holder discards the state and reads the new stream from its first event:
    // the whole burst, and its alert.
    let out = reset_kent(&nats, true);
    assert!(out.status.success(), "{out:?}");
    assert!(generation_of(&out) > 0);
    node.wait_log("its stream is read from the start").await;
    assert_eq!(kent_alerts(&js, 2).await.len(), 2, "{}", node.log());
    wait_kent_committed(&node, 31).await;
    assert_eq!(count(&js, "NMC_DLQ", "nmc.dlq.kent").await, 0);
}

#[tokio::test]
async fn state_and_checkpoint_from_before_a_reset_are_not_restored() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    // A graceful stop commits cursor 11 and checkpoints it for the next holder.
    kent_state_at_11(&nats, &js, &data).await;
    wait_checkpointed(&js, &["kent"], Duration::from_secs(10)).await;
    kent_stream_created_again_with_the_burst(&js).await;

    // Reset while no node runs: the next holder finds a local state and a checkpoint at 11,
    // both of the earlier generation, and takes neither.
    assert!(reset_kent(&nats, true).status.success());
    let node = Node::start(&nats, &data, &kent_node("node-a"));
    node.wait_log("discarding the local state of an earlier generation")
        .await;
    node.wait_log("checkpoint of an earlier state generation not restored")
        .await;
    assert_eq!(kent_alerts(&js, 2).await.len(), 2, "{}", node.log());
    wait_kent_committed(&node, 31).await;
    let log = node.log();
    assert!(log.contains(r#"restored="empty""#), "{log}");
    assert!(!log.contains("deleted and created again"), "{log}");
}

#[tokio::test]
async fn a_healthy_force_reset_rebuilds_its_state_from_its_stream() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&nats, &dir.path().join("a"), &kent_node("node-a"));
    wait_stream(&js, "NMC_DLQ").await;
    // Six wrong passwords: four short of the brute force.
    publish(&js, KENT, &(0..6).map(failure).collect::<Vec<_>>()).await;
    wait_kent_committed(&node, 6).await;
    assert_eq!(count(&js, "NMC_ALERTS", "nmc.alerts.kent.>").await, 0);

    // The running worker reloads, discards its state and reads the same stream again from its
    // first event: four more wrong passwords then make ten only if the six were read again.
    let out = reset_kent(&nats, true);
    assert!(out.status.success(), "{out:?}");
    node.wait_log("the force's state was reset: reloading the force")
        .await;
    node.wait_log("its stream is read from the start").await;
    publish(&js, KENT, &(6..10).map(failure).collect::<Vec<_>>()).await;
    publish(&js, KENT, &[clock(600)]).await;
    assert_eq!(kent_alerts(&js, 1).await.len(), 1, "{}", node.log());
    wait_kent_committed(&node, 11).await;

    // A second reset gets a greater generation, whatever the first was.
    let first = generation_of(&out);
    let second = generation_of(&reset_kent(&nats, true));
    assert!(second > first, "{first} then {second}");
}

/// The generation `nmc forces reset-state` printed.
fn generation_of(out: &std::process::Output) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("state generation ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("no generation in {text:?}"))
}

#[tokio::test]
async fn a_node_taking_a_force_over_from_its_checkpoint_checks_the_stream_too() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    // node-a's graceful stop checkpoints cursor 11 and the time its event was stored.
    kent_state_at_11(&nats, &js, &dir.path().join("a")).await;
    wait_checkpointed(&js, &["kent"], Duration::from_secs(10)).await;
    kent_stream_created_again_with_the_burst(&js).await;

    // node-b has no state of its own: it restores the checkpoint, and checks the stream
    // against the checkpoint's time as it would against its own commits.
    let node = Node::start(&nats, &dir.path().join("b"), &kent_node("node-b"));
    node.wait_log("event 11 of its stream NMC_EVENTS_kent was stored at")
        .await;
    nothing_of_the_new_stream_applied(&js, &node, Duration::from_secs(2)).await;
    let log = node.log();
    assert!(log.contains(r#"restored="checkpoint""#), "{log}");
}

#[tokio::test]
async fn a_running_force_whose_stream_is_created_again_short_of_its_cursor_is_refused() {
    let nats = Nats::start().await;
    let js = nats.js().await;
    let dir = tempfile::tempdir().unwrap();
    let node = kent_running_at_11(&nats, &js, &dir.path().join("a")).await;

    // The new stream stays short of the cursor: the reader's consumer, back on it after
    // sequence 11, would wait for ever. The caught-up force looks at its stream and refuses it.
    kent_stream_created_again(&js).await;
    publish(&js, KENT, &(0..4).map(failure).collect::<Vec<_>>()).await;
    node.wait_log("the stream was created again since the reader opened")
        .await;
    node.wait_log("ends at 4").await;
    nothing_of_the_new_stream_applied(&js, &node, Duration::from_secs(1)).await;
}
