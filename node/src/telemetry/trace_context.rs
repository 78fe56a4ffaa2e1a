//! W3C trace context on NATS messages: an event may carry a `traceparent` header (a collector
//! set it), which becomes a link of the batch span that processed it; an alert carries the
//! `traceparent` of the batch span that raised it, so an analyst can follow an alert back to the
//! batch and from there to the events' own traces.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The W3C header name.
pub const TRACEPARENT: &str = "traceparent";

/// A single `traceparent` value as a propagation carrier.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The span context a `traceparent` value names; `None` if it is not a valid one.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let cx = TraceContextPropagator::new().extract(&One(traceparent.trim()));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The `traceparent` value of a span context; `None` if it is not valid.
pub fn format(sc: &SpanContext) -> Option<String> {
    if !sc.is_valid() {
        return None;
    }
    let cx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The trace id in a `traceparent` value (32 hex digits), if it is valid.
pub fn trace_id(traceparent: &str) -> Option<String> {
    parse(traceparent).map(|sc| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let sc = parse(tp).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(format(&sc).as_deref(), Some(tp));
        assert_eq!(
            trace_id(tp).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert!(parse("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
        assert!(parse("not a traceparent").is_none());
    }
}
