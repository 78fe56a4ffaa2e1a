//! Rule documents -> a compiled, source-routed [`RuleSet`].

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::condition::{Expr, parse_condition};
use super::matcher::{ValueMatcher, compile_value};
use super::parse::{CmpOp, CorrelationKind, LogSourceSpec, RuleBody, RuleDoc, SelectionSpec};
use super::{RuleError, RuleErrorKind};
use crate::alert::RuleRef;
use crate::event::{Event, get_field};
use crate::source::SourceKind;

/// One field test inside a selection map.
#[derive(Debug, Clone)]
struct FieldMatcher {
    field: String,
    values: Vec<ValueMatcher>,
    all: bool,
}

impl FieldMatcher {
    fn matches(&self, body: &Value) -> bool {
        let v = get_field(body, &self.field);
        if self.all {
            self.values.iter().all(|m| m.matches(v))
        } else {
            self.values.iter().any(|m| m.matches(v))
        }
    }
}

#[derive(Debug, Clone)]
enum CompiledSelection {
    /// OR over maps, AND within a map.
    Maps(Vec<Vec<FieldMatcher>>),
    /// Any keyword found in any string value.
    Keywords(Vec<ValueMatcher>),
}

impl CompiledSelection {
    fn matches(&self, body: &Value) -> bool {
        match self {
            CompiledSelection::Maps(maps) => maps
                .iter()
                .any(|fields| fields.iter().all(|f| f.matches(body))),
            CompiledSelection::Keywords(kws) => kws.iter().any(|k| any_string(body, k)),
        }
    }
}

fn any_string(v: &Value, m: &ValueMatcher) -> bool {
    match v {
        Value::String(_) => m.matches(Some(v)),
        Value::Array(xs) => xs.iter().any(|x| any_string(x, m)),
        Value::Object(o) => o.values().any(|x| any_string(x, m)),
        _ => false,
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
    selections: Vec<CompiledSelection>,
    expr: Expr,
}

impl CompiledRule {
    /// Tests one event body.
    pub fn matches(&self, body: &Value) -> bool {
        self.expr.eval(&mut |i| self.selections[i].matches(body))
    }
}

/// A compiled correlation rule over detection rules.
#[derive(Debug, Clone)]
pub struct CompiledCorrelation {
    /// Metadata copied into alerts.
    pub meta: RuleRef,
    /// Type.
    pub kind: CorrelationKind,
    /// Indices of the detection rules it counts.
    pub rules: Vec<usize>,
    /// Group-by fields.
    pub group_by: Vec<String>,
    /// Window length.
    pub timespan_ms: i64,
    /// All must hold for the rule to fire.
    pub condition: Vec<(CmpOp, f64)>,
    /// Field counted by `value_count`.
    pub field: Option<String>,
}

impl CompiledCorrelation {
    /// Whether `n` satisfies the condition.
    pub fn holds(&self, n: f64) -> bool {
        self.condition.iter().all(|(op, t)| op.test(n, *t))
    }
}

/// Every loaded rule, routed by source: the unit that a force actor evaluates.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    correlations: Vec<CompiledCorrelation>,
    by_source: HashMap<SourceKind, Vec<usize>>,
    corr_of_rule: Vec<Vec<usize>>,
}

fn routes(ls: &LogSourceSpec, source: SourceKind) -> bool {
    let have = source.logsource();
    let eq = |want: &Option<String>, have: Option<&str>| match want {
        None => true,
        Some(w) => have.is_some_and(|h| h.eq_ignore_ascii_case(w)),
    };
    eq(&ls.product, Some(have.product).filter(|p| !p.is_empty()))
        && eq(&ls.service, have.service)
        && eq(&ls.category, have.category)
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

fn compile_detection(doc: &RuleDoc) -> Result<(CompiledRule, Vec<SourceKind>), RuleErrorKind> {
    let RuleBody::Detection {
        logsource,
        detection,
    } = &doc.body
    else {
        unreachable!("called for detection rules only")
    };
    let sources: Vec<SourceKind> = SourceKind::ALL
        .into_iter()
        .filter(|s| routes(logsource, *s))
        .collect();
    if sources.is_empty() {
        return Err(RuleErrorKind::Unsupported(format!(
            "logsource {logsource:?} is not provided by any nmc source"
        )));
    }
    let names: Vec<String> = detection
        .selections
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let mut selections = Vec::new();
    for (_, sel) in &detection.selections {
        selections.push(match sel {
            SelectionSpec::Keywords(kws) => CompiledSelection::Keywords(
                kws.iter()
                    .map(|k| compile_value(k, &["contains".to_owned()]))
                    .collect::<Result<_, _>>()?,
            ),
            SelectionSpec::Maps(maps) => CompiledSelection::Maps(
                maps.iter()
                    .map(|fields| {
                        fields
                            .iter()
                            .map(|f| {
                                Ok(FieldMatcher {
                                    field: f.field.clone(),
                                    all: f.modifiers.iter().any(|m| m == "all"),
                                    values: f
                                        .values
                                        .iter()
                                        .map(|v| compile_value(v, &f.modifiers))
                                        .collect::<Result<_, _>>()?,
                                })
                            })
                            .collect::<Result<Vec<_>, RuleErrorKind>>()
                    })
                    .collect::<Result<_, _>>()?,
            ),
        });
    }
    let mut exprs = detection
        .conditions
        .iter()
        .map(|c| parse_condition(c, &names))
        .collect::<Result<Vec<_>, _>>()?;
    let expr = if exprs.len() == 1 {
        exprs.pop().expect("one")
    } else {
        Expr::Or(exprs)
    };
    Ok((
        CompiledRule {
            meta: rule_ref(doc, "detection"),
            name: doc.name.clone(),
            emits: true,
            selections,
            expr,
        },
        sources,
    ))
}

impl RuleSet {
    /// Compiles rule documents. Rules that fail are returned as errors and left out; the rest
    /// still load, so one broken rule never disables the others.
    pub fn compile(docs: Vec<RuleDoc>) -> (RuleSet, Vec<RuleError>) {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut corr_docs = Vec::new();
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
            if matches!(doc.body, RuleBody::Correlation(_)) {
                corr_docs.push(doc);
                continue;
            }
            match compile_detection(&doc) {
                Ok((rule, sources)) => {
                    let idx = set.rules.len();
                    for s in sources {
                        set.by_source.entry(s).or_default().push(idx);
                    }
                    set.rules.push(rule);
                }
                Err(kind) => errors.push(err(&doc, kind)),
            }
        }
        set.corr_of_rule = vec![Vec::new(); set.rules.len()];
        for doc in corr_docs {
            let RuleBody::Correlation(spec) = &doc.body else {
                unreachable!()
            };
            let mut rules = Vec::new();
            let mut missing = Vec::new();
            for r in &spec.rules {
                match set
                    .rules
                    .iter()
                    .position(|x| x.meta.id == *r || x.name.as_deref() == Some(r.as_str()))
                {
                    Some(i) => rules.push(i),
                    None => missing.push(r.clone()),
                }
            }
            if !missing.is_empty() {
                errors.push(err(
                    &doc,
                    RuleErrorKind::Invalid(format!(
                        "references rules that are not loaded: {} (correlations of correlations \
                         arrive with stateful correlation)",
                        missing.join(", ")
                    )),
                ));
                continue;
            }
            let ci = set.correlations.len();
            for &r in &rules {
                set.corr_of_rule[r].push(ci);
                if !spec.generate {
                    set.rules[r].emits = false;
                }
            }
            set.correlations.push(CompiledCorrelation {
                meta: rule_ref(&doc, spec.kind.as_str()),
                kind: spec.kind,
                rules,
                group_by: spec.group_by.clone(),
                timespan_ms: spec.timespan_ms,
                condition: spec.condition.clone(),
                field: spec.field.clone(),
            });
        }
        (set, errors)
    }

    /// Detection rules.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Correlation rules.
    pub fn correlations(&self) -> &[CompiledCorrelation] {
        &self.correlations
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

    /// Indices of the detection rules that match `ev`, among those routed to its source.
    pub fn matching<'a>(&'a self, ev: &'a Event) -> impl Iterator<Item = usize> + 'a {
        self.by_source
            .get(&ev.source)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(move |&i| self.rules[i].matches(&ev.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::parse_rules;
    use serde_json::json;

    fn set(text: &str) -> (RuleSet, Vec<RuleError>) {
        let docs = parse_rules("t.yml", text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        RuleSet::compile(docs)
    }

    fn ev(source: SourceKind, body: Value) -> Event {
        Event {
            source,
            time_ms: 0,
            body,
        }
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
            "title: a\nid: a\nlogsource: {product: aws}\ndetection: {s: {x|base64: y}, condition: s}\n---\ntitle: b\nid: b\nlogsource: {product: aws}\ndetection: {s: {x: y}, condition: s}\n---\ntitle: b2\nid: b\nlogsource: {product: aws}\ndetection: {s: {x: y}, condition: s}\n---\ntitle: c\nid: c\ncorrelation: {type: event_count, rules: [zzz], timespan: 5m, condition: {gte: 3}}\n",
        );
        assert_eq!(rs.rules().len(), 1);
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[1].to_string().contains("duplicate"));
        assert!(errs[2].to_string().contains("zzz"));
    }
}
