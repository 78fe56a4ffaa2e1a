//! The identities of a cluster on the bus and the subjects each may publish and subscribe to.
//!
//! Isolation between forces rests on these permissions, enforced by the NATS server, not on
//! subject names alone: a force's collector can only publish that force's events; a force's
//! reader can only receive that force's alerts, live or through a JetStream consumer whose
//! filter the server checks (the filter is part of the consumer-create subject, and a create
//! request whose body filters another subject is refused by the server).

use nmc_shared::ForceId;
use nmc_shared::subject::{ALERTS_STREAM, DLQ_ALL};

/// What an identity is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The cluster's administrator: onboarding, rule packs, cluster status, every tail.
    Admin,
    /// A cluster node: reads every force's events, writes alerts and dead letters, uses the
    /// coordination buckets and the checkpoint object store. One identity shared by every node
    /// (`None`), or one per node id, revocable one by one.
    Node(Option<String>),
    /// A force's collector: publishes that force's events, nothing else.
    Collector(ForceId),
    /// A force's alert reader: reads that force's alerts, nothing else.
    Reader(ForceId),
}

/// One identity: a name, a role, and what follows from the role.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    /// What it is for.
    pub role: Role,
}

/// Checks a node id for use as an identity name (and seed file name): letters, digits, `-`
/// and `_`, as StatefulSet pod names are.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 63
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "node id `{id}` must be 1 to 63 letters, digits, `-` or `_` (a pod name such as nmc-0)"
        ));
    }
    Ok(())
}

/// Subjects an identity may publish and subscribe to (allow lists: everything else is denied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The JetStream API, acks, flow control, KV and object-store subjects: what the admin and the
/// nodes publish to use JetStream.
const JETSTREAM: &[&str] = &["$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "$O.>"];

impl Identity {
    /// The identities of a cluster with `forces` and `nodes` (node ids; none: one node identity
    /// shared by all): admin, the node identities, then each force's collector and reader, in a
    /// stable order.
    pub fn of_cluster<'a>(
        forces: impl IntoIterator<Item = &'a ForceId>,
        nodes: &[String],
    ) -> Vec<Identity> {
        let mut all = vec![Identity { role: Role::Admin }];
        if nodes.is_empty() {
            all.push(Identity {
                role: Role::Node(None),
            });
        }
        let mut nodes: Vec<&String> = nodes.iter().collect();
        nodes.sort();
        nodes.dedup();
        all.extend(nodes.into_iter().map(|n| Identity {
            role: Role::Node(Some(n.clone())),
        }));
        let mut forces: Vec<&ForceId> = forces.into_iter().collect();
        forces.sort();
        forces.dedup();
        for f in forces {
            all.push(Identity {
                role: Role::Collector(f.clone()),
            });
            all.push(Identity {
                role: Role::Reader(f.clone()),
            });
        }
        all
    }

    /// Its name: `admin`, `node`, `collector-<force>`, `reader-<force>` (also the stem of its
    /// seed file).
    pub fn name(&self) -> String {
        match &self.role {
            Role::Admin => "admin".into(),
            Role::Node(None) => "node".into(),
            Role::Node(Some(id)) => format!("node-{id}"),
            Role::Collector(f) => format!("collector-{f}"),
            Role::Reader(f) => format!("reader-{f}"),
        }
    }

    /// The force it belongs to, if any.
    pub fn force(&self) -> Option<&ForceId> {
        match &self.role {
            Role::Collector(f) | Role::Reader(f) => Some(f),
            Role::Admin | Role::Node(_) => None,
        }
    }

    /// The inbox prefix its client must use (`nats_inbox_prefix`): a force identity's own, so
    /// that it can receive its replies and nobody else's; `None`: the default `_INBOX`.
    pub fn inbox_prefix(&self) -> Option<String> {
        self.force().map(|_| format!("_INBOX_{}", self.name()))
    }

    /// What it may publish and subscribe to.
    pub fn permissions(&self) -> Permissions {
        let own_inbox =
            |id: &Identity| format!("{}.>", id.inbox_prefix().expect("a force identity"));
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        match &self.role {
            // The JetStream API, the KV and object-store subjects, acks and flow control, the
            // audit trail (`nmc alerts ack` and friends), and the default inbox for replies. No
            // event or alert subject: an admin reads through JetStream consumers and writes
            // nothing a node would process.
            Role::Admin => Permissions {
                publish: v(&[JETSTREAM, &[nmc_shared::subject::AUDIT_ALL]].concat()),
                subscribe: v(&["_INBOX.>"]),
            },
            // As the admin, plus alerts and dead letters to publish. Events are read through
            // JetStream consumers delivered to the node's inbox, so no event subscription.
            Role::Node(_) => Permissions {
                publish: v(&[
                    JETSTREAM,
                    &[
                        nmc_shared::subject::ALERTS_ALL,
                        DLQ_ALL,
                        nmc_shared::subject::AUDIT_ALL,
                        nmc_shared::subject::NOTIFY_ALL,
                    ],
                ]
                .concat()),
                subscribe: v(&["_INBOX.>"]),
            },
            Role::Collector(f) => Permissions {
                publish: vec![nmc_shared::subject::events_of(f)],
                subscribe: vec![own_inbox(self)],
            },
            // A consumer on NMC_ALERTS whose create subject carries this force's filter (any
            // name), its flow-control replies, live alerts, and its own inbox (replies and
            // deliveries). No stream info, message get, direct get or pull request: those would
            // not be filtered by force.
            Role::Reader(f) => {
                let alerts = nmc_shared::subject::alerts_of(f);
                Permissions {
                    publish: vec![
                        format!("$JS.API.CONSUMER.CREATE.{ALERTS_STREAM}.*.{alerts}"),
                        format!("$JS.FC.{ALERTS_STREAM}.>"),
                    ],
                    subscribe: vec![alerts, own_inbox(self)],
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_identities_are_confined_to_their_force() {
        let kent = ForceId::new("kent").unwrap();
        let ids = Identity::of_cluster([&kent, &kent], &[]);
        let names: Vec<String> = ids.iter().map(Identity::name).collect();
        assert_eq!(names, ["admin", "node", "collector-kent", "reader-kent"]);
        let collector = &ids[2].permissions();
        assert_eq!(collector.publish, ["nmc.events.kent.>"]);
        assert_eq!(collector.subscribe, ["_INBOX_collector-kent.>"]);
        let reader = &ids[3].permissions();
        assert_eq!(
            reader.publish,
            [
                "$JS.API.CONSUMER.CREATE.NMC_ALERTS.*.nmc.alerts.kent.>",
                "$JS.FC.NMC_ALERTS.>"
            ]
        );
        assert_eq!(
            reader.subscribe,
            ["nmc.alerts.kent.>", "_INBOX_reader-kent.>"]
        );
        let per_node = Identity::of_cluster([&kent], &["nmc-1".into(), "nmc-0".into()]);
        let names: Vec<String> = per_node.iter().map(Identity::name).collect();
        assert_eq!(
            names,
            [
                "admin",
                "node-nmc-0",
                "node-nmc-1",
                "collector-kent",
                "reader-kent"
            ]
        );
        assert_eq!(per_node[1].permissions(), ids[1].permissions());
        assert!(check_node_id("nmc-0").is_ok());
        assert!(check_node_id("a.b").is_err() && check_node_id("").is_err());
        for id in &ids {
            let p = id.permissions();
            assert!(
                !p.publish.iter().any(|s| s.starts_with("nmc.events"))
                    || matches!(id.role, Role::Collector(_)),
                "{id:?}"
            );
        }
    }
}
