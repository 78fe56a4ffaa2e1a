//! Event-time parsing and formatting. Times are milliseconds since the Unix epoch, UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeZone, Utc};

/// Earliest event time nmc accepts (2000-01-01T00:00:00Z): older stamps are broken clocks.
pub const MIN_EVENT_TIME_MS: i64 = 946_684_800_000;
/// Latest event time nmc accepts (2100-01-01T00:00:00Z): later stamps are broken clocks.
pub const MAX_EVENT_TIME_MS: i64 = 4_102_444_800_000;

/// Why a time value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The string is not a timestamp in any accepted form.
    #[error("`{0}` is not an RFC 3339 / ISO 8601 timestamp or epoch number")]
    Unparsable(String),
    /// The value parsed but lies outside the accepted range.
    #[error("event time {0} is outside 2000-01-01..2100-01-01; check the collector's clock")]
    OutOfRange(String),
}

/// Parses a timestamp string: RFC 3339, or ISO 8601 without zone (taken as UTC, as Microsoft 365
/// and Sysmon write them), with `T` or a space between date and time.
pub fn parse_timestamp(s: &str) -> Result<i64, TimeError> {
    let s = s.trim();
    let ms = match parse_common(s) {
        Some(ms) => ms,
        None => parse_by_chrono(s)?,
    };
    check_range(ms, s)
}

/// Every form [`parse_timestamp`] accepts, read by chrono (before the range check).
fn parse_by_chrono(s: &str) -> Result<i64, TimeError> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.timestamp_millis());
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .ok_or_else(|| TimeError::Unparsable(s.to_owned()))?;
    Ok(Utc.from_utc_datetime(&naive).timestamp_millis())
}

/// The forms collectors write, read without chrono's format-string parser (about 1% of a
/// node's time on Microsoft 365 records, which carry no zone; chrono still checks the date): `YYYY-MM-DDTHH:MM:SS`, then
/// 1 to 9 fraction digits or none, then `Z`, `±HH:MM` or nothing (nothing also after a space
/// for `T`). `None` for anything else, a leap second or an impossible date included: chrono
/// reads those (or refuses them) as before, so the answers are the same.
fn parse_common(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let digit = |i: usize| {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    // Two-digit fields fit any integer type; chrono checks the calendar and the clock (no
    // leap second: `second` 60 is refused here).
    let date = NaiveDate::from_ymd_opt(
        (two(0)? * 100 + two(2)?) as i32,
        two(5)? as u32,
        two(8)? as u32,
    )?;
    let time = NaiveTime::from_hms_opt(two(11)? as u32, two(14)? as u32, two(17)? as u32)?;
    let mut at = 19;
    let mut nanos = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        for i in at + 1..at + 1 + digits {
            nanos = nanos * 10 + digit(i)?;
        }
        nanos *= 10_i64.pow(9 - digits as u32);
        at += 1 + digits;
    }
    let offset_s = match (b[10], &b[at..]) {
        (b'T' | b' ', []) | (b'T', [b'Z']) => 0,
        (b'T', [sign @ (b'+' | b'-'), _, _, b':', _, _]) => {
            let (h, m) = (two(at + 1)?, two(at + 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let east = h * 3600 + m * 60;
            if *sign == b'+' { east } else { -east }
        }
        _ => return None,
    };
    let secs = date.and_time(time).and_utc().timestamp();
    Some((secs - offset_s) * 1000 + nanos / 1_000_000)
}

/// Reads an epoch number: values above 10^11 are milliseconds, smaller ones seconds.
pub fn from_epoch_number(n: f64) -> Result<i64, TimeError> {
    if !n.is_finite() {
        return Err(TimeError::Unparsable(n.to_string()));
    }
    let ms = if n.abs() >= 1e11 { n } else { n * 1000.0 };
    check_range(ms as i64, &n.to_string())
}

fn check_range(ms: i64, shown: &str) -> Result<i64, TimeError> {
    if (MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(TimeError::OutOfRange(shown.to_owned()))
    }
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds (`...T12:00:00.000Z`).
pub fn format_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let z = parse_timestamp("2024-03-01T10:00:00Z").unwrap();
        assert_eq!(z, 1_709_287_200_000);
        assert_eq!(parse_timestamp("2024-03-01T10:00:00.000Z").unwrap(), z);
        assert_eq!(parse_timestamp("2024-03-01T11:00:00+01:00").unwrap(), z);
        assert_eq!(parse_timestamp("2024-03-01T10:00:00").unwrap(), z);
        assert_eq!(parse_timestamp("2024-03-01 10:00:00.000").unwrap(), z);
        assert_eq!(
            parse_timestamp("2024-03-01T10:00:00.1234567Z").unwrap(),
            z + 123
        );
        assert_eq!(
            parse_timestamp("2019-10-18T04:45:48.0729893-05:00").unwrap(),
            parse_timestamp("2019-10-18T09:45:48.072Z").unwrap()
        );
    }

    #[test]
    fn rejects_garbage_and_broken_clocks() {
        assert!(matches!(
            parse_timestamp("yesterday"),
            Err(TimeError::Unparsable(_))
        ));
        assert!(matches!(
            parse_timestamp("1970-01-01T00:00:00Z"),
            Err(TimeError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_timestamp("2999-01-01T00:00:00Z"),
            Err(TimeError::OutOfRange(_))
        ));
    }

    #[test]
    fn epoch_numbers() {
        assert_eq!(
            from_epoch_number(1_709_287_200.0).unwrap(),
            1_709_287_200_000
        );
        assert_eq!(
            from_epoch_number(1_709_287_200_000.0).unwrap(),
            1_709_287_200_000
        );
        assert!(from_epoch_number(5.0).is_err());
    }

    /// Near-timestamps: dates and times around the edges of their ranges (February 29th,
    /// hour 24, second 60), any separator of a small alphabet, a tail from the forms chrono
    /// knows, and now and then one character changed.
    fn near_timestamp() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let date = (1995u32..2105, 0u32..14, 0u32..33);
        let time = (0u32..26, 0u32..61, 0u32..62);
        let sep = prop::sample::select(vec!['T', 'T', 'T', ' ', 't', 'x']);
        let tail = prop_oneof![
            Just(String::new()),
            Just("Z".to_owned()),
            Just("z".to_owned()),
            "\\.[0-9]{0,11}",
            "\\.[0-9]{1,10}(Z|[+-][0-9]{2}:[0-9]{2}|[+-][0-9]{4})?",
            "[+-][0-2][0-9]:[0-6][0-9]",
            "[ Zz+:.0-9-]{1,4}",
        ];
        let change = prop::option::weighted(
            0.2,
            (
                any::<prop::sample::Index>(),
                prop::sample::select(vec!['0', '9', '-', ':', 'T', ' ', '+']),
            ),
        );
        (date, time, sep, tail, change).prop_map(|((y, mo, d), (h, mi, se), sep, tail, change)| {
            let mut s = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{se:02}{tail}");
            if let Some((at, c)) = change {
                let at = at.index(s.len());
                s.replace_range(at..at + 1, &c.to_string());
            }
            s
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// Wherever the hand-written reader answers, chrono answers the same.
        #[test]
        fn the_common_forms_read_as_chrono_reads_them(s in near_timestamp()) {
            if let Some(ms) = parse_common(&s) {
                proptest::prop_assert_eq!(Ok(ms), parse_by_chrono(&s), "{}", s);
            }
        }
    }

    /// The generator gives the hand-written reader work: a good part of its strings are read
    /// by it (else the property above would hold of nothing), and of those, forms with and
    /// without zone and fraction.
    #[test]
    fn near_timestamps_are_often_common_forms() {
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = near_timestamp();
        let read: Vec<String> = (0..2000)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current())
            .filter(|s| parse_common(s).is_some())
            .collect();
        assert!(read.len() > 200, "only {} of 2000 read", read.len());
        for shape in ["Z", "+", ".", " "] {
            assert!(read.iter().any(|s| s.contains(shape)), "none with {shape}");
        }
    }

    #[test]
    fn the_common_forms_are_read_without_chrono() {
        for s in [
            "2024-03-01T10:00:00Z",
            "2024-03-01T10:00:00",
            "2024-03-01 10:00:00.000",
            "2024-02-29T23:59:59.9999999+05:30",
            "2019-10-18T04:45:48.0729893-05:00",
            "2000-01-01T00:00:00-00:00",
        ] {
            let ms = parse_common(s).unwrap_or_else(|| panic!("{s} is a common form"));
            assert_eq!(Ok(ms), parse_by_chrono(s), "{s}");
        }
        for s in [
            "2023-02-29T10:00:00Z",
            "2024-03-01T10:00:60Z",
            "2024-03-01 10:00:00Z",
            "2024-03-01T10:00:00.Z",
            "2024-03-01T10:00:00.1234567890Z",
            "2024-03-01T10:00:00z",
            "2024-03-01T10:00:00+0100",
            "2024-3-01T10:00:00Z",
        ] {
            assert_eq!(parse_common(s), None, "{s} is left to chrono");
        }
    }

    #[test]
    fn formats_round_trip() {
        let ms = 1_709_287_200_123;
        assert_eq!(format_ms(ms), "2024-03-01T10:00:00.123Z");
        assert_eq!(parse_timestamp(&format_ms(ms)).unwrap(), ms);
    }
}
