//! Connecting to NATS: the servers, the identity (a creds file, an nkey seed, a user and
//! password, or a token), TLS (the CA, an optional client certificate, `require_tls`) and the
//! inbox prefix a restricted identity may subscribe to. One set-up for the node and every
//! command, so that each of them authenticates the same way (`docs/security.md`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::{ConnectErrorKind, ConnectOptions};
use tracing::warn;

use crate::config::Config;
use crate::secret::Secret;

/// Where NATS is and how to prove who we are: what [`connect`] needs. Built from the node's
/// configuration (`From<&Config>`) or a command's `--nats*` options; it prints
/// (`Debug`, [`NatsConnect::describe`]) without its secrets.
#[derive(Clone, Debug, Default)]
pub struct NatsConnect {
    /// Server URL(s), comma-separated.
    pub urls: String,
    /// A NATS `.creds` file (user JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`), as `nmc auth nats-config` writes them.
    pub nkey: Option<PathBuf>,
    /// A user name (with [`NatsConnect::password`]).
    pub user: Option<String>,
    /// The user's password.
    pub password: Secret,
    /// A bearer token.
    pub token: Secret,
    /// PEM file of the CA(s) that sign the servers' certificates.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of [`NatsConnect::tls_cert`].
    pub tls_key: Option<PathBuf>,
    /// Refuse any connection that is not TLS.
    pub require_tls: bool,
    /// Prefix of this client's reply subjects (`_INBOX` by default). A restricted identity may
    /// only subscribe to its own prefix, so that nobody else's replies reach it.
    pub inbox_prefix: Option<String>,
}

impl From<&Config> for NatsConnect {
    /// The node configuration's `nats_*` keys and `require_tls` (empty values: not set).
    fn from(cfg: &Config) -> NatsConnect {
        let path = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
        let text = |t: &String| (!t.is_empty()).then(|| t.clone());
        NatsConnect {
            urls: cfg.nats_url.clone(),
            creds: path(&cfg.nats_creds),
            nkey: path(&cfg.nats_nkey),
            user: text(&cfg.nats_user),
            password: cfg.nats_password.clone(),
            token: cfg.nats_token.clone(),
            tls_ca: path(&cfg.nats_tls_ca),
            tls_cert: path(&cfg.nats_tls_cert),
            tls_key: path(&cfg.nats_tls_key),
            require_tls: cfg.require_tls,
            inbox_prefix: text(&cfg.nats_inbox_prefix),
        }
    }
}

/// The one credential a connection presents.
enum Credential<'a> {
    None,
    Creds(&'a Path),
    Nkey(&'a Path),
    UserPassword(&'a str),
    Token,
}

impl NatsConnect {
    /// Connection settings for `urls` with no credential and no TLS (development and tests).
    pub fn plain(urls: impl Into<String>) -> NatsConnect {
        NatsConnect {
            urls: urls.into(),
            ..Default::default()
        }
    }

    /// The servers and the identity, for messages: never a secret (URLs lose their
    /// `user:password@`, files are named, not read).
    pub fn describe(&self) -> String {
        let urls = self
            .urls
            .split(',')
            .map(|u| redact_url(u.trim()))
            .collect::<Vec<_>>()
            .join(",");
        let who = match self.credential() {
            Ok(Credential::None) | Err(_) => "no credential".to_owned(),
            Ok(Credential::Creds(p)) => format!("creds file {}", p.display()),
            Ok(Credential::Nkey(p)) => format!("nkey seed file {}", p.display()),
            Ok(Credential::UserPassword(u)) => format!("user `{u}`"),
            Ok(Credential::Token) => "a token".to_owned(),
        };
        format!("{urls} with {who}")
    }

    /// The configured credential: at most one kind may be set.
    fn credential(&self) -> Result<Credential<'_>> {
        let mut set = Vec::new();
        if let Some(p) = &self.creds {
            set.push(("nats_creds", Credential::Creds(p)));
        }
        if let Some(p) = &self.nkey {
            set.push(("nats_nkey", Credential::Nkey(p)));
        }
        if let Some(u) = &self.user {
            set.push(("nats_user", Credential::UserPassword(u)));
        }
        if !self.token.is_empty() {
            set.push(("nats_token", Credential::Token));
        }
        if !self.password.is_empty() && self.user.is_none() {
            bail!("nats_password is set without nats_user: set both, or neither");
        }
        if set.len() > 1 {
            let names: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
            bail!(
                "several NATS credentials are configured ({}): set exactly one",
                names.join(", ")
            );
        }
        Ok(set.pop().map_or(Credential::None, |(_, c)| c))
    }

    /// Whether any credential is configured.
    pub fn has_credential(&self) -> bool {
        !matches!(self.credential(), Ok(Credential::None))
    }

    /// The client options: credential, TLS, inbox prefix. Reads the credential files (their
    /// contents never reach an error message).
    async fn options(&self, name: &str) -> Result<ConnectOptions> {
        let mut o = ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5));
        match self.credential()? {
            Credential::None => {}
            Credential::Creds(p) => {
                o = o.credentials_file(p).await.with_context(|| {
                    format!("reading the NATS credentials file {}", p.display())
                })?;
            }
            Credential::Nkey(p) => o = o.nkey(read_seed(p)?),
            Credential::UserPassword(u) => {
                if self.password.is_empty() {
                    bail!("nats_user `{u}` is set without nats_password");
                }
                o = o.user_and_password(u.to_owned(), self.password.expose().to_owned());
            }
            Credential::Token => o = o.token(self.token.expose().to_owned()),
        }
        if let Some(ca) = &self.tls_ca {
            readable(ca, "nats_tls_ca")?;
            o = o.add_root_certificates(ca.clone());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                readable(cert, "nats_tls_cert")?;
                readable(key, "nats_tls_key")?;
                o = o.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => bail!("nats_tls_cert and nats_tls_key go together: set both, or neither"),
        }
        if self.require_tls {
            o = o.require_tls(true);
        }
        if let Some(prefix) = &self.inbox_prefix {
            if prefix.is_empty() || prefix.contains(['*', '>', ' ']) || prefix.ends_with('.') {
                bail!(
                    "nats_inbox_prefix `{prefix}` must be a subject prefix without wildcards, spaces or a trailing `.`"
                );
            }
            o = o.custom_inbox_prefix(prefix);
        }
        Ok(o)
    }
}

/// Reads an nkey seed file: one seed (`S...`), checked before use; the file's contents never
/// appear in an error.
fn read_seed(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the NATS nkey seed file {}", path.display()))?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('S'))
        .map(str::to_owned);
    match seed {
        Some(s) if nkeys::KeyPair::from_seed(&s).is_ok() => Ok(s),
        _ => bail!(
            "{} holds no valid nkey seed (a line starting with `SU`, as `nmc auth nats-config` writes)",
            path.display()
        ),
    }
}

fn readable(path: &Path, key: &str) -> Result<()> {
    std::fs::metadata(path)
        .map(|_| ())
        .with_context(|| format!("{key}: cannot read {}", path.display()))
}

/// `url` without its `user:password@` part, if any.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<redacted>@{}", &url[..scheme], &url[at + 1..])
        }
        (None, Some(at)) => format!("<redacted>@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The server addresses of a comma-separated list of URLs.
pub(super) fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>> {
    let servers: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse()
                .with_context(|| format!("`{}` is not a NATS server URL", redact_url(u)))
        })
        .collect::<Result<_>>()?;
    if servers.is_empty() {
        bail!("no NATS server URL given");
    }
    Ok(servers)
}

/// Whether a failed connection failed in TLS: the client's own verification (unknown CA,
/// wrong name), or the server's alert (a client certificate missing or not trusted). async-nats
/// reports some of these as I/O errors: the rustls error inside tells.
fn is_tls_failure(e: &async_nats::ConnectError) -> bool {
    if e.kind() == ConnectErrorKind::Tls {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// Connects with a client name, calling `on_event` with every connection event (each is also
/// logged). A refused identity or a failed TLS handshake is an error at once, with what to
/// check; a server that is not reachable yet is retried in the background (a node started
/// before its NATS cluster waits for it).
pub async fn connect(
    nats: &NatsConnect,
    name: &str,
    on_event: impl Fn(&async_nats::Event) + Send + Sync + 'static,
) -> Result<async_nats::Client> {
    let servers = server_addrs(&nats.urls)?;
    let on_event = Arc::new(on_event);
    let with_events = |o: ConnectOptions| {
        let on_event = on_event.clone();
        o.event_callback(move |event| {
            let on_event = on_event.clone();
            async move {
                match &event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                    other => tracing::warn!(event = %other, "NATS connection event"),
                }
                on_event(&event);
            }
        })
    };
    let first = with_events(nats.options(name).await?)
        .connect(servers.clone())
        .await;
    match first {
        Ok(client) => return Ok(client),
        Err(e) if is_tls_failure(&e) => bail!(
            "TLS with NATS at {} failed ({e}): check nats_tls_ca (the CA that signed the server's certificate), nats_tls_cert and nats_tls_key, require_tls, and that the server speaks TLS",
            nats.describe()
        ),
        Err(e) => match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => bail!(
                "NATS at {} refused this identity ({e}): check the credential (nats_creds, nats_nkey, nats_user and nats_password, or nats_token) and that the server's authorization configuration lists it",
                nats.describe()
            ),
            _ => warn!(
                nats = %nats.describe(),
                error = %e,
                "NATS is not reachable yet; retrying in the background"
            ),
        },
    }
    with_events(nats.options(name).await?)
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {}", nats.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_are_comma_separated() {
        assert_eq!(server_addrs("nats://127.0.0.1:4222").unwrap().len(), 1);
        let three = server_addrs("nats://a:4222, nats://b:4222,nats://c:4222").unwrap();
        assert_eq!(three.len(), 3);
        assert!(server_addrs("").is_err());
        let e = server_addrs("nats://a:4222,nats://u:secret@b:port").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("nats://<redacted>@b:port"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("nats://u:pw@host:4222"),
            "nats://<redacted>@host:4222"
        );
        assert_eq!(redact_url("tls://host:4222"), "tls://host:4222");
        assert_eq!(redact_url("u:pw@host"), "<redacted>@host");
    }

    #[test]
    fn one_credential_at_most_and_descriptions_hold_no_secret() {
        let mut c = NatsConnect::plain("nats://u:pw@h:1");
        c.token = Secret::new("tok-123");
        assert_eq!(c.describe(), "nats://<redacted>@h:1 with a token");
        c.user = Some("alice".into());
        c.password = Secret::new("pw-456");
        let e = c.credential().err().unwrap().to_string();
        assert!(e.contains("nats_user, nats_token"), "{e}");
        let all = format!("{} {c:?} {e}", c.describe());
        assert!(!all.contains("tok-123") && !all.contains("pw-456"), "{all}");
        let lone = NatsConnect {
            password: Secret::new("x"),
            ..NatsConnect::plain("nats://h:1")
        };
        assert!(lone.credential().is_err());
    }

    #[test]
    fn seed_files_are_checked_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.nk");
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        std::fs::write(&good, format!("{seed}\n")).unwrap();
        assert_eq!(read_seed(&good).unwrap(), seed);
        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "SUNOTASEEDATALLBUTSECRETISH\n").unwrap();
        let e = format!("{:#}", read_seed(&bad).unwrap_err());
        assert!(!e.contains("SUNOTASEED"), "{e}");
        assert!(e.contains("bad.nk"), "{e}");
    }
}
