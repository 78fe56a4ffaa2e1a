//! Event-time parsing and formatting. Times are milliseconds since the Unix epoch, UTC.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

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
    let ms = if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        dt.timestamp_millis()
    } else {
        let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .ok_or_else(|| TimeError::Unparsable(s.to_owned()))?;
        Utc.from_utc_datetime(&naive).timestamp_millis()
    };
    check_range(ms, s)
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

    #[test]
    fn formats_round_trip() {
        let ms = 1_709_287_200_123;
        assert_eq!(format_ms(ms), "2024-03-01T10:00:00.123Z");
        assert_eq!(parse_timestamp(&format_ms(ms)).unwrap(), ms);
    }
}
