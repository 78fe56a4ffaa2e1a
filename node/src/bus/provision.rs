//! Who may create and change nmc's JetStream streams, KV buckets and object stores, and how.
//!
//! Only `nmc node` provisions ([`ensure`]): it creates what is missing with the configured
//! replicas, brings the limits it owns (retention, TTL, duplicate window) to its configuration,
//! and never lowers the replicas of what exists (a node configured for one replica must not
//! silently drop a production R3 bucket to R1). Every other command only opens ([`open`]) and
//! fails with a clear message when something is missing: a read-only command must never change
//! a running cluster's settings.
//!
//! KV buckets and object stores are streams underneath (`KV_<bucket>`, `OBJ_<bucket>`), so one
//! code path covers all three.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, kv, object_store, stream};

/// Why a command cannot open what it needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "JetStream {what} `{name}` does not exist: start an `nmc node` first (nodes create nmc's streams and buckets), or check that this client uses the cluster's NATS account"
)]
pub struct Missing {
    /// `stream`, `KV bucket` or `object store`.
    pub what: &'static str,
    /// Its name.
    pub name: String,
}

/// The limits a node owns on a stream it provisions; everything else stays as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Retention (`max_age`; for KV buckets the entry TTL). `None`: leave as is.
    pub max_age: Option<Duration>,
    /// De-duplication window. `None`: leave as is.
    pub duplicate_window: Option<Duration>,
    /// Replicas wanted: created with this many, raised to it, never lowered.
    pub replicas: usize,
}

/// The stream behind a KV bucket.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The stream behind an object store.
pub fn object_stream(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

/// The configuration of stream `name`, or `None` if it does not exist.
pub async fn stream_config(js: &jetstream::Context, name: &str) -> Result<Option<stream::Config>> {
    match js.get_stream(name).await {
        Ok(mut s) => Ok(Some(
            s.info()
                .await
                .with_context(|| format!("reading stream {name}"))?
                .config
                .clone(),
        )),
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("looking up stream {name}")),
    }
}

/// `have` with the limits a node owns applied: what [`ensure`] writes back if it differs.
pub fn reconcile(have: &stream::Config, want: &Limits) -> stream::Config {
    let mut next = have.clone();
    if let Some(w) = want.duplicate_window {
        next.duplicate_window = w;
    }
    if let Some(age) = want.max_age {
        next.max_age = age;
        // The server refuses a duplicate window longer than the retention; KV buckets get one
        // of min(2 min, TTL) when created, so a shorter TTL must shorten it too.
        if !age.is_zero() && next.duplicate_window > age {
            next.duplicate_window = age;
        }
    }
    next.num_replicas = have.num_replicas.max(want.replicas);
    next
}

/// Makes sure stream `name` exists (node only): `create` makes it when missing; an existing
/// one gets `limits` by [`reconcile`] (replicas only ever raised). Returns the configuration
/// in force.
pub async fn ensure<F>(
    js: &jetstream::Context,
    name: &str,
    limits: &Limits,
    create: F,
) -> Result<stream::Config>
where
    F: AsyncFnOnce() -> Result<()>,
{
    let have = match stream_config(js, name).await? {
        Some(have) => have,
        None => match create().await {
            Ok(()) => {
                return stream_config(js, name)
                    .await?
                    .with_context(|| format!("{name} vanished right after it was created"));
            }
            // Another node created it meanwhile (with its own settings): reconcile with it.
            Err(e) => match stream_config(js, name).await? {
                Some(have) => have,
                None => return Err(e.context(format!("creating {name}"))),
            },
        },
    };
    if have.num_replicas > limits.replicas {
        tracing::info!(
            stream = name,
            have = have.num_replicas,
            configured = limits.replicas,
            "stream has more replicas than configured: kept"
        );
    }
    let next = reconcile(&have, limits);
    if next != have {
        js.update_stream(next.clone())
            .await
            .with_context(|| format!("updating {name}"))?;
        tracing::info!(
            stream = name,
            "stream limits updated to the node's configuration"
        );
    }
    Ok(next)
}

/// Makes sure KV bucket `config.bucket` exists (node only), with `config.max_age` as its TTL
/// and at least `config.num_replicas` replicas.
pub async fn ensure_kv(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store> {
    let bucket = config.bucket.clone();
    let limits = Limits {
        max_age: Some(config.max_age),
        duplicate_window: None,
        replicas: config.num_replicas,
    };
    ensure(js, &kv_stream(&bucket), &limits, async || {
        js.create_key_value(config).await?;
        Ok(())
    })
    .await?;
    open_kv(js, &bucket).await
}

/// Makes sure object store `config.bucket` exists (node only), with at least
/// `config.num_replicas` replicas.
pub async fn ensure_objects(
    js: &jetstream::Context,
    config: object_store::Config,
) -> Result<object_store::ObjectStore> {
    let bucket = config.bucket.clone();
    let limits = Limits {
        max_age: None,
        duplicate_window: None,
        replicas: config.num_replicas,
    };
    ensure(js, &object_stream(&bucket), &limits, async || {
        js.create_object_store(config).await?;
        Ok(())
    })
    .await?;
    open_objects(js, &bucket).await
}

/// Opens an existing KV bucket; [`Missing`] if there is none.
pub async fn open_kv(js: &jetstream::Context, bucket: &str) -> Result<kv::Store> {
    if stream_config(js, &kv_stream(bucket)).await?.is_none() {
        bail!(Missing {
            what: "KV bucket",
            name: bucket.to_owned(),
        });
    }
    js.get_key_value(bucket)
        .await
        .with_context(|| format!("opening KV bucket {bucket}"))
}

/// Opens an existing object store; [`Missing`] if there is none.
pub async fn open_objects(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<object_store::ObjectStore> {
    if stream_config(js, &object_stream(bucket)).await?.is_none() {
        bail!(Missing {
            what: "object store",
            name: bucket.to_owned(),
        });
    }
    js.get_object_store(bucket)
        .await
        .with_context(|| format!("opening object store {bucket}"))
}

/// Opens an existing stream; [`Missing`] if there is none.
pub async fn open_stream(js: &jetstream::Context, name: &str) -> Result<stream::Stream> {
    if stream_config(js, name).await?.is_none() {
        bail!(Missing {
            what: "stream",
            name: name.to_owned(),
        });
    }
    js.get_stream(name)
        .await
        .with_context(|| format!("opening stream {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_never_lowers_replicas_and_keeps_what_it_does_not_own() {
        let have = stream::Config {
            name: "KV_NMC_LEASES".into(),
            num_replicas: 3,
            max_age: Duration::from_secs(10),
            max_messages_per_subject: 1,
            allow_direct: true,
            ..Default::default()
        };
        let want = Limits {
            max_age: Some(Duration::from_secs(5)),
            duplicate_window: None,
            replicas: 1,
        };
        let next = reconcile(&have, &want);
        assert_eq!(next.num_replicas, 3, "an R3 bucket stays R3");
        assert_eq!(
            next.max_age,
            Duration::from_secs(5),
            "the TTL follows the node"
        );
        assert_eq!(next.max_messages_per_subject, 1);
        assert!(next.allow_direct);
        let raised = reconcile(
            &have,
            &Limits {
                replicas: 5,
                ..want.clone()
            },
        );
        assert_eq!(raised.num_replicas, 5, "replicas may be raised");
        let same = reconcile(
            &next,
            &Limits {
                max_age: None,
                ..want
            },
        );
        assert_eq!(same, next, "nothing to change: no update is sent");
    }

    #[test]
    fn a_shorter_ttl_shortens_the_duplicate_window_with_it() {
        // A KV bucket created with a 10 s TTL got a 10 s duplicate window from the server.
        let have = stream::Config {
            name: "KV_NMC_NODES".into(),
            num_replicas: 1,
            max_age: Duration::from_secs(10),
            duplicate_window: Duration::from_secs(10),
            ..Default::default()
        };
        let want = Limits {
            max_age: Some(Duration::from_secs(5)),
            duplicate_window: None,
            replicas: 1,
        };
        let next = reconcile(&have, &want);
        assert_eq!(next.max_age, Duration::from_secs(5));
        assert_eq!(
            next.duplicate_window,
            Duration::from_secs(5),
            "else the server refuses"
        );
        let kept = stream::Config {
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
            ..have
        };
        let next = reconcile(
            &kept,
            &Limits {
                max_age: Some(Duration::ZERO),
                ..want
            },
        );
        assert_eq!(
            next.duplicate_window,
            Duration::from_secs(120),
            "no TTL, no limit"
        );
    }
}
