//! The analyst console's data side (`nmc console`, the issue "The analyst console"): its own
//! index of alerts and lifecycle states in sled ([`index`]), kept up to date from the streams
//! and rebuilt from them when lost ([`follow`]). The web server, sign-in and pages build on it.

pub mod follow;
pub mod index;
