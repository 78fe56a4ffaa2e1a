//! Parsing a document keeping only the parts something reads.
//!
//! Building a `serde_json::Value` tree (a `String` per key and string, a map node per object)
//! costs about six times as much as reading the same JSON and checking it: on the cloud
//! sources, the rules read a few fields of records that carry dozens. [`parse_kept`] builds the
//! values under the paths of a [`KeepTree`] and only checks the rest, exactly as strictly as
//! [`super::parse_strict`] does (syntax, UTF-8, numbers, nesting depth, duplicate keys), so a
//! payload is refused for the same reason with the same message whatever is kept.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

use super::{Refused, Strict, StrictError, classify, shown_key};

mod prune;

/// Paths of a document to keep, each a list of object keys compared ignoring ASCII case.
///
/// A path keeps the whole value it ends at. On the way, an object keeps only the keys that
/// lead to a path; any other value (an array, a string) is kept whole, so that every read that
/// follows a kept path finds what it would find in the whole document, in the same key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepTree {
    /// Keep this value whole.
    whole: bool,
    /// Keys to keep below, lowercase, sorted by length and then bytes, each with what to keep
    /// under it.
    children: Vec<(Box<str>, KeepTree)>,
    /// `children[by_len[n]..by_len[n + 1]]` are the keys of `n` bytes.
    by_len: Vec<u32>,
    /// Each child's [`folded_head`], compared before its key.
    heads: Vec<u64>,
}

/// The tree that keeps everything.
static EVERYTHING: KeepTree = KeepTree {
    whole: true,
    children: Vec::new(),
    by_len: Vec::new(),
    heads: Vec::new(),
};

impl KeepTree {
    /// A tree that keeps nothing yet (add paths with [`KeepTree::keep`]).
    pub fn new() -> KeepTree {
        KeepTree::default()
    }

    /// The tree that keeps the whole document: a plain strict parse.
    pub fn everything() -> &'static KeepTree {
        &EVERYTHING
    }

    /// Whether the whole value is kept.
    pub fn is_everything(&self) -> bool {
        self.whole
    }

    /// Keeps the value at `path` (object keys from the top), whole.
    pub fn keep<'p>(&mut self, path: impl IntoIterator<Item = &'p str>) {
        let mut node = self;
        for part in path {
            if node.whole {
                return;
            }
            let lower = part.to_ascii_lowercase();
            let at = node
                .children
                .binary_search_by(|(k, _)| (k.len(), &**k).cmp(&(lower.len(), lower.as_str())));
            let i = match at {
                Ok(i) => i,
                Err(i) => {
                    node.children
                        .insert(i, (lower.into_boxed_str(), KeepTree::default()));
                    node.index_lengths();
                    i
                }
            };
            node = &mut node.children[i].1;
        }
        node.whole = true;
        node.children = Vec::new();
        node.by_len = Vec::new();
        node.heads = Vec::new();
    }

    /// Rebuilds `by_len` and `heads` from the children.
    fn index_lengths(&mut self) {
        let longest = self.children.last().map_or(0, |(k, _)| k.len());
        self.by_len = (0..=longest + 1)
            .map(|n| self.children.partition_point(|(k, _)| k.len() < n) as u32)
            .collect();
        self.heads = self
            .children
            .iter()
            .map(|(k, _)| folded_head(k.as_bytes()))
            .collect();
    }

    /// What to keep under key `key`, if anything (without allocating: only the kept keys of the
    /// same length are compared, ignoring ASCII case, and only those whose first eight bytes
    /// may be equal).
    #[inline]
    fn child(&self, key: &str) -> Option<&KeepTree> {
        let n = key.len();
        let (Some(&from), Some(&to)) = (self.by_len.get(n), self.by_len.get(n + 1)) else {
            return None;
        };
        let (from, to) = (from as usize, to as usize);
        let head = folded_head(key.as_bytes());
        self.heads[from..to]
            .iter()
            .zip(&self.children[from..to])
            .find(|(h, (k, _))| **h == head && k.eq_ignore_ascii_case(key))
            .map(|(_, (_, t))| t)
    }
}

/// The first eight bytes of a key (zero-padded), each with bit 0x20 set: keys equal ignoring
/// ASCII case have equal heads (a letter's two cases differ only in that bit), so a key whose
/// head differs is passed over with one comparison.
#[inline]
fn folded_head(key: &[u8]) -> u64 {
    head_word(key) | 0x2020_2020_2020_2020
}

/// The first eight bytes of `b` as a little-endian word, zero-padded: one load when there are
/// eight (a copy of a slice of unknown length is a call to `memcpy`, 1% of a drain's time).
#[inline]
fn head_word(b: &[u8]) -> u64 {
    if let Some(w) = b.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    b.iter()
        .enumerate()
        .fold(0, |w, (i, &c)| w | u64::from(c) << (8 * i))
}

/// Parses one JSON document as [`super::parse_strict`] does, keeping only the values under the
/// paths of `keep`; the rest is read, checked and dropped. The same payloads are refused with
/// the same errors.
///
/// A hand-written scanner ([`prune`]) reads nearly every document; what it leaves undecided
/// (anything refused, and a few rare forms) is read again by serde_json
/// ([`parse_kept_by_serde`]), which then gives the verdict and the error.
pub fn parse_kept(bytes: &[u8], keep: &KeepTree) -> Result<Value, StrictError> {
    if !keep.whole
        && let Ok(text) = std::str::from_utf8(bytes)
        && let Some(v) = prune::parse(text, keep)
    {
        return Ok(v);
    }
    parse_kept_by_serde(bytes, keep)
}

/// [`parse_kept`] by serde_json alone: the reference the fast scanner is checked against
/// (tests and fuzzing), and the reader of what it leaves undecided.
pub fn parse_kept_by_serde(bytes: &[u8], keep: &KeepTree) -> Result<Value, StrictError> {
    let refused = Cell::new(Refused::Nothing);
    let strict = Strict {
        depth: 0,
        refused: &refused,
    };
    let keys = KeyStack::default();
    let parsed = match std::str::from_utf8(bytes) {
        // Nearly always: the strings need no check of their own. Otherwise the bytes are read
        // as they come, so that what is wrong first is the error.
        Ok(text) => read(
            &mut serde_json::Deserializer::from_str(text),
            keep,
            strict,
            &keys,
        ),
        Err(_) => read(
            &mut serde_json::Deserializer::from_slice(bytes),
            keep,
            strict,
            &keys,
        ),
    };
    parsed.map_err(|e| classify(bytes, e, refused.take()))
}

/// Reads one document from `de`, to its end.
fn read<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    node: &KeepTree,
    strict: Strict<'_>,
    keys: &KeyStack<'de>,
) -> Result<Value, serde_json::Error> {
    let v = Kept { node, strict, keys }.deserialize(&mut *de)?;
    de.end()?;
    Ok(v)
}

/// Builds a value, pruning objects by `node`.
#[derive(Clone, Copy)]
struct Kept<'a, 'de> {
    node: &'a KeepTree,
    strict: Strict<'a>,
    keys: &'a KeyStack<'de>,
}

impl<'de> DeserializeSeed<'de> for Kept<'_, 'de> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.node.whole {
            self.strict.deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Kept<'_, 'de> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.strict.visit_bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.strict.visit_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.strict.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.strict.visit_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.strict.visit_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.strict.visit_string(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.strict.visit_unit()
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.strict.visit_none()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        // Lookups do not walk into arrays: one on the way to a kept path is kept whole.
        self.strict.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.strict.inner().map_err(|r| self.strict.refuse(r))?;
        let mut out = Map::new();
        let mut keys = ObjectKeys::new(self.keys);
        // A key is kept or not whatever its value: a duplicate of a kept key is found in `out`,
        // one of a dropped key among the dropped ones.
        while let Some(key) = map.next_key_seed(Key)? {
            let first = match self.node.child(&key) {
                Some(node) => {
                    let v = map.next_value_seed(Kept {
                        node,
                        strict: inner,
                        keys: self.keys,
                    })?;
                    match out.entry(key.as_ref()) {
                        Entry::Vacant(e) => {
                            e.insert(v);
                            true
                        }
                        Entry::Occupied(_) => false,
                    }
                }
                None => {
                    map.next_value_seed(Skip {
                        strict: inner,
                        keys: self.keys,
                    })?;
                    keys.insert(key.clone())
                }
            };
            if !first {
                return Err(self.strict.refuse(Refused::Duplicate(shown_key(&key))));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Reads and checks a value without building it.
#[derive(Clone, Copy)]
struct Skip<'a, 'de> {
    strict: Strict<'a>,
    keys: &'a KeyStack<'de>,
}

impl<'de> DeserializeSeed<'de> for Skip<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // `deserialize_any`, not `deserialize_ignored_any`: serde_json skips an ignored value
        // without the checks a whole parse makes (object keys for duplicates, nesting depth,
        // and, when the payload is read as bytes, UTF-8).
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let strict = self.strict.inner().map_err(|r| self.strict.refuse(r))?;
        let inner = Skip { strict, ..self };
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let strict = self.strict.inner().map_err(|r| self.strict.refuse(r))?;
        let inner = Skip { strict, ..self };
        let mut keys = ObjectKeys::new(self.keys);
        while let Some(key) = map.next_key_seed(Key)? {
            map.next_value_seed(inner)?;
            if !keys.insert(key.clone()) {
                return Err(self.strict.refuse(Refused::Duplicate(shown_key(&key))));
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// The keys of the objects being read, innermost last: each object checks for a duplicate in
/// its own part of one list (allocating a list per object would cost more than the check).
#[derive(Default)]
struct KeyStack<'de>(RefCell<Vec<Cow<'de, str>>>);

/// One object's keys: its part of the [`KeyStack`], or a hash set once it has many (an object
/// of many keys must not cost a comparison per pair).
struct ObjectKeys<'s, 'de> {
    stack: &'s KeyStack<'de>,
    start: usize,
    many: Option<HashSet<Cow<'de, str>>>,
}

impl<'s, 'de> ObjectKeys<'s, 'de> {
    /// Keys compared one by one before switching to a set.
    const FEW: usize = 64;

    fn new(stack: &'s KeyStack<'de>) -> Self {
        let start = stack.0.borrow().len();
        ObjectKeys {
            stack,
            start,
            many: None,
        }
    }

    /// Adds `key`; false if the object already has it.
    #[inline]
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        let mut stack = self.stack.0.borrow_mut();
        if stack[self.start..].contains(&key) {
            return false;
        }
        if stack.len() - self.start < Self::FEW {
            stack.push(key);
            return true;
        }
        let mut many: HashSet<Cow<'de, str>> = stack.drain(self.start..).collect();
        many.insert(key);
        self.many = Some(many);
        true
    }
}

impl Drop for ObjectKeys<'_, '_> {
    fn drop(&mut self) {
        self.stack.0.borrow_mut().truncate(self.start);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::json;

    use super::*;
    use crate::json::parse_strict;

    #[test]
    fn head_word_is_the_zero_padded_first_eight_bytes() {
        let text = b"userPrincipalName";
        for n in 0..=text.len() {
            let mut padded = [0u8; 8];
            let k = n.min(8);
            padded[..k].copy_from_slice(&text[..k]);
            assert_eq!(
                head_word(&text[..n]),
                u64::from_le_bytes(padded),
                "{n} bytes"
            );
        }
    }

    /// A tree keeping each dotted path of `paths`.
    pub(super) fn tree(paths: &[&str]) -> KeepTree {
        let mut t = KeepTree::new();
        for p in paths {
            t.keep(p.split('.'));
        }
        t
    }

    #[test]
    fn keeps_the_paths_and_what_leads_to_them() {
        let doc = br#"{"a": {"b": 1, "c": {"d": [1, {"e": 2}]}, "x": "y"}, "B": "kept",
            "big": {"deep": {"er": [1, 2, 3]}}, "s": "dropped", "arr": [{"b": 3}]}"#;
        let t = tree(&["a.c", "b", "arr.b", "a.missing"]);
        assert_eq!(
            parse_kept(doc, &t).unwrap(),
            json!({"a": {"c": {"d": [1, {"e": 2}]}}, "B": "kept", "arr": [{"b": 3}]})
        );
        // Every spelling of a kept key is kept, in the document's order.
        let t = tree(&["userprincipalname"]);
        assert_eq!(
            parse_kept(
                br#"{"UserPrincipalName": 1, "userPrincipalName": 2, "u": 3}"#,
                &t
            )
            .unwrap(),
            json!({"UserPrincipalName": 1, "userPrincipalName": 2})
        );
        // A value on the way that is not an object is kept whole.
        let t = tree(&["a.b"]);
        assert_eq!(
            parse_kept(br#"{"a": "text", "c": 1}"#, &t).unwrap(),
            json!({"a": "text"})
        );
        // A kept prefix keeps everything under it.
        let mut t = tree(&["a.b.c"]);
        t.keep(["a"]);
        assert_eq!(
            parse_kept(br#"{"a": {"z": 1}}"#, &t).unwrap(),
            json!({"a": {"z": 1}})
        );
        assert_eq!(parse_kept(b"[1, 2]", &tree(&["a"])).unwrap(), json!([1, 2]));
        assert_eq!(parse_kept(br#""s""#, &tree(&["a"])).unwrap(), json!("s"));
        assert_eq!(
            parse_kept(br#"{"a": 1}"#, &KeepTree::new()).unwrap(),
            json!({})
        );
        assert!(KeepTree::everything().is_everything());
    }

    #[test]
    fn refuses_what_a_strict_parse_refuses_with_the_same_error() {
        let bad: Vec<Vec<u8>> = vec![
            br#"{"keep": 1, "skip": {"x": 1, "x": 2}}"#.to_vec(),
            br#"{"skip": [{"y": 1, "y": 1}]}"#.to_vec(),
            br#"{"skip": 1, "skip": 2}"#.to_vec(),
            br#"{"keep": 1, "keep": 2}"#.to_vec(),
            br#"{"k\u0065ep": 1, "keep": 2}"#.to_vec(),
            r#"{"skip": {"a\u00e9": 1, "a\u00c9": 2, "aé": 3}}"#
                .as_bytes()
                .to_vec(),
            b"{\"skip\": \"\xff\"}".to_vec(),
            b"{\"sk\xc0\xafip\": 1}".to_vec(),
            br#"{"skip": 1e400}"#.to_vec(),
            br#"{"skip": [1, 2,]}"#.to_vec(),
            br#"{"skip": tru}"#.to_vec(),
            br#"{"skip": "\x"}"#.to_vec(),
            br#"{"keep": 1} trailing"#.to_vec(),
            br#"{"skip": 1"#.to_vec(),
            format!(r#"{{"skip": {}1{}}}"#, "[".repeat(70), "]".repeat(70)).into_bytes(),
            format!(
                r#"{{"keep": {}1{}}}"#,
                r#"{"a":"#.repeat(70),
                "}".repeat(70)
            )
            .into_bytes(),
            format!(r#"{{"skip": {}}}"#, "[".repeat(100_000)).into_bytes(),
            format!(
                r#"{{"skip": {{{}, "k5": 0}}}}"#,
                (0..40)
                    .map(|i| format!(r#""k{i}": {i}"#))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into_bytes(),
        ];
        let t = tree(&["keep"]);
        for doc in &bad {
            let strict = parse_strict(doc).expect_err(&String::from_utf8_lossy(doc));
            assert_eq!(
                parse_kept(doc, &t).unwrap_err(),
                strict,
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn equals_a_strict_parse_of_what_it_keeps() {
        let doc =
            br#"{"time": "2024-03-01T10:00:00Z", "properties": {"status": {"errorCode": 50126,
            "additionalDetails": "x"}, "deviceDetail": {"os": "Windows", "browser": "Edge"},
            "authenticationDetails": [{"m": 1}], "ipAddress": "203.0.113.7"},
            "esc\u00e9": "v", "n": [1.5, -2, 18446744073709551615, null, true]}"#;
        let full = parse_strict(doc).unwrap();
        let t = tree(&[
            "properties.status.errorCode",
            "properties.ipaddress",
            "escé",
            "n",
        ]);
        let kept = parse_kept(doc, &t).unwrap();
        assert_eq!(kept["properties"]["status"], json!({"errorCode": 50126}));
        assert_eq!(
            kept["properties"]["ipAddress"],
            full["properties"]["ipAddress"]
        );
        assert_eq!(kept["escé"], full["escé"]);
        assert_eq!(kept["n"], full["n"]);
        assert_eq!(kept.as_object().unwrap().len(), 3);
        assert_eq!(parse_kept(doc, KeepTree::everything()).unwrap(), full);
    }

    #[test]
    fn a_large_object_is_checked_for_duplicates_by_set() {
        let keys: Vec<String> = (0..5000).map(|i| format!(r#""k{i}": {i}"#)).collect();
        let ok = format!(r#"{{"skip": {{{}}}}}"#, keys.join(","));
        assert!(parse_kept(ok.as_bytes(), &tree(&["keep"])).is_ok());
        let dup = format!(r#"{{"skip": {{{}, "k4999": 0}}}}"#, keys.join(","));
        assert!(matches!(
            parse_kept(dup.as_bytes(), &tree(&["keep"])),
            Err(StrictError::DuplicateKey { key, .. }) if key == "k4999"
        ));
    }
}
