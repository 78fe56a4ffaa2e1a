//! A node observed as the SOC observes it: `/healthz` and `/readyz` through NATS outages and
//! shutdown; a real Prometheus scraping real nodes, evaluating every expression of the
//! dashboards and alerting rules, and the failure alerts firing for real; `/metrics` bounded
//! with 43 forces and the SigmaHQ rules loaded.

mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The check named `name` in a `/readyz` document.
fn check(v: &Value, name: &str) -> bool {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))["ok"]
        .as_bool()
        .unwrap()
}

#[tokio::test]
async fn readiness_follows_nats_and_shutdown_while_liveness_stays() {
    let mut nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = NodeSpec {
        id: "node-a".into(),
        forces: vec!["kent".into(), "essex".into()],
        rules: vec![rules_dir("identity")],
        ..Default::default()
    };
    let mut node = Node::start(&nats, &dir.path().join("a"), &spec);
    let ready = wait_ready(&node, true, Duration::from_secs(30)).await;
    assert_eq!(ready["ready"], true, "{ready}");
    let (code, body) = http_get(&format!("{}/healthz", node.http)).await.unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));
    // Ready says the node serves and has joined, not that it holds its forces yet: their
    // leases follow within the coordinator's first ticks (ready came first in a CI run).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, status) = http_json(&format!("{}/api/v1/status", node.http)).await;
        assert_eq!(code, 200);
        assert_eq!(status["node"], "node-a");
        let held: BTreeSet<String> = status["forces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["force"].as_str().unwrap().to_owned())
            .collect();
        if held == BTreeSet::from(["essex".to_owned(), "kent".to_owned()]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not take its forces: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // NATS goes away: unready (the connection check says why), alive.
    nats.kill();
    let down = wait_ready(&node, false, Duration::from_secs(30)).await;
    assert!(!check(&down, "nats"), "{down}");
    let (code, _) = http_get(&format!("{}/healthz", node.http)).await.unwrap();
    assert_eq!(code, 200, "liveness does not depend on NATS");
    nats.restart(Duration::from_millis(200)).await;
    let back = wait_ready(&node, true, Duration::from_secs(60)).await;
    assert!(check(&back, "nats") && check(&back, "member"), "{back}");

    // SIGTERM: unready while the node hands its forces off (NATS frozen, so the hand-off waits
    // and the draining state can be seen), then it exits.
    nats.signal("STOP");
    node.signal("TERM");
    // Unready may first come from another check (NATS is frozen: a heartbeat can miss the node
    // TTL first, on a loaded machine); the draining check must follow within the wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    let draining = loop {
        let s = wait_ready(&node, false, Duration::from_secs(10)).await;
        if !check(&s, "not_draining") || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!check(&draining, "not_draining"), "{draining}");
    let (code, _) = http_get(&format!("{}/healthz", node.http)).await.unwrap();
    assert_eq!(code, 200, "alive while draining");
    nats.signal("CONT");
    assert!(
        node.wait_exit(Duration::from_secs(40)).await.is_some(),
        "the node exits after its hand-offs"
    );
}

/// Every PromQL expression of the dashboards and the alerting rules, with Grafana's variables
/// substituted (`deploy/observability/promql.py`).
fn expressions(force: &str) -> Vec<Value> {
    let out = std::process::Command::new("python3")
        .arg(repo("deploy/observability/promql.py"))
        .args(["--force", force])
        .output()
        .expect("running promql.py");
    assert!(
        out.status.success(),
        "promql.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until every alert of `names` is firing in `prom`; panics after `timeout`.
async fn wait_firing(prom: &Prometheus, names: &[&str], timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let firing = prom.alerts("firing").await;
        let have: BTreeSet<&str> = firing
            .iter()
            .filter_map(|a| a["labels"]["alertname"].as_str())
            .collect();
        if names.iter().all(|n| have.contains(n)) {
            return firing;
        }
        assert!(
            Instant::now() < deadline,
            "alerts {names:?} not all firing within {timeout:?}; firing: {have:?}; pending: {:?}",
            prom.alerts("pending").await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn prometheus_evaluates_the_dashboards_and_the_alerts_fire_for_real() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let forces = ["kent", "essex", "cumbria", "surrey"];
    let spec = |id: &str| NodeSpec {
        id: id.into(),
        forces: forces.iter().map(|f| f.to_string()).collect(),
        triage: true,
        rules: vec![rules_dir("identity")],
        env: vec![
            // Feeds count as silent after 5 s; a dead node's leases stay held for two minutes,
            // so that its forces stay without an owner long enough to alert.
            ("NMC_FEED_SILENCE_SECS".into(), "5".into()),
            ("NMC_LEASE_TTL_SECS".into(), "120".into()),
            ("NMC_CHECKPOINT_INTERVAL_SECS".into(), "2".into()),
        ],
    };
    let ids = ["node-a", "node-b"];
    let mut a = Node::start(&nats, &dir.path().join("a"), &spec(ids[0]));
    let b = Node::start(&nats, &dir.path().join("b"), &spec(ids[1]));
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    let owners = desired_owners(&forces, &ids);
    wait_owners(&js, &owners, Duration::from_secs(60)).await;
    let host = |n: &Node| n.http.trim_start_matches("http://").to_owned();
    let prom = Prometheus::start(
        &[host(&a), host(&b)],
        &[repo("deploy/observability/prometheus/alerts.yml")],
    )
    .await;

    // Events that raise alerts in every force, a dead letter, an event of a force nobody
    // onboarded (triage).
    for f in forces {
        let lines = scenario(f, 200, true, true, 2);
        publish(&js, &format!("nmc.events.{f}.entra_signin"), &lines).await;
    }
    publish(
        &js,
        "nmc.events.kent.entra_signin",
        &[b"{not json".to_vec()],
    )
    .await;
    publish(&js, "nmc.events.essex.aws_cloudtrail", &[b"[]".to_vec()]).await;
    publish(&js, "nmc.events.gwent.entra_signin", &[failure(1)]).await;
    let want = 4 * 4 + 2;
    wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.>",
        want,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    // Several scrapes of nodes that have processed everything and checkpointed (rates need two
    // samples; Prometheus starts scraping a few seconds after it is ready).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scrapes = prom
            .query("min(count_over_time(up[1m])) >= 4")
            .await
            .unwrap_or_default();
        if !scrapes.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the nodes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let exprs = expressions("kent");
    assert!(exprs.len() > 40, "{} expressions", exprs.len());
    let mut empty = Vec::new();
    for e in &exprs {
        let expr = e["expr"].as_str().unwrap();
        let result = prom
            .query(expr)
            .await
            .unwrap_or_else(|err| panic!("{}: does not evaluate: {err}", e["source"]));
        let must_return = matches!(e["kind"].as_str(), Some("panel" | "variable"));
        if must_return && result.is_empty() {
            empty.push(format!("{}: {expr}", e["source"]));
        }
    }
    assert!(
        empty.is_empty(),
        "expressions that return no series while nodes process events:\n{}",
        empty.join("\n")
    );

    // Failures, for real: node a dies holding its leases, and the feeds stop.
    let lost: Vec<&str> = forces
        .iter()
        .copied()
        .filter(|f| owners[*f] == ids[0])
        .collect();
    assert!(!lost.is_empty(), "node a owns a force: {owners:?}");
    a.kill9();
    let firing = wait_firing(
        &prom,
        &["NmcForceWithoutOwner", "NmcFeedSilent"],
        Duration::from_secs(150),
    )
    .await;
    let unowned: BTreeSet<&str> = firing
        .iter()
        .filter(|f| f["labels"]["alertname"] == "NmcForceWithoutOwner")
        .filter_map(|f| f["labels"]["force"].as_str())
        .collect();
    assert_eq!(
        unowned,
        lost.iter().copied().collect(),
        "the dead node's forces"
    );
    assert!(
        firing
            .iter()
            .any(|f| f["labels"]["alertname"] == "NmcFeedSilent"
                && f["labels"]["source"] == "entra_signin"
                && owners[f["labels"]["force"].as_str().unwrap()] == ids[1]),
        "a feed of the surviving node's forces is silent: {firing:?}"
    );
    drop(b);
}

#[tokio::test]
async fn metrics_stay_bounded_with_43_forces_and_the_sigmahq_rules() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let forces: Vec<String> = nmc_shared::force::FORCES
        .iter()
        .take(43)
        .map(|f| f.id.to_owned())
        .collect();
    let spec = NodeSpec {
        id: "node-a".into(),
        forces: forces.clone(),
        triage: true,
        rules: [
            sigma_rules(),
            vec![rules_dir("identity"), rules_dir("cloud")],
        ]
        .concat(),
        env: vec![(
            "NMC_CONFIG".into(),
            placeholders_config(dir.path()).display().to_string(),
        )],
    };
    let node = Node::start(&nats, &dir.path().join("a"), &spec);
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    wait_ready(&node, true, Duration::from_secs(60)).await;
    // Every force gets sign-ins with attacks, CloudTrail records, bad input and late events.
    let cloudtrail: Vec<Vec<u8>> = std::fs::read_to_string(repo(
        "tests/data/stratus/aws.persistence.iam-create-admin-user.json",
    ))
    .ok()
    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    .and_then(|v| v.as_array().cloned())
    .unwrap_or_default()
    .iter()
    .map(|r| serde_json::to_vec(r).unwrap())
    .collect();
    assert!(!cloudtrail.is_empty());
    for f in &forces {
        publish(
            &js,
            &format!("nmc.events.{f}.entra_signin"),
            &scenario(f, 20, true, true, 1),
        )
        .await;
        publish(&js, &format!("nmc.events.{f}.aws_cloudtrail"), &cloudtrail).await;
        publish(
            &js,
            &format!("nmc.events.{f}.entra_signin"),
            &[b"{not json".to_vec(), b"[1]".to_vec(), clock(1)],
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let (series, text) = loop {
        let (code, text) = http_get(&format!("{}/metrics", node.http)).await.unwrap();
        assert_eq!(code, 200);
        let applied = text
            .lines()
            .filter(|l| l.starts_with("nmc_events_applied_total{"))
            .count();
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        if applied >= 2 * forces.len() {
            break (series, text);
        }
        assert!(
            Instant::now() < deadline,
            "only {applied} applied series: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("/metrics with 43 forces: {series} series");
    assert!(series < 20_000, "{series} series");
    for name in [
        "nmc_events_received_total",
        "nmc_events_dead_lettered_total",
        "nmc_alerts_raised_total",
        "nmc_alerts_rule_total",
        "nmc_force_lag",
        "nmc_feed_last_ingest_time_seconds",
        "nmc_batch_duration_seconds_bucket",
        "nmc_rules_loaded",
    ] {
        assert!(text.contains(&format!("\n{name}{{")), "{name} missing");
    }
    let forces_seen: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("nmc_force_owned{"))
        .filter_map(|l| l.split("force=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(forces_seen.len(), 43);
}

/// A node configuration file with the example placeholder values (the SigmaHQ rules that use
/// `expand` need them).
fn placeholders_config(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(repo("deploy/placeholders.example.toml")).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(&file, format!("[placeholders]\n{example}")).unwrap();
    file
}

/// The SigmaHQ rules: the whole corpus when it is on this machine (`$NMC_SIGMA_DIR`, or the
/// workplace's datasets), else the regression subset kept in the repository.
fn sigma_rules() -> Vec<PathBuf> {
    let root = std::env::var("NMC_SIGMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo("../shared/datasets/sigma"));
    let whole: Vec<PathBuf> = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
        .collect();
    if whole.is_empty() {
        eprintln!(
            "SigmaHQ corpus not found at {}: the repository's subset",
            root.display()
        );
        vec![repo("tests/data/sigma/rules")]
    } else {
        whole
    }
}

/// The tests' OTLP receiver (`tests/otlp_receiver.py`: HTTP/protobuf and gRPC, decoded with the
/// official protobuf definitions), writing every request it gets as a JSON line.
struct OtlpReceiver {
    child: std::process::Child,
    out: PathBuf,
    http: u16,
    grpc: u16,
    _dir: tempfile::TempDir,
}

impl OtlpReceiver {
    fn start() -> OtlpReceiver {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("otlp.jsonl");
        let (http, grpc) = (free_port(), free_port());
        let mut child = std::process::Command::new("python3")
            .arg(repo("tests/otlp_receiver.py"))
            .arg(&out)
            .args([http.to_string(), grpc.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (the venv of .ci/install-tools) on PATH");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the OTLP receiver did not start");
        OtlpReceiver {
            child,
            out,
            http,
            grpc,
            _dir: dir,
        }
    }

    /// Every request received so far for `signal` (`metrics`, `traces`).
    fn requests(&self, signal: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["signal"] == signal)
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of attribute `key` in an OTLP attribute list, as text.
fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    attrs.as_array()?.iter().find(|a| a["key"] == key).map(|a| {
        let v = &a["value"];
        v.get("stringValue")
            .or_else(|| v.get("intValue"))
            .unwrap_or(v)
    })
}

/// Every span of every traces request.
fn spans(requests: &[Value]) -> Vec<Value> {
    requests
        .iter()
        .flat_map(|r| {
            r["body"]["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Metrics and traces over OTLP with `protocol` (`http/protobuf` or `grpc`): the batch span
/// links to the events' `traceparent`, the alert carries the batch span's, `nmc alerts tail`
/// shows its trace id, the JSON logs carry it, and the metrics arrive with their attributes.
async fn otlp_end_to_end(protocol: &str) {
    let receiver = OtlpReceiver::start();
    let port = if protocol == "grpc" {
        receiver.grpc
    } else {
        receiver.http
    };
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = NodeSpec {
        id: "node-otlp".into(),
        forces: vec!["kent".into()],
        rules: vec![rules_dir("identity")],
        env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
            ("OTEL_METRIC_EXPORT_INTERVAL".into(), "1000".into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
            ("OTEL_SERVICE_NAME".into(), "nmc-test".into()),
            ("NMC_LOG_FORMAT".into(), "json".into()),
        ],
        ..Default::default()
    };
    let node = Node::start(&nats, &dir.path().join("n"), &spec);
    let js = nats.js().await;
    wait_stream(&js, "NMC_DLQ").await;
    wait_ready(&node, true, Duration::from_secs(30)).await;

    // Legacy-protocol sign-ins alert at once; a collector traced them, and one payload is bad.
    let event_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let event_span = "00f067aa0ba902b7";
    let mut lines = scenario("kent", 10, false, false, 2);
    lines.push(b"{not json".to_vec());
    for l in lines {
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            "traceparent",
            format!("00-{event_trace}-{event_span}-01").as_str(),
        );
        js.publish_with_headers("nmc.events.kent.entra_signin", h, l.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let alerts = wait_for(
        &js,
        "NMC_ALERTS",
        "nmc.alerts.kent.>",
        2,
        Duration::from_secs(30),
        Duration::ZERO,
    )
    .await;
    let tp = alerts[0]
        .header("traceparent")
        .expect("the alert carries the batch's traceparent")
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    let (trace, span) = (parts[1].to_owned(), parts[2].to_owned());

    // The batch span arrives, linked to the event's context.
    let deadline = Instant::now() + Duration::from_secs(30);
    let batch = loop {
        if let Some(s) = spans(&receiver.requests("traces"))
            .into_iter()
            .find(|s| s["spanId"] == span.as_str())
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no span {span} over OTLP ({protocol})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(batch["traceId"], trace.as_str());
    assert_eq!(batch["name"], "batch");
    assert_eq!(
        attr(&batch["attributes"], "force"),
        Some(&Value::from("kent"))
    );
    assert!(
        batch["links"].as_array().is_some_and(|l| l
            .iter()
            .any(|l| l["traceId"] == event_trace && l["spanId"] == event_span)),
        "the batch span links to the event's traceparent: {batch}"
    );
    assert!(
        receiver
            .requests("traces")
            .iter()
            .all(|r| r["transport"] == if protocol == "grpc" { "grpc" } else { "http" })
    );

    // Metrics, with their attributes and the node's resource.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let requests = receiver.requests("metrics");
        let received = requests.iter().any(|r| {
            r["body"]["resourceMetrics"].as_array().is_some_and(|rms| {
                rms.iter().any(|rm| {
                    attr(&rm["resource"]["attributes"], "service.instance.id")
                        == Some(&Value::from("node-otlp"))
                        && attr(&rm["resource"]["attributes"], "service.name")
                            == Some(&Value::from("nmc-test"))
                        && rm["scopeMetrics"].as_array().is_some_and(|sms| {
                            sms.iter()
                                .flat_map(|sm| {
                                    sm["metrics"].as_array().cloned().unwrap_or_default()
                                })
                                .any(|m| {
                                    m["name"] == "nmc.events.received"
                                        && m["sum"]["dataPoints"].as_array().is_some_and(|dps| {
                                            dps.iter().any(|dp| {
                                                attr(&dp["attributes"], "force")
                                                    == Some(&Value::from("kent"))
                                                    && attr(&dp["attributes"], "source")
                                                        == Some(&Value::from("entra_signin"))
                                            })
                                        })
                                })
                        })
                })
            })
        });
        if received {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no nmc.events.received{{force=kent}} over OTLP ({protocol})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `nmc alerts tail` shows the batch's trace id.
    let out = std::process::Command::new(nmc_bin())
        .args(["alerts", "tail", "--all", "--idle", "1", "--force", "kent"])
        .env("NMC_NATS_URL", &nats.url)
        .output()
        .unwrap();
    let tailed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!tailed.is_empty());
    assert!(
        tailed.iter().any(|a| a["trace_id"] == trace.as_str()),
        "{tailed:?}"
    );

    // JSON logs: every line one object; the dead letter's line names the force and its trace.
    let log = node.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["node"] == "node-otlp" && l["level"].is_string())
    );
    let traced: Vec<String> = spans(&receiver.requests("traces"))
        .iter()
        .filter_map(|s| s["traceId"].as_str().map(str::to_owned))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "dead-lettering event"
            && l["force"] == "kent"
            && l["trace_id"]
                .as_str()
                .is_some_and(|t| traced.iter().any(|x| x == t))),
        "the dead letter's log line carries force and a batch trace id"
    );
}

#[tokio::test]
async fn otlp_over_http_protobuf() {
    otlp_end_to_end("http/protobuf").await;
}

#[tokio::test]
async fn otlp_over_grpc() {
    otlp_end_to_end("grpc").await;
}
