//! Events: parsing a raw payload, extracting its event time, and reading Sigma fields through the
//! source's mapping.

use serde_json::Value;

use crate::dead_letter::DeadLetterReason;
use crate::json::kept::KeepTree;
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
    /// Where the event time was read: the source's own field, or an ingest-time fallback (for
    /// the node to count and log events placed by a shipper's time).
    pub time_from: TimeFrom,
    /// The event as the source produced it; always a JSON object.
    pub body: Value,
    /// Its logsource class (index into [`crate::mapping::CLASSES`]).
    pub class: usize,
}

/// Where an event's time was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFrom {
    /// One of the source's own time fields ([`SourceKind::time_fields`]), named.
    Source(&'static str),
    /// An ingest-time field ([`INGEST_TIME_FIELDS`]), named: none of the source's own was present.
    Ingest(&'static str),
    /// Given by the caller ([`Event::with_time`]).
    Given,
}

impl TimeFrom {
    /// The ingest-time field the time came from, if it was a fallback.
    pub fn fallback(self) -> Option<&'static str> {
        match self {
            TimeFrom::Ingest(field) => Some(field),
            TimeFrom::Source(_) | TimeFrom::Given => None,
        }
    }
}

/// Time fields that shippers add when they ingest a record, tried in this order when none of the
/// source's own time fields is present: `@timestamp` (Logstash, Beats and Elastic Agent, Fluent
/// Bit's Logstash format, OpenSearch; Elasticsearch data streams require it) and `timestamp`
/// (Vector's log schema and many JSON shippers). The event is then placed at the time the
/// shipper gives, usually when it read the record, which is close to the event time for live
/// collection and can be later for a backfill. ECS `event.ingested` / `event.created` are not
/// used: an Elastic document without `@timestamp` is not valid, so they never help.
pub const INGEST_TIME_FIELDS: &[&str] = &["@timestamp", "timestamp"];

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
    /// The payload is not UTF-8.
    #[error("{0}")]
    InvalidUtf8(json::StrictError),
    /// An object of the payload names a key twice.
    #[error("{0}")]
    DuplicateKey(json::StrictError),
    /// The payload nests arrays and objects deeper than [`json::MAX_DEPTH`].
    #[error("{0}")]
    TooDeep(json::StrictError),
    /// The payload is JSON but not an object.
    #[error("payload is a JSON {0}, expected one JSON object per event")]
    NotAnObject(&'static str),
    /// None of the source's time fields, nor an ingest-time field, is present.
    #[error("no event time: none of the {kind} time fields ({fields}) is present")]
    MissingTime {
        /// The source whose fields were searched.
        kind: SourceKind,
        /// The fields that were tried, the source's own and then the ingest-time fallbacks.
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
            BadInput::InvalidUtf8(_) => DeadLetterReason::InvalidUtf8,
            BadInput::DuplicateKey(_) => DeadLetterReason::DuplicateKey,
            BadInput::TooDeep(_) => DeadLetterReason::TooDeep,
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
    /// Parses one raw payload of `source`, enforcing `max_bytes` and extracting event time. The
    /// JSON is read strictly ([`json::parse_strict`]): an object with a duplicate key, nesting
    /// deeper than [`json::MAX_DEPTH`] and bytes that are not UTF-8 are refused with their own
    /// reasons.
    pub fn parse(source: SourceKind, payload: &[u8], max_bytes: usize) -> Result<Event, BadInput> {
        Event::parse_kept(source, payload, max_bytes, KeepTree::everything())
    }

    /// [`Event::parse`], building only the parts of the body under `keep` (the rest is checked
    /// as strictly and dropped): with the rule set's [`crate::sigma::ReadPlan`], the event the
    /// rules see is the same, and costs a fraction to build. Refuses the same payloads with the
    /// same errors.
    pub fn parse_kept(
        source: SourceKind,
        payload: &[u8],
        max_bytes: usize,
        keep: &KeepTree,
    ) -> Result<Event, BadInput> {
        if payload.len() > max_bytes {
            return Err(BadInput::Oversize {
                size: payload.len(),
                max: max_bytes,
            });
        }
        let body = json::kept::parse_kept(payload, keep).map_err(|e| match e {
            json::StrictError::Malformed(m) => BadInput::MalformedJson(m),
            e @ json::StrictError::InvalidUtf8 { .. } => BadInput::InvalidUtf8(e),
            e @ json::StrictError::DuplicateKey { .. } => BadInput::DuplicateKey(e),
            e @ json::StrictError::TooDeep { .. } => BadInput::TooDeep(e),
        })?;
        Event::from_value(source, body)
    }

    /// Builds an event from an already parsed JSON value.
    pub fn from_value(source: SourceKind, body: Value) -> Result<Event, BadInput> {
        if !body.is_object() {
            return Err(BadInput::NotAnObject(json::kind_name(&body)));
        }
        let (time_ms, time_from) = event_time(source, &body)?;
        let class = crate::mapping::classify(source, &body);
        Ok(Event {
            source,
            time_ms,
            time_from,
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
            time_from: TimeFrom::Given,
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

/// Extracts the event time of `body` (see [`event_time`]).
pub fn extract_time(source: SourceKind, body: &Value) -> Result<i64, BadInput> {
    event_time(source, body).map(|(ms, _)| ms)
}

/// Extracts the event time of `body` and where it was read: the first present time field of
/// `source`, else the first present [`INGEST_TIME_FIELDS`] field. A present field that holds no
/// usable time is an error ([`BadInput::BadTime`]), not a reason to try the next one.
pub fn event_time(source: SourceKind, body: &Value) -> Result<(i64, TimeFrom), BadInput> {
    for &field in source.time_fields() {
        if let Some(ms) = get_field(body, field).and_then(|v| time_in(field, v)) {
            return ms.map(|ms| (ms, TimeFrom::Source(field)));
        }
    }
    ingest_time(source, body)
}

/// [`event_time`] when none of the source's own time fields is present (kept off the common
/// path; allocates only for the error).
#[cold]
fn ingest_time(source: SourceKind, body: &Value) -> Result<(i64, TimeFrom), BadInput> {
    let own = source.time_fields();
    // Fields the source already reads as its own were tried.
    let fallbacks = INGEST_TIME_FIELDS.iter().filter(|f| !own.contains(f));
    for &field in fallbacks.clone() {
        if let Some(ms) = get_field(body, field).and_then(|v| time_in(field, v)) {
            return ms.map(|ms| (ms, TimeFrom::Ingest(field)));
        }
    }
    let mut fields = own.join(", ");
    let fallbacks: Vec<&str> = fallbacks.copied().collect();
    if !fallbacks.is_empty() {
        fields.push_str(", or the ingest-time ");
        fields.push_str(&fallbacks.join(", "));
    }
    Err(BadInput::MissingTime {
        kind: source,
        fields,
    })
}

/// The time held by `v`, the value of time field `field` (`None` for null: as if absent).
#[inline]
fn time_in(field: &'static str, v: &Value) -> Option<Result<i64, BadInput>> {
    let parsed = match v {
        Value::String(s) => time::parse_timestamp(s),
        Value::Number(n) => time::from_epoch_number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Null => return None,
        other => Err(TimeError::Unparsable(other.to_string())),
    };
    Some(parsed.map_err(|error| BadInput::BadTime { field, error }))
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
    fn ingest_time_is_the_fallback() {
        let s = SourceKind::AwsCloudtrail;
        // Shipped through Logstash or Elastic: `@timestamp` and no `eventTime`.
        let shipped = json!({"eventName": "StopLogging", "@timestamp": "2024-03-01T10:00:00.000Z"});
        let ev = Event::from_value(s, shipped).unwrap();
        assert_eq!(ev.time_ms, T);
        assert_eq!(ev.time_from, TimeFrom::Ingest("@timestamp"));
        assert_eq!(ev.time_from.fallback(), Some("@timestamp"));
        let vector = json!({"eventName": "StopLogging", "timestamp": 1_709_287_200});
        assert_eq!(
            event_time(s, &vector).unwrap(),
            (T, TimeFrom::Ingest("timestamp"))
        );

        // The source's own field comes first.
        let both =
            json!({"eventTime": "2024-03-01T10:00:00Z", "@timestamp": "2024-03-01T10:05:00Z"});
        let ev = Event::from_value(s, both).unwrap();
        assert_eq!(ev.time_ms, T);
        assert_eq!(ev.time_from, TimeFrom::Source("eventTime"));
        assert_eq!(ev.time_from.fallback(), None);

        // A present but broken own time is reported, not papered over.
        let broken = json!({"eventTime": "soon", "@timestamp": "2024-03-01T10:05:00Z"});
        assert_eq!(
            Event::from_value(s, broken).unwrap_err().reason(),
            DeadLetterReason::BadTime
        );

        // Neither: still missing, and the error names every field tried.
        let e = Event::from_value(s, json!({"eventName": "StopLogging"})).unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::MissingTime);
        let msg = e.to_string();
        for field in ["eventTime", "@timestamp", "timestamp"] {
            assert!(msg.contains(field), "{msg}");
        }

        // Sources that read `@timestamp` as their own time report it as their own.
        let syslog = json!({"@timestamp": "2024-03-01T10:00:00Z"});
        assert_eq!(
            event_time(SourceKind::Syslog, &syslog).unwrap(),
            (T, TimeFrom::Source("@timestamp"))
        );
        let e = event_time(SourceKind::Syslog, &json!({})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no event time: none of the syslog time fields (@timestamp, timestamp, time) is present"
        );
        assert_eq!(Event::with_time(s, T, json!({})).time_from, TimeFrom::Given);
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
