//! A force's correlation state in its sled tree as one snapshot plus a journal of commits.
//!
//! Writing one sled key per changed group costs several microseconds a key (sled copies and
//! re-sorts the leaf, logs it and reclaims the old one), and a sign-in changes several groups,
//! so per-group keys made sled most of a node's work. Instead each commit appends its changes,
//! encoded as records, under one journal id (the commit's cursor), cut into chunks of
//! [`CHUNK`] bytes (below sled's blob threshold: chunks stay in its log). Once the journal
//! outgrows the snapshot it is folded: snapshot and journal are read, the last value of every
//! key kept, and written back as the new snapshot, in one atomic batch. Writes are then a few
//! large values per commit and, amortised, at most about twice the state's bytes.
//!
//! Keys (inside the force's tree):
//! - `c/<id><chunk>`  the snapshot: every group's value as of journal id `id`
//! - `j/<id><chunk>`  the changes of the commit whose cursor is `id`
//! - `s/<group>`      a group as written by earlier versions and by checkpoint imports; read
//!   first, folded into the snapshot (and removed) by the next fold
//!
//! `id` is a big-endian u64 and `chunk` a big-endian u32, so that a scan returns commits in
//! order and each commit's chunks in order.

use std::collections::BTreeMap;

use thiserror::Error;

/// Prefix of snapshot chunks.
pub const SNAPSHOT_PREFIX: &[u8] = b"c/";
/// Prefix of journal chunks.
pub const JOURNAL_PREFIX: &[u8] = b"j/";
/// Prefix of groups written one key each (earlier versions, checkpoint imports).
pub const GROUP_PREFIX: &[u8] = b"s/";
/// Largest chunk, in bytes. sled writes anything over a quarter of its 512 KiB segment to a
/// blob file of its own, leaves too, and splits a leaf past 16 keys only lazily: leaves of
/// chunks were seen at 20 keys (7 KiB chunks made blobs of 136-144 KB in one run of the test
/// below in four), so 4 KiB keeps a leaf of even 30 in its log. (Chunks of 64 KiB made leaves
/// of up to a MiB, each rewrite of one a new file: 70-150 blob files, 35-77 MiB, during a drain
/// of 400,000 events. Chunks of any size read back alike.)
pub const CHUNK: usize = 4 * 1024;
/// The journal is folded once it holds more bytes than the snapshot, and at least this many.
pub const FOLD_MIN_BYTES: u64 = 4 << 20;

const PUT: u8 = 1;
const DELETE: u8 = 0;

/// A journal or snapshot that does not decode.
#[derive(Debug, Error)]
#[error(
    "the stored correlation state of this force is corrupt ({0}); delete the force's tree (or import a checkpoint) to rebuild it by replay"
)]
pub struct Corrupt(&'static str);

/// How many bytes [`encode`] appends for `changes` (to size its buffer once).
pub fn encoded_len<'a>(changes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> usize {
    changes
        .map(|(k, v)| 4 + k.len() + 1 + v.map_or(0, |v| 4 + v.len()))
        .sum()
}

/// Appends a record for each change (`None`: the key is deleted).
pub fn encode<'a>(changes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>, out: &mut Vec<u8>) {
    for (k, v) in changes {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        match v {
            Some(v) => {
                out.push(PUT);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(DELETE),
        }
    }
}

/// Applies the records of `bytes` to `state`, in order.
pub fn apply(bytes: &[u8], state: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), Corrupt> {
    let mut r = Reader(bytes);
    while !r.0.is_empty() {
        let n = r.len()?;
        let key = r.take(n)?.to_vec();
        match r.take(1)?[0] {
            PUT => {
                let n = r.len()?;
                state.insert(key, r.take(n)?.to_vec());
            }
            DELETE => {
                state.remove(&key);
            }
            _ => return Err(Corrupt("a record has an unknown tag")),
        }
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt("a record is cut short"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, Corrupt> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    }
}

/// Adds the chunks of `bytes` as `<prefix><id><chunk>` to `batch`.
pub fn put_chunks(batch: &mut sled::Batch, prefix: &[u8], id: u64, bytes: &[u8]) {
    for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
        let key = [prefix, &id.to_be_bytes(), &(n as u32).to_be_bytes()].concat();
        batch.insert(key, chunk);
    }
}

/// The correlation state a force's tree holds, and what it is made of.
pub struct Stored {
    /// Every group's value, by group key (without prefix).
    pub groups: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Bytes of the snapshot.
    pub snapshot_bytes: u64,
    /// Bytes of the journal.
    pub journal_bytes: u64,
    /// The newest snapshot or journal id read.
    last_id: u64,
    /// Every key read (what a fold replaces).
    keys: Vec<sled::IVec>,
}

/// Reads the groups, then the snapshot, then the journal in commit order.
pub fn read(tree: &sled::Tree) -> anyhow::Result<Stored> {
    let mut s = Stored {
        groups: BTreeMap::new(),
        snapshot_bytes: 0,
        journal_bytes: 0,
        last_id: 0,
        keys: Vec::new(),
    };
    for r in tree.scan_prefix(GROUP_PREFIX) {
        let (k, v) = r?;
        s.groups
            .insert(k[GROUP_PREFIX.len()..].to_vec(), v.to_vec());
        s.keys.push(k);
    }
    s.snapshot_bytes = read_chunks(tree, SNAPSHOT_PREFIX, &mut s)?;
    s.journal_bytes = read_chunks(tree, JOURNAL_PREFIX, &mut s)?;
    Ok(s)
}

/// Applies the chunks under `prefix`, id by id; returns their bytes.
fn read_chunks(tree: &sled::Tree, prefix: &[u8], s: &mut Stored) -> anyhow::Result<u64> {
    let (mut bytes, mut buf, mut current) = (0, Vec::new(), None);
    for r in tree.scan_prefix(prefix) {
        let (k, v) = r?;
        let id = k
            .get(prefix.len()..prefix.len() + 8)
            .filter(|_| k.len() == prefix.len() + 12)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .ok_or(Corrupt("a chunk key is malformed"))?;
        if current != Some(id) {
            apply(&buf, &mut s.groups)?;
            buf.clear();
            current = Some(id);
            s.last_id = s.last_id.max(id);
        }
        buf.extend_from_slice(&v);
        bytes += v.len() as u64;
        s.keys.push(k);
    }
    apply(&buf, &mut s.groups)?;
    Ok(bytes)
}

/// Replaces groups, snapshot and journal by one snapshot of the same state, atomically;
/// returns its bytes.
pub fn fold(tree: &sled::Tree) -> anyhow::Result<u64> {
    let stored = read(tree)?;
    let mut batch = sled::Batch::default();
    for k in stored.keys {
        batch.remove(k);
    }
    let mut bytes = Vec::new();
    encode(
        stored
            .groups
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice()))),
        &mut bytes,
    );
    // Inserted after the removals: a chunk key of the old snapshot that the new one reuses
    // keeps the new value.
    put_chunks(&mut batch, SNAPSHOT_PREFIX, stored.last_id, &bytes);
    tree.apply_batch(batch)?;
    Ok(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("force/kent").unwrap();
        (dir, tree)
    }

    fn commit(tree: &sled::Tree, id: u64, changes: &[(&[u8], Option<&[u8]>)]) {
        let mut bytes = Vec::new();
        encode(changes.iter().copied(), &mut bytes);
        let mut b = sled::Batch::default();
        put_chunks(&mut b, JOURNAL_PREFIX, id, &bytes);
        tree.apply_batch(b).unwrap();
    }

    fn groups(tree: &sled::Tree) -> Vec<(String, String)> {
        read(tree)
            .unwrap()
            .groups
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_journal_applies_in_commit_order_over_groups_and_snapshot_and_folds_to_the_same_state() {
        let (_dir, tree) = tree();
        // Groups of an import, then three commits (the last large enough for several chunks).
        tree.insert(b"s/a", b"a0").unwrap();
        tree.insert(b"s/b", b"b0").unwrap();
        commit(&tree, 7, &[(b"a", Some(b"a1")), (b"c", Some(b"c1"))]);
        commit(&tree, 9, &[(b"b", None), (b"a", Some(b"a2"))]);
        let big = vec![b'x'; 3 * CHUNK];
        commit(&tree, 300, &[(b"d", Some(&big)), (b"c", None)]);
        assert_eq!(tree.scan_prefix(JOURNAL_PREFIX).count(), 2 + 4);
        let before = groups(&tree);
        assert_eq!(before.len(), 2);
        assert_eq!(before[0], ("a".into(), "a2".into()));
        assert_eq!(before[1].1.len(), 3 * CHUNK);

        let bytes = fold(&tree).unwrap();
        assert_eq!(groups(&tree), before, "a fold keeps the state");
        assert_eq!(tree.scan_prefix(JOURNAL_PREFIX).count(), 0);
        assert_eq!(tree.scan_prefix(GROUP_PREFIX).count(), 0);
        let s = read(&tree).unwrap();
        assert_eq!(
            (s.snapshot_bytes, s.journal_bytes, s.last_id),
            (bytes, 0, 300)
        );

        // Commits after the fold apply over the snapshot; a second fold shrinks it.
        commit(&tree, 301, &[(b"d", None), (b"e", Some(b"e1"))]);
        assert_eq!(groups(&tree), pairs(&[("a", "a2"), ("e", "e1")]));
        fold(&tree).unwrap();
        assert_eq!(groups(&tree), pairs(&[("a", "a2"), ("e", "e1")]));
        assert_eq!(tree.scan_prefix(SNAPSHOT_PREFIX).count(), 1);
    }

    #[test]
    fn journal_and_snapshot_stay_in_sleds_log_without_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("force/kent").unwrap();
        // Commits of a few hundred KiB each (many groups), then a fold of it all.
        let value = vec![b'v'; 900];
        for id in 1..=12u64 {
            let keys: Vec<Vec<u8>> = (0..300u32)
                .map(|g| format!("group-{id}-{g}").into_bytes())
                .collect();
            let changes: Vec<_> = keys
                .iter()
                .map(|k| (k.as_slice(), Some(value.as_slice())))
                .collect();
            commit(&tree, id, &changes);
        }
        fold(&tree).unwrap();
        db.flush().unwrap();
        assert_eq!(groups(&tree).len(), 12 * 300);
        let blobs: Vec<u64> = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.map(|e| e.unwrap().metadata().unwrap().len()).collect())
            .unwrap_or_default();
        assert!(blobs.is_empty(), "sled wrote blob files of {blobs:?} bytes");
    }

    #[test]
    fn a_corrupt_journal_is_an_error_that_says_what_to_do() {
        let (_dir, tree) = tree();
        let mut bytes = Vec::new();
        encode([(&b"a"[..], Some(&b"value"[..]))].into_iter(), &mut bytes);
        for cut in [bytes.len() - 1, 3] {
            tree.clear().unwrap();
            let mut b = sled::Batch::default();
            put_chunks(&mut b, JOURNAL_PREFIX, 1, &bytes[..cut]);
            tree.apply_batch(b).unwrap();
            let e = read(&tree).err().expect("a cut record does not decode");
            assert!(e.to_string().contains("delete the force's tree"), "{e}");
        }
        tree.clear().unwrap();
        tree.insert(b"j/short", b"").unwrap();
        assert!(read(&tree).is_err());
    }
}
