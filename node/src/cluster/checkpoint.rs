//! Force-state checkpoints in the `NMC_CHECKPOINTS` object store, for hand-off between nodes.
//!
//! One object per force, named by the force id; a new checkpoint replaces the previous one
//! (last write wins: only the lease holder should write). The bytes are the force's exported
//! state as is; the `NMC_EVENTS_<force>` sequence it reflects is kept in the object's metadata under
//! [`SEQ_KEY`] (decimal), and the state generation it belongs to under [`GENERATION_KEY`] (absent:
//! 0), so no envelope wraps the state.

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::object_store::{GetErrorKind, ObjectMetadata, ObjectStore};
use nmc_shared::ForceId;
// `Object` is a tokio `AsyncRead`; async-nats always enables tokio's `io-util`.
use tokio::io::AsyncReadExt;

/// Object metadata key holding the stream sequence a checkpoint reflects.
pub const SEQ_KEY: &str = "nmc-seq";

/// Object metadata key holding the state generation a checkpoint belongs to (see
/// `ForceRecord::state_generation`): one of an earlier generation is not restored.
pub const GENERATION_KEY: &str = "nmc-generation";

/// A checkpoint as stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Stored {
    /// The stream sequence it reflects.
    pub seq: u64,
    /// The state generation it belongs to.
    pub generation: u64,
    /// The state bytes.
    pub state: Vec<u8>,
}

/// Stores `state` as `force`'s checkpoint at stream sequence `seq` of state generation
/// `generation`, replacing the previous one.
pub async fn put(
    store: &ObjectStore,
    force: &ForceId,
    seq: u64,
    generation: u64,
    state: &[u8],
) -> Result<()> {
    let mut metadata: std::collections::HashMap<String, String> =
        [(SEQ_KEY.to_owned(), seq.to_string())].into();
    if generation > 0 {
        metadata.insert(GENERATION_KEY.to_owned(), generation.to_string());
    }
    let meta = ObjectMetadata {
        name: force.to_string(),
        metadata,
        ..Default::default()
    };
    let mut reader = state;
    store
        .put(meta, &mut reader)
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
    let seq = object
        .info
        .metadata
        .get(SEQ_KEY)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("checkpoint of {force} has no `{SEQ_KEY}` metadata"))?;
    let generation = match object.info.metadata.get(GENERATION_KEY) {
        None => 0,
        Some(g) => g.parse::<u64>().map_err(|_| {
            anyhow!("checkpoint of {force} has a malformed `{GENERATION_KEY}`: {g:?}")
        })?,
    };
    let mut state = Vec::with_capacity(object.info.size);
    object
        .read_to_end(&mut state)
        .await
        .with_context(|| format!("reading the checkpoint of {force}"))?;
    Ok(Some(Stored {
        seq,
        generation,
        state,
    }))
}
