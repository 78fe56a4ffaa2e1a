//! Per-event field cache: one mapping lookup and at most one lowercasing per field per event,
//! shared by the prefilter and by every rule evaluated on the event.

use std::cell::RefCell;

use serde_json::Value;

use super::matcher::{FieldLookup, Lowered};
use crate::event::Event;
use crate::mapping::{TopKey, lookup_cloud};

/// A field of the event, resolved through the source's mapping.
pub struct Resolved<'a> {
    /// The value, if the field is present.
    pub value: Option<&'a Value>,
    /// Its string form with a lazily computed lowercase copy, if it is a string.
    pub lowered: Option<Lowered<'a>>,
}

/// What one walk of the event found, to answer lookups without searching (see
/// [`FieldCache::set_walked`] and [`FieldCache::set_walked_top`]).
enum Walked<'a> {
    /// Windows: per field id its slot (`u32::MAX`: not walked), per slot the value found.
    Slots(&'a [u32], Vec<Option<&'a Value>>),
    /// Other sources: per field id its plan (`u32::MAX`: none), per plan the top-level names
    /// of the whole field and of its first part (`u32::MAX`: undotted) and its other parts, per
    /// name what the top-level keys hold, and the top-level `properties`.
    Top(
        &'a [u32],
        &'a [(u32, u32, Box<[String]>)],
        Vec<TopKey<'a>>,
        Option<&'a Value>,
    ),
}

/// Resolved fields of one event, filled on demand.
pub struct FieldCache<'a> {
    /// The event.
    pub ev: &'a Event,
    /// (field id, name, resolution); ids come from the literal index (`u32::MAX`: match by name).
    entries: RefCell<Vec<(u32, &'a str, Resolved<'a>)>>,
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

    /// Records the values of plain fields found by one walk of a Windows event: field id `i`
    /// has value `values[slot_of[i]]` (absent if `None`), which is what [`Event::field`] would
    /// return for it. Lookups of those fields then cost an index, not a search.
    pub fn set_walked(&self, slot_of: &'a [u32], values: Vec<Option<&'a Value>>) {
        *self.walked.borrow_mut() = Some(Walked::Slots(slot_of, values));
    }

    /// Records what one walk of a non-Windows event's top-level keys found: field id `i` with
    /// plan `p = plan_of[i]` is resolved from `tops[plans[p].0]` (the whole name) and
    /// `tops[plans[p].1]` (its first part) and `properties` by
    /// [`crate::mapping::lookup_cloud`].
    pub fn set_walked_top(
        &self,
        plan_of: &'a [u32],
        plans: &'a [(u32, u32, Box<[String]>)],
        tops: Vec<TopKey<'a>>,
        properties: Option<&'a Value>,
    ) {
        *self.walked.borrow_mut() = Some(Walked::Top(plan_of, plans, tops, properties));
    }

    /// The value of field `name` (id `id`) from the walk, if the walk covers it.
    fn walked(&self, id: u32, name: &str) -> Option<Option<&'a Value>> {
        match self.walked.borrow().as_ref()? {
            Walked::Slots(slot_of, values) => {
                let slot = *slot_of.get(id as usize)?;
                (slot != u32::MAX).then(|| values[slot as usize])
            }
            Walked::Top(plan_of, plans, tops, properties) => {
                let plan = *plan_of.get(id as usize)?;
                if plan == u32::MAX {
                    return None;
                }
                let (whole, first, rest) = &plans[plan as usize];
                let first = (*first != u32::MAX).then(|| tops[*first as usize]);
                Some(lookup_cloud(
                    *properties,
                    name,
                    tops[*whole as usize],
                    first,
                    rest,
                ))
            }
        }
    }

    /// Calls `f` with the field `name` (with index id `id`), resolved once per event. `f` may
    /// read other fields through [`FieldLookup`], not through this cache.
    pub fn with<R>(&self, id: u32, name: &'a str, f: impl FnOnce(&Resolved<'a>) -> R) -> R {
        let i = self.index(id, name);
        f(&self.entries.borrow()[i].2)
    }

    /// The value of field `name` (with index id `id`), resolved once per event.
    pub fn value(&self, id: u32, name: &'a str) -> Option<&'a Value> {
        let i = self.index(id, name);
        self.entries.borrow()[i].2.value
    }

    /// The position of the field's entry, resolving it if needed.
    fn index(&self, id: u32, name: &'a str) -> usize {
        let same = |(i, n, _): &(u32, &str, Resolved<'a>)| {
            if id == u32::MAX {
                *i == u32::MAX && *n == name
            } else {
                *i == id
            }
        };
        if let Some(i) = self.entries.borrow().iter().position(same) {
            return i;
        }
        let value = match self.walked(id, name) {
            Some(v) => v,
            None => self.ev.field(name),
        };
        let lowered = match value {
            Some(Value::String(s)) => Some(Lowered::new(s)),
            _ => None,
        };
        let mut entries = self.entries.borrow_mut();
        entries.push((id, name, Resolved { value, lowered }));
        entries.len() - 1
    }
}

/// Rules read other fields of an event (`fieldref`) through the source's mapping.
impl FieldLookup for Event {
    fn field(&self, name: &str) -> Option<&Value> {
        Event::field(self, name)
    }
}

impl FieldLookup for FieldCache<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.ev.field(name)
    }
}
