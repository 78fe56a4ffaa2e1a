//! Who may do what on the bus: the identities of a cluster (nodes, the admin, each force's
//! collector and alert reader), their NATS permissions, and the nats-server authorization
//! configuration and credentials `nmc auth nats-config` writes from them
//! (`docs/security.md` says why each permission is there).

pub mod identities;
pub mod nats_config;
