//! `nmc cluster status`: nodes, who owns each force, its progress and lag, and the rule pack,
//! read from the coordination buckets (no node is asked anything, nothing is changed).

use anyhow::{Context, Result};
use async_nats::jetstream;
use serde_json::json;

use super::NatsArgs;
use crate::cluster::{self, lease, membership, onboarding};
use crate::rules::{RulePack, pack};

/// `nmc cluster ...`
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Show nodes, force owners, lag per force and the rule pack in force.
    Status {
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
}

/// Runs `nmc cluster ...`.
pub async fn run(cmd: ClusterCmd) -> Result<()> {
    let ClusterCmd::Status { json, nats } = cmd;
    let client = nats.connect("nmc cluster status").await?;
    let js = jetstream::new(client);
    let b = cluster::open_buckets(&js)
        .await
        .context("opening the coordination buckets")?;
    let packs = pack::open(&js).await?;
    let nodes = membership::live_nodes(&b.nodes).await?;
    let forces = onboarding::list(&b.forces).await?;
    let holders = lease::holders(&b.leases).await?;
    let pack = pack::current(&packs).await?;
    let pack_version = pack
        .as_ref()
        .map_or(RulePack::LOCAL.to_owned(), |p| p.version.clone());
    if json {
        let f: Vec<_> = forces
            .iter()
            .map(|(f, r)| {
                let h = holders.get(f.as_str());
                json!({
                    "force": f, "phase": r.phase,
                    "owner": h.map(|h| h.node_id.clone()),
                    "epoch": h.map(|h| h.status.epoch),
                    "cursor": h.map(|h| h.status.cursor),
                    "lag": h.map(|h| h.status.lag),
                    "pending": h.map(|h| h.status.pending),
                    "late": h.map(|h| h.status.late),
                    "bad_values": h.map(|h| h.status.bad_values),
                    "ingest_time": h.map(|h| h.status.ingest_time),
                    "rule_pack": h.map(|h| h.status.rule_pack.clone()),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"nodes": nodes, "forces": f, "rule_pack": pack_version})
        );
        return Ok(());
    }
    println!("rule pack in force: {pack_version}");
    println!("\nnodes ({}):", nodes.len());
    for n in &nodes {
        let owned = holders.values().filter(|h| h.node_id == n.node_id).count();
        println!(
            "  {:<24} weight {:<3} forces {:<3} pid {:<8} version {}",
            n.node_id, n.weight, owned, n.pid, n.version
        );
    }
    println!("\nforces ({}):", forces.len());
    println!(
        "  {:<22} {:<17} {:<20} {:>8} {:>10} {:>8} {:>8} {:>6} {:>6} {:>7}  rules",
        "force", "phase", "owner", "epoch", "cursor", "lag", "pending", "late", "badval", "ingest"
    );
    for (f, r) in &forces {
        match holders.get(f.as_str()) {
            Some(h) => println!(
                "  {:<22} {:<17} {:<20} {:>8} {:>10} {:>8} {:>8} {:>6} {:>6} {:>7}  {}",
                f.as_str(),
                format!("{:?}", r.phase),
                h.node_id,
                h.status.epoch,
                h.status.cursor,
                h.status.lag,
                h.status.pending,
                h.status.late,
                h.status.bad_values,
                h.status.ingest_time,
                h.status.rule_pack
            ),
            None => println!(
                "  {:<22} {:<17} {:<20}",
                f.as_str(),
                format!("{:?}", r.phase),
                "UNOWNED"
            ),
        }
    }
    Ok(())
}
