//! Plain JSON access shared by event parsing and field mapping: parsing a payload strictly
//! (duplicate keys and deep nesting refused), keeping only the parts something reads
//! ([`kept`]), reading a field by name or dotted path, and naming a value's kind in messages.
//! Depends on nothing else in the crate.

pub mod kept;

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Deepest nesting of arrays and objects an event may have (the top-level object is level 1).
/// Real telemetry nests a handful of levels (Windows XML rendered as JSON about 6); serde_json
/// itself stops at 128, and dropping or walking a value recurses once per level.
pub const MAX_DEPTH: usize = 64;

/// Why a payload is refused by [`parse_strict`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    /// Not JSON (the parser's message, with line and column).
    #[error("{0}")]
    Malformed(String),
    /// Not UTF-8: JSON text must be.
    #[error("payload is not UTF-8: invalid byte sequence at byte {at}; JSON text must be UTF-8")]
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        at: usize,
    },
    /// An object names the same key twice. Readers disagree on which value counts (serde_json
    /// keeps the last, many keep the first), so a rule could see another value than the SIEM or
    /// the analyst: a way to evade detection.
    #[error("duplicate key `{key}` in one object ({position}); each key must appear once")]
    DuplicateKey {
        /// The key (truncated to 128 bytes).
        key: String,
        /// Where the second occurrence was found.
        position: String,
    },
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("arrays and objects nested deeper than {max} levels ({position})")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where the limit was crossed.
        position: String,
    },
}

/// What the visitor refused, beyond plain syntax (read back after the parser's error).
#[derive(Debug, Clone, Default)]
enum Refused {
    #[default]
    Nothing,
    Duplicate(String),
    TooDeep,
}

/// Parses one JSON document like `serde_json::from_slice::<Value>`, but refuses an object with a
/// duplicate key and nesting deeper than [`MAX_DEPTH`], and says when the bytes are not UTF-8.
/// Costs the same as `from_slice` on good input: the duplicate check is the map insertion
/// serde_json does anyway.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictError> {
    kept::parse_kept(bytes, kept::KeepTree::everything())
}

#[cold]
fn classify(bytes: &[u8], e: serde_json::Error, refused: Refused) -> StrictError {
    let position = format!("line {} column {}", e.line(), e.column());
    match refused {
        Refused::Duplicate(key) => StrictError::DuplicateKey { key, position },
        Refused::TooDeep => StrictError::TooDeep {
            max: MAX_DEPTH,
            position,
        },
        Refused::Nothing => match std::str::from_utf8(bytes) {
            Err(u) => StrictError::InvalidUtf8 {
                at: u.valid_up_to(),
            },
            Ok(_) => StrictError::Malformed(e.to_string()),
        },
    }
}

/// The value visitor: serde_json's own, plus the depth and duplicate-key checks.
#[derive(Clone, Copy)]
struct Strict<'a> {
    /// Containers around the value being read.
    depth: usize,
    refused: &'a Cell<Refused>,
}

impl<'a> Strict<'a> {
    fn inner(&self) -> Result<Strict<'a>, Refused> {
        if self.depth >= MAX_DEPTH {
            return Err(Refused::TooDeep);
        }
        Ok(Strict {
            depth: self.depth + 1,
            refused: self.refused,
        })
    }

    fn refuse<E: de::Error>(&self, r: Refused) -> E {
        let msg = match &r {
            Refused::Duplicate(k) => format!("duplicate key `{k}`"),
            _ => format!("nested deeper than {MAX_DEPTH}"),
        };
        self.refused.set(r);
        E::custom(msg)
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.inner().map_err(|r| self.refuse(r))?;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inner().map_err(|r| self.refuse(r))?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(inner)?;
            match out.entry(key) {
                Entry::Vacant(e) => {
                    e.insert(v);
                }
                Entry::Occupied(e) => {
                    return Err(self.refuse(Refused::Duplicate(shown_key(e.key()))));
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A duplicate key as an error names it: at most 128 bytes of it.
fn shown_key(key: &str) -> String {
    if key.len() <= 128 {
        return key.to_owned();
    }
    let mut end = 128;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &key[..end])
}

/// Reads a field: an exact top-level key first (flattened collectors use dotted keys), then a
/// dotted path through nested objects. It runs for every field of every event: the dots are
/// found with plain byte scans (field names are short), not `str` pattern searchers, whose
/// cost depended on what the compiler chose to inline around them.
#[inline]
pub fn get_field<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    let obj = body.as_object()?;
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut dot = path.bytes().position(|b| b == b'.')?;
    let mut cur = body;
    let mut rest = path;
    loop {
        // `.` is ASCII: splitting at it keeps both sides valid UTF-8.
        cur = cur.as_object()?.get(&rest[..dot])?;
        rest = &rest[dot + 1..];
        match rest.bytes().position(|b| b == b'.') {
            Some(next) => dot = next,
            None => return cur.as_object()?.get(rest),
        }
    }
}

/// The JSON name of a value's kind (`"object"`, `"array"`, ...), for error messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths() {
        let v = json!({"a.b": 1, "a": {"b": 2, "c": {"d": "x"}}});
        assert_eq!(
            get_field(&v, "a.b"),
            Some(&json!(1)),
            "exact dotted key wins"
        );
        assert_eq!(get_field(&v, "a.c.d"), Some(&json!("x")));
        assert_eq!(get_field(&v, "a.z"), None);
        assert_eq!(get_field(&v, "missing"), None);
        assert_eq!(get_field(&v, "a.c"), Some(&json!({"d": "x"})));
        assert_eq!(
            get_field(&v, "a."),
            None,
            "an empty last part names nothing"
        );
        assert_eq!(get_field(&v, ".a"), None);
        assert_eq!(get_field(&json!([1]), "a"), None, "not an object");
    }

    #[test]
    fn strict_parse_equals_serde_json_on_good_input() {
        let docs: [&[u8]; 6] = [
            br#"{"a": 1, "b": [1, 2.5, -3, "x\u00e9", null, true], "c": {"d": {}}}"#,
            br#"  {"n": 18446744073709551615, "m": -9223372036854775808, "f": 1e300}  "#,
            br#"{"big": 1234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890}"#,
            br#"[]"#,
            br#""just a string""#,
            br#"{"k": "caf\u00e9", "K": 1}"#,
        ];
        for d in docs {
            assert_eq!(
                parse_strict(d).unwrap(),
                serde_json::from_slice::<Value>(d).unwrap(),
                "{}",
                String::from_utf8_lossy(d)
            );
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e =
            parse_strict(br#"{"UserPrincipalName": "evil@x", "UserPrincipalName": "benign@x"}"#)
                .unwrap_err();
        assert!(
            matches!(&e, StrictError::DuplicateKey { key, .. } if key == "UserPrincipalName"),
            "{e:?}"
        );
        assert!(e.to_string().contains("line 1 column"), "{e}");
        let e = parse_strict(br#"{"a": [{"b": 1, "c": {"x": 1, "x": 1}}]}"#).unwrap_err();
        assert!(matches!(&e, StrictError::DuplicateKey { key, .. } if key == "x"));
        // Keys equal after unescaping are the same key.
        let e = parse_strict(r#"{"caf\u00e9": 1, "cafe": 2, "café": 3}"#.as_bytes());
        assert!(matches!(e, Err(StrictError::DuplicateKey { .. })), "{e:?}");
        // Case variants are different keys (JSON is case-sensitive).
        assert!(parse_strict(br#"{"a": 1, "A": 2}"#).is_ok());
        // A long key is named truncated.
        let long = "k".repeat(1000);
        let doc = format!(r#"{{"{long}": 1, "{long}": 2}}"#);
        let e = parse_strict(doc.as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
    }

    #[test]
    fn nesting_is_bounded() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_strict(nest(MAX_DEPTH).as_bytes()).is_ok());
        let e = parse_strict(nest(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(
            matches!(e, StrictError::TooDeep { max: MAX_DEPTH, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("64 levels"), "{e}");
        // Far beyond serde_json's own limit, and objects: the same clear error, no stack overflow.
        let deep = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
        assert!(matches!(
            parse_strict(deep.as_bytes()),
            Err(StrictError::TooDeep { .. })
        ));
        // Unclosed: still too deep before it is malformed.
        assert!(matches!(
            parse_strict("[".repeat(1_000_000).as_bytes()),
            Err(StrictError::TooDeep { .. })
        ));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_named() {
        let e = parse_strict(b"{\"a\": \"\xff\xfe\"}").unwrap_err();
        assert_eq!(e, StrictError::InvalidUtf8 { at: 7 });
        // Overlong encoding and a lone surrogate encoded in UTF-8 bytes.
        for bad in [&b"{\"a\": \"\xc0\xaf\"}"[..], b"{\"a\": \"\xed\xa0\x80\"}"] {
            assert!(matches!(
                parse_strict(bad),
                Err(StrictError::InvalidUtf8 { .. })
            ));
        }
        // Malformed and not UTF-8 after the error: still said to be not UTF-8.
        assert!(matches!(
            parse_strict(b"{\"a\": \xff"),
            Err(StrictError::InvalidUtf8 { at: 6 })
        ));
    }

    #[test]
    fn numbers_beyond_f64_are_malformed_not_infinite() {
        let e = parse_strict(br#"{"n": 1e400}"#).unwrap_err();
        assert!(
            matches!(&e, StrictError::Malformed(m) if m.contains("number out of range")),
            "{e:?}"
        );
        assert!(parse_strict(br#"{"n": -1e400}"#).is_err());
        // A 100-digit integer is read as the nearest f64.
        let v = parse_strict(format!(r#"{{"n": {}}}"#, "9".repeat(100)).as_bytes()).unwrap();
        assert!(v["n"].as_f64().unwrap() > 9.9e99);
    }

    #[test]
    fn kind_names() {
        assert_eq!(kind_name(&json!([1, 2])), "array");
        assert_eq!(kind_name(&json!("x")), "string");
        assert_eq!(kind_name(&json!({})), "object");
    }
}
