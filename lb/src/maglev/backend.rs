//! A backend as Maglev sees it: an address and a weight.

use std::fmt;
use std::str::FromStr;

use crate::model::L3n4Addr;

/// The weight a backend gets when none is given (`ADDR` rather than `ADDR@WEIGHT`).
pub const DEFAULT_WEIGHT: u16 = crate::model::DEFAULT_BACKEND_WEIGHT;

/// What [`MaglevBackend::from_str`] accepts, repeated in its errors.
const ACCEPTED: &str = "ADDR or ADDR@WEIGHT, where ADDR is IP:PORT or IP:PORT/PROTO and WEIGHT \
                        an integer 0..=65535 (default 100), e.g. 10.0.0.1:80@2 or [fd00::1]:53/UDP";

/// One backend of a Maglev table: its address, which decides its place in the table, and its
/// weight, which decides its share of the entries. Weight 0 takes no entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    /// The backend's address; [`L3n4Addr::identity_bytes`] is what Maglev hashes.
    pub addr: L3n4Addr,
    /// The backend's relative weight.
    pub weight: u16,
}

impl MaglevBackend {
    /// A backend with this address and weight.
    pub fn new(addr: L3n4Addr, weight: u16) -> Self {
        MaglevBackend { addr, weight }
    }
}

impl fmt::Display for MaglevBackend {
    /// `ADDR/PROTO@WEIGHT`, e.g. `10.0.0.1:80/TCP@100`: a form [`MaglevBackend::from_str`] reads
    /// back to the same backend.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr.display_with_protocol(), self.weight)
    }
}

impl FromStr for MaglevBackend {
    type Err = BackendParseError;

    /// Parses `ADDR` or `ADDR@WEIGHT` (`10.0.0.1:80`, `10.0.0.1:80/UDP@2`, `[fd00::1]:80@0`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BackendParseError {
            input: s.to_owned(),
        };
        let (addr, weight) = match s.rsplit_once('@') {
            Some((addr, weight)) => {
                // `u16::from_str` accepts a leading `+`; a weight is plain digits.
                if weight.is_empty() || !weight.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                (addr, weight.parse().map_err(|_| err())?)
            }
            None => (s, DEFAULT_WEIGHT),
        };
        let addr = addr.parse().map_err(|_| err())?;
        Ok(MaglevBackend { addr, weight })
    }
}

/// A string that is not a backend of the form `ADDR` or `ADDR@WEIGHT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Maglev backend {input:?}: expected {ACCEPTED}")]
pub struct BackendParseError {
    /// What was given.
    pub input: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::L4Protocol;

    #[test]
    fn parses_address_and_optional_weight() {
        let b: MaglevBackend = "10.0.0.1:80".parse().unwrap();
        assert_eq!(b.addr, "10.0.0.1:80".parse().unwrap());
        assert_eq!(b.weight, 100);
        let b: MaglevBackend = "10.0.0.1:80/UDP@2".parse().unwrap();
        assert_eq!(b.addr.protocol, L4Protocol::Udp);
        assert_eq!(b.weight, 2);
        let b: MaglevBackend = "[fd00::1]:53@0".parse().unwrap();
        assert_eq!(b.addr, "[fd00::1]:53".parse().unwrap());
        assert_eq!(b.weight, 0);
        let b: MaglevBackend = "10.0.0.1:80@65535".parse().unwrap();
        assert_eq!(b.weight, u16::MAX);
    }

    #[test]
    fn display_round_trips() {
        for s in ["10.0.0.1:80/TCP@100", "[fd00::1]:53/UDP@0"] {
            let b: MaglevBackend = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
            assert_eq!(b.to_string().parse::<MaglevBackend>().unwrap(), b);
        }
    }

    #[test]
    fn rejects_malformed_backends_naming_the_input() {
        for input in [
            "10.0.0.1:80@",
            "10.0.0.1:80@-1",
            "10.0.0.1:80@+2",
            "10.0.0.1:80@65536",
            "10.0.0.1:80@two",
            "10.0.0.1@2",
            "10.0.0.1:80/SCTP@2",
            "@2",
            "",
        ] {
            let err = input.parse::<MaglevBackend>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
            assert!(msg.contains("ADDR@WEIGHT"), "{msg}");
        }
    }
}
