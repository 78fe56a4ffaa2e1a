//! The console's own index of alerts and their lifecycle states, in sled: built from the
//! `NMC_ALERTS` stream and the `NMC_ALERT_STATES` bucket, and rebuilt from them when its folder
//! is lost, so any number of console replicas can run, each with its own.
//!
//! Trees:
//! - `alerts`:   stream sequence (u64 big-endian) → the alert and when it was stored (JSON)
//! - `states`:   alert id (16 bytes) → its [`Lifecycle`] (JSON), whether or not the alert
//!   is indexed yet (the stream and the bucket are read independently)
//! - `summary`:  stream sequence → what queries filter on (level, time, rule, the words searched),
//!   bincode: scans read these, not whole alerts
//! - `by_id`:    alert id (16 bytes) → stream sequence
//! - `by_force`: `<force>\0<sequence>` → () (a force's alerts, newest last)
//! - `meta`:     `last_seq` → the last stream sequence indexed
//!
//! Queries walk the newest first: the whole index for an analyst, only the allowed forces'
//! key ranges for a force's contacts (access is part of the query, never a filter applied
//! afterwards).

use std::path::Path;

use anyhow::{Context, Result};
use nmc_shared::ForceId;
use nmc_shared::alert::{Alert, Level};
use nmc_shared::lifecycle::{Lifecycle, State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const LAST_SEQ: &[u8] = b"last_seq";

/// One indexed alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its sequence in `NMC_ALERTS`.
    pub seq: u64,
    /// When `NMC_ALERTS` stored it, Unix ms.
    pub published_ms: i64,
    /// The alert.
    pub alert: Alert,
    /// Its lifecycle, once recorded.
    pub state: Option<Lifecycle>,
}

/// An alert as stored (its state is kept apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    published_ms: i64,
    alert: Alert,
}

/// What a query filters on, kept small so that a scan of the whole index stays fast.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Summary {
    level: Level,
    published_ms: i64,
    id: [u8; 16],
    rule_id: String,
    title: String,
    /// Lowercase title, rule id, alert id and group values: what `text` searches.
    hay: String,
}

impl Summary {
    fn of(a: &Alert, published_ms: i64) -> Summary {
        let hay = format!(
            "{} {} {} {}",
            a.rule.title,
            a.rule.id,
            a.id,
            a.group.values().cloned().collect::<Vec<_>>().join(" ")
        )
        .to_lowercase();
        Summary {
            level: a.rule.level,
            published_ms,
            id: *a.id.as_bytes(),
            rule_id: a.rule.id.clone(),
            title: a.rule.title.clone(),
            hay,
        }
    }
}

fn bin<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(bincode::serde::encode_to_vec(
        v,
        bincode::config::standard(),
    )?)
}

fn unbin<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(bincode::serde::decode_from_slice(b, bincode::config::standard())?.0)
}

impl Entry {
    /// Where it stands (`new` until recorded otherwise).
    pub fn current(&self) -> State {
        self.state.as_ref().map_or(State::New, |s| s.state)
    }
}

/// Which alerts a query may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every force's (analysts, admins).
    All,
    /// Only these forces' (a force's contacts).
    Forces(Vec<ForceId>),
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only these forces (within the scope).
    pub forces: Vec<ForceId>,
    /// Only these levels.
    pub levels: Vec<Level>,
    /// Only these states.
    pub states: Vec<State>,
    /// Only this rule (id or exact title).
    pub rule: Option<String>,
    /// Published at or after, Unix ms.
    pub from_ms: Option<i64>,
    /// Published before, Unix ms.
    pub to_ms: Option<i64>,
    /// Words that must all appear (case-insensitive) in the title, rule id, group values or
    /// alert id.
    pub text: Option<String>,
    /// Page after this sequence (the previous page's `next`): older alerts only.
    pub before: Option<u64>,
    /// Page size (1..=500).
    pub limit: usize,
}

/// A page of alerts, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The alerts.
    pub entries: Vec<Entry>,
    /// The `before` of the next page, if there is one.
    pub next: Option<u64>,
}

/// A change to the index, for live views.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// An alert was indexed.
    Alert {
        /// It.
        entry: Box<Entry>,
    },
    /// An alert's lifecycle changed.
    State {
        /// The alert.
        id: Uuid,
        /// Its force.
        force: ForceId,
        /// Its new lifecycle.
        state: Lifecycle,
    },
}

impl Change {
    /// The force it concerns.
    pub fn force(&self) -> &ForceId {
        match self {
            Change::Alert { entry } => &entry.alert.force,
            Change::State { force, .. } => force,
        }
    }
}

/// The index.
#[derive(Clone)]
pub struct AlertIndex {
    changes: tokio::sync::broadcast::Sender<Change>,
    alerts: sled::Tree,
    summary: sled::Tree,
    states: sled::Tree,
    by_id: sled::Tree,
    by_force: sled::Tree,
    meta: sled::Tree,
    /// Open (not closed) alerts per force and level: counted from the trees at open, then kept
    /// by [`AlertIndex::put_alert`] and [`AlertIndex::set_state`] under this lock, so the
    /// overview needs no scan.
    open: std::sync::Arc<std::sync::Mutex<OpenCounts>>,
    db: sled::Db,
}

/// Open alerts per force and level.
type OpenCounts = std::collections::BTreeMap<ForceId, std::collections::BTreeMap<Level, u64>>;

fn is_closed(state: Option<&[u8]>) -> Result<bool> {
    Ok(state
        .map(decode::<Lifecycle>)
        .transpose()?
        .is_some_and(|l| l.state == State::Closed))
}

// JSON, not bincode: the alert record skips empty fields when serialized, which only a
// self-describing format reads back.
fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(b)?)
}

fn force_key(force: &ForceId, seq: u64) -> Vec<u8> {
    let mut k = force.as_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl AlertIndex {
    /// Opens (or creates) the index under `dir`.
    pub fn open(dir: &Path) -> Result<AlertIndex> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the console data dir {}", dir.display()))?;
        let db = sled::Config::new()
            .path(dir.join("index"))
            .open()
            .with_context(|| {
                format!(
                    "opening the console index at {} (is another console using this data_dir?)",
                    dir.display()
                )
            })?;
        let index = AlertIndex {
            changes: tokio::sync::broadcast::channel(1024).0,
            alerts: db.open_tree("alerts")?,
            summary: db.open_tree("summary")?,
            states: db.open_tree("states")?,
            by_id: db.open_tree("by_id")?,
            by_force: db.open_tree("by_force")?,
            meta: db.open_tree("meta")?,
            open: Default::default(),
            db,
        };
        let mut open = OpenCounts::default();
        index.each_visible(&Scope::All, |force, sm| {
            if !is_closed(index.states.get(sm.id)?.as_deref())? {
                *open.entry(force).or_default().entry(sm.level).or_default() += 1;
            }
            Ok(())
        })?;
        *index.open.lock().expect("open counts") = open;
        Ok(index)
    }

    /// The last `NMC_ALERTS` sequence indexed (0: none).
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self
            .meta
            .get(LAST_SEQ)?
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
            .unwrap_or(0))
    }

    /// Indexes an alert read at `seq` (idempotent).
    pub fn put_alert(&self, seq: u64, published_ms: i64, alert: Alert) -> Result<()> {
        let force = alert.force.clone();
        let (id, level) = (alert.id, alert.rule.level);
        let mut open = self.open.lock().expect("open counts");
        self.summary
            .insert(seq.to_be_bytes(), bin(&Summary::of(&alert, published_ms))?)?;
        let stored = Stored {
            seq,
            published_ms,
            alert,
        };
        let fresh = self
            .alerts
            .insert(seq.to_be_bytes(), encode(&stored)?)?
            .is_none();
        self.by_id.insert(id.as_bytes(), &seq.to_be_bytes())?;
        self.by_force.insert(force_key(&force, seq), &[])?;
        if fresh && !is_closed(self.states.get(id.as_bytes())?.as_deref())? {
            *open
                .entry(force.clone())
                .or_default()
                .entry(level)
                .or_default() += 1;
        }
        drop(open);
        if seq > self.last_seq()? {
            self.meta.insert(LAST_SEQ, &seq.to_be_bytes())?;
        }
        if self.changes.receiver_count() > 0
            && let Some(bytes) = self.alerts.get(seq.to_be_bytes())?
        {
            let _ = self.changes.send(Change::Alert {
                entry: Box::new(self.entry(&bytes)?),
            });
        }
        Ok(())
    }

    /// Every change from now on (a receiver that falls 1,024 changes behind is told it lagged).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Records an alert's lifecycle (before or after its alert is indexed).
    pub fn set_state(&self, id: Uuid, state: &Lifecycle) -> Result<()> {
        let bytes = encode(state)?;
        let mut open = self.open.lock().expect("open counts");
        let old = self.states.insert(id.as_bytes(), bytes.as_slice())?;
        let (was, is) = (is_closed(old.as_deref())?, state.state == State::Closed);
        let notify = self.changes.receiver_count() > 0 && old.as_deref() != Some(bytes.as_slice());
        // The alert (once indexed) for its force and level: the counts and the live views.
        let alert = if was != is || notify {
            self.get(id, &Scope::All)?.map(|e| e.alert)
        } else {
            None
        };
        if was != is
            && let Some(a) = &alert
        {
            let n = open
                .entry(a.force.clone())
                .or_default()
                .entry(a.rule.level)
                .or_default();
            *n = if is { n.saturating_sub(1) } else { *n + 1 };
        }
        drop(open);
        if notify && let Some(a) = alert {
            let _ = self.changes.send(Change::State {
                id,
                force: a.force,
                state: state.clone(),
            });
        }
        Ok(())
    }

    /// The entry of a stored alert, with its state.
    fn entry(&self, bytes: &[u8]) -> Result<Entry> {
        let s: Stored = decode(bytes)?;
        let state = self
            .states
            .get(s.alert.id.as_bytes())?
            .map(|b| decode(&b))
            .transpose()?;
        Ok(Entry {
            seq: s.seq,
            published_ms: s.published_ms,
            alert: s.alert,
            state,
        })
    }

    /// The alert `id`, if `scope` may see it (`None` either way: a force's contact cannot tell
    /// another force's alert from no alert).
    pub fn get(&self, id: Uuid, scope: &Scope) -> Result<Option<Entry>> {
        let Some(seq) = self.by_id.get(id.as_bytes())? else {
            return Ok(None);
        };
        let Some(bytes) = self.alerts.get(seq)? else {
            return Ok(None);
        };
        let e = self.entry(&bytes)?;
        Ok(allowed(scope, &e.alert.force).then_some(e))
    }

    /// A page of the alerts `scope` may see that match `q`, newest first.
    pub fn query(&self, q: &Query, scope: &Scope) -> Result<Page> {
        let limit = q.limit.clamp(1, 500);
        let forces: Option<Vec<ForceId>> = match (scope, q.forces.is_empty()) {
            (Scope::All, true) => None,
            (Scope::All, false) => Some(q.forces.clone()),
            (Scope::Forces(mine), true) => Some(mine.clone()),
            (Scope::Forces(mine), false) => Some(
                q.forces
                    .iter()
                    .filter(|f| mine.contains(f))
                    .cloned()
                    .collect(),
            ),
        };
        let words: Vec<String> = q
            .text
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let states = &self.states;
        let matches = |sm: &Summary| -> Result<bool> {
            let cheap = (q.levels.is_empty() || q.levels.contains(&sm.level))
                && q.rule
                    .as_ref()
                    .is_none_or(|r| *r == sm.rule_id || *r == sm.title)
                && q.from_ms.is_none_or(|t| sm.published_ms >= t)
                && q.to_ms.is_none_or(|t| sm.published_ms < t)
                && words.iter().all(|w| sm.hay.contains(w.as_str()));
            if !cheap || q.states.is_empty() {
                return Ok(cheap);
            }
            let state = states
                .get(sm.id)?
                .map(|b| decode::<Lifecycle>(&b))
                .transpose()?
                .map_or(State::New, |l| l.state);
            Ok(q.states.contains(&state))
        };
        let before = q.before.unwrap_or(u64::MAX);
        let mut entries = Vec::with_capacity(limit + 1);
        match forces {
            None => {
                for kv in self.summary.range(..before.to_be_bytes()).rev() {
                    let (k, v) = kv?;
                    if matches(&unbin(&v)?)?
                        && let Some(bytes) = self.alerts.get(&k)?
                    {
                        entries.push(self.entry(&bytes)?);
                        if entries.len() > limit {
                            break;
                        }
                    }
                }
            }
            Some(forces) => {
                // Merge the forces' ranges newest first: each walked backwards in turn, the
                // newest candidate taken each time.
                let mut walks: Vec<_> = forces
                    .iter()
                    .map(|f| {
                        self.by_force
                            .range(force_key(f, 0)..force_key(f, before))
                            .rev()
                            .peekable()
                    })
                    .collect();
                let seq_of =
                    |k: &[u8]| u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8 bytes"));
                while entries.len() <= limit {
                    let mut best: Option<(usize, u64)> = None;
                    for (i, w) in walks.iter_mut().enumerate() {
                        if let Some(Ok((k, _))) = w.peek() {
                            let s = seq_of(k);
                            if best.is_none_or(|(_, b)| s > b) {
                                best = Some((i, s));
                            }
                        }
                    }
                    let Some((i, seq)) = best else { break };
                    walks[i].next().transpose()?;
                    if let Some(sm) = self.summary.get(seq.to_be_bytes())?
                        && matches(&unbin(&sm)?)?
                        && let Some(bytes) = self.alerts.get(seq.to_be_bytes())?
                    {
                        entries.push(self.entry(&bytes)?);
                    }
                }
            }
        }
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(Page { entries, next })
    }

    /// Calls `f` with the force and summary of every alert `scope` may see (a scan: tens of
    /// milliseconds at 100,000 alerts).
    fn each_visible(
        &self,
        scope: &Scope,
        mut f: impl FnMut(ForceId, Summary) -> Result<()>,
    ) -> Result<()> {
        for kv in self.by_force.iter() {
            let (k, _) = kv?;
            let Some(split) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let Ok(force) = ForceId::new(&String::from_utf8_lossy(&k[..split])) else {
                continue;
            };
            if !allowed(scope, &force) {
                continue;
            }
            if let Some(sm) = self.summary.get(&k[split + 1..])? {
                f(force, unbin(&sm)?)?;
            }
        }
        Ok(())
    }

    /// Alerts not closed, per force and level, of what `scope` may see (kept as alerts and
    /// states arrive: no scan).
    pub fn open_counts(&self, scope: &Scope) -> Result<OpenCounts> {
        let open = self.open.lock().expect("open counts");
        Ok(open
            .iter()
            .filter(|(f, _)| allowed(scope, f))
            .map(|(f, levels)| {
                let levels: std::collections::BTreeMap<Level, u64> = levels
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(l, n)| (*l, *n))
                    .collect();
                (f.clone(), levels)
            })
            .filter(|(_, levels)| !levels.is_empty())
            .collect())
    }

    /// Per rule id, how many alerts of what `scope` may see it raised and when it last did
    /// (published, Unix ms): the rules page's fire counts.
    pub fn fire_counts(
        &self,
        scope: &Scope,
    ) -> Result<std::collections::BTreeMap<String, (u64, i64)>> {
        let mut out: std::collections::BTreeMap<String, (u64, i64)> = Default::default();
        self.each_visible(scope, |_, sm| {
            let e = out.entry(sm.rule_id).or_default();
            e.0 += 1;
            e.1 = e.1.max(sm.published_ms);
            Ok(())
        })?;
        Ok(out)
    }

    /// Alerts indexed.
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// Makes what is indexed durable.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }
}

fn allowed(scope: &Scope, force: &ForceId) -> bool {
    match scope {
        Scope::All => true,
        Scope::Forces(f) => f.contains(force),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nmc_shared::alert::RuleRef;
    use std::collections::BTreeMap;

    fn alert(force: &str, n: u64, level: Level) -> Alert {
        Alert {
            id: Uuid::new_v5(
                &nmc_shared::alert::ALERT_NAMESPACE,
                format!("{force}{n}").as_bytes(),
            ),
            force: ForceId::new(force).unwrap(),
            rule: RuleRef {
                id: format!("rule-{}", n % 3),
                title: format!("Rule {} fired", n % 3),
                level,
                tags: vec![],
                kind: "detection".into(),
                description: String::new(),
                mitigation: String::new(),
                falsepositives: vec![],
                references: vec![],
            },
            group: BTreeMap::from([("IPAddress".into(), format!("203.0.113.{n}"))]),
            window_start: String::new(),
            window_end: String::new(),
            count: 1,
            first_seen: String::new(),
            last_seen: String::new(),
            distinct: None,
            measured: None,
            suppressed: 0,
            evidence: vec![],
            node: String::new(),
            epoch: 1,
            rule_pack: String::new(),
        }
    }

    fn filled() -> (tempfile::TempDir, AlertIndex) {
        let dir = tempfile::tempdir().unwrap();
        let idx = AlertIndex::open(dir.path()).unwrap();
        for seq in 1..=30u64 {
            let force = ["kent", "essex", "durham"][(seq % 3) as usize];
            let level = if seq % 5 == 0 {
                Level::Critical
            } else {
                Level::Medium
            };
            idx.put_alert(seq, seq as i64 * 1000, alert(force, seq, level))
                .unwrap();
        }
        (dir, idx)
    }

    fn kent() -> Scope {
        Scope::Forces(vec![ForceId::new("kent").unwrap()])
    }

    #[test]
    fn pages_go_newest_first_and_end() {
        let (_d, idx) = filled();
        let q = Query {
            limit: 12,
            ..Default::default()
        };
        let p1 = idx.query(&q, &Scope::All).unwrap();
        assert_eq!(
            p1.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (19..=30).rev().collect::<Vec<_>>()
        );
        let p3 = idx
            .query(
                &Query {
                    before: Some(7),
                    ..q.clone()
                },
                &Scope::All,
            )
            .unwrap();
        assert_eq!(p3.entries.len(), 6);
        assert_eq!(p3.next, None);
        assert_eq!(idx.last_seq().unwrap(), 30);
    }

    #[test]
    fn open_counts_follow_alerts_and_states_in_either_order_and_survive_a_reopen() {
        let (dir, idx) = filled();
        let kent_id = ForceId::new("kent").unwrap();
        let kent_counts = |idx: &AlertIndex| idx.open_counts(&kent()).unwrap()[&kent_id].clone();
        // kent: seq 3, 6, ..., 30; critical at 15 and 30.
        assert_eq!(
            kent_counts(&idx),
            BTreeMap::from([(Level::Critical, 2), (Level::Medium, 8)])
        );
        let medium = alert("kent", 3, Level::Medium).id;
        let mut closed = Lifecycle::new(0);
        closed.state = State::Closed;
        idx.set_state(medium, &closed).unwrap();
        idx.set_state(medium, &closed).unwrap();
        assert_eq!(
            kent_counts(&idx)[&Level::Medium],
            7,
            "closed once, counted once"
        );
        let mut reopened = Lifecycle::new(1);
        reopened.state = State::Investigating;
        idx.set_state(medium, &reopened).unwrap();
        assert_eq!(kent_counts(&idx)[&Level::Medium], 8);
        // A state that arrives before its alert; an alert indexed twice.
        let early = alert("kent", 300, Level::High);
        idx.set_state(early.id, &closed).unwrap();
        idx.put_alert(31, 31_000, early).unwrap();
        idx.put_alert(30, 30_000, alert("kent", 30, Level::Critical))
            .unwrap();
        assert_eq!(
            kent_counts(&idx),
            BTreeMap::from([(Level::Critical, 2), (Level::Medium, 8)])
        );
        idx.set_state(medium, &closed).unwrap();
        let all = idx.open_counts(&Scope::All).unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        drop(idx);
        // sled releases its file lock when its background threads let go, shortly after.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let again = loop {
            match AlertIndex::open(dir.path()) {
                Ok(i) => break i,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e:#}"),
            }
        };
        assert_eq!(
            again.open_counts(&Scope::All).unwrap(),
            all,
            "counted the same from disk"
        );
    }

    #[test]
    fn fire_counts_are_per_rule_within_the_scope() {
        let (_d, idx) = filled();
        let all = idx.fire_counts(&Scope::All).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all["rule-1"], (10, 28_000));
        let mine = idx.fire_counts(&kent()).unwrap();
        assert_eq!(
            mine.into_iter().collect::<Vec<_>>(),
            [("rule-0".to_owned(), (10, 30_000))],
            "kent's alerts are seq 3, 6, ... 30, all of rule-0"
        );
    }

    #[test]
    fn a_force_sees_only_its_own_alerts_whatever_it_asks_for() {
        let (_d, idx) = filled();
        let mine = idx
            .query(
                &Query {
                    limit: 500,
                    ..Default::default()
                },
                &kent(),
            )
            .unwrap();
        assert_eq!(mine.entries.len(), 10);
        assert!(
            mine.entries
                .iter()
                .all(|e| e.alert.force.as_str() == "kent")
        );
        let asked = Query {
            forces: vec![ForceId::new("essex").unwrap()],
            limit: 500,
            ..Default::default()
        };
        assert!(idx.query(&asked, &kent()).unwrap().entries.is_empty());
        let essex_alert = alert("essex", 1, Level::Medium).id;
        assert!(
            idx.get(essex_alert, &kent()).unwrap().is_none(),
            "not by id either"
        );
        assert!(idx.get(essex_alert, &Scope::All).unwrap().is_some());
        // Two forces merged newest first, paged.
        let two = Scope::Forces(vec![
            ForceId::new("kent").unwrap(),
            ForceId::new("essex").unwrap(),
        ]);
        let p = idx
            .query(
                &Query {
                    limit: 5,
                    ..Default::default()
                },
                &two,
            )
            .unwrap();
        assert_eq!(
            p.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [30, 28, 27, 25, 24]
        );
        let p2 = idx
            .query(
                &Query {
                    limit: 5,
                    before: p.next,
                    ..Default::default()
                },
                &two,
            )
            .unwrap();
        assert_eq!(p2.entries[0].seq, 22);
    }

    #[test]
    fn filters_combine_and_states_follow_the_bucket() {
        let (_d, idx) = filled();
        let crit = Query {
            levels: vec![Level::Critical],
            limit: 500,
            ..Default::default()
        };
        assert_eq!(idx.query(&crit, &Scope::All).unwrap().entries.len(), 6);
        let text = Query {
            text: Some("203.0.113.17".into()),
            limit: 500,
            ..Default::default()
        };
        let hit = idx.query(&text, &Scope::All).unwrap();
        assert_eq!(hit.entries.len(), 1);
        assert_eq!(hit.entries[0].seq, 17);
        let timed = Query {
            from_ms: Some(10_000),
            to_ms: Some(13_000),
            limit: 500,
            ..Default::default()
        };
        assert_eq!(idx.query(&timed, &Scope::All).unwrap().entries.len(), 3);
        let id = hit.entries[0].alert.id;
        let mut l = Lifecycle::new(0);
        l.state = State::Closed;
        idx.set_state(id, &l).unwrap();
        let closed = Query {
            states: vec![State::Closed],
            limit: 500,
            ..Default::default()
        };
        assert_eq!(
            idx.query(&closed, &Scope::All).unwrap().entries[0].alert.id,
            id
        );
        // Indexing the alert again (a rebuild reads the stream again) keeps its state, and a
        // state that arrives before its alert is there when the alert comes.
        let again = idx.get(id, &Scope::All).unwrap().unwrap();
        idx.put_alert(again.seq, again.published_ms, again.alert.clone())
            .unwrap();
        assert_eq!(
            idx.get(id, &Scope::All).unwrap().unwrap().state,
            Some(l.clone())
        );
        let late = alert("kent", 99, Level::High);
        idx.set_state(late.id, &l).unwrap();
        idx.put_alert(99, 99_000, late.clone()).unwrap();
        assert_eq!(
            idx.get(late.id, &Scope::All).unwrap().unwrap().current(),
            State::Closed
        );
    }
}
