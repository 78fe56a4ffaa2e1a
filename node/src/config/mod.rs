//! Node configuration: a TOML file, overridden key by key by `NMC_<KEY>` environment variables
//! (typed by the field they set; `__` steps into tables: see [`env`]).
//!
//! Telemetry is configured by the standard `OTEL_*` variables instead (see `telemetry`).

pub mod console;
pub mod env;
pub mod notifications;

pub use console::ConsoleConfig;
pub use notifications::{NotifyConfig, SmtpTls};

pub use crate::secret::Secret;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nmc_shared::ForceId;
use serde::{Deserialize, Serialize};

/// Everything one `nmc node` needs to run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Unique name of this node, written on every alert it raises.
    pub node_id: String,
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    /// NATS `.creds` file (user JWT and nkey seed); empty: none. One credential at most of
    /// `nats_creds`, `nats_nkey`, `nats_user` + `nats_password`, `nats_token`.
    pub nats_creds: PathBuf,
    /// File holding this identity's nkey seed (`nmc auth nats-config` writes them); empty: none.
    pub nats_nkey: PathBuf,
    /// NATS user name (with `nats_password`); empty: none.
    pub nats_user: String,
    /// NATS password of `nats_user` (best given as `NMC_NATS_PASSWORD` from a secret).
    pub nats_password: Secret,
    /// NATS token (best given as `NMC_NATS_TOKEN` from a secret); empty: none.
    pub nats_token: Secret,
    /// PEM file of the CA(s) that sign the NATS servers' certificates; empty: the system's.
    pub nats_tls_ca: PathBuf,
    /// PEM client certificate for NATS servers that verify clients; empty: none.
    pub nats_tls_cert: PathBuf,
    /// PEM private key of `nats_tls_cert`.
    pub nats_tls_key: PathBuf,
    /// Refuse to talk to NATS without TLS.
    pub require_tls: bool,
    /// Prefix of reply subjects (`_INBOX` when empty). `nmc auth nats-config` gives restricted
    /// identities their own (`_INBOX_<identity>`), the only one they may subscribe to.
    pub nats_inbox_prefix: String,
    /// Directory of the node's sled database.
    pub data_dir: PathBuf,
    /// Directories of Sigma rule files (`.yml`/`.yaml`, searched recursively).
    pub rules_dirs: Vec<PathBuf>,
    /// Forces this node onboards at start-up if they are not onboarded yet (phase
    /// `cloud_and_onprem`). A convenience for development and tests: in production use
    /// `nmc forces add`. Which node processes a force is decided by the cluster, not here.
    pub forces: Vec<ForceId>,
    /// Whether this node takes part in triage: dead-lettering events of forces that are not
    /// onboarded (a shared durable consumer: any number of nodes may do it).
    pub triage: bool,
    /// Whether this node delivers alerts to force contacts (a shared durable consumer on
    /// `NMC_ALERTS`: any number of nodes may do it), as `[notifications]` says.
    pub notify: bool,
    /// How notifications are delivered (nodes with `notify = true`).
    pub notifications: NotifyConfig,
    /// How `nmc console` serves the analyst console.
    pub console: ConsoleConfig,
    /// Relative capacity of this node for force assignment (rendezvous weight).
    pub weight: u32,
    /// Seconds after its last heartbeat that a node counts as gone.
    pub node_ttl_secs: u64,
    /// Seconds a force lease lasts without renewal: the failover time is about this long. A
    /// node that cannot renew stops processing the force before it expires.
    pub lease_ttl_secs: u64,
    /// Seconds between force-state checkpoints to the object store (also written on release).
    pub checkpoint_interval_secs: u64,
    /// Seconds a SIGTERM'ed node has to finish batches, checkpoint and release its forces.
    pub shutdown_grace_secs: u64,
    /// Most events read and evaluated in one step of a force.
    pub batch_size: usize,
    /// Milliseconds a force's applied state may run ahead of sled before it is committed (also
    /// committed when the force goes quiet, before a handoff and before a new rule pack). A
    /// crash replays at most this much from `NMC_EVENTS_<force>`; 0 commits after every batch.
    pub commit_interval_ms: u64,
    /// Milliseconds without a new event after which a force commits what it applied, before
    /// its interval is up: a quiet force gains nothing by waiting.
    pub commit_quiet_ms: u64,
    /// Events after which a commit is due even within the interval (bounds the replay of a
    /// crash during a backlog).
    pub commit_max_events: usize,
    /// Largest accepted event payload, in bytes; larger events are dead-lettered.
    pub max_event_bytes: usize,
    /// Attempts at an event that makes rule evaluation panic before it is dead-lettered.
    pub max_attempts: u32,
    /// Arbiters (threads) running force actors; 0 means one per CPU.
    pub workers: usize,
    /// Retention of `NMC_EVENTS_<force>`, in seconds: the replay and backfill horizon.
    pub events_max_age_secs: u64,
    /// `NMC_ALERTS` duplicate window, in seconds.
    pub alerts_duplicate_window_secs: u64,
    /// Retention of `NMC_ALERTS` and `NMC_DLQ`, in seconds.
    pub alerts_max_age_secs: u64,
    /// Replicas of each stream (3 in a production NATS cluster).
    pub stream_replicas: usize,
    /// Allowed lateness of event time, in seconds: events that feed correlations wait until the
    /// force's newest event time is this far past them, so that disorder within it changes no
    /// alert. Correlation alerts trail by this much event time; detections do not wait.
    pub lateness_secs: u64,
    /// Per-source lateness overrides (source kind -> seconds, e.g. `aws_cloudtrail = 900`).
    /// A force waits for the largest lateness of all sources.
    pub source_lateness_secs: std::collections::BTreeMap<String, u64>,
    /// Events stamped further than this many seconds in the future (by this node's clock) are
    /// dead-lettered as `future_time`: one bad clock must not push a force's event time ahead.
    pub max_future_secs: u64,
    /// Events stamped further than this many seconds in the past (by this node's clock) are
    /// dead-lettered as `past_time`; 0 turns the check off (the default: backfills and replays
    /// of old samples are legitimate). Events before 2000-01-01 are always `bad_time`.
    pub max_past_secs: u64,
    /// Largest total size, in bytes, of an event message's NATS headers (names and values);
    /// an event with larger headers is dead-lettered as `oversize_headers` without its headers
    /// being read or copied. Collectors set a `traceparent` and perhaps a message id: 8 KiB is
    /// ample.
    pub max_header_bytes: usize,
    /// Values of `%name%` placeholders for Sigma's `expand` modifier (name without `%`).
    pub placeholders: std::collections::BTreeMap<String, Vec<String>>,
    /// Address of the node's HTTP endpoints (`/healthz`, `/readyz`, `/metrics`,
    /// `/api/v1/status`). Loopback by default: expose it deliberately (a pod's IP in
    /// Kubernetes).
    pub http_listen: String,
    /// PEM certificate chain for the HTTP endpoints: HTTPS when set (with `http_tls_key`).
    pub http_tls_cert: PathBuf,
    /// PEM private key of `http_tls_cert`.
    pub http_tls_key: PathBuf,
    /// Bearer token that `/api/v1/*` requires (best given as `NMC_HTTP_API_TOKEN` from a
    /// secret); empty: open. `/healthz`, `/readyz` and `/metrics` stay open.
    pub http_api_token: Secret,
    /// Seconds a feed (a force's source) may be silent before it counts as silent (exported as
    /// `nmc_feed_silence_threshold_seconds`, which the "feed silent" alert compares with).
    pub feed_silence_secs: u64,
    /// Per-source overrides of `feed_silence_secs` (source kind -> seconds; e.g. CloudTrail
    /// arrives in batches every few minutes: `aws_cloudtrail = 1800`).
    pub source_feed_silence_secs: std::collections::BTreeMap<String, u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: default_node_id(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: PathBuf::new(),
            nats_nkey: PathBuf::new(),
            nats_user: String::new(),
            nats_password: Secret::default(),
            nats_token: Secret::default(),
            nats_tls_ca: PathBuf::new(),
            nats_tls_cert: PathBuf::new(),
            nats_tls_key: PathBuf::new(),
            require_tls: false,
            nats_inbox_prefix: String::new(),
            data_dir: PathBuf::from("nmc-data"),
            rules_dirs: Vec::new(),
            forces: Vec::new(),
            triage: true,
            notify: false,
            notifications: NotifyConfig::default(),
            console: ConsoleConfig::default(),
            weight: 1,
            node_ttl_secs: 5,
            lease_ttl_secs: 5,
            checkpoint_interval_secs: 60,
            shutdown_grace_secs: 25,
            batch_size: 500,
            commit_interval_ms: 1000,
            commit_quiet_ms: 100,
            commit_max_events: 100_000,
            max_event_bytes: 256 * 1024,
            max_attempts: 3,
            workers: 0,
            events_max_age_secs: 7 * 86_400,
            alerts_duplicate_window_secs: 15 * 60,
            alerts_max_age_secs: 90 * 86_400,
            stream_replicas: 1,
            lateness_secs: 300,
            source_lateness_secs: Default::default(),
            max_future_secs: 900,
            max_past_secs: 0,
            max_header_bytes: 8 * 1024,
            placeholders: Default::default(),
            http_listen: "127.0.0.1:9464".into(),
            http_tls_cert: PathBuf::new(),
            http_tls_key: PathBuf::new(),
            http_api_token: Secret::default(),
            feed_silence_secs: 900,
            source_feed_silence_secs: Default::default(),
        }
    }
}

fn default_node_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("nmc-{}", std::process::id()))
}

impl Config {
    /// `commit_interval_ms` as a duration.
    pub fn commit_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.commit_interval_ms)
    }

    /// `commit_quiet_ms` as a duration.
    pub fn commit_quiet(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.commit_quiet_ms)
    }

    /// Loads `path` (if given) and applies `NMC_*` overrides from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing config file {}", p.display()))?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default())
            .context("serializing the default configuration")?;
        env::apply(&mut table, &defaults, vars)?;
        let cfg: Config = table
            .try_into()
            .context("invalid configuration (file keys or NMC_* overrides)")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the rules that span fields, with a message that says what to change.
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if self.commit_max_events == 0 {
            bail!("commit_max_events must be at least 1");
        }
        if self.commit_interval_ms > 60_000 {
            bail!(
                "commit_interval_ms ({}) must be at most 60000: a crash replays this much of every force",
                self.commit_interval_ms
            );
        }
        if self.max_attempts == 0 {
            bail!("max_attempts must be at least 1");
        }
        if self.node_id.is_empty() || self.node_id.contains(['.', '*', '>', ' ']) {
            bail!(
                "node_id `{}` must be non-empty without `.`, `*`, `>` or spaces",
                self.node_id
            );
        }
        if self.lease_ttl_secs < 2 || self.node_ttl_secs < 2 {
            bail!("lease_ttl_secs and node_ttl_secs must be at least 2");
        }
        // A replay after a takeover re-raises the alerts of up to one checkpoint interval plus
        // the takeover, and a restart those of up to one commit interval (alerts are published
        // before their state is committed); JetStream drops them as duplicates only within its
        // duplicate window.
        let commit_secs = self.commit_interval_ms.div_ceil(1000);
        let replay_horizon =
            self.checkpoint_interval_secs + commit_secs + 2 * self.lease_ttl_secs + 60;
        if self.alerts_duplicate_window_secs < replay_horizon {
            bail!(
                "alerts_duplicate_window_secs ({}) must be at least checkpoint_interval_secs + commit_interval_ms + 2 x lease_ttl_secs + 60 s ({replay_horizon} s): otherwise a takeover or a restart can publish duplicate alerts",
                self.alerts_duplicate_window_secs
            );
        }
        for (key, map) in [
            ("source_lateness_secs", &self.source_lateness_secs),
            ("source_feed_silence_secs", &self.source_feed_silence_secs),
        ] {
            for k in map.keys() {
                if k.parse::<nmc_shared::SourceKind>().is_err() {
                    bail!("{key} names `{k}`, which is not a source kind");
                }
            }
        }
        if self.http_listen.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "http_listen `{}` is not an address and port such as 127.0.0.1:9464 or 0.0.0.0:9464",
                self.http_listen
            );
        }
        if self.http_tls_cert.as_os_str().is_empty() != self.http_tls_key.as_os_str().is_empty() {
            bail!("http_tls_cert and http_tls_key go together: set both, or neither");
        }
        self.notifications.validate()?;
        self.console.validate()?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.forces {
            if !seen.insert(f) {
                bail!("force `{f}` is listed twice in `forces`");
            }
        }
        Ok(())
    }

    /// The cluster coordination settings (the one place their defaults come from).
    pub fn cluster(&self) -> crate::cluster::ClusterSettings {
        crate::cluster::ClusterSettings {
            node_ttl: std::time::Duration::from_secs(self.node_ttl_secs),
            lease_ttl: std::time::Duration::from_secs(self.lease_ttl_secs),
            replicas: self.stream_replicas,
        }
    }

    /// The lateness a force's correlations wait for, in ms: the largest of all sources'.
    pub fn lateness_ms(&self) -> i64 {
        let secs = self
            .source_lateness_secs
            .values()
            .copied()
            .fold(self.lateness_secs, u64::max);
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// How long `source`'s feed may be silent, in seconds.
    pub fn silence_threshold_secs(&self, source: nmc_shared::SourceKind) -> u64 {
        self.source_feed_silence_secs
            .get(source.as_str())
            .copied()
            .unwrap_or(self.feed_silence_secs)
    }

    /// Number of force-actor arbiters to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_overrides() {
        let dir = std::env::temp_dir().join(format!("nmc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("n.toml");
        std::fs::write(
            &p,
            "node_id = \"a\"\nforces = [\"kent\"]\nbatch_size = 10\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&p), env(&[])).unwrap();
        assert_eq!((c.node_id.as_str(), c.batch_size), ("a", 10));
        let c = Config::load_with_env(
            Some(&p),
            env(&[
                ("NMC_BATCH_SIZE", "64"),
                ("NMC_FORCES", "kent, essex"),
                ("NMC_TRIAGE", "true"),
                ("NMC_UNRELATED", "x"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.batch_size, 64);
        assert_eq!(c.forces.len(), 2);
        assert!(c.triage);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::load_with_env(None, env(&[("NMC_FORCES", "Kent")])).is_err());
        assert!(Config::load_with_env(None, env(&[("NMC_BATCH_SIZE", "0")])).is_err());
        assert!(
            Config::load_with_env(
                None,
                env(&[
                    ("NMC_CHECKPOINT_INTERVAL_SECS", "3600"),
                    ("NMC_ALERTS_DUPLICATE_WINDOW_SECS", "900")
                ])
            )
            .is_err(),
            "duplicate window shorter than a replay after takeover"
        );
        // 60 s of checkpoints + 2 x 5 s of lease + 60 s fit in 180 s; a minute of uncommitted
        // state does not (a restart re-raises its alerts).
        let window = |commit_ms: &str| {
            Config::load_with_env(
                None,
                env(&[
                    ("NMC_ALERTS_DUPLICATE_WINDOW_SECS", "180"),
                    ("NMC_COMMIT_INTERVAL_MS", commit_ms),
                ]),
            )
        };
        assert!(window("1000").is_ok());
        let e = window("60000").unwrap_err().to_string();
        assert!(e.contains("commit_interval_ms"), "{e}");
        assert!(window("60001").is_err(), "over a minute");
        assert!(Config::load_with_env(None, env(&[("NMC_COMMIT_MAX_EVENTS", "0")])).is_err());
    }

    #[test]
    fn overrides_are_typed_by_the_field_they_set() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("NMC_NODE_ID", "42"),
                ("NMC_NATS_URL", "nats://a:4222,nats://b:4222"),
            ]),
        )
        .unwrap();
        assert_eq!(c.node_id, "42", "a numeric node id is still a string");
        assert_eq!(
            c.nats_url, "nats://a:4222,nats://b:4222",
            "not split as a list"
        );
        let e = Config::load_with_env(None, env(&[("NMC_BATCH_SIZE", "lots")])).unwrap_err();
        assert!(format!("{e:#}").contains("NMC_BATCH_SIZE"), "{e:#}");
        let e = Config::load_with_env(None, env(&[("NMC_TRIAGE", "yes")])).unwrap_err();
        assert!(format!("{e:#}").contains("true or false"), "{e:#}");
    }

    #[test]
    fn map_keys_are_overridable() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("NMC_SOURCE_LATENESS_SECS__AWS_CLOUDTRAIL", "900"),
                ("NMC_PLACEHOLDERS__ADMIN_USERS", "alice, bob"),
            ]),
        )
        .unwrap();
        assert_eq!(c.source_lateness_secs["aws_cloudtrail"], 900);
        assert_eq!(c.placeholders["admin_users"], vec!["alice", "bob"]);
        assert_eq!(c.lateness_ms(), 900_000);
        // A whole table inline, then one entry on top of it (whatever the variables' order).
        let c = Config::load_with_env(
            None,
            env(&[
                ("NMC_SOURCE_LATENESS_SECS__SYSLOG", "60"),
                (
                    "NMC_SOURCE_LATENESS_SECS",
                    "{ aws_cloudtrail = 600, sysmon = 30 }",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.source_lateness_secs.len(), 3);
        assert!(
            Config::load_with_env(None, env(&[("NMC_SOURCE_LATENESS_SECS__NETFLOW", "60")]))
                .is_err(),
            "a map key that is not a source kind is refused"
        );
    }

    #[test]
    fn notification_settings_are_checked() {
        let ok = Config::load_with_env(
            None,
            env(&[
                ("NMC_NOTIFY", "true"),
                ("NMC_NOTIFICATIONS__SMTP_HOST", "smtp.example"),
                ("NMC_NOTIFICATIONS__FROM", "nmc@ncsoc.example"),
            ]),
        )
        .unwrap();
        assert!(ok.notify);
        assert_eq!(ok.notifications.smtp_host, "smtp.example");
        let err = |pairs: &[(&str, &str)]| {
            format!("{:#}", Config::load_with_env(None, env(pairs)).unwrap_err())
        };
        assert!(
            err(&[
                ("NMC_NOTIFICATIONS__SMTP_HOST", "smtp.example"),
                ("NMC_NOTIFICATIONS__SMTP_TLS", "none")
            ])
            .contains("only allowed to a relay on 127.0.0.1")
        );
        assert!(
            err(&[("NMC_NOTIFICATIONS__BACKFILL_SECS", "99999999999")]).contains("backfill_secs")
        );
        assert!(err(&[("NMC_NOTIFICATIONS__SMTP_USER", "nmc")]).contains("go together"));
        assert!(err(&[("NMC_NOTIFICATIONS__ATTEMPTS", "0")]).contains("attempts"));
    }

    #[test]
    fn the_file_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        std::fs::write(&p, "onboarded = [\"kent\"]\n").unwrap();
        let e = Config::load_with_env(Some(&p), env(&[])).unwrap_err();
        assert!(format!("{e:#}").contains("onboarded"), "{e:#}");
        std::fs::write(&p, "forces = [\"kent\", \"kent\"]\n").unwrap();
        assert!(
            Config::load_with_env(Some(&p), env(&[])).is_err(),
            "listed twice"
        );
    }
}
