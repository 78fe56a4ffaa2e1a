//! Rule documents -> a compiled [`RuleSet`], indexed by logsource class.

use std::collections::BTreeMap;

use serde_json::Value;

use super::condition::{Expr, kleene, parse_condition};
use super::fields::FieldCache;
use super::matcher::{FieldLookup, Pattern, Placeholders, ValueMatcher, compile_value};
use super::needs::{self, Needs, Rarity};
use super::parse::{DetectionSpec, FieldSpec, LogSourceSpec, RuleBody, RuleDoc, SelectionSpec};
use super::prefilter::{
    ANYWHERE, AT_END, AT_START, ClassFilter, EventScan, IndexBuilder, LiteralIndex, WHOLE,
};
use super::reads::ReadPlan;
use super::{RuleError, RuleErrorKind};
use crate::alert::RuleRef;
use crate::correlate::kind::Params;
use crate::event::Event;
use crate::mapping::CLASSES;

/// One field test inside a selection map: values (each with its variants), OR or `all`.
#[derive(Debug, Clone)]
struct FieldMatcher {
    /// Field name; empty for a keyword search over every string of the event.
    field: String,
    groups: Vec<Vec<ValueMatcher>>,
    all: bool,
    /// Field id in the literal index (`u32::MAX` until indexed).
    field_id: u32,
    /// When every value is a case-insensitive literal test: (literal id, group, hit flag) per
    /// variant, sorted, answered from the event's literal hits instead of testing the value.
    lits: Option<Vec<(u32, u32, u8)>>,
}

impl FieldMatcher {
    fn matches<'a>(&'a self, fc: &FieldCache<'a>, hits: Option<&EventScan<'_>>) -> bool {
        if self.field.is_empty() {
            let ev = fc.ev;
            let test = |ms: &Vec<ValueMatcher>| ms.iter().any(|m| any_string(&ev.body, m, fc));
            return if self.all {
                self.groups.iter().all(test)
            } else {
                self.groups.iter().any(test)
            };
        }
        if let (Some(h), Some(lits)) = (hits, &self.lits) {
            // Few literals of a field are found in an event: look each found one up among the
            // matcher's tests (sorted by literal) rather than each test among the found.
            return h.with_hits(self.field_id, |found| {
                let tests = |l: u32| {
                    let from = lits.partition_point(|t| t.0 < l);
                    lits[from..].iter().take_while(move |t| t.0 == l)
                };
                if self.all {
                    let mut met = vec![false; self.groups.len()];
                    for &(l, flags) in found {
                        for &(_, g, flag) in tests(l) {
                            if flags & flag != 0 {
                                met[g as usize] = true;
                            }
                        }
                    }
                    met.into_iter().all(|m| m)
                } else {
                    found
                        .iter()
                        .any(|&(l, flags)| tests(l).any(|&(_, _, flag)| flags & flag != 0))
                }
            });
        }
        fc.with(self.field_id, &self.field, |r| {
            let test = |ms: &Vec<ValueMatcher>| -> bool {
                match (&r.lowered, r.value) {
                    (Some(l), Some(v)) => ms.iter().any(|m| m.matches_str(v, l, fc)),
                    _ => ms.iter().any(|m| m.matches(r.value, fc)),
                }
            };
            if self.all {
                self.groups.iter().all(test)
            } else {
                self.groups.iter().any(test)
            }
        })
    }

    /// Needs of this field test (see [`super::needs`]).
    fn needs(&self, rarity: &Rarity) -> Needs {
        needs::of_field(&self.field, &self.groups, self.all, rarity)
    }

    /// [`FieldMatcher::matches`], unknown (`None`) for a keyword search: the event may hold
    /// only the fields the rules read.
    fn matches_by_name<'a>(&'a self, fc: &FieldCache<'a>) -> Option<bool> {
        (!self.field.is_empty()).then(|| self.matches(fc, None))
    }
}

fn any_string(v: &Value, m: &ValueMatcher, ev: &dyn FieldLookup) -> bool {
    match v {
        Value::String(_) => m.matches(Some(v), ev),
        Value::Array(xs) => xs.iter().any(|x| any_string(x, m, ev)),
        Value::Object(o) => o.values().any(|x| any_string(x, m, ev)),
        _ => false,
    }
}

/// Fewest literal tests on one field for the field matcher to be answered from the index.
const INDEXED_TESTS_MIN: usize = 8;

/// The groups as (lowercase literal, group, hit flag) triples, if every variant of every group
/// is a case-insensitive literal test.
fn literal_tests(groups: &[Vec<ValueMatcher>]) -> Option<Vec<(String, u32, u8)>> {
    let mut out = Vec::new();
    for (g, ms) in groups.iter().enumerate() {
        for m in ms {
            let ValueMatcher::Str { pat, cased: false } = m else {
                return None;
            };
            let (lit, flag) = match pat {
                Pattern::Exact(p) => (p, WHOLE),
                Pattern::Prefix(p) => (p, AT_START),
                Pattern::Suffix(p) => (p, AT_END),
                Pattern::Contains(p) => (p, ANYWHERE),
                Pattern::Glob(_) => return None,
            };
            if lit.is_empty() {
                return None;
            }
            out.push((lit.clone(), g as u32, flag));
        }
    }
    Some(out)
}

/// OR over maps, AND within a map.
#[derive(Debug, Clone)]
struct CompiledSelection(Vec<Vec<FieldMatcher>>);

impl CompiledSelection {
    fn matches<'a>(&'a self, fc: &FieldCache<'a>, hits: Option<&EventScan<'_>>) -> bool {
        self.0
            .iter()
            .any(|fields| fields.iter().all(|f| f.matches(fc, hits)))
    }

    /// [`CompiledSelection::matches`] in three-valued logic, keyword searches unknown.
    fn matches_by_name<'a>(&'a self, fc: &FieldCache<'a>) -> Option<bool> {
        let map = |fields: &'a Vec<FieldMatcher>| {
            kleene(fields.iter().map(|f| f.matches_by_name(fc)), false)
        };
        kleene(self.0.iter().map(map), true)
    }

    /// Whether a keyword search is part of it.
    fn searches_words(&self) -> bool {
        self.0.iter().flatten().any(|f| f.field.is_empty())
    }

    fn needs(&self, rarity: &Rarity) -> Needs {
        needs::of_selection(
            self.0
                .iter()
                .map(|fields| fields.iter().map(|f| f.needs(rarity))),
            rarity,
        )
    }
}

/// A compiled single-event detection rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Metadata copied into alerts.
    pub meta: RuleRef,
    /// Optional Sigma `name`.
    pub name: Option<String>,
    /// Whether a match raises its own alert (false when only a correlation uses it).
    pub emits: bool,
    /// The rule's logsource.
    pub logsource: LogSourceSpec,
    /// Origin (file and document) for messages.
    pub origin: String,
    selections: Vec<CompiledSelection>,
    expr: Expr,
}

impl CompiledRule {
    /// Tests one event directly (no literal index).
    pub fn matches(&self, ev: &Event) -> bool {
        self.matches_with(&FieldCache::new(ev), None)
    }

    /// Tests one event whose fields are resolved through `fc`, answering literal tests from
    /// `hits` when given.
    pub(crate) fn matches_with<'a>(
        &'a self,
        fc: &FieldCache<'a>,
        hits: Option<&EventScan<'_>>,
    ) -> bool {
        self.expr
            .eval(&mut |i| self.selections[i].matches(fc, hits))
    }

    /// Whether one of its selections searches every string of the event (keywords).
    fn searches_words(&self) -> bool {
        self.selections
            .iter()
            .any(CompiledSelection::searches_words)
    }

    /// Whether the rule may match an event of which `fc` holds the fields the rules read: false
    /// when its field tests alone rule it out, whatever its keyword searches would find.
    fn may_match_by_name<'a>(&'a self, fc: &FieldCache<'a>) -> bool {
        self.expr
            .eval_partial(&mut |i| self.selections[i].matches_by_name(fc))
            != Some(false)
    }

    /// Whether some events can be told not to match without a keyword search: false when the
    /// rule would need every event whole.
    fn decidable_by_name(&self) -> bool {
        [false, true].into_iter().any(|known| {
            let sel = |i: usize| (!self.selections[i].searches_words()).then_some(known);
            self.expr.eval_partial(&mut |i| sel(i)) == Some(false)
        })
    }

    /// Registers the rule's literal tests in the index.
    fn index(&mut self, b: &mut IndexBuilder) {
        for sel in &mut self.selections {
            for map in &mut sel.0 {
                for fm in map.iter_mut() {
                    if fm.field.is_empty() {
                        continue;
                    }
                    fm.field_id = b.field(&fm.field);
                    // Small lists are cheaper to test directly than to scan for.
                    let tests = literal_tests(&fm.groups).filter(|t| t.len() >= INDEXED_TESTS_MIN);
                    fm.lits = tests.map(|tests| {
                        let mut ids: Vec<(u32, u32, u8)> = tests
                            .into_iter()
                            .map(|(lit, g, flag)| (b.literal(&fm.field, &lit).1, g, flag))
                            .collect();
                        ids.sort_unstable();
                        ids
                    });
                }
            }
        }
    }

    /// Needs of which at least one holds in every event this rule matches, if known, choosing
    /// among alternatives by `rarity`.
    fn needs(&self, rarity: &Rarity) -> Needs {
        needs::of_rule(&self.expr, &|i| self.selections[i].needs(rarity), rarity)
    }

    /// Every (field, value matcher) of the rule's field tests (for [`Rarity::new`]).
    fn value_tests(&self) -> impl Iterator<Item = (&str, &ValueMatcher)> {
        self.selections
            .iter()
            .flat_map(|s| s.0.iter().flatten())
            .flat_map(|fm| fm.groups.iter().flatten().map(|m| (fm.field.as_str(), m)))
    }
}

/// An input of a correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A detection rule (index into [`RuleSet::rules`]).
    Rule(usize),
    /// Another correlation firing (index into [`RuleSet::correlations`]).
    Correlation(usize),
}

/// A compiled correlation rule over detection rules and other correlations.
#[derive(Debug, Clone)]
pub struct CompiledCorrelation {
    /// Metadata copied into alerts.
    pub meta: RuleRef,
    /// What it counts: detection rules and other correlations, in the listed order.
    pub inputs: Vec<Input>,
    /// Whether it raises its own alerts (false when another correlation uses it without
    /// `generate: true`).
    pub emits: bool,
    /// 0 for correlations of detection rules; one more than the highest input otherwise.
    pub rank: usize,
    /// Per input position: the event field to read for each `group_by` name (`aliases`).
    pub group_fields: Vec<Vec<String>>,
    /// Group-by fields.
    pub group_by: Vec<String>,
    /// The counted field (`value_*`, `new_term`).
    pub field: Option<String>,
    /// What its kind's step reads: the kind, timespan, condition, suppression, detector
    /// parameters.
    pub params: Params,
}

impl CompiledCorrelation {
    /// Positions of `input` among the correlation's inputs (a rule may be named more than once).
    pub fn positions_of(&self, input: Input) -> impl Iterator<Item = usize> + '_ {
        self.inputs
            .iter()
            .enumerate()
            .filter(move |(_, x)| **x == input)
            .map(|(pos, _)| pos)
    }
}

/// Every loaded rule, routed by logsource class: the unit that a force actor evaluates.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    correlations: Vec<CompiledCorrelation>,
    by_class: Vec<ClassFilter>,
    index: LiteralIndex,
    corr_of_rule: Vec<Vec<usize>>,
    corr_of_corr: Vec<Vec<usize>>,
    reads: ReadPlan,
    /// Per class, the rules with a keyword search (they need the whole event).
    word_rules: Vec<Vec<usize>>,
}

fn rule_ref(doc: &RuleDoc, kind: &str) -> RuleRef {
    RuleRef {
        id: doc.id.clone(),
        title: doc.title.clone(),
        level: doc.level,
        tags: doc.tags.clone(),
        kind: kind.to_owned(),
        description: doc.description.clone(),
        mitigation: doc.mitigation.clone(),
        falsepositives: doc.falsepositives.clone(),
        references: doc.references.clone(),
    }
}

fn compile_field(f: &FieldSpec, ph: &Placeholders) -> Result<FieldMatcher, RuleErrorKind> {
    let mods = if f.field.is_empty() && f.modifiers.iter().all(|m| m == "all") {
        // Keyword lists (`'|all': [...]`) search every string for each keyword.
        let mut m = f.modifiers.clone();
        m.push("contains".into());
        m
    } else {
        f.modifiers.clone()
    };
    let groups: Vec<Vec<ValueMatcher>> = f
        .values
        .iter()
        .map(|v| compile_value(v, &mods, ph))
        .collect::<Result<_, _>>()?;
    Ok(FieldMatcher {
        field: f.field.clone(),
        all: f.modifiers.iter().any(|m| m == "all"),
        field_id: u32::MAX,
        lits: None,
        groups,
    })
}

fn compile_selections(
    det: &DetectionSpec,
    ph: &Placeholders,
) -> Result<(Vec<String>, Vec<CompiledSelection>), RuleErrorKind> {
    let mut names = Vec::new();
    let mut out = Vec::new();
    for (name, sel) in &det.selections {
        names.push(name.clone());
        out.push(match sel {
            SelectionSpec::Keywords(kws) => CompiledSelection(vec![vec![compile_field(
                &FieldSpec {
                    field: String::new(),
                    modifiers: Vec::new(),
                    values: kws.clone(),
                },
                ph,
            )?]]),
            SelectionSpec::Maps(maps) => CompiledSelection(
                maps.iter()
                    .map(|fields| fields.iter().map(|f| compile_field(f, ph)).collect())
                    .collect::<Result<_, _>>()?,
            ),
        });
    }
    Ok((names, out))
}

fn condition_of(det: &DetectionSpec, names: &[String]) -> Result<Expr, RuleErrorKind> {
    let mut exprs = det
        .conditions
        .iter()
        .map(|c| parse_condition(c, names))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if exprs.len() == 1 {
        exprs.pop().expect("one")
    } else {
        Expr::Or(exprs)
    })
}

fn compile_detection(doc: &RuleDoc, ph: &Placeholders) -> Result<CompiledRule, RuleErrorKind> {
    let RuleBody::Detection {
        logsource,
        detection,
    } = &doc.body
    else {
        unreachable!("called for detection rules only")
    };
    let (names, selections) = compile_selections(detection, ph)?;
    let expr = condition_of(detection, &names)?;
    Ok(CompiledRule {
        meta: rule_ref(doc, "detection"),
        name: doc.name.clone(),
        emits: true,
        logsource: logsource.clone(),
        origin: doc.origin.clone(),
        selections,
        expr,
    })
}

/// Renumbers selection references by `offset` (to append a filter's selections to a rule's).
fn shift(e: &Expr, offset: usize) -> Expr {
    match e {
        Expr::Sel(i) => Expr::Sel(i + offset),
        Expr::And(xs) => Expr::And(xs.iter().map(|x| shift(x, offset)).collect()),
        Expr::Or(xs) => Expr::Or(xs.iter().map(|x| shift(x, offset)).collect()),
        Expr::Not(x) => Expr::Not(Box::new(shift(x, offset))),
    }
}

impl RuleSet {
    /// Compiles rule documents. Rules that fail are returned as errors and left out; the rest
    /// still load, so one broken rule never disables the others.
    pub fn compile(docs: Vec<RuleDoc>) -> (RuleSet, Vec<RuleError>) {
        Self::compile_with(docs, &Placeholders::new())
    }

    /// Like [`RuleSet::compile`], resolving `expand` placeholders from `placeholders`.
    pub fn compile_with(
        docs: Vec<RuleDoc>,
        placeholders: &Placeholders,
    ) -> (RuleSet, Vec<RuleError>) {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut corr_docs = Vec::new();
        let mut filter_docs = Vec::new();
        let err = |doc: &RuleDoc, kind| RuleError {
            origin: doc.origin.clone(),
            id: Some(doc.id.clone()),
            kind,
        };
        for doc in docs {
            if let Some(first) = seen.get(&doc.id) {
                errors.push(err(
                    &doc,
                    RuleErrorKind::Invalid(format!("duplicate rule id, first defined in {first}")),
                ));
                continue;
            }
            seen.insert(doc.id.clone(), doc.origin.clone());
            match &doc.body {
                RuleBody::Correlation(_) => corr_docs.push(doc),
                RuleBody::Filter { .. } => filter_docs.push(doc),
                RuleBody::Detection { .. } => match compile_detection(&doc, placeholders) {
                    Ok(rule) => set.rules.push(rule),
                    Err(kind) => errors.push(err(&doc, kind)),
                },
            }
        }
        for doc in filter_docs {
            let RuleBody::Filter { rules, detection } = &doc.body else {
                unreachable!()
            };
            let compiled = compile_selections(detection, placeholders)
                .and_then(|(names, sels)| Ok((condition_of(detection, &names)?, sels)));
            let (cond, sels) = match compiled {
                Ok(c) => c,
                Err(kind) => {
                    errors.push(err(&doc, kind));
                    continue;
                }
            };
            for target in rules {
                let Some(rule) = set
                    .rules
                    .iter_mut()
                    .find(|r| r.meta.id == *target || r.name.as_deref() == Some(target.as_str()))
                else {
                    errors.push(err(
                        &doc,
                        RuleErrorKind::Invalid(format!(
                            "filter names rule `{target}`, which is not loaded"
                        )),
                    ));
                    continue;
                };
                let offset = rule.selections.len();
                rule.selections.extend(sels.iter().cloned());
                let old = std::mem::replace(&mut rule.expr, Expr::Or(Vec::new()));
                rule.expr = Expr::And(vec![old, shift(&cond, offset)]);
            }
        }
        let mut builder = IndexBuilder::default();
        for r in &mut set.rules {
            r.index(&mut builder);
        }
        set.index = builder.build();
        let rarity = Rarity::new(set.rules.iter().map(CompiledRule::value_tests));
        let rule_fields: Vec<Vec<&str>> = set
            .rules
            .iter()
            .map(|r| {
                r.selections
                    .iter()
                    .flat_map(|s| s.0.iter().flatten())
                    .map(|f| f.field.as_str())
                    .filter(|f| !f.is_empty())
                    .collect()
            })
            .collect();
        let requirements: Vec<_> = set.rules.iter().map(|r| r.needs(&rarity)).collect();
        set.by_class = CLASSES
            .all
            .iter()
            .map(|class| {
                let rules: Vec<usize> = (0..set.rules.len())
                    .filter(|&i| {
                        let ls = &set.rules[i].logsource;
                        class.accepts(
                            ls.product.as_deref(),
                            ls.service.as_deref(),
                            ls.category.as_deref(),
                        )
                    })
                    .collect();
                ClassFilter::new(class, rules, &requirements, &rule_fields, &set.index)
            })
            .collect();
        set.link_correlations(corr_docs, &mut errors);
        set.word_rules = set
            .by_class
            .iter()
            .map(|c| {
                c.rules
                    .iter()
                    .copied()
                    .filter(|&r| set.rules[r].searches_words())
                    .collect()
            })
            .collect();
        set.reads = set.read_plan();
        (set, errors)
    }

    /// Parses a payload of `source` as these rules need it: only the parts they read
    /// ([`RuleSet::reads`]), unless a keyword search of the event's class may match it, which
    /// reads every string: then the whole event. The rules match the result exactly as they
    /// match the whole event; the same payloads are refused with the same errors.
    pub fn parse_event(
        &self,
        source: crate::source::SourceKind,
        payload: &[u8],
        max_bytes: usize,
    ) -> Result<Event, crate::event::BadInput> {
        let keep = self.reads.keep(source);
        let ev = Event::parse_kept(source, payload, max_bytes, keep)?;
        if keep.is_everything() || !self.may_search_words(&ev) {
            return Ok(ev);
        }
        Event::parse(source, payload, max_bytes)
    }

    /// Whether a keyword search of the class of `ev` (parsed keeping what the rules read) may
    /// decide whether its rule matches.
    fn may_search_words(&self, ev: &Event) -> bool {
        let Some(rules) = self.word_rules.get(ev.class) else {
            return false;
        };
        if rules.is_empty() {
            return false;
        }
        let fc = FieldCache::new(ev);
        rules.iter().any(|&r| self.rules[r].may_match_by_name(&fc))
    }

    /// What the rules read of each source's events ([`ReadPlan`]).
    fn read_plan(&self) -> ReadPlan {
        let mut shared: Vec<&str> = Vec::new();
        for c in &self.correlations {
            shared.extend(c.group_fields.iter().flatten().map(String::as_str));
            shared.extend(c.field.as_deref());
            shared.extend(c.params.detector.latitude.as_deref());
            shared.extend(c.params.detector.longitude.as_deref());
        }
        ReadPlan::new(|class| self.fields_read(class), &shared)
    }

    /// The fields the detection rules of `class` read (`None`: the whole event, for a keyword
    /// search that no field test of its rule can rule out).
    fn fields_read(&self, class: usize) -> Option<Vec<&str>> {
        let mut out = Vec::new();
        let Some(filter) = self.by_class.get(class) else {
            return Some(out);
        };
        for &r in &filter.rules {
            let rule = &self.rules[r];
            if rule.searches_words() && !rule.decidable_by_name() {
                return None;
            }
            for fm in rule.selections.iter().flat_map(|s| s.0.iter().flatten()) {
                if fm.field.is_empty() {
                    continue;
                }
                out.push(fm.field.as_str());
                for m in fm.groups.iter().flatten() {
                    m.fields_referenced(&mut out);
                }
            }
        }
        Some(out)
    }

    /// What the rules read of each source's events (see [`RuleSet::parse_event`]).
    pub fn reads(&self) -> &ReadPlan {
        &self.reads
    }

    /// Resolves correlation references (to detection rules or to other correlations, by id or
    /// name, in any order across files), drops correlations with missing references or cycles,
    /// and ranks the rest so that a correlation runs after the ones it counts.
    fn link_correlations(&mut self, docs: Vec<RuleDoc>, errors: &mut Vec<RuleError>) {
        let err = |doc: &RuleDoc, msg: String| RuleError {
            origin: doc.origin.clone(),
            id: Some(doc.id.clone()),
            kind: RuleErrorKind::Invalid(msg),
        };
        let find_corr = |r: &str| {
            docs.iter()
                .position(|d| d.id == r || d.name.as_deref() == Some(r))
        };
        // Inputs per document; None when a reference is missing.
        let mut inputs: Vec<Option<Vec<Input>>> = Vec::new();
        for doc in &docs {
            let RuleBody::Correlation(spec) = &doc.body else {
                unreachable!()
            };
            let mut ins = Vec::new();
            let mut missing = Vec::new();
            for r in &spec.rules {
                let rule = self
                    .rules
                    .iter()
                    .position(|x| x.meta.id == *r || x.name.as_deref() == Some(r.as_str()));
                match (rule, find_corr(r)) {
                    (Some(i), _) => ins.push(Input::Rule(i)),
                    (None, Some(j)) => ins.push(Input::Correlation(j)),
                    (None, None) => missing.push(r.clone()),
                }
            }
            if missing.is_empty() {
                inputs.push(Some(ins));
            } else {
                errors.push(err(
                    doc,
                    format!(
                        "references rules that are not loaded: {}",
                        missing.join(", ")
                    ),
                ));
                inputs.push(None);
            }
        }
        // Rank by depth; a correlation on a cycle, or on a dropped one, is dropped too.
        let mut rank: Vec<Option<usize>> = vec![None; docs.len()];
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..docs.len() {
                let (None, Some(ins)) = (rank[i], &inputs[i]) else {
                    continue;
                };
                let mut r = 0;
                let mut ready = true;
                for input in ins {
                    if let Input::Correlation(j) = input {
                        match rank[*j] {
                            Some(rj) => r = r.max(rj + 1),
                            None => ready = false,
                        }
                    }
                }
                if ready {
                    rank[i] = Some(r);
                    changed = true;
                }
            }
        }
        let mut index: Vec<Option<usize>> = vec![None; docs.len()];
        for (i, doc) in docs.iter().enumerate() {
            if inputs[i].is_some() && rank[i].is_none() {
                errors.push(err(
                    doc,
                    "references a correlation that is on a cycle or not loaded".into(),
                ));
            }
            if rank[i].is_some() {
                index[i] = Some(self.correlations.len());
                let RuleBody::Correlation(spec) = &doc.body else {
                    unreachable!()
                };
                self.correlations.push(CompiledCorrelation {
                    meta: rule_ref(doc, spec.kind.as_str()),
                    inputs: Vec::new(),
                    emits: true,
                    rank: rank[i].unwrap_or(0),
                    group_fields: spec
                        .rules
                        .iter()
                        .map(|r| {
                            spec.group_by
                                .iter()
                                .map(|g| {
                                    spec.aliases
                                        .get(g)
                                        .and_then(|per_rule| per_rule.get(r))
                                        .cloned()
                                        .unwrap_or_else(|| g.clone())
                                })
                                .collect()
                        })
                        .collect(),
                    group_by: spec.group_by.clone(),
                    field: spec.field.clone(),
                    params: Params {
                        kind: spec.kind,
                        timespan_ms: spec.timespan_ms,
                        condition: spec.condition.clone(),
                        suppress_ms: spec.suppress_ms.unwrap_or(
                            if spec.kind.spec().suppress_by_default {
                                spec.timespan_ms
                            } else {
                                0
                            },
                        ),
                        inputs: spec.rules.len(),
                        detector: spec.detector.clone(),
                    },
                });
            }
        }
        self.corr_of_rule = vec![Vec::new(); self.rules.len()];
        self.corr_of_corr = vec![Vec::new(); self.correlations.len()];
        for (i, doc) in docs.iter().enumerate() {
            let (Some(ci), Some(ins)) = (index[i], &inputs[i]) else {
                continue;
            };
            let RuleBody::Correlation(spec) = &doc.body else {
                unreachable!()
            };
            let ins: Vec<Input> = ins
                .iter()
                .map(|x| match x {
                    Input::Correlation(j) => {
                        Input::Correlation(index[*j].expect("ranked inputs are kept"))
                    }
                    rule => *rule,
                })
                .collect();
            for input in &ins {
                match *input {
                    Input::Rule(r) => {
                        if !self.corr_of_rule[r].contains(&ci) {
                            self.corr_of_rule[r].push(ci);
                        }
                        if !spec.generate {
                            self.rules[r].emits = false;
                        }
                    }
                    Input::Correlation(c) => {
                        if !self.corr_of_corr[c].contains(&ci) {
                            self.corr_of_corr[c].push(ci);
                        }
                        if !spec.generate {
                            self.correlations[c].emits = false;
                        }
                    }
                }
            }
            self.correlations[ci].inputs = ins;
        }
    }

    /// Detection rules.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Correlation rules.
    pub fn correlations(&self) -> &[CompiledCorrelation] {
        &self.correlations
    }

    /// Correlations that count firings of correlation `corr`.
    pub fn correlations_of_correlation(&self, corr: usize) -> &[usize] {
        &self.corr_of_corr[corr]
    }

    /// Correlations that count matches of detection rule `rule`.
    pub fn correlations_of(&self, rule: usize) -> &[usize] {
        &self.corr_of_rule[rule]
    }

    /// Total rules loaded (detections and correlations).
    pub fn len(&self) -> usize {
        self.rules.len() + self.correlations.len()
    }

    /// Whether no rule is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Indices of the detection rules that match `ev`, among those routed to its class.
    pub fn matching(&self, ev: &Event) -> std::vec::IntoIter<usize> {
        let Some(class) = self.by_class.get(ev.class) else {
            return Vec::new().into_iter();
        };
        let fc = FieldCache::new(ev);
        let scan = EventScan::new(&self.index, class, &fc);
        class
            .candidates(&scan)
            .into_iter()
            .filter(|&i| self.rules[i].matches_with(&fc, Some(&scan)))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Like [`RuleSet::matching`] without the literal index: every rule routed to the event's
    /// class is evaluated by testing values directly. Slow; the reference tests hold the index to.
    pub fn matching_exhaustive<'a>(&'a self, ev: &'a Event) -> impl Iterator<Item = usize> + 'a {
        let fc = FieldCache::new(ev);
        self.by_class
            .get(ev.class)
            .map(|f| f.rules.as_slice())
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(move |&i| self.rules[i].matches_with(&fc, None))
    }

    /// Rules the index selects for full evaluation of `ev`.
    pub fn candidates(&self, ev: &Event) -> Vec<usize> {
        self.by_class.get(ev.class).map_or(Vec::new(), |c| {
            let fc = FieldCache::new(ev);
            c.candidates(&EventScan::new(&self.index, c, &fc))
        })
    }

    /// Rules the index cannot narrow for an event's class (always evaluated).
    pub fn unfiltered(&self, ev: &Event) -> Vec<usize> {
        self.by_class
            .get(ev.class)
            .map(|c| c.unfiltered().collect())
            .unwrap_or_default()
    }

    /// (indexed literals, literal hits in `ev`): diagnostics for benchmarks.
    pub fn prefilter_stats(&self, ev: &Event) -> (usize, usize) {
        let fc = FieldCache::new(ev);
        let hits = self.by_class.get(ev.class).map_or(0, |c| {
            let scan = EventScan::new(&self.index, c, &fc);
            for i in c.candidates(&scan) {
                self.rules[i].matches_with(&fc, Some(&scan));
            }
            scan.len()
        });
        (self.index.literal_count(), hits)
    }

    /// (routed, candidate) rule counts for an event: how well the index narrows the class.
    pub fn selectivity(&self, ev: &Event) -> (usize, usize) {
        self.by_class
            .get(ev.class)
            .map_or((0, 0), |c| (c.rules.len(), self.candidates(ev).len()))
    }

    /// Detection rules whose logsource no nmc source provides yet (loaded but never evaluated).
    pub fn dormant(&self) -> Vec<usize> {
        (0..self.rules.len())
            .filter(|&i| !self.by_class.iter().any(|c| c.rules.contains(&i)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::parse_rules;
    use crate::source::SourceKind;
    use serde_json::json;

    fn set(text: &str) -> (RuleSet, Vec<RuleError>) {
        let docs = parse_rules("t.yml", text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        RuleSet::compile(docs)
    }

    fn ev(source: SourceKind, body: Value) -> Event {
        Event::with_time(source, 0, body)
    }

    #[test]
    fn routes_by_logsource() {
        let (rs, errs) = set(
            "title: a\nid: a\nlogsource: {product: aws, service: cloudtrail}\ndetection: {s: {eventName: StopLogging}, condition: s}\n",
        );
        assert!(errs.is_empty());
        let body = json!({"eventName": "StopLogging"});
        assert_eq!(
            rs.matching(&ev(SourceKind::AwsCloudtrail, body.clone()))
                .count(),
            1
        );
        assert_eq!(rs.matching(&ev(SourceKind::EntraSignin, body)).count(), 0);
    }

    #[test]
    fn correlation_links_and_generate() {
        let (rs, errs) = set(
            "title: a\nid: a\nname: fail\nlogsource: {product: azure, service: signinlogs}\ndetection: {s: {resultType: 50126}, condition: s}\n---\ntitle: c\nid: c\ncorrelation: {type: event_count, rules: [fail], group-by: [user], timespan: 5m, condition: {gte: 3}}\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rs.correlations_of(0), &[0]);
        assert!(
            !rs.rules()[0].emits,
            "referenced rule is silent without generate"
        );
        assert_eq!(rs.len(), 2);
    }

    #[test]
    fn broken_rules_do_not_stop_good_ones() {
        let (rs, errs) = set(
            "title: a\nid: a\nlogsource: {product: aws}\ndetection: {s: {x|gzip: y}, condition: s}\n---\ntitle: b\nid: b\nlogsource: {product: aws}\ndetection: {s: {x: y}, condition: s}\n---\ntitle: b2\nid: b\nlogsource: {product: aws}\ndetection: {s: {x: y}, condition: s}\n---\ntitle: c\nid: c\ncorrelation: {type: event_count, rules: [zzz], timespan: 5m, condition: {gte: 3}}\n",
        );
        assert_eq!(rs.rules().len(), 1);
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[1].to_string().contains("duplicate"));
        assert!(errs[2].to_string().contains("zzz"));
    }
}
