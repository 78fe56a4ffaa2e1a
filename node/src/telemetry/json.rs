//! Logs as one JSON object per line, for collectors (Kubernetes, Fluent Bit, Vector) rather than
//! people: `timestamp`, `level`, `target`, `message`, the event's own fields, and the context a
//! SOC engineer filters by: `node`, and from the enclosing spans `force` and `trace_id` (the
//! trace of the force batch the event belongs to, as exported over OTLP).

use std::io::Write;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The node id written on every log line of a node (set once at start).
static NODE: OnceLock<String> = OnceLock::new();

/// Names the node on every JSON log line from now on.
pub fn set_node(node: &str) {
    let _ = NODE.set(node.to_owned());
}

/// Span fields carried onto the log lines of events inside the span.
const CARRIED: [&str; 2] = ["force", "trace_id"];

/// The carried fields a span has recorded (in its extensions).
#[derive(Default)]
struct Carried(Vec<(&'static str, String)>);

impl Visit for Carried {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(name) = CARRIED.iter().find(|n| **n == field.name()) {
            self.0.retain(|(n, _)| n != name);
            self.0.push((name, value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if CARRIED.contains(&field.name()) {
            self.record_str(field, format!("{value:?}").trim_matches('"'));
        }
    }
}

/// Records the carried fields (`force`, `trace_id`) of every span, for [`JsonLogs`].
pub struct SpanFields;

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut carried = Carried::default();
        attrs.record(&mut carried);
        if let Some(span) = ctx.span(id)
            && !carried.0.is_empty()
        {
            span.extensions_mut().insert(carried);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<Carried>() {
            Some(c) => values.record(c),
            None => {
                let mut c = Carried::default();
                values.record(&mut c);
                if !c.0.is_empty() {
                    ext.insert(c);
                }
            }
        }
    }
}

/// Collects an event's fields into a JSON object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), format!("{value:#}").into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

/// Writes every event as one JSON line to the writer `make()` returns.
pub struct JsonLogs<W> {
    make: W,
}

impl<W, T> JsonLogs<W>
where
    W: Fn() -> T,
    T: Write,
{
    /// JSON lines to the writers `make` returns (e.g. `std::io::stderr`).
    pub fn new(make: W) -> Self {
        JsonLogs { make }
    }
}

impl<S, W, T> Layer<S> for JsonLogs<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: Fn() -> T + 'static,
    T: Write,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            nmc_shared::time::format_ms(crate::clock::now_ms()).into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(node) = NODE.get() {
            line.insert("node".into(), node.as_str().into());
        }
        // Innermost span first: its values win.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(c) = span.extensions().get::<Carried>() {
                    for (name, value) in &c.0 {
                        line.entry(*name).or_insert_with(|| value.as_str().into());
                    }
                }
            }
        }
        event.record(&mut Fields(&mut line));
        let mut bytes = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        bytes.push(b'\n');
        let _ = (self.make)().write_all(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_object_per_line_with_the_span_context() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(SpanFields)
            .with(JsonLogs::new(move || out.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!("batch", force = "kent", trace_id = tracing::field::Empty);
            span.record("trace_id", "0af7651916cd43dd8448eb211c80319c");
            let _in = span.enter();
            tracing::warn!(seq = 7u64, reason = "oversize", "dead-lettering event");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "dead-lettering event");
        assert_eq!(v["force"], "kent");
        assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["reason"], "oversize");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
