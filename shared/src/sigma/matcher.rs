//! Value matchers: one Sigma value plus its modifiers, compiled once, tested per event value.
//!
//! Strings match case-insensitively (Sigma's default). Patterns are lowercased at compile time;
//! event values are compared with ASCII case folding without allocating where possible.

use serde_json::Value;

use super::RuleErrorKind;
use super::parse::Scalar;

/// A compiled string pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Whole value equals (lowercased).
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
    /// Literal text (lowercased).
    Lit(String),
    /// `*`: any run of characters.
    Star,
    /// `?`: one character.
    One,
}

/// A compiled matcher for one value of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueMatcher {
    /// String pattern (also applied to numbers and booleans as text).
    Str(Pattern),
    /// Number equality (also matches a string holding the same number).
    Num(f64),
    /// Boolean equality.
    Bool(bool),
    /// Field missing or null.
    Null,
    /// `exists` modifier: field present (true) or absent (false).
    Exists(bool),
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
                    toks.push(GlobTok::Lit(std::mem::take(&mut lit).to_lowercase()));
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
        toks.push(GlobTok::Lit(lit.to_lowercase()));
    }
    toks
}

/// Turns glob tokens into the cheapest equivalent pattern.
fn simplify(toks: Vec<GlobTok>) -> Pattern {
    use GlobTok::*;
    match toks.as_slice() {
        [] => Pattern::Exact(String::new()),
        [Lit(a)] => Pattern::Exact(a.clone()),
        [Star, Lit(a), Star] => Pattern::Contains(a.clone()),
        [Lit(a), Star] => Pattern::Prefix(a.clone()),
        [Star, Lit(a)] => Pattern::Suffix(a.clone()),
        [Star] => Pattern::Glob(vec![Star]),
        _ => Pattern::Glob(toks),
    }
}

/// Compiles one value with the field's modifiers (`all` is handled by the caller).
pub fn compile_value(value: &Scalar, modifiers: &[String]) -> Result<ValueMatcher, RuleErrorKind> {
    let mut wrap: Option<&str> = None;
    let mut exists = false;
    for m in modifiers {
        match m.as_str() {
            "contains" | "startswith" | "endswith" => {
                if wrap.is_some() {
                    return Err(RuleErrorKind::Invalid(format!(
                        "modifier `{m}` combined with another position modifier"
                    )));
                }
                wrap = Some(m);
            }
            "all" => {}
            "exists" => exists = true,
            other => {
                return Err(RuleErrorKind::Unsupported(format!(
                    "modifier `{other}` (arrives with the full Sigma engine)"
                )));
            }
        }
    }
    if exists {
        return match value {
            Scalar::Bool(b) => Ok(ValueMatcher::Exists(*b)),
            _ => Err(RuleErrorKind::Invalid(
                "`exists` needs true or false".into(),
            )),
        };
    }
    let text = match value {
        Scalar::Null => return Ok(ValueMatcher::Null),
        Scalar::Int(i) if wrap.is_none() => return Ok(ValueMatcher::Num(*i as f64)),
        Scalar::Float(f) if wrap.is_none() => return Ok(ValueMatcher::Num(*f)),
        Scalar::Bool(b) if wrap.is_none() => return Ok(ValueMatcher::Bool(*b)),
        Scalar::Str(s) => s.clone(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    };
    let mut toks = glob_tokens(&text);
    match wrap {
        Some("contains") => {
            toks.insert(0, GlobTok::Star);
            toks.push(GlobTok::Star);
        }
        Some("startswith") => toks.push(GlobTok::Star),
        Some("endswith") => toks.insert(0, GlobTok::Star),
        _ => {}
    }
    toks.dedup_by(|a, b| *a == GlobTok::Star && *b == GlobTok::Star);
    Ok(ValueMatcher::Str(simplify(toks)))
}

impl ValueMatcher {
    /// Tests a field's value (`None` when the field is absent).
    pub fn matches(&self, v: Option<&Value>) -> bool {
        match (self, v) {
            (ValueMatcher::Exists(want), v) => *want == v.is_some(),
            (ValueMatcher::Null, None | Some(Value::Null)) => true,
            (_, None | Some(Value::Null)) => false,
            (m, Some(Value::Array(items))) => items.iter().any(|i| m.matches(Some(i))),
            (ValueMatcher::Str(p), Some(Value::String(s))) => p.matches(s),
            (ValueMatcher::Str(p), Some(Value::Number(n))) => p.matches(&n.to_string()),
            (ValueMatcher::Str(p), Some(Value::Bool(b))) => {
                p.matches(if *b { "true" } else { "false" })
            }
            (ValueMatcher::Num(x), Some(Value::Number(n))) => n.as_f64() == Some(*x),
            (ValueMatcher::Num(x), Some(Value::String(s))) => {
                s.trim().parse::<f64>().ok() == Some(*x)
            }
            (ValueMatcher::Bool(b), Some(Value::Bool(v))) => b == v,
            (ValueMatcher::Bool(b), Some(Value::String(s))) => {
                s.eq_ignore_ascii_case(if *b { "true" } else { "false" })
            }
            _ => false,
        }
    }
}

impl Pattern {
    /// Tests a string, ignoring case.
    pub fn matches(&self, s: &str) -> bool {
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
    if s.is_ascii() {
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

/// Iterative wildcard match with single backtrack point (linear in practice).
fn glob_match(toks: &[GlobTok], s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    // Expand to char-level tokens: a literal becomes a sequence of exact chars.
    enum T {
        C(char),
        Star,
        One,
    }
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

    fn m(v: Scalar, mods: &[&str]) -> ValueMatcher {
        let mods: Vec<String> = mods.iter().map(|s| s.to_string()).collect();
        compile_value(&v, &mods).unwrap()
    }

    fn s(x: &str) -> Scalar {
        Scalar::Str(x.into())
    }

    #[test]
    fn strings_are_case_insensitive() {
        assert!(m(s("Admin"), &[]).matches(Some(&json!("ADMIN"))));
        assert!(!m(s("Admin"), &[]).matches(Some(&json!("Admins"))));
        assert!(m(s("ell"), &["contains"]).matches(Some(&json!("HELLO"))));
        assert!(m(s("he"), &["startswith"]).matches(Some(&json!("Hello"))));
        assert!(m(s("LO"), &["endswith"]).matches(Some(&json!("hello"))));
        assert!(!m(s("he"), &["endswith"]).matches(Some(&json!("hello"))));
    }

    #[test]
    fn wildcards_and_escapes() {
        assert!(m(s("a*c"), &[]).matches(Some(&json!("abbbc"))));
        assert!(m(s("a?c"), &[]).matches(Some(&json!("abc"))));
        assert!(!m(s("a?c"), &[]).matches(Some(&json!("abbc"))));
        assert!(m(s("*.exe"), &[]).matches(Some(&json!("C:\\x\\CMD.EXE"))));
        assert!(m(s("a\\*c"), &[]).matches(Some(&json!("a*c"))));
        assert!(!m(s("a\\*c"), &[]).matches(Some(&json!("abc"))));
        assert!(m(s("*a*b*"), &[]).matches(Some(&json!("xxaxxbxx"))));
        assert!(!m(s("*a*b*"), &[]).matches(Some(&json!("xxbxxaxx"))));
        assert!(m(s("*"), &[]).matches(Some(&json!(""))));
    }

    #[test]
    fn numbers_bools_null_exists() {
        assert!(m(Scalar::Int(50126), &[]).matches(Some(&json!(50126))));
        assert!(m(Scalar::Int(50126), &[]).matches(Some(&json!("50126"))));
        assert!(!m(Scalar::Int(50126), &[]).matches(Some(&json!("0"))));
        assert!(m(Scalar::Int(501), &["startswith"]).matches(Some(&json!(50126))));
        assert!(m(Scalar::Bool(true), &[]).matches(Some(&json!(true))));
        assert!(m(Scalar::Bool(false), &[]).matches(Some(&json!("False"))));
        assert!(m(Scalar::Null, &[]).matches(None));
        assert!(m(Scalar::Null, &[]).matches(Some(&json!(null))));
        assert!(!m(Scalar::Null, &[]).matches(Some(&json!(""))));
        assert!(m(Scalar::Bool(true), &["exists"]).matches(Some(&json!(""))));
        assert!(m(Scalar::Bool(false), &["exists"]).matches(None));
        assert!(!m(s("x"), &[]).matches(None));
    }

    #[test]
    fn arrays_match_any_element() {
        assert!(m(s("b"), &[]).matches(Some(&json!(["a", "B"]))));
        assert!(!m(s("c"), &[]).matches(Some(&json!(["a", "b"]))));
    }

    #[test]
    fn unsupported_modifiers_say_so() {
        let e = compile_value(&s("x"), &["base64".into()]).unwrap_err();
        assert!(matches!(e, RuleErrorKind::Unsupported(_)));
        assert!(e.to_string().contains("base64"));
    }
}
