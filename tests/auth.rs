//! Locked down: a real nats-server runs the authorization configuration `nmc auth nats-config`
//! generates, and each identity can do what its role needs and nothing more. A force's collector
//! publishes only its own force's events; a force's reader receives only its own alerts, however
//! it asks (subscription, JetStream consumer, direct get, stream info, pull); nodes still process
//! every force. Wrong or missing credentials stop a node at start with a clear message; TLS is
//! verified against the configured CA (certificates made by the test) and can be required; no
//! secret reaches a log, a status response or an error message; the HTTP API wants its token.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use harness::*;
use tokio::process::Command;

/// Runs `nmc args...` with only `env` (and PATH) in its environment, with a deadline.
async fn nmc(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(nmc_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NMC_LOG", "warn")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("nmc {args:?} did not finish in 60s"))
        .expect("running nmc")
}

/// `nmc args...`, which must succeed: its standard output.
async fn ok(args: &[&str], env: &[(String, String)]) -> String {
    let out = nmc(args, env).await;
    assert!(
        out.status.success(),
        "nmc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nmc args...`, which must fail: its standard error.
async fn fails(args: &[&str], env: &[(String, String)]) -> String {
    let out = nmc(args, env).await;
    assert!(
        !out.status.success(),
        "nmc {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The output folder of `nmc auth nats-config`.
struct Creds(PathBuf);

impl Creds {
    fn seed_file(&self, identity: &str) -> PathBuf {
        self.0.join(format!("{identity}.nk"))
    }

    fn seed(&self, identity: &str) -> String {
        std::fs::read_to_string(self.seed_file(identity))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The `NMC_*` variables that make a command or node this identity.
    fn env(&self, nats: &Nats, identity: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("NMC_NATS_URL".to_owned(), nats.url.clone()),
            (
                "NMC_NATS_NKEY".to_owned(),
                self.seed_file(identity).display().to_string(),
            ),
        ];
        if identity.starts_with("collector-") || identity.starts_with("reader-") {
            env.push((
                "NMC_NATS_INBOX_PREFIX".to_owned(),
                format!("_INBOX_{identity}"),
            ));
        }
        env
    }

    /// A client of this identity and the server errors it is sent (permission violations).
    async fn client(&self, nats: &Nats, identity: &str) -> (async_nats::Client, Errors) {
        let errors = Errors::default();
        let seen = errors.clone();
        let mut opts = async_nats::ConnectOptions::new()
            .nkey(self.seed(identity))
            .request_timeout(Some(Duration::from_secs(2)))
            .event_callback(move |e| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = e {
                        seen.0.lock().unwrap().push(e.to_string());
                    }
                }
            });
        if identity.starts_with("collector-") || identity.starts_with("reader-") {
            opts = opts.custom_inbox_prefix(format!("_INBOX_{identity}"));
        }
        let client = opts.connect(&nats.url).await.expect("connecting");
        (client, errors)
    }
}

/// Server errors a client was sent.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl Errors {
    /// Waits until the server has refused `what` on `subject` (`Publish` or `Subscription`).
    async fn wait_violation(&self, what: &str, subject: &str) {
        let needle = format!("permissions violation for {what} to \"{subject}\"").to_lowercase();
        for _ in 0..100 {
            if self
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.to_lowercase().contains(&needle))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no violation for {what} to {subject}; errors: {:?}",
            self.0.lock().unwrap()
        );
    }
}

/// `nmc auth nats-config` into `dir` from a forces file of `forces`, and a server running it.
async fn secured(dir: &Path, forces: &[&str]) -> (Nats, Creds) {
    let file = write_forces(dir, forces);
    let out = dir.join("creds");
    ok(
        &[
            "auth",
            "nats-config",
            "--out",
            out.to_str().unwrap(),
            "--forces-file",
            file.to_str().unwrap(),
            // One identity per node (revocable alone) for the node the tests start.
            "--nodes",
            "n1",
        ],
        &[],
    )
    .await;
    // nats-server resolves includes relative to the including file.
    let conf = "include \"creds/nats-auth.conf\"\n";
    (Nats::start_with_config(dir, conf).await, Creds(out))
}

fn write_forces(dir: &Path, forces: &[&str]) -> PathBuf {
    let path = dir.join("forces.yaml");
    let mut text = String::from("forces:\n");
    for f in forces {
        text.push_str(&format!("  - id: {f}\n    phase: cloud\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Events that make the identity pack raise alerts for a force (a burst of failed sign-ins,
/// then the clock moved past the lateness so the correlations close).
fn burst() -> Vec<Vec<u8>> {
    let mut events: Vec<Vec<u8>> = (0..12).map(failure).collect();
    events.push(clock(900));
    events
}

fn node_spec(creds: &Creds, nats: &Nats, id: &str) -> NodeSpec {
    let mut env = creds.env(nats, "node-n1");
    // Checkpoints (the object store) within the test, too.
    env.push(("NMC_CHECKPOINT_INTERVAL_SECS".into(), "2".into()));
    NodeSpec {
        id: id.into(),
        triage: true,
        rules: vec![rules_dir("identity")],
        env,
        ..Default::default()
    }
}

#[tokio::test]
async fn each_identity_is_confined_to_its_role_and_force() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, creds) = secured(dir.path(), &["kent", "essex"]).await;
    let admin = creds.env(&nats, "admin");
    let node = Node::start(
        &nats,
        &dir.path().join("n1"),
        &node_spec(&creds, &nats, "n1"),
    );
    wait_ready(&node, true, Duration::from_secs(60)).await;

    // The admin onboards the forces declaratively; applying again changes nothing.
    let forces = dir.path().join("forces.yaml");
    let first = ok(&["forces", "apply", forces.to_str().unwrap()], &admin).await;
    assert!(
        first.contains("+ essex") && first.contains("+ kent"),
        "{first}"
    );
    let again = ok(&["forces", "apply", forces.to_str().unwrap()], &admin).await;
    assert!(again.contains("2 forces in the file, 0 changed"), "{again}");
    // The admin also pushes rule packs and reads the cluster's status; a collector cannot
    // onboard forces.
    ok(
        &["rules", "push", rules_dir("identity").to_str().unwrap()],
        &admin,
    )
    .await;
    let status = ok(&["cluster", "status"], &admin).await;
    assert!(status.contains("n1"), "{status}");
    fails(
        &["forces", "apply", forces.to_str().unwrap()],
        &creds.env(&nats, "collector-kent"),
    )
    .await;

    // Each collector publishes its own force's events (acknowledged by JetStream): kent's
    // with a client of its own, essex's with `nmc replay`.
    let (client, _) = creds.client(&nats, "collector-kent").await;
    publish(
        &jetstream::new(client),
        "nmc.events.kent.entra_signin",
        &burst(),
    )
    .await;
    let file = dir.path().join("essex.entra_signin.jsonl");
    let mut lines = burst().join(&b'\n');
    lines.push(b'\n');
    std::fs::write(&file, lines).unwrap();
    let replayed = nmc(
        &["replay", file.to_str().unwrap()],
        &creds.env(&nats, "collector-essex"),
    )
    .await;
    let said = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success(), "{said}");
    assert!(said.contains("13 acknowledged"), "{said}");
    let refused = nmc(
        &["replay", "--force", "kent", file.to_str().unwrap()],
        &creds.env(&nats, "collector-essex"),
    )
    .await;
    assert!(
        !refused.status.success(),
        "essex's collector published as kent"
    );

    // Kent's collector cannot publish as essex, nor read alerts.
    let (kent_collector, kent_errors) = creds.client(&nats, "collector-kent").await;
    kent_collector
        .publish("nmc.events.essex.entra_signin", Bytes::from(failure(99)))
        .await
        .unwrap();
    kent_collector.flush().await.unwrap();
    kent_errors
        .wait_violation("Publish", "nmc.events.essex.entra_signin")
        .await;
    let _sub = kent_collector.subscribe("nmc.alerts.kent.>").await.unwrap();
    kent_errors
        .wait_violation("Subscription", "nmc.alerts.kent.>")
        .await;

    // The node processed both forces: their alerts are exactly those of their events.
    let (admin_client, _) = creds.client(&nats, "admin").await;
    let admin_js = jetstream::new(admin_client);
    let mut expected_total = 0;
    let mut stored = 0;
    for force in ["kent", "essex"] {
        let events = read_all(&admin_js, &format!("NMC_EVENTS_{force}"), "").await;
        stored += events.len();
        let mine: Vec<(u64, String, Vec<u8>)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e.subject.clone(), e.payload.to_vec()))
            .collect();
        let expected = expected_alerts(&[rules_dir("identity")], force, &mine);
        assert!(!expected.is_empty(), "the burst raises alerts");
        expected_total += expected.len();
        let got = wait_for(
            &admin_js,
            "NMC_ALERTS",
            &format!("nmc.alerts.{force}.>"),
            expected.len(),
            Duration::from_secs(60),
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(alerts(&got), expected, "alerts of {force}");
    }
    assert_eq!(
        stored,
        2 * burst().len(),
        "the refused event is in no stream"
    );

    // The node checkpoints both forces to the object store with its identity.
    wait_checkpointed(&admin_js, &["kent"], Duration::from_secs(30)).await;
    wait_checkpointed(&admin_js, &["essex"], Duration::from_secs(30)).await;

    // Kent's reader reads kent's alerts with `nmc alerts tail`, and nothing else.
    let reader = creds.env(&nats, "reader-kent");
    let kent_alerts = count(&admin_js, "NMC_ALERTS", "nmc.alerts.kent.>").await;
    let tail = ok(
        &[
            "alerts",
            "tail",
            "--force",
            "kent",
            "--all",
            "--count",
            &kent_alerts.to_string(),
            "--idle",
            "10",
        ],
        &reader,
    )
    .await;
    assert_eq!(tail.lines().count(), kent_alerts, "{tail}");
    assert!(
        tail.lines().all(|l| l.contains("\"force\":\"kent\"")),
        "{tail}"
    );
    for args in [
        &["alerts", "tail", "--all", "--idle", "3"][..],
        &["alerts", "tail", "--force", "essex", "--all", "--idle", "3"][..],
    ] {
        let e = fails(args, &reader).await;
        assert!(e.contains("may this identity read it?"), "{e}");
    }

    let (kent_reader, reader_errors) = creds.client(&nats, "reader-kent").await;
    let _sub = kent_reader.subscribe("nmc.alerts.essex.>").await.unwrap();
    reader_errors
        .wait_violation("Subscription", "nmc.alerts.essex.>")
        .await;
    let create = |filter: &str, body_filter: serde_json::Value| {
        let mut config = serde_json::json!({
            "deliver_subject": kent_reader.new_inbox(),
            "ack_policy": "none",
            "inactive_threshold": 5_000_000_000u64,
            "name": "probe",
        });
        config.as_object_mut().unwrap().extend(
            body_filter
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        (
            format!("$JS.API.CONSUMER.CREATE.NMC_ALERTS.probe{filter}"),
            serde_json::json!({ "stream_name": "NMC_ALERTS", "config": config }).to_string(),
        )
    };
    // Allowed: a consumer of its own alerts (the positive control of what follows).
    let (subject, body) = create(
        ".nmc.alerts.kent.>",
        serde_json::json!({ "filter_subject": "nmc.alerts.kent.>" }),
    );
    let reply = kent_reader
        .request(subject, body.into())
        .await
        .expect("creating its own consumer");
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(reply.get("error").is_none(), "{reply}");
    // Refused by the permissions: an unfiltered create, another force's filter, direct and
    // message gets, stream info, pull requests.
    for subject in [
        "$JS.API.CONSUMER.CREATE.NMC_ALERTS",
        "$JS.API.CONSUMER.CREATE.NMC_ALERTS.probe",
        "$JS.API.CONSUMER.CREATE.NMC_ALERTS.probe.nmc.alerts.essex.>",
        "$JS.API.CONSUMER.CREATE.NMC_ALERTS.probe.nmc.alerts.>",
        "$JS.API.CONSUMER.CREATE.NMC_ALERTS.probe.nmc.alerts.*.high",
        "$JS.API.DIRECT.GET.NMC_ALERTS",
        "$JS.API.DIRECT.GET.NMC_ALERTS.nmc.alerts.essex.high",
        "$JS.API.STREAM.MSG.GET.NMC_ALERTS",
        "$JS.API.STREAM.INFO.NMC_ALERTS",
        "$JS.API.CONSUMER.MSG.NEXT.NMC_ALERTS.probe",
        "$JS.API.CONSUMER.DURABLE.CREATE.NMC_ALERTS.probe",
    ] {
        let body = serde_json::json!({
            "stream_name": "NMC_ALERTS",
            "config": { "filter_subject": "nmc.alerts.essex.>", "deliver_subject": kent_reader.new_inbox() },
            "last_by_subj": "nmc.alerts.essex.high",
            "seq": 1,
        });
        let answer = kent_reader
            .request(subject.to_owned(), body.to_string().into())
            .await;
        assert!(answer.is_err(), "{subject} answered: {answer:?}");
        reader_errors.wait_violation("Publish", subject).await;
    }
    // Refused by JetStream: a create subject of kent whose body filters something else.
    for body_filter in [
        serde_json::json!({ "filter_subject": "nmc.alerts.essex.>" }),
        serde_json::json!({ "filter_subject": "nmc.alerts.>" }),
        serde_json::json!({ "filter_subjects": ["nmc.alerts.essex.>"] }),
        serde_json::json!({ "filter_subjects": ["nmc.alerts.kent.>", "nmc.alerts.essex.>"] }),
        serde_json::json!({}),
    ] {
        let (subject, body) = create(".nmc.alerts.kent.>", body_filter.clone());
        let reply = kent_reader
            .request(subject, body.into())
            .await
            .expect("JetStream answers");
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply.get("error").is_some(), "{body_filter}: {reply}");
    }

    // Onboarding surrey and regenerating: surrey's identities are new, nobody else's changed.
    // Regenerating without --nodes keeps the per-node identity already there.
    let before: Vec<(String, String)> = ["admin", "node-n1", "collector-kent", "reader-essex"]
        .iter()
        .map(|i| (i.to_string(), creds.seed(i)))
        .collect();
    write_forces(dir.path(), &["kent", "essex", "surrey"]);
    let applied = ok(&["forces", "apply", forces.to_str().unwrap()], &admin).await;
    assert!(applied.contains("+ surrey"), "{applied}");
    let regenerated = ok(
        &["auth", "nats-config", "--out", creds.0.to_str().unwrap()],
        &admin,
    )
    .await;
    assert!(
        regenerated.contains("+ collector-surrey") && regenerated.contains("+ reader-surrey"),
        "{regenerated}"
    );
    assert!(
        regenerated.contains("2 new, 6 kept, 0 revoked"),
        "{regenerated}"
    );
    for (identity, seed) in before {
        assert_eq!(creds.seed(&identity), seed, "{identity} kept its seed");
    }
    assert!(!creds.seed_file("node").exists(), "no shared node identity");
    nats.signal("HUP");
    let js = loop {
        // The reload is asynchronous: surrey's collector gets in once it is done.
        let opts = async_nats::ConnectOptions::new()
            .nkey(creds.seed("collector-surrey"))
            .custom_inbox_prefix("_INBOX_collector-surrey");
        if let Ok(c) = opts.connect(&nats.url).await {
            break jetstream::new(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    publish(&js, "nmc.events.surrey.entra_signin", &burst()).await;
    wait_for(
        &admin_js,
        "NMC_ALERTS",
        "nmc.alerts.surrey.>",
        1,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    assert!(count(&admin_js, "NMC_ALERTS", "nmc.alerts.>").await > expected_total);
}

#[tokio::test]
async fn a_node_without_a_valid_credential_stops_at_start_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, creds) = secured(dir.path(), &["kent"]).await;
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(
        &stranger,
        nkeys_seed(), // a valid seed the server does not know
    )
    .unwrap();
    let garbage = dir.path().join("garbage.nk");
    std::fs::write(&garbage, "SUTHISISNOTASEED\n").unwrap();
    let cases = [
        ("none", kv(&[]), "refused this identity"),
        (
            "stranger",
            kv(&[("NMC_NATS_NKEY", stranger.to_str().unwrap())]),
            "refused this identity",
        ),
        (
            "garbage",
            kv(&[("NMC_NATS_NKEY", garbage.to_str().unwrap())]),
            "holds no valid nkey seed",
        ),
    ];
    for (name, env, want) in cases {
        let spec = NodeSpec {
            id: name.into(),
            rules: vec![rules_dir("identity")],
            env,
            ..Default::default()
        };
        let mut node = Node::start(&nats, &dir.path().join(name), &spec);
        let exit = node.wait_exit(Duration::from_secs(30)).await;
        assert!(
            exit.is_some_and(|s| !s.success()),
            "{name}: the node did not stop: {exit:?}"
        );
        let log = node.log();
        assert!(log.contains(want), "{name}: {log}");
        assert!(
            !log.contains("SUTHISISNOTASEED"),
            "{name}: the seed leaked: {log}"
        );
    }
    // A valid identity that is not an admin cannot administer the cluster.
    let e = fails(&["forces", "list"], &creds.env(&nats, "collector-kent")).await;
    assert!(!e.is_empty());
}

/// A fresh nkey user seed.
fn nkeys_seed() -> String {
    nkeys::KeyPair::new_user().seed().unwrap() + "\n"
}

#[tokio::test]
async fn tls_is_verified_against_the_configured_ca_and_can_be_required() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "good");
    let other = Pki::new(dir.path(), "unknown");
    let (server_cert, server_key) = pki.issue("server", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = pki.issue("client", &["nmc-node"]);
    let (rogue_cert, rogue_key) = other.issue("client", &["nmc-node"]);
    let nats = Nats::start_with_config(dir.path(), &format!(
        "tls {{\n  cert_file: \"{server_cert}\"\n  key_file: \"{server_key}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
        pki.ca()
    ))
    .await;
    let tls = kv(&[
        ("NMC_NATS_URL", &nats.url),
        ("NMC_NATS_TLS_CA", &pki.ca()),
        ("NMC_NATS_TLS_CERT", &client_cert),
        ("NMC_NATS_TLS_KEY", &client_key),
        ("NMC_REQUIRE_TLS", "true"),
    ]);
    // A node with the right CA and client certificate runs; so do the commands.
    let spec = NodeSpec {
        id: "tls".into(),
        forces: vec!["kent".into()],
        rules: vec![rules_dir("identity")],
        env: tls.clone(),
        ..Default::default()
    };
    let node = Node::start(&nats, &dir.path().join("n"), &spec);
    wait_ready(&node, true, Duration::from_secs(60)).await;
    let listed = ok(&["forces", "list"], &tls).await;
    assert!(listed.contains("kent"), "{listed}");

    // The server's certificate from a CA the client does not trust: refused, saying so.
    let mut wrong_ca = tls.clone();
    wrong_ca[1].1 = other.ca();
    let e = fails(&["forces", "list"], &wrong_ca).await;
    assert!(
        e.contains("TLS with NATS at") && e.contains("nats_tls_ca"),
        "{e}"
    );
    // A client certificate from a CA the server does not trust, or none: refused.
    let mut rogue = tls.clone();
    rogue[2].1 = rogue_cert;
    rogue[3].1 = rogue_key;
    fails(&["forces", "list"], &rogue).await;
    fails(&["forces", "list"], &tls[..2]).await;

    // A plain server: fine without require_tls, refused with it.
    let plain = Nats::start().await;
    let spec = NodeSpec {
        id: "plain".into(),
        rules: vec![rules_dir("identity")],
        ..Default::default()
    };
    let node = Node::start(&plain, &dir.path().join("p"), &spec);
    wait_ready(&node, true, Duration::from_secs(60)).await;
    let plain_env = kv(&[("NMC_NATS_URL", &plain.url)]);
    ok(&["forces", "list"], &plain_env).await;
    let e = fails(&["forces", "list", "--require-tls"], &plain_env).await;
    assert!(e.contains("TLS"), "{e}");
    let required = NodeSpec {
        id: "required".into(),
        rules: vec![rules_dir("identity")],
        env: kv(&[("NMC_REQUIRE_TLS", "true")]),
        ..Default::default()
    };
    let mut refused = Node::start(&plain, &dir.path().join("r"), &required);
    let exit = refused.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.is_some_and(|s| !s.success()), "{exit:?}");
    assert!(
        refused.log().contains("TLS with NATS at"),
        "{}",
        refused.log()
    );
}

/// `GET url` over HTTP or HTTPS with python3 (the standard library's TLS client, verifying
/// against `ca`), with an optional bearer token: (status, body).
async fn https_get(url: &str, ca: Option<&str>, token: Option<&str>) -> (u16, String) {
    let script = r#"
import ssl, sys, urllib.request, urllib.error
url, ca, token = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca) if ca else None
req = urllib.request.Request(url)
if token:
    req.add_header("Authorization", "Bearer " + token)
try:
    r = urllib.request.urlopen(req, context=ctx, timeout=10)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script, url, ca.unwrap_or(""), token.unwrap_or("")])
        .output()
        .await
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, body) = text.split_once('\n').unwrap_or(("0", ""));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test]
async fn secrets_stay_secret_and_the_api_wants_its_token() {
    const PASSWORD: &str = "pw-Secret-9f8e7d";
    const TOKEN: &str = "tok-Secret-1a2b3c";
    const WRONG: &str = "pw-Wrong-5c6d7e";
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "web");
    let (cert, key) = pki.issue("node", &["localhost", "127.0.0.1"]);
    let nats = Nats::start_with_config(
        dir.path(),
        &format!(
            "authorization {{\n  users: [ {{ user: \"nmc\", password: \"{PASSWORD}\" }} ]\n}}\n"
        ),
    )
    .await;
    let creds = kv(&[
        ("NMC_NATS_URL", &nats.url),
        ("NMC_NATS_USER", "nmc"),
        ("NMC_NATS_PASSWORD", PASSWORD),
    ]);
    let mut env = creds.clone();
    env.extend(kv(&[
        ("NMC_HTTP_API_TOKEN", TOKEN),
        ("NMC_HTTP_TLS_CERT", &cert),
        ("NMC_HTTP_TLS_KEY", &key),
        ("NMC_LOG", "debug"),
    ]));
    let spec = NodeSpec {
        id: "secretive".into(),
        forces: vec!["kent".into()],
        rules: vec![rules_dir("identity")],
        env,
        ..Default::default()
    };
    let node = Node::start(&nats, &dir.path().join("n"), &spec);
    let https = node.http.replace("http://", "https://");
    let ca = pki.ca();
    // Probes and scrapers get in without a token, over TLS.
    let mut ready = (0, String::new());
    for _ in 0..300 {
        ready = https_get(&format!("{https}/readyz"), Some(&ca), None).await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready.0, 200, "{ready:?}");
    assert_eq!(
        https_get(&format!("{https}/healthz"), Some(&ca), None)
            .await
            .0,
        200
    );
    let (code, metrics) = https_get(&format!("{https}/metrics"), Some(&ca), None).await;
    assert_eq!(code, 200);
    // The API wants the token.
    let status_url = format!("{https}/api/v1/status");
    let (code, body) = https_get(&status_url, Some(&ca), None).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(https_get(&status_url, Some(&ca), Some("nope")).await.0, 401);
    let (code, status) = https_get(&status_url, Some(&ca), Some(TOKEN)).await;
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("\"node\":\"secretive\""), "{status}");
    // Plain HTTP on the TLS port gets no answer.
    assert_ne!(
        http_get(&format!("{}/healthz", node.http))
            .await
            .map(|r| r.0)
            .unwrap_or(0),
        200
    );

    // Commands: a status, and errors with a wrong password (given in the URL and as a variable).
    let cluster = nmc(&["cluster", "status"], &creds).await;
    assert!(
        cluster.status.success(),
        "{}",
        String::from_utf8_lossy(&cluster.stderr)
    );
    let mut wrong = creds.clone();
    wrong[2].1 = WRONG.into();
    let refused = nmc(&["cluster", "status"], &wrong).await;
    let in_url = format!("nats://nmc:{WRONG}@127.0.0.1:{}", nats.port);
    let refused_url = nmc(&["cluster", "status", "--nats", &in_url], &kv(&[])).await;
    for out in [&refused, &refused_url] {
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("refused this identity"), "{e}");
    }

    let mut everything = vec![node.log(), metrics, status, body];
    for out in [&cluster, &refused, &refused_url] {
        everything.push(String::from_utf8_lossy(&out.stdout).into_owned());
        everything.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    for text in &everything {
        for secret in [PASSWORD, TOKEN, WRONG] {
            assert!(!text.contains(secret), "{secret} leaked into: {text}");
        }
    }
}
