//! The analyst console's data side (`nmc console`, the issue "The analyst console"): its own
//! index of alerts and lifecycle states in sled ([`index`]), kept up to date from the streams
//! and rebuilt from them when lost ([`follow`]); who may see what ([`access`]); signed session
//! cookies with CSRF tokens ([`session`]); the local users file ([`users`]). The web server,
//! OpenID Connect sign-in and the pages build on these.

pub mod access;
pub mod admin;
pub mod api;
pub mod catalog;
pub mod follow;
pub mod index;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod server;
pub mod session;
pub mod users;
