//! Sigma YAML -> rule documents. Keeps every field the engine and the alert need.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_norway::Value as Yaml;

use super::{RuleError, RuleErrorKind};
use crate::alert::Level;
// The correlation kinds and what each takes are the kind registry's (`correlate/kind`); named
// here too, where rules are read.
pub use crate::correlate::kind::{CmpOp, CorrelationKind, DetectorSpec, MAX_BASELINE_PERIODS};

/// One Sigma document: a detection rule or a correlation rule, with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDoc {
    /// File name and 1-based document index.
    pub origin: String,
    /// Rule id (UUID in SigmaHQ, any string accepted).
    pub id: String,
    /// Optional rule name, which correlations may reference instead of the id.
    pub name: Option<String>,
    /// Title.
    pub title: String,
    /// Severity (Sigma default: `medium`).
    pub level: Level,
    /// Tags.
    pub tags: Vec<String>,
    /// Description.
    pub description: String,
    /// Known false positives.
    pub falsepositives: Vec<String>,
    /// References.
    pub references: Vec<String>,
    /// nmc extension: mitigation guidance for the force.
    pub mitigation: String,
    /// Sigma `status` (stable, test, experimental, deprecated, unsupported).
    pub status: Option<String>,
    /// Sigma `fields`: fields worth showing with an alert.
    pub fields: Vec<String>,
    /// What the rule matches.
    pub body: RuleBody,
}

/// The matching part of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleBody {
    /// A single-event detection rule.
    Detection {
        /// Which events the rule applies to.
        logsource: LogSourceSpec,
        /// Named selections and the condition over them.
        detection: DetectionSpec,
    },
    /// A correlation over other rules' matches.
    Correlation(CorrelationSpec),
    /// A Sigma filter: extra conditions ANDed onto the named rules.
    Filter {
        /// Rules (ids or names) the filter applies to.
        rules: Vec<String>,
        /// The filter's selections and condition.
        detection: DetectionSpec,
    },
}

/// Sigma `logsource`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSourceSpec {
    /// `product`.
    pub product: Option<String>,
    /// `service`.
    pub service: Option<String>,
    /// `category`.
    pub category: Option<String>,
}

/// Sigma `detection`: selections in document order and the condition(s).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionSpec {
    /// Named selections.
    pub selections: Vec<(String, SelectionSpec)>,
    /// Condition expressions (a list means OR).
    pub conditions: Vec<String>,
    /// Deprecated in-rule aggregation (`... | count() by x > n`) and its `timeframe`.
    pub aggregation: Option<(String, String)>,
}

/// One named selection.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectionSpec {
    /// A map (one inner list) or a list of maps (OR of inner lists); each map is an AND.
    Maps(Vec<Vec<FieldSpec>>),
    /// Keywords searched in all string values.
    Keywords(Vec<Scalar>),
}

/// `field|mod1|mod2: value(s)`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    /// Field name (dotted paths allowed).
    pub field: String,
    /// Modifiers, in order.
    pub modifiers: Vec<String>,
    /// Values (OR unless `all`).
    pub values: Vec<Scalar>,
}

/// A scalar rule value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// String (may contain wildcards).
    Str(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Null: the field is missing or null.
    Null,
}

/// Sigma `correlation` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationSpec {
    /// Type.
    pub kind: CorrelationKind,
    /// Referenced rules, by id or name.
    pub rules: Vec<String>,
    /// Group-by fields.
    pub group_by: Vec<String>,
    /// Window length in milliseconds.
    pub timespan_ms: i64,
    /// Conditions, all of which must hold.
    pub condition: Vec<(CmpOp, f64)>,
    /// Field counted by `value_count`.
    pub field: Option<String>,
    /// Whether referenced rules also raise their own alerts.
    pub generate: bool,
    /// nmc extension `suppress`: how long a group stays quiet after it fired (default: the
    /// timespan).
    pub suppress_ms: Option<i64>,
    /// `aliases`: group-by name -> referenced rule (id or name) -> event field.
    pub aliases: BTreeMap<String, BTreeMap<String, String>>,
    /// Identity detectors' parameters (`new_term`, `impossible_travel`).
    pub detector: DetectorSpec,
}

/// Reads `below`: a percentage (`10%`) or a fraction (`0.1`), above 0 and at most 100%.
fn parse_below(v: &Yaml) -> Result<f64, RuleErrorKind> {
    let text = scalar_string(v).unwrap_or_default();
    let fraction = match text.trim().strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok().map(|p| p / 100.0),
        None => v.as_f64(),
    };
    match fraction {
        Some(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(invalid(format!(
            "`below: {text}` must be a percentage above 0 and at most 100% (e.g. `10%`)"
        ))),
    }
}

fn err(origin: &str, id: Option<&str>, kind: RuleErrorKind) -> RuleError {
    RuleError {
        origin: origin.to_owned(),
        id: id.map(str::to_owned),
        kind,
    }
}

fn invalid(msg: impl Into<String>) -> RuleErrorKind {
    RuleErrorKind::Invalid(msg.into())
}

fn unsupported(msg: impl Into<String>) -> RuleErrorKind {
    RuleErrorKind::Unsupported(msg.into())
}

/// Most YAML values (scalars, sequences and mappings, counted after aliases are expanded) one
/// rule file may hold. The largest SigmaHQ rule file (a list of vulnerable driver hashes,
/// 290 KB) holds about 30,000; a "billion laughs" file of anchors and aliases expands to
/// billions from a few hundred bytes.
pub const MAX_YAML_VALUES: usize = 250_000;

/// Parses every document of a Sigma YAML file. `file` names the origin in errors. A file whose
/// anchors and aliases expand to more than [`MAX_YAML_VALUES`] values is refused whole.
pub fn parse_rules(file: &str, text: &str) -> Vec<Result<RuleDoc, RuleError>> {
    // Without `&` there is no anchor, so no alias to expand: the file's size bounds its values.
    if text.contains('&')
        && let Err(n) = expansion::check(text, MAX_YAML_VALUES)
    {
        return vec![Err(err(
            &format!("{file}#{n}"),
            None,
            invalid(format!(
                "YAML anchors and aliases expand to more than {MAX_YAML_VALUES} values (a YAML bomb?), nmc's limit for one rule file; the file is refused"
            )),
        ))];
    }
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = format!("{file}#{}", i + 1);
        let parsed = match Yaml::deserialize(doc) {
            Ok(Yaml::Null) => continue,
            Ok(yaml) => parse_doc(&origin, &yaml).and_then(translate_aggregation),
            Err(e) => {
                out.push(Err(err(&origin, None, invalid(format!("YAML: {e}")))));
                // A syntax error ends the stream: later documents cannot be located.
                break;
            }
        };
        match parsed {
            Ok(docs) => out.extend(docs.into_iter().map(Ok)),
            Err(e) => out.push(Err(e)),
        }
    }
    out
}

/// Counting a YAML file's values as a reader would see them (aliases expanded), without
/// building them, and stopping at a budget.
mod expansion {
    use std::cell::Cell;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess};

    /// `Err(n)`: document `n` (1-based) took the count over `max`. Other YAML errors are left
    /// to the real parse, which reports them.
    pub(super) fn check(text: &str, max: usize) -> Result<(), usize> {
        let left = Cell::new(max);
        let over = Cell::new(false);
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let r = Count {
                left: &left,
                over: &over,
            }
            .deserialize(doc);
            if over.get() {
                return Err(i + 1);
            }
            if r.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    #[derive(Clone, Copy)]
    struct Count<'a> {
        left: &'a Cell<usize>,
        over: &'a Cell<bool>,
    }

    impl Count<'_> {
        fn tick<E: de::Error>(self) -> Result<(), E> {
            match self.left.get().checked_sub(1) {
                Some(n) => {
                    self.left.set(n);
                    Ok(())
                }
                None => {
                    self.over.set(true);
                    Err(E::custom("too many YAML values"))
                }
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> de::Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any YAML value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            self.tick()
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            self.tick()
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
            self.tick()
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            self.tick()
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
            self.tick()
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            self.tick()
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            self.tick()
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.tick()
        }
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            self.tick()
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            self.tick()?;
            self.deserialize(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.tick()?;
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.tick()?;
            while map.next_key_seed(self)?.is_some() {
                map.next_value_seed(self)?;
            }
            Ok(())
        }
        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
            // A tagged value (`!tag value`).
            self.tick()?;
            let ((), v) = data.variant_seed(self)?;
            v.newtype_variant_seed(self)
        }
    }
}

/// Splits a rule with a deprecated in-rule aggregation into the equivalent pair: a silent
/// detection rule (`<id>:base`) and a correlation that keeps the rule's id, title and level.
fn translate_aggregation(mut doc: RuleDoc) -> Result<Vec<RuleDoc>, RuleError> {
    let RuleBody::Detection { detection, .. } = &mut doc.body else {
        return Ok(vec![doc]);
    };
    let Some((agg, timeframe)) = detection.aggregation.take() else {
        return Ok(vec![doc]);
    };
    let e = |kind| err(&doc.origin, Some(&doc.id), kind);
    let (kind, field, group_by, op, n) = parse_aggregation(&agg).map_err(e)?;
    let base_id = format!("{}:base", doc.id);
    let mut base = doc.clone();
    base.id = base_id.clone();
    base.name = Some(base_id.clone());
    doc.body = RuleBody::Correlation(CorrelationSpec {
        kind,
        rules: vec![base_id],
        group_by,
        timespan_ms: parse_timespan(&timeframe).map_err(e)?,
        condition: vec![(op, n)],
        field,
        generate: false,
        suppress_ms: None,
        aliases: BTreeMap::new(),
        detector: DetectorSpec::default(),
    });
    Ok(vec![base, doc])
}

/// A parsed aggregation: type, counted field, group-by fields, operator and threshold.
type Aggregation = (CorrelationKind, Option<String>, Vec<String>, CmpOp, f64);

/// Reads `count() [by f, g] > n`, `count(field) ...`, `sum(field) ...`, `avg(field) ...`.
fn parse_aggregation(agg: &str) -> Result<Aggregation, RuleErrorKind> {
    let bad = || {
        invalid(format!(
            "aggregation `{agg}` is not `count(field) by group > n`"
        ))
    };
    let (func, rest) = agg.split_once('(').ok_or_else(bad)?;
    let (arg, rest) = rest.split_once(')').ok_or_else(bad)?;
    let arg = arg.trim();
    let kind = match (func.trim(), arg.is_empty()) {
        ("count", true) => CorrelationKind::EventCount,
        ("count", false) => CorrelationKind::ValueCount,
        ("sum", false) => CorrelationKind::ValueSum,
        ("avg", false) => CorrelationKind::ValueAvg,
        (other, _) => return Err(unsupported(format!("aggregation function `{other}`"))),
    };
    let ops = [
        (">=", CmpOp::Gte),
        ("<=", CmpOp::Lte),
        ("!=", CmpOp::Neq),
        ("==", CmpOp::Eq),
        (">", CmpOp::Gt),
        ("<", CmpOp::Lt),
        ("=", CmpOp::Eq),
    ];
    let (pos, sym, op) = ops
        .iter()
        .filter_map(|(sym, op)| rest.find(sym).map(|p| (p, *sym, *op)))
        .min_by_key(|(p, sym, _)| (*p, std::cmp::Reverse(sym.len())))
        .ok_or_else(bad)?;
    let n: f64 = rest[pos + sym.len()..].trim().parse().map_err(|_| bad())?;
    let by = rest[..pos].trim();
    let group_by = match by.strip_prefix("by") {
        Some(g) => g
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect(),
        None if by.is_empty() => Vec::new(),
        None => return Err(bad()),
    };
    Ok((
        kind,
        (!arg.is_empty()).then(|| arg.to_owned()),
        group_by,
        op,
        n,
    ))
}

fn parse_doc(origin: &str, yaml: &Yaml) -> Result<RuleDoc, RuleError> {
    let map = yaml
        .as_mapping()
        .ok_or_else(|| err(origin, None, invalid("document is not a mapping")))?;
    let get = |k: &str| map.get(Yaml::String(k.to_owned()));
    let id = get("id").and_then(scalar_string);
    let e = |kind| err(origin, id.as_deref(), kind);
    if get("action").is_some() {
        return Err(e(unsupported("`action` documents (rule collections)")));
    }
    let id = id.clone().ok_or_else(|| e(invalid("missing `id`")))?;
    let title = get("title")
        .and_then(scalar_string)
        .ok_or_else(|| e(invalid("missing `title`")))?;
    let level = match get("level").and_then(scalar_string) {
        Some(l) => l.parse().map_err(|m: String| e(invalid(m)))?,
        None => Level::Medium,
    };
    let strings = |k: &str| -> Vec<String> {
        match get(k) {
            Some(Yaml::Sequence(seq)) => seq.iter().filter_map(scalar_string).collect(),
            Some(v) => scalar_string(v).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let body = if let Some(corr) = get("correlation") {
        RuleBody::Correlation(parse_correlation(corr).map_err(e)?)
    } else if let Some(filter) = get("filter") {
        let fm = filter
            .as_mapping()
            .ok_or_else(|| e(invalid("`filter` is not a mapping")))?;
        let rules = match fm.get(Yaml::String("rules".into())) {
            Some(Yaml::Sequence(seq)) => seq.iter().filter_map(scalar_string).collect(),
            Some(v) => scalar_string(v).into_iter().collect(),
            None => Vec::new(),
        };
        if rules.is_empty() {
            return Err(e(invalid("filter without `rules`")));
        }
        let mut det = fm.clone();
        det.remove(Yaml::String("rules".into()));
        RuleBody::Filter {
            rules,
            detection: parse_detection(&Yaml::Mapping(det)).map_err(e)?,
        }
    } else if let Some(det) = get("detection") {
        let logsource = match get("logsource") {
            Some(Yaml::Mapping(m)) => {
                let f = |k: &str| m.get(Yaml::String(k.to_owned())).and_then(scalar_string);
                LogSourceSpec {
                    product: f("product"),
                    service: f("service"),
                    category: f("category"),
                }
            }
            _ => return Err(e(invalid("missing `logsource` mapping"))),
        };
        RuleBody::Detection {
            logsource,
            detection: parse_detection(det).map_err(e)?,
        }
    } else {
        return Err(e(invalid("neither `detection` nor `correlation`")));
    };
    Ok(RuleDoc {
        origin: origin.to_owned(),
        id,
        name: get("name").and_then(scalar_string),
        title,
        level,
        tags: strings("tags"),
        description: get("description")
            .and_then(scalar_string)
            .unwrap_or_default(),
        falsepositives: strings("falsepositives"),
        references: strings("references"),
        mitigation: get("mitigation")
            .and_then(scalar_string)
            .unwrap_or_default(),
        status: get("status").and_then(scalar_string),
        fields: strings("fields"),
        body,
    })
}

fn scalar_string(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn scalar(v: &Yaml) -> Result<Scalar, RuleErrorKind> {
    Ok(match v {
        Yaml::String(s) => Scalar::Str(s.clone()),
        Yaml::Number(n) => match n.as_i64() {
            Some(i) => Scalar::Int(i),
            None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Yaml::Bool(b) => Scalar::Bool(*b),
        Yaml::Null => Scalar::Null,
        other => return Err(invalid(format!("expected a scalar value, found {other:?}"))),
    })
}

fn scalars(v: &Yaml) -> Result<Vec<Scalar>, RuleErrorKind> {
    match v {
        Yaml::Sequence(seq) => seq.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn parse_detection(v: &Yaml) -> Result<DetectionSpec, RuleErrorKind> {
    let map = v
        .as_mapping()
        .ok_or_else(|| invalid("`detection` is not a mapping"))?;
    let mut selections = Vec::new();
    let mut conditions = Vec::new();
    let mut timeframe = None;
    for (k, v) in map {
        let name = k
            .as_str()
            .ok_or_else(|| invalid("detection key is not a string"))?;
        match name {
            "condition" => match v {
                Yaml::String(s) => conditions.push(s.clone()),
                Yaml::Sequence(seq) => {
                    for c in seq {
                        conditions.push(
                            c.as_str()
                                .ok_or_else(|| invalid("condition is not a string"))?
                                .to_owned(),
                        );
                    }
                }
                _ => return Err(invalid("condition is not a string")),
            },
            "timeframe" => {
                timeframe =
                    Some(scalar_string(v).ok_or_else(|| invalid("`timeframe` is not a string"))?)
            }
            _ => selections.push((name.to_owned(), parse_selection(name, v)?)),
        }
    }
    if conditions.is_empty() {
        return Err(invalid("missing `detection.condition`"));
    }
    // Deprecated aggregation: `<condition> | <aggregation>`, translated by `parse_rules`.
    let mut aggregation = None;
    if let [only] = conditions.as_mut_slice()
        && let Some((cond, agg)) = only.split_once('|')
    {
        let tf = timeframe
            .take()
            .ok_or_else(|| unsupported("aggregation without `timeframe` (over all time)"))?;
        aggregation = Some((agg.trim().to_owned(), tf));
        *only = cond.trim().to_owned();
    }
    Ok(DetectionSpec {
        selections,
        conditions,
        aggregation,
    })
}

fn parse_selection(name: &str, v: &Yaml) -> Result<SelectionSpec, RuleErrorKind> {
    match v {
        Yaml::Mapping(m) => Ok(SelectionSpec::Maps(vec![parse_field_map(m)?])),
        Yaml::Sequence(seq) if seq.iter().all(|x| x.is_mapping()) && !seq.is_empty() => {
            let maps = seq
                .iter()
                .map(|x| parse_field_map(x.as_mapping().expect("checked mapping")))
                .collect::<Result<_, _>>()?;
            Ok(SelectionSpec::Maps(maps))
        }
        Yaml::Sequence(seq) => {
            if seq.iter().any(|x| x.is_mapping()) {
                return Err(invalid(format!(
                    "selection `{name}` mixes maps and keywords"
                )));
            }
            Ok(SelectionSpec::Keywords(scalars(v)?))
        }
        other => Ok(SelectionSpec::Keywords(vec![scalar(other)?])),
    }
}

fn parse_field_map(m: &serde_norway::Mapping) -> Result<Vec<FieldSpec>, RuleErrorKind> {
    let mut out = Vec::new();
    for (k, v) in m {
        let key = scalar_string(k).ok_or_else(|| invalid("field name is not a string"))?;
        let mut parts = key.split('|');
        let field = parts.next().unwrap_or_default().to_owned();
        let modifiers = parts.map(str::to_owned).collect();
        out.push(FieldSpec {
            field,
            modifiers,
            values: scalars(v)?,
        });
    }
    Ok(out)
}

/// Parses a Sigma timespan such as `30s`, `5m`, `1h`, `2d` into milliseconds.
pub fn parse_timespan(s: &str) -> Result<i64, RuleErrorKind> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| invalid(format!("timespan `{s}` has no unit (s, m, h, d)")))?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| invalid(format!("timespan `{s}` has no number")))?;
    let mult = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(invalid(format!(
                "timespan `{s}`: unit must be s, m, h or d"
            )));
        }
    };
    if n <= 0 {
        return Err(invalid(format!("timespan `{s}` must be positive")));
    }
    Ok(n * mult)
}

fn parse_correlation(v: &Yaml) -> Result<CorrelationSpec, RuleErrorKind> {
    let m = v
        .as_mapping()
        .ok_or_else(|| invalid("`correlation` is not a mapping"))?;
    let get = |k: &str| m.get(Yaml::String(k.to_owned()));
    let kind = match get("type").and_then(scalar_string) {
        Some(name) => CorrelationKind::from_name(&name)
            .ok_or_else(|| invalid(format!("unknown correlation type `{name}`")))?,
        None => return Err(invalid("correlation without `type`")),
    };
    // What the kind needs and takes (see the kind's file under `correlate/kind/`).
    let spec = kind.spec();
    let mut aliases = BTreeMap::new();
    if let Some(a) = get("aliases") {
        let a = a
            .as_mapping()
            .ok_or_else(|| invalid("`aliases` is not a mapping"))?;
        for (name, per_rule) in a {
            let name = scalar_string(name).ok_or_else(|| invalid("alias name is not a string"))?;
            let per_rule = per_rule.as_mapping().ok_or_else(|| {
                invalid(format!("alias `{name}` is not a mapping of rule to field"))
            })?;
            let mut fields = BTreeMap::new();
            for (rule, field) in per_rule {
                let (Some(rule), Some(field)) = (scalar_string(rule), scalar_string(field)) else {
                    return Err(invalid(format!(
                        "alias `{name}`: rule and field must be strings"
                    )));
                };
                fields.insert(rule, field);
            }
            aliases.insert(name, fields);
        }
    }
    let list = |k: &str| -> Vec<String> {
        match get(k) {
            Some(Yaml::Sequence(seq)) => seq.iter().filter_map(scalar_string).collect(),
            Some(v) => scalar_string(v).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let rules = list("rules");
    if rules.is_empty() {
        return Err(invalid("correlation without `rules`"));
    }
    if let Some(why) = spec.no_group_by
        && get("group-by").is_some()
    {
        return Err(unsupported(format!(
            "{} with `group-by` ({why})",
            spec.name
        )));
    }
    // nmc's extension keys: each kind takes its own.
    for k in CorrelationKind::ALL {
        for &key in k.spec().keys {
            if get(key).is_some() && !spec.keys.contains(&key) {
                let takers: Vec<&str> = CorrelationKind::ALL
                    .iter()
                    .filter(|k| k.spec().keys.contains(&key))
                    .map(|k| k.as_str())
                    .collect();
                return Err(invalid(format!(
                    "`{key}` is for {} only",
                    takers.join(" and ")
                )));
            }
        }
    }
    let missing: Vec<String> = spec
        .required_keys
        .iter()
        .filter(|k| get(k).is_none())
        .map(|k| format!("`{k}`"))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "{} correlation without {}",
            spec.name,
            missing.join(" and ")
        )));
    }
    let timespan = get("timespan")
        .or_else(|| get("timeframe"))
        .and_then(scalar_string)
        .or_else(|| spec.default_timespan.map(str::to_owned))
        .ok_or_else(|| invalid("correlation without `timespan`"))?;
    let timespan_ms = parse_timespan(&timespan)?;
    let condition = match get("condition") {
        Some(Yaml::Mapping(c)) => c
            .iter()
            .map(|(k, v)| {
                let op = match k.as_str() {
                    Some("gt") => CmpOp::Gt,
                    Some("gte") => CmpOp::Gte,
                    Some("lt") => CmpOp::Lt,
                    Some("lte") => CmpOp::Lte,
                    Some("eq") => CmpOp::Eq,
                    Some("neq") => CmpOp::Neq,
                    Some("field") => return Ok(None),
                    other => return Err(invalid(format!("unknown condition operator {other:?}"))),
                };
                let n = v
                    .as_f64()
                    .ok_or_else(|| invalid("condition threshold is not a number"))?;
                Ok(Some((op, n)))
            })
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()?,
        None if !spec.needs_condition => Vec::new(),
        _ => return Err(invalid("correlation without a `condition` mapping")),
    };
    if condition.is_empty() && spec.needs_condition {
        return Err(invalid("correlation condition has no operator"));
    }
    let field = get("condition")
        .and_then(|c| c.get("field"))
        .or_else(|| get("field"))
        .and_then(scalar_string);
    if spec.reads_field() && field.is_none() {
        return Err(invalid(format!(
            "{} correlation without `{}`",
            spec.name, spec.field_key
        )));
    }
    let detector = DetectorSpec {
        learning_ms: get("learning")
            .and_then(scalar_string)
            .map(|s| parse_timespan(&s))
            .transpose()?
            .unwrap_or(14 * 86_400_000),
        latitude: get("latitude").and_then(scalar_string),
        longitude: get("longitude").and_then(scalar_string),
        speed_kmh: get("speed").and_then(Yaml::as_f64).unwrap_or(900.0),
        min_distance_km: get("min_distance").and_then(Yaml::as_f64).unwrap_or(300.0),
        below: get("below").map(parse_below).transpose()?,
        baseline_ms: get("baseline")
            .and_then(scalar_string)
            .map(|s| parse_timespan(&s))
            .transpose()?
            .unwrap_or(7 * 86_400_000),
    };
    (spec.check)(timespan_ms, &detector, &|k| get(k).is_some()).map_err(invalid)?;
    Ok(CorrelationSpec {
        kind,
        rules,
        group_by: list("group-by"),
        timespan_ms,
        condition,
        field,
        generate: get("generate").and_then(Yaml::as_bool).unwrap_or(false),
        suppress_ms: get("suppress")
            .and_then(scalar_string)
            .map(|s| parse_timespan(&s))
            .transpose()?,
        aliases,
        detector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
title: Failed sign-in
id: 1a1a
name: failed_signin
logsource: {product: azure, service: signinlogs}
detection:
    selection:
        resultType: 50126
        properties.userPrincipalName|endswith: '@police.uk'
    filter:
        - properties.appDisplayName: Test
        - properties.clientAppUsed|contains: [IMAP, POP]
    condition: selection and not filter
level: low
tags: [attack.t1110]
---
title: Brute force
id: 2b2b
correlation:
    type: event_count
    rules: failed_signin
    group-by: [properties.userPrincipalName]
    timespan: 10m
    condition: {gte: 10}
level: high
"#;

    #[test]
    fn parses_multi_document_files() {
        let docs: Vec<_> = parse_rules("x.yml", RULES)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].name.as_deref(), Some("failed_signin"));
        assert_eq!(docs[0].level, Level::Low);
        let RuleBody::Detection {
            detection,
            logsource,
        } = &docs[0].body
        else {
            panic!()
        };
        assert_eq!(logsource.service.as_deref(), Some("signinlogs"));
        assert_eq!(detection.selections.len(), 2);
        let (_, SelectionSpec::Maps(filter)) = &detection.selections[1] else {
            panic!()
        };
        assert_eq!(filter.len(), 2, "list of maps is an OR of two maps");
        assert_eq!(filter[1][0].modifiers, vec!["contains"]);
        let RuleBody::Correlation(c) = &docs[1].body else {
            panic!()
        };
        assert_eq!(c.kind, CorrelationKind::EventCount);
        assert_eq!(c.timespan_ms, 600_000);
        assert_eq!(c.condition, vec![(CmpOp::Gte, 10.0)]);
        assert_eq!(docs[1].origin, "x.yml#2");
    }

    #[test]
    fn yaml_bombs_are_refused_and_anchors_still_work() {
        // Billion laughs: nine levels of ten aliases each.
        let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        bomb.push_str(RULES.split("---").next().unwrap());
        let started = std::time::Instant::now();
        let r = parse_rules("bomb.yml", &bomb);
        assert_eq!(r.len(), 1);
        let e = r[0].as_ref().unwrap_err();
        assert!(matches!(e.kind, RuleErrorKind::Invalid(_)), "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with("bomb.yml#1"), "{msg}");
        // serde_norway's alias-jump limit or nmc's value budget, whichever trips first.
        assert!(
            msg.contains("250000 values") || msg.contains("repetition limit exceeded"),
            "{msg}"
        );
        // Quadratic, not exponential: one anchor of 2,000 values referenced 2,000 times
        // (serde_norway's own limit, 100 alias jumps per event, lets it through).
        let list: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
        let quad = format!(
            "x: &x [{}]\ny: [{}]\n",
            list.join(", "),
            vec!["*x"; 2000].join(", ")
        );
        let r = parse_rules("quad.yml", &quad);
        assert!(
            r[0].as_ref()
                .unwrap_err()
                .to_string()
                .contains("YAML anchors"),
            "{r:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // Plain anchors and aliases in a rule are fine.
        let ok = RULES.replacen(
            "resultType: 50126",
            "resultType: &code 50126\n        alsoCode: *code",
            1,
        );
        assert!(ok.contains('&'));
        let docs: Vec<_> = parse_rules("ok.yml", &ok).into_iter().collect();
        assert!(docs.iter().all(Result::is_ok), "{docs:?}");
    }

    #[test]
    fn rejects_with_reasons() {
        let r = parse_rules("a.yml", "title: x\nid: 1\nlogsource: {}\n");
        assert!(matches!(&r[0], Err(e) if matches!(e.kind, RuleErrorKind::Invalid(_))));
        let r = parse_rules(
            "b.yml",
            "title: x\nid: 1\ncorrelation: {type: value_sum, rules: [a], timespan: 1m, condition: {gte: 1}}\n",
        );
        let e = r[0].as_ref().unwrap_err();
        assert!(
            e.to_string()
                .contains("value_sum correlation without `condition.field`"),
            "{e}"
        );
        let r = parse_rules("b2.yml", "title: x\nid: 1\naction: global\n");
        let e = r[0].as_ref().unwrap_err();
        assert!(matches!(e.kind, RuleErrorKind::Unsupported(_)), "{e}");
        let r = parse_rules("c.yml", "title: [unclosed\n");
        assert!(r[0].is_err());
    }

    #[test]
    fn deprecated_aggregations_become_correlations() {
        let text = "title: many\nid: agg\nlevel: high\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  s: {eventName: ConsoleLogin}\n  timeframe: 10m\n  condition: s | count(userIdentity.arn) by sourceIPAddress > 5\n";
        let docs: Vec<RuleDoc> = parse_rules("agg.yml", text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].id, "agg:base");
        let RuleBody::Correlation(c) = &docs[1].body else {
            panic!("{:?}", docs[1].body)
        };
        assert_eq!((docs[1].id.as_str(), docs[1].level), ("agg", Level::High));
        assert_eq!(c.kind, CorrelationKind::ValueCount);
        assert_eq!(c.field.as_deref(), Some("userIdentity.arn"));
        assert_eq!(c.group_by, vec!["sourceIPAddress"]);
        assert_eq!(
            (c.timespan_ms, c.condition.clone()),
            (600_000, vec![(CmpOp::Gt, 5.0)])
        );
        assert_eq!(c.rules, vec!["agg:base"]);
        let plain = parse_rules(
            "p.yml",
            "title: x\nid: p\nlogsource: {product: aws}\ndetection: {s: {a: b}, timeframe: 1h, condition: s | count() >= 3}\n",
        );
        let RuleBody::Correlation(c) = &plain[1].as_ref().unwrap().body else {
            panic!()
        };
        assert_eq!(
            (c.kind, c.group_by.len(), c.condition.clone()),
            (CorrelationKind::EventCount, 0, vec![(CmpOp::Gte, 3.0)])
        );
        let no_tf = parse_rules(
            "n.yml",
            "title: x\nid: n\nlogsource: {product: aws}\ndetection: {s: {a: b}, condition: s | count() > 3}\n",
        );
        assert!(matches!(
            no_tf[0].as_ref().unwrap_err().kind,
            RuleErrorKind::Unsupported(_)
        ));
        let minf = parse_rules(
            "m.yml",
            "title: x\nid: m\nlogsource: {product: aws}\ndetection: {s: {a: b}, timeframe: 1h, condition: s | max(x) > 3}\n",
        );
        assert!(minf[0].as_ref().unwrap_err().to_string().contains("max"));
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("30s").unwrap(), 30_000);
        assert_eq!(parse_timespan("2d").unwrap(), 172_800_000);
        assert!(parse_timespan("5").is_err());
        assert!(parse_timespan("5w").is_err());
    }
}
