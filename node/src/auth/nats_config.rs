//! `nmc auth nats-config`: the nats-server authorization configuration of a cluster's
//! identities, and their credentials.
//!
//! Identities are nkey users of one account with per-user permissions. The server
//! configuration holds public keys only; each identity's seed (its secret) is a file of its own,
//! mounted only where that identity runs, and never crosses the wire (nkey authentication is a
//! signed challenge). Regenerating keeps every existing seed, so adding a force changes no
//! other identity's credential; an identity no longer wanted loses its seed file and its entry.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::identities::{Identity, Permissions};

/// File name of the authorization configuration in the output folder.
pub const CONF_FILE: &str = "nats-auth.conf";
/// File name of the list of identities (JSON) in the output folder.
pub const LIST_FILE: &str = "identities.json";

/// The node ids of the per-node identities whose seeds are in `dir` (`node-<id>.nk`): what
/// a regeneration keeps when no node list is given. Empty when the folder holds the shared
/// `node.nk` or nothing.
pub fn existing_nodes(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("node-")
                .and_then(|n| n.strip_suffix(".nk"))
                .map(str::to_owned)
        })
        .collect();
    nodes.sort();
    nodes
}

/// What one generation did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Identities that got a new seed.
    pub created: Vec<String>,
    /// Identities whose existing seed was kept.
    pub kept: Vec<String>,
    /// Seed files removed: identities no longer in the cluster.
    pub revoked: Vec<String>,
}

/// One identity as listed in `identities.json`: what an operator needs to hand it out.
#[derive(Debug, Serialize)]
struct Listed {
    identity: String,
    force: Option<String>,
    public_key: String,
    seed_file: PathBuf,
    inbox_prefix: Option<String>,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

/// Writes into `dir` the authorization configuration of `identities` in account `account`
/// ([`CONF_FILE`]), one seed file per identity (`<name>.nk`, mode 0600, kept if present) and
/// [`LIST_FILE`]; removes the seed files of identities not listed.
pub fn generate(dir: &Path, account: &str, identities: &[Identity]) -> Result<Outcome> {
    if account.is_empty()
        || !account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        bail!("account `{account}` must be letters, digits and `_`");
    }
    create_private_dir(dir)?;
    let mut outcome = Outcome::default();
    let mut keys = Vec::with_capacity(identities.len());
    for id in identities {
        let name = id.name();
        let path = dir.join(format!("{name}.nk"));
        let pair = if path.exists() {
            outcome.kept.push(name.clone());
            read_pair(&path)?
        } else {
            outcome.created.push(name.clone());
            let pair = nkeys::KeyPair::new_user();
            let seed = pair
                .seed()
                .map_err(|e| anyhow::anyhow!("encoding a new nkey seed: {e}"))?;
            write_private(&path, format!("{seed}\n").as_bytes())?;
            pair
        };
        keys.push((id, pair.public_key(), path));
    }
    let wanted: std::collections::BTreeSet<String> = identities
        .iter()
        .map(|i| format!("{}.nk", i.name()))
        .collect();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.ends_with(".nk") && !wanted.contains(&file) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing the revoked seed {}", entry.path().display()))?;
            outcome
                .revoked
                .push(file.trim_end_matches(".nk").to_owned());
        }
    }
    outcome.revoked.sort();

    let conf = render(account, keys.iter().map(|(id, key, _)| (*id, key.as_str())));
    write_replacing(&dir.join(CONF_FILE), conf.as_bytes())?;
    let listed: Vec<Listed> = keys
        .iter()
        .map(|(id, key, path)| {
            let Permissions { publish, subscribe } = id.permissions();
            Listed {
                identity: id.name(),
                force: id.force().map(ToString::to_string),
                public_key: key.clone(),
                seed_file: path.clone(),
                inbox_prefix: id.inbox_prefix(),
                publish,
                subscribe,
            }
        })
        .collect();
    write_replacing(
        &dir.join(LIST_FILE),
        (serde_json::to_string_pretty(&listed)? + "\n").as_bytes(),
    )?;
    Ok(outcome)
}

/// The nats-server configuration of `users` (identity, public key) in `account`.
pub fn render<'a>(
    account: &str,
    users: impl IntoIterator<Item = (&'a Identity, &'a str)>,
) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let list = |subjects: &[String]| subjects.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    let mut out = String::from(
        "# nmc's NATS authorization, generated by `nmc auth nats-config`: regenerate it, do not\n\
         # edit it. Include it from the nats-server configuration (`include \"nats-auth.conf\"`).\n\
         # Public keys only: each identity's seed (its secret) is the .nk file of its name.\n",
    );
    out.push_str(&format!(
        "accounts {{\n  {account} {{\n    jetstream: enabled\n    users: [\n"
    ));
    for (id, key) in users {
        let p = id.permissions();
        out.push_str(&format!(
            "      # {}\n      {{\n        nkey: {}\n        permissions: {{\n          publish: {{ allow: [{}] }}\n          subscribe: {{ allow: [{}] }}\n        }}\n      }}\n",
            id.name(),
            q(key),
            list(&p.publish),
            list(&p.subscribe),
        ));
    }
    out.push_str("    ]\n  }\n}\n");
    out
}

fn read_pair(path: &Path) -> Result<nkeys::KeyPair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the seed {}", path.display()))?;
    nkeys::KeyPair::from_seed(text.trim()).map_err(|_| {
        anyhow::anyhow!(
            "{} holds no valid nkey seed: remove it to have a new one generated (that identity's credential changes)",
            path.display()
        )
    })
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Creates `path` readable by its owner only, failing if it exists.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Replaces `path` atomically (a reader never sees half a file).
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nmc_shared::ForceId;

    fn forces(ids: &[&str]) -> Vec<ForceId> {
        ids.iter().map(|s| ForceId::new(s).unwrap()).collect()
    }

    #[test]
    fn regenerating_keeps_seeds_adds_new_ones_and_revokes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("auth");
        let two = forces(&["kent", "essex"]);
        let first = generate(&out, "NMC", &Identity::of_cluster(&two, &[])).unwrap();
        assert_eq!(first.created.len(), 6);
        let seed = |n: &str| std::fs::read_to_string(out.join(format!("{n}.nk"))).unwrap();
        let kent_before = seed("collector-kent");
        let node_before = seed("node");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join("reader-kent.nk"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let three = forces(&["kent", "surrey"]);
        let second = generate(&out, "NMC", &Identity::of_cluster(&three, &[])).unwrap();
        assert_eq!(second.created, ["collector-surrey", "reader-surrey"]);
        assert_eq!(second.revoked, ["collector-essex", "reader-essex"]);
        assert_eq!(seed("collector-kent"), kent_before);
        assert_eq!(seed("node"), node_before);
        assert!(!out.join("collector-essex.nk").exists());

        let conf = std::fs::read_to_string(out.join(CONF_FILE)).unwrap();
        let kent_key = nkeys::KeyPair::from_seed(kent_before.trim())
            .unwrap()
            .public_key();
        assert!(conf.contains(&format!("nkey: \"{kent_key}\"")), "{conf}");
        assert!(conf.contains("\"nmc.events.surrey.>\""), "{conf}");
        assert!(!conf.contains("essex"), "{conf}");
        assert!(
            !conf.contains(kent_before.trim()),
            "a seed in the server configuration"
        );
        let listed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(LIST_FILE)).unwrap()).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 6);
        assert_eq!(listed[3]["inbox_prefix"], "_INBOX_reader-kent");
    }

    #[test]
    fn a_damaged_seed_is_an_error_not_a_silent_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.nk"), "garbage").unwrap();
        let e = generate(dir.path(), "NMC", &Identity::of_cluster(&[], &[])).unwrap_err();
        assert!(format!("{e:#}").contains("node.nk holds no valid nkey seed"));
        assert!(generate(dir.path(), "bad name", &[]).is_err());
    }
}
