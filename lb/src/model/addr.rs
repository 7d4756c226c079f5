//! Layer-3 + layer-4 addresses: the key every frontend and backend is known by.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Transport protocols a service can carry. The documents support TCP and UDP only (SCTP is a
/// listed limitation), so anything else is rejected at translation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum L4Protocol {
    /// Transmission Control Protocol.
    Tcp,
    /// User Datagram Protocol.
    Udp,
}

impl L4Protocol {
    /// The IANA protocol number, as carried in IP headers and in the datapath's map keys.
    pub fn number(self) -> u8 {
        match self {
            L4Protocol::Tcp => 6,
            L4Protocol::Udp => 17,
        }
    }
}

impl fmt::Display for L4Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4Protocol::Tcp => "TCP",
            L4Protocol::Udp => "UDP",
        })
    }
}

impl FromStr for L4Protocol {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(L4Protocol::Tcp),
            "UDP" => Ok(L4Protocol::Udp),
            _ => Err(AddrParseError::new(s, "a protocol: TCP or UDP")),
        }
    }
}

/// IP address family of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The unspecified ("any") address of this family, used by wildcard NodePort frontends.
    pub fn unspecified(self) -> IpAddr {
        match self {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// An IP address, a port and a transport protocol: the identity of a frontend or a backend.
///
/// Displayed as `10.0.0.1:80` / `[fd00::1]:80` (the service list's form); the protocol is shown
/// by [`L3n4Addr::display_with_protocol`] where it matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct L3n4Addr {
    /// The IP address.
    pub ip: IpAddr,
    /// The layer-4 port.
    pub port: u16,
    /// The layer-4 protocol.
    pub protocol: L4Protocol,
}

/// Length of [`L3n4Addr::identity_bytes`].
pub const IDENTITY_LEN: usize = 19;

impl L3n4Addr {
    /// A new address.
    pub fn new(ip: IpAddr, port: u16, protocol: L4Protocol) -> Self {
        L3n4Addr { ip, port, protocol }
    }

    /// The address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.ip)
    }

    /// A canonical, family-independent byte encoding: the IPv6 (or IPv4-mapped IPv6) address in
    /// 16 bytes, the port big-endian, then the IANA protocol number.
    ///
    /// Maglev hashes this, so that a backend's place in the table depends on what it is and never
    /// on its position in a list or an id assigned on one node.
    pub fn identity_bytes(&self) -> [u8; IDENTITY_LEN] {
        let v6 = match self.ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mut out = [0u8; IDENTITY_LEN];
        out[..16].copy_from_slice(&v6.octets());
        out[16..18].copy_from_slice(&self.port.to_be_bytes());
        out[18] = self.protocol.number();
        out
    }

    /// `addr:port/PROTO`, e.g. `10.0.0.1:80/TCP`.
    pub fn display_with_protocol(&self) -> String {
        format!("{self}/{}", self.protocol)
    }
}

impl fmt::Display for L3n4Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

impl FromStr for L3n4Addr {
    type Err = AddrParseError;

    /// Parses `IP:PORT` or `IP:PORT/PROTO` (`[IPv6]:PORT` for IPv6); the protocol defaults to TCP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ACCEPTED: &str = "IP:PORT or IP:PORT/PROTO, e.g. 10.0.0.1:80/TCP or [fd00::1]:53/UDP";
        let (sock, protocol) = match s.rsplit_once('/') {
            Some((sock, proto)) => (
                sock,
                proto
                    .parse()
                    .map_err(|_| AddrParseError::new(s, ACCEPTED))?,
            ),
            None => (s, L4Protocol::Tcp),
        };
        let sock: SocketAddr = sock.parse().map_err(|_| AddrParseError::new(s, ACCEPTED))?;
        Ok(L3n4Addr::new(sock.ip(), sock.port(), protocol))
    }
}

/// A string that is not an address of the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: expected {expected}")]
pub struct AddrParseError {
    /// What was given.
    pub input: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl AddrParseError {
    fn new(input: &str, expected: &'static str) -> Self {
        AddrParseError {
            input: input.to_owned(),
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_both_families() {
        let v4: L3n4Addr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(v4.to_string(), "10.0.0.1:80");
        assert_eq!(v4.protocol, L4Protocol::Tcp);
        let v6: L3n4Addr = "[fd00::1]:53/udp".parse().unwrap();
        assert_eq!(v6.display_with_protocol(), "[fd00::1]:53/UDP");
    }

    #[test]
    fn rejects_malformed_addresses_naming_the_input() {
        let err = "10.0.0.1".parse::<L3n4Addr>().unwrap_err();
        assert!(err.to_string().contains("\"10.0.0.1\""), "{err}");
        assert!("10.0.0.1:80/SCTP".parse::<L3n4Addr>().is_err());
        assert!("10.0.0.1:70000".parse::<L3n4Addr>().is_err());
    }

    #[test]
    fn identity_separates_port_protocol_and_family() {
        let a: L3n4Addr = "10.0.0.1:80/TCP".parse().unwrap();
        let b: L3n4Addr = "10.0.0.1:80/UDP".parse().unwrap();
        let c: L3n4Addr = "10.0.0.1:81/TCP".parse().unwrap();
        assert_ne!(a.identity_bytes(), b.identity_bytes());
        assert_ne!(a.identity_bytes(), c.identity_bytes());
        let mapped: L3n4Addr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        // An IPv4 address and its IPv4-mapped IPv6 form are the same endpoint on the wire.
        assert_eq!(a.identity_bytes(), mapped.identity_bytes());
    }
}
