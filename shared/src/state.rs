//! Versioned encoding of persisted state: one version byte, then bincode.
//!
//! Every value nmc writes to sled goes through here, so that an upgrade can recognise (and
//! migrate or refuse) state written by an older release instead of misreading it.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of the state encoding written by this release.
pub const STATE_VERSION: u8 = 3;

/// Why persisted state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The value is empty.
    #[error("state value is empty")]
    Empty,
    /// Written by a release this one cannot read.
    #[error(
        "state version {0} is not readable by this release (expects {STATE_VERSION}); restore from a checkpoint or replay"
    )]
    Version(u8),
    /// The bytes do not decode.
    #[error("state does not decode: {0}")]
    Decode(String),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value with the version tag.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Room for a typical correlation group: encoding it needs no reallocation.
    let mut out = Vec::with_capacity(128);
    out.push(STATE_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("encoding into a Vec cannot fail");
    out
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    let (&version, rest) = bytes.split_first().ok_or(StateError::Empty)?;
    if version != STATE_VERSION {
        return Err(StateError::Version(version));
    }
    bincode::serde::decode_from_slice(rest, config())
        .map(|(v, _)| v)
        .map_err(|e| StateError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let v = (42u64, "x".to_owned(), vec![1i64, -2]);
        let bytes = encode(&v);
        assert_eq!(bytes[0], STATE_VERSION);
        assert_eq!(decode::<(u64, String, Vec<i64>)>(&bytes).unwrap(), v);
        let mut old = bytes.clone();
        old[0] = 0;
        assert!(matches!(
            decode::<(u64, String, Vec<i64>)>(&old),
            Err(StateError::Version(0))
        ));
        assert!(matches!(decode::<u64>(&[]), Err(StateError::Empty)));
        assert!(matches!(
            decode::<String>(&[STATE_VERSION, 200]),
            Err(StateError::Decode(_))
        ));
    }
}

/// A force's whole persisted state at a stream sequence: what another node needs to take the
/// force over (its stream cursor, correlation state, outbox and poison record, as stored).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The force.
    pub force: String,
    /// The last `NMC_EVENTS` sequence the state reflects.
    pub seq: u64,
    /// Every key and value of the force's store.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Checkpoint {
    /// Versioned bytes, for a file or an object store.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads bytes written by [`Checkpoint::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, StateError> {
        decode(bytes)
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_reject_garbage() {
        let c = Checkpoint {
            force: "kent".into(),
            seq: 42,
            entries: vec![(b"m/cursor".to_vec(), 42u64.to_be_bytes().to_vec())],
        };
        assert_eq!(Checkpoint::from_bytes(&c.to_bytes()).unwrap(), c);
        assert!(Checkpoint::from_bytes(b"\x02garbage").is_err());
    }
}
