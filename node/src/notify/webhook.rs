//! Webhooks: signed JSON for a force's own tools (ITSM, SOAR), and the Microsoft Teams
//! (Adaptive Card) and Slack (Block Kit) incoming-webhook formats.
//!
//! A signed webhook carries `Nmc-Timestamp` (Unix seconds) and `Nmc-Signature: v1=<hex>`, the
//! HMAC-SHA256 of `<timestamp>.<body>` under the channel's secret: a receiver recomputes it,
//! refuses a timestamp more than five minutes off and a signature it has seen (a replay).
//! `Idempotency-Key` is the alert id (a digest's id for a digest): a receiver that sees a key
//! twice has the message already.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::delivery::{Failure, Sent};
use super::message::AlertView;
use crate::config::NotifyConfig;

/// Header with the signing time.
pub const H_TIMESTAMP: &str = "Nmc-Timestamp";
/// Header with the signature.
pub const H_SIGNATURE: &str = "Nmc-Signature";
/// Header with the idempotency key.
pub const H_IDEMPOTENCY: &str = "Idempotency-Key";

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::from("v1=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// One POST to make.
pub struct Post {
    /// Where.
    pub url: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Signing secret (signed webhooks only).
    pub secret: Option<Vec<u8>>,
    /// `Idempotency-Key`.
    pub idempotency_key: String,
}

/// The HTTP side of the notifier.
#[derive(Clone)]
pub struct Poster {
    client: reqwest::Client,
}

impl Poster {
    /// A client with the system's CAs (plus `webhook_tls_ca`), TLS 1.2+ by rustls on ring,
    /// the attempt timeout, no redirects (a redirect could take the payload elsewhere).
    pub fn new(cfg: &NotifyConfig) -> Result<Poster> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if !cfg.webhook_tls_ca.as_os_str().is_empty() {
            add_pem(&mut roots, &cfg.webhook_tls_ca)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(cfg.attempt_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nmc/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the webhook client")?;
        Ok(Poster { client })
    }

    /// POSTs once: 2xx is sent; 408, 425, 429 and 5xx (and no answer) are worth retrying;
    /// other answers are permanent. The answer's status and the start of its body are kept.
    pub async fn post(&self, p: &Post, now_secs: i64) -> Result<Sent, Failure> {
        let mut req = self
            .client
            .post(&p.url)
            .header("Content-Type", "application/json")
            .header(H_IDEMPOTENCY, &p.idempotency_key);
        if let Some(secret) = &p.secret {
            req = req
                .header(H_TIMESTAMP, now_secs.to_string())
                .header(H_SIGNATURE, sign(secret, now_secs, &p.body));
        }
        let target = nmc_shared::contact::redact_url(&p.url);
        let resp = match req.body(p.body.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                // reqwest's message can include the URL: name the host only.
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                return Err(Failure::transient(format!("POST {target}: {what}")));
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let answer = format!(
            "HTTP {} {}",
            status.as_u16(),
            text.chars().take(200).collect::<String>()
        )
        .trim()
        .to_owned();
        if status.is_success() {
            Ok(Sent { response: answer })
        } else if status.is_server_error() || [408, 425, 429].contains(&status.as_u16()) {
            Err(Failure::transient(answer))
        } else {
            Err(Failure::permanent(answer))
        }
    }
}

fn add_pem(roots: &mut rustls::RootCertStore, path: &Path) -> Result<()> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading notifications.webhook_tls_ca {}", path.display()))?;
    for c in certs {
        roots
            .add(c.context("notifications.webhook_tls_ca is not PEM")?)
            .context("notifications.webhook_tls_ca holds an unusable certificate")?;
    }
    Ok(())
}

/// The signed webhook body of one alert for `contact`: the view (minimised evidence
/// included) and the rendered summary. The contact's name makes two contacts that share a URL
/// and secret get different bodies, hence different signatures.
pub fn generic(alert: &AlertView, summary: &str, contact: &str) -> Value {
    json!({
        "type": "nmc.alert",
        "contact": contact,
        "summary": summary.trim(),
        "alert": alert,
    })
}

/// The signed webhook body of a digest for `contact`.
pub fn generic_digest(
    id: &str,
    force: &str,
    alerts: &[AlertView],
    summary: &str,
    contact: &str,
) -> Value {
    json!({
        "type": "nmc.digest",
        "id": id,
        "force": force,
        "contact": contact,
        "summary": summary.trim(),
        "alerts": alerts,
    })
}

/// Text for a Teams TextBlock or fact: Adaptive Cards render a markdown subset, so the link
/// syntax of values an attacker may choose (a user name in a failed sign-in) is broken up.
fn teams_text(s: &str) -> String {
    s.replace("](", "] (").replace('[', "［").replace(']', "］")
}

/// A Teams message: one Adaptive Card 1.4 with the facts and a button to the console.
pub fn teams(alerts: &[AlertView], heading: &str) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "text": teams_text(heading.trim()), "weight": "Bolder", "size": "Medium", "wrap": true
    })];
    for a in alerts {
        let mut facts = vec![
            json!({"title": "Level", "value": a.level}),
            json!({"title": "Force", "value": a.force_name}),
            json!({"title": "Events", "value": format!("{} ({} to {})", a.count, a.first_seen, a.last_seen)}),
            json!({"title": "Alert id", "value": a.id}),
        ];
        facts.extend(
            a.group
                .iter()
                .map(|f| json!({"title": teams_text(&f.name), "value": teams_text(&f.value)})),
        );
        body.push(json!({"type": "TextBlock", "text": teams_text(&a.title), "weight": "Bolder", "wrap": true, "separator": true}));
        body.push(json!({"type": "FactSet", "facts": facts}));
        if alerts.len() == 1 && !a.mitigation.is_empty() {
            body.push(json!({"type": "TextBlock", "text": teams_text(&format!("What to do: {}", a.mitigation)), "wrap": true}));
        }
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let [a] = alerts
        && !a.link.is_empty()
    {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Open in the console", "url": a.link}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": card,
        }],
    })
}

/// A Slack message: the summary as `text` (the notification), Block Kit sections.
pub fn slack(alerts: &[AlertView], heading: &str) -> Value {
    let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let mut blocks = vec![json!({
        "type": "header", "text": {"type": "plain_text", "text": cut(heading.trim(), 150)}
    })];
    // 50 blocks at most: a header, then up to 16 alerts of three blocks, then a note.
    for a in alerts.iter().take(16) {
        let mut fields = vec![
            json!({"type": "mrkdwn", "text": cut(&format!("*Level*\n{}", a.level), 2000)}),
            json!({"type": "mrkdwn", "text": cut(&format!("*Force*\n{}", a.force_name), 2000)}),
            json!({"type": "mrkdwn", "text": cut(&format!("*Events*\n{} ({} to {})", a.count, a.first_seen, a.last_seen), 2000)}),
        ];
        fields.extend(a.group.iter().take(7).map(|f| {
            json!({"type": "mrkdwn", "text": cut(&format!("*{}*\n{}", escape_mrkdwn(&f.name), escape_mrkdwn(&f.value)), 2000)})
        }));
        blocks.push(json!({"type": "divider"}));
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": cut(&format!("*{}*\n{}", escape_mrkdwn(&a.title), escape_mrkdwn(&a.mitigation)), 3000)},
            "fields": fields,
        }));
        let context = if a.link.is_empty() {
            format!("Alert {}", a.id)
        } else {
            format!("Alert <{}|{}>", a.link, a.id)
        };
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&context, 2000)}]}));
    }
    if alerts.len() > 16 {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("and {} more in the console", alerts.len() - 16)}]}));
    }
    json!({"text": cut(&escape_mrkdwn(heading.trim()), 3000), "blocks": blocks})
}

/// Slack's mrkdwn control characters, escaped as Slack documents (`&`, `<`, `>`).
fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Expected values computed independently with Python's hmac module.
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{}"),
            "v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        assert_eq!(
            sign(b"Jefe", 0, b"what do ya want for nothing?"),
            "v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
    }

    #[test]
    fn attacker_chosen_values_cannot_become_links_or_mentions() {
        let mut v = super::super::sample::alert_view();
        v.group = vec![super::super::message::Field {
            name: "user".into(),
            value: "[Reset your password](https://evil.example)".into(),
        }];
        let card = teams(
            std::slice::from_ref(&v),
            "<!channel> [x](https://evil.example)",
        )
        .to_string();
        assert!(!card.contains("](https://evil"), "{card}");
        let msg = slack(
            std::slice::from_ref(&v),
            "<!channel> <https://evil.example|x>",
        );
        let text = msg["text"].as_str().unwrap();
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        // Header blocks are plain_text (never parsed); every mrkdwn text is escaped.
        fn mrkdwn(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if m.get("type") == Some(&json!("mrkdwn")) {
                        out.push(m["text"].as_str().unwrap_or("").to_owned());
                    }
                    m.values().for_each(|x| mrkdwn(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| mrkdwn(x, out)),
                _ => {}
            }
        }
        let mut texts = Vec::new();
        mrkdwn(&msg, &mut texts);
        assert!(!texts.is_empty());
        for t in texts {
            assert!(!t.contains("<!") && !t.contains("<https://evil"), "{t}");
        }
    }
}
