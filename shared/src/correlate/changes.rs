//! The changes of a force's correlation state since it was last persisted, gathered in one
//! buffer as the events are applied: a batch of hundreds of changed groups costs a few
//! allocations, not two per group, and keys are copied while they are still in the cache.

/// What becomes of one key.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    /// A new value: its range in the buffer.
    Put(usize, usize),
    Delete,
    /// Superseded: a group listed again, or re-created after its removal was listed.
    Skip,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    key: (usize, usize),
    change: Change,
}

/// Changes of a force's state to persist atomically with its stream cursor: keys and new
/// values (or deletions), sorted by key, so that the same events always give the same batch.
#[derive(Debug, Default, Clone)]
pub struct StateChanges {
    buf: Vec<u8>,
    items: Vec<Item>,
}

impl StateChanges {
    /// Empties it, keeping the room its buffers have.
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    /// Bytes of room in its buffers.
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity() + self.items.capacity() * std::mem::size_of::<Item>()
    }

    /// Lists the key written by `write`, as a deletion until [`StateChanges::put`]; returns its
    /// index.
    pub(super) fn key(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> usize {
        let start = self.buf.len();
        write(&mut self.buf);
        self.items.push(Item {
            key: (start, self.buf.len()),
            change: Change::Delete,
        });
        self.items.len() - 1
    }

    /// Lists a group's key (see `group_key`).
    pub(super) fn group(&mut self, rule: &str, key: &str) -> usize {
        self.key(|b| {
            b.extend_from_slice(rule.as_bytes());
            b.push(0);
            b.extend_from_slice(key.as_bytes());
        })
    }

    /// Sets the new value of listed key `i`, written by `write`.
    pub(super) fn put(&mut self, i: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        write(&mut self.buf);
        self.items[i].change = Change::Put(start, self.buf.len());
    }

    /// Drops listed key `i`: another entry says what becomes of it.
    pub(super) fn skip(&mut self, i: usize) {
        self.items[i].change = Change::Skip;
    }

    /// Sorts by key, without the skipped entries and repeated deletions (a group removed twice).
    pub(super) fn finish(&mut self) {
        self.items.retain(|i| i.change != Change::Skip);
        let buf = &self.buf;
        let key = |i: &Item| &buf[i.key.0..i.key.1];
        self.items.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        self.items.dedup_by(|a, b| key(a) == key(b));
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The changes in key order: key, and new value or `None` to delete.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + '_ {
        self.items.iter().map(|i| {
            let value = match i.change {
                Change::Put(s, e) => Some(&self.buf[s..e]),
                _ => None,
            };
            (&self.buf[i.key.0..i.key.1], value)
        })
    }
}

impl IntoIterator for StateChanges {
    type Item = super::StateChange;
    type IntoIter = std::vec::IntoIter<super::StateChange>;

    /// The changes as owned keys and values.
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect::<Vec<_>>()
            .into_iter()
    }
}
