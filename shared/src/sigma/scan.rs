//! Case-insensitive multi-literal search over field values, reporting every occurrence of every
//! literal with its position ([`ANYWHERE`], [`AT_START`], [`AT_END`], [`WHOLE`]).
//!
//! Literals are lowercase; values are ASCII-case-folded byte by byte as they are read (other text
//! is lowercased first, as the literals were). Two engines, chosen by the size of the set:
//!
//! - sets of up to 8 literals: an Aho-Corasick DFA walked byte by byte (one table lookup per
//!   byte, and the table stays in cache);
//! - larger sets (up to tens of thousands of literals: `CommandLine`, `Image`, `Hashes`): an
//!   anchor index. Each literal is filed under one of its 3-byte substrings, the one that is
//!   rarest among the set's literals; a value is read once, each 3-byte window is tested against
//!   a bitmap of the anchors sized to the set (64 bytes to 16 KB), and only on a hit is the
//!   anchor looked up and its literals compared in place. Automata of such sets take megabytes
//!   and are walked with a cache miss per byte; the anchor index takes kilobytes and about a
//!   dozen instructions per byte.
//!
//! Sets of up to 64 literals also get a vectorized gate (Teddy) that rules out long values
//! before either engine reads them.

use aho_corasick::MatchKind;

/// Hit flag: the literal occurs in the value.
pub const ANYWHERE: u8 = 1;
/// Hit flag: the value starts with the literal.
pub const AT_START: u8 = 2;
/// Hit flag: the value ends with the literal.
pub const AT_END: u8 = 4;
/// Hit flag: the value is the literal.
pub const WHOLE: u8 = 8;

/// Largest literal set searched with a DFA; larger sets use the anchor index.
const DFA_MAX_LITERALS: usize = 8;

/// Largest literal set given a gate.
const GATE_MAX_LITERALS: usize = 64;

/// Shortest value tested against the gate before it is searched.
const GATE_MIN_LEN: usize = 48;

/// A compiled literal set.
#[derive(Debug, Clone)]
pub struct Scanner {
    engine: Engine,
    /// Every literal is ASCII.
    ascii: bool,
    /// For small sets, a vectorized multi-literal search (Teddy) that rules out long lowercased
    /// values quickly, an order of magnitude faster than any walk (case-sensitive only, hence
    /// the lowercasing).
    gate: Option<aho_corasick::packed::Searcher>,
}

#[derive(Debug, Clone)]
enum Engine {
    Dfa(Box<aho_corasick::dfa::DFA>),
    Anchors(Box<Anchors>),
}

impl Scanner {
    /// Compiles `lits` (lowercase); literal ids are positions in `lits`. `None` if empty.
    pub fn new(lits: &[&str]) -> Option<Scanner> {
        if lits.is_empty() {
            return None;
        }
        let engine = if lits.len() <= DFA_MAX_LITERALS {
            Engine::Dfa(Box::new(dfa(lits)?))
        } else {
            Engine::Anchors(Box::new(Anchors::new(lits)?))
        };
        let gate = (lits.len() <= GATE_MAX_LITERALS)
            .then(|| {
                aho_corasick::packed::Config::new()
                    .builder()
                    .extend(lits)
                    .build()
            })
            .flatten();
        let ascii = lits.iter().all(|l| l.is_ascii());
        Some(Scanner {
            engine,
            gate,
            ascii,
        })
    }

    /// Whether `s` must be lowercased by Unicode rules before it is searched. Not when it is
    /// ASCII, nor when every literal is ASCII and `s` holds none of the two characters that
    /// lowercase to ASCII letters (`İ`, the Kelvin sign): other characters then stay non-ASCII
    /// whatever their case, cannot be part of an occurrence, and the ASCII folding as bytes are
    /// read is enough (positions are unchanged where occurrences can be).
    pub fn needs_unicode_lowercase(&self, s: &str) -> bool {
        !s.is_ascii() && (!self.ascii || s.contains(LOWERCASE_TO_ASCII))
    }

    /// Calls `found(literal, flags)` for every occurrence of a literal in `s`, ignoring case.
    pub fn scan(&self, s: &str, found: &mut impl FnMut(u32, u8)) {
        if s.len() >= GATE_MIN_LEN && self.gated() {
            // Long values against a small set: lowercase once so the gate's vectorized
            // prefilter (case-sensitive only) can rule the value out.
            LOWERED.with_borrow_mut(|buf| {
                buf.clear();
                push_lowercase(buf, s, self.needs_unicode_lowercase(s));
                self.scan_lowered(buf, found);
            });
            return;
        }
        if self.needs_unicode_lowercase(s) {
            self.run(s.to_lowercase().as_bytes(), found);
        } else {
            self.run(s.as_bytes(), found);
        }
    }

    /// Like [`Scanner::scan`] on text already lowercased with [`push_lowercase`] (as
    /// [`Scanner::needs_unicode_lowercase`] requires).
    pub fn scan_lowered(&self, bytes: &[u8], found: &mut impl FnMut(u32, u8)) {
        if let Some(g) = &self.gate
            && bytes.len() >= GATE_MIN_LEN
            && g.find(bytes).is_none()
        {
            return;
        }
        self.run(bytes, found);
    }

    fn gated(&self) -> bool {
        self.gate.is_some()
    }

    fn run(&self, bytes: &[u8], found: &mut impl FnMut(u32, u8)) {
        match &self.engine {
            Engine::Dfa(dfa) => walk(&**dfa, bytes, found),
            Engine::Anchors(a) => a.scan(bytes, found),
        }
    }
}

thread_local! {
    /// Reused buffer for lowercased values.
    static LOWERED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Characters (other than ASCII capitals) whose lowercase holds ASCII letters.
pub const LOWERCASE_TO_ASCII: [char; 2] = ['\u{130}', '\u{212A}'];

/// Appends `s` lowercased: by Unicode rules if `unicode` (as the literals were), else its ASCII
/// letters only (see [`Scanner::needs_unicode_lowercase`]).
pub fn push_lowercase(buf: &mut Vec<u8>, s: &str, unicode: bool) {
    if !unicode {
        let start = buf.len();
        buf.extend_from_slice(s.as_bytes());
        buf[start..].make_ascii_lowercase();
    } else {
        buf.extend_from_slice(s.to_lowercase().as_bytes());
    }
}

fn dfa(lits: &[&str]) -> Option<aho_corasick::dfa::DFA> {
    aho_corasick::dfa::DFA::builder()
        .match_kind(MatchKind::Standard)
        .prefilter(false)
        .start_kind(aho_corasick::StartKind::Unanchored)
        .build(lits)
        .ok()
}

/// Position flags of an occurrence `start..end` in a value of `len` bytes.
#[inline(always)]
fn flags(start: usize, end: usize, len: usize) -> u8 {
    let mut f = ANYWHERE;
    if start == 0 {
        f |= AT_START;
    }
    if end == len {
        f |= AT_END;
        if start == 0 {
            f |= WHOLE;
        }
    }
    f
}

/// Runs automaton `a` over `bytes` (ASCII-lowercased on the fly), reporting every match.
#[inline(always)]
fn walk<A: aho_corasick::automaton::Automaton>(
    a: &A,
    bytes: &[u8],
    found: &mut impl FnMut(u32, u8),
) {
    use aho_corasick::Anchored;
    let Ok(mut sid) = a.start_state(Anchored::No) else {
        return;
    };
    for (i, &b) in bytes.iter().enumerate() {
        sid = a.next_state(Anchored::No, sid, b.to_ascii_lowercase());
        if a.is_special(sid) && a.is_match(sid) {
            let end = i + 1;
            for k in 0..a.match_len(sid) {
                let pid = a.match_pattern(sid, k);
                found(
                    pid.as_u32(),
                    flags(end - a.pattern_len(pid), end, bytes.len()),
                );
            }
        }
    }
}

/// Bitmap bits per anchor (about 1 in 32 windows that are no anchor pass the bitmap).
const BITS_PER_ANCHOR: usize = 32;

/// Bounds of the bitmap sizes, in bits (64 bytes to 16 KB).
const BITMAP_BITS: std::ops::RangeInclusive<u32> = 9..=17;

/// Literals filed under anchors of 3 bytes; literals shorter than 3 bytes in a DFA.
#[derive(Debug, Clone)]
struct Anchors {
    /// All literal bytes.
    text: Box<[u8]>,
    table: AnchorTable,
    /// Literals of one or two bytes, and their ids.
    short: Option<(aho_corasick::dfa::DFA, Box<[u32]>)>,
}

/// Anchors of one length: a bitmap of their hashes, and an open-addressing table from anchor to
/// the literals filed under it (literal id, offset of the anchor in the literal).
#[derive(Debug, Clone)]
struct AnchorTable {
    /// A bitmap of anchor hashes, sized to the number of anchors so that small sets stay small.
    bits: Box<[u64]>,
    /// `32 - log2(bitmap bits)`.
    shift: u32,
    /// (anchor, entries start, entries end); `end == 0` marks an empty slot.
    slots: Box<[(u32, u32, u32)]>,
    entries: Box<[Filed]>,
}

/// A literal filed under an anchor.
#[derive(Debug, Clone, Copy)]
struct Filed {
    /// Literal id.
    lit: u32,
    /// Offset of the anchor in the literal.
    off: u32,
    /// Where the literal's bytes start in [`Anchors::text`], and their length.
    at: u32,
    len: u32,
}

impl AnchorTable {
    fn new(mut filed: Vec<(u32, Filed)>) -> AnchorTable {
        filed.sort_unstable_by_key(|(a, f)| (*a, f.lit));
        let anchors = filed.chunk_by(|a, b| a.0 == b.0).count();
        let log2 = (anchors * BITS_PER_ANCHOR)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(*BITMAP_BITS.start(), *BITMAP_BITS.end());
        let shift = 32 - log2;
        let mut bits = vec![0u64; 1 << (log2 - 6)].into_boxed_slice();
        let cap = (anchors * 2).next_power_of_two().max(2);
        let mut slots = vec![(0u32, 0u32, 0u32); cap].into_boxed_slice();
        let mut entries = Vec::with_capacity(filed.len());
        for group in filed.chunk_by(|a, b| a.0 == b.0) {
            let anchor = group[0].0;
            let start = entries.len() as u32;
            entries.extend(group.iter().map(|&(_, f)| f));
            let h = bit_hash(anchor, shift);
            bits[h / 64] |= 1 << (h % 64);
            let mut i = slot_hash(anchor) & (cap - 1);
            while slots[i].2 != 0 {
                i = (i + 1) & (cap - 1);
            }
            slots[i] = (anchor, start, entries.len() as u32);
        }
        AnchorTable {
            bits,
            shift,
            slots,
            entries: entries.into_boxed_slice(),
        }
    }

    #[inline(always)]
    fn maybe(&self, anchor: u32) -> bool {
        let h = bit_hash(anchor, self.shift);
        self.bits[h / 64] & (1 << (h % 64)) != 0
    }

    /// The literals filed under `anchor`.
    #[inline]
    fn get(&self, anchor: u32) -> &[Filed] {
        let mask = self.slots.len() - 1;
        let mut i = slot_hash(anchor) & mask;
        loop {
            let (a, s, e) = self.slots[i];
            if e == 0 {
                return &[];
            }
            if a == anchor {
                return &self.entries[s as usize..e as usize];
            }
            i = (i + 1) & mask;
        }
    }
}

#[inline(always)]
fn bit_hash(anchor: u32, shift: u32) -> usize {
    (anchor.wrapping_mul(0x9E37_79B1) >> shift) as usize
}

#[inline(always)]
fn slot_hash(anchor: u32) -> usize {
    (anchor.wrapping_mul(0x85EB_CA6B) ^ (anchor >> 15)) as usize
}

/// The anchor of three bytes: a 24-bit number with the ASCII case bit of every byte set, so
/// that capitals need no lowercasing when a value is read (a few punctuation pairs, such as
/// `\\` and `|`, share an anchor; literals are compared in place anyway).
fn anchor(b: &[u8]) -> u32 {
    b[..3]
        .iter()
        .fold(0u32, |acc, &x| (acc << 8) | u32::from(x | 0x20))
}

impl Anchors {
    fn new(lits: &[&str]) -> Option<Anchors> {
        // How many literals contain each 3-byte string: the rarest one of a literal is its
        // anchor (a literal is looked for only where its anchor is).
        let mut common: std::collections::HashMap<u32, u32> = Default::default();
        for l in lits {
            let mut grams: Vec<u32> = l.as_bytes().windows(3).map(anchor).collect();
            grams.sort_unstable();
            grams.dedup();
            for g in grams {
                *common.entry(g).or_default() += 1;
            }
        }
        let (mut filed, mut short) = (Vec::new(), Vec::new());
        let mut text = Vec::new();
        for (id, l) in lits.iter().enumerate() {
            let b = l.as_bytes();
            text.extend_from_slice(b);
            match b.len() {
                0 => {}
                1 | 2 => short.push(id),
                _ => {
                    let (off, g) = b
                        .windows(3)
                        .map(anchor)
                        .enumerate()
                        .min_by_key(|(_, g)| common[g])
                        .expect("three bytes or more");
                    filed.push((
                        g,
                        Filed {
                            lit: id as u32,
                            off: off as u32,
                            at: text.len() as u32 - b.len() as u32,
                            len: b.len() as u32,
                        },
                    ));
                }
            }
        }
        let short = if short.is_empty() {
            None
        } else {
            let s: Vec<&str> = short.iter().map(|&i| lits[i]).collect();
            Some((
                dfa(&s)?,
                short.iter().map(|&i| i as u32).collect::<Box<[u32]>>(),
            ))
        };
        Some(Anchors {
            text: text.into_boxed_slice(),
            table: AnchorTable::new(filed),
            short,
        })
    }

    fn scan(&self, bytes: &[u8], found: &mut impl FnMut(u32, u8)) {
        // The window of the last three bytes, case bits set as in `anchor`; the first two
        // windows are partial and match no anchor that verifies.
        let mut w = 0u32;
        for (i, &b) in bytes.iter().enumerate() {
            w = ((w << 8) | u32::from(b | 0x20)) & 0x00FF_FFFF;
            if self.table.maybe(w) {
                self.verify(w, i, bytes, found);
            }
        }
        if let Some((dfa, ids)) = &self.short {
            walk(dfa, bytes, &mut |k, f| found(ids[k as usize], f));
        }
    }

    /// Compares in place the literals filed under the window `w` ending at `bytes[i]`.
    #[inline(never)]
    fn verify(&self, w: u32, i: usize, bytes: &[u8], found: &mut impl FnMut(u32, u8)) {
        let n = bytes.len();
        for f in self.table.get(w) {
            let Some(start) = (i + 1).checked_sub(3 + f.off as usize) else {
                continue;
            };
            let end = start + f.len as usize;
            let l = &self.text[f.at as usize..(f.at + f.len) as usize];
            if end <= n && bytes[start..end].eq_ignore_ascii_case(l) {
                found(f.lit, flags(start, end, n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_hits(sc: &Scanner, s: &str) -> Vec<(u32, u8)> {
        let mut v = Vec::new();
        sc.scan(s, &mut |l, f| v.push((l, f)));
        v.sort_unstable();
        v
    }

    /// Every occurrence of every literal, by brute force.
    fn reference(lits: &[&str], s: &str) -> Vec<(u32, u8)> {
        let low = s.to_lowercase();
        let b = low.as_bytes();
        let mut v = Vec::new();
        for (id, l) in lits.iter().enumerate() {
            let l = l.as_bytes();
            if l.is_empty() || l.len() > b.len() {
                continue;
            }
            for start in 0..=b.len() - l.len() {
                if &b[start..start + l.len()] == l {
                    v.push((id as u32, flags(start, start + l.len(), b.len())));
                }
            }
        }
        v.sort_unstable();
        v
    }

    #[test]
    fn only_two_characters_lowercase_to_ascii() {
        let found: Vec<char> = (0x80..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|c| c.to_lowercase().any(|l| l.is_ascii()))
            .collect();
        assert_eq!(found, LOWERCASE_TO_ASCII);
    }

    #[test]
    fn both_engines_report_every_occurrence() {
        let small = ["\\cmd.exe", "cmd", ".exe", "e"];
        let many: Vec<String> = (0..200)
            .map(|i| format!("\\tool{i}.exe"))
            .chain(["\\cmd.exe", "cmd", ".exe", "e", "md", "ab"].map(String::from))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for lits in [&small[..], &many[..]] {
            let sc = Scanner::new(lits).unwrap();
            for s in [
                "C:\\Windows\\System32\\CMD.EXE",
                "cmd",
                "e",
                "x\\TOOL17.exe\\tool170.exe",
                "ÄB \\cmd.exe Ωab",
                "\u{212A}MD.exe İcmd",
                "",
            ] {
                assert_eq!(all_hits(&sc, s), reference(lits, s), "{s:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn ascii_sets_on_any_text_match_brute_force(
            lits in proptest::collection::vec("[abkiAB.\\\\]{1,5}", 1..100),
            values in proptest::collection::vec("[abkiAB.\\\\éÉ \u{212A}\u{130}]{0,30}", 1..8),
        ) {
            let lits: Vec<String> = lits.iter().map(|l| l.to_lowercase()).collect();
            let lits: Vec<&str> = lits.iter().map(String::as_str).collect();
            let sc = Scanner::new(&lits).unwrap();
            for v in &values {
                prop_assert_eq!(all_hits(&sc, v), reference(&lits, v));
            }
        }

        #[test]
        fn anchors_match_brute_force(
            lits in proptest::collection::vec("[abcAB.\\\\é]{1,7}", 65..120),
            values in proptest::collection::vec("[abcAB.\\\\éÉ ]{0,40}", 1..8),
        ) {
            let lits: Vec<String> = lits.iter().map(|l| l.to_lowercase()).collect();
            let lits: Vec<&str> = lits.iter().map(String::as_str).collect();
            let sc = Scanner::new(&lits).unwrap();
            for v in &values {
                prop_assert_eq!(all_hits(&sc, v), reference(&lits, v));
            }
        }
    }
}
