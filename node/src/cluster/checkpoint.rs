//! Force-state checkpoints in the `NMC_CHECKPOINTS` object store, for hand-off between nodes.
//!
//! One object per force, named by the force id; a new checkpoint replaces the previous one
//! (last write wins: only the lease holder should write). The bytes are the force's exported
//! state as is; the `NMC_EVENTS_<force>` sequence it reflects is kept in the object's metadata under
//! [`SEQ_KEY`] (decimal), so no envelope wraps the state.

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::object_store::{GetErrorKind, ObjectMetadata, ObjectStore};
use nmc_shared::ForceId;
// `Object` is a tokio `AsyncRead`; async-nats always enables tokio's `io-util`.
use tokio::io::AsyncReadExt;

/// Object metadata key holding the stream sequence a checkpoint reflects.
pub const SEQ_KEY: &str = "nmc-seq";

/// Stores `state` as `force`'s checkpoint at stream sequence `seq`, replacing the previous one.
pub async fn put(store: &ObjectStore, force: &ForceId, seq: u64, state: &[u8]) -> Result<()> {
    let meta = ObjectMetadata {
        name: force.to_string(),
        metadata: [(SEQ_KEY.to_owned(), seq.to_string())].into(),
        ..Default::default()
    };
    let mut reader = state;
    store
        .put(meta, &mut reader)
        .await
        .with_context(|| format!("storing the checkpoint of {force}"))?;
    Ok(())
}

/// The newest checkpoint of `force`: the stream sequence it reflects and the state bytes.
pub async fn get(store: &ObjectStore, force: &ForceId) -> Result<Option<(u64, Vec<u8>)>> {
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
    let mut state = Vec::with_capacity(object.info.size);
    object
        .read_to_end(&mut state)
        .await
        .with_context(|| format!("reading the checkpoint of {force}"))?;
    Ok(Some((seq, state)))
}
