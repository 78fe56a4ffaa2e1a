//! [`Secret`]: a configuration value that must never be printed (passwords, tokens).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string from the configuration: readable by the code that needs it
/// ([`Secret::expose`]), and redacted wherever a value is printed or serialized, so that no
/// `{:?}` of a configuration, log line or status response can carry it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one call that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set (the empty string means "not configured").
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `other` in time independent of where they differ (bearer tokens).
    pub fn matches(&self, other: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != other.len() {
            return false;
        }
        mine.iter()
            .zip(other)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(unset)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

/// Serialized as the empty string whatever it holds: serialization only describes the shape
/// of the configuration (the typing of `NMC_*` overrides), never its secrets.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_nor_serialized() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"\"");
        assert_eq!(s.expose(), "hunter2-very-secret");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(unset)");
    }

    #[test]
    fn matches_only_the_same_bytes() {
        let s = Secret::new("abc");
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b"abcd"));
    }
}
