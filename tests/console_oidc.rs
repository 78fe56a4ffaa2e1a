//! Sign-in to the console with a real OpenID Connect provider (npm oidc-provider, started by
//! the test: tests/console/oidc_provider.mjs): authorization code with PKCE, the ID token
//! verified, its `groups` claim mapped to roles; a state that does not match, a code replayed
//! and an identity without a role are refused.

mod harness;

use std::collections::BTreeMap;

use harness::oidc::{console as start_console, provider};
use harness::*;
use serde_json::{Value, json};

/// A browser's part, by hand: cookies per host, no automatic redirects.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    /// Sends a request with every cookie held (one host: 127.0.0.1); keeps what is set.
    async fn go(
        &mut self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> (u16, Option<String>, String) {
        let jar: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut req = self
            .http
            .request(method, url)
            .header("Cookie", jar.join("; "));
        if let Some(f) = form {
            let body: Vec<String> = f
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect();
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.join("&"));
        }
        let resp = req.send().await.unwrap();
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty()
                || attrs.to_ascii_lowercase().contains("max-age=0")
                || attrs.contains("1970")
            {
                self.cookies.remove(k.trim());
            } else {
                self.cookies.insert(k.trim().to_owned(), v.to_owned());
            }
        }
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (status, location, resp.text().await.unwrap())
    }

    /// Signs in as `login`/`password` from the console's /auth/login; the console's answer to
    /// the callback (status, location, body) and the callback URL itself.
    async fn sign_in(
        &mut self,
        console: &str,
        issuer: &str,
        login: &str,
        password: &str,
    ) -> ((u16, Option<String>, String), String) {
        let (status, to, body) = self
            .go(reqwest::Method::GET, &format!("{console}/auth/login"), None)
            .await;
        assert_eq!(status, 303, "{body}");
        let mut next = to.unwrap();
        assert!(next.starts_with(issuer), "{next}");
        assert!(next.contains("code_challenge_method=S256"), "PKCE: {next}");
        let mut posted = false;
        for _ in 0..10 {
            if next.starts_with(&format!("{console}/auth/callback")) {
                let answer = self.go(reqwest::Method::GET, &next, None).await;
                return (answer, next);
            }
            let url = if next.starts_with('/') {
                format!("{issuer}{next}")
            } else {
                next.clone()
            };
            let (status, to, page) = self.go(reqwest::Method::GET, &url, None).await;
            if status == 200 && !posted && page.contains("name=\"password\"") {
                posted = true;
                let action = page
                    .split("action=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned();
                let (s, to, p) = self
                    .go(
                        reqwest::Method::POST,
                        &format!("{issuer}{action}"),
                        Some(&[("login", login), ("password", password)]),
                    )
                    .await;
                assert!(s == 303 || s == 302, "login form answered {s}: {p}");
                next = to.unwrap();
                continue;
            }
            assert!(status == 303 || status == 302, "{status} at {url}: {page}");
            next = to.unwrap();
        }
        panic!("no callback after ten redirects");
    }
}

#[tokio::test]
async fn sign_in_with_openid_connect_maps_groups_to_roles_and_refuses_the_rest() {
    let Backend {
        nats,
        dir,
        node: _node,
        ..
    } = Backend::start(&[], vec![]).await;
    let (console_port, issuer_port) = (free_port(), free_port());
    let console = format!("http://127.0.0.1:{console_port}");
    let issuer = format!("http://127.0.0.1:{issuer_port}");
    let _provider = provider(
        dir.path(),
        issuer_port,
        &console,
        json!([
            {"sub": "alice", "email": "alice@ncsoc.example", "name": "Alice Analyst", "groups": ["nmc-analyst"], "password": "alice-pw-1"},
            {"sub": "kent-soc", "email": "soc@kent.example", "name": "Kent SOC", "groups": ["nmc-force-kent"], "password": "kent-pw-1"},
            {"sub": "visitor", "email": "visitor@example.test", "name": "Visitor", "groups": ["staff"], "password": "visitor-pw-1"},
        ]),
    );
    let _console = start_console(&nats, dir.path(), console_port, &issuer);
    wait_http_ok(&format!("{console}/healthz"), "the console").await;
    let log = || std::fs::read_to_string(dir.path().join("console.err")).unwrap_or_default();

    // Kent's contact: signed in, a Kent-only session.
    let mut kent = Browser::new();
    let ((status, to, body), callback) = kent
        .sign_in(&console, &issuer, "soc@kent.example", "kent-pw-1")
        .await;
    assert_eq!(status, 303, "{body}\n{}", log());
    assert_eq!(to.as_deref(), Some("/"));
    assert!(kent.cookies.contains_key("nmc_session"));
    assert!(
        !kent.cookies.contains_key("nmc_oidc"),
        "the sign-in cookie is gone"
    );
    let (status, _, session) = kent
        .go(
            reqwest::Method::GET,
            &format!("{console}/api/session"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let session: Value = serde_json::from_str(&session).unwrap();
    assert_eq!(session["who"]["user"], "soc@kent.example");
    assert_eq!(session["who"]["forces"], json!(["kent"]));
    assert_eq!(session["who"]["analyst"], false);
    // The same callback again (a replayed code, without the sign-in cookie): refused.
    let (status, _, _) = kent.go(reqwest::Method::GET, &callback, None).await;
    assert_eq!(status, 400);

    // The analyst: every force.
    let mut alice = Browser::new();
    let ((status, _, body), _) = alice
        .sign_in(&console, &issuer, "alice@ncsoc.example", "alice-pw-1")
        .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, session) = alice
        .go(
            reqwest::Method::GET,
            &format!("{console}/api/session"),
            None,
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&session).unwrap()["who"]["analyst"],
        true
    );

    // Signed in at the provider but no console role: no session.
    let mut visitor = Browser::new();
    let ((status, _, _), _) = visitor
        .sign_in(&console, &issuer, "visitor@example.test", "visitor-pw-1")
        .await;
    assert_eq!(status, 403);
    assert!(!visitor.cookies.contains_key("nmc_session"));

    // A callback whose state is not this browser's sign-in: refused before any exchange.
    let mut mallory = Browser::new();
    let (status, to, _) = mallory
        .go(reqwest::Method::GET, &format!("{console}/auth/login"), None)
        .await;
    assert_eq!(status, 303);
    assert!(to.unwrap().contains("state="));
    let (status, _, _) = mallory
        .go(
            reqwest::Method::GET,
            &format!("{console}/auth/callback?code=stolen&state=not-mine"),
            None,
        )
        .await;
    assert_eq!(status, 400);
    // A code that is not the provider's (the state matches): the exchange fails, no session.
    let mut guesser = Browser::new();
    let (_, to, _) = guesser
        .go(reqwest::Method::GET, &format!("{console}/auth/login"), None)
        .await;
    let to = to.unwrap();
    let state = to
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, _) = guesser
        .go(
            reqwest::Method::GET,
            &format!("{console}/auth/callback?code=made-up&state={state}"),
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert!(!guesser.cookies.contains_key("nmc_session"));
}
