//! The console in a real browser: Debian's Chromium driven by Playwright
//! (tests/console/specs/console.spec.mjs), signing in through a real OpenID Connect provider,
//! over alerts raised by a real node from real events. Analysts see the overview, the queue
//! and an alert's evidence and acknowledge it, and a second analyst's browser shows the change
//! and a new alert live; a force's contact sees only that force through the pages; an
//! administrator onboards a force and adds a contact; axe finds no serious or critical
//! violation on any page. Screenshots are saved in tests/console/screenshots/.

mod harness;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::alerts::{alert_of, publish_alerts};
use harness::oidc::{console, provider};
use harness::*;
use nmc_shared::alert::Level;
use serde_json::json;

#[tokio::test]
async fn analysts_contacts_and_administrators_in_a_real_browser() {
    let Backend {
        nats,
        js,
        dir,
        node,
        ..
    } = Backend::start(&["kent", "essex"], vec![rules_dir("identity")]).await;
    // The pack the console shows (the same rules the node started with).
    let push = Command::new(nmc_bin())
        .args(["rules", "push"])
        .arg(rules_dir("identity"))
        .env("NMC_NATS_URL", nats.nats_url())
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    for (force, lines) in [
        ("kent", scenario("kent", 300, true, true, 2)),
        ("essex", scenario("essex", 200, false, true, 0)),
    ] {
        publish(&js, &format!("nmc.events.{force}.entra_signin"), &lines).await;
    }
    for force in ["kent", "essex"] {
        let got = wait_for(
            &js,
            "NMC_ALERTS",
            &format!("nmc.alerts.{force}.>"),
            1,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .await;
        assert!(!got.is_empty(), "no alert for {force}:\n{}", node.log());
    }
    let essex = alerts(&read_all(&js, "NMC_ALERTS", "nmc.alerts.essex.>").await);

    let (console_port, issuer_port) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{console_port}");
    let issuer = format!("http://127.0.0.1:{issuer_port}");
    let _provider = provider(
        dir.path(),
        issuer_port,
        &url,
        json!([
            {"sub": "alice", "email": "alice@ncsoc.example", "name": "Alice Analyst", "groups": ["nmc-analyst"], "password": "alice-pw-1"},
            {"sub": "bob", "email": "bob@ncsoc.example", "name": "Bob Analyst", "groups": ["nmc-analyst"], "password": "bob-pw-1"},
            {"sub": "kent-soc", "email": "soc@kent.example", "name": "Kent SOC", "groups": ["nmc-force-kent"], "password": "kent-pw-1"},
            {"sub": "ada", "email": "ada@ncsoc.example", "name": "Ada Admin", "groups": ["nmc-admin"], "password": "ada-pw-1"},
        ]),
    );
    let _console = console(&nats, dir.path(), console_port, &issuer);
    wait_http_ok(&format!("{url}/healthz"), "the console").await;

    // The spec asks for a new alert by creating this file; it is published at once.
    let trigger = dir.path().join("publish-new-alert");
    let publisher = {
        let (js, trigger) = (js.clone(), trigger.clone());
        tokio::spawn(async move {
            while !trigger.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            publish_alerts(&js, &[alert_of("kent", Level::Critical, 4242)]).await;
        })
    };
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/console");
    let out = tokio::process::Command::new(here.join("node_modules/.bin/playwright"))
        .args([
            "test",
            "--config",
            "playwright.config.mjs",
            "specs/console.spec.mjs",
        ])
        .current_dir(&here)
        .env("NMC_CONSOLE_URL", &url)
        .env("NMC_TRIGGER", &trigger)
        .env(
            "NMC_NEW_ALERT",
            alert_of("kent", Level::Critical, 4242).id.to_string(),
        )
        .env("NMC_ESSEX_ALERT", essex[0].id.to_string())
        .output()
        .await
        .expect("tests/console's npm packages (.ci/install-tools) and Debian's chromium");
    publisher.abort();
    assert!(
        out.status.success(),
        "the browser tests failed:\n{}\n{}\n---- console ----\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("console.err")).unwrap_or_default()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
}
