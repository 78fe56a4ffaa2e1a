//! Needs: what an event must hold for a rule to match it, so that the literal index
//! ([`super::prefilter`]) can skip the rule in events that lack it.
//!
//! A *need* is a literal in a named field (its text contains the literal, ignoring case) or an
//! integer in a named field (its value is that number); the field `""` stands for any value of
//! the event (keyword searches). A rule's needs are a set of which **at least one** holds in
//! every event the rule matches: if the index finds none of them in an event, the rule cannot
//! match it and is not evaluated. A rule with no such set (`None`: a negation, a regular
//! expression without literals, a field test on something else than text or an integer) is
//! evaluated on every event of its logsource.
//!
//! Needs are derived when rules compile, bottom up: a value matcher needs its longest literal
//! (an integer equality: the integer; a regular expression: literals one of which every match
//! contains); a field test needs the
//! union of its values' needs (any value may match), or with `|all` one value's needs; a
//! selection map needs one of its field tests' needs (all must hold), a selection the union of
//! its maps' needs; and a condition the union over `or`, one operand's needs over `and`, nothing
//! under `not`. Where one of several sets would do (`and`, a map, `|all`), the set expected to
//! occur least often is chosen ([`Rarity`]): the index then selects fewer rules per event.
//!
//! Needs are exact by construction, never a guess: an event without any of a rule's needs never
//! matches it (the detection benchmark and `tests/sigma_regression.rs` check this on the SigmaHQ
//! corpus against exhaustive evaluation).

use std::collections::{BTreeMap, HashMap};

use super::condition::Expr;
use super::matcher::{GlobTok, NumOp, Pattern, RegexFlags, ValueMatcher};

/// Something a rule needs to find in one field (`""`: in any value of the event).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// The field's text contains this literal (lowercase), case-insensitively.
    Literal(String, String),
    /// The field's value is this integer (as a number or numeric string).
    Number(String, i64),
}

/// A set of needs of which one holds in every event a rule part matches (`None`: no usable
/// literal, the part must always be evaluated).
pub type Needs = Option<Vec<Need>>;

/// Whether a literal can serve as a need: two bytes or more, or one punctuation character
/// (`` ` ``, `&`, `^`). Weak needs are ranked low by the rules' rarity estimate and chosen only
/// when a rule offers nothing better; even then they let the index skip the rule in the events
/// that lack them, where it would otherwise be evaluated on every event.
pub fn usable_need(lit: &str) -> bool {
    lit.len() >= 2 || (lit.len() == 1 && lit.bytes().all(|b| b.is_ascii_punctuation()))
}

/// The longest run of ASCII characters of `s`, lowercased (case folding beyond ASCII is not
/// substring-preserving, so case-sensitive literals are indexed by their ASCII core).
pub fn ascii_core(s: &str) -> String {
    s.split(|c: char| !c.is_ascii())
        .max_by_key(|p| p.len())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The needs of a rule: `selection(i)` gives the needs of selection `i`, combined as the
/// condition `expr` says (sorted, without duplicates).
pub fn of_rule(expr: &Expr, selection: &impl Fn(usize) -> Needs, rarity: &Rarity) -> Needs {
    let mut needs = of_expr(expr, selection, rarity)?;
    needs.sort();
    needs.dedup();
    Some(needs)
}

fn of_expr(e: &Expr, selection: &impl Fn(usize) -> Needs, rarity: &Rarity) -> Needs {
    match e {
        Expr::Sel(i) => selection(*i),
        Expr::And(xs) => best(xs.iter().map(|x| of_expr(x, selection, rarity)), rarity),
        Expr::Or(xs) => union(xs.iter().map(|x| of_expr(x, selection, rarity))),
        Expr::Not(_) => None,
    }
}

/// The needs of a selection given the needs of each field test of each of its maps (OR over
/// maps, AND within a map).
pub fn of_selection<M, F>(maps: M, rarity: &Rarity) -> Needs
where
    M: Iterator<Item = F>,
    F: Iterator<Item = Needs>,
{
    union(maps.map(|fields| best(fields, rarity)))
}

/// The needs of a field test: `groups` are its values, each with its variants (any variant
/// matches the value); any value matches the test, or every one with `all`.
pub fn of_field(field: &str, groups: &[Vec<ValueMatcher>], all: bool, rarity: &Rarity) -> Needs {
    let group = |g: &Vec<ValueMatcher>| -> Needs {
        let mut out = Vec::new();
        for m in g {
            match number_need(field, m) {
                Some(n) => out.push(n),
                None => out.extend(
                    matcher_literals(m)?
                        .into_iter()
                        .map(|l| Need::Literal(field.to_owned(), l)),
                ),
            }
        }
        Some(out)
    };
    if all {
        best(groups.iter().map(group), rarity)
    } else {
        union(groups.iter().map(group))
    }
}

/// Of several need sets that must all hold, the most selective one: the one whose needs are
/// expected to occur least often (see [`Rarity`]).
fn best(sets: impl Iterator<Item = Needs>, rarity: &Rarity) -> Needs {
    sets.flatten().min_by(|a, b| {
        rarity
            .cost(a)
            .total_cmp(&rarity.cost(b))
            .then(a.len().cmp(&b.len()))
    })
}

/// Of several alternatives, the union (unconstrained if any alternative is).
fn union(sets: impl Iterator<Item = Needs>) -> Needs {
    let mut out = Vec::new();
    for s in sets {
        out.extend(s?);
    }
    Some(out)
}

/// How common each possible need is, estimated from the rules themselves: a literal that many
/// rules name in the same field (`.exe` in `Image`, `microsoft corporation` in `Company`,
/// `ec2.amazonaws.com` in `eventSource`), or that is contained in what many rules name there
/// (`\\windows\\`), is a common value in events too, and a poor need. Computed once per rule set.
#[derive(Debug)]
pub struct Rarity {
    /// Need -> number of rules naming, in the need's field, a literal that contains it.
    rules_naming: HashMap<Need, u32>,
}

impl Rarity {
    /// Estimates from `rules`: per rule, every (field, value matcher) of its field tests.
    pub fn new<'a, R, T>(rules: R) -> Rarity
    where
        R: IntoIterator<Item = T>,
        T: IntoIterator<Item = (&'a str, &'a ValueMatcher)>,
    {
        // Per field: every literal any matcher could need, and which rules name each.
        let mut texts: BTreeMap<&str, BTreeMap<String, Vec<u32>>> = BTreeMap::new();
        let mut numbers: HashMap<Need, u32> = Default::default();
        for (r, tests) in rules.into_iter().enumerate() {
            let mut seen_numbers = Vec::new();
            for (field, m) in tests {
                let m = match m {
                    ValueMatcher::Not(inner) => inner,
                    other => other,
                };
                if let Some(n) = number_need(field, m) {
                    if !seen_numbers.contains(&n) {
                        seen_numbers.push(n);
                    }
                    continue;
                }
                for lit in matcher_literals(m).into_iter().flatten() {
                    let by = texts.entry(field).or_default().entry(lit).or_default();
                    if by.last() != Some(&(r as u32)) {
                        by.push(r as u32);
                    }
                }
            }
            for n in seen_numbers {
                *numbers.entry(n).or_default() += 1;
            }
        }
        let mut rules_naming = numbers;
        for (field, lits) in texts {
            let list: Vec<&str> = lits.keys().map(String::as_str).collect();
            let Ok(ac) = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::Standard)
                .build(&list)
            else {
                continue;
            };
            // For each literal: the rules naming a literal that contains it.
            let mut naming: Vec<Vec<u32>> = vec![Vec::new(); list.len()];
            for (text, by) in lits.values().enumerate().map(|(i, by)| (list[i], by)) {
                for m in ac.find_overlapping_iter(text) {
                    naming[m.pattern().as_usize()].extend_from_slice(by);
                }
            }
            for (i, mut rs) in naming.into_iter().enumerate() {
                rs.sort_unstable();
                rs.dedup();
                rules_naming.insert(
                    Need::Literal(field.to_owned(), list[i].to_owned()),
                    rs.len() as u32,
                );
            }
        }
        Rarity { rules_naming }
    }

    /// Expected cost of a need set: the sum over its needs of how many rules name each, plus a
    /// penalty for short literals (likelier to occur by chance) and for parts of values most
    /// events hold ([`COMMON_VALUES`]).
    fn cost(&self, needs: &[Need]) -> f64 {
        needs
            .iter()
            .map(|n| {
                let named = f64::from(self.rules_naming.get(n).copied().unwrap_or(1));
                match n {
                    Need::Literal(_, l) => {
                        let common = COMMON_VALUES.iter().any(|c| c.contains(l.as_str()));
                        named + 8.0 / l.len().max(1) as f64 + if common { 50.0 } else { 0.0 }
                    }
                    Need::Number(..) => named + 1.0,
                }
            })
            .sum()
    }
}

/// Values (lowercase) that most events of their kind hold: a need that is part of one of them
/// selects nearly every event. Rules rarely name them, so counting rules misses them.
const COMMON_VALUES: &[&str] = &[
    "c:\\windows\\system32\\",
    "c:\\windows\\syswow64\\",
    "c:\\program files (x86)\\",
    "c:\\programdata\\",
    "\\appdata\\local\\temp\\",
    "\\appdata\\roaming\\",
    "c:\\users\\",
    "microsoft corporation",
    "microsoft\u{ae} windows\u{ae} operating system",
    "nt authority\\system",
    "hklm\\system\\currentcontrolset\\services\\",
    "hklm\\software\\microsoft\\windows\\currentversion\\",
    ".exe",
    ".dll",
];

/// The integer need of an equality test on a field, if it is one.
fn number_need(field: &str, m: &ValueMatcher) -> Option<Need> {
    match m {
        ValueMatcher::Num(NumOp::Eq, n)
            if !field.is_empty() && n.fract() == 0.0 && n.abs() < 9.0e15 =>
        {
            Some(Need::Number(field.to_owned(), *n as i64))
        }
        _ => None,
    }
}

/// Literals one of which a value matched by `m` contains, as the prefilter scans them.
///
/// Case-insensitive patterns are already lowercased with the same function the prefilter applies
/// to non-ASCII values, so they are indexed whole (emoji, homoglyphs); case-sensitive ones keep
/// only their ASCII core, since Unicode lowercasing is not substring-preserving.
fn matcher_literals(m: &ValueMatcher) -> Option<Vec<String>> {
    let lit = match m {
        ValueMatcher::Str { pat, cased: false } => pattern_literal(pat)?.to_owned(),
        ValueMatcher::Str { pat, cased: true } => ascii_core(pattern_literal(pat)?),
        ValueMatcher::Regex(re, flags) => return regex_literals(re.as_str(), *flags),
        _ => return None,
    };
    usable_need(&lit).then(|| vec![lit])
}

/// The longest literal every match of a string pattern contains.
fn pattern_literal(p: &Pattern) -> Option<&str> {
    match p {
        Pattern::Exact(p) | Pattern::Contains(p) | Pattern::Prefix(p) | Pattern::Suffix(p) => {
            Some(p.as_str())
        }
        Pattern::Glob(toks) => toks
            .iter()
            .filter_map(|t| match t {
                GlobTok::Lit(l) => Some(l.as_str()),
                _ => None,
            })
            .max_by_key(|l| l.len()),
    }
    .filter(|l| !l.is_empty())
}

/// Literals one of which every match of the regular expression contains (lowercased, each a
/// [`usable_need`]), from its literal prefixes, suffixes or inner runs; `None` when they cannot
/// be bounded.
fn regex_literals(pattern: &str, flags: RegexFlags) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(flags.case_insensitive)
        .multi_line(flags.multi_line)
        .dot_matches_new_line(flags.dot_matches_new_line)
        .build()
        .parse(pattern)
        .ok()?;
    let mut best: Option<Vec<String>> = None;
    for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
        let seq = Extractor::new().kind(kind).extract(&hir);
        let Some(lits) = seq.literals() else { continue };
        let mut out: Vec<String> = Vec::new();
        for l in lits {
            let text = std::str::from_utf8(l.as_bytes()).ok()?;
            // Case folding beyond ASCII is not substring-preserving: keep the ASCII core.
            let lit = if text.is_ascii() {
                text.to_ascii_lowercase()
            } else {
                ascii_core(text)
            };
            if !usable_need(&lit) {
                out.clear();
                break;
            }
            out.push(lit);
        }
        out.sort();
        out.dedup();
        let shortest = |v: &Vec<String>| v.iter().map(String::len).min().unwrap_or(0);
        if !out.is_empty() && best.as_ref().is_none_or(|b| shortest(&out) > shortest(b)) {
            best = Some(out);
        }
    }
    // Inside a top-level concatenation every run of literal pieces is in every match
    // (`.+:assumed-role/aws:.+` always contains `:assumed-role/aws:`). Case-insensitive letters
    // (`(?i)`: a class of one ASCII letter in both cases) continue a run; a class with any
    // non-ASCII member (`s` also folds to `ſ`, `k` to the Kelvin sign) ends it, since those
    // characters do not lowercase to the ASCII letter.
    if let regex_syntax::hir::HirKind::Concat(parts) = hir.kind() {
        let mut runs: Vec<String> = vec![String::new()];
        for p in parts {
            match ascii_piece(p) {
                Some(t) => runs.last_mut().expect("one run").push_str(&t),
                None => runs.push(String::new()),
            }
        }
        let inner = runs
            .into_iter()
            .max_by_key(String::len)
            .filter(|l| usable_need(l));
        let shortest = |v: &Vec<String>| v.iter().map(String::len).min().unwrap_or(0);
        if let Some(l) = inner
            && best.as_ref().is_none_or(|b| l.len() > shortest(b))
        {
            best = Some(vec![l]);
        }
    }
    best
}

/// The lowercase ASCII text every match of `h` is (ignoring ASCII case), if `h` is a literal or
/// a class of a single ASCII character in one or both cases.
fn ascii_piece(h: &regex_syntax::hir::Hir) -> Option<String> {
    use regex_syntax::hir::{Class, HirKind};
    match h.kind() {
        HirKind::Literal(l) => {
            let t = std::str::from_utf8(&l.0).ok()?;
            t.is_ascii().then(|| t.to_ascii_lowercase())
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut chars = c.ranges().iter().flat_map(|r| r.start()..=r.end());
            single_folded(&mut chars)
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut chars = c
                .ranges()
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .map(char::from);
            single_folded(&mut chars)
        }
        _ => None,
    }
}

/// The one lowercase ASCII character that `chars` are, in one or both cases (at most 2 items).
fn single_folded(chars: &mut dyn Iterator<Item = char>) -> Option<String> {
    let first = chars.next()?;
    let second = chars.next();
    if chars.next().is_some() || !first.is_ascii() {
        return None;
    }
    let lower = first.to_ascii_lowercase();
    match second {
        None => Some(lower.to_string()),
        Some(c) if c.is_ascii() && c.to_ascii_lowercase() == lower => Some(lower.to_string()),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_literals_bound_matches() {
        let ignore_case = RegexFlags {
            case_insensitive: true,
            ..RegexFlags::default()
        };
        assert_eq!(
            regex_literals("mimi(katz|dogz)", RegexFlags::default()),
            Some(vec!["mimidogz".into(), "mimikatz".into()])
        );
        assert_eq!(
            regex_literals(r"\s-enc\s", RegexFlags::default()),
            Some(vec!["-enc".to_string()]),
            "class prefix and suffix, literal inside"
        );
        assert_eq!(
            regex_literals(r"\d+\.exe$", RegexFlags::default()),
            Some(vec![".exe".into()]),
            "suffix"
        );
        assert_eq!(
            regex_literals("a", RegexFlags::default()),
            None,
            "too short"
        );
        assert_eq!(
            regex_literals(r"\w+`\w", RegexFlags::default()),
            Some(vec!["`".to_string()]),
            "one punctuation character"
        );
        assert_eq!(
            regex_literals(".+:assumed-role/aws:.+", RegexFlags::default()),
            Some(vec![":assumed-role/aws:".to_string()]),
            "inner literal of a concatenation"
        );
        let l = regex_literals("Invoke-", ignore_case).unwrap();
        assert!(l.iter().all(|x| "invoke-".starts_with(x.as_str())), "{l:?}");
        assert_eq!(
            regex_literals(
                r#"(?i)\.exe["']?\s+[^"]{0,64}werfaultsecure\.exe["']?\s+\d{2,10}"#,
                RegexFlags::default()
            ),
            Some(vec!["ecure.exe".to_string()]),
            "case-insensitive letters continue a run; `s` (also `ſ`) ends it"
        );
        assert_eq!(
            regex_literals(r"\w[ab]pay\w", RegexFlags::default()),
            Some(vec!["pay".to_string()]),
            "a class of two letters ends a run"
        );
    }

    #[test]
    fn ascii_cores() {
        assert_eq!(ascii_core("\u{2013}EncodedCommand"), "encodedcommand");
        assert_eq!(ascii_core("é"), "");
    }
}
