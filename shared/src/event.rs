//! Events: parsing a raw payload, extracting its event time, and reading Sigma fields through the
//! source's mapping.

use serde_json::Value;

use crate::dead_letter::DeadLetterReason;
use crate::json::{self, get_field};
use crate::source::SourceKind;
use crate::time::{self, TimeError};

/// One parsed event: its source, its event time and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The kind of telemetry.
    pub source: SourceKind,
    /// Event time, milliseconds since the epoch (UTC).
    pub time_ms: i64,
    /// The event as the source produced it; always a JSON object.
    pub body: Value,
    /// Its logsource class (index into [`crate::mapping::CLASSES`]).
    pub class: usize,
}

/// Why a payload cannot be processed. Each variant has a stable [`BadInput::reason`], the
/// dead-letter reason, so operators can count and filter by kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadInput {
    /// The payload is larger than the configured maximum.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes (nmc `max_event_bytes`)")]
    Oversize {
        /// Payload size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// The payload is not JSON.
    #[error("payload is not valid JSON: {0}")]
    MalformedJson(String),
    /// The payload is JSON but not an object.
    #[error("payload is a JSON {0}, expected one JSON object per event")]
    NotAnObject(&'static str),
    /// None of the source's time fields is present.
    #[error("no event time: none of the {kind} time fields ({fields}) is present")]
    MissingTime {
        /// The source whose fields were searched.
        kind: SourceKind,
        /// The fields that were tried.
        fields: String,
    },
    /// A time field is present but not a usable time.
    #[error("bad event time in `{field}`: {error}")]
    BadTime {
        /// The field holding the bad value.
        field: &'static str,
        /// What is wrong with it.
        error: TimeError,
    },
}

impl BadInput {
    /// The dead-letter reason of this input.
    pub fn reason(&self) -> DeadLetterReason {
        match self {
            BadInput::Oversize { .. } => DeadLetterReason::Oversize,
            BadInput::MalformedJson(_) => DeadLetterReason::MalformedJson,
            BadInput::NotAnObject(_) => DeadLetterReason::NotAnObject,
            BadInput::MissingTime { .. } => DeadLetterReason::MissingTime,
            BadInput::BadTime { .. } => DeadLetterReason::BadTime,
        }
    }

    /// The reason's stable code (`Nmc-Reason` header, metrics): `self.reason().as_str()`.
    pub fn code(&self) -> &'static str {
        self.reason().as_str()
    }
}

impl Event {
    /// Parses one raw payload of `source`, enforcing `max_bytes` and extracting event time.
    pub fn parse(source: SourceKind, payload: &[u8], max_bytes: usize) -> Result<Event, BadInput> {
        if payload.len() > max_bytes {
            return Err(BadInput::Oversize {
                size: payload.len(),
                max: max_bytes,
            });
        }
        let body: Value =
            serde_json::from_slice(payload).map_err(|e| BadInput::MalformedJson(e.to_string()))?;
        Event::from_value(source, body)
    }

    /// Builds an event from an already parsed JSON value.
    pub fn from_value(source: SourceKind, body: Value) -> Result<Event, BadInput> {
        if !body.is_object() {
            return Err(BadInput::NotAnObject(json::kind_name(&body)));
        }
        let time_ms = extract_time(source, &body)?;
        let class = crate::mapping::classify(source, &body);
        Ok(Event {
            source,
            time_ms,
            body,
            class,
        })
    }

    /// An event with a known time (tests, or times taken from elsewhere).
    pub fn with_time(source: SourceKind, time_ms: i64, body: Value) -> Event {
        let class = crate::mapping::classify(source, &body);
        Event {
            source,
            time_ms,
            body,
            class,
        }
    }

    /// The event's logsource class.
    pub fn class(&self) -> &'static crate::mapping::EventClass {
        &crate::mapping::CLASSES.all[self.class]
    }

    /// Reads a Sigma field through the source's field mapping (see [`crate::mapping::lookup`]).
    pub fn field(&self, name: &str) -> Option<&Value> {
        crate::mapping::lookup(self.class(), &self.body, name)
    }
}

/// Extracts the event time of `body` from the first present time field of `source`.
pub fn extract_time(source: SourceKind, body: &Value) -> Result<i64, BadInput> {
    for &field in source.time_fields() {
        let Some(v) = get_field(body, field) else {
            continue;
        };
        let parsed = match v {
            Value::String(s) => time::parse_timestamp(s),
            Value::Number(n) => time::from_epoch_number(n.as_f64().unwrap_or(f64::NAN)),
            Value::Null => continue,
            other => Err(TimeError::Unparsable(other.to_string())),
        };
        return parsed.map_err(|error| BadInput::BadTime { field, error });
    }
    Err(BadInput::MissingTime {
        kind: source,
        fields: source.time_fields().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_709_287_200_000; // 2024-03-01T10:00:00Z

    fn time_of(source: SourceKind, v: Value) -> Result<i64, BadInput> {
        Event::from_value(source, v).map(|e| e.time_ms)
    }

    #[test]
    fn time_per_source_and_shape() {
        use SourceKind::*;
        let cases = [
            (EntraSignin, json!({"time": "2024-03-01T10:00:00Z"})),
            (
                EntraSignin,
                json!({"createdDateTime": "2024-03-01T10:00:00Z"}),
            ),
            (
                EntraSignin,
                json!({"properties": {"createdDateTime": "2024-03-01T10:00:00Z"}}),
            ),
            (
                EntraSignin,
                json!({"TimeGenerated": "2024-03-01T10:00:00.000Z"}),
            ),
            (M365Audit, json!({"CreationTime": "2024-03-01T10:00:00"})),
            (
                AzureActivity,
                json!({"eventTimestamp": "2024-03-01T10:00:00Z"}),
            ),
            (AwsCloudtrail, json!({"eventTime": "2024-03-01T10:00:00Z"})),
            (
                WindowsSecurity,
                json!({"Event": {"System": {"TimeCreated": {"#attributes": {"SystemTime": "2024-03-01T10:00:00.000000Z"}}}}}),
            ),
            (Sysmon, json!({"UtcTime": "2024-03-01 10:00:00.000"})),
            (Syslog, json!({"@timestamp": 1_709_287_200})),
        ];
        for (source, body) in cases {
            assert_eq!(time_of(source, body.clone()).unwrap(), T, "{source} {body}");
        }
    }

    #[test]
    fn bad_input_kinds() {
        let s = SourceKind::AwsCloudtrail;
        let e = Event::parse(s, b"{not json", 1024).unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::MalformedJson);
        assert_eq!(e.code(), "malformed_json");
        assert_eq!(
            Event::parse(s, b"[1,2]", 1024).unwrap_err().code(),
            "not_an_object"
        );
        assert_eq!(
            Event::parse(s, b"{}", 1024).unwrap_err().code(),
            "missing_time"
        );
        let e = Event::parse(s, br#"{"eventTime": "soon"}"#, 1024).unwrap_err();
        assert_eq!(e.code(), "bad_time");
        assert!(e.to_string().contains("eventTime"), "{e}");
        let e = Event::parse(s, br#"{"eventTime": 12}"#, 1024).unwrap_err();
        assert_eq!(e.code(), "bad_time");
        let big = format!(
            r#"{{"eventTime":"2024-03-01T10:00:00Z","x":"{}"}}"#,
            "a".repeat(100)
        );
        assert_eq!(
            Event::parse(s, big.as_bytes(), 64).unwrap_err().code(),
            "oversize"
        );
        assert!(Event::parse(s, big.as_bytes(), 1024).is_ok());
    }
}
