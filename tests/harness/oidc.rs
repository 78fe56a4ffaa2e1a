//! The console's OpenID Connect test set-up: a real provider (npm oidc-provider,
//! tests/console/oidc_provider.mjs) and `nmc console serve` signing in through it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use super::{Nats, NatsUrl, nmc_bin};

/// A child process killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The provider on `port` with the console (at `console`) as its client and `accounts`
/// (`sub`, `email`, `name`, `groups`, `password`).
pub fn provider(dir: &Path, port: u16, console: &str, accounts: Value) -> Killed {
    let config = dir.join("oidc.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({
            "clients": [{
                "client_id": "nmc-console",
                "client_secret": "console-test-secret",
                "redirect_uris": [format!("{console}/auth/callback")],
                "post_logout_redirect_uris": [format!("{console}/")],
            }],
            "accounts": accounts,
        }))
        .unwrap(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/console/oidc_provider.mjs");
    let child = super::spawn_ready(
        Command::new("node")
            .arg(script)
            .args(["--port", &port.to_string(), "--config"])
            .arg(&config)
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped()),
        &dir.join("oidc.log"),
        "the OpenID Connect provider (Node.js 20 with tests/console's npm packages)",
    );
    Killed(child)
}

/// `nmc console serve` on `console_port`, signing in with the provider at `issuer`; its
/// output in `dir`/console.err.
pub fn console(nats: &Nats, dir: &Path, console_port: u16, issuer: &str) -> Killed {
    let console = format!("http://127.0.0.1:{console_port}");
    Killed(
        Command::new(nmc_bin())
            .args(["console", "serve"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NMC_NATS_URL", nats.nats_url())
            .env("NMC_CONSOLE__LISTEN", format!("127.0.0.1:{console_port}"))
            .env("NMC_CONSOLE__DATA_DIR", dir.join("console-data"))
            .env(
                "NMC_CONSOLE__SESSION_KEY",
                "a-test-session-key-of-more-than-32-bytes",
            )
            .env("NMC_CONSOLE__OIDC__ISSUER_URL", issuer)
            .env("NMC_CONSOLE__OIDC__CLIENT_ID", "nmc-console")
            .env("NMC_CONSOLE__OIDC__CLIENT_SECRET", "console-test-secret")
            .env(
                "NMC_CONSOLE__OIDC__REDIRECT_URL",
                format!("{console}/auth/callback"),
            )
            .stdout(std::fs::File::create(dir.join("console.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("console.err")).unwrap())
            .spawn()
            .unwrap(),
    )
}
