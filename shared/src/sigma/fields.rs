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

/// Resolved fields of one event, filled on demand.
pub struct FieldCache<'a> {
    /// The event.
    pub ev: &'a Event,
    entries: RefCell<Vec<(&'a str, Rc<Resolved<'a>>)>>,
}

impl<'a> FieldCache<'a> {
    /// An empty cache for `ev`.
    pub fn new(ev: &'a Event) -> Self {
        FieldCache {
            ev,
            entries: RefCell::new(Vec::with_capacity(16)),
        }
    }

    /// The field `name`, resolved once per event.
    pub fn get(&self, name: &'a str) -> Rc<Resolved<'a>> {
        if let Some((_, r)) = self.entries.borrow().iter().find(|(n, _)| *n == name) {
            return r.clone();
        }
        let value = self.ev.field(name);
        let lowered = match value {
            Some(Value::String(s)) => Some(Lowered::new(s)),
            _ => None,
        };
        let r = Rc::new(Resolved { value, lowered });
        self.entries.borrow_mut().push((name, r.clone()));
        r
    }
}

impl FieldLookup for FieldCache<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.ev.field(name)
    }
}
