//! Force-state checkpoints in the `NMC_CHECKPOINTS` object store, for hand-off between nodes.
//!
//! One object per force, named by the force id; a new checkpoint replaces the previous one
//! (last write wins: only the lease holder should write). The bytes are the force's exported
//! state as is; what they reflect ([`Meta`]) is kept in the object's metadata, so no envelope
//! wraps the state and nodes of earlier builds, which ignore metadata they do not know, still
//! read the checkpoints of newer ones:
//! - [`SEQ_KEY`]: the `NMC_EVENTS_<force>` sequence (decimal);
//! - [`GENERATION_KEY`]: the state generation (absent: 0);
//! - [`CURSOR_TIME_KEY`]: when the stream stored the event at the sequence (Unix ms; absent:
//!   unknown), which incarnation of the stream the state was built from.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::object_store::{GetErrorKind, ObjectMetadata, ObjectStore};
use nmc_shared::ForceId;
// `Object` is a tokio `AsyncRead`; async-nats always enables tokio's `io-util`.
use tokio::io::AsyncReadExt;
use tracing::warn;

/// Object metadata key holding the stream sequence a checkpoint reflects.
pub const SEQ_KEY: &str = "nmc-seq";

/// Object metadata key holding the state generation a checkpoint belongs to (see
/// `ForceRecord::state_generation`): one of an earlier generation is not restored.
pub const GENERATION_KEY: &str = "nmc-generation";

/// Object metadata key holding when the stream stored the event at the checkpoint's sequence:
/// the node that restores it checks its stream against it, as against its own commits.
pub const CURSOR_TIME_KEY: &str = "nmc-cursor-time";

/// What a checkpoint's state reflects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// The stream sequence (the state's cursor).
    pub seq: u64,
    /// The state generation it belongs to.
    pub generation: u64,
    /// When the stream stored the event at `seq` (Unix ms), if known.
    pub cursor_time_ms: Option<i64>,
}

/// A checkpoint as stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Stored {
    /// What it reflects.
    pub meta: Meta,
    /// The state bytes.
    pub state: Vec<u8>,
}

/// Stores `state` as `force`'s checkpoint, replacing the previous one.
pub async fn put(store: &ObjectStore, force: &ForceId, meta: &Meta, state: &[u8]) -> Result<()> {
    let mut metadata: HashMap<String, String> = [(SEQ_KEY.to_owned(), meta.seq.to_string())].into();
    if meta.generation > 0 {
        metadata.insert(GENERATION_KEY.to_owned(), meta.generation.to_string());
    }
    if let Some(ms) = meta.cursor_time_ms {
        metadata.insert(CURSOR_TIME_KEY.to_owned(), ms.to_string());
    }
    let object = ObjectMetadata {
        name: force.to_string(),
        metadata,
        ..Default::default()
    };
    let mut reader = state;
    store
        .put(object, &mut reader)
        .await
        .with_context(|| format!("storing the checkpoint of {force}"))?;
    Ok(())
}

/// The newest checkpoint of `force`.
pub async fn get(store: &ObjectStore, force: &ForceId) -> Result<Option<Stored>> {
    let mut object = match store.get(force.as_str()).await {
        Ok(o) => o,
        Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading the checkpoint of {force}")),
    };
    let metadata = &object.info.metadata;
    let seq = metadata
        .get(SEQ_KEY)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("checkpoint of {force} has no `{SEQ_KEY}` metadata"))?;
    // The others only narrow what a restore takes: one that does not parse is unknown (a
    // generation of 0 is not restored over a reset, an unknown time is not checked), and must
    // not keep the force from being taken.
    let optional = |key: &str| {
        let v = metadata.get(key)?;
        let parsed = v.parse::<i64>().ok().filter(|n| *n >= 0);
        if parsed.is_none() {
            warn!(%force, key, value = %v, "ignoring malformed checkpoint metadata");
        }
        parsed
    };
    let meta = Meta {
        seq,
        generation: optional(GENERATION_KEY).map_or(0, |g| g as u64),
        cursor_time_ms: optional(CURSOR_TIME_KEY),
    };
    let mut state = Vec::with_capacity(object.info.size);
    object
        .read_to_end(&mut state)
        .await
        .with_context(|| format!("reading the checkpoint of {force}"))?;
    Ok(Some(Stored { meta, state }))
}
