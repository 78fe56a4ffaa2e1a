//! Hostile input, end to end through a real NATS and a real node: every kind is dead-lettered
//! with its reason (or, within the limits, processed), the node stays up with bounded memory,
//! and the other force's alerts are exactly those of its events alone. A flood from one force
//! does not hold back another force's alerts. Hostile rule files and packs are refused by the
//! command line and by a running node, which keeps its rules.

mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use harness::*;

/// Peak resident memory a node may reach in these tests (debug build, 256 KiB events in
/// batches): generous, but far below what unbounded parsing or buffering would take.
const MAX_RSS: u64 = 1536 << 20;

/// A successful sign-in of a bystander at kent (no alert of its own), with `extra` merged into
/// its top level.
fn bystander(secs: i64, extra: serde_json::Value) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&clock(secs)).unwrap();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::to_vec(&v).unwrap()
}

/// A bystander whose `time` is the raw JSON `time` (as text, spliced in: it may not be valid).
fn timed(raw_time: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&clock(1)).unwrap();
    v["time"] = "@TIME@".into();
    v["properties"]["createdDateTime"] = "@TIME@".into();
    serde_json::to_string(&v)
        .unwrap()
        .replace("\"@TIME@\"", raw_time)
        .into_bytes()
}

/// Publishes one message with headers; its stream sequence.
async fn publish_with_headers(
    js: &async_nats::jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> u64 {
    js.publish_with_headers(subject.to_owned(), headers, Bytes::from(payload))
        .await
        .expect("publish")
        .await
        .expect("ack")
        .sequence
}

#[tokio::test]
async fn every_hostile_input_kind_is_dead_lettered_and_the_other_force_is_exact() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = vec![rules_dir("identity")];
    let mut node = Node::start(
        &nats,
        &dir.path().join("n"),
        &NodeSpec {
            id: "node-a".into(),
            forces: vec!["kent".into(), "essex".into()],
            triage: true,
            rules: rules.clone(),
            // One arbiter: both forces share a thread, the harshest case for isolation.
            env: vec![
                ("NMC_WORKERS".into(), "1".into()),
                // A year: the test events (2026-11-02) pass, 2001 is too old.
                ("NMC_MAX_PAST_SECS".into(), (365 * 86_400).to_string()),
            ],
        },
    );
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    let kent = "nmc.events.kent.entra_signin";
    let essex = "nmc.events.essex.entra_signin";

    let failure_text = |k: i64| String::from_utf8(failure(k)).unwrap();
    let upn = "\"userPrincipalName\":\"bob.smith@kent.police.uk\"";
    assert!(failure_text(0).contains(upn), "{}", failure_text(0));
    let max = 256 * 1024;
    let deep = |n: usize| {
        let text = String::from_utf8(clock(2)).unwrap();
        format!(
            "{{\"deep\":{}1{},{}",
            "[".repeat(n),
            "]".repeat(n),
            &text[1..]
        )
        .into_bytes()
    };
    let deep_objects = {
        let text = String::from_utf8(clock(2)).unwrap();
        let n = 40_000;
        format!(
            "{{\"deep\":{}1{},{}",
            "{\"a\":".repeat(n),
            "}".repeat(n),
            &text[1..]
        )
        .into_bytes()
    };
    let mut invalid_utf8 = failure(0);
    let at = invalid_utf8.len() - 10;
    invalid_utf8[at] = 0xff;
    let mut huge_headers = HeaderMap::new();
    // JetStream itself refuses headers over 64 KiB: just under that.
    huge_headers.insert("X-Padding", "p".repeat(60 * 1024).as_str());
    huge_headers.insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    let mut many_headers = HeaderMap::new();
    for i in 0..200 {
        many_headers.insert(format!("X-H{i}").as_str(), "v".repeat(100).as_str());
    }

    // Hostile events that must be dead-lettered, with their reasons.
    let bad: Vec<(Vec<u8>, Option<HeaderMap>, &str)> = vec![
        (deep(65), None, "too_deep"),
        (deep(100_000), None, "too_deep"),
        (deep_objects, None, "too_deep"),
        (invalid_utf8, None, "invalid_utf8"),
        (b"\xfe\xff\x00{\x00}".to_vec(), None, "invalid_utf8"),
        // Detection evasion: the rule would see one user, the SIEM another.
        (
            failure_text(0)
                .replace(
                    upn,
                    &format!("\"userPrincipalName\":\"benign@kent.police.uk\",{upn}"),
                )
                .into_bytes(),
            None,
            "duplicate_key",
        ),
        (
            failure_text(0)
                .replacen("{", "{\"resultType\":\"0\",", 1)
                .into_bytes(),
            None,
            "duplicate_key",
        ),
        (
            String::from_utf8(bystander(3, serde_json::json!({ "n": 0 })))
                .unwrap()
                .replace("\"n\":0", "\"n\":1e400")
                .into_bytes(),
            None,
            "malformed_json",
        ),
        (timed("1e400"), None, "malformed_json"),
        (timed(&"9".repeat(100)), None, "bad_time"),
        (timed("-9223372036854775808"), None, "bad_time"),
        (timed("1.7976931348623157e308"), None, "bad_time"),
        (timed("\"1899-12-31T23:59:59Z\""), None, "bad_time"),
        (timed("\"0001-01-01T00:00:00Z\""), None, "bad_time"),
        (timed("\"-262144-01-01T00:00:00Z\""), None, "bad_time"),
        (timed("\"+262143-12-31T23:59:59Z\""), None, "bad_time"),
        (timed("\"2001-01-01T00:00:00Z\""), None, "past_time"),
        (
            bystander(3, serde_json::json!({ "pad": "x".repeat(max) })),
            None,
            "oversize",
        ),
        (failure(0), Some(huge_headers), "oversize_headers"),
        (failure(0), Some(many_headers), "oversize_headers"),
    ];
    // Hostile but within the limits: processed, no alert of their own.
    let wide: serde_json::Map<String, serde_json::Value> = (0..12_000)
        .map(|i| (format!("k{i}"), serde_json::Value::from(i)))
        .collect();
    let mut odd_trace = HeaderMap::new();
    odd_trace.insert("traceparent", "x".repeat(4000).as_str());
    let tolerated: Vec<(Vec<u8>, Option<HeaderMap>)> = vec![
        (
            bystander(3, serde_json::json!({ "pad": "x".repeat(max - 2000) })),
            None,
        ),
        (
            bystander(4, serde_json::json!({ "arr": vec![0; 100_000] })),
            None,
        ),
        (bystander(5, serde_json::json!({ "wide": wide })), None),
        (
            bystander(
                6,
                serde_json::json!({ "properties": { "wide": vec!["a"; 50_000] } }),
            ),
            None,
        ),
        (
            String::from_utf8(bystander(7, serde_json::json!({ "n": 0 })))
                .unwrap()
                .replace("\"n\":0", &format!("\"n\":{}", "9".repeat(100)))
                .into_bytes(),
            None,
        ),
        (deep(60), None),
        (bystander(8, serde_json::json!({})), Some(odd_trace)),
    ];
    for (p, _) in &tolerated {
        assert!(p.len() <= max, "{}", p.len());
    }

    // essex: a whole scenario with a brute force, a spray and legacy sign-ins, interleaved.
    let essex_events = scenario("essex", 300, true, true, 3);
    let mut essex_published = Vec::new();
    let mut chunks = essex_events.chunks(essex_events.len() / (bad.len() + 1) + 1);

    // kent: good failures (the brute force must count exactly 10), hostile events between.
    let mut expect_dead: BTreeMap<u64, &str> = BTreeMap::new();
    let mut kent_good: Vec<(u64, String, Vec<u8>)> = Vec::new();
    let mut good = 0;
    for (payload, headers, reason) in bad {
        if let Some(c) = chunks.next() {
            for (s, p) in publish(&js, essex, c).await.into_iter().zip(c) {
                essex_published.push((s, essex.to_owned(), p.clone()));
            }
        }
        let g = failure(good);
        let s = publish(&js, kent, std::slice::from_ref(&g)).await[0];
        kent_good.push((s, kent.to_owned(), g));
        good += 1;
        let seq = match headers {
            Some(h) => publish_with_headers(&js, kent, h, payload).await,
            None => publish(&js, kent, &[payload]).await[0],
        };
        expect_dead.insert(seq, reason);
    }
    for (payload, headers) in tolerated {
        let seq = match headers {
            Some(h) => publish_with_headers(&js, kent, h, payload.clone()).await,
            None => publish(&js, kent, std::slice::from_ref(&payload)).await[0],
        };
        kent_good.push((seq, kent.to_owned(), payload));
    }
    for c in chunks {
        for (s, p) in publish(&js, essex, c).await.into_iter().zip(c) {
            essex_published.push((s, essex.to_owned(), p.clone()));
        }
    }
    assert!(good > 10, "more bad kinds than failures needed");
    // Event time moves past the allowed lateness: kent's failures reach the correlations.
    for (subject, p) in [(kent, clock(900))] {
        let s = publish(&js, subject, std::slice::from_ref(&p)).await[0];
        kent_good.push((s, subject.to_owned(), p));
    }

    let want_essex = expected_alerts(&rules, "essex", &essex_published);
    let want_kent = expected_alerts(&rules, "kent", &kent_good);
    assert!(want_essex.len() >= 3, "{want_essex:#?}");
    assert!(
        want_kent.iter().any(|a| a.rule.kind == "event_count"),
        "{want_kent:#?}"
    );

    let dlq = wait_for(
        &js,
        "NMC_DLQ",
        "nmc.dlq.>",
        expect_dead.len(),
        Duration::from_secs(120),
        Duration::from_secs(1),
    )
    .await;
    let mut got: BTreeMap<u64, String> = BTreeMap::new();
    for d in &dlq {
        let seq: u64 = d.header("Nmc-Seq").unwrap().parse().unwrap();
        let error = d.header("Nmc-Error").unwrap_or_default();
        assert!(
            !error.is_empty() && error.len() < 1024,
            "error of {seq}: {error}"
        );
        assert_eq!(d.subject, "nmc.dlq.kent");
        // The dead letter carries nmc's headers, never the hostile ones.
        let header_bytes: usize = d.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            header_bytes < 2048,
            "dead letter {seq} headers: {header_bytes} bytes"
        );
        assert!(d.header("X-Padding").is_none() && d.header("X-H0").is_none());
        got.insert(seq, d.header("Nmc-Reason").unwrap().to_owned());
    }
    let want: BTreeMap<u64, String> = expect_dead
        .iter()
        .map(|(s, r)| (*s, r.to_string()))
        .collect();
    assert_eq!(
        got, want,
        "every hostile event dead-lettered once, with its reason"
    );
    // Errors say what the limit is.
    let error_of = |reason: &str| {
        dlq.iter()
            .find(|d| d.header("Nmc-Reason") == Some(reason))
            .and_then(|d| d.header("Nmc-Error"))
            .unwrap()
            .to_owned()
    };
    assert!(
        error_of("too_deep").contains("64 levels"),
        "{}",
        error_of("too_deep")
    );
    assert!(
        error_of("duplicate_key").contains("userPrincipalName"),
        "{}",
        error_of("duplicate_key")
    );
    assert!(
        error_of("oversize_headers").contains("8192"),
        "{}",
        error_of("oversize_headers")
    );
    assert!(
        error_of("invalid_utf8").contains("UTF-8"),
        "{}",
        error_of("invalid_utf8")
    );

    for (force, want) in [("essex", &want_essex), ("kent", &want_kent)] {
        let got = wait_for(
            &js,
            "NMC_ALERTS",
            &format!("nmc.alerts.{force}.>"),
            want.len(),
            Duration::from_secs(120),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(&alerts(&got), want, "alerts of {force}");
    }
    let brute = want_kent
        .iter()
        .find(|a| a.rule.kind == "event_count")
        .unwrap();
    assert_eq!(brute.count, 10, "exactly the good failures counted");
    assert!(node.alive(), "node survived");
    let (code, _) = http_get(&format!("{}/healthz", node.http)).await.unwrap();
    assert_eq!(code, 200);
    let rss = node.peak_rss();
    assert!(rss > 0 && rss < MAX_RSS, "peak RSS {} MiB", rss >> 20);
    eprintln!("peak RSS of the node: {} MiB", rss >> 20);
}

#[tokio::test]
async fn a_flooded_force_does_not_hold_back_another_forces_alerts() {
    const FLOOD: usize = 200_000;
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = vec![rules_dir("identity")];
    let js = nats.js().await;
    // The streams as a node makes them, so that the backlog is in place before the node starts.
    nmc_node::bus::ensure_streams(&js, &nmc_node::config::Config::default())
        .await
        .unwrap();
    let essex = "nmc.events.essex.entra_signin";
    let flood: Vec<Vec<u8>> = (0..FLOOD)
        .map(|i| {
            let v = nmc_node::synth::signin(
                T0 + i as i64 * 10,
                i as u64,
                "reader@essex.police.uk",
                "81.2.69.160",
                "Office 365 Exchange Online",
                "Browser",
                0,
                ("London", 51.51, -0.13),
                "GB",
            );
            serde_json::to_vec(&v).unwrap()
        })
        .collect();
    let mut last_flood = 0;
    for chunk in flood.chunks(2_000) {
        last_flood = *publish(&js, essex, chunk).await.last().unwrap();
    }
    drop(flood);

    let mut node = Node::start(
        &nats,
        &dir.path().join("n"),
        &NodeSpec {
            id: "node-a".into(),
            forces: vec!["essex".into(), "kent".into()],
            triage: true,
            rules: rules.clone(),
            // One arbiter: both forces (and triage) share one thread.
            env: vec![("NMC_WORKERS".into(), "1".into())],
        },
    );
    let spawned = Instant::now();
    // essex is busy with its backlog...
    while live_cursor(&node, "essex").await < 20_000 {
        assert!(
            spawned.elapsed() < Duration::from_secs(300),
            "essex never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... when kent's brute force arrives.
    let kent = "nmc.events.kent.entra_signin";
    let burst = |user: &str, from: i64| -> Vec<Vec<u8>> {
        let mut events: Vec<Vec<u8>> = (0..10)
            .map(|k| {
                let v = nmc_node::synth::signin(
                    from + k * 5_000,
                    k as u64,
                    user,
                    "45.155.205.99",
                    "Azure Portal",
                    "Browser",
                    50126,
                    ("Amsterdam", 52.37, 4.89),
                    "NL",
                );
                serde_json::to_vec(&v).unwrap()
            })
            .collect();
        // Event time past the allowed lateness: the brute force is complete.
        events.push(clock((from - T0) / 1000 + 600));
        events
    };
    let mut kent_published = Vec::new();
    let mut latency = Vec::new();
    let mut essex_at_alert = 0;
    for (round, (user, from)) in [
        ("bob.smith@kent.police.uk", T0),
        ("amy.lee@kent.police.uk", T0 + 3_600_000),
    ]
    .into_iter()
    .enumerate()
    {
        if round == 1 {
            // The same again once the flood has drained: kent's latency without it.
            while live_cursor(&node, "essex").await < last_flood {
                assert!(
                    spawned.elapsed() < Duration::from_secs(600),
                    "the flood did not drain in 600 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!(
                "fairness: the flood of {FLOOD} drained {:?} after the node's start",
                spawned.elapsed()
            );
        }
        let events = burst(user, from);
        let sent = Instant::now();
        let seqs = publish(&js, kent, &events).await;
        kent_published.extend(
            seqs.into_iter()
                .zip(events)
                .map(|(s, p)| (s, kent.to_owned(), p)),
        );
        loop {
            let got = count(&js, "NMC_ALERTS", "nmc.alerts.kent.>").await;
            if got > round {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(30),
                "kent's alert did not arrive within 30 s (round {round})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latency.push(sent.elapsed());
        if round == 0 {
            essex_at_alert = live_cursor(&node, "essex").await;
        }
    }
    eprintln!(
        "fairness: kent's alert {:?} after its events with essex's flood draining (essex at {essex_at_alert} of {last_flood}), {:?} without",
        latency[0], latency[1]
    );
    assert!(
        essex_at_alert < last_flood,
        "the flood was still draining when kent's alert arrived ({essex_at_alert} of {last_flood})"
    );
    let got = read_all(&js, "NMC_ALERTS", "nmc.alerts.kent.>").await;
    assert_eq!(
        alerts(&got),
        expected_alerts(&rules, "kent", &kent_published)
    );
    assert_eq!(got.len(), 2);
    assert!(node.alive());
    let rss = node.peak_rss();
    assert!(rss > 0 && rss < MAX_RSS, "peak RSS {} MiB", rss >> 20);
    eprintln!("peak RSS of the node: {} MiB", rss >> 20);
}

/// A force's cursor as its node reports it now (`/api/v1/status`; 0 before it runs the force).
async fn live_cursor(node: &Node, force: &str) -> u64 {
    let Ok((200, body)) = http_get(&format!("{}/api/v1/status", node.http)).await else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["forces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["force"] == force)
        .and_then(|f| f["cursor"].as_u64())
        .unwrap_or(0)
}

/// A rule folder with one file.
fn rule_dir(parent: &std::path::Path, name: &str, file: &str, text: &str) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(file), text).unwrap();
    d
}

const RULE_HEAD: &str = "title: hostile\nid: 0f0e0d0c-0000-4000-8000-00000000beef\nlogsource: {product: azure, service: signinlogs}\nlevel: high\n";

#[tokio::test]
async fn hostile_rules_are_refused_and_a_node_keeps_its_pack() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let nmc = |args: &[&str]| {
        std::process::Command::new(nmc_bin())
            .args(args)
            .env("NMC_NATS_URL", &nats.url)
            .output()
            .expect("running nmc")
    };
    let regex = rule_dir(
        dir.path(),
        "regex",
        "regex.yml",
        &format!(
            "{RULE_HEAD}detection:\n  s:\n    userPrincipalName|re: '(a{{1000}}){{1000}}'\n  condition: s\n"
        ),
    );
    let mut bomb_text =
        String::from("x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        bomb_text.push_str(&format!(
            "x{i}: &x{i} [{}]\n",
            vec![format!("*x{}", i - 1); 10].join(", ")
        ));
    }
    let bomb = rule_dir(
        dir.path(),
        "bomb",
        "bomb.yml",
        &format!("{RULE_HEAD}{bomb_text}detection:\n  s:\n    a: b\n  condition: s\n"),
    );
    let list: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
    let quad = rule_dir(
        dir.path(),
        "quad",
        "quad.yml",
        &format!(
            "{RULE_HEAD}x: &x [{}]\ny: [{}]\ndetection:\n  s:\n    a: b\n  condition: s\n",
            list.join(", "),
            vec!["*x"; 2000].join(", ")
        ),
    );
    let huge = rule_dir(
        dir.path(),
        "huge",
        "huge.yml",
        &format!(
            "{RULE_HEAD}detection:\n  s:\n    a: b\n  condition: s\n# {}\n",
            "x".repeat(5 << 20)
        ),
    );
    let cases = [
        (
            &regex,
            vec![
                "regex.yml",
                "0f0e0d0c-0000-4000-8000-00000000beef",
                "4194304 bytes",
            ],
        ),
        (&bomb, vec!["bomb.yml"]),
        (&quad, vec!["quad.yml", "250000 values"]),
        (&huge, vec!["huge.yml", "4194304 bytes"]),
    ];
    for (d, needles) in &cases {
        let started = Instant::now();
        let out = nmc(&["rules", "check", d.to_str().unwrap()]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "rules check {d:?}: {text}");
        for n in needles {
            assert!(
                text.contains(n),
                "rules check {d:?} does not say {n}: {text}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    // A node running the identity rules.
    let mut node = Node::start(
        &nats,
        &dir.path().join("n"),
        &NodeSpec {
            id: "node-a".into(),
            forces: vec!["kent".into()],
            triage: true,
            rules: vec![rules_dir("identity")],
            ..Default::default()
        },
    );
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while js.get_key_value("NMC_RULES").await.is_err() {
        assert!(Instant::now() < deadline, "no rule buckets");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (d, needles) in &cases {
        let out = nmc(&["rules", "push", d.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "rules push {d:?} refused: {text}");
        assert!(text.contains(needles[0]), "rules push {d:?}: {text}");
    }
    // Packs stored by something other than `nmc rules push`: the node refuses each.
    let packs = nmc_node::rules::pack::ensure(&js, 1).await.unwrap();
    for (d, _) in &cases {
        let name = format!("{}.yml", d.file_name().unwrap().to_str().unwrap());
        let text = std::fs::read_to_string(d.join(&name)).unwrap();
        let files = nmc_node::rules::pack::PackFiles {
            files: vec![(name, text)],
        };
        let version = nmc_node::rules::pack::push(&packs, &files, 0, "test")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !node
            .log()
            .lines()
            .any(|l| l.contains("rule pack refused") && l.contains(&format!("version={version}")))
        {
            assert!(Instant::now() < deadline, "node did not refuse {version}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // It still runs the rules it started with.
    let kent = "nmc.events.kent.entra_signin";
    let mut events: Vec<Vec<u8>> = (0..10).map(failure).collect();
    events.push(clock(600));
    publish(&js, kent, &events).await;
    let got = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.kent.>",
        1,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["rule_pack"], "local");
    assert!(node.alive());
    let rss = node.peak_rss();
    assert!(rss > 0 && rss < MAX_RSS, "peak RSS {} MiB", rss >> 20);
}
