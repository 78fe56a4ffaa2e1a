//! Console sessions: a signed cookie holding who signed in, their rights, a CSRF token and
//! when it expires. Stateless, so any console replica with the same `session_key` accepts it;
//! HMAC-SHA256 over the payload, compared in constant time; `HttpOnly`, `Secure`,
//! `SameSite=Strict`. Every state change must also carry the CSRF token in a header.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use super::access::Principal;

/// Name of the session cookie.
pub const COOKIE: &str = "nmc_session";
/// Header that carries the CSRF token on every state change.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// What a session cookie holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Who, with their rights at sign-in.
    pub who: Principal,
    /// The token state changes must echo in [`CSRF_HEADER`].
    pub csrf: String,
    /// Expiry, Unix ms.
    pub exp_ms: i64,
}

/// Signs and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    key: ring::hmac::Key,
    /// Lifetime of a session, ms.
    pub ttl_ms: i64,
}

impl Sessions {
    /// With `key` (at least 32 bytes; shared by the console replicas).
    pub fn new(key: &[u8], ttl_ms: i64) -> Sessions {
        Sessions {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            ttl_ms,
        }
    }

    /// A new session for `who` at `now_ms`, with a fresh CSRF token.
    pub fn start(&self, who: Principal, now_ms: i64) -> Session {
        let rng = ring::rand::SystemRandom::new();
        let mut csrf = [0u8; 24];
        ring::rand::SecureRandom::fill(&rng, &mut csrf).expect("system randomness");
        Session {
            who,
            csrf: B64.encode(csrf),
            exp_ms: now_ms + self.ttl_ms,
        }
    }

    /// The cookie value of `s`: `<payload>.<signature>`, both base64url.
    pub fn seal(&self, s: &Session) -> String {
        self.seal_value(s)
    }

    /// The session of a cookie value, if it is signed by this key and not expired.
    pub fn open(&self, value: &str, now_ms: i64) -> Option<Session> {
        let s: Session = self.open_value(value)?;
        (s.exp_ms > now_ms).then_some(s)
    }

    /// Any value sealed like a session (the OpenID Connect sign-in in progress).
    pub fn seal_value<T: Serialize>(&self, v: &T) -> String {
        let payload = B64.encode(serde_json::to_vec(v).expect("JSON"));
        let tag = ring::hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", B64.encode(tag.as_ref()))
    }

    /// A value sealed by [`Sessions::seal_value`] with this key, untampered.
    pub fn open_value<T: serde::de::DeserializeOwned>(&self, value: &str) -> Option<T> {
        let (payload, tag) = value.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        ring::hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }
}

/// Compares a presented CSRF token with the session's in constant time.
pub fn csrf_ok(session: &Session, presented: Option<&str>) -> bool {
    presented
        .is_some_and(|p| crate::secret::Secret::new(session.csrf.clone()).matches(p.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Principal {
        Principal {
            user: "k@kent.example".into(),
            admin: false,
            analyst: false,
            forces: vec![nmc_shared::ForceId::new("kent").unwrap()],
        }
    }

    #[test]
    fn sealed_sessions_open_only_with_their_key_untampered_and_in_time() {
        let s = Sessions::new(&[7; 32], 60_000);
        let session = s.start(who(), 1_000);
        let cookie = s.seal(&session);
        assert_eq!(s.open(&cookie, 2_000), Some(session.clone()));
        assert_eq!(s.open(&cookie, 61_001), None, "expired");
        assert_eq!(
            Sessions::new(&[8; 32], 60_000).open(&cookie, 2_000),
            None,
            "another key"
        );
        // A forged payload (an analyst, say) with the old signature.
        let (_, tag) = cookie.split_once('.').unwrap();
        let mut forged = session.clone();
        forged.who.analyst = true;
        let payload = B64.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(s.open(&format!("{payload}.{tag}"), 2_000), None);
        assert_eq!(s.open("garbage", 2_000), None);
        assert!(csrf_ok(&session, Some(&session.csrf)));
        assert!(!csrf_ok(&session, Some("nope")));
        assert!(!csrf_ok(&session, None));
    }
}
