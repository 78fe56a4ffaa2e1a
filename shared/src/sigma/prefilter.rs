//! Literal prefilter: which rules of a logsource class can possibly match an event.
//!
//! For every rule, compilation derives a *necessary* set of literals (see
//! [`super::compile::CompiledRule`]): the rule can only match if at least one of them occurs,
//! case-insensitively, in some scalar value of the event. Per class, one Aho-Corasick automaton
//! over all those literals scans the event's values once; only the rules whose literals were
//! found, plus the rules with no usable literal, are then evaluated in full. The result is exact:
//! the prefilter never drops a rule that would match.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde_json::Value;
use std::collections::HashMap;

/// Shortest literal worth indexing; rules whose best literal set has a shorter one are always
/// evaluated.
pub const MIN_LITERAL: usize = 3;

/// The prefilter of one logsource class.
#[derive(Debug, Clone)]
pub struct ClassFilter {
    /// Rule indices (into the rule set) routed to this class, in rule order.
    pub rules: Vec<usize>,
    /// Positions (into `rules`) always evaluated.
    always: Vec<u32>,
    /// Automaton over every indexed literal, if any.
    ac: Option<AhoCorasick>,
    /// For each literal id, the positions (into `rules`) it makes candidates.
    lit_rules: Vec<Vec<u32>>,
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
    /// Builds the filter for `rules` with their literal requirements (`None`: always evaluate).
    pub fn new(rules: Vec<usize>, requirements: &[Option<Vec<String>>]) -> ClassFilter {
        let mut always = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut lit_rules: Vec<Vec<u32>> = Vec::new();
        for (pos, &r) in rules.iter().enumerate() {
            match &requirements[r] {
                None => always.push(pos as u32),
                Some(lits) => {
                    for l in lits {
                        let id = *ids.entry(l.clone()).or_insert_with(|| {
                            lit_rules.push(Vec::new());
                            lit_rules.len() - 1
                        });
                        if lit_rules[id].last() != Some(&(pos as u32)) {
                            lit_rules[id].push(pos as u32);
                        }
                    }
                }
            }
        }
        let mut pats: Vec<(usize, String)> = ids.into_iter().map(|(l, i)| (i, l)).collect();
        pats.sort();
        let ac = (!pats.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(pats.iter().map(|(_, l)| l.as_bytes()))
                .expect("literal automaton builds")
        });
        ClassFilter {
            rules,
            always,
            ac,
            lit_rules,
        }
    }

    /// Positions (into `self.rules`) of the rules to evaluate for `body`, in rule order.
    pub fn candidates(&self, body: &Value) -> Vec<u32> {
        let Some(ac) = &self.ac else {
            return self.always.clone();
        };
        let mut hit = vec![false; self.lit_rules.len()];
        let mut scan = |s: &str| {
            let lowered;
            let s = if s.is_ascii() {
                s
            } else {
                lowered = s.to_lowercase();
                &lowered
            };
            for m in ac.find_overlapping_iter(s) {
                hit[m.pattern().as_usize()] = true;
            }
        };
        visit_scalars(body, &mut scan);
        let mut marked = vec![false; self.rules.len()];
        for &p in &self.always {
            marked[p as usize] = true;
        }
        for (id, h) in hit.iter().enumerate() {
            if *h {
                for &p in &self.lit_rules[id] {
                    marked[p as usize] = true;
                }
            }
        }
        marked
            .iter()
            .enumerate()
            .filter(|(_, m)| **m)
            .map(|(p, _)| p as u32)
            .collect()
    }
}

/// Calls `f` with the text of every scalar value (strings, numbers, booleans) in `v`.
fn visit_scalars(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Number(n) => f(&n.to_string()),
        Value::Bool(b) => f(if *b { "true" } else { "false" }),
        Value::Array(xs) => xs.iter().for_each(|x| visit_scalars(x, f)),
        Value::Object(o) => o.values().for_each(|x| visit_scalars(x, f)),
        Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn candidates_are_rules_whose_literals_occur() {
        let reqs = vec![
            Some(vec!["mimikatz".to_string()]),
            None,
            Some(vec!["psexec".to_string(), "paexec".to_string()]),
            Some(vec!["50126".to_string()]),
        ];
        let f = ClassFilter::new(vec![0, 1, 2, 3], &reqs);
        assert_eq!(
            f.candidates(&json!({"Image": "C:\\PAEXEC.exe"})),
            vec![1, 2]
        );
        assert_eq!(
            f.candidates(&json!({"a": {"b": ["x", "MimiKatz"]}})),
            vec![0, 1]
        );
        assert_eq!(
            f.candidates(&json!({"code": 50126})),
            vec![1, 3],
            "numbers are scanned as text"
        );
        assert_eq!(f.candidates(&json!({})), vec![1]);
    }

    #[test]
    fn ascii_cores() {
        assert_eq!(ascii_core("\u{2013}EncodedCommand"), "encodedcommand");
        assert_eq!(ascii_core("é"), "");
    }
}
