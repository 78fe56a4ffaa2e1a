//! The rule pack in force as the console shows it: its rules (parsed once per pack version),
//! the pack history from the `NMC_RULES` key's revisions, and the fields each rule reads (the
//! evidence view highlights them).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::StreamExt;
use nmc_shared::sigma::RuleDoc;
use nmc_shared::sigma::parse::RuleBody;
use serde::Serialize;

use crate::rules::pack::{self, Current, PackRef, Packs};

/// The pack in force and its parsed rules.
#[derive(Clone)]
pub struct PackView {
    /// Which pack.
    pub current: Current,
    /// Its rules and correlations as parsed (documents that do not parse are left out: the
    /// pack was validated when pushed).
    pub docs: Arc<Vec<RuleDoc>>,
}

/// One pushed pack in the history.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    /// `pack-<n>`.
    pub version: String,
    /// What `current` said.
    #[serde(flatten)]
    pub pack: PackRef,
}

/// Reads packs, keeping the parsed pack in force.
pub struct Catalog {
    packs: Packs,
    cached: Mutex<Option<PackView>>,
}

impl Catalog {
    /// Over the cluster's pack buckets.
    pub fn new(packs: Packs) -> Catalog {
        Catalog {
            packs,
            cached: Mutex::new(None),
        }
    }

    /// The pack in force (`None`: none was ever pushed; nodes run their own `rules_dirs`).
    pub async fn current(&self) -> Result<Option<PackView>> {
        let Some(current) = pack::current(&self.packs).await? else {
            return Ok(None);
        };
        if let Some(v) = &*self.cached.lock().expect("catalog lock")
            && v.current.revision == current.revision
        {
            return Ok(Some(v.clone()));
        }
        let files = pack::fetch(&self.packs, &current.pack).await?;
        let docs: Vec<RuleDoc> = files
            .files
            .iter()
            .flat_map(|(path, text)| nmc_shared::sigma::parse_rules(path, text))
            .filter_map(Result::ok)
            .collect();
        let view = PackView {
            current,
            docs: Arc::new(docs),
        };
        *self.cached.lock().expect("catalog lock") = Some(view.clone());
        Ok(Some(view))
    }

    /// The packs pushed, newest first (as many as the bucket's history keeps).
    pub async fn history(&self) -> Result<Vec<Pushed>> {
        let mut out = Vec::new();
        let Ok(mut entries) = self.packs.kv.history(pack::CURRENT).await else {
            return Ok(out);
        };
        while let Some(e) = entries.next().await {
            let e = e?;
            if let Ok(p) = serde_json::from_slice::<PackRef>(&e.value) {
                out.push(Pushed {
                    version: pack::version(e.revision),
                    pack: p,
                });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The Sigma fields rule `id` of the pack in force reads (empty when unknown).
    pub async fn fields_of(&self, id: &str) -> Vec<String> {
        match self.current().await {
            Ok(Some(v)) => nmc_shared::sigma::referenced_fields(&v.docs, id),
            _ => Vec::new(),
        }
    }
}

/// What kind of rule a document is: `detection`, `filter` or the correlation type.
pub fn kind(doc: &RuleDoc) -> &'static str {
    match &doc.body {
        RuleBody::Detection { .. } => "detection",
        RuleBody::Filter { .. } => "filter",
        RuleBody::Correlation(c) => c.kind.spec().name,
    }
}
