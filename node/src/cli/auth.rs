//! `nmc auth nats-config`: writes the NATS authorization configuration and the credentials of
//! every identity of the cluster, from the onboarded forces (or a forces file, before the
//! cluster runs).

use std::path::PathBuf;

use anyhow::{Context, Result};
use async_nats::jetstream;

use super::NatsArgs;
use crate::auth::identities::{self, Identity};
use crate::auth::nats_config;
use crate::cluster::{self, onboarding};
use crate::forces_file::ForcesFile;

/// `nmc auth ...`
#[derive(Debug, clap::Subcommand)]
pub enum AuthCmd {
    /// Write the nats-server authorization configuration (`nats-auth.conf`, public keys and
    /// permissions) and one nkey seed file per identity (admin, node, and each force's
    /// collector and reader) into a folder. Existing seeds are kept: run it again after
    /// onboarding a force and only that force's identities are new.
    NatsConfig(NatsConfigArgs),
}

/// Arguments of `nmc auth nats-config`.
#[derive(Debug, clap::Args)]
pub struct NatsConfigArgs {
    /// Folder to write into (created, mode 0700).
    #[arg(long)]
    out: PathBuf,
    /// NATS account the identities belong to.
    #[arg(long, default_value = "NMC")]
    account: String,
    /// One node identity per node id (comma-separated, e.g. the pods nmc-0,nmc-1,nmc-2), each
    /// revocable alone, instead of one identity shared by every node. Without it, the per-node
    /// identities already in the folder are kept (none: the shared `node`).
    #[arg(long, value_delimiter = ',')]
    nodes: Option<Vec<String>>,
    /// Take the forces from this forces file instead of the cluster's onboarded forces.
    #[arg(long)]
    forces_file: Option<PathBuf>,
    /// NATS connection (an admin identity), to read the onboarded forces.
    #[command(flatten)]
    nats: NatsArgs,
}

/// Runs `nmc auth ...`.
pub async fn run(cmd: AuthCmd) -> Result<()> {
    let AuthCmd::NatsConfig(a) = cmd;
    let forces = match &a.forces_file {
        Some(f) => ForcesFile::read(f)?.ids(),
        None => {
            let js = jetstream::new(a.nats.connect("nmc auth").await?);
            let b = cluster::open_buckets(&js)
                .await
                .context("opening the coordination buckets (or give --forces-file)")?;
            onboarding::list(&b.forces).await?.into_keys().collect()
        }
    };
    let nodes = match a.nodes {
        Some(nodes) => nodes,
        None => nats_config::existing_nodes(&a.out),
    };
    for n in &nodes {
        identities::check_node_id(n).map_err(anyhow::Error::msg)?;
    }
    let identities = Identity::of_cluster(&forces, &nodes);
    let done = nats_config::generate(&a.out, &a.account, &identities)?;
    for n in &done.created {
        println!("+ {n}");
    }
    for n in &done.revoked {
        println!("- {n} (revoked: seed removed)");
    }
    println!(
        "{} identities for {} forces in {} ({} new, {} kept, {} revoked); include {} from the nats-server configuration",
        identities.len(),
        forces.len(),
        a.out.display(),
        done.created.len(),
        done.kept.len(),
        done.revoked.len(),
        a.out.join(nats_config::CONF_FILE).display()
    );
    Ok(())
}
