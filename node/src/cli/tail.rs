//! `nmc alerts tail` and `nmc dlq tail`: follow a stream, one JSON line per message (an alert
//! with the `trace_id` of the batch that raised it; a dead letter with its reason and origin).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;
use nmc_shared::ForceId;
use nmc_shared::subject::{ALERTS_ALL, ALERTS_STREAM, DLQ_ALL, DLQ_STREAM};
use serde_json::json;

use super::NatsArgs;
use crate::bus;
use crate::telemetry::trace_context;

/// Arguments of the tail commands.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Only this force.
    #[arg(long)]
    force: Option<ForceId>,
    /// Start from the beginning of the stream instead of new messages only.
    #[arg(long)]
    all: bool,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds without a message.
    #[arg(long)]
    idle: Option<f64>,
}

/// Which stream to follow.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `NMC_ALERTS`: prints the alert JSON.
    Alerts,
    /// `NMC_DLQ`: prints reason, error, origin and payload.
    Dlq,
}

/// A push reader of `filter` on `stream` that a force's alert reader is allowed to open: no
/// stream info, no pull requests, a named consumer whose filter travels in the create
/// subject (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`, which the server checks
/// against the request and `nmc auth nats-config` permits per force), delivered to this
/// client's own inbox.
async fn filtered_reader(
    client: &async_nats::Client,
    js: &jetstream::Context,
    stream: &str,
    filter: String,
    deliver_policy: DeliverPolicy,
) -> Result<jetstream::consumer::push::Ordered> {
    let inbox = client.new_inbox();
    let name = format!("tail_{}", inbox.rsplit('.').next().unwrap_or("0"));
    let consumer = js
        .get_stream_no_info(stream)
        .await
        .with_context(|| format!("opening stream {stream}"))?
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: inbox,
            name: Some(name),
            filter_subject: filter.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await;
    let consumer = match consumer {
        Ok(c) => c,
        Err(e) => {
            if let jetstream::stream::ConsumerErrorKind::JetStream(js_err) = e.kind()
                && js_err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            {
                return Err(bus::provision::Missing {
                    what: "stream",
                    name: stream.to_owned(),
                }
                .into());
            }
            return Err(e).with_context(|| {
                format!("reading {filter} from {stream} (may this identity read it?)")
            });
        }
    };
    Ok(consumer.messages().await?)
}

/// Runs a tail command.
pub async fn run(kind: Kind, args: TailArgs) -> Result<()> {
    let client = args.nats.connect("nmc tail").await?;
    let js = jetstream::new(client.clone());
    let (stream, filter) = match (kind, &args.force) {
        (Kind::Alerts, Some(f)) => (ALERTS_STREAM, nmc_shared::subject::alerts_of(f)),
        (Kind::Alerts, None) => (ALERTS_STREAM, ALERTS_ALL.to_owned()),
        (Kind::Dlq, Some(f)) => (DLQ_STREAM, nmc_shared::subject::dlq(f)),
        (Kind::Dlq, None) => (DLQ_STREAM, DLQ_ALL.to_owned()),
    };
    let deliver = if args.all {
        DeliverPolicy::All
    } else {
        DeliverPolicy::New
    };
    let mut msgs = filtered_reader(&client, &js, stream, filter, deliver).await?;
    let idle = args.idle.map(Duration::from_secs_f64);
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    while args.count.is_none_or(|c| seen < c) {
        let next = match idle {
            Some(d) => match tokio::time::timeout(d, msgs.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => msgs.next().await,
        };
        let Some(m) = next else { break };
        let m = m?;
        let line = match kind {
            // The alert as published, with the trace id of the batch that raised it (from its
            // `traceparent` header) to look the batch up in the tracing backend.
            Kind::Alerts => {
                let trace_id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(trace_context::TRACEPARENT))
                    .and_then(|tp| trace_context::trace_id(tp.as_str()));
                match (
                    serde_json::from_slice::<serde_json::Value>(&m.payload),
                    trace_id,
                ) {
                    (Ok(serde_json::Value::Object(mut alert)), Some(id)) => {
                        alert.insert("trace_id".into(), id.into());
                        serde_json::Value::Object(alert).to_string()
                    }
                    _ => String::from_utf8_lossy(&m.payload).into_owned(),
                }
            }
            Kind::Dlq => {
                let h = |k: &str| {
                    m.headers
                        .as_ref()
                        .and_then(|h| h.get(k))
                        .map(|v| v.as_str().to_owned())
                };
                let seq: Option<u64> = h(bus::H_SEQ).and_then(|s| s.parse().ok());
                json!({
                    "subject": m.subject.as_str(),
                    "reason": h(bus::H_REASON),
                    "error": h(bus::H_ERROR),
                    "from_subject": h(bus::H_SUBJECT),
                    "seq": seq,
                    "node": h(bus::H_NODE),
                    "payload": String::from_utf8_lossy(&m.payload),
                })
                .to_string()
            }
        };
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        seen += 1;
    }
    Ok(())
}
