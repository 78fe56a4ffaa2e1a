//! The `[console]` table: how `nmc console` serves the analyst console.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::console::access::RoleMapping;
use crate::secret::Secret;

/// Console settings (`nmc console --config FILE`; the file's `nats_*` keys say how to reach
/// NATS).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Address and port of the web server.
    pub listen: String,
    /// Directory of the console's index (rebuilt from the streams when lost).
    pub data_dir: PathBuf,
    /// PEM certificate chain: HTTPS when set (with `tls_key`).
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// Key that signs session cookies: at least 32 bytes, the same on every console replica
    /// (best as `NMC_CONSOLE__SESSION_KEY` from a secret). Empty: a random one per process
    /// (sessions end when it restarts; one replica only).
    pub session_key: Secret,
    /// Seconds a session lasts.
    pub session_ttl_secs: u64,
    /// The local users file (argon2id hashes); empty: no local sign-in.
    pub users_file: PathBuf,
    /// How identity groups become roles.
    pub roles: RoleMapping,
    /// Sign-in with an OpenID Connect provider (when `issuer_url` is set).
    pub oidc: OidcConfig,
}

/// The console's OpenID Connect client registration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`);
    /// empty: no OpenID Connect sign-in.
    pub issuer_url: String,
    /// The console's client id at the provider.
    pub client_id: String,
    /// Its client secret (best as `NMC_CONSOLE__OIDC__CLIENT_SECRET` from a secret).
    pub client_secret: Secret,
    /// The console's callback URL as registered: `https://<console>/auth/callback`.
    pub redirect_url: String,
    /// Scopes asked for (`openid` always); the ID token's `groups` claim gives the roles.
    pub scopes: Vec<String>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer_url: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            redirect_url: String::new(),
            scopes: vec![
                "openid".into(),
                "email".into(),
                "profile".into(),
                "groups".into(),
            ],
        }
    }
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("nmc-console"),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            session_key: Secret::default(),
            session_ttl_secs: 8 * 3600,
            users_file: PathBuf::new(),
            roles: RoleMapping::default(),
            oidc: OidcConfig::default(),
        }
    }
}

impl ConsoleConfig {
    /// Checks what spans fields, saying what to change.
    pub fn validate(&self) -> Result<()> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "console.listen `{}` is not an address and port such as 127.0.0.1:8080",
                self.listen
            );
        }
        if self.tls_cert.as_os_str().is_empty() != self.tls_key.as_os_str().is_empty() {
            bail!("console.tls_cert and console.tls_key go together: set both, or neither");
        }
        if !self.session_key.is_empty() && self.session_key.expose().len() < 32 {
            bail!("console.session_key must be at least 32 bytes (a long random string)");
        }
        let o = &self.oidc;
        if !o.issuer_url.is_empty()
            && (o.client_id.is_empty() || o.client_secret.is_empty() || o.redirect_url.is_empty())
        {
            bail!(
                "console.oidc needs client_id, client_secret and redirect_url with its issuer_url"
            );
        }
        if self.session_ttl_secs == 0 || self.session_ttl_secs > 7 * 86_400 {
            bail!("console.session_ttl_secs must be between 1 and 604800 (a week)");
        }
        Ok(())
    }
}
