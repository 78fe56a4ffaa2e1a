//! Sigma `condition` expressions: tokenizer and recursive-descent parser to a boolean tree over
//! selection indices.
//!
//! Grammar (lowest precedence first):
//! `or := and ("or" and)*`, `and := not ("and" not)*`, `not := "not" not | atom`,
//! `atom := "(" or ")" | ("1"|"any"|"all") "of" (pattern|"them") | name`.

use super::RuleErrorKind;
use super::matcher::{Pattern, glob_tokens};

/// A parsed condition over selection indices.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Selection by index.
    Sel(usize),
    /// All must hold.
    And(Vec<Expr>),
    /// Any must hold.
    Or(Vec<Expr>),
    /// Negation.
    Not(Box<Expr>),
}

impl Expr {
    /// Evaluates with a per-selection predicate.
    pub fn eval(&self, sel: &mut impl FnMut(usize) -> bool) -> bool {
        match self {
            Expr::Sel(i) => sel(*i),
            Expr::And(xs) => xs.iter().all(|x| x.eval(sel)),
            Expr::Or(xs) => xs.iter().any(|x| x.eval(sel)),
            Expr::Not(x) => !x.eval(sel),
        }
    }

    /// Evaluates in three-valued (Kleene) logic, a selection being unknown (`None`) when the
    /// predicate cannot tell: `Some(false)` means false whatever the unknown selections hold.
    pub fn eval_partial(&self, sel: &mut impl FnMut(usize) -> Option<bool>) -> Option<bool> {
        match self {
            Expr::Sel(i) => sel(*i),
            Expr::And(xs) => kleene(xs.iter().map(|x| x.eval_partial(sel)), false),
            Expr::Or(xs) => kleene(xs.iter().map(|x| x.eval_partial(sel)), true),
            Expr::Not(x) => x.eval_partial(sel).map(|b| !b),
        }
    }
}

/// Three-valued AND (`decisive` false) or OR (`decisive` true) of `items`, lazily: the first
/// item equal to `decisive` decides; otherwise unknown if any item is, else `!decisive`.
pub(crate) fn kleene(items: impl Iterator<Item = Option<bool>>, decisive: bool) -> Option<bool> {
    let mut out = Some(!decisive);
    for item in items {
        match item {
            Some(b) if b == decisive => return Some(decisive),
            None => out = None,
            Some(_) => {}
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Word(String),
}

fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in s.chars() {
        match c {
            '(' | ')' | ' ' | '\t' | '\n' | '\r' => {
                if !word.is_empty() {
                    out.push(Tok::Word(std::mem::take(&mut word)));
                }
                match c {
                    '(' => out.push(Tok::LParen),
                    ')' => out.push(Tok::RParen),
                    _ => {}
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(Tok::Word(word));
    }
    out
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    names: &'a [String],
}

fn invalid(msg: impl Into<String>) -> RuleErrorKind {
    RuleErrorKind::Invalid(msg.into())
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<&str> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if self.peek_word().is_some_and(|w| w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, RuleErrorKind> {
        let mut xs = vec![self.and()?];
        while self.keyword("or") {
            xs.push(self.and()?);
        }
        Ok(if xs.len() == 1 {
            xs.pop().expect("one")
        } else {
            Expr::Or(xs)
        })
    }

    fn and(&mut self) -> Result<Expr, RuleErrorKind> {
        let mut xs = vec![self.not()?];
        while self.keyword("and") {
            xs.push(self.not()?);
        }
        Ok(if xs.len() == 1 {
            xs.pop().expect("one")
        } else {
            Expr::And(xs)
        })
    }

    fn not(&mut self) -> Result<Expr, RuleErrorKind> {
        if self.keyword("not") {
            Ok(Expr::Not(Box::new(self.not()?)))
        } else {
            self.atom()
        }
    }

    fn atom(&mut self) -> Result<Expr, RuleErrorKind> {
        match self.toks.get(self.pos).cloned() {
            None => Err(invalid("condition ends too early")),
            Some(Tok::RParen) => Err(invalid("unexpected `)` in condition")),
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.or()?;
                if self.toks.get(self.pos) != Some(&Tok::RParen) {
                    return Err(invalid("missing `)` in condition"));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Word(w)) => {
                self.pos += 1;
                let quant = match w.to_ascii_lowercase().as_str() {
                    "1" | "any" => Some(false),
                    "all" => Some(true),
                    "|" => {
                        return Err(RuleErrorKind::Unsupported(
                            "aggregation (`| count() ...`) in condition; use a correlation rule"
                                .into(),
                        ));
                    }
                    _ => None,
                };
                if let Some(all) = quant {
                    if !self.keyword("of") {
                        return Err(invalid(format!("expected `of` after `{w}`")));
                    }
                    let target = self
                        .peek_word()
                        .ok_or_else(|| invalid("expected a pattern or `them` after `of`"))?
                        .to_owned();
                    self.pos += 1;
                    let idx: Vec<usize> = if target == "them" {
                        (0..self.names.len())
                            .filter(|&i| !self.names[i].starts_with('_'))
                            .collect()
                    } else {
                        let pat = Pattern::Glob(glob_tokens(&target));
                        (0..self.names.len())
                            .filter(|&i| pat.matches(&self.names[i], true))
                            .collect()
                    };
                    if idx.is_empty() {
                        return Err(invalid(format!("`{target}` matches no selection")));
                    }
                    let xs = idx.into_iter().map(Expr::Sel).collect();
                    return Ok(if all { Expr::And(xs) } else { Expr::Or(xs) });
                }
                if w.contains('|') {
                    return Err(RuleErrorKind::Unsupported(
                        "aggregation (`| count() ...`) in condition; use a correlation rule".into(),
                    ));
                }
                self.names
                    .iter()
                    .position(|n| *n == w)
                    .map(Expr::Sel)
                    .ok_or_else(|| invalid(format!("condition names unknown selection `{w}`")))
            }
        }
    }
}

/// Parses a condition over the given selection names.
pub fn parse_condition(cond: &str, names: &[String]) -> Result<Expr, RuleErrorKind> {
    let mut p = Parser {
        toks: tokenize(cond),
        pos: 0,
        names,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(
            match p.toks[p.pos..].iter().any(|t| *t == Tok::Word("|".into())) {
                true => RuleErrorKind::Unsupported(
                    "aggregation (`| count() ...`) in condition; use a correlation rule".into(),
                ),
                false => invalid(format!("unexpected trailing tokens in condition `{cond}`")),
            },
        );
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["sel", "sel_b", "filter", "_hidden"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn ev(cond: &str, truth: [bool; 4]) -> bool {
        parse_condition(cond, &names())
            .unwrap()
            .eval(&mut |i| truth[i])
    }

    #[test]
    fn precedence_and_parens() {
        // and binds tighter than or
        assert!(ev("sel or sel_b and filter", [true, false, false, false]));
        assert!(!ev(
            "(sel or sel_b) and filter",
            [true, false, false, false]
        ));
        assert!(ev("sel and not filter", [true, false, false, false]));
        assert!(!ev("sel and not filter", [true, false, true, false]));
        assert!(ev("not not sel", [true, false, false, false]));
    }

    #[test]
    fn partial_evaluation_is_false_only_when_the_unknowns_cannot_matter() {
        // `sel_b` unknown: every assignment of it is tried against the partial answer.
        for cond in [
            "sel and sel_b",
            "sel or sel_b",
            "sel and not sel_b",
            "not (sel or sel_b) and filter",
            "1 of sel*",
            "all of sel* or filter",
        ] {
            let e = parse_condition(cond, &names()).unwrap();
            for bits in 0..8u8 {
                let known = |i: usize| bits & (1 << (i.min(2))) != 0;
                let partial = e.eval_partial(&mut |i| (i != 1).then(|| known(i)));
                let outcomes: Vec<bool> = [false, true]
                    .iter()
                    .map(|&b| e.eval(&mut |i| if i == 1 { b } else { known(i) }))
                    .collect();
                let want = match outcomes[..] {
                    [false, false] => Some(false),
                    [true, true] => Some(true),
                    _ => None,
                };
                assert_eq!(partial, want, "{cond} with {bits:03b}");
            }
        }
    }

    #[test]
    fn quantifiers() {
        assert!(ev("1 of sel*", [false, true, false, false]));
        assert!(!ev("all of sel*", [false, true, false, false]));
        assert!(ev("all of sel*", [true, true, false, false]));
        assert!(
            ev("all of them", [true, true, true, false]),
            "them skips _ names"
        );
        assert!(ev("1 of them and not filter", [false, true, false, false]));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse_condition("nope", &names()),
            Err(RuleErrorKind::Invalid(_))
        ));
        assert!(parse_condition("(sel", &names()).is_err());
        assert!(parse_condition("sel)", &names()).is_err());
        assert!(parse_condition("sel and", &names()).is_err());
        assert!(matches!(
            parse_condition("sel | count() > 5", &names()),
            Err(RuleErrorKind::Unsupported(_))
        ));
    }
}
