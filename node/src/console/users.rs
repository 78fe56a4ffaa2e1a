//! The local users file: sign-in without an identity provider, for the quick start and
//! small installations. Passwords are argon2id hashes (`nmc console hash-password`); groups map
//! to roles like an identity provider's.
//!
//! ```yaml
//! users:
//!   - name: analyst@ncsoc.example
//!     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$..."
//!     groups: [nmc-analyst]
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Deserialize;

/// One local user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Sign-in name.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Groups (mapped to roles by the configuration).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The users file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// The users.
    pub users: Vec<User>,
}

impl Users {
    /// Reads and checks `path`: names unique, every hash an argon2 PHC string.
    pub fn read(path: &Path) -> Result<Users> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the users file {}", path.display()))?;
        let users: Users = serde_norway::from_str(&text).with_context(|| {
            format!(
                "the users file {} is not `users:` with `name`, `password_hash`, `groups`",
                path.display()
            )
        })?;
        let mut seen = std::collections::BTreeSet::new();
        for u in &users.users {
            if !seen.insert(&u.name) {
                bail!("user `{}` is listed twice in {}", u.name, path.display());
            }
            if !u.password_hash.starts_with("$argon2") {
                bail!(
                    "user `{}`: password_hash is not an argon2 hash (make one with `nmc console hash-password`)",
                    u.name
                );
            }
        }
        Ok(users)
    }

    /// The user `name` if `password` is theirs. Always runs one hash verification, so a wrong
    /// name takes as long as a wrong password.
    pub fn check(&self, name: &str, password: &str) -> Option<&User> {
        let user = self.users.iter().find(|u| u.name == name);
        let hash: &str = match user {
            Some(u) => &u.password_hash,
            None => dummy(),
        };
        let ok = argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok();
        user.filter(|_| ok)
    }
}

/// A hash of a random password, verified for unknown names (the same work as a known one).
fn dummy() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = format!("{:x}", crate::notify::delivery::random());
        hash_password(&random).unwrap_or_default()
    })
}

/// An argon2id hash of `password` with a random salt (for the users file).
pub fn hash_password(password: &str) -> Result<String> {
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_checked_against_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.yaml");
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        std::fs::write(
            &p,
            format!("users:\n  - name: a@ncsoc.example\n    password_hash: \"{h}\"\n    groups: [nmc-analyst]\n"),
        )
        .unwrap();
        let users = Users::read(&p).unwrap();
        assert_eq!(
            users
                .check("a@ncsoc.example", "correct horse")
                .unwrap()
                .groups,
            ["nmc-analyst"]
        );
        assert!(users.check("a@ncsoc.example", "wrong").is_none());
        assert!(users.check("nobody", "correct horse").is_none());
        std::fs::write(&p, "users:\n  - name: a\n    password_hash: plain\n").unwrap();
        assert!(format!("{:#}", Users::read(&p).unwrap_err()).contains("hash-password"));
    }
}
