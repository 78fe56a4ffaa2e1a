//! Value matchers: one Sigma value plus its modifiers, compiled once, tested per event value.
//!
//! Modifiers apply left to right as the specification says: placeholder expansion (`expand`),
//! encodings (`utf16le`/`utf16be`/`wide`/`utf16`, then `base64`/`base64offset`), `windash`
//! variants, then the position (`contains`/`startswith`/`endswith`). `re` (with `i`/`m`/`s`),
//! `cidr`, `exists`, `lt`/`lte`/`gt`/`gte`, the time parts (`minute` ... `year`) and `fieldref`
//! change what kind of test it is; `cased` makes string tests case-sensitive; `neq` negates; `all`
//! is applied by the caller across values. One rule value may compile to several matchers (its
//! variants), any of which may match.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{Datelike, TimeZone, Timelike, Utc};
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::RuleErrorKind;
use super::parse::Scalar;

/// Values of `%name%` placeholders for the `expand` modifier (name without `%`).
pub type Placeholders = BTreeMap<String, Vec<String>>;

/// Reads another field of the same event (for `fieldref`).
pub trait FieldLookup {
    /// The value of `field` in the event being matched.
    fn field(&self, field: &str) -> Option<&Value>;
}

/// A compiled string pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Whole value equals.
    Exact(String),
    /// Value contains.
    Contains(String),
    /// Value starts with.
    Prefix(String),
    /// Value ends with.
    Suffix(String),
    /// General wildcard pattern.
    Glob(Vec<GlobTok>),
}

/// A piece of a wildcard pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum GlobTok {
    /// Literal text.
    Lit(String),
    /// `*`: any run of characters.
    Star,
    /// `?`: one character.
    One,
}

/// Numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumOp {
    /// `==`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `>`
    Gt,
    /// `>=`
    Gte,
}

impl NumOp {
    fn test(self, a: f64, b: f64) -> bool {
        match self {
            NumOp::Eq => a == b,
            NumOp::Lt => a < b,
            NumOp::Lte => a <= b,
            NumOp::Gt => a > b,
            NumOp::Gte => a >= b,
        }
    }
}

/// Part of a timestamp extracted by the time modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePart {
    /// 0-59
    Minute,
    /// 0-23
    Hour,
    /// Day of month, 1-31
    Day,
    /// ISO week, 1-53
    Week,
    /// 1-12
    Month,
    /// Year
    Year,
}

/// Where a referenced or searched string must appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Anywhere.
    Contains,
    /// At the start.
    Start,
    /// At the end.
    End,
}

/// An IP network for `cidr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `a.b.c.d/n` or `v6::/n` (a bare address is a /32 or /128).
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse().ok().filter(|&n| n <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A compiled matcher for one value (variant) of a field.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    /// String pattern (numbers and booleans are compared as text).
    Str {
        /// The pattern (lowercased unless `cased`).
        pat: Pattern,
        /// Case-sensitive.
        cased: bool,
    },
    /// Regular expression (searched anywhere unless anchored), with the flags it was built with
    /// (the needs read its pattern again, see [`super::needs`]).
    Regex(Regex, RegexFlags),
    /// IP address in a network.
    Cidr(IpNet),
    /// Numeric comparison (also against numeric strings).
    Num(NumOp, f64),
    /// Boolean equality.
    Bool(bool),
    /// Field missing or null.
    Null,
    /// Field present (true) or absent (false).
    Exists(bool),
    /// Compare with another field of the same event.
    FieldRef {
        /// The other field.
        field: String,
        /// Equality when `None`.
        pos: Option<Position>,
        /// Case-sensitive.
        cased: bool,
    },
    /// A part of a timestamp compared numerically.
    Time(TimePart, NumOp, f64),
    /// Negation (`neq`).
    Not(Box<ValueMatcher>),
}

impl ValueMatcher {
    /// Adds the other fields of the event this test reads (`fieldref`) to `out`.
    pub(crate) fn fields_referenced<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            ValueMatcher::FieldRef { field, .. } => out.push(field),
            ValueMatcher::Not(m) => m.fields_referenced(out),
            ValueMatcher::Str { .. }
            | ValueMatcher::Regex(..)
            | ValueMatcher::Cidr(_)
            | ValueMatcher::Num(..)
            | ValueMatcher::Bool(_)
            | ValueMatcher::Null
            | ValueMatcher::Exists(_)
            | ValueMatcher::Time(..) => {}
        }
    }
}

/// Splits a Sigma string into glob tokens, honouring `\*`, `\?` and `\\` escapes.
pub fn glob_tokens(s: &str) -> Vec<GlobTok> {
    let mut toks = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                lit.push(chars.next().expect("peeked"));
            }
            '*' | '?' => {
                if !lit.is_empty() {
                    toks.push(GlobTok::Lit(std::mem::take(&mut lit)));
                }
                toks.push(if c == '*' {
                    GlobTok::Star
                } else {
                    GlobTok::One
                });
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        toks.push(GlobTok::Lit(lit));
    }
    toks
}

fn simplify(toks: Vec<GlobTok>) -> Pattern {
    use GlobTok::*;
    match toks.as_slice() {
        [] => Pattern::Exact(String::new()),
        [Lit(a)] => Pattern::Exact(a.clone()),
        [Star, Lit(a), Star] => Pattern::Contains(a.clone()),
        [Lit(a), Star] => Pattern::Prefix(a.clone()),
        [Star, Lit(a)] => Pattern::Suffix(a.clone()),
        _ => Pattern::Glob(toks),
    }
}

/// Builds a string pattern from a value (wildcards honoured unless `literal`) and a position.
pub fn string_pattern(value: &str, literal: bool, pos: Option<Position>, cased: bool) -> Pattern {
    let value = if cased {
        value.to_owned()
    } else {
        value.to_lowercase()
    };
    let mut toks = if literal {
        if value.is_empty() {
            vec![]
        } else {
            vec![GlobTok::Lit(value)]
        }
    } else {
        glob_tokens(&value)
    };
    match pos {
        Some(Position::Contains) => {
            toks.insert(0, GlobTok::Star);
            toks.push(GlobTok::Star);
        }
        Some(Position::Start) => toks.push(GlobTok::Star),
        Some(Position::End) => toks.insert(0, GlobTok::Star),
        None => {}
    }
    toks.dedup_by(|a, b| *a == GlobTok::Star && *b == GlobTok::Star);
    simplify(toks)
}

/// The flags of a `re` value: its `i`, `m` and `s` modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegexFlags {
    /// `i`: ignore case.
    pub case_insensitive: bool,
    /// `m`: `^` and `$` match at line ends.
    pub multi_line: bool,
    /// `s`: `.` matches a newline.
    pub dot_matches_new_line: bool,
}

/// Parsed modifier list of one field.
#[derive(Debug, Default)]
struct Mods {
    pos: Option<Position>,
    re: bool,
    re_flags: RegexFlags,
    cidr: bool,
    exists: bool,
    cased: bool,
    cmp: Option<NumOp>,
    neq: bool,
    fieldref: bool,
    expand: bool,
    windash: bool,
    time: Option<TimePart>,
    /// Encoding steps in order: utf16 variants and base64 / base64offset.
    encodings: Vec<String>,
}

fn unsupported(m: &str) -> RuleErrorKind {
    RuleErrorKind::Unsupported(format!("modifier `{m}`"))
}

fn invalid(m: impl Into<String>) -> RuleErrorKind {
    RuleErrorKind::Invalid(m.into())
}

fn parse_mods(modifiers: &[String]) -> Result<Mods, RuleErrorKind> {
    let mut m = Mods::default();
    for name in modifiers {
        let set_pos = |m: &mut Mods, p| {
            if m.pos.replace(p).is_some() {
                return Err(invalid(format!(
                    "modifier `{name}` combined with another position modifier"
                )));
            }
            Ok(())
        };
        match name.as_str() {
            "contains" => set_pos(&mut m, Position::Contains)?,
            "startswith" => set_pos(&mut m, Position::Start)?,
            "endswith" => set_pos(&mut m, Position::End)?,
            "all" => {}
            "re" => m.re = true,
            "i" | "m" | "s" if m.re => match name.as_str() {
                "i" => m.re_flags.case_insensitive = true,
                "m" => m.re_flags.multi_line = true,
                _ => m.re_flags.dot_matches_new_line = true,
            },
            "i" | "m" | "s" => {
                return Err(invalid(format!(
                    "modifier `{name}` is only valid after `re`"
                )));
            }
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "cased" => m.cased = true,
            "lt" => m.cmp = Some(NumOp::Lt),
            "lte" => m.cmp = Some(NumOp::Lte),
            "gt" => m.cmp = Some(NumOp::Gt),
            "gte" => m.cmp = Some(NumOp::Gte),
            "neq" => m.neq = true,
            "fieldref" => m.fieldref = true,
            "expand" => m.expand = true,
            "windash" => m.windash = true,
            "minute" => m.time = Some(TimePart::Minute),
            "hour" => m.time = Some(TimePart::Hour),
            "day" => m.time = Some(TimePart::Day),
            "week" => m.time = Some(TimePart::Week),
            "month" => m.time = Some(TimePart::Month),
            "year" => m.time = Some(TimePart::Year),
            "base64" | "base64offset" | "utf16le" | "utf16be" | "wide" | "utf16" => {
                m.encodings.push(name.clone())
            }
            other => return Err(unsupported(other)),
        }
    }
    Ok(m)
}

/// Largest compiled program of one `|re` regular expression, in bytes (the regex crate's
/// `size_limit`). Matching is linear in the input whatever the pattern (no backtracking), so a
/// pathological regex shows at compile time, as a huge program: refused with an error.
pub const REGEX_SIZE_LIMIT: usize = 1 << 22;
/// Largest lazy-DFA cache of one regex, in bytes (the regex crate's `dfa_size_limit`): bounds
/// the memory crafted input can make a regex use; past it the engine falls back to a slower
/// linear one.
pub const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;
/// Deepest nesting of groups and repetitions in one regex.
pub const REGEX_NEST_LIMIT: u32 = 100;
/// Most strings one value may expand to through `%placeholder%` combinations (each
/// placeholder multiplies by its number of values).
pub const MAX_EXPANSIONS: usize = 10_000;

/// Expands `%name%` placeholders into every combination of their values.
fn expand_placeholders(s: &str, ph: &Placeholders) -> Result<Vec<String>, RuleErrorKind> {
    let mut out = vec![String::new()];
    let mut rest = s;
    while let Some(start) = rest.find('%') {
        let Some(len) = rest[start + 1..].find('%') else {
            break;
        };
        let name = &rest[start + 1..start + 1 + len];
        let values = ph
            .get(name)
            .ok_or_else(|| RuleErrorKind::Placeholder(name.to_owned()))?;
        let prefix = &rest[..start];
        if out.len().saturating_mul(values.len()) > MAX_EXPANSIONS {
            return Err(invalid(format!(
                "`%{name}%` placeholders expand this value to more than {MAX_EXPANSIONS} strings, nmc's limit"
            )));
        }
        out = out
            .iter()
            .flat_map(|o| values.iter().map(move |v| format!("{o}{prefix}{v}")))
            .collect();
        rest = &rest[start + len + 2..];
    }
    for o in &mut out {
        o.push_str(rest);
    }
    Ok(out)
}

/// The dash variants Windows command lines accept for `-flag` / `/flag`.
const WINDASH: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// Every variant of `s` with each option dash (a `-` or `/` after a non-word character and
/// before a word character) replaced independently by each Windows dash.
fn windash_variants(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let spots: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            matches!(chars[i], '-' | '/')
                && (i == 0 || !word(chars[i - 1]))
                && chars.get(i + 1).is_some_and(|&c| word(c))
        })
        .collect();
    if spots.is_empty() {
        return vec![s.to_owned()];
    }
    if spots.len() > 4 {
        // Bound the product: replace every spot with the same dash.
        return WINDASH
            .iter()
            .map(|&d| {
                let mut c = chars.clone();
                for &i in &spots {
                    c[i] = d;
                }
                c.into_iter().collect()
            })
            .collect();
    }
    let mut out = vec![chars];
    for &i in &spots {
        out = out
            .into_iter()
            .flat_map(|c| {
                WINDASH.iter().map(move |&d| {
                    let mut c = c.clone();
                    c[i] = d;
                    c
                })
            })
            .collect();
    }
    out.into_iter().map(|c| c.into_iter().collect()).collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The three base64 renderings of `data` at offsets 0, 1 and 2 of a longer encoded text, with
/// the characters that depend on unknown neighbours cut off (Sigma `base64offset`).
pub fn base64_offsets(data: &[u8]) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    const END: [usize; 3] = [0, 3, 2];
    (0..3)
        .map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(data);
            let enc = base64_encode(&padded);
            let cut_end = END[(data.len() + i) % 3];
            enc[START[i]..enc.len() - cut_end].to_owned()
        })
        .collect()
}

fn encode(values: Vec<Vec<u8>>, step: &str) -> Vec<Vec<u8>> {
    let utf16 = |v: &[u8], le: bool, bom: bool| -> Vec<u8> {
        let s = String::from_utf8_lossy(v);
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(&[0xFF, 0xFE]);
        }
        for u in s.encode_utf16() {
            let b = if le { u.to_le_bytes() } else { u.to_be_bytes() };
            out.extend_from_slice(&b);
        }
        out
    };
    match step {
        "utf16le" | "wide" => values.iter().map(|v| utf16(v, true, false)).collect(),
        "utf16be" => values.iter().map(|v| utf16(v, false, false)).collect(),
        "utf16" => values.iter().map(|v| utf16(v, true, true)).collect(),
        "base64" => values
            .iter()
            .map(|v| base64_encode(v).into_bytes())
            .collect(),
        _ => values
            .iter()
            .flat_map(|v| base64_offsets(v))
            .map(String::into_bytes)
            .collect(),
    }
}

fn number(v: &Scalar) -> Option<f64> {
    match v {
        Scalar::Int(i) => Some(*i as f64),
        Scalar::Float(f) => Some(*f),
        Scalar::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: &Scalar) -> Option<String> {
    match v {
        Scalar::Str(s) => Some(s.clone()),
        Scalar::Int(i) => Some(i.to_string()),
        Scalar::Float(f) => Some(f.to_string()),
        Scalar::Bool(b) => Some(b.to_string()),
        Scalar::Null => None,
    }
}

/// Compiles one rule value with the field's modifiers into its variants (any may match).
pub fn compile_value(
    value: &Scalar,
    modifiers: &[String],
    placeholders: &Placeholders,
) -> Result<Vec<ValueMatcher>, RuleErrorKind> {
    let m = parse_mods(modifiers)?;
    let out = compile_inner(value, &m, placeholders)?;
    Ok(if m.neq {
        out.into_iter()
            .map(|x| ValueMatcher::Not(Box::new(x)))
            .collect()
    } else {
        out
    })
}

fn compile_inner(
    v: &Scalar,
    m: &Mods,
    ph: &Placeholders,
) -> Result<Vec<ValueMatcher>, RuleErrorKind> {
    if m.exists {
        return match v {
            Scalar::Bool(b) => Ok(vec![ValueMatcher::Exists(*b)]),
            Scalar::Str(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {
                Ok(vec![ValueMatcher::Exists(s.eq_ignore_ascii_case("true"))])
            }
            _ => Err(invalid("`exists` needs true or false")),
        };
    }
    if let Some(part) = m.time {
        let n = number(v).ok_or_else(|| invalid("time modifiers need a number"))?;
        return Ok(vec![ValueMatcher::Time(
            part,
            m.cmp.unwrap_or(NumOp::Eq),
            n,
        )]);
    }
    if let Some(op) = m.cmp {
        let n = number(v).ok_or_else(|| invalid("`lt`/`lte`/`gt`/`gte` need a number"))?;
        return Ok(vec![ValueMatcher::Num(op, n)]);
    }
    if m.fieldref {
        let field = text(v).ok_or_else(|| invalid("`fieldref` needs a field name"))?;
        return Ok(vec![ValueMatcher::FieldRef {
            field,
            pos: m.pos,
            cased: m.cased,
        }]);
    }
    let Some(s) = text(v) else {
        return Ok(vec![ValueMatcher::Null]);
    };
    if m.re {
        let re = RegexBuilder::new(&s)
            .case_insensitive(m.re_flags.case_insensitive)
            .multi_line(m.re_flags.multi_line)
            .dot_matches_new_line(m.re_flags.dot_matches_new_line)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => invalid(format!(
                    "regular expression compiles to more than {limit} bytes, nmc's limit for one regex: refused as pathological (large counted repetitions such as `(a{{1000}}){{1000}}` multiply); simplify it"
                )),
                e if e.to_string().contains("maximum number of nested") => invalid(format!(
                    "regular expression nests deeper than {REGEX_NEST_LIMIT} levels, nmc's limit: refused as pathological: {e}"
                )),
                e => RuleErrorKind::Unsupported(format!(
                    "regular expression not accepted by the regex engine: {e}"
                )),
            })?;
        return Ok(vec![ValueMatcher::Regex(re, m.re_flags)]);
    }
    if m.cidr {
        let net =
            IpNet::parse(&s).ok_or_else(|| invalid(format!("`{s}` is not a CIDR network")))?;
        return Ok(vec![ValueMatcher::Cidr(net)]);
    }
    let plain_scalar = m.pos.is_none() && !m.expand && !m.windash && m.encodings.is_empty();
    match v {
        Scalar::Int(i) if plain_scalar => return Ok(vec![ValueMatcher::Num(NumOp::Eq, *i as f64)]),
        Scalar::Float(f) if plain_scalar => return Ok(vec![ValueMatcher::Num(NumOp::Eq, *f)]),
        Scalar::Bool(b) if plain_scalar => return Ok(vec![ValueMatcher::Bool(*b)]),
        _ => {}
    }
    let mut strings = if m.expand {
        expand_placeholders(&s, ph)?
    } else {
        vec![s]
    };
    let literal = !m.encodings.is_empty();
    if literal {
        let last = m.encodings.last().map(String::as_str);
        if !matches!(last, Some("base64" | "base64offset")) {
            return Err(RuleErrorKind::Unsupported(
                "utf16 encodings not followed by base64/base64offset (binary values)".into(),
            ));
        }
        let mut bytes: Vec<Vec<u8>> = strings.into_iter().map(String::into_bytes).collect();
        for step in &m.encodings {
            bytes = encode(bytes, step);
        }
        strings = bytes
            .into_iter()
            .map(|b| String::from_utf8(b).expect("base64 is ASCII"))
            .collect();
    }
    if m.windash {
        strings = strings.iter().flat_map(|s| windash_variants(s)).collect();
    }
    Ok(strings
        .iter()
        .map(|s| ValueMatcher::Str {
            pat: string_pattern(s, literal, m.pos, m.cased),
            cased: m.cased,
        })
        .collect())
}

fn value_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(std::borrow::Cow::Borrowed(if *b {
            "true"
        } else {
            "false"
        })),
        _ => None,
    }
}

fn value_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn time_part(v: &Value, part: TimePart) -> Option<f64> {
    let ms = match v {
        Value::String(s) => crate::time::parse_timestamp(s).ok()?,
        Value::Number(n) => crate::time::from_epoch_number(n.as_f64()?).ok()?,
        _ => return None,
    };
    let dt = Utc.timestamp_millis_opt(ms).single()?;
    Some(f64::from(match part {
        TimePart::Minute => dt.minute(),
        TimePart::Hour => dt.hour(),
        TimePart::Day => dt.day(),
        TimePart::Week => dt.iso_week().week(),
        TimePart::Month => dt.month(),
        TimePart::Year => dt.year() as u32,
    }))
}

impl ValueMatcher {
    /// Tests a field's value (`None` when the field is absent); `ev` resolves `fieldref`s.
    pub fn matches(&self, v: Option<&Value>, ev: &dyn FieldLookup) -> bool {
        match (self, v) {
            (ValueMatcher::Not(inner), v) => !inner.matches(v, ev),
            (ValueMatcher::Exists(want), v) => *want == v.is_some_and(|v| !v.is_null()),
            (ValueMatcher::Null, None | Some(Value::Null)) => true,
            (_, None | Some(Value::Null)) => false,
            (m, Some(Value::Array(items))) => items.iter().any(|i| m.matches(Some(i), ev)),
            (ValueMatcher::Str { pat, cased }, Some(v)) => {
                value_text(v).is_some_and(|s| pat.matches(&s, *cased))
            }
            (ValueMatcher::Regex(re, _), Some(v)) => value_text(v).is_some_and(|s| re.is_match(&s)),
            (ValueMatcher::Cidr(net), Some(Value::String(s))) => {
                s.trim().parse::<IpAddr>().is_ok_and(|ip| net.contains(ip))
            }
            (ValueMatcher::Num(op, x), Some(v)) => value_number(v).is_some_and(|n| op.test(n, *x)),
            (ValueMatcher::Bool(b), Some(Value::Bool(v))) => b == v,
            (ValueMatcher::Bool(b), Some(Value::String(s))) => {
                s.eq_ignore_ascii_case(if *b { "true" } else { "false" })
            }
            (ValueMatcher::FieldRef { field, pos, cased }, Some(v)) => {
                let (Some(a), Some(b)) = (value_text(v), ev.field(field).and_then(value_text))
                else {
                    return false;
                };
                let (a, b) = if *cased {
                    (a.into_owned(), b.into_owned())
                } else {
                    (a.to_lowercase(), b.to_lowercase())
                };
                match pos {
                    None => a == b,
                    Some(Position::Contains) => a.contains(&b),
                    Some(Position::Start) => a.starts_with(&b),
                    Some(Position::End) => a.ends_with(&b),
                }
            }
            (ValueMatcher::Time(part, op, x), Some(v)) => {
                time_part(v, *part).is_some_and(|n| op.test(n, *x))
            }
            _ => false,
        }
    }
}

/// A string value and its lowercase form, computed at most once however many patterns test it.
pub struct Lowered<'a> {
    raw: &'a str,
    lower: std::cell::OnceCell<std::borrow::Cow<'a, str>>,
}

impl<'a> Lowered<'a> {
    /// Wraps a value.
    pub fn new(raw: &'a str) -> Self {
        Lowered {
            raw,
            lower: std::cell::OnceCell::new(),
        }
    }

    /// The lowercase form.
    pub fn get(&self) -> &str {
        self.lower.get_or_init(|| lower(self.raw))
    }
}

impl ValueMatcher {
    /// Tests a string field value, sharing its lowercase form across matchers.
    pub fn matches_str(&self, v: &Value, s: &Lowered<'_>, ev: &dyn FieldLookup) -> bool {
        match self {
            ValueMatcher::Str { pat, cased: false } => pat.matches_lower(s.get()),
            ValueMatcher::Str { pat, cased: true } => pat.matches(s.raw, true),
            other => other.matches(Some(v), ev),
        }
    }
}

impl Pattern {
    /// Tests an already lowercased string against a case-insensitive pattern.
    pub fn matches_lower(&self, l: &str) -> bool {
        match self {
            Pattern::Exact(p) => l == p,
            Pattern::Prefix(p) => l.starts_with(p.as_str()),
            Pattern::Suffix(p) => l.ends_with(p.as_str()),
            Pattern::Contains(p) => l.contains(p.as_str()),
            Pattern::Glob(t) => glob_match(t, l),
        }
    }

    /// Tests a string; `cased` patterns compare exactly, others ignore case.
    pub fn matches(&self, s: &str, cased: bool) -> bool {
        if cased {
            return match self {
                Pattern::Exact(p) => s == p,
                Pattern::Prefix(p) => s.starts_with(p.as_str()),
                Pattern::Suffix(p) => s.ends_with(p.as_str()),
                Pattern::Contains(p) => s.contains(p.as_str()),
                Pattern::Glob(t) => glob_match(t, s),
            };
        }
        match self {
            Pattern::Exact(p) => eq_fold(s, p),
            Pattern::Prefix(p) => {
                s.len() >= p.len() && s.is_char_boundary(p.len()) && eq_fold(&s[..p.len()], p)
            }
            Pattern::Suffix(p) => {
                s.len() >= p.len()
                    && s.is_char_boundary(s.len() - p.len())
                    && eq_fold(&s[s.len() - p.len()..], p)
            }
            Pattern::Contains(p) => lower(s).contains(p.as_str()),
            Pattern::Glob(toks) => glob_match(toks, &lower(s)),
        }
    }
}

fn eq_fold(s: &str, lower_pat: &str) -> bool {
    if s.is_ascii() && lower_pat.is_ascii() {
        s.eq_ignore_ascii_case(lower_pat)
    } else {
        s.to_lowercase() == lower_pat
    }
}

fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) || !s.is_ascii() {
        std::borrow::Cow::Owned(s.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Wildcard match with a single backtrack point (linear in practice). ASCII input is matched
/// byte-wise without allocating.
fn glob_match(toks: &[GlobTok], s: &str) -> bool {
    if s.is_ascii() {
        return glob_bytes(toks, s.as_bytes());
    }
    glob_chars(toks, s)
}

fn glob_bytes(toks: &[GlobTok], s: &[u8]) -> bool {
    // Walk tokens; a literal after a star is searched for, others must match in place.
    let (mut t, mut i) = (0usize, 0usize);
    let mut back: Option<(usize, usize)> = None; // (token after star, next start in s)
    loop {
        if t == toks.len() {
            if i == s.len() {
                return true;
            }
        } else {
            match &toks[t] {
                GlobTok::Star => {
                    back = Some((t + 1, i));
                    t += 1;
                    continue;
                }
                GlobTok::One if i < s.len() => {
                    t += 1;
                    i += 1;
                    continue;
                }
                GlobTok::Lit(l) if s[i..].starts_with(l.as_bytes()) => {
                    t += 1;
                    i += l.len();
                    continue;
                }
                _ => {}
            }
        }
        match back {
            Some((bt, bi)) if bi < s.len() => {
                back = Some((bt, bi + 1));
                t = bt;
                i = bi + 1;
            }
            _ => return false,
        }
    }
}

fn glob_chars(toks: &[GlobTok], s: &str) -> bool {
    enum T {
        C(char),
        Star,
        One,
    }
    let chars: Vec<char> = s.chars().collect();
    let mut pat = Vec::new();
    for t in toks {
        match t {
            GlobTok::Lit(l) => pat.extend(l.chars().map(T::C)),
            GlobTok::Star => pat.push(T::Star),
            GlobTok::One => pat.push(T::One),
        }
    }
    let (mut p, mut i) = (0usize, 0usize);
    let mut back: Option<(usize, usize)> = None;
    while i < chars.len() {
        match pat.get(p) {
            Some(T::C(c)) if *c == chars[i] => {
                p += 1;
                i += 1;
            }
            Some(T::One) => {
                p += 1;
                i += 1;
            }
            Some(T::Star) => {
                back = Some((p, i));
                p += 1;
            }
            _ => match back {
                Some((bp, bi)) => {
                    p = bp + 1;
                    i = bi + 1;
                    back = Some((bp, bi + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|t| matches!(t, T::Star))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Ev(Value);
    impl FieldLookup for Ev {
        fn field(&self, f: &str) -> Option<&Value> {
            self.0.get(f)
        }
    }

    fn m(v: Scalar, mods: &[&str]) -> Vec<ValueMatcher> {
        m_ph(v, mods, &Placeholders::new())
    }

    fn m_ph(v: Scalar, mods: &[&str], ph: &Placeholders) -> Vec<ValueMatcher> {
        let mods: Vec<String> = mods.iter().map(|s| s.to_string()).collect();
        compile_value(&v, &mods, ph).unwrap()
    }

    fn hit(ms: &[ValueMatcher], v: Value) -> bool {
        let ev = Ev(json!({}));
        ms.iter().any(|m| m.matches(Some(&v), &ev))
    }

    fn s(x: &str) -> Scalar {
        Scalar::Str(x.into())
    }

    #[test]
    fn strings_are_case_insensitive_unless_cased() {
        assert!(hit(&m(s("Admin"), &[]), json!("ADMIN")));
        assert!(!hit(&m(s("Admin"), &[]), json!("Admins")));
        assert!(hit(&m(s("ell"), &["contains"]), json!("HELLO")));
        assert!(hit(&m(s("he"), &["startswith"]), json!("Hello")));
        assert!(hit(&m(s("LO"), &["endswith"]), json!("hello")));
        assert!(!hit(&m(s("he"), &["endswith"]), json!("hello")));
        assert!(hit(&m(s("ÉCOLE"), &[]), json!("école")));
        assert!(!hit(&m(s("Admin"), &["cased"]), json!("admin")));
        assert!(hit(&m(s("Admin"), &["cased"]), json!("Admin")));
        assert!(hit(&m(s("dm"), &["contains", "cased"]), json!("Admin")));
        assert!(!hit(&m(s("DM"), &["contains", "cased"]), json!("Admin")));
    }

    #[test]
    fn wildcards_and_escapes() {
        assert!(hit(&m(s("a*c"), &[]), json!("abbbc")));
        assert!(hit(&m(s("a?c"), &[]), json!("abc")));
        assert!(!hit(&m(s("a?c"), &[]), json!("abbc")));
        assert!(hit(&m(s("*.exe"), &[]), json!("C:\\x\\CMD.EXE")));
        assert!(hit(&m(s("a\\*c"), &[]), json!("a*c")));
        assert!(!hit(&m(s("a\\*c"), &[]), json!("abc")));
        assert!(
            hit(&m(s("a\\\\b"), &[]), json!("a\\b")),
            "escaped backslash"
        );
        assert!(
            hit(&m(s("c:\\windows\\\\*"), &[]), json!("C:\\Windows\\x")),
            "escaped backslash before a wildcard"
        );
        assert!(
            hit(&m(s("c:\\win*"), &[]), json!("C:\\Windows")),
            "plain backslash"
        );
        assert!(hit(&m(s("*a*b*"), &[]), json!("xxaxxbxx")));
        assert!(!hit(&m(s("*a*b*"), &[]), json!("xxbxxaxx")));
        assert!(hit(&m(s("*"), &[]), json!("")));
        assert!(
            hit(&m(s("x*"), &["contains"]), json!("abxq")),
            "wildcards inside contains"
        );
    }

    #[test]
    fn numbers_bools_null_exists() {
        assert!(hit(&m(Scalar::Int(50126), &[]), json!(50126)));
        assert!(hit(&m(Scalar::Int(50126), &[]), json!("50126")));
        assert!(!hit(&m(Scalar::Int(50126), &[]), json!("0")));
        assert!(hit(&m(Scalar::Int(501), &["startswith"]), json!(50126)));
        assert!(hit(&m(Scalar::Bool(true), &[]), json!(true)));
        assert!(hit(&m(Scalar::Bool(false), &[]), json!("False")));
        let ev = Ev(json!({}));
        let null = &m(Scalar::Null, &[])[0];
        assert!(null.matches(None, &ev));
        assert!(null.matches(Some(&json!(null)), &ev));
        assert!(!null.matches(Some(&json!("")), &ev));
        let exists = &m(Scalar::Bool(true), &["exists"])[0];
        assert!(exists.matches(Some(&json!("")), &ev));
        assert!(!exists.matches(None, &ev));
        assert!(m(Scalar::Bool(false), &["exists"])[0].matches(None, &ev));
    }

    #[test]
    fn comparisons_and_neq() {
        assert!(hit(&m(Scalar::Int(10), &["gt"]), json!(11)));
        assert!(!hit(&m(Scalar::Int(10), &["gt"]), json!(10)));
        assert!(hit(&m(Scalar::Int(10), &["gte"]), json!("10")));
        assert!(hit(&m(Scalar::Float(0.5), &["lt"]), json!(0.25)));
        assert!(hit(&m(Scalar::Int(3), &["lte"]), json!(3)));
        assert!(!hit(&m(Scalar::Int(3), &["lte"]), json!("x")));
        assert!(hit(&m(s("a"), &["neq"]), json!("b")));
        assert!(!hit(&m(s("a"), &["neq"]), json!("A")));
        let ev = Ev(json!({}));
        assert!(
            m(s("a"), &["neq"])[0].matches(None, &ev),
            "a missing field is not equal"
        );
    }

    #[test]
    fn regex_with_flags() {
        assert!(hit(&m(s("^ab+c$"), &["re"]), json!("abbc")));
        assert!(
            !hit(&m(s("^ab+c$"), &["re"]), json!("ABBC")),
            "re is case-sensitive by default"
        );
        assert!(hit(&m(s("^ab+c$"), &["re", "i"]), json!("ABBC")));
        assert!(hit(&m(s("b.c"), &["re", "s"]), json!("ab\nc")));
        assert!(!hit(&m(s("b.c"), &["re"]), json!("ab\nc")));
        assert!(hit(&m(s("^c$"), &["re", "m"]), json!("ab\nc")));
        assert!(
            hit(&m(s("\\d{3}"), &["re"]), json!("x123y")),
            "searched anywhere"
        );
        let e = compile_value(&s("(unclosed"), &["re".into()], &Placeholders::new()).unwrap_err();
        assert!(matches!(e, RuleErrorKind::Unsupported(_)));
        assert!(compile_value(&s("x"), &["i".into()], &Placeholders::new()).is_err());
    }

    #[test]
    fn pathological_regexes_and_expansions_are_refused() {
        let ph = Placeholders::new();
        let re = |p: &str| compile_value(&s(p), &["re".into()], &ph);
        for bomb in [
            r"(a{1000}){1000}",
            r"\w{1000}{1000}",
            r"((((.*){100}){100}){100})",
        ] {
            let e = re(bomb).unwrap_err();
            assert!(matches!(e, RuleErrorKind::Invalid(_)), "{bomb}: {e}");
            assert!(e.to_string().contains("4194304 bytes"), "{e}");
        }
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        let e = re(&deep).unwrap_err();
        assert!(matches!(e, RuleErrorKind::Invalid(_)), "{e}");
        assert!(e.to_string().contains("100 levels"), "{e}");
        // A regex at the limits of good taste still compiles, and matching stays linear.
        let m = re(r"(a|aa)*b").unwrap();
        let long = "a".repeat(200_000);
        let started = std::time::Instant::now();
        assert!(!m[0].matches(Some(&json!(long)), &Ev(json!({}))));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));

        let ph: Placeholders = [(
            "p".to_string(),
            (0..10).map(|i| i.to_string()).collect::<Vec<_>>(),
        )]
        .into();
        let e = compile_value(&s(&"%p%".repeat(5)), &["expand".into()], &ph).unwrap_err();
        assert!(e.to_string().contains("10000 strings"), "{e}");
        assert_eq!(
            compile_value(&s(&"%p%".repeat(4)), &["expand".into()], &ph)
                .unwrap()
                .len(),
            10_000
        );
    }

    #[test]
    fn cidr_v4_and_v6() {
        assert!(hit(&m(s("10.0.0.0/8"), &["cidr"]), json!("10.2.3.4")));
        assert!(!hit(&m(s("10.0.0.0/8"), &["cidr"]), json!("11.2.3.4")));
        assert!(hit(
            &m(s("192.168.1.7/32"), &["cidr"]),
            json!("192.168.1.7")
        ));
        assert!(hit(&m(s("0.0.0.0/0"), &["cidr"]), json!("8.8.8.8")));
        assert!(hit(&m(s("fe80::/10"), &["cidr"]), json!("fe80::1")));
        assert!(!hit(&m(s("fe80::/10"), &["cidr"]), json!("2001:db8::1")));
        assert!(!hit(&m(s("10.0.0.0/8"), &["cidr"]), json!("fe80::1")));
        assert!(!hit(&m(s("10.0.0.0/8"), &["cidr"]), json!("not an ip")));
        assert!(compile_value(&s("10.0.0.0/33"), &["cidr".into()], &Placeholders::new()).is_err());
    }

    #[test]
    fn base64_and_offsets() {
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_encode(b""), "");
        // The SigmaHQ/pySigma reference values for `base64offset` of "/bin/bash".
        assert_eq!(
            base64_offsets(b"/bin/bash"),
            vec!["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]
        );
        let ms = m(s("/bin/bash"), &["base64offset", "contains"]);
        assert_eq!(ms.len(), 3);
        assert!(hit(&ms, json!("echo ZWNobyAvYmluL2Jhc2ggLWk= | base64 -d")));
        assert!(hit(&m(s("hello"), &["base64"]), json!("aGVsbG8=")));
    }

    #[test]
    fn utf16_then_base64() {
        // "ab" UTF-16LE = 61 00 62 00 -> "YQBiAA=="
        assert!(hit(&m(s("ab"), &["utf16le", "base64"]), json!("YQBiAA==")));
        assert!(hit(&m(s("ab"), &["wide", "base64"]), json!("YQBiAA==")));
        // UTF-16BE = 00 61 00 62 -> "AGEAYg=="
        assert!(hit(&m(s("ab"), &["utf16be", "base64"]), json!("AGEAYg==")));
        // BOM + LE = FF FE 61 00 62 00 -> "//5hAGIA"
        assert!(hit(&m(s("ab"), &["utf16", "base64"]), json!("//5hAGIA")));
        let e = compile_value(&s("ab"), &["wide".into()], &Placeholders::new()).unwrap_err();
        assert!(matches!(e, RuleErrorKind::Unsupported(_)));
    }

    #[test]
    fn windash() {
        let ms = m(s(" -enc "), &["windash", "contains"]);
        assert_eq!(ms.len(), 5);
        for cmd in [
            "x -enc y",
            "x /enc y",
            "x \u{2013}enc y",
            "x \u{2014}enc y",
            "x \u{2015}enc y",
        ] {
            assert!(hit(&ms, json!(cmd)), "{cmd}");
        }
        assert!(!hit(&ms, json!("x +enc y")));
        assert_eq!(
            windash_variants("a-b").len(),
            1,
            "a dash inside a word is not an option dash"
        );
        assert_eq!(windash_variants("-a -b").len(), 25);
    }

    #[test]
    fn fieldref_and_time_parts() {
        let ev = Ev(json!({"other": "Bob", "name": "bob", "path": "c:\\users\\bob\\x"}));
        let eq = &m(s("other"), &["fieldref"])[0];
        assert!(eq.matches(ev.field("name"), &ev));
        assert!(!m(s("other"), &["fieldref", "cased"])[0].matches(ev.field("name"), &ev));
        assert!(m(s("name"), &["fieldref", "contains"])[0].matches(ev.field("path"), &ev));
        assert!(!m(s("missing"), &["fieldref"])[0].matches(ev.field("name"), &ev));
        let t = json!("2024-03-01T23:15:00Z");
        assert!(hit(&m(Scalar::Int(23), &["hour"]), t.clone()));
        assert!(hit(&m(Scalar::Int(20), &["hour", "gte"]), t.clone()));
        assert!(hit(&m(Scalar::Int(15), &["minute"]), t.clone()));
        assert!(hit(&m(Scalar::Int(1), &["day"]), t.clone()));
        assert!(hit(&m(Scalar::Int(9), &["week"]), t.clone()));
        assert!(hit(&m(Scalar::Int(3), &["month"]), t.clone()));
        assert!(hit(&m(Scalar::Int(2024), &["year"]), t));
    }

    #[test]
    fn expand_placeholders_from_config() {
        let ph: Placeholders = [(
            "admins".to_string(),
            vec!["alice".to_string(), "bob".to_string()],
        )]
        .into();
        let ms = m_ph(s("%admins%"), &["expand"], &ph);
        assert!(hit(&ms, json!("BOB")));
        assert!(!hit(&ms, json!("eve")));
        let ms = m_ph(s("corp\\%admins%"), &["expand", "startswith"], &ph);
        assert!(hit(&ms, json!("corp\\alice.x")));
        let e = compile_value(&s("%nobody%"), &["expand".into()], &ph).unwrap_err();
        assert!(
            matches!(e, RuleErrorKind::Placeholder(ref n) if n == "nobody"),
            "{e}"
        );
    }

    #[test]
    fn byte_and_char_globs_agree() {
        // Deterministic pseudo-random patterns over a small alphabet, so that stars must backtrack.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..20_000 {
            let pat: String = (0..next(7))
                .map(|_| ['a', 'b', '*', '?'][next(4) as usize])
                .collect();
            let hay: String = (0..next(9)).map(|_| ['a', 'b'][next(2) as usize]).collect();
            let toks = glob_tokens(&pat);
            assert_eq!(
                glob_bytes(&toks, hay.as_bytes()),
                glob_chars(&toks, &hay),
                "{pat:?} on {hay:?}"
            );
        }
    }

    #[test]
    fn arrays_match_any_element() {
        assert!(hit(&m(s("b"), &[]), json!(["a", "B"])));
        assert!(!hit(&m(s("c"), &[]), json!(["a", "b"])));
    }

    #[test]
    fn unknown_modifiers_say_so() {
        let e = compile_value(&s("x"), &["gzip".into()], &Placeholders::new()).unwrap_err();
        assert!(matches!(e, RuleErrorKind::Unsupported(_)));
        assert!(e.to_string().contains("gzip"));
    }
}
