//! The literal index: which rules can match an event, and the answers to their literal tests.
//!
//! Compilation derives for every rule its *needs*: literals (or integers) of which at least one
//! occurs, in a given field, in every event the rule matches (see [`super::needs`]). Per logsource
//! class and field, one literal scanner ([`super::scan`]) over the needs of the class's rules
//! reads the field's value once per event; only rules whose needs were found, plus rules without
//! usable needs, are evaluated.
//!
//! Separately, every case-insensitive literal test (`contains`/`startswith`/`endswith`/equality
//! without wildcards) of every rule is registered per field in one scanner. The first candidate
//! rule that tests a field scans it once; every later literal test on that field, in any rule, is
//! answered from the recorded hits and their position (anywhere, at the start, at the end, the
//! whole value).
//!
//! Both are exact: fields are read through the same mapping as the matchers, and the index gives
//! the same answers as testing values directly (`tests/sigma_regression.rs` and the detection
//! benchmark check this on the SigmaHQ corpus).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::fields::FieldCache;
use super::needs::Need;
use super::scan::Scanner;

pub use super::scan::{ANYWHERE, AT_END, AT_START, WHOLE};

/// Collects fields and literal tests while rules compile.
#[derive(Debug, Default)]
pub struct IndexBuilder {
    field_ids: HashMap<String, u32>,
    /// Per field: literal -> id.
    lits: Vec<HashMap<String, u32>>,
}

impl IndexBuilder {
    /// The id of a field.
    pub fn field(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.field_ids.get(name) {
            return id;
        }
        let id = self.lits.len() as u32;
        self.field_ids.insert(name.to_owned(), id);
        self.lits.push(HashMap::new());
        id
    }

    /// The (field, literal) ids of a lowercase literal.
    pub fn literal(&mut self, field: &str, lit: &str) -> (u32, u32) {
        let f = self.field(field);
        let map = &mut self.lits[f as usize];
        let next = map.len() as u32;
        let id = *map.entry(lit.to_owned()).or_insert(next);
        (f, id)
    }

    /// Builds the per-field scanners.
    pub fn build(self) -> LiteralIndex {
        let mut names = vec![String::new(); self.lits.len()];
        for (name, &id) in &self.field_ids {
            names[id as usize] = name.clone();
        }
        let fields = self
            .lits
            .into_iter()
            .enumerate()
            .map(|(f, lits)| {
                let mut ordered: Vec<(u32, String)> =
                    lits.into_iter().map(|(l, i)| (i, l)).collect();
                ordered.sort();
                FieldIndex {
                    name: std::mem::take(&mut names[f]),
                    full: scanner(ordered.iter().map(|(_, l)| l.as_str())),
                    literals: ordered.len(),
                }
            })
            .collect();
        LiteralIndex {
            fields,
            ids: self.field_ids,
        }
    }
}

/// A scanner over `lits` (`None` when there are none).
fn scanner<'l>(lits: impl Iterator<Item = &'l str>) -> Option<Scanner> {
    Scanner::new(&lits.collect::<Vec<_>>())
}

#[derive(Debug, Clone)]
struct FieldIndex {
    /// Sigma field name.
    name: String,
    /// Every literal test on the field (ids as registered).
    full: Option<Scanner>,
    literals: usize,
}

/// Every field's scanner of literal tests.
#[derive(Debug, Clone, Default)]
pub struct LiteralIndex {
    fields: Vec<FieldIndex>,
    /// Field name -> id.
    ids: HashMap<String, u32>,
}

/// A scanned field and its literal hits: (field, [(literal, flags)] sorted by literal).
type FieldHits = (u32, Vec<(u32, u8)>);

/// One event's view of the index: which rules' needs are met (computed up front, scanning only
/// the literals rules need), and per field the literal tests' hits (computed the first time a
/// candidate rule asks, then shared by every rule).
pub struct EventScan<'a> {
    index: &'a LiteralIndex,
    fc: &'a FieldCache<'a>,
    needed: Vec<u64>,
    /// (field, [(literal, flags)] sorted by literal), per field scanned so far.
    hits: RefCell<Vec<FieldHits>>,
}

impl<'a> EventScan<'a> {
    /// Scans the fields `class` needs in the event behind `fc`.
    pub fn new(index: &'a LiteralIndex, class: &'a ClassFilter, fc: &'a FieldCache<'a>) -> Self {
        let mut needed = vec![0u64; class.rules.len().div_ceil(64)];
        let mut mark = |positions: &[u32]| {
            for &p in positions {
                needed[p as usize / 64] |= 1 << (p % 64);
            }
        };
        let mut scan_need = |n: &NeedIndex, value: &Value| {
            if let Some(ac) = &n.ac {
                let mut hit = |lit: u32, _| mark(&n.lit_rules[lit as usize]);
                if n.field.is_empty() && n.joinable {
                    // Keywords: every scalar of the event, lowercased into one text (no literal
                    // holds the separator, so no match spans two values), searched once.
                    let mut text = Vec::with_capacity(2048);
                    visit_texts(value, n.numbers_may_match, n.bools_may_match, &mut |s| {
                        if ac.needs_unicode_lowercase(s) {
                            text.extend_from_slice(s.to_lowercase().as_bytes());
                        } else {
                            text.extend_from_slice(s.as_bytes());
                        }
                        text.push(0);
                    });
                    // One pass over the whole text (lowercase text has no ASCII capitals).
                    text.make_ascii_lowercase();
                    ac.scan_lowered(&text, &mut hit);
                } else {
                    scan_value(ac, value, n.field.is_empty(), &mut hit);
                }
            }
            if !n.numbers.is_empty() {
                visit_numbers(value, &mut |x| {
                    if let Some(ps) = n.numbers.get(&x) {
                        mark(ps);
                    }
                });
            }
        };
        // Windows events: walk the event once for every plain field (most needed fields are
        // absent, and one walk is cheaper than one failed lookup each). The walk offers every
        // value a lookup could return, the one a lookup returns last (see
        // [`crate::mapping::windows_values`]): needs are scanned in all of them, and the last is
        // kept for the rules, so that their field lookups cost an index.
        let ev_class = fc.ev.class();
        let mut values: Vec<Option<&Value>> = Vec::new();
        let walked = ev_class.windows && !class.slots.is_empty() && {
            values.resize(class.slot_need.len(), None);
            crate::mapping::windows_values(ev_class, &fc.ev.body, &mut |name, value| {
                if let Some(&slot) = class.slots.get(name) {
                    values[slot as usize] = Some(value);
                    let need = class.slot_need[slot as usize];
                    if need != u32::MAX {
                        scan_need(&class.needs[need as usize], value);
                    }
                }
            })
        };
        if walked {
            fc.set_walked(&class.slot_of_id, values);
        } else if !ev_class.windows
            && !class.tops.is_empty()
            && let Some(obj) = fc.ev.body.as_object()
        {
            // Other sources: one pass over the top-level keys finds, for every name the
            // class's fields start with, its exact and case-insensitive keys.
            let mut tops = vec![crate::mapping::TopKey::default(); class.tops.len()];
            let mut properties = None;
            for (k, v) in obj {
                if k == "properties" {
                    properties = Some(v);
                }
                let Some(names) = class.top_index.get(&ci_hash(k)) else {
                    continue;
                };
                for &t in names {
                    let (name, top) = (&class.tops[t as usize], &mut tops[t as usize]);
                    if k == name {
                        top.exact = Some(v);
                    } else if top.ci.is_none() && k.eq_ignore_ascii_case(name) {
                        top.ci = Some(v);
                    }
                }
            }
            fc.set_walked_top(&class.plan_of_id, &class.plans, tops, properties);
        }
        for n in &class.needs {
            if walked && n.plain {
                continue;
            }
            let value = if n.field.is_empty() {
                &fc.ev.body
            } else {
                match fc.value(n.id, &n.field) {
                    Some(v) => v,
                    None => continue,
                }
            };
            scan_need(n, value);
        }
        EventScan {
            index,
            fc,
            needed,
            hits: RefCell::new(Vec::new()),
        }
    }

    /// Flags of literal `lit` in field `field` (0: not found); scans the field on first use.
    #[cfg(test)]
    fn flags(&self, field: u32, lit: u32) -> u8 {
        self.with_hits(field, |v| {
            v.binary_search_by_key(&lit, |(l, _)| *l)
                .map_or(0, |i| v[i].1)
        })
    }

    /// Calls `f` with the literal hits of field `field`, `[(literal, flags)]` sorted by literal;
    /// scans the field on first use.
    pub fn with_hits<R>(&self, field: u32, f: impl FnOnce(&[(u32, u8)]) -> R) -> R {
        {
            let hits = self.hits.borrow();
            if let Some((_, v)) = hits.iter().find(|(x, _)| *x == field) {
                return f(v);
            }
        }
        let fi = &self.index.fields[field as usize];
        let mut found: Vec<(u32, u8)> = Vec::with_capacity(16);
        if let (Some(ac), Some(value)) = (&fi.full, self.fc.value(field, &fi.name)) {
            scan_value(ac, value, false, &mut |l, flags| found.push((l, flags)));
        }
        found.sort_unstable_by_key(|(l, _)| *l);
        found.dedup_by(|b, a| {
            let same = a.0 == b.0;
            if same {
                a.1 |= b.1;
            }
            same
        });
        let r = f(&found);
        self.hits.borrow_mut().push((field, found));
        r
    }

    /// Literal hits so far (diagnostics).
    pub fn len(&self) -> usize {
        self.hits.borrow().iter().map(|(_, v)| v.len()).sum()
    }
}

/// Runs `sc` over a value's text (every scalar when `everything`, else the value or its array
/// elements), calling `found(literal, flags)` for each occurrence.
fn scan_value(sc: &Scanner, value: &Value, everything: bool, found: &mut impl FnMut(u32, u8)) {
    let mut scan = |s: &str| sc.scan(s, found);
    if everything {
        visit_all_scalars(value, &mut scan);
    } else {
        visit_field_scalars(value, &mut scan);
    }
}

impl LiteralIndex {
    /// Total literal tests indexed (diagnostics).
    pub fn literal_count(&self) -> usize {
        self.fields.iter().map(|f| f.literals).sum()
    }
}

/// The needs of a class's rules in one field.
#[derive(Debug, Clone)]
struct NeedIndex {
    /// Sigma field name (`""`: every scalar of the event).
    field: String,
    /// Its id in the literal index (`u32::MAX` for `""`).
    id: u32,
    /// A plain Windows field name, found by walking the event ([`crate::mapping::windows_values`]).
    plain: bool,
    ac: Option<Scanner>,
    /// No literal holds a NUL byte (keyword search may join values with NULs).
    joinable: bool,
    /// Some literal could occur in the text of a number, or of `true`/`false` (keyword search
    /// skips such values otherwise).
    numbers_may_match: bool,
    bools_may_match: bool,
    /// Per literal of `ac`: positions (into the class's rules) that need it.
    lit_rules: Vec<Vec<u32>>,
    /// Per integer: positions that need it.
    numbers: HashMap<i64, Vec<u32>>,
}

/// A fast, non-keyed hash for the field-name map walked per event (field names come from rules
/// and events, neither chosen to collide; SipHash cost more than the lookups it guards).
#[derive(Debug, Clone, Copy, Default)]
struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

/// The Fx hash (as in rustc): rotate, xor a word, multiply.
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The rules of one logsource class and the scanners of their needs.
#[derive(Debug, Clone)]
pub struct ClassFilter {
    /// Rule indices (into the rule set) routed to this class, in rule order.
    pub rules: Vec<usize>,
    /// Positions (into `rules`) evaluated whatever the event holds (no usable need).
    always: Vec<u32>,
    needs: Vec<NeedIndex>,
    /// Plain Windows fields the class's rules read, by name: their slot in the per-event table
    /// of walked values.
    slots: HashMap<String, u32, FastHash>,
    /// Per slot: the need index scanning it (`u32::MAX`: none).
    slot_need: Vec<u32>,
    /// Per field id of the literal index: its slot (`u32::MAX`: none).
    slot_of_id: Vec<u32>,
    /// Other sources: the top-level names the class's fields are found under (whole names,
    /// and first parts of dotted ones).
    tops: Vec<String>,
    /// [`ci_hash`] of a top-level name -> the names with that hash.
    top_index: HashMap<u64, Vec<u32>, FastHash>,
    /// Per field id: its plan (`u32::MAX`: none, look it up).
    plan_of_id: Vec<u32>,
    /// Per plan: the top name of the whole field, of its first part (`u32::MAX`: undotted), and
    /// its other parts.
    plans: Vec<(u32, u32, Box<[String]>)>,
}

/// A hash of `s` that ignores ASCII case: its length and first eight bytes with the case bit
/// set (names that differ in more than case may collide; callers compare).
fn ci_hash(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    (u64::from_le_bytes(w) | 0x2020_2020_2020_2020) ^ ((b.len() as u64) << 56).rotate_left(3)
}

impl ClassFilter {
    /// Builds the filter for `rules` given every rule's needs (`None`: always evaluate) and the
    /// fields every rule reads.
    pub fn new(
        event_class: &crate::mapping::EventClass,
        rules: Vec<usize>,
        requirements: &[Option<Vec<Need>>],
        rule_fields: &[Vec<&str>],
        index: &LiteralIndex,
    ) -> ClassFilter {
        let mut always = Vec::new();
        // field -> need -> positions
        let mut by_field: BTreeMap<&str, BTreeMap<&Need, Vec<u32>>> = BTreeMap::new();
        for (pos, &r) in rules.iter().enumerate() {
            let Some(needs) = &requirements[r] else {
                always.push(pos as u32);
                continue;
            };
            for need in needs {
                let field = match need {
                    Need::Literal(f, _) | Need::Number(f, _) => f.as_str(),
                };
                let v = by_field.entry(field).or_default().entry(need).or_default();
                if v.last() != Some(&(pos as u32)) {
                    v.push(pos as u32);
                }
            }
        }
        let needs: Vec<NeedIndex> = by_field
            .into_iter()
            .map(|(field, needs)| {
                let (mut lits, mut lit_rules, mut numbers) =
                    (Vec::new(), Vec::new(), HashMap::new());
                for (need, positions) in needs {
                    match need {
                        Need::Literal(_, l) => {
                            lits.push(l.as_str());
                            lit_rules.push(positions);
                        }
                        Need::Number(_, n) => {
                            numbers.insert(*n, positions);
                        }
                    }
                }
                NeedIndex {
                    field: field.to_owned(),
                    id: index.ids.get(field).copied().unwrap_or(u32::MAX),
                    plain: plain(field),
                    joinable: !lits.iter().any(|l| l.contains('\0')),
                    numbers_may_match: lits
                        .iter()
                        .any(|l| l.bytes().all(|b| b"0123456789.-+e".contains(&b))),
                    bools_may_match: lits
                        .iter()
                        .any(|l| "true".contains(*l) || "false".contains(*l)),
                    ac: scanner(lits.into_iter()),
                    lit_rules,
                    numbers,
                }
            })
            .collect();
        let mut slots: HashMap<String, u32, FastHash> = HashMap::default();
        let mut slot_need = Vec::new();
        let names: Vec<&str> = rules
            .iter()
            .flat_map(|&r| rule_fields[r].iter().copied())
            .chain(needs.iter().map(|n| n.field.as_str()))
            .filter(|n| !n.is_empty())
            .collect();
        let windows = event_class.windows;
        for &name in names.iter().filter(|n| windows && plain(n)) {
            if !slots.contains_key(name) {
                slots.insert(name.to_owned(), slot_need.len() as u32);
                slot_need.push(u32::MAX);
            }
        }
        for (i, n) in needs.iter().enumerate().filter(|(_, n)| windows && n.plain) {
            slot_need[slots[&n.field] as usize] = i as u32;
        }
        let mut slot_of_id = vec![u32::MAX; index.fields.len()];
        for (name, &slot) in &slots {
            if let Some(&id) = index.ids.get(name) {
                slot_of_id[id as usize] = slot;
            }
        }
        let (mut tops, mut top_index, mut plans) = (Vec::new(), HashMap::default(), Vec::new());
        let mut plan_of_id = vec![u32::MAX; index.fields.len()];
        let mut top = |name: &str| -> u32 {
            if let Some(i) = tops.iter().position(|t| t == name) {
                return i as u32;
            }
            tops.push(name.to_owned());
            let i = tops.len() as u32 - 1;
            top_index
                .entry(ci_hash(name))
                .or_insert_with(Vec::new)
                .push(i);
            i
        };
        for &name in &names {
            let renamed = event_class.renames.iter().any(|r| r.sigma == name);
            let Some(&id) = index.ids.get(name) else {
                continue;
            };
            if windows || renamed || plan_of_id[id as usize] != u32::MAX {
                continue;
            }
            let first = name.split_once('.').map_or(u32::MAX, |(f, _)| top(f));
            let rest = name.split('.').skip(1).map(String::from).collect();
            plan_of_id[id as usize] = plans.len() as u32;
            plans.push((top(name), first, rest));
        }
        ClassFilter {
            rules,
            always,
            needs,
            slots,
            slot_need,
            slot_of_id,
            tops,
            top_index,
            plan_of_id,
            plans,
        }
    }

    /// Rule indices to evaluate, in rule order.
    pub fn candidates(&self, scan: &EventScan<'_>) -> Vec<usize> {
        let mut pos: Vec<usize> = Vec::with_capacity(self.always.len() + 16);
        pos.extend(self.always.iter().map(|&p| p as usize));
        for (w, bits) in scan.needed.iter().enumerate() {
            let mut b = *bits;
            while b != 0 {
                pos.push(w * 64 + b.trailing_zeros() as usize);
                b &= b - 1;
            }
        }
        pos.sort_unstable();
        pos.dedup();
        pos.into_iter().map(|p| self.rules[p]).collect()
    }

    /// Rules evaluated whatever the event holds.
    pub fn unfiltered(&self) -> impl Iterator<Item = usize> + '_ {
        self.always.iter().map(|&p| self.rules[p as usize])
    }
}

/// Whether a field is a plain Windows field name, found by walking the event
/// ([`crate::mapping::windows_values`]): not the keyword field, no path, not the provider
/// (which lookups find under its attributes).
fn plain(field: &str) -> bool {
    !field.is_empty() && !field.contains('.') && field != "Provider_Name"
}

/// Like [`visit_all_scalars`], skipping numbers and booleans unless asked for.
fn visit_texts(v: &Value, numbers: bool, bools: bool, f: &mut impl FnMut(&str)) {
    match v {
        Value::Array(xs) => xs.iter().for_each(|x| visit_texts(x, numbers, bools, f)),
        Value::Object(o) => o.values().for_each(|x| visit_texts(x, numbers, bools, f)),
        Value::String(s) => f(s),
        Value::Number(_) if numbers => visit_scalar(v, f),
        Value::Bool(_) if bools => visit_scalar(v, f),
        _ => {}
    }
}

/// Calls `f` with the text of every scalar in `v`, descending into objects (keyword search).
fn visit_all_scalars(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::Array(xs) => xs.iter().for_each(|x| visit_all_scalars(x, f)),
        Value::Object(o) => o.values().for_each(|x| visit_all_scalars(x, f)),
        other => visit_scalar(other, f),
    }
}

/// Calls `f` with the text of a field's value as string matchers read it: the value itself, or
/// each element of an array (objects never match a string test).
fn visit_field_scalars(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::Array(xs) => xs.iter().for_each(|x| visit_field_scalars(x, f)),
        Value::Object(_) => {}
        other => visit_scalar(other, f),
    }
}

fn visit_scalar(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Number(n) => match n.as_u64() {
            Some(u) => f(format_u64(u, &mut [0u8; 20])),
            None => f(&n.to_string()),
        },
        Value::Bool(b) => f(if *b { "true" } else { "false" }),
        _ => {}
    }
}

/// The integer a value holds, as the `Num` matcher reads it (numbers and numeric strings).
pub fn integer_of(v: &Value) -> Option<i64> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// Calls `f` with every integer in `v` (the value itself or array elements), as [`integer_of`].
fn visit_numbers(v: &Value, f: &mut impl FnMut(i64)) {
    match v {
        Value::Array(xs) => xs.iter().for_each(|x| visit_numbers(x, f)),
        other => {
            if let Some(n) = integer_of(other) {
                f(n)
            }
        }
    }
}

/// Formats an unsigned integer into `buf` without allocating.
fn format_u64(mut u: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::source::SourceKind;
    use serde_json::json;

    #[test]
    fn scans_fields_once_with_positions_and_needs() {
        let mut b = IndexBuilder::default();
        let (img, exe) = b.literal("Image", "\\cmd.exe");
        let idx = b.build();
        let reqs = vec![
            Some(vec![Need::Literal("Image".into(), "\\cmd.exe".into())]),
            Some(vec![Need::Literal("CommandLine".into(), "paexec".into())]),
            Some(vec![Need::Number("EventID".into(), 27)]),
            None,
        ];
        let fields = vec![vec!["Image"], vec!["CommandLine"], vec!["EventID"], vec![]];
        let windows = &crate::mapping::CLASSES.all[crate::mapping::classify(
            SourceKind::Sysmon,
            &json!({"Channel": "Microsoft-Windows-Sysmon/Operational"}),
        )];
        let class = ClassFilter::new(windows, vec![0, 1, 2, 3], &reqs, &fields, &idx);
        let ev = Event::with_time(
            SourceKind::Sysmon,
            0,
            json!({"Image": "C:\\Windows\\CMD.EXE", "CommandLine": ["x", "PAEXEC -s"], "EventID": "27"}),
        );
        let fc = FieldCache::new(&ev);
        let scan = EventScan::new(&idx, &class, &fc);
        assert_eq!(scan.flags(img, exe), ANYWHERE | AT_END);
        assert_eq!(class.candidates(&scan), vec![0, 1, 2, 3]);
        let quiet = Event::with_time(
            SourceKind::Sysmon,
            0,
            json!({"Image": "cmd.exe x", "EventID": 270}),
        );
        let fc = FieldCache::new(&quiet);
        let scan = EventScan::new(&idx, &class, &fc);
        assert_eq!(scan.flags(img, exe), 0, "no backslash");
        assert_eq!(
            class.candidates(&scan),
            vec![3],
            "only the rule without needs"
        );
    }

    #[test]
    fn formats_integers() {
        for n in [0u64, 7, 10, 4688, u64::MAX] {
            assert_eq!(format_u64(n, &mut [0; 20]), n.to_string());
        }
    }
}
