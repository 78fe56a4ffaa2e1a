//! Per-event field cache: one mapping lookup and at most one lowercasing per field per event,
//! shared by the prefilter and by every rule evaluated on the event.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;

use super::matcher::{FieldLookup, Lowered};
use crate::event::Event;

/// A field of the event, resolved through the source's mapping.
pub struct Resolved<'a> {
    /// The value, if the field is present.
    pub value: Option<&'a Value>,
    /// Its string form with a lazily computed lowercase copy, if it is a string.
    pub lowered: Option<Lowered<'a>>,
}

/// Per field id its slot, and per slot a walked value (see [`FieldCache::set_walked`]).
type Walked<'a> = (&'a [u32], Vec<Option<&'a Value>>);

/// Resolved fields of one event, filled on demand.
pub struct FieldCache<'a> {
    /// The event.
    pub ev: &'a Event,
    /// (field id, name, resolution); ids come from the literal index (`u32::MAX`: match by name).
    entries: RefCell<Vec<(u32, &'a str, Rc<Resolved<'a>>)>>,
    /// For a walked Windows event: per field id its slot (`u32::MAX`: not walked), and per slot
    /// the value the walk found (see [`FieldCache::set_walked`]).
    walked: RefCell<Option<Walked<'a>>>,
}

impl<'a> FieldCache<'a> {
    /// An empty cache for `ev`.
    pub fn new(ev: &'a Event) -> Self {
        FieldCache {
            ev,
            entries: RefCell::new(Vec::with_capacity(16)),
            walked: RefCell::new(None),
        }
    }

    /// Records the values of plain fields found by one walk of the event: field id `i` has
    /// value `values[slot_of[i]]` (absent if `None`), which is what [`Event::field`] would
    /// return for it. Lookups of those fields then cost an index, not a search.
    pub fn set_walked(&self, slot_of: &'a [u32], values: Vec<Option<&'a Value>>) {
        *self.walked.borrow_mut() = Some((slot_of, values));
    }

    /// The field `name` (with index id `id`), resolved once per event.
    pub fn get(&self, id: u32, name: &'a str) -> Rc<Resolved<'a>> {
        let same = |(i, n, _): &&(u32, &str, Rc<Resolved<'a>>)| {
            if id == u32::MAX {
                *i == u32::MAX && *n == name
            } else {
                *i == id
            }
        };
        if let Some((_, _, r)) = self.entries.borrow().iter().find(same) {
            return r.clone();
        }
        let walked = self.walked.borrow().as_ref().and_then(|(slot_of, values)| {
            let slot = *slot_of.get(id as usize)?;
            (slot != u32::MAX).then(|| values[slot as usize])
        });
        let value = match walked {
            Some(v) => v,
            None => self.ev.field(name),
        };
        let lowered = match value {
            Some(Value::String(s)) => Some(Lowered::new(s)),
            _ => None,
        };
        let r = Rc::new(Resolved { value, lowered });
        self.entries.borrow_mut().push((id, name, r.clone()));
        r
    }
}

impl FieldLookup for FieldCache<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.ev.field(name)
    }
}
