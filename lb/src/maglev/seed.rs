//! The `maglev.hashSeed` option: 12 secret bytes that key the two Maglev hashes.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a [`HashSeed`] in bytes.
pub const SEED_LEN: usize = 12;

/// The built-in seed, used when `maglev.hashSeed` is not set. Every node of a cluster must use the
/// same seed, so that they all build the same tables; a cluster that does not want its backend
/// placement to be predictable from outside sets its own.
pub const DEFAULT_HASH_SEED: &str = "JLfvgnHc2kaSUFaI";

/// What [`HashSeed::from_str`] accepts, repeated in its errors.
const ACCEPTED: &str = "expected base64 of exactly 12 bytes (16 characters), e.g. the output of \
                        `head -c12 /dev/urandom | base64 -w0`";

/// The `maglev.hashSeed` option: 12 bytes, written as standard base64 (16 characters; 12 bytes
/// need no padding).
///
/// The seed keys both Maglev hashes (see [the module documentation](crate::maglev)), so it decides
/// where every backend lands in every table. [`Default`] is the built-in seed
/// [`DEFAULT_HASH_SEED`]; [`Display`](fmt::Display) prints the base64 form back, so
/// `seed.to_string().parse()` gives the same seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashSeed([u8; SEED_LEN]);

impl HashSeed {
    /// A seed with these bytes.
    pub const fn from_bytes(bytes: [u8; SEED_LEN]) -> Self {
        HashSeed(bytes)
    }

    /// The seed's bytes.
    pub const fn as_bytes(&self) -> &[u8; SEED_LEN] {
        &self.0
    }

    /// The 16-byte SipHash key for one of the two hashes: the 12 seed bytes followed by the 4-byte
    /// domain tag (`b"offs"` or `b"skip"`).
    pub(crate) fn sip_key(&self, tag: &[u8; 4]) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..SEED_LEN].copy_from_slice(&self.0);
        key[SEED_LEN..].copy_from_slice(tag);
        key
    }
}

impl Default for HashSeed {
    fn default() -> Self {
        DEFAULT_HASH_SEED
            .parse()
            .expect("the built-in Maglev seed is valid base64 of 12 bytes")
    }
}

impl fmt::Display for HashSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl FromStr for HashSeed {
    type Err = SeedParseError;

    /// Parses standard-alphabet base64 of exactly 12 bytes. Surrounding whitespace (such as the
    /// newline `base64` prints) is ignored; the error names the input as given.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let decoded = STANDARD
            .decode(s.trim())
            .map_err(|e| SeedParseError::NotBase64 {
                input: s.to_owned(),
                reason: e.to_string(),
            })?;
        let bytes: [u8; SEED_LEN] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| SeedParseError::WrongLength {
                    input: s.to_owned(),
                    len: decoded.len(),
                })?;
        Ok(HashSeed(bytes))
    }
}

impl Serialize for HashSeed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HashSeed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A `maglev.hashSeed` value that is not base64 of exactly 12 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedParseError {
    /// The value is not standard base64.
    #[error("invalid maglev.hashSeed {input:?}: not base64 ({reason}); {ACCEPTED}")]
    NotBase64 {
        /// What was given.
        input: String,
        /// Why the base64 decoder rejected it.
        reason: String,
    },
    /// The value is base64 of the wrong number of bytes.
    #[error("invalid maglev.hashSeed {input:?}: {ACCEPTED}; got {len} bytes")]
    WrongLength {
        /// What was given.
        input: String,
        /// How many bytes it decodes to.
        len: usize,
    },
}

impl SeedParseError {
    /// What is wrong and what is accepted, without repeating the input (for messages that
    /// already name the option and its value).
    pub fn reason(&self) -> String {
        match self {
            SeedParseError::NotBase64 { reason, .. } => {
                format!("not base64 ({reason}); {ACCEPTED}")
            }
            SeedParseError::WrongLength { len, .. } => format!("{ACCEPTED}; got {len} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_seed_is_the_documented_one() {
        let seed = HashSeed::default();
        assert_eq!(seed.to_string(), "JLfvgnHc2kaSUFaI");
        assert_eq!(
            seed.as_bytes(),
            &[0x24, 0xb7, 0xef, 0x82, 0x71, 0xdc, 0xda, 0x46, 0x92, 0x50, 0x56, 0x88]
        );
    }

    #[test]
    fn parse_display_round_trip() {
        let bytes = [0, 1, 2, 3, 250, 251, 252, 253, 254, 255, 128, 127];
        let seed = HashSeed::from_bytes(bytes);
        let text = seed.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<HashSeed>().unwrap(), seed);
        assert_eq!(format!(" {text}\n").parse::<HashSeed>().unwrap(), seed);
    }

    #[test]
    fn rejects_wrong_length_naming_input_and_length() {
        let err = "abcd".parse::<HashSeed>().unwrap_err();
        assert_eq!(
            err,
            SeedParseError::WrongLength {
                input: "abcd".into(),
                len: 3
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("\"abcd\""), "{msg}");
        assert!(msg.contains("exactly 12 bytes"), "{msg}");
        assert!(msg.contains("got 3 bytes"), "{msg}");
        // 13 bytes.
        let err = "AAAAAAAAAAAAAAAAAA==".parse::<HashSeed>().unwrap_err();
        assert!(err.to_string().contains("got 13 bytes"), "{err}");
    }

    #[test]
    fn rejects_non_base64_naming_input() {
        for input in ["abc", "JLfvgnHc2kaSUFa!", "JLfvgnHc2kaSUFaI=", ""] {
            let err = input.parse::<HashSeed>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
            assert!(msg.contains("12 bytes"), "{msg}");
        }
        assert!(matches!(
            "abc".parse::<HashSeed>(),
            Err(SeedParseError::NotBase64 { .. })
        ));
    }

    #[test]
    fn serde_uses_the_base64_form() {
        let seed: HashSeed = serde_json::from_str("\"AAECAwQFBgcICQoL\"").unwrap();
        assert_eq!(seed.as_bytes(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(
            serde_json::to_string(&seed).unwrap(),
            "\"AAECAwQFBgcICQoL\""
        );
        let err = serde_json::from_str::<HashSeed>("\"abc\"").unwrap_err();
        assert!(err.to_string().contains("maglev.hashSeed"), "{err}");
    }
}
