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
    let mut out = Vec::with_capacity(64);
    encode_into(&mut out, value);
    out
}

/// [`encode`], appending to `out`.
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    out.push(STATE_VERSION);
    bincode::serde::encode_into_std_write(value, out, config())
        .expect("encoding into a Vec cannot fail");
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    let (&version, rest) = bytes.split_first().ok_or(StateError::Empty)?;
    if version != STATE_VERSION {
        return Err(StateError::Version(version));
    }
    decode_part(rest).map(|(v, _)| v)
}

/// Decodes a value written in the layout of [`encode`] at the start of `bytes`, which hold no
/// version tag (a part of a value whose tag was read before): the value and the bytes it took.
///
/// bincode allocates a string or byte vector of the length its prefix claims before reading
/// it: under bincode's default (no limit), a few corrupt bytes claiming terabytes abort the
/// process on the allocation (found by fuzzing, `shared/fuzz`). A byte limit makes bincode
/// refuse claims beyond it first; the limit is the smallest of 64 KiB, 1 MiB, 16 MiB, 256 MiB
/// or 4 GiB that holds `bytes` (a value's strings and byte vectors cannot be longer than the
/// bytes they are read from), so a corrupt value allocates at most 16 times its own size. The
/// limit does not change the encoding.
pub(crate) fn decode_part<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), StateError> {
    macro_rules! limited {
        ($($limit:expr),+) => {
            $(
                if bytes.len() <= $limit {
                    return bincode::serde::decode_from_slice(
                        bytes,
                        config().with_limit::<{ $limit }>(),
                    )
                    .map_err(|e| StateError::Decode(e.to_string()));
                }
            )+
        };
    }
    limited!(1 << 16, 1 << 20, 1 << 24, 1 << 28, 1 << 32);
    bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| StateError::Decode(e.to_string()))
}

/// `anchor - back`: a time persisted relative to an anchor. Out of `i64`'s range only in
/// corrupt state, which is then refused (found by fuzzing: unchecked, it overflowed).
pub(crate) fn time_before(anchor: i64, back: i64) -> Result<i64, StateError> {
    anchor
        .checked_sub(back)
        .ok_or_else(|| StateError::Decode(format!("a time {back} ms before {anchor} overflows")))
}

/// Writes values in the layout [`encode`] gives them (bincode's standard configuration:
/// little-endian, varint integers and lengths), by hand. For the correlation groups persisted
/// with every batch, where serde's per-field calls showed in profiles; tested byte for byte
/// against bincode.
pub(crate) struct RawWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> RawWriter<'a> {
    /// Appends a value's bytes to `out`, starting with the version tag.
    pub fn new(out: &'a mut Vec<u8>) -> RawWriter<'a> {
        out.push(STATE_VERSION);
        RawWriter { out }
    }

    /// An unsigned integer (any width: varints do not depend on it).
    pub fn u64(&mut self, v: u64) {
        if v < 251 {
            self.out.push(v as u8);
        } else if v <= u64::from(u16::MAX) {
            self.out.push(251);
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= u64::from(u32::MAX) {
            self.out.push(252);
            self.out.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            self.out.push(253);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A signed integer (zigzag, then as unsigned).
    pub fn i64(&mut self, v: i64) {
        self.u64(if v < 0 {
            !(v as u64) * 2 + 1
        } else {
            (v as u64) * 2
        });
    }

    /// A byte (bincode writes `u8` as itself, not as a varint).
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    /// A float, as its eight bytes.
    pub fn f64(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// A sequence's length.
    pub fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    /// A string.
    pub fn str(&mut self, s: &str) {
        self.len(s.len());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// An `Option`'s tag: whether a value follows.
    pub fn some(&mut self, some: bool) {
        self.out.push(u8::from(some));
    }

    /// Any value, through serde (for the rare parts).
    pub fn serde<T: Serialize>(&mut self, v: &T) {
        bincode::serde::encode_into_std_write(v, &mut *self.out, config())
            .expect("encoding into a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_writer_writes_what_bincode_writes() {
        let ints: Vec<i64> = vec![
            0,
            1,
            -1,
            125,
            126,
            -126,
            250,
            251,
            -251,
            65_535,
            65_536,
            -65_536,
            1 << 31,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            -(1 << 40),
            i64::MAX,
            i64::MIN,
        ];
        let raw = |f: &dyn Fn(&mut RawWriter)| {
            let mut out = Vec::new();
            f(&mut RawWriter::new(&mut out));
            out
        };
        for &i in &ints {
            assert_eq!(raw(&|w| w.i64(i)), encode(&i), "i64 {i}");
            let u = i as u64;
            assert_eq!(raw(&|w| w.u64(u)), encode(&u), "u64 {u}");
            if let Ok(small) = u32::try_from(u) {
                assert_eq!(
                    raw(&|w| w.u64(u64::from(small))),
                    encode(&small),
                    "u32 {small}"
                );
            }
        }
        let value = (
            255u8,
            Some(-2.5f64),
            None::<i64>,
            vec!["naïve".to_owned(), "x".repeat(300)],
            (7u32, 1.0e300f64),
        );
        let written = raw(&|w| {
            w.u8(255);
            w.some(true);
            w.f64(-2.5);
            w.some(false);
            w.len(2);
            w.str("naïve");
            w.str(&"x".repeat(300));
            w.serde(&(7u32, 1.0e300f64));
        });
        assert_eq!(written, encode(&value));
        let (back, n) = decode_part::<(u8, Option<f64>)>(&written[1..]).unwrap();
        assert_eq!((back, n), ((255, Some(-2.5)), 10));
    }

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

    #[test]
    fn lengths_beyond_the_bytes_are_refused_before_allocating() {
        // A string and a byte vector claiming 2^40 bytes (varint 253: eight bytes follow):
        // without a limit bincode allocates that much first, and the allocation aborts.
        let mut huge = vec![STATE_VERSION, 253];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        huge.extend_from_slice(b"abc");
        assert!(matches!(
            decode::<String>(&huge),
            Err(StateError::Decode(_))
        ));
        assert!(matches!(
            decode::<Vec<u8>>(&huge),
            Err(StateError::Decode(_))
        ));
        assert!(matches!(
            decode::<(String, String)>(&huge),
            Err(StateError::Decode(_))
        ));
        // A claim within the bytes still decodes, on either side of a limit step.
        for len in [0, 10, (1 << 16) - 2, (1 << 16) + 5, (1 << 20) + 1] {
            let s = "x".repeat(len);
            assert_eq!(decode::<String>(&encode(&s)).unwrap(), s);
            let pair = (s.clone(), vec![7u8; len]);
            assert_eq!(decode::<(String, Vec<u8>)>(&encode(&pair)).unwrap(), pair);
        }
    }
}

/// A force's whole persisted state at a stream sequence: what another node needs to take the
/// force over (its stream cursor, correlation state, outbox and poison record, as stored).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The force.
    pub force: String,
    /// The last `NMC_EVENTS_<force>` sequence the state reflects.
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
