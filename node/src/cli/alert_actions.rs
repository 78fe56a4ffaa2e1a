//! `nmc alerts ack|assign|close|reopen|show`: the alert lifecycle from the command line (the
//! console does the same through [`crate::alert_state`]).

use anyhow::Result;
use async_nats::jetstream;
use nmc_shared::ForceId;
use nmc_shared::lifecycle::{Action, Outcome};
use uuid::Uuid;

use super::NatsArgs;
use crate::alert_state;

/// Which alert, who acts, why.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Alert id.
    pub id: Uuid,
    /// The alert's force.
    #[arg(long)]
    pub force: ForceId,
    /// Who acts (an e-mail address or user id; recorded in the audit trail).
    #[arg(long)]
    pub by: String,
    /// Why, in your words (kept in the audit trail).
    #[arg(long)]
    pub note: Option<String>,
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Outcome on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum OutcomeArg {
    /// A real attack or policy breach.
    TruePositive,
    /// Real activity, allowed or harmless.
    Benign,
    /// The rule matched what it should not have.
    FalsePositive,
}

impl From<OutcomeArg> for Outcome {
    fn from(o: OutcomeArg) -> Self {
        match o {
            OutcomeArg::TruePositive => Outcome::TruePositive,
            OutcomeArg::Benign => Outcome::Benign,
            OutcomeArg::FalsePositive => Outcome::FalsePositive,
        }
    }
}

/// Runs one lifecycle action and prints the new state (JSON).
pub async fn act(t: Target, action: Action) -> Result<()> {
    let js = jetstream::new(t.nats.connect("nmc alerts").await?);
    let states = alert_state::open(&js).await?;
    let (state, _) = states
        .act(
            &t.force,
            t.id,
            &action,
            &t.by,
            t.note.as_deref(),
            crate::clock::now_ms(),
        )
        .await?;
    println!(
        "{}",
        serde_json::json!({"alert": t.id, "force": t.force, "lifecycle": state})
    );
    Ok(())
}

/// Prints an alert's lifecycle, audit trail and delivery records (JSON).
pub async fn show(id: Uuid, force: ForceId, nats: NatsArgs) -> Result<()> {
    let js = jetstream::new(nats.connect("nmc alerts").await?);
    let states = alert_state::open(&js).await?;
    let lifecycle = states.get(&force, id).await?.map(|(l, _)| l);
    let audit = states.audit_trail(&force, id).await?;
    let deliveries = crate::notify::delivery::open(&js)
        .await?
        .list(&format!("{force}.{id}."))
        .await?;
    let deliveries: Vec<_> = deliveries
        .into_iter()
        .map(|(k, r)| serde_json::json!({"key": k, "record": r}))
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "alert": id,
            "force": force,
            "lifecycle": lifecycle,
            "audit": audit,
            "deliveries": deliveries,
        }))?
    );
    Ok(())
}
