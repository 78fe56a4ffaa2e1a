//! Reaching the forces: alerts raised by real nodes delivered to force contacts by a notify node
//! over a real SMTP server (aiosmtpd, STARTTLS and AUTH) and real HTTP receivers that check
//! nmc's webhook signatures; retries while a channel is down, a notifier killed mid-delivery,
//! escalation through the tiers to the national duty contact, and a burst held to the contact's
//! message limit with digests.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use harness::alerts::{alert, publish_alerts};
use harness::receivers::{Smtp, Webhook};
use harness::*;
use nmc_shared::alert::{Alert, Level};
use serde_json::Value;

const SECRET: &str = "kent-itsm-signing-secret-0123456789";

/// Runs an `nmc` command against `nats`; its output.
fn nmc(nats: &impl NatsUrl, args: &[&str]) -> Output {
    std::process::Command::new(nmc_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NMC_NATS_URL", nats.nats_url())
        .output()
        .unwrap()
}

/// Runs an `nmc` command that must succeed; its standard output.
fn nmc_ok(nats: &impl NatsUrl, args: &[&str]) -> String {
    let out = nmc(nats, args);
    assert!(
        out.status.success(),
        "nmc {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `NMC_*` variables of a notify node.
fn notify_env(
    secrets: &Path,
    smtp: Option<(&Smtp, &str)>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = vec![
        ("NMC_NOTIFY", "true".to_string()),
        ("NMC_NOTIFICATIONS__FROM", "nmc@ncsoc.example".into()),
        (
            "NMC_NOTIFICATIONS__CONSOLE_URL",
            "https://console.ncsoc.example".into(),
        ),
        (
            "NMC_NOTIFICATIONS__SECRETS_DIR",
            secrets.display().to_string(),
        ),
        ("NMC_NOTIFICATIONS__BACKOFF_INITIAL_MS", "1000".into()),
        ("NMC_NOTIFICATIONS__BACKOFF_MAX_MS", "3000".into()),
        ("NMC_NOTIFICATIONS__ATTEMPTS", "100".into()),
        ("NMC_NOTIFICATIONS__ATTEMPT_TIMEOUT_SECS", "5".into()),
        // Digests have a test of their own (a contact's own limit of 10 there).
        ("NMC_NOTIFICATIONS__MAX_PER_MINUTE", "1000".into()),
    ];
    if let Some((s, ca)) = smtp {
        env.extend([
            ("NMC_NOTIFICATIONS__SMTP_HOST", "127.0.0.1".to_string()),
            ("NMC_NOTIFICATIONS__SMTP_PORT", s.port.to_string()),
            ("NMC_NOTIFICATIONS__SMTP_TLS", "starttls".into()),
            ("NMC_NOTIFICATIONS__SMTP_TLS_CA", ca.into()),
            ("NMC_NOTIFICATIONS__SMTP_USER", "nmc".into()),
            ("NMC_NOTIFICATIONS__SMTP_PASSWORD", "smtp-pass-word".into()),
        ]);
    }
    let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Adds kent's contact `name` with a signed webhook to `url` (secret `kent-itsm`) and `extra`
/// options.
fn add_webhook_contact(nats: &Nats, name: &str, url: &str, extra: &[&str]) {
    let mut args = vec![
        "contacts",
        "add",
        "--force",
        "kent",
        "--name",
        name,
        "--webhook",
        url,
        "--webhook-secret",
        "kent-itsm",
    ];
    args.extend_from_slice(extra);
    nmc_ok(nats, &args);
}

/// A directory with the webhook signing secret `kent-itsm`.
fn secrets(dir: &Path) -> std::path::PathBuf {
    let s = dir.join("secrets");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("kent-itsm"), SECRET).unwrap();
    s
}

/// A node that only notifies (no forces of its own to process).
fn notifier(nats: &Nats, dir: &Path, id: &str, env: Vec<(String, String)>) -> Node {
    Node::start(
        nats,
        &dir.join(id),
        &NodeSpec {
            id: id.into(),
            rules: vec![rules_dir("identity")],
            env,
            ..Default::default()
        },
    )
}

/// Waits until the notify buckets exist (a node provisioned them).
async fn wait_provisioned(js: &jetstream::Context) {
    wait_stream(js, "KV_NMC_CONTACTS").await;
    wait_stream(js, "NMC_NOTIFY").await;
}

/// Validates a Teams or Slack body against its schema (tests/data/notify).
fn check_payload(schema: &str, body: &Value, dir: &Path) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let f = dir.join(format!("payload-{n}.json"));
    std::fs::write(&f, serde_json::to_vec(body).unwrap()).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/notify");
    let out = std::process::Command::new("python3")
        .arg(root.join("check_payload.py"))
        .arg(root.join(schema))
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{schema}: {}{}\n{body:#}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_alert_from_real_events_reaches_every_channel_once_minimised_and_signed() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "smtp");
    let (cert, key) = pki.issue("smtp", &["127.0.0.1", "localhost"]);
    let smtp = Smtp::start(dir.path(), Some((&cert, &key)), Some("nmc:smtp-pass-word"));
    let hook = Webhook::start(dir.path(), "itsm", SECRET, 0);
    let chat = Webhook::start(dir.path(), "chat", SECRET, 0);
    let secrets = secrets(dir.path());
    let _node = Node::start(
        &nats,
        &dir.path().join("a"),
        &NodeSpec {
            id: "node-a".into(),
            forces: vec!["kent".into()],
            rules: vec![rules_dir("identity")],
            env: notify_env(&secrets, Some((&smtp, &pki.ca())), &[]),
            ..Default::default()
        },
    );
    let js = nats.js().await;
    wait_provisioned(&js).await;
    nmc_ok(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "kent",
            "--name",
            "soc-lead",
            "--role",
            "SOC lead",
            "--email",
            "soc@kent.police.example",
            "--webhook",
            &hook.url("/kent/itsm"),
            "--webhook-secret",
            "kent-itsm",
            "--teams",
            &chat.url("/chat/teams"),
            "--slack",
            &chat.url("/chat/slack"),
            "--min-level",
            "low",
        ],
    );
    let listed = nmc_ok(&nats, &["contacts", "list", "--json"]);
    assert!(listed.contains("soc@kent.police.example"), "{listed}");
    assert!(!listed.contains(SECRET), "only the secret's name is stored");

    // A brute force from Amsterdam: its events carry the city, which no message may carry.
    let subject = "nmc.events.kent.entra_signin";
    let mut lines: Vec<Vec<u8>> = (0..30).map(failure).collect();
    lines.push(clock(900));
    let seqs = publish(&js, subject, &lines).await;
    let events: Vec<_> = seqs
        .iter()
        .zip(&lines)
        .map(|(s, l)| (*s, subject.to_string(), l.clone()))
        .collect();
    let expected = expected_alerts(&[rules_dir("identity")], "kent", &events);
    assert!(!expected.is_empty(), "the scenario raises alerts");
    let ids: BTreeSet<String> = expected.iter().map(|a| a.id.to_string()).collect();
    let n = ids.len();

    let mails = smtp.wait(n, Duration::from_secs(60)).await;
    let hooks = hook.wait_ok(n, Duration::from_secs(30)).await;
    let chats = chat.wait_ok(2 * n, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // nothing more may come
    let mails_after = smtp.mails();
    assert_eq!(mails_after.len(), n, "one e-mail per alert");

    // E-mail: over STARTTLS with AUTH, a text and an HTML part, the alert's fields, the
    // allowlisted evidence fields and nothing else of the event.
    let mut mailed = BTreeSet::new();
    for m in &mails {
        assert_eq!(m.envelope["tls"], true);
        assert_eq!(m.envelope["auth_user"], "nmc");
        assert_eq!(m.envelope["rcpt_tos"][0], "soc@kent.police.example");
        let p = m.parsed();
        let id = p["headers"]["x-nmc-alert-ids"][0]
            .as_str()
            .unwrap()
            .to_string();
        let a = expected
            .iter()
            .find(|a| a.id.to_string() == id)
            .expect("a raised alert");
        mailed.insert(id.clone());
        let subject = p["headers"]["subject"][0].as_str().unwrap();
        assert!(subject.contains(&a.rule.title), "{subject}");
        assert!(
            subject.contains(&a.rule.level.as_str().to_uppercase()),
            "{subject}"
        );
        assert_eq!(p["headers"]["x-nmc-force"][0], "kent");
        let types: Vec<&str> = p["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["content_type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["text/plain", "text/html"]);
        for part in p["parts"].as_array().unwrap() {
            // HTML escapes `/` (as `&#x2f;`) like every other character it may mark up.
            let text = &part["text"].as_str().unwrap().replace("&#x2f;", "/");
            assert!(text.contains("Kent Police"), "{text}");
            assert!(text.contains(&format!("https://console.ncsoc.example/alerts/{id}")));
            assert!(
                text.contains("bob.smith@kent.police.uk"),
                "user of the evidence"
            );
            assert!(text.contains("45.155.205.99"), "source IP of the evidence");
            assert!(text.contains("NL"), "country of the evidence");
            assert!(
                !text.contains("Amsterdam"),
                "the city is not on the allowlist: {text}"
            );
        }
    }
    assert_eq!(mailed, ids, "every alert mailed");

    // Signed webhook: every alert once, verified by the receiver, keyed by the alert id.
    let ok: Vec<&Value> = hooks.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(ok.len(), n);
    let keys: BTreeSet<String> = ok
        .iter()
        .map(|r| r["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ids);
    for r in &ok {
        assert_eq!(r["body"]["type"], "nmc.alert");
        assert_eq!(r["body"]["alert"]["force"], "kent");
        let raw = serde_json::to_string(&r["body"]).unwrap();
        assert!(!raw.contains("Amsterdam"), "minimised: {raw}");
    }
    // A replay of a signed request is refused by a receiver that checks.
    let first = ok[0];
    let raw = base64_decode(first["raw_b64"].as_str().unwrap());
    let (status, _) = post(
        &hook.url("/kent/itsm"),
        &[
            (
                "Nmc-Timestamp",
                first["headers"]["nmc-timestamp"].as_str().unwrap(),
            ),
            (
                "Nmc-Signature",
                first["headers"]["nmc-signature"].as_str().unwrap(),
            ),
            ("Content-Type", "application/json"),
        ],
        &raw,
    )
    .await;
    assert_eq!(status, 409, "replay refused");

    // Teams and Slack bodies are valid for their schemas.
    let ok_chats: Vec<&Value> = chats.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(ok_chats.len(), 2 * n);
    for r in ok_chats {
        match r["path"].as_str().unwrap() {
            "/chat/teams" => check_payload("teams-message.schema.json", &r["body"], dir.path()),
            "/chat/slack" => check_payload("slack-message.schema.json", &r["body"], dir.path()),
            p => panic!("unexpected path {p}"),
        }
    }

    // The lifecycle: recorded new, with its four delivery records; acknowledged by the CLI.
    let id = ids.iter().next().unwrap();
    let shown: Value =
        serde_json::from_str(&nmc_ok(&nats, &["alerts", "show", id, "--force", "kent"])).unwrap();
    assert_eq!(shown["lifecycle"]["state"], "new");
    let deliveries = shown["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4, "{shown:#}");
    assert!(deliveries.iter().all(|d| d["record"]["status"] == "sent"));
    nmc_ok(
        &nats,
        &[
            "alerts",
            "ack",
            id,
            "--force",
            "kent",
            "--by",
            "analyst@ncsoc.example",
            "--note",
            "looking",
        ],
    );
    let again = nmc(
        &nats,
        &[
            "alerts",
            "ack",
            id,
            "--force",
            "kent",
            "--by",
            "other@ncsoc.example",
        ],
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already"),
        "{again:?}"
    );
    nmc_ok(
        &nats,
        &[
            "alerts",
            "close",
            id,
            "--force",
            "kent",
            "--by",
            "analyst@ncsoc.example",
            "--outcome",
            "true_positive",
        ],
    );
    let shown: Value =
        serde_json::from_str(&nmc_ok(&nats, &["alerts", "show", id, "--force", "kent"])).unwrap();
    assert_eq!(shown["lifecycle"]["state"], "closed");
    assert_eq!(shown["lifecycle"]["outcome"], "true_positive");
    let audit = shown["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["action"], "acknowledge");
    assert_eq!(audit[0]["note"], "looking");
    assert_eq!(audit[1]["action"], "close");

    // `nmc contacts test` sends a real test message on every channel.
    let cfg = dir.path().join("test.toml");
    std::fs::write(
        &cfg,
        format!(
            "[notifications]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_tls_ca = \"{}\"\nsmtp_user = \"nmc\"\nsmtp_password = \"smtp-pass-word\"\nfrom = \"nmc@ncsoc.example\"\nsecrets_dir = \"{}\"\n",
            smtp.port,
            pki.ca(),
            secrets.display()
        ),
    )
    .unwrap();
    let out = nmc_ok(
        &nats,
        &[
            "contacts",
            "test",
            "--force",
            "kent",
            "soc-lead",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert_eq!(out.matches(": sent").count(), 4, "{out}");
    let mails = smtp.wait(n + 1, Duration::from_secs(10)).await;
    assert!(
        mails.last().unwrap().parsed()["headers"]["subject"][0]
            .as_str()
            .unwrap()
            .contains("TEST")
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64,sys; sys.stdout.buffer.write(base64.b64decode(sys.argv[1]))",
            s,
        ])
        .output()
        .unwrap();
    out.stdout
}

/// POSTs `body` with `headers`; (status, body).
async fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, resp)
}

#[tokio::test]
async fn deliveries_retry_through_a_failing_webhook_and_two_minutes_without_smtp() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "smtp");
    let (cert, key) = pki.issue("smtp", &["127.0.0.1"]);
    let mut smtp = Smtp::start(dir.path(), Some((&cert, &key)), Some("nmc:smtp-pass-word"));
    let hook = Webhook::start(dir.path(), "itsm", SECRET, 5);
    let secrets = secrets(dir.path());
    let _node = notifier(
        &nats,
        dir.path(),
        "notify-a",
        notify_env(&secrets, Some((&smtp, &pki.ca())), &[]),
    );
    let js = nats.js().await;
    wait_provisioned(&js).await;
    add_webhook_contact(&nats, "itsm", &hook.url("/kent"), &[]);
    nmc_ok(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "kent",
            "--name",
            "soc",
            "--email",
            "soc@kent.police.example",
        ],
    );

    smtp.stop();
    let alerts: Vec<Alert> = (0..20).map(|i| alert(Level::High, i)).collect();
    publish_alerts(&js, &alerts).await;
    // The webhook answers 500 five times, then 200: the first alert's delivery is retried.
    let hooks = hook.wait_ok(20, Duration::from_secs(60)).await;
    let ok: Vec<&Value> = hooks.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(ok.len(), 20, "each alert once");
    assert_eq!(hooks.iter().filter(|r| r["status"] == 500).count(), 5);
    assert!(
        hooks
            .iter()
            .all(|r| r["verdict"] != "replay" && r["verdict"] != "bad_signature"),
        "retries are signed afresh"
    );
    let keys: BTreeSet<&str> = ok
        .iter()
        .map(|r| r["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 20);
    // The attempts are recorded: 6 in all for the deliveries that met the 500s.
    let mut attempts = 0;
    for a in &alerts {
        let shown: Value = serde_json::from_str(&nmc_ok(
            &nats,
            &["alerts", "show", &a.id.to_string(), "--force", "kent"],
        ))
        .unwrap();
        for d in shown["deliveries"].as_array().unwrap() {
            if d["record"]["channel"] == "webhook" {
                assert_eq!(d["record"]["status"], "sent");
                attempts += d["record"]["attempt_count"].as_u64().unwrap();
            }
        }
    }
    assert_eq!(attempts, 25, "20 accepted, 5 refused");

    // Two minutes without the SMTP server, then it is back: every alert mailed, once.
    let down_since = Instant::now();
    tokio::time::sleep(Duration::from_secs(120).saturating_sub(down_since.elapsed())).await;
    assert!(smtp.mails().is_empty());
    smtp.restart();
    let mails = smtp.wait(20, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mails = if mails.len() == 20 {
        smtp.mails()
    } else {
        mails
    };
    let mailed: Vec<String> = mails
        .iter()
        .map(|m| {
            m.parsed()["headers"]["x-nmc-alert-ids"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let unique: BTreeSet<&String> = mailed.iter().collect();
    assert_eq!(mailed.len(), 20, "each alert mailed once: {mailed:?}");
    assert_eq!(unique.len(), 20);
}

#[tokio::test]
async fn an_outage_longer_than_the_retry_budget_delays_the_alert_but_does_not_drop_it() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut smtp = Smtp::start(dir.path(), None, None);
    let secrets = secrets(dir.path());
    let mut env = notify_env(&secrets, None, &[("NMC_NOTIFICATIONS__ATTEMPTS", "2")]);
    env.extend([
        (
            "NMC_NOTIFICATIONS__SMTP_HOST".to_string(),
            "127.0.0.1".to_string(),
        ),
        ("NMC_NOTIFICATIONS__SMTP_PORT".into(), smtp.port.to_string()),
        ("NMC_NOTIFICATIONS__SMTP_TLS".into(), "none".into()),
    ]);
    let _n = notifier(&nats, dir.path(), "notify-a", env);
    let js = nats.js().await;
    wait_provisioned(&js).await;
    nmc_ok(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "kent",
            "--name",
            "soc",
            "--email",
            "soc@kent.police.example",
        ],
    );
    smtp.stop();
    let a = alert(Level::High, 3);
    publish_alerts(&js, std::slice::from_ref(&a)).await;
    // Two attempts a second or so apart, then the delivery fails (and is published as failed);
    // nobody was told, so the alert comes round again and is sent once the server is back.
    let failed = wait_for(
        &js,
        "NMC_NOTIFY",
        "nmc.notify.failed.kent",
        1,
        Duration::from_secs(20),
        Duration::ZERO,
    )
    .await;
    assert_eq!(failed.len(), 1, "the failed round is published");
    tokio::time::sleep(Duration::from_secs(10)).await;
    smtp.restart();
    let mails = smtp.wait(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.mails().len(), 1, "delivered once: {mails:?}");
    let shown: Value = serde_json::from_str(&nmc_ok(
        &nats,
        &["alerts", "show", &a.id.to_string(), "--force", "kent"],
    ))
    .unwrap();
    let d = &shown["deliveries"][0]["record"];
    assert_eq!(d["status"], "sent");
    assert!(
        d["attempt_count"].as_u64().unwrap() >= 3,
        "the earlier round's attempts are kept: {d}"
    );
}

#[tokio::test]
async fn a_notifier_killed_mid_delivery_leaves_its_alerts_to_another_and_none_is_sent_twice() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start(dir.path(), "itsm", SECRET, 0);
    let mut smtp = Smtp::start(dir.path(), None, None);
    let secrets = secrets(dir.path());
    let smtp_port = smtp.port;
    let env = |extra: &[(&str, &str)]| {
        let mut e = notify_env(&secrets, None, extra);
        e.extend([
            (
                "NMC_NOTIFICATIONS__SMTP_HOST".to_string(),
                "127.0.0.1".to_string(),
            ),
            ("NMC_NOTIFICATIONS__SMTP_PORT".into(), smtp_port.to_string()),
            ("NMC_NOTIFICATIONS__SMTP_TLS".into(), "none".into()),
        ]);
        e
    };
    let mut a = notifier(&nats, dir.path(), "notify-a", env(&[]));
    let js = nats.js().await;
    wait_provisioned(&js).await;
    add_webhook_contact(&nats, "itsm", &hook.url("/kent"), &[]);
    nmc_ok(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "kent",
            "--name",
            "soc",
            "--email",
            "soc@kent.police.example",
        ],
    );
    // The mail server is down: deliveries are in their retries when the notifier dies.
    smtp.stop();
    let alerts: Vec<Alert> = (0..30).map(|i| alert(Level::Medium, i)).collect();
    publish_alerts(&js, &alerts).await;
    hook.wait_ok(30, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.kill9();
    let _b = notifier(&nats, dir.path(), "notify-b", env(&[]));
    smtp.restart();
    let mails = smtp.wait(30, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mails = if mails.len() >= 30 {
        smtp.mails()
    } else {
        mails
    };
    let mut per_alert: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mails {
        *per_alert
            .entry(
                m.parsed()["headers"]["x-nmc-alert-ids"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
            .or_default() += 1;
    }
    assert_eq!(per_alert.len(), 30, "every alert mailed after the takeover");
    assert!(
        per_alert.values().all(|n| *n == 1),
        "none twice: {per_alert:?}"
    );
    // The webhook deliveries were recorded as sent before the kill: not one is repeated.
    let ok = hook
        .requests()
        .into_iter()
        .filter(|r| r["status"] == 200)
        .count();
    assert_eq!(
        ok, 30,
        "webhook deliveries not repeated by the second notifier"
    );
}

#[tokio::test]
async fn an_unacknowledged_alert_escalates_to_the_next_tier_then_the_duty_contact() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let chat = Webhook::start(dir.path(), "chat", SECRET, 0);
    let secrets = secrets(dir.path());
    let _n = notifier(
        &nats,
        dir.path(),
        "notify-a",
        notify_env(
            &secrets,
            None,
            &[
                ("NMC_NOTIFICATIONS__ACK_TIMEOUT_HIGH_SECS", "4"),
                ("NMC_NOTIFICATIONS__ACK_TIMEOUT_CRITICAL_SECS", "4"),
            ],
        ),
    );
    let js = nats.js().await;
    wait_provisioned(&js).await;
    nmc_ok(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "kent",
            "--name",
            "first",
            "--teams",
            &chat.url("/chat/first"),
        ],
    );
    nmc_ok(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "kent",
            "--name",
            "second",
            "--tier",
            "2",
            "--slack",
            &chat.url("/chat/second"),
        ],
    );
    nmc_ok(
        &nats,
        &[
            "contacts",
            "add",
            "--national",
            "--name",
            "duty",
            "--teams",
            &chat.url("/chat/duty"),
        ],
    );

    let ignored = alert(Level::High, 1);
    let seen = alert(Level::Critical, 2);
    publish_alerts(&js, &[ignored.clone(), seen.clone()]).await;
    // Both reach the first tier at once; `seen` is acknowledged straight away.
    let first = chat.wait_ok(2, Duration::from_secs(20)).await;
    assert_eq!(
        first.iter().filter(|r| r["path"] == "/chat/first").count(),
        2
    );
    nmc_ok(
        &nats,
        &[
            "alerts",
            "ack",
            &seen.id.to_string(),
            "--force",
            "kent",
            "--by",
            "first@kent.example",
        ],
    );
    let t0 = Instant::now();
    let all = chat.wait_ok(4, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(6)).await; // long enough for a wrong escalation of `seen`
    let all = if all.len() >= 4 { chat.requests() } else { all };
    let to = |path: &str| -> Vec<String> {
        all.iter()
            .filter(|r| r["path"] == path && r["status"] == 200)
            .map(|r| r["idempotency_key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        to("/chat/second"),
        [ignored.id.to_string()],
        "tier 2 told of the unacknowledged one only"
    );
    assert_eq!(
        to("/chat/duty"),
        [ignored.id.to_string()],
        "then the duty contact"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "not before the ack timeout"
    );
    let order: Vec<&str> = all
        .iter()
        .filter(|r| r["idempotency_key"] == ignored.id.to_string().as_str())
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["/chat/first", "/chat/second", "/chat/duty"]);
}

#[tokio::test]
async fn a_delivery_that_fails_is_published_and_escalates_at_once_whatever_the_level() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The receiver knows another secret: every signature is wrong, a permanent 401.
    let itsm = Webhook::start(dir.path(), "itsm", "a-different-secret-0123456789", 0);
    let chat = Webhook::start(dir.path(), "chat", SECRET, 0);
    let secrets = secrets(dir.path());
    let _n = notifier(
        &nats,
        dir.path(),
        "notify-a",
        notify_env(&secrets, None, &[]),
    );
    let js = nats.js().await;
    wait_provisioned(&js).await;
    add_webhook_contact(&nats, "itsm", &itsm.url("/kent"), &[]);
    nmc_ok(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "kent",
            "--name",
            "iso",
            "--tier",
            "2",
            "--teams",
            &chat.url("/chat/iso"),
        ],
    );
    // Bad contact data is refused, saying what is wrong.
    let bad = nmc(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "kent",
            "--name",
            "x",
            "--email",
            "not-an-address",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not an e-mail address"),
        "{bad:?}"
    );
    let bad = nmc(
        &nats,
        &[
            "contacts",
            "add",
            "--force",
            "atlantis",
            "--name",
            "x",
            "--email",
            "a@b.example",
        ],
    );
    assert!(!bad.status.success());

    let a = alert(Level::Medium, 7);
    publish_alerts(&js, std::slice::from_ref(&a)).await;
    // Tier 2 is told at once (a medium alert does not wait for an ack timeout when tier 1
    // could not be reached), after the single refused attempt.
    let got = chat.wait_ok(1, Duration::from_secs(20)).await;
    assert_eq!(got.iter().filter(|r| r["status"] == 200).count(), 1);
    let refused = itsm.requests();
    assert_eq!(refused.len(), 1, "a 401 is not retried: {refused:?}");
    assert_eq!(refused[0]["verdict"], "bad_signature");
    let failed = wait_for(
        &js,
        "NMC_NOTIFY",
        "nmc.notify.failed.kent",
        1,
        Duration::from_secs(10),
        Duration::ZERO,
    )
    .await;
    assert_eq!(failed.len(), 1);
    let f = failed[0].json();
    assert_eq!(f["alert"], a.id.to_string());
    assert_eq!(f["contact"], "itsm");
    assert_eq!(f["record"]["status"], "failed");
    assert!(
        f["record"]["attempts"][0]["response"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 401"),
        "{f}"
    );
    assert!(
        !f.to_string().contains("/kent"),
        "the URL's path is not in the record: {f}"
    );
}

#[tokio::test]
async fn a_burst_is_held_to_the_message_limit_with_criticals_at_once_and_the_rest_in_digests() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start(dir.path(), "itsm", SECRET, 0);
    let secrets = secrets(dir.path());
    let _n = notifier(
        &nats,
        dir.path(),
        "notify-a",
        notify_env(
            &secrets,
            None,
            &[("NMC_NOTIFICATIONS__DIGEST_INTERVAL_SECS", "5")],
        ),
    );
    let js = nats.js().await;
    wait_provisioned(&js).await;
    add_webhook_contact(
        &nats,
        "itsm",
        &hook.url("/kent"),
        &["--max-per-minute", "10", "--min-level", "low"],
    );

    let mut alerts: Vec<Alert> = (0..950).map(|i| alert(Level::Medium, i)).collect();
    let criticals: Vec<Alert> = (0..50).map(|i| alert(Level::Critical, i)).collect();
    // Criticals spread through the burst.
    for (i, c) in criticals.iter().enumerate() {
        alerts.insert(i * 19, c.clone());
    }
    // The limit holds per wall-clock minute (the node's digest key): count the minutes spanned.
    let minute_now = || {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        (ms / 60_000) as u64
    };
    let first_minute = minute_now();
    publish_alerts(&js, &alerts).await;
    let crit_ids: BTreeSet<String> = criticals.iter().map(|a| a.id.to_string()).collect();
    let all_ids: BTreeSet<String> = alerts.iter().map(|a| a.id.to_string()).collect();
    // Everything arrives: criticals one by one, at most 10 other single messages a minute,
    // the rest in digests.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut singles, mut digested) = (Vec::<Value>::new(), Vec::<String>::new());
    while Instant::now() < deadline {
        let reqs = hook.requests();
        singles = reqs
            .iter()
            .filter(|r| r["status"] == 200 && r["body"]["type"] == "nmc.alert")
            .cloned()
            .collect();
        digested = reqs
            .iter()
            .filter(|r| r["status"] == 200 && r["body"]["type"] == "nmc.digest")
            .flat_map(|r| {
                r["body"]["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        if singles.len() + digested.len() >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let single_ids: Vec<String> = singles
        .iter()
        .map(|r| r["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    let mut seen: Vec<String> = single_ids.iter().chain(&digested).cloned().collect();
    seen.sort();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "nothing twice");
    assert_eq!(unique, all_ids, "nothing missing from singles and digests");
    let crit_single: BTreeSet<String> = single_ids
        .iter()
        .filter(|i| crit_ids.contains(*i))
        .cloned()
        .collect();
    assert_eq!(crit_single, crit_ids, "every critical as its own message");
    let others = single_ids.len() - crit_ids.len();
    let minutes = minute_now() - first_minute + 1;
    assert!(
        others as u64 <= 10 * minutes,
        "{others} single non-critical messages in {minutes} minute(s)"
    );
    assert!(!digested.is_empty());
    assert!(
        digested.iter().all(|i| !crit_ids.contains(i)),
        "criticals never wait for a digest"
    );
}

/// Alert-to-delivery latency (alert published to the receiving server), steady and in a burst.
/// A measurement, not a check: run it with
/// `cargo nextest run -p nmc-node --test notify --run-ignored only --no-capture notify_latency`;
/// the figures are in docs/benchmarks.md.
#[tokio::test]
#[ignore = "benchmark: run explicitly"]
async fn notify_latency() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start(dir.path(), "itsm", SECRET, 0);
    let secrets = secrets(dir.path());
    let _n = notifier(
        &nats,
        dir.path(),
        "notify-a",
        notify_env(&secrets, None, &[]),
    );
    let js = nats.js().await;
    wait_provisioned(&js).await;
    add_webhook_contact(
        &nats,
        "itsm",
        &hook.url("/kent"),
        &["--max-per-minute", "100000", "--min-level", "low"],
    );
    // Warm-up: the consumer exists and the first connections are made.
    publish_alerts(&js, &[alert(Level::High, 999_999)]).await;
    hook.wait_ok(1, Duration::from_secs(20)).await;

    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let mut sent_at: BTreeMap<String, i64> = BTreeMap::new();
    // Steady: 20 alerts a second for 30 seconds.
    for i in 0..600 {
        let a = alert(Level::High, i);
        sent_at.insert(a.id.to_string(), now_ms());
        publish_alerts(&js, &[a]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hook.wait_ok(601, Duration::from_secs(60)).await;
    // Burst: 1,000 at once.
    let burst: Vec<Alert> = (10_000..11_000).map(|i| alert(Level::High, i)).collect();
    let t = now_ms();
    for a in &burst {
        sent_at.insert(a.id.to_string(), t);
    }
    publish_alerts(&js, &burst).await;
    let reqs = hook.wait_ok(1601, Duration::from_secs(120)).await;
    let mut steady = Vec::new();
    let mut bursty = Vec::new();
    for r in reqs.iter().filter(|r| r["status"] == 200) {
        let key = r["idempotency_key"].as_str().unwrap();
        if let Some(at) = sent_at.get(key) {
            let ms = r["received_ms"].as_i64().unwrap() - at;
            if burst.iter().any(|a| a.id.to_string() == key) {
                bursty.push(ms);
            } else {
                steady.push(ms);
            }
        }
    }
    // The floor: the same receiver taking 1,000 signed posts straight from here over eight
    // keep-alive connections (it writes and fsyncs a line per request), in the same run.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let floor_started = Instant::now();
    for chunk in (0..1000).collect::<Vec<_>>().chunks(8) {
        futures::future::join_all(chunk.iter().map(|i| {
            let ts = now_ms() / 1000;
            let body = serde_json::to_vec(&serde_json::json!({"type": "floor", "n": i})).unwrap();
            let sig = nmc_node::notify::webhook::sign(SECRET.as_bytes(), ts, &body);
            client
                .post(hook.url("/floor"))
                .header("Nmc-Timestamp", ts.to_string())
                .header("Nmc-Signature", sig)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
        }))
        .await
        .into_iter()
        .for_each(|r| assert_eq!(r.unwrap().status().as_u16(), 200));
    }
    let floor_ms = floor_started.elapsed().as_millis() as i64;
    let pct = |v: &mut Vec<i64>, p: f64| {
        v.sort_unstable();
        v[((v.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(v.len() - 1)]
    };
    println!(
        "{}",
        serde_json::json!({
            "steady_alerts": steady.len(),
            "steady_p50_ms": pct(&mut steady, 0.50),
            "steady_p99_ms": pct(&mut steady, 0.99),
            "burst_alerts": bursty.len(),
            "burst_p50_ms": pct(&mut bursty, 0.50),
            "burst_p99_ms": pct(&mut bursty, 0.99),
            "receiver_floor_1000_ms": floor_ms,
            "burst_p99_over_floor": pct(&mut bursty, 0.99) as f64 / floor_ms as f64,
        })
    );
    assert_eq!(steady.len(), 600);
    assert_eq!(bursty.len(), 1000);
}
