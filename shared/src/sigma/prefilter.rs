//! The literal index: every literal of every rule, scanned once per event and field.
//!
//! Compilation registers, per field, (a) the literal of every case-insensitive literal test
//! (`contains`/`startswith`/`endswith`/equality without wildcards) and (b) each rule's *needs*:
//! literals (or integers) of which at least one occurs in every event the rule matches (see
//! [`super::compile::CompiledRule::required_literals`]). Per field, one Aho-Corasick automaton
//! holds all of them. For an event, each field its class's rules use is read once (through the
//! same mapping as the matchers) and scanned once; the hits, with where they sit in the value
//! (anywhere, at the start, at the end, the whole value), then serve twice:
//!
//! - as a prefilter: only rules whose needs were found, plus rules without needs, are evaluated;
//! - as the answer to every literal test of those rules, without scanning the value again.
//!
//! Both uses are exact: a test the index answers gives the same result as testing the value
//! directly (`tests/sigma_regression.rs` and the detection benchmark check this on the SigmaHQ
//! corpus).

use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde_json::Value;

use super::fields::FieldCache;

/// Shortest literal worth using as a need.
pub const MIN_LITERAL: usize = 3;

/// Hit flag: the literal occurs in the value.
pub const ANYWHERE: u8 = 1;
/// Hit flag: the value starts with the literal.
pub const AT_START: u8 = 2;
/// Hit flag: the value ends with the literal.
pub const AT_END: u8 = 4;
/// Hit flag: the value is the literal.
pub const WHOLE: u8 = 8;

/// Something a rule needs to find in one field (`""`: in any value of the event).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// The field's text contains this literal (lowercase), case-insensitively.
    Literal(String, String),
    /// The field's value is this integer (as a number or numeric string).
    Number(String, i64),
}

impl Need {
    /// Length used to rank how selective a need is (numbers count as selective).
    pub fn weight(&self) -> usize {
        match self {
            Need::Literal(_, l) => l.len(),
            Need::Number(..) => 8,
        }
    }
}

/// The longest run of ASCII characters of `s`, lowercased (case folding beyond ASCII is not
/// substring-preserving, so case-sensitive literals are indexed by their ASCII core).
pub fn ascii_core(s: &str) -> String {
    s.split(|c: char| !c.is_ascii())
        .max_by_key(|p| p.len())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Collects fields, literals and needs while rules compile.
#[derive(Debug, Default)]
pub struct IndexBuilder {
    field_ids: HashMap<String, u32>,
    /// Per field: literal -> id.
    lits: Vec<HashMap<String, u32>>,
    /// (field, literal) -> rules needing it.
    needs: HashMap<(u32, u32), Vec<u32>>,
    /// field -> integer -> rules needing it.
    numbers: HashMap<u32, HashMap<i64, Vec<u32>>>,
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

    /// Records that `rule` needs `need`; returns the field id.
    pub fn need(&mut self, rule: usize, need: &Need) -> u32 {
        match need {
            Need::Literal(field, lit) => {
                let key = self.literal(field, lit);
                let v = self.needs.entry(key).or_default();
                if v.last() != Some(&(rule as u32)) {
                    v.push(rule as u32);
                }
                key.0
            }
            Need::Number(field, n) => {
                let f = self.field(field);
                let v = self.numbers.entry(f).or_default().entry(*n).or_default();
                if v.last() != Some(&(rule as u32)) {
                    v.push(rule as u32);
                }
                f
            }
        }
    }

    /// Builds the automata.
    pub fn build(self, rules: usize) -> LiteralIndex {
        let mut names = vec![String::new(); self.lits.len()];
        for (name, id) in self.field_ids {
            names[id as usize] = name;
        }
        let mut numbers = self.numbers;
        let fields = self
            .lits
            .into_iter()
            .enumerate()
            .map(|(f, lits)| {
                let mut ordered: Vec<(u32, String)> = lits.into_iter().map(|(l, i)| (i, l)).collect();
                ordered.sort();
                let mut needed_by = vec![Vec::new(); ordered.len()];
                for (i, _) in &ordered {
                    if let Some(r) = self.needs.get(&(f as u32, *i)) {
                        needed_by[*i as usize] = r.clone();
                    }
                }
                let ac = (!ordered.is_empty()).then(|| {
                    AhoCorasickBuilder::new()
                        .ascii_case_insensitive(true)
                        .match_kind(MatchKind::Standard)
                        .build(ordered.iter().map(|(_, l)| l.as_bytes()))
                        .expect("literal automaton builds")
                });
                FieldIndex {
                    name: std::mem::take(&mut names[f]),
                    ac,
                    needed_by,
                    numbers: numbers.remove(&(f as u32)).unwrap_or_default(),
                }
            })
            .collect();
        LiteralIndex { fields, rules }
    }
}

#[derive(Debug, Clone)]
struct FieldIndex {
    /// Sigma field name (`""`: every scalar of the event).
    name: String,
    ac: Option<AhoCorasick>,
    /// Per literal id: the rules that need it.
    needed_by: Vec<Vec<u32>>,
    /// Per integer: the rules that need it.
    numbers: HashMap<i64, Vec<u32>>,
}

/// Every field's automaton.
#[derive(Debug, Clone, Default)]
pub struct LiteralIndex {
    fields: Vec<FieldIndex>,
    rules: usize,
}

/// What one event's scan found: literal hits per field, and rules whose needs are met.
#[derive(Debug, Default)]
pub struct Hits {
    /// (field, literal, flags), sorted by (field, literal), one entry per pair.
    found: Vec<(u32, u32, u8)>,
    /// Bitset over rule indices: needs met.
    needed: Vec<u64>,
}

impl Hits {
    /// Flags of a literal in a field (0: not found).
    pub fn flags(&self, field: u32, lit: u32) -> u8 {
        self.found
            .binary_search_by(|(f, l, _)| (*f, *l).cmp(&(field, lit)))
            .map_or(0, |i| self.found[i].2)
    }

    /// Whether a need of `rule` was found.
    pub fn needed(&self, rule: usize) -> bool {
        self.needed.get(rule / 64).is_some_and(|w| w & (1 << (rule % 64)) != 0)
    }

    /// Number of literal hits (diagnostics).
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

impl LiteralIndex {
    /// Scans the fields of `class` in the event behind `fc`.
    pub fn scan<'a>(&'a self, class: &ClassFilter, fc: &FieldCache<'a>) -> Hits {
        let mut hits = Hits {
            found: Vec::new(),
            needed: vec![0; self.rules.div_ceil(64)],
        };
        for &f in &class.fields {
            let fi = &self.fields[f as usize];
            let value = if fi.name.is_empty() {
                &fc.ev.body
            } else {
                match fc.get(&fi.name).value {
                    Some(v) => v,
                    None => continue,
                }
            };
            if let Some(ac) = &fi.ac {
                let mut scan = |s: &str| {
                    let lowered;
                    let s = if s.is_ascii() {
                        s
                    } else {
                        lowered = s.to_lowercase();
                        &lowered
                    };
                    for m in ac.find_overlapping_iter(s) {
                        let mut flags = ANYWHERE;
                        if m.start() == 0 {
                            flags |= AT_START;
                        }
                        if m.end() == s.len() {
                            flags |= AT_END;
                        }
                        if m.start() == 0 && m.end() == s.len() {
                            flags |= WHOLE;
                        }
                        hits.found.push((f, m.pattern().as_u32(), flags));
                    }
                };
                if fi.name.is_empty() {
                    visit_all_scalars(value, &mut scan);
                } else {
                    visit_field_scalars(value, &mut scan);
                }
            }
            if !fi.numbers.is_empty() {
                visit_numbers(value, &mut |n| {
                    if let Some(rules) = fi.numbers.get(&n) {
                        for &r in rules {
                            hits.needed[r as usize / 64] |= 1 << (r % 64);
                        }
                    }
                });
            }
        }
        hits.found.sort_unstable_by_key(|(f, l, _)| (*f, *l));
        hits.found.dedup_by(|b, a| {
            let same = a.0 == b.0 && a.1 == b.1;
            if same {
                a.2 |= b.2;
            }
            same
        });
        for &(f, l, _) in &hits.found {
            for &r in &self.fields[f as usize].needed_by[l as usize] {
                hits.needed[r as usize / 64] |= 1 << (r % 64);
            }
        }
        hits
    }

    /// Total literals indexed (diagnostics).
    pub fn literal_count(&self) -> usize {
        self.fields.iter().map(|f| f.needed_by.len()).sum()
    }
}

/// The rules of one logsource class and the fields to scan for them.
#[derive(Debug, Clone)]
pub struct ClassFilter {
    /// Rule indices (into the rule set) routed to this class, in rule order.
    pub rules: Vec<usize>,
    /// Per position in `rules`: evaluated whatever the scan finds (no usable need).
    always: Vec<bool>,
    /// Field ids to scan.
    fields: Vec<u32>,
}

impl ClassFilter {
    /// A class with `rules`, which of them have no need, and the fields they use.
    pub fn new(rules: Vec<usize>, always: Vec<bool>, mut fields: Vec<u32>) -> ClassFilter {
        fields.sort_unstable();
        fields.dedup();
        ClassFilter {
            rules,
            always,
            fields,
        }
    }

    /// Rule indices to evaluate, in rule order.
    pub fn candidates(&self, hits: &Hits) -> Vec<usize> {
        self.rules
            .iter()
            .zip(&self.always)
            .filter(|(r, always)| **always || hits.needed(**r))
            .map(|(r, _)| *r)
            .collect()
    }

    /// Rules evaluated whatever the event holds.
    pub fn unfiltered(&self) -> impl Iterator<Item = usize> + '_ {
        self.rules
            .iter()
            .zip(&self.always)
            .filter(|(_, a)| **a)
            .map(|(r, _)| *r)
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

/// Per field, the literals registered (diagnostics and tests).
pub fn describe(index: &LiteralIndex) -> BTreeMap<String, usize> {
    index
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.needed_by.len()))
        .collect()
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
        let (img, cmd) = (b.field("Image"), b.field("CommandLine"));
        let (_, exe) = b.literal("Image", "\\cmd.exe");
        b.need(0, &Need::Literal("Image".into(), "\\cmd.exe".into()));
        b.need(1, &Need::Literal("CommandLine".into(), "paexec".into()));
        b.need(2, &Need::Number("EventID".into(), 27));
        let eid = b.field("EventID");
        let idx = b.build(3);
        let class = ClassFilter::new(vec![0, 1, 2, 3], vec![false, false, false, true], vec![img, cmd, eid]);
        let ev = Event::with_time(
            SourceKind::Sysmon,
            0,
            json!({"Image": "C:\\Windows\\CMD.EXE", "CommandLine": ["x", "PAEXEC -s"], "EventID": "27"}),
        );
        let fc = FieldCache::new(&ev);
        let hits = idx.scan(&class, &fc);
        assert_eq!(hits.flags(img, exe), ANYWHERE | AT_END);
        assert_eq!(class.candidates(&hits), vec![0, 1, 2, 3]);
        let quiet = Event::with_time(SourceKind::Sysmon, 0, json!({"Image": "cmd.exe x", "EventID": 270}));
        let fc = FieldCache::new(&quiet);
        let hits = idx.scan(&class, &fc);
        assert_eq!(hits.flags(img, exe), 0, "no backslash");
        assert_eq!(class.candidates(&hits), vec![3], "only the rule without needs");
    }

    #[test]
    fn formats_integers() {
        for n in [0u64, 7, 10, 4688, u64::MAX] {
            assert_eq!(format_u64(n, &mut [0; 20]), n.to_string());
        }
    }

    #[test]
    fn ascii_cores() {
        assert_eq!(ascii_core("\u{2013}EncodedCommand"), "encodedcommand");
        assert_eq!(ascii_core("é"), "");
    }
}
