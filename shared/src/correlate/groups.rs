//! The live groups of one correlation, found by a 128-bit print of their canonical key
//! instead of the key itself: a lookup never reads the (cold) key.
//!
//! The table holds the print's high half and the boxed group: 16 bytes a slot. The group holds
//! the low half, compared on every find (the group is read next anyway). Two live keys whose
//! prints share a high half (about one pair in 2^64 by chance) are told apart by an overflow
//! map keyed by the whole print.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use super::group::Group;

/// A 128-bit print of a canonical group key.
pub(super) type Print = u128;

/// Prints group keys: SipHash twice, with keys drawn per process, so that whoever chooses the
/// values (user names, addresses) cannot force two keys onto one print; by chance, two keys
/// share one with probability 2^-128. Prints are never persisted.
#[derive(Debug, Clone)]
pub(super) struct KeyPrints {
    a: RandomState,
    b: RandomState,
    /// The print of the empty key (silent feeds' one group).
    pub empty: Print,
}

impl Default for KeyPrints {
    fn default() -> KeyPrints {
        let mut prints = KeyPrints {
            a: RandomState::new(),
            b: RandomState::new(),
            empty: 0,
        };
        prints.empty = prints.of("");
        prints
    }
}

impl KeyPrints {
    /// The print of `key`.
    pub fn of(&self, key: &str) -> Print {
        Print::from(self.a.hash_one(key)) << 64 | Print::from(self.b.hash_one(key))
    }
}

/// Hashes print halves for the maps: they are uniformly random already.
#[derive(Default)]
struct PrintHasher(u64);

impl Hasher for PrintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Build = BuildHasherDefault<PrintHasher>;

fn halves(p: Print) -> (u64, u64) {
    ((p >> 64) as u64, p as u64)
}

/// The live groups of one correlation.
#[derive(Debug, Default)]
pub(super) struct GroupMap {
    /// By the print's high half; the group holds the low half.
    table: HashMap<u64, Box<Group>, Build>,
    /// Groups whose high half another group in `table` holds, by the whole print.
    overflow: HashMap<Print, Box<Group>, Build>,
}

impl GroupMap {
    /// Number of groups.
    pub fn len(&self) -> usize {
        self.table.len() + self.overflow.len()
    }

    /// Whether the table's group under `hi` is the one of print `p`.
    fn in_table(&self, p: Print) -> bool {
        let (hi, lo) = halves(p);
        self.table.get(&hi).is_some_and(|g| g.print_lo == lo)
    }

    /// The group of print `p`.
    pub fn get_mut(&mut self, p: Print) -> Option<&mut Group> {
        if self.in_table(p) {
            return self.table.get_mut(&halves(p).0).map(|g| &mut **g);
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get_mut(&p).map(|g| &mut **g)
    }

    /// Whether a group of print `p` is live.
    pub fn contains(&self, p: Print) -> bool {
        self.in_table(p) || (!self.overflow.is_empty() && self.overflow.contains_key(&p))
    }

    /// The group of print `p`, created empty with key `key` if absent.
    pub fn get_or_create(&mut self, p: Print, key: &str) -> &mut Group {
        let (hi, lo) = halves(p);
        let create = || {
            let mut g = Box::new(Group::new(key));
            g.print_lo = lo;
            g
        };
        if self.overflow.is_empty() || !self.overflow.contains_key(&p) {
            // In the table under `hi`, or absent.
            match self.table.entry(hi) {
                Entry::Occupied(o) if o.get().print_lo == lo => return o.into_mut(),
                Entry::Vacant(v) => return v.insert(create()),
                // Another group holds `hi`.
                Entry::Occupied(_) => {}
            }
        }
        self.overflow.entry(p).or_insert_with(create)
    }

    /// Adds group `g` of print `p` (absent).
    pub fn insert(&mut self, p: Print, mut g: Box<Group>) {
        let (hi, lo) = halves(p);
        g.print_lo = lo;
        match self.table.entry(hi) {
            Entry::Vacant(v) => {
                v.insert(g);
            }
            Entry::Occupied(_) => {
                self.overflow.insert(p, g);
            }
        }
    }

    /// Removes the group of print `p`.
    pub fn remove(&mut self, p: Print) -> Option<Box<Group>> {
        if self.in_table(p) {
            return self.table.remove(&halves(p).0);
        }
        self.overflow.remove(&p)
    }

    /// Removes the groups for which `expired` holds, handing each (with its print) to
    /// `removed`.
    pub fn remove_if(
        &mut self,
        mut expired: impl FnMut(&Group) -> bool,
        mut removed: impl FnMut(Print, Box<Group>),
    ) {
        for (hi, g) in self.table.extract_if(|_, g| expired(g)) {
            let p = Print::from(hi) << 64 | Print::from(g.print_lo);
            removed(p, g);
        }
        for (p, g) in self.overflow.extract_if(|_, g| expired(g)) {
            removed(p, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_sharing_a_high_half_are_told_apart() {
        let mut m = GroupMap::default();
        let a: Print = 7 << 64 | 1;
        let b: Print = 7 << 64 | 2;
        let c: Print = 8 << 64 | 1;
        m.get_or_create(a, "user=a").suppressed = 1;
        m.get_or_create(b, "user=b").suppressed = 2;
        m.get_or_create(c, "user=c").suppressed = 3;
        assert_eq!(m.len(), 3);
        assert_eq!(m.overflow.len(), 1, "b shares a's high half");
        for (p, key, n) in [(a, "user=a", 1), (b, "user=b", 2), (c, "user=c", 3)] {
            let g = m.get_mut(p).unwrap();
            assert_eq!((&*g.key, g.suppressed), (key, n));
            assert_eq!(m.get_or_create(p, "ignored").suppressed, n);
        }
        assert!(m.get_mut(9 << 64 | 1).is_none());
        assert!(!m.contains(7 << 64 | 3));
        // Removing the table's group leaves the overflow one findable.
        assert_eq!(m.remove(a).unwrap().suppressed, 1);
        assert!(!m.contains(a));
        assert_eq!(m.get_mut(b).unwrap().suppressed, 2);
        let mut gone = Vec::new();
        m.remove_if(|g| g.suppressed >= 2, |p, _| gone.push(p));
        gone.sort();
        assert_eq!(gone, vec![b, c]);
        assert_eq!(m.len(), 0);
    }
}
