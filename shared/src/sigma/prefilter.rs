//! Literal prefilter: which rules of a logsource class can possibly match an event.
//!
//! For every rule, compilation derives a *necessary* set of (field, literal) pairs (see
//! [`super::compile::CompiledRule::required_literals`]): the rule can only match if one of those
//! literals occurs, case-insensitively, in the value of its field (or anywhere, for keyword
//! searches). Per class and field, one Aho-Corasick automaton over those literals scans the
//! field's value once; only the rules whose literals were found, plus the rules with no usable
//! literal, are then evaluated in full. Fields are read through the same mapping as the matchers,
//! so the result is exact: the prefilter never drops a rule that would match.

use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde_json::Value;

use super::fields::FieldCache;

/// Shortest literal worth indexing; rules whose best literal set has a shorter one are always
/// evaluated.
pub const MIN_LITERAL: usize = 3;

/// Something a rule needs to find in one field (`""`: in any value of the event).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// The field's text contains this literal (lowercase), case-insensitively.
    Literal(String, String),
    /// The field's value is this integer (as a number or numeric string).
    Number(String, i64),
}

impl Need {
    fn field(&self) -> &str {
        match self {
            Need::Literal(f, _) | Need::Number(f, _) => f,
        }
    }

    /// Length used to rank how selective a need is (numbers count as selective).
    pub fn weight(&self) -> usize {
        match self {
            Need::Literal(_, l) => l.len(),
            Need::Number(..) => 8,
        }
    }
}

/// The needs indexed for one field of a class.
#[derive(Debug, Clone)]
struct FieldIndex {
    /// Sigma field name (`""`: every scalar of the event).
    field: String,
    /// Automaton over the literals, if any.
    ac: Option<AhoCorasick>,
    /// For each literal id, the positions (into `rules`) it makes candidates.
    lit_rules: Vec<Vec<u32>>,
    /// For each integer value, the positions (into `rules`) it makes candidates.
    numbers: HashMap<i64, Vec<u32>>,
}

/// The prefilter of one logsource class.
#[derive(Debug, Clone)]
pub struct ClassFilter {
    /// Rule indices (into the rule set) routed to this class, in rule order.
    pub rules: Vec<usize>,
    /// Positions (into `rules`) always evaluated.
    always: Vec<u32>,
    /// One automaton per field that some rule requires a literal in.
    fields: Vec<FieldIndex>,
}

/// The longest run of ASCII characters of `s`, lowercased (non-ASCII characters fold in ways an
/// ASCII-insensitive automaton does not follow, so only ASCII runs are indexed).
pub fn ascii_core(s: &str) -> String {
    s.split(|c: char| !c.is_ascii())
        .max_by_key(|p| p.len())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

impl ClassFilter {
    /// Builds the filter for `rules` with their needs (`None`: always evaluate).
    pub fn new(rules: Vec<usize>, requirements: &[Option<Vec<Need>>]) -> ClassFilter {
        let mut always = Vec::new();
        // field -> need -> rule positions
        let mut by_field: BTreeMap<&str, BTreeMap<&Need, Vec<u32>>> = BTreeMap::new();
        for (pos, &r) in rules.iter().enumerate() {
            match &requirements[r] {
                None => always.push(pos as u32),
                Some(needs) => {
                    for need in needs {
                        let v = by_field.entry(need.field()).or_default().entry(need).or_default();
                        if v.last() != Some(&(pos as u32)) {
                            v.push(pos as u32);
                        }
                    }
                }
            }
        }
        let fields = by_field
            .into_iter()
            .map(|(field, needs)| {
                let mut lits = Vec::new();
                let mut lit_rules = Vec::new();
                let mut numbers = HashMap::new();
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
                let ac = (!lits.is_empty()).then(|| {
                    AhoCorasickBuilder::new()
                        .ascii_case_insensitive(true)
                        .match_kind(MatchKind::Standard)
                        .build(&lits)
                        .expect("literal automaton builds")
                });
                FieldIndex {
                    field: field.to_owned(),
                    ac,
                    lit_rules,
                    numbers,
                }
            })
            .collect();
        ClassFilter {
            rules,
            always,
            fields,
        }
    }

    /// Rules of this class that the prefilter cannot narrow (always evaluated).
    pub fn unfiltered(&self) -> impl Iterator<Item = usize> + '_ {
        self.always.iter().map(|&p| self.rules[p as usize])
    }

    /// (indexed literals, literal occurrences in `ev`): for diagnostics and benchmarks.
    pub fn stats<'a>(&'a self, ev: &FieldCache<'a>) -> (usize, usize) {
        let lits = self.fields.iter().map(|f| f.lit_rules.len()).sum();
        let mut n = 0;
        for f in &self.fields {
            f.scan(ev, &mut |_| n += 1);
        }
        (lits, n)
    }

    /// Positions (into `self.rules`) of the rules to evaluate for `ev`, in rule order.
    pub fn candidates<'a>(&'a self, ev: &FieldCache<'a>) -> Vec<u32> {
        if self.fields.is_empty() {
            return self.always.clone();
        }
        // Bitset of rule positions: the always-evaluated ones, then those of literals found.
        let mut marked = vec![0u64; self.rules.len().div_ceil(64)];
        for &p in &self.always {
            marked[p as usize / 64] |= 1 << (p % 64);
        }
        for f in &self.fields {
            f.scan(ev, &mut |positions: &[u32]| {
                for &p in positions {
                    marked[p as usize / 64] |= 1 << (p % 64);
                }
            });
        }
        let mut out = Vec::new();
        for (w, bits) in marked.iter().enumerate() {
            let mut b = *bits;
            while b != 0 {
                out.push((w * 64) as u32 + b.trailing_zeros());
                b &= b - 1;
            }
        }
        out
    }
}

impl FieldIndex {
    /// Calls `hit(rule positions)` for every occurrence of an indexed literal in the field and
    /// for an indexed integer the field holds.
    fn scan<'a>(&'a self, fc: &FieldCache<'a>, hit: &mut impl FnMut(&[u32])) {
        let v = if self.field.is_empty() {
            &fc.ev.body
        } else {
            match fc.get(&self.field).value {
                Some(v) => v,
                None => return,
            }
        };
        if let Some(ac) = &self.ac {
            visit_scalars(v, &mut |s: &str| {
                let lowered;
                let s = if s.is_ascii() {
                    s
                } else {
                    lowered = s.to_lowercase();
                    &lowered
                };
                for m in ac.find_overlapping_iter(s) {
                    hit(&self.lit_rules[m.pattern().as_usize()]);
                }
            });
        }
        if !self.numbers.is_empty() {
            visit_numbers(v, &mut |n| {
                if let Some(ps) = self.numbers.get(&n) {
                    hit(ps);
                }
            });
        }
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

/// Calls `f` with the text of every scalar value (strings, numbers, booleans) in `v`.
fn visit_scalars(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Number(n) => match n.as_u64() {
            Some(u) => f(format_u64(u, &mut [0u8; 20])),
            None => f(&n.to_string()),
        },
        Value::Bool(b) => f(if *b { "true" } else { "false" }),
        Value::Array(xs) => xs.iter().for_each(|x| visit_scalars(x, f)),
        Value::Object(o) => o.values().for_each(|x| visit_scalars(x, f)),
        Value::Null => {}
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
    use serde_json::json;

    #[test]
    fn candidates_are_rules_whose_literals_occur() {
        use crate::source::SourceKind;
        let lit = |f: &str, l: &str| Need::Literal(f.to_string(), l.to_string());
        let reqs = vec![
            Some(vec![lit("Image", "mimikatz")]),
            None,
            Some(vec![lit("Image", "psexec"), lit("CommandLine", "paexec")]),
            Some(vec![lit("", "50126")]),
            Some(vec![Need::Number("EventID".into(), 27)]),
        ];
        let f = ClassFilter::new(vec![0, 1, 2, 3, 4], &reqs);
        let ev = |b: Value| crate::event::Event::with_time(SourceKind::Sysmon, 0, b);
        let f = &f;
        let cands = |e: crate::event::Event| f.candidates(&FieldCache::new(&e));
        assert_eq!(cands(ev(json!({"CommandLine": "C:\\PAEXEC.exe"}))), vec![1, 2]);
        assert_eq!(cands(ev(json!({"Image": "PAEXEC"}))), vec![1], "literal in the wrong field");
        assert_eq!(cands(ev(json!({"Image": ["x", "MimiKatz"]}))), vec![0, 1]);
        assert_eq!(cands(ev(json!({"code": 50126}))), vec![1, 3], "numbers are scanned as text");
        assert_eq!(cands(ev(json!({}))), vec![1]);
        assert_eq!(cands(ev(json!({"EventID": 27}))), vec![1, 4]);
        assert_eq!(cands(ev(json!({"EventID": " 27.0"}))), vec![1, 4], "as the Num matcher reads it");
        assert_eq!(cands(ev(json!({"EventID": 270}))), vec![1]);
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
