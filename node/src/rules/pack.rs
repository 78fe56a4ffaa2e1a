//! Rule packs: the rules a cluster runs, pushed by `nmc rules push`, hot-reloaded by every node.
//!
//! A pack is every rule file of the pushed directories (path and text) in one object of the
//! `NMC_RULEPACKS` object store; the KV bucket `NMC_RULES` key `current` names the pack in force.
//! The pack's version is the revision of that key: it only grows, so every alert says which
//! pack raised it. A pack is validated before it is stored (every rule must compile), and again
//! by each node with its own placeholders: a node that cannot compile a pack keeps running the
//! previous one and says so.

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::bus::provision;

/// KV bucket naming the pack in force (key [`CURRENT`]).
pub const RULES_BUCKET: &str = "NMC_RULES";
/// Object store of packs (object name `pack-<n>`).
pub const PACKS_BUCKET: &str = "NMC_RULEPACKS";
/// The key of the pack in force.
pub const CURRENT: &str = "current";

/// The rule files of a pack: (path as pushed, YAML text), sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PackFiles {
    /// Files.
    pub files: Vec<(String, String)>,
}

/// What `current` says about the pack in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackRef {
    /// Object holding the [`PackFiles`].
    pub object: String,
    /// Files in the pack.
    pub files: usize,
    /// Rules and correlations compiled at push time.
    pub rules: usize,
    /// When it was pushed (Unix ms).
    pub pushed_ms: i64,
    /// Who pushed it (user@host, as the pusher reported).
    pub pushed_by: String,
}

/// A pack in force: its version (revision of `current`) and reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Current {
    /// The revision of `current`: it only grows, so a larger one is a newer pack.
    pub revision: u64,
    /// Version: the revision of `current`, as text (`pack-<n>`).
    pub version: String,
    /// The reference.
    pub pack: PackRef,
}

/// The rule-pack buckets.
#[derive(Clone)]
pub struct Packs {
    /// `NMC_RULES`.
    pub kv: kv::Store,
    /// `NMC_RULEPACKS`.
    pub objects: object_store::ObjectStore,
}

/// Creates the rule-pack buckets or brings them to `replicas` (node only: never lowered).
pub async fn ensure(js: &jetstream::Context, replicas: usize) -> Result<Packs> {
    let kv = provision::ensure_kv(
        js,
        kv::Config {
            bucket: RULES_BUCKET.to_owned(),
            history: 10,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    let objects = provision::ensure_objects(
        js,
        object_store::Config {
            bucket: PACKS_BUCKET.to_owned(),
            description: Some("nmc rule packs".to_owned()),
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    Ok(Packs { kv, objects })
}

/// Opens the rule-pack buckets as they are (command-line tools: nothing is created or
/// changed; missing buckets are an error that says to start a node first).
pub async fn open(js: &jetstream::Context) -> Result<Packs> {
    Ok(Packs {
        kv: provision::open_kv(js, RULES_BUCKET).await?,
        objects: provision::open_objects(js, PACKS_BUCKET).await?,
    })
}

/// Stores `files` as the pack in force and returns its version. The caller has validated it.
pub async fn push(packs: &Packs, files: &PackFiles, rules: usize, by: &str) -> Result<String> {
    let bytes = serde_json::to_vec(files)?;
    // The object name must exist before `current` points at it: use a fresh unique name.
    let object = format!("pack-{}-{}", crate::clock::now_ms(), std::process::id());
    packs
        .objects
        .put(object.as_str(), &mut bytes.as_slice())
        .await
        .with_context(|| format!("storing rule pack {object}"))?;
    let r = PackRef {
        object,
        files: files.files.len(),
        rules,
        pushed_ms: crate::clock::now_ms(),
        pushed_by: by.to_owned(),
    };
    let rev = packs
        .kv
        .put(CURRENT, serde_json::to_vec(&r)?.into())
        .await
        .context("announcing the rule pack")?;
    Ok(version(rev))
}

/// The version text of revision `rev` of `current`.
pub fn version(rev: u64) -> String {
    format!("pack-{rev}")
}

/// The pack in force, if one was ever pushed.
pub async fn current(packs: &Packs) -> Result<Option<Current>> {
    let Some(e) = packs.kv.entry(CURRENT).await? else {
        return Ok(None);
    };
    if e.operation != kv::Operation::Put {
        return Ok(None);
    }
    let pack: PackRef =
        serde_json::from_slice(&e.value).context("reading the rule pack reference")?;
    Ok(Some(Current {
        revision: e.revision,
        version: version(e.revision),
        pack,
    }))
}

/// Largest stored pack object: its files' texts ([`super::files::MAX_PACK_BYTES`]) as JSON
/// strings, where escaping can double some characters.
pub const MAX_PACK_OBJECT_BYTES: usize = 2 * super::files::MAX_PACK_BYTES + (1 << 20);

/// Downloads a pack's files, refusing (without reading it all) a pack over the size limits:
/// a pack may have been stored by something other than `nmc rules push`.
pub async fn fetch(packs: &Packs, r: &PackRef) -> Result<PackFiles> {
    let obj = packs
        .objects
        .get(r.object.as_str())
        .await
        .with_context(|| format!("fetching rule pack {}", r.object))?;
    if obj.info.size > MAX_PACK_OBJECT_BYTES {
        bail!(
            "rule pack {} is {} bytes, over {MAX_PACK_OBJECT_BYTES} bytes, nmc's limit for a stored pack: refused",
            r.object,
            obj.info.size
        );
    }
    let mut bytes = Vec::new();
    obj.take(MAX_PACK_OBJECT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() > MAX_PACK_OBJECT_BYTES {
        bail!(
            "rule pack {} is over {MAX_PACK_OBJECT_BYTES} bytes, nmc's limit for a stored pack: refused",
            r.object
        );
    }
    let files: PackFiles = serde_json::from_slice(&bytes)
        .with_context(|| format!("decoding rule pack {}", r.object))?;
    super::files::check_limits(&files.files).with_context(|| format!("rule pack {}", r.object))?;
    Ok(files)
}

/// Waits for the next change of `current` and returns it (None: the watch ended).
pub async fn next_change(
    watch: &mut (impl futures::Stream<Item = Result<kv::Entry, kv::WatcherError>> + Unpin),
) -> Result<Option<Current>> {
    while let Some(e) = watch.next().await {
        let e = e?;
        if e.key != CURRENT || e.operation != kv::Operation::Put {
            continue;
        }
        let pack: PackRef = serde_json::from_slice(&e.value)?;
        return Ok(Some(Current {
            revision: e.revision,
            version: version(e.revision),
            pack,
        }));
    }
    Ok(None)
}

/// Refuses a pack with no rule at all (a wrong directory would silently disarm the cluster).
pub fn check_not_empty(files: &PackFiles) -> Result<()> {
    if files.files.is_empty() {
        bail!("no rule files found: refusing to push an empty pack");
    }
    Ok(())
}
