//! The contact directory: each force's nominated contacts, and the centre's national duty
//! contacts, in the KV bucket `NMC_CONTACTS`.
//!
//! One key per force (its id) holding the force's whole list, and `_national` for the duty
//! contacts: a notifier reads one key per alert, and every change is a compare-and-set of the
//! whole list, so two administrators editing at once cannot lose each other's change.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use nmc_shared::ForceId;
use nmc_shared::contact::{Contact, ContactError};

use crate::bus::provision;

/// The bucket.
pub const BUCKET: &str = "NMC_CONTACTS";
/// The key of the national duty contacts.
pub const NATIONAL: &str = "_national";
/// Most contacts one force (or the centre) may have.
pub const MAX_CONTACTS: usize = 64;

/// Whose contacts: one force's, or the centre's duty contacts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// A force's nominated contacts.
    Force(ForceId),
    /// The national duty contacts: told of what no force contact acknowledged.
    National,
}

impl Scope {
    fn key(&self) -> &str {
        match self {
            Scope::Force(f) => f.as_str(),
            Scope::National => NATIONAL,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Force(id) => write!(f, "force {id}"),
            Scope::National => f.write_str("the national duty contacts"),
        }
    }
}

/// Creates the bucket if missing (nodes only).
pub async fn ensure(js: &jetstream::Context, replicas: usize) -> Result<Directory> {
    let kv = provision::ensure_kv(
        js,
        kv::Config {
            bucket: BUCKET.into(),
            description: "nmc force contacts and national duty contacts".into(),
            history: 5,
            num_replicas: replicas,
            max_age: Duration::ZERO,
            ..Default::default()
        },
    )
    .await?;
    Ok(Directory { kv })
}

/// Opens the bucket (commands).
pub async fn open(js: &jetstream::Context) -> Result<Directory> {
    Ok(Directory {
        kv: provision::open_kv(js, BUCKET).await?,
    })
}

/// The contact directory.
#[derive(Clone)]
pub struct Directory {
    kv: kv::Store,
}

impl Directory {
    /// The contacts of `scope` (empty when none are set), with the revision to change them at.
    pub async fn get(&self, scope: &Scope) -> Result<(Vec<Contact>, Option<u64>)> {
        match self
            .kv
            .entry(scope.key())
            .await
            .with_context(|| format!("reading the contacts of {scope}"))?
        {
            Some(e) if e.operation == kv::Operation::Put => {
                let list: Vec<Contact> = serde_json::from_slice(&e.value)
                    .with_context(|| format!("the stored contacts of {scope} are malformed"))?;
                Ok((list, Some(e.revision)))
            }
            Some(e) => Ok((Vec::new(), Some(e.revision))),
            None => Ok((Vec::new(), None)),
        }
    }

    /// The contacts of `scope`, for delivery: each checked again (a contact written around
    /// the commands is skipped, with a warning, rather than used).
    pub async fn list(&self, scope: &Scope) -> Result<Vec<Contact>> {
        let (list, _) = self.get(scope).await?;
        Ok(list
            .into_iter()
            .filter(|c| match c.validate() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(contact = %c.name, %scope, error = %e, "skipping an invalid contact");
                    false
                }
            })
            .collect())
    }

    /// Applies `change` to the list of `scope` with compare-and-set (retried if somebody else
    /// changed it meanwhile); the changed list is validated before it is stored.
    pub async fn update<F>(&self, scope: &Scope, mut change: F) -> Result<Vec<Contact>>
    where
        F: FnMut(&mut Vec<Contact>) -> Result<()>,
    {
        for _ in 0..10 {
            let (mut list, revision) = self.get(scope).await?;
            change(&mut list)?;
            check_list(&list)?;
            list.sort_by(|a, b| (a.tier, &a.name).cmp(&(b.tier, &b.name)));
            let value = Bytes::from(serde_json::to_vec(&list)?);
            let done = match revision {
                Some(r) => self.kv.update(scope.key(), value, r).await.is_ok(),
                None => self.kv.create(scope.key(), value).await.is_ok(),
            };
            // A lost reply to an applied write looks like a conflict: the stored list says.
            if done || self.get(scope).await?.0 == list {
                return Ok(list);
            }
        }
        bail!("the contacts of {scope} kept changing under this update: try again")
    }

    /// Every scope that has contacts, with them.
    pub async fn all(&self) -> Result<Vec<(Scope, Vec<Contact>)>> {
        use futures::TryStreamExt;
        let keys: Vec<String> = self.kv.keys().await?.try_collect().await?;
        let mut out = Vec::new();
        for k in keys {
            let scope = if k == NATIONAL {
                Scope::National
            } else {
                Scope::Force(ForceId::new(&k).context("a contact key that is no force id")?)
            };
            let list = self.list(&scope).await?;
            if !list.is_empty() {
                out.push((scope, list));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Checks a whole list: each contact valid, names unique, at most [`MAX_CONTACTS`].
pub fn check_list(list: &[Contact]) -> Result<()> {
    if list.len() > MAX_CONTACTS {
        bail!(
            "{} contacts are more than the {MAX_CONTACTS} one force may have",
            list.len()
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for c in list {
        c.validate()
            .map_err(|e: ContactError| anyhow::anyhow!("contact `{}`: {e}", c.name))?;
        if !names.insert(&c.name) {
            bail!("contact `{}` is listed twice", c.name);
        }
    }
    Ok(())
}
