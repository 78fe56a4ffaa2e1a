//! The fast path of [`super::parse_kept`]: a hand-written scanner walks the document, checks what
//! it skips as strictly as the serde path would, and builds only the kept values.
//!
//! In a drain, reading what the rules use took over a quarter of a node's CPU, most of it
//! serde_json's visitor calls for the values that are dropped: a key borrowed as a `Cow`, every
//! string and number handed to a visitor that ignores it. Here a skipped string is one scan for
//! its closing quote and a skipped number a scan of its digits.
//!
//! Whatever this scanner is not sure of, it leaves to the serde path, which then reads the
//! whole document again and gives the verdict and the error: an escape in a key, a surrogate
//! escape, a number near `f64`'s range, an object of more than [`FEW_KEYS`] keys, and anything
//! malformed, too deep or duplicated. So it accepts nothing the strict parse refuses, and what
//! it accepts it builds with the serde path's own visitor (`tests` and the `event` fuzz target
//! compare the two).

use std::cell::Cell;

use serde::de::DeserializeSeed;
use serde_json::map::Entry;
use serde_json::{Map, Value};

use super::KeepTree;
use crate::json::{MAX_DEPTH, Refused, Strict};

/// Keys of one skipped object compared one by one for duplicates; an object of more goes to
/// the serde path (which switches to a hash set).
const FEW_KEYS: usize = 64;

/// Not decided here: the serde path reads the document.
struct Bail;

type Scanned<T> = Result<T, Bail>;

/// An object key seen while skipping: where it is, and a fingerprint compared first.
#[derive(Clone, Copy)]
struct SeenKey {
    print: u64,
    start: u32,
    end: u32,
}

/// Parses `text` keeping what `keep` names, or `None` when the serde path must decide (see the
/// module documentation). `keep` must not keep everything: that is a plain strict parse.
pub(super) fn parse(text: &str, keep: &KeepTree) -> Option<Value> {
    debug_assert!(!keep.whole);
    // Offsets are stored as u32.
    if text.len() > u32::MAX as usize {
        return None;
    }
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
        keys: Vec::new(),
    };
    s.ws();
    let v = s.kept(keep, 0).ok()?;
    s.ws();
    (s.i == s.b.len()).then_some(v)
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    /// The keys of the objects being skipped, innermost last.
    keys: Vec<SeenKey>,
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips JSON whitespace.
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Scanned<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// The value at the cursor (after whitespace), pruned by `node`: an object is walked, any
    /// other value (or one kept whole) built by the serde visitor.
    fn kept(&mut self, node: &KeepTree, depth: usize) -> Scanned<Value> {
        if node.whole || self.peek() != Some(b'{') {
            return self.whole(depth);
        }
        let text = self.text;
        let mut out = Map::new();
        self.object(depth, |s, mark, start, end| {
            let key = &text[start..end];
            match node.child(key) {
                Some(child) => {
                    let v = s.kept(child, depth + 1)?;
                    match out.entry(key) {
                        Entry::Vacant(e) => {
                            e.insert(v);
                            Ok(())
                        }
                        Entry::Occupied(_) => Err(Bail),
                    }
                }
                None => {
                    s.skip(depth + 1)?;
                    s.seen(mark, start, end)
                }
            }
        })?;
        Ok(Value::Object(out))
    }

    /// The object at the cursor, `depth` containers in: `member(scanner, mark, start, end)`
    /// reads each member's value (the cursor at it), given where the key is and where this
    /// object's keys start in `keys` (for [`Scanner::seen`]).
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, usize, usize, usize) -> Scanned<()>,
    ) -> Scanned<()> {
        if depth >= MAX_DEPTH {
            return Err(Bail);
        }
        self.i += 1;
        let mark = self.keys.len();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.eat(b'"')?;
            let (start, end) = self.key()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, mark, start, end)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(Bail),
            }
        }
        self.keys.truncate(mark);
        Ok(())
    }

    /// The value at the cursor, whole: a string without escapes built here, anything else
    /// checked by [`Scanner::skip`] and then built by the serde visitor from its bytes.
    fn whole(&mut self, depth: usize) -> Scanned<Value> {
        let start = self.i;
        if self.peek() == Some(b'"') {
            self.i += 1;
            if let (s, e, false) = self.string()? {
                return Ok(Value::String(self.text[s..e].to_owned()));
            }
        } else {
            self.skip(depth)?;
        }
        let refused = Cell::new(Refused::Nothing);
        let mut de = serde_json::Deserializer::from_str(&self.text[start..self.i]);
        let v = Strict {
            depth,
            refused: &refused,
        }
        .deserialize(&mut de)
        .map_err(|_| Bail)?;
        de.end().map_err(|_| Bail)?;
        Ok(v)
    }

    /// Checks and skips the value at the cursor (after whitespace), `depth` containers in.
    fn skip(&mut self, depth: usize) -> Scanned<()> {
        match self.peek().ok_or(Bail)? {
            b'"' => {
                self.i += 1;
                self.string().map(|_| ())
            }
            b'{' => self.object(depth, |s, mark, start, end| {
                s.skip(depth + 1)?;
                s.seen(mark, start, end)
            }),
            b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(Bail);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Bail),
                    }
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => Err(Bail),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scanned<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// A number by JSON's grammar. One whose value could leave `f64`'s range (which serde_json
    /// refuses) goes to the serde path: more than 300 digits before the point, or an exponent
    /// that with them passes 300.
    fn number(&mut self) -> Scanned<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int = match self.peek() {
            Some(b'0') => {
                self.i += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Bail),
        };
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Bail);
            }
        }
        let mut exp = 0;
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let from = self.i;
            let n = self.digits();
            // Exponents of more than three digits are left to serde_json.
            if n == 0 || n > 3 {
                return Err(Bail);
            }
            exp = self.text[from..self.i].parse::<usize>().map_err(|_| Bail)?;
        }
        if int + exp > 300 || exp > 300 {
            return Err(Bail);
        }
        Ok(())
    }

    /// Skips ASCII digits; how many.
    #[inline]
    fn digits(&mut self) -> usize {
        let from = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - from
    }

    /// An object key after its opening quote: its bytes (without quotes). A key with an escape
    /// goes to the serde path (its duplicates must be compared unescaped).
    #[inline]
    fn key(&mut self) -> Scanned<(usize, usize)> {
        match self.string()? {
            (s, e, false) => Ok((s, e)),
            _ => Err(Bail),
        }
    }

    /// A string after its opening quote, checked (no control characters, valid escapes; the
    /// text is UTF-8 already): where its content is, and whether it holds escapes.
    fn string(&mut self) -> Scanned<(usize, usize, bool)> {
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i += special_at(&self.b[self.i..]);
            match self.peek().ok_or(Bail)? {
                b'"' => {
                    self.i += 1;
                    return Ok((start, self.i - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                // A control character, which JSON strings may not hold raw.
                _ => return Err(Bail),
            }
        }
    }

    /// An escape at the cursor. `\u` of a surrogate goes to the serde path (pairs and lone
    /// halves are its rules).
    fn escape(&mut self) -> Scanned<()> {
        match self.b.get(self.i + 1).ok_or(Bail)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.i += 2;
                Ok(())
            }
            b'u' => {
                let hex = self.b.get(self.i + 2..self.i + 6).ok_or(Bail)?;
                let hex = std::str::from_utf8(hex).map_err(|_| Bail)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(Bail);
                }
                let code = u16::from_str_radix(hex, 16).map_err(|_| Bail)?;
                if (0xD800..=0xDFFF).contains(&code) {
                    return Err(Bail);
                }
                self.i += 6;
                Ok(())
            }
            _ => Err(Bail),
        }
    }

    /// Records a key of the object whose keys start at `mark`; a duplicate (or too many keys to
    /// compare) goes to the serde path.
    #[inline]
    fn seen(&mut self, mark: usize, start: usize, end: usize) -> Scanned<()> {
        let key = &self.b[start..end];
        let print = fingerprint(key);
        let mine = &self.keys[mark..];
        if mine.len() >= FEW_KEYS {
            return Err(Bail);
        }
        if mine
            .iter()
            .any(|k| k.print == print && &self.b[k.start as usize..k.end as usize] == key)
        {
            return Err(Bail);
        }
        self.keys.push(SeenKey {
            print,
            start: start as u32,
            end: end as u32,
        });
        Ok(())
    }
}

/// The offset of the first byte of `b` that ends a plain run of string content: a quote, a
/// backslash or a control character (`b.len()` if none). Sixteen bytes at a time where the
/// machine has SSE2 (every x86-64), then eight, then one.
#[inline]
fn special_at(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    while let Some(chunk) = b.get(i..i + 16).and_then(|c| c.first_chunk::<16>()) {
        // SAFETY: the cfg above makes SSE2 a feature of every machine this code runs on.
        let hits = unsafe { specials16(chunk) };
        if hits != 0 {
            return i + hits.trailing_zeros() as usize;
        }
        i += 16;
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // Each term flags the bytes of `x` below `n` (`(x - n) & !x`, per byte): bytes below
        // 0x20, and the zero bytes of `w` XOR `"` and of `w` XOR `\`. Bytes of 0x80 and above
        // are never flagged (their `!x` high bit is clear).
        let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x;
        let hit = (below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1))
            & HIGH;
        if hit != 0 {
            // The lowest flagged byte is exact: borrows only run upwards from a real hit.
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// Bit `j` set where byte `j` of `chunk` is a quote, a backslash or a control character:
/// three byte compares of sixteen lanes and one mask.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn specials16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };
    let (lo, hi) = chunk.split_at(8);
    let word = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
    let v = _mm_set_epi64x(word(hi), word(lo));
    let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
    let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
    // Unsigned `c <= 0x1f` is `max(c, 0x1f) == 0x1f`.
    let low = _mm_set1_epi8(0x1f);
    let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
}

/// A key's fingerprint: equal keys have equal ones, and most different keys different ones
/// (its length and first and last eight bytes).
#[inline]
fn fingerprint(key: &[u8]) -> u64 {
    let n = key.len();
    let head = super::head_word(key);
    let tail = key
        .last_chunk::<8>()
        .map_or(head, |w| u64::from_le_bytes(*w));
    head ^ tail.rotate_left(29) ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::json::kept::parse_kept_by_serde;
    use crate::json::kept::tests::tree;

    #[test]
    fn reads_sign_ins_itself() {
        // The common case must not fall back, or the scanner is dead weight.
        let doc = r#"{"time": "2024-03-01T10:00:00.1234567Z", "resultType": 50126,
            "properties": {"userPrincipalName": "a@kent.police.uk", "ipAddress": "203.0.113.7",
            "status": {"errorCode": 50126, "failureReason": "Invalid \"password\"",
            "additionalDetails": null}, "location": {"city": "Maidstone", "geoCoordinates":
            {"latitude": 51.27, "longitude": 0.52}}, "appliedConditionalAccessPolicies": [],
            "authenticationDetails": [{"succeeded": false, "step": 1e3, "x": -0.5}],
            "riskLevelDuringSignIn": "none", "nested": [[1, [2, {"a": {"b": true}}]]]},
            "category": "SignInLogs", "operationName": "Sign-in activity", "é": "\u00e9"}"#;
        let t = tree(&[
            "time",
            "resulttype",
            "properties.userPrincipalName",
            "properties.status.errorcode",
            "properties.location.geoCoordinates",
            "properties.authenticationDetails",
        ]);
        let fast = parse(doc, &t).expect("read by the scanner");
        assert_eq!(Ok(fast.clone()), parse_kept_by_serde(doc.as_bytes(), &t));
        assert_eq!(fast["properties"]["status"]["errorCode"], 50126);
        assert_eq!(
            fast["properties"]["authenticationDetails"][0]["step"],
            1000.0
        );
        assert_eq!(fast.as_object().unwrap().len(), 3);
    }

    #[test]
    fn leaves_what_it_is_not_sure_of_to_serde() {
        let t = tree(&["keep"]);
        for doc in [
            r#"{"k\u0065y": 1}"#,
            r#"{"s": "\ud83d\ude00"}"#,
            r#"{"n": 1e301}"#,
            r#"{"n": 1.5e-400}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"keep": 1, "keep": 2}"#,
            r#"{"a": [1, 2,]}"#,
            r#"{"a": "\x"}"#,
            "{\"a\": \"\t\"}",
            r#"{"a": 1} x"#,
            r#"{"a": 01}"#,
            r#"{"a": -}"#,
            r#"{"a": tru}"#,
        ] {
            assert_eq!(parse(doc, &t), None, "{doc}");
        }
        let many = (0..FEW_KEYS + 1)
            .map(|i| format!(r#""k{i}": {i}"#))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse(&format!("{{{many}}}"), &t), None);
        let deep = format!(
            r#"{{"a": {}1{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(parse(&deep, &t), None);
        let edge = format!(
            r#"{{"a": {}1{}}}"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&edge, &t).is_some());
    }

    /// JSON text, well-formed or nearly: keys that repeat, differ in case or only once
    /// unescaped, numbers at and past `f64`'s range and off JSON's grammar, strings with every
    /// kind of escape, raw control characters and surrogates.
    fn text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            prop::sample::select(vec![
                "null",
                "true",
                "false",
                "tru",
                "nul",
                "0",
                "-0",
                "-0.0",
                "01",
                "1.",
                ".5",
                "1e",
                "1e+5",
                "1E-5",
                "-1.5e300",
                "1e301",
                "1e400",
                "-1e400",
                "1e-400",
                "2e308",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775809",
                "\"plain\"",
                "\"q\\\"uote\"",
                "\"\\u00e9\\n\\/\"",
                "\"\\ud83d\\ude00\"",
                "\"\\ud800\"",
                "\"\\udc00x\"",
                "\"tab\there\"",
                "\"\\x\"",
                "\"\\u12g4\"",
                "\"é€😀\"",
                "\"unterminated",
            ])
            .prop_map(str::to_owned),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "[a-z\\\\\"]{0,12}".prop_map(|s| format!("\"{s}\"")),
            (1usize..320).prop_map(|n| "7".repeat(n)),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            let key = prop::sample::select(vec![
                "\"keep\"",
                "\"Keep\"",
                "\"k\\u0065ep\"",
                "\"a\"",
                "\"A\"",
                "\"b\"",
                "\"é\"",
                "\"\\u00e9\"",
                "\"x y\"",
                "\"\"",
                "1",
                "\"k\\\"q\"",
            ]);
            let sep = prop::sample::select(vec![",", " , ", ",\n\t", ""]);
            prop_oneof![
                prop::collection::vec((inner.clone(), sep.clone()), 0..6).prop_map(|v| {
                    let body: String = v.iter().map(|(x, s)| format!("{x}{s}")).collect();
                    format!("[{}]", body.trim_end_matches([',', ' ', '\n', '\t']))
                }),
                prop::collection::vec((key, inner, sep), 0..6).prop_map(|kv| {
                    let body: String = kv.iter().map(|(k, v, s)| format!("{k}: {v}{s}")).collect();
                    format!("{{ {} }}", body.trim_end_matches([',', ' ', '\n', '\t']))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn builds_what_serde_builds_and_leaves_it_every_refusal(
            doc in text(),
            cut in any::<prop::sample::Index>(),
            how in 0u8..4,
            paths in prop::sample::subsequence(vec!["keep", "a", "a.b", "b.keep", "a.keep.keep", "é"], 1..4),
        ) {
            // Sometimes the text loses or gains a byte somewhere.
            let mut doc = doc.into_bytes();
            if !doc.is_empty() {
                let at = cut.index(doc.len());
                match how {
                    0 => { doc.remove(at); }
                    1 => doc.insert(at, b'}'),
                    _ => {}
                }
            }
            let t = tree(&paths);
            prop_assert_eq!(
                crate::json::kept::parse_kept(&doc, &t),
                parse_kept_by_serde(&doc, &t),
                "{}", String::from_utf8_lossy(&doc)
            );
        }
    }

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..=len {
                for c in [b'"', b'\\', 0x00, 0x1f] {
                    let mut b = vec![b'a'; len];
                    // Bytes above 0x7f around the hit must not be flagged.
                    for (i, x) in b.iter_mut().enumerate() {
                        if i % 3 == 1 {
                            *x = 0xe9;
                        }
                    }
                    if at < len {
                        b[at] = c;
                    }
                    assert_eq!(special_at(&b), at, "len {len} at {at} byte {c:#x}");
                }
            }
        }
        // Bytes just above the control range and `"`/`\`'s neighbours are plain.
        let plain = b" !#[]\x7f\x80\xff ok, and more than eight";
        assert_eq!(special_at(plain), plain.len());
    }

    #[test]
    fn a_duplicate_among_many_keys_is_found_wherever_it_is() {
        let t = tree(&["keep"]);
        let doc = |keys: &[String]| {
            let members: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| format!(r#""{k}": {i}"#))
                .collect();
            format!(r#"{{"keep": 1, "skipped": {{{}}}}}"#, members.join(", "))
        };
        for n in [2, 9, 30, FEW_KEYS - 1] {
            let keys: Vec<String> = (0..n).map(|i| format!("field{i}")).collect();
            assert!(parse(&doc(&keys), &t).is_some(), "{n} distinct keys");
            for dup in 0..n {
                let mut again = keys.clone();
                again.push(keys[dup].clone());
                assert_eq!(parse(&doc(&again), &t), None, "key {dup} of {n} twice");
            }
        }
    }

    #[test]
    fn fingerprints_of_equal_keys_are_equal() {
        for k in ["", "a", "userPrincipalName", "properties.status.errorCode"] {
            assert_eq!(
                fingerprint(k.as_bytes()),
                fingerprint(k.to_owned().as_bytes())
            );
        }
        assert_ne!(fingerprint(b"ab"), fingerprint(b"ba"));
    }
}
