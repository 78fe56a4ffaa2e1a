//! The console's API on a real NATS server, real nodes' buckets and real sled: sign-in with
//! the local users file, per-force access on every query and alert id, CSRF on every change,
//! refused without a session or with a forged cookie.

mod harness;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use harness::alerts::{alert_of, publish_alerts};
use harness::*;
use nmc_shared::alert::Level;
use serde_json::{Value, json};

/// A running `nmc console serve`, killed on drop.
struct Console {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- console log ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn start_console(nats: &Nats, dir: &Path) -> Console {
    let hash = |p: &str| nmc_node::console::users::hash_password(p).unwrap();
    let users = dir.join("users.yaml");
    std::fs::write(
        &users,
        format!(
            "users:\n  - name: analyst@ncsoc.example\n    password_hash: \"{}\"\n    groups: [nmc-analyst]\n  - name: soc@kent.example\n    password_hash: \"{}\"\n    groups: [nmc-force-kent]\n  - name: nobody@ncsoc.example\n    password_hash: \"{}\"\n    groups: [staff]\n",
            hash("analyst-pass"),
            hash("kent-pass"),
            hash("nobody-pass")
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.join("console.log");
    let child = Command::new(nmc_bin())
        .args(["console", "serve"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NMC_LOG_FORMAT", "text")
        .env("NMC_NATS_URL", nats.nats_url())
        .env("NMC_CONSOLE__LISTEN", format!("127.0.0.1:{port}"))
        .env("NMC_CONSOLE__DATA_DIR", dir.join("console-data"))
        .env("NMC_CONSOLE__USERS_FILE", &users)
        .env(
            "NMC_CONSOLE__SESSION_KEY",
            "a-test-session-key-of-more-than-32-bytes",
        )
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("console.err")).unwrap())
        .spawn()
        .unwrap();
    Console {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    }
}

/// A client of the console with its session cookie and CSRF token once signed in.
struct Client {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Client {
    fn new(base: &str) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            cookie: None,
            csrf: None,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c);
        }
        if csrf && let Some(t) = &self.csrf {
            req = req.header("X-CSRF-Token", t);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&b).unwrap());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.send(reqwest::Method::GET, path, None, false).await;
        (s, v)
    }

    async fn login(base: &str, user: &str, password: &str) -> Client {
        let mut c = Client::new(base);
        let (status, body, headers) = c
            .send(
                reqwest::Method::POST,
                "/api/login",
                Some(json!({"user": user, "password": password})),
                false,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let set = headers
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(set.contains(attr), "{set}");
        }
        c.cookie = Some(set.split(';').next().unwrap().to_string());
        c.csrf = Some(body["csrf"].as_str().unwrap().to_string());
        c
    }
}

#[tokio::test]
async fn each_principal_sees_and_changes_only_what_is_theirs() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _node = Node::start(
        &nats,
        &dir.path().join("node"),
        &NodeSpec {
            id: "node-a".into(),
            ..Default::default()
        },
    );
    let js = nats.js().await;
    wait_stream(&js, "KV_NMC_ALERT_STATES").await;
    let alerts: Vec<_> = (0..20)
        .map(|n| {
            alert_of(
                ["kent", "essex"][(n % 2) as usize],
                if n % 5 == 0 {
                    Level::High
                } else {
                    Level::Medium
                },
                n,
            )
        })
        .collect();
    publish_alerts(&js, &alerts).await;
    let console = start_console(&nats, dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http_get(&format!("{}/healthz", console.url)).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "console did not start: {}",
            std::fs::read_to_string(dir.path().join("console.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kent_alert = alerts[0].id.to_string();
    let essex_alert = alerts[1].id.to_string();

    // Without a session, with a forged cookie, with a wrong password or without a role.
    let anonymous = Client::new(&console.url);
    assert_eq!(anonymous.get("/api/alerts").await.0, 401);
    let mut forged = Client::new(&console.url);
    forged.cookie = Some("nmc_session=eyJ3aG8iOnsidXNlciI6IngiLCJhZG1pbiI6dHJ1ZX19.AAAA".into());
    assert_eq!(forged.get("/api/alerts").await.0, 401);
    for (user, password) in [
        ("analyst@ncsoc.example", "wrong"),
        ("nobody@ncsoc.example", "nobody-pass"),
        ("ghost", "x"),
    ] {
        let (status, _, _) = anonymous
            .send(
                reqwest::Method::POST,
                "/api/login",
                Some(json!({"user": user, "password": password})),
                false,
            )
            .await;
        assert_eq!(status, 401, "{user}");
    }

    // The analyst sees every force; the index fills from the stream.
    let analyst = Client::login(&console.url, "analyst@ncsoc.example", "analyst-pass").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let (status, page) = analyst.get("/api/alerts?limit=100").await;
        assert_eq!(status, 200, "{page}");
        if page["entries"].as_array().unwrap().len() == 20 {
            break page;
        }
        assert!(Instant::now() < deadline, "index incomplete: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let forces: std::collections::BTreeSet<&str> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["alert"]["force"].as_str().unwrap())
        .collect();
    assert_eq!(forces.len(), 2);
    assert_eq!(
        analyst.get(&format!("/api/alerts/{essex_alert}")).await.0,
        200
    );
    let (_, high) = analyst.get("/api/alerts?level=high&limit=100").await;
    assert_eq!(high["entries"].as_array().unwrap().len(), 4);

    // Kent's contact: kent only, whatever it asks for; essex's alert is not found.
    let kent = Client::login(&console.url, "soc@kent.example", "kent-pass").await;
    let (_, mine) = kent.get("/api/alerts?limit=100").await;
    let mine = mine["entries"].as_array().unwrap();
    assert_eq!(mine.len(), 10);
    assert!(mine.iter().all(|e| e["alert"]["force"] == "kent"));
    let (_, asked) = kent.get("/api/alerts?force=essex&limit=100").await;
    assert!(asked["entries"].as_array().unwrap().is_empty());
    assert_eq!(kent.get(&format!("/api/alerts/{essex_alert}")).await.0, 404);
    assert_eq!(kent.get(&format!("/api/alerts/{kent_alert}")).await.0, 200);

    // Changes need the CSRF token, and only on what is theirs.
    let ack = Some(json!({"action": "acknowledge", "note": "seen"}));
    let path = format!("/api/alerts/{kent_alert}/actions");
    assert_eq!(
        kent.send(reqwest::Method::POST, &path, ack.clone(), false)
            .await
            .0,
        403,
        "no CSRF token"
    );
    let (status, body, _) = kent
        .send(reqwest::Method::POST, &path, ack.clone(), true)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lifecycle"]["state"], "acknowledged");
    let (status, _, _) = kent
        .send(
            reqwest::Method::POST,
            &format!("/api/alerts/{essex_alert}/actions"),
            ack.clone(),
            true,
        )
        .await;
    assert_eq!(status, 404, "another force's alert cannot be acted on");
    let (status, body, _) = kent.send(reqwest::Method::POST, &path, ack, true).await;
    assert_eq!(status, 409, "{body}");
    // Another principal's CSRF token does not work with this session.
    let mut mixed = Client::new(&console.url);
    mixed.cookie = kent.cookie.clone();
    mixed.csrf = analyst.csrf.clone();
    let close = Some(json!({"action": "close", "outcome": "benign"}));
    assert_eq!(
        mixed
            .send(reqwest::Method::POST, &path, close.clone(), true)
            .await
            .0,
        403
    );
    // The analyst sees the change, the audit trail names who did it.
    let (status, body, _) = analyst
        .send(reqwest::Method::POST, &path, close, true)
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, detail) = analyst.get(&format!("/api/alerts/{kent_alert}")).await;
    assert_eq!(detail["entry"]["state"]["state"], "closed");
    let audit = detail["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["by"], "soc@kent.example");
    assert_eq!(audit[1]["by"], "analyst@ncsoc.example");
    let (_, closed) = analyst.get("/api/alerts?state=closed").await;
    assert_eq!(closed["entries"].as_array().unwrap().len(), 1);
    assert_eq!(analyst.get("/api/alerts?state=done").await.0, 400);

    // Signing out ends the session in the browser (the cookie is removed).
    let (status, _, headers) = kent
        .send(reqwest::Method::POST, "/api/logout", None, true)
        .await;
    assert_eq!(status, 200);
    assert!(
        headers
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("nmc_session=;")
    );
}
