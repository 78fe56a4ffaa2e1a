//! sled persistence: one tree per force holding its cursor, correlation state and alert outbox.
//!
//! Key layout inside a force's tree:
//! - `m/cursor`    last applied `NMC_EVENTS_<force>` sequence (u64 big-endian)
//! - `m/watermark` newest event time applied (i64 big-endian)
//! - `m/poison`    the event that last made evaluation panic, and how often
//! - `m/cursor_time` the sequence and the time (Unix ms) at which the stream stored the event at
//!   the cursor (u64, i64 big-endian): which incarnation of the stream the state was built from
//! - `m/generation` the state generation the tree belongs to (u64 big-endian; absent: 0): see
//!   `ForceRecord::state_generation`
//! - `c/…`, `j/…`  correlation state (see `nmc_shared::correlate`) as a snapshot and a
//!   journal of commits ([`journal`])
//! - `s/<group>`   correlation state of one group, as checkpoints carry it
//! - `o/<seq><n>`  outbox: alerts of an earlier version of nmc, raised but not acknowledged by
//!   `NMC_ALERTS` (a worker publishes its alerts before it commits, so it writes none; it
//!   publishes and removes those it finds)
//!
//! The cursor and the state changes since the last commit are written in one atomic
//! `apply_batch`, so after any crash the tree reflects exactly the events up to its cursor.

pub mod journal;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use nmc_shared::correlate::{ForceState, StateChanges};
use nmc_shared::sigma::RuleSet;
use nmc_shared::state::Checkpoint;
use nmc_shared::{ForceId, state};
use serde::{Deserialize, Serialize};

const CURSOR: &[u8] = b"m/cursor";
const WATERMARK: &[u8] = b"m/watermark";
const POISON: &[u8] = b"m/poison";
/// The cursor and when the stream stored the event at it (Unix ms): which incarnation of the
/// force's stream the state was built from (a stream deleted and created again has other times
/// at the same sequences; one restored from a backup has the same). The sequence makes a time
/// left behind by a build that moved the cursor without it (a rollback) count as unknown.
const CURSOR_TIME: &[u8] = b"m/cursor_time";
/// The state generation the tree belongs to. Not exported (a checkpoint's object metadata
/// carries it) and kept by an import: nodes of earlier builds refuse keys they do not know.
const GENERATION: &[u8] = b"m/generation";
const STATE_PREFIX: &[u8] = journal::GROUP_PREFIX;
const OUTBOX_PREFIX: &[u8] = b"o/";

/// sled's page cache (its default is 1 GiB). Forces read their state once, when a worker
/// opens, and then only write: a larger cache holds written journal chunks nobody reads again.
const CACHE_BYTES: u64 = 64 << 20;

/// The node's sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    flushes: Arc<Flushes>,
}

/// Group commit of flushes. sled 0.34 runs `flush_async` on its small I/O thread pool, and
/// each flush waits for log writes that need a thread of that same pool: a dozen force actors
/// flushing at once exhaust the pool and deadlock the node (seen in the scale-out test, with
/// every `sled-io` thread parked in `make_stable`). So one flush runs at a time, and a caller
/// whose commit a flush that started later already covered returns at once.
#[derive(Default)]
struct Flushes {
    lock: tokio::sync::Mutex<()>,
    requested: AtomicU64,
    done: AtomicU64,
}

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_BYTES)
            .open()
            .with_context(|| {
                format!(
                    "opening sled at {} (is another nmc node using this data_dir?)",
                    dir.display()
                )
            })?;
        Ok(Store {
            db,
            flushes: Arc::default(),
        })
    }

    /// The tree of one force.
    pub fn force(&self, force: &ForceId) -> Result<ForceStore> {
        let tree = self.db.open_tree(format!("force/{force}"))?;
        Ok(ForceStore { tree })
    }

    /// Flushes everything written so far, blocking (command-line tools only).
    pub fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Flushes everything written so far (on sled's own threads), one flush at a time.
    pub async fn flush(&self) -> Result<()> {
        let mine = self.flushes.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let _one = self.flushes.lock.lock().await;
        if self.flushes.done.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        let covers = self.flushes.requested.load(Ordering::Acquire);
        self.db.flush_async().await?;
        self.flushes.done.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }
}

/// An event that made rule evaluation panic, and how many attempts it has had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Poison {
    /// Its `NMC_EVENTS_<force>` sequence.
    pub seq: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// The last panic message.
    pub reason: String,
}

/// One alert waiting in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Alert subject.
    pub subject: String,
    /// Alert id, used as `Nats-Msg-Id`.
    pub id: String,
    /// The alert JSON.
    pub payload: Vec<u8>,
}

/// What the batches since the last commit changed, written atomically.
#[derive(Default)]
pub struct BatchCommit {
    /// Last applied sequence.
    pub cursor: u64,
    /// When the stream stored the event at `cursor` (Unix ms; 0: unknown, not written).
    pub cursor_time_ms: i64,
    /// Watermark (newest event time applied).
    pub watermark_ms: i64,
    /// Correlation state changes.
    pub state: StateChanges,
    /// Whether to clear the poison record (its event is now behind the cursor).
    pub clear_poison: bool,
}

/// How large a force's stored state is, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoredSize {
    /// Its snapshot.
    pub snapshot: u64,
    /// Its journal (commits since the snapshot).
    pub journal: u64,
}

impl StoredSize {
    /// Whether the journal should be folded: it holds more than the snapshot (and more than
    /// [`journal::FOLD_MIN_BYTES`]), so that a restart reads at most about twice the state.
    pub fn fold_due(&self) -> bool {
        self.journal > self.snapshot.max(journal::FOLD_MIN_BYTES)
    }
}

/// One force's sled tree.
#[derive(Clone)]
pub struct ForceStore {
    tree: sled::Tree,
}

fn be_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl ForceStore {
    /// Last applied `NMC_EVENTS_<force>` sequence (0 if none).
    pub fn cursor(&self) -> Result<u64> {
        Ok(be_u64(self.tree.get(CURSOR)?))
    }

    /// When the stream stored the event at the cursor (Unix ms), if a commit recorded it with
    /// this cursor: a state from earlier builds or imported from a checkpoint has none until
    /// its next commit.
    pub fn cursor_time_ms(&self) -> Result<Option<i64>> {
        let cursor = self.cursor()?;
        Ok(self
            .tree
            .get(CURSOR_TIME)?
            .and_then(|v| decode_cursor_time(&v))
            .filter(|&(seq, _)| seq == cursor)
            .map(|(_, ms)| ms))
    }

    /// The state generation the tree's state belongs to (0 before the force's first reset).
    pub fn generation(&self) -> Result<u64> {
        Ok(be_u64(self.tree.get(GENERATION)?))
    }

    /// Discards the force's state (cursor and its time, watermark, correlation state, poison
    /// record) and records that the tree belongs to `generation`, in one atomic batch: the
    /// force reads its stream from the start. Outbox alerts stay, to be published.
    pub fn reset(&self, generation: u64) -> Result<()> {
        let mut b = sled::Batch::default();
        for k in self.tree.iter().keys() {
            let k = k?;
            if !k.starts_with(OUTBOX_PREFIX) {
                b.remove(k);
            }
        }
        put_generation(&mut b, generation);
        self.tree.apply_batch(b)?;
        Ok(())
    }

    /// Rebuilds the force's correlation state from the tree; also says how large its snapshot
    /// and journal are (when to fold).
    pub fn load_state(&self, rules: &RuleSet) -> Result<(ForceState, StoredSize)> {
        let wm = be_u64(self.tree.get(WATERMARK)?) as i64;
        let stored = journal::read(&self.tree)?;
        let st = ForceState::load(
            rules,
            wm,
            stored
                .groups
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .context("decoding force state; delete the force's tree to rebuild it by replay")?;
        let size = StoredSize {
            snapshot: stored.snapshot_bytes,
            journal: stored.journal_bytes,
        };
        Ok((st, size))
    }

    /// Folds the journal into a new snapshot (see [`journal`]); returns the snapshot's bytes.
    pub fn fold(&self) -> Result<u64> {
        journal::fold(&self.tree)
    }

    /// The poison record, if any.
    pub fn poison(&self) -> Result<Option<Poison>> {
        match self.tree.get(POISON)? {
            Some(v) => Ok(Some(state::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Records one more failed attempt at `seq`.
    pub fn record_panic(&self, seq: u64, reason: &str) -> Result<Poison> {
        let mut p = match self.poison()? {
            Some(p) if p.seq == seq => p,
            _ => Poison {
                seq,
                attempts: 0,
                reason: String::new(),
            },
        };
        p.attempts += 1;
        p.reason = reason.to_owned();
        self.tree.insert(POISON, state::encode(&p))?;
        Ok(p)
    }

    /// Writes a commit atomically (durable once [`Store::flush`] returns): the cursor, and
    /// the state changes as one journal entry. Returns the journal bytes it wrote.
    pub fn commit(&self, c: &BatchCommit) -> Result<u64> {
        let mut b = sled::Batch::default();
        b.insert(CURSOR, &c.cursor.to_be_bytes());
        if c.cursor_time_ms != 0 {
            b.insert(
                CURSOR_TIME,
                [c.cursor.to_be_bytes(), c.cursor_time_ms.to_be_bytes()].concat(),
            );
        } else {
            b.remove(CURSOR_TIME);
        }
        b.insert(WATERMARK, &(c.watermark_ms as u64).to_be_bytes());
        let mut bytes = Vec::with_capacity(journal::encoded_len(c.state.iter()));
        journal::encode(c.state.iter(), &mut bytes);
        journal::put_chunks(&mut b, journal::JOURNAL_PREFIX, c.cursor, &bytes);
        if c.clear_poison {
            b.remove(POISON);
        }
        self.tree.apply_batch(b)?;
        Ok(bytes.len() as u64)
    }

    /// Outbox entries in the order they were raised.
    pub fn outbox(&self) -> Result<Vec<(Vec<u8>, OutboxEntry)>> {
        self.tree
            .scan_prefix(OUTBOX_PREFIX)
            .map(|r| {
                let (k, v) = r?;
                Ok((k.to_vec(), state::decode(&v)?))
            })
            .collect()
    }

    /// Removes published outbox entries.
    pub fn outbox_remove(&self, keys: impl IntoIterator<Item = Vec<u8>>) -> Result<()> {
        let mut b = sled::Batch::default();
        for k in keys {
            b.remove(k);
        }
        self.tree.apply_batch(b)?;
        Ok(())
    }
}

impl ForceStore {
    /// The whole state of the force, at its cursor (see [`Checkpoint`]): its groups one key
    /// each, as `s/<group>`, whatever snapshot and journal hold them here. The cursor's time
    /// and the generation stay out, so that nodes of earlier builds still import the checkpoint
    /// in a rolling upgrade: its object metadata carries them (`cluster::checkpoint`).
    pub fn export(&self, force: &ForceId) -> Result<Checkpoint> {
        let stored = journal::read(&self.tree)?;
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .tree
            .iter()
            .filter(|r| {
                r.as_ref().map_or(true, |(k, _)| {
                    k != CURSOR_TIME
                        && k != GENERATION
                        && ![
                            journal::GROUP_PREFIX,
                            journal::SNAPSHOT_PREFIX,
                            journal::JOURNAL_PREFIX,
                        ]
                        .iter()
                        .any(|p| k.starts_with(p))
                })
            })
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()?;
        entries.extend(
            stored
                .groups
                .into_iter()
                .map(|(k, v)| ([STATE_PREFIX, &k].concat(), v)),
        );
        entries.sort();
        Ok(Checkpoint {
            force: force.to_string(),
            seq: self.cursor()?,
            entries,
        })
    }

    /// Replaces the force's state by a checkpoint, atomically, once it is checked: a bad
    /// checkpoint is refused and the state in place is left as it was. With `rules`, the
    /// correlation state must also load under them (as the force's next worker will load it).
    pub fn import(&self, force: &ForceId, c: &Checkpoint, rules: Option<&RuleSet>) -> Result<()> {
        self.replace(force, c, rules, None)
    }

    /// [`ForceStore::import`] of a checkpoint taken over from the cluster, in the same atomic
    /// batch: the tree then belongs to the checkpoint's state generation, and its cursor has
    /// the time the checkpoint says its event was stored at, if it says.
    pub fn restore(
        &self,
        force: &ForceId,
        c: &Checkpoint,
        rules: Option<&RuleSet>,
        generation: u64,
        cursor_time_ms: Option<i64>,
    ) -> Result<()> {
        self.replace(force, c, rules, Some((generation, cursor_time_ms)))
    }

    fn replace(
        &self,
        force: &ForceId,
        c: &Checkpoint,
        rules: Option<&RuleSet>,
        restored: Option<(u64, Option<i64>)>,
    ) -> Result<()> {
        validate(force, c, rules)?;
        let mut b = sled::Batch::default();
        for k in self.tree.iter().keys() {
            let k = k?;
            // The tree's generation is not the checkpoint's entries' to say.
            if k != GENERATION {
                b.remove(k);
            }
        }
        for (k, v) in c.entries.iter().filter(|(k, _)| k != GENERATION) {
            b.insert(k.as_slice(), v.as_slice());
        }
        if let Some((generation, cursor_time_ms)) = restored {
            put_generation(&mut b, generation);
            if let Some(ms) = cursor_time_ms {
                b.insert(
                    CURSOR_TIME,
                    [c.seq.to_be_bytes(), ms.to_be_bytes()].concat(),
                );
            }
        }
        self.tree.apply_batch(b)?;
        Ok(())
    }
}

/// Sets (or, for 0, removes) the tree's generation in `b`.
fn put_generation(b: &mut sled::Batch, generation: u64) {
    if generation == 0 {
        b.remove(GENERATION);
    } else {
        b.insert(GENERATION, &generation.to_be_bytes());
    }
}

/// The sequence and time of an `m/cursor_time` value; `None` if it is not 16 bytes.
fn decode_cursor_time(v: &[u8]) -> Option<(u64, i64)> {
    let v: &[u8; 16] = v.try_into().ok()?;
    let (seq, ms) = v.split_at(8);
    Some((
        u64::from_be_bytes(seq.try_into().ok()?),
        i64::from_be_bytes(ms.try_into().ok()?),
    ))
}

/// Checks that a checkpoint is a whole, readable state of `force` before it replaces one.
fn validate(force: &ForceId, c: &Checkpoint, rules: Option<&RuleSet>) -> Result<()> {
    let bad = |why: String| anyhow::anyhow!("checkpoint of `{}` refused: {why}", c.force);
    if c.force != force.as_str() {
        return Err(bad(format!("it is not of force `{force}`")));
    }
    let get = |key: &[u8]| {
        c.entries
            .iter()
            .find(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v.as_slice())
    };
    let cursor = get(CURSOR).map(|v| <[u8; 8]>::try_from(v).map(u64::from_be_bytes));
    match cursor {
        Some(Ok(seq)) if seq == c.seq => {}
        Some(Ok(seq)) => {
            return Err(bad(format!(
                "its cursor {seq} is not its sequence {}",
                c.seq
            )));
        }
        Some(Err(_)) => return Err(bad("its cursor is not 8 bytes".into())),
        None if c.seq == 0 => {}
        None => return Err(bad("it has no cursor".into())),
    }
    let watermark = match get(WATERMARK) {
        Some(v) => <[u8; 8]>::try_from(v)
            .map(|b| u64::from_be_bytes(b) as i64)
            .map_err(|_| bad("its watermark is not 8 bytes".into()))?,
        None => 0,
    };
    for (k, v) in &c.entries {
        if k.starts_with(OUTBOX_PREFIX) {
            state::decode::<OutboxEntry>(v).map_err(|e| bad(format!("an outbox entry: {e}")))?;
        } else if k == CURSOR_TIME {
            decode_cursor_time(v).ok_or_else(|| bad("its cursor time is not 16 bytes".into()))?;
        } else if k == POISON {
            state::decode::<Poison>(v).map_err(|e| bad(format!("its poison record: {e}")))?;
        } else if !(k.starts_with(STATE_PREFIX)
            || k == CURSOR
            || k == WATERMARK
            || k == CURSOR_TIME
            // Exported by a build that does not know it (a rollback); not imported.
            || k == GENERATION)
        {
            return Err(bad(format!("unknown key {:?}", String::from_utf8_lossy(k))));
        }
    }
    if let Some(rules) = rules {
        let groups = c
            .entries
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(STATE_PREFIX)?, v.as_slice())));
        ForceState::load(rules, watermark, groups)
            .map_err(|e| bad(format!("its correlation state: {e}")))?;
    }
    Ok(())
}

/// The outbox key of the `n`-th alert raised by the event at stream sequence `seq`.
pub fn outbox_key(seq: u64, n: u16) -> Vec<u8> {
    [OUTBOX_PREFIX, &seq.to_be_bytes(), &n.to_be_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A brute-force count (so that the state has groups) over wrong-password sign-ins.
    fn rules() -> RuleSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules/identity");
        let (set, errors) = crate::rules::load(&[dir]).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        set
    }

    /// Applies `n` wrong-password sign-ins of bob from sequence `from` and commits them.
    fn apply(fs: &ForceStore, rules: &RuleSet, from: u64, n: u64) {
        let force = ForceId::new("kent").unwrap();
        let (mut st, _) = fs.load_state(rules).unwrap();
        let mut alerts = Vec::new();
        for seq in from..from + n {
            let v = crate::synth::signin(
                1_793_606_400_000 + seq as i64 * 1000,
                seq,
                "bob.smith@kent.police.uk",
                "45.155.205.99",
                "Azure Portal",
                "Browser",
                50126,
                ("Amsterdam", 52.37, 4.89),
                "NL",
            );
            let ev = nmc_shared::Event::from_value(nmc_shared::SourceKind::EntraSignin, v).unwrap();
            st.apply(rules, &force, seq, &ev, &mut alerts);
        }
        fs.commit(&BatchCommit {
            cursor: from + n - 1,
            watermark_ms: st.watermark_ms(),
            state: st.take_changes(rules),
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn a_bad_checkpoint_is_refused_and_the_state_in_place_survives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kent = ForceId::new("kent").unwrap();
        let fs = store.force(&kent).unwrap();
        let rules = rules();
        apply(&fs, &rules, 1, 5);
        let good = fs.export(&kent).unwrap();
        assert_eq!(good.seq, 5);
        assert!(
            good.entries
                .iter()
                .any(|(k, _)| k.starts_with(STATE_PREFIX))
        );
        apply(&fs, &rules, 6, 5);
        let before = fs.export(&kent).unwrap();
        assert_eq!(before.seq, 10);

        let corrupt = |f: &dyn Fn(&mut Checkpoint)| {
            let mut c = good.clone();
            f(&mut c);
            c
        };
        let state_key = |c: &mut Checkpoint| {
            c.entries
                .iter_mut()
                .find(|(k, _)| k.starts_with(STATE_PREFIX))
                .unwrap()
                .1
                .clone_from(&vec![3, 0xff, 0xff, 0xff]);
        };
        let bad: Vec<(&str, Checkpoint)> = vec![
            ("other force", corrupt(&|c| c.force = "essex".into())),
            ("cursor mismatch", corrupt(&|c| c.seq = 99)),
            (
                "no cursor",
                corrupt(&|c| c.entries.retain(|(k, _)| k.as_slice() != CURSOR)),
            ),
            (
                "unknown key",
                corrupt(&|c| c.entries.push((b"x/what".to_vec(), vec![1]))),
            ),
            (
                "broken outbox",
                corrupt(&|c| c.entries.push((outbox_key(3, 0), vec![3, 9, 9]))),
            ),
            ("broken state", corrupt(&state_key)),
        ];
        for (why, c) in &bad {
            let e = fs.import(&kent, c, Some(&rules)).unwrap_err();
            assert!(format!("{e:#}").contains("refused"), "{why}: {e:#}");
            assert_eq!(
                fs.export(&kent).unwrap().entries,
                before.entries,
                "{why}: the state in place is untouched"
            );
        }
        fs.import(&kent, &good, Some(&rules)).unwrap();
        assert_eq!(fs.export(&kent).unwrap().entries, good.entries);
        assert_eq!(fs.cursor().unwrap(), 5);
    }

    #[test]
    fn a_reset_keeps_only_the_outbox_and_the_generation_stays_with_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kent = ForceId::new("kent").unwrap();
        let fs = store.force(&kent).unwrap();
        let rules = rules();
        apply(&fs, &rules, 1, 12);
        let at_12 = fs.export(&kent).unwrap();
        let alert = OutboxEntry {
            subject: "nmc.alerts.kent.high".into(),
            id: "a1".into(),
            payload: b"{}".to_vec(),
        };
        fs.tree
            .insert(outbox_key(12, 0), state::encode(&alert))
            .unwrap();
        assert_eq!(fs.generation().unwrap(), 0);

        fs.reset(3).unwrap();
        assert_eq!(fs.generation().unwrap(), 3);
        assert_eq!(fs.cursor().unwrap(), 0);
        assert_eq!(fs.cursor_time_ms().unwrap(), None);
        assert_eq!(fs.load_state(&rules).unwrap().0.live_groups(), 0);
        let outbox = fs.outbox().unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            (&outbox[0].0, &outbox[0].1.id),
            (&outbox_key(12, 0), &alert.id)
        );
        let keys: Vec<_> = fs.tree.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(keys, vec![GENERATION.to_vec(), outbox_key(12, 0)]);

        // The generation is the tree's: out of checkpoints, kept by an import.
        assert!(
            fs.export(&kent)
                .unwrap()
                .entries
                .iter()
                .all(|(k, _)| k.as_slice() != GENERATION)
        );
        fs.import(&kent, &at_12, Some(&rules)).unwrap();
        assert_eq!(fs.generation().unwrap(), 3);
        assert_eq!(fs.cursor().unwrap(), 12);

        // A checkpoint taken over brings its generation and its cursor's time; generation 0 is
        // no key (a tree never reset stays readable by builds without generations), and an
        // `m/generation` exported by such a build (a rollback) is accepted, not imported.
        fs.restore(&kent, &at_12, Some(&rules), 4, Some(1_793_606_400_123))
            .unwrap();
        assert_eq!(fs.generation().unwrap(), 4);
        assert_eq!(fs.cursor_time_ms().unwrap(), Some(1_793_606_400_123));
        let mut exported_by_older = at_12.clone();
        exported_by_older
            .entries
            .push((GENERATION.to_vec(), 4_u64.to_be_bytes().to_vec()));
        exported_by_older.entries.sort();
        fs.restore(&kent, &exported_by_older, Some(&rules), 0, None)
            .unwrap();
        assert_eq!(fs.generation().unwrap(), 0);
        assert!(fs.tree.get(GENERATION).unwrap().is_none());
        assert_eq!(fs.cursor_time_ms().unwrap(), None);
        assert_eq!(fs.export(&kent).unwrap().entries, at_12.entries);
    }

    #[test]
    fn the_cursor_time_is_kept_with_the_cursor_and_left_out_of_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kent = ForceId::new("kent").unwrap();
        let fs = store.force(&kent).unwrap();
        assert_eq!(fs.cursor_time_ms().unwrap(), None);
        fs.commit(&BatchCommit {
            cursor: 7,
            cursor_time_ms: 1_793_606_400_123,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(fs.cursor_time_ms().unwrap(), Some(1_793_606_400_123));
        // A commit whose time is unknown leaves none (not the time of another sequence).
        fs.commit(&BatchCommit {
            cursor: 8,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(fs.cursor_time_ms().unwrap(), None);
        // A time of another sequence than the cursor (left by a build that moved the cursor
        // without it) is unknown too.
        fs.commit(&BatchCommit {
            cursor: 9,
            cursor_time_ms: 5,
            ..Default::default()
        })
        .unwrap();
        fs.tree.insert(CURSOR, &10_u64.to_be_bytes()).unwrap();
        assert_eq!(fs.cursor_time_ms().unwrap(), None);
        fs.tree.insert(CURSOR, &9_u64.to_be_bytes()).unwrap();
        assert_eq!(fs.cursor_time_ms().unwrap(), Some(5));

        // Out of checkpoints (older builds refuse keys they do not know), accepted in them
        // when well formed.
        let mut c = fs.export(&kent).unwrap();
        assert!(c.entries.iter().all(|(k, _)| k.as_slice() != CURSOR_TIME));
        let essex = ForceId::new("essex").unwrap();
        let other = store.force(&essex).unwrap();
        c.force = "essex".into();
        let mut broken = c.clone();
        broken.entries.push((CURSOR_TIME.to_vec(), vec![1, 2, 3]));
        broken.entries.sort();
        let e = other.import(&essex, &broken, None).unwrap_err();
        assert!(format!("{e:#}").contains("cursor time"), "{e:#}");
        c.entries.push((
            CURSOR_TIME.to_vec(),
            [9_u64.to_be_bytes(), 6_i64.to_be_bytes()].concat(),
        ));
        c.entries.sort();
        other.import(&essex, &c, None).unwrap();
        assert_eq!(other.cursor_time_ms().unwrap(), Some(6));
        // An import replaces the time in place with the checkpoint's (none: unknown).
        let plain = fs.export(&kent).unwrap();
        fs.import(&kent, &plain, None).unwrap();
        assert_eq!(fs.cursor_time_ms().unwrap(), None);
        assert_eq!(fs.cursor().unwrap(), 9);
    }
}
