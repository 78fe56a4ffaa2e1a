//! `impossible_travel`: compares each event of a group with the group's previous one, and fires
//! when the great-circle distance between their places is at least `min_distance` km and the
//! speed needed is above `speed` km/h.

use serde::Deserialize;

use super::{Firing, KindSpec, Observed, Params, Reads, on_globe};
use crate::correlate::seen::Seen;
use crate::state::{self, RawWriter, StateError};

/// Tag of `impossible_travel`'s persisted form.
pub(super) const TAG: u8 = 4;

/// `impossible_travel`.
pub(super) static IMPOSSIBLE_TRAVEL: KindSpec = KindSpec {
    name: "impossible_travel",
    needs_condition: false,
    reads: Reads::Place,
    field_key: "condition.field",
    // The last place is remembered for a day.
    default_timespan: Some("1d"),
    // Each jump is a finding of its own.
    suppress_by_default: false,
    no_group_by: None,
    keys: &["latitude", "longitude", "speed", "min_distance"],
    required_keys: &["latitude", "longitude"],
    check: super::no_check,
    expires: true,
};

/// An `impossible_travel` group's state: the previous sighting and its coordinates.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LastPlace(Option<(Seen, f64, f64)>);

/// The persisted form: (ms before the anchor, sequence, latitude, longitude).
#[derive(Deserialize)]
struct Wire(Option<(i64, u64, f64, f64)>);

impl LastPlace {
    /// Takes the event's place as the last one; fires if getting there from the previous one
    /// was too fast (not while `quiet`). An event without a usable place changes nothing.
    pub fn step(&mut self, p: &Params, ev: &Observed, quiet: bool) -> Option<Firing<'static>> {
        let (lat, lon) = ev.place.and_then(|(lat, lon)| on_globe(lat, lon))?;
        let at = ev.at;
        let (prev, plat, plon) = self.0.replace((at, lat, lon))?;
        let km = haversine_km(plat, plon, lat, lon);
        let hours = ((at.t - prev.t).abs() as f64 / 3_600_000.0).max(1.0 / 60.0);
        let fast = km >= p.detector.min_distance_km && km / hours > p.detector.speed_kmh;
        if !fast || quiet {
            return None;
        }
        let mut both = vec![prev, at];
        both.sort();
        let first = both[0].t;
        Some(Firing {
            measured: Some((km / hours).round()),
            ..Firing::over_timespan(p, at, Some(first), both, 2)
        })
    }

    /// The last sighting's time.
    pub fn newest(&self) -> Option<i64> {
        self.0.map(|(e, _, _)| e.t)
    }

    /// Whether no place is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Writes the persisted form.
    pub fn encode_into(&self, anchor: i64, w: &mut RawWriter) {
        w.some(self.0.is_some());
        if let Some((e, lat, lon)) = self.0 {
            w.i64(anchor - e.t);
            w.u64(e.seq);
            w.f64(lat);
            w.f64(lon);
        }
    }

    /// Reads what [`LastPlace::encode_into`] wrote.
    pub fn decode(anchor: i64, bytes: &[u8]) -> Result<LastPlace, StateError> {
        let (Wire(place), _) = state::decode_part::<Wire>(bytes)?;
        let place = place
            .map(|(d, seq, lat, lon)| {
                let t = state::time_before(anchor, d)?;
                Ok::<_, StateError>((Seen { t, seq }, lat, lon))
            })
            .transpose()?;
        Ok(LastPlace(place))
    }

    /// The last place of a group persisted in the legacy form.
    pub fn from_legacy(place: Option<(Seen, f64, f64)>) -> LastPlace {
        LastPlace(place)
    }
}

/// Great-circle distance in kilometres.
fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}
