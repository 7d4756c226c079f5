//! Parsed forms of options that are strings in the values file.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The NodePort range, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port.
    pub high: u16,
}

impl PortRange {
    /// Kubernetes' default NodePort range.
    pub const DEFAULT: PortRange = PortRange {
        low: 30000,
        high: 32767,
    };

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.low <= other.high && other.low <= self.high
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

impl FromStr for PortRange {
    type Err = &'static str;

    /// `LOW,HIGH` (the Helm form) or `LOW-HIGH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str =
            "expected LOW,HIGH or LOW-HIGH with 1 <= LOW <= HIGH <= 65535, e.g. 30000,32767";
        let (low, high) = s.split_once([',', '-']).ok_or(EXPECTED)?;
        let low: u16 = low.trim().parse().map_err(|_| EXPECTED)?;
        let high: u16 = high.trim().parse().map_err(|_| EXPECTED)?;
        if low == 0 || low > high {
            return Err(EXPECTED);
        }
        Ok(PortRange { low, high })
    }
}

/// A `devices` entry: an interface name, or a `prefix+` wildcard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub enum DevicePattern {
    /// Exactly this interface.
    Name(String),
    /// Any interface whose name starts with this prefix (written `prefix+`).
    Prefix(String),
}

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

impl DevicePattern {
    /// Whether interface `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            DevicePattern::Name(n) => n == name,
            DevicePattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for DevicePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevicePattern::Name(n) => f.write_str(n),
            DevicePattern::Prefix(p) => write!(f, "{p}+"),
        }
    }
}

impl From<DevicePattern> for String {
    fn from(p: DevicePattern) -> String {
        p.to_string()
    }
}

impl FromStr for DevicePattern {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected an interface name of 1-15 characters without '/', ':' or \
             spaces, or a prefix wildcard such as eth+";
        let (name, wildcard) = match s.strip_suffix('+') {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        let valid = !name.is_empty()
            && name.len() <= MAX_IFNAME
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c == '+' || c.is_whitespace());
        if !valid {
            return Err(EXPECTED);
        }
        Ok(if wildcard {
            DevicePattern::Prefix(name.to_owned())
        } else {
            DevicePattern::Name(name.to_owned())
        })
    }
}

/// Which protocols the socket hooks translate (`hostServices.protocols`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Protocols {
    /// TCP.
    pub tcp: bool,
    /// UDP.
    pub udp: bool,
}

impl fmt::Display for Protocols {
    /// `TCP, UDP` as `lbctl status` shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [(self.tcp, "TCP"), (self.udp, "UDP")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        f.write_str(&names.join(", "))
    }
}

impl FromStr for Protocols {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected tcp, udp or tcp,udp";
        let mut p = Protocols {
            tcp: false,
            udp: false,
        };
        for token in s.split(',').map(str::trim) {
            match token.to_ascii_lowercase().as_str() {
                "tcp" => p.tcp = true,
                "udp" => p.udp = true,
                _ => return Err(EXPECTED),
            }
        }
        Ok(p)
    }
}

/// A period written as Go and Helm write durations: numbers with a unit each (`ms`, `s`, `m`,
/// `h`), summed, e.g. `30s`, `1m30s`, `500ms`; it must be longer than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period(pub std::time::Duration);

impl FromStr for Period {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str =
            "expected a duration above zero with a unit, such as 30s, 1m, 1m30s or 500ms (units: ms, s, m, h)";
        let mut rest = s.trim();
        let mut total = std::time::Duration::ZERO;
        if rest.is_empty() {
            return Err(EXPECTED);
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or(EXPECTED)?;
            let number: u64 = rest[..digits].parse().map_err(|_| EXPECTED)?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let millis_per = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(EXPECTED),
            };
            rest = &rest[unit_len..];
            let millis = number.checked_mul(millis_per).ok_or(EXPECTED)?;
            total = total
                .checked_add(std::time::Duration::from_millis(millis))
                .ok_or(EXPECTED)?;
        }
        if total.is_zero() {
            return Err(EXPECTED);
        }
        Ok(Period(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_accepts_both_forms() {
        assert_eq!(
            "10000,32767".parse(),
            Ok(PortRange {
                low: 10000,
                high: 32767
            })
        );
        assert_eq!("30000-32767".parse(), Ok(PortRange::DEFAULT));
        assert!("32767,30000".parse::<PortRange>().is_err());
        assert!("0,10".parse::<PortRange>().is_err());
        assert!("30000".parse::<PortRange>().is_err());
        assert!("1,70000".parse::<PortRange>().is_err());
    }

    #[test]
    fn device_patterns_match_names_and_prefixes() {
        let eth: DevicePattern = "eth+".parse().unwrap();
        assert!(eth.matches("eth0") && eth.matches("eth12") && !eth.matches("ens3"));
        let exact: DevicePattern = "eth0".parse().unwrap();
        assert!(exact.matches("eth0") && !exact.matches("eth01"));
        for bad in ["", "+", "a/b", "a b", "sixteen-chars-xx", "e+th"] {
            assert!(bad.parse::<DevicePattern>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn periods_are_go_durations_above_zero() {
        let secs = |s: &str| s.parse::<Period>().map(|p| p.0.as_millis());
        assert_eq!(secs("30s"), Ok(30_000));
        assert_eq!(secs("1m30s"), Ok(90_000));
        assert_eq!(secs("500ms"), Ok(500));
        assert_eq!(secs("2h"), Ok(7_200_000));
        for bad in ["", "30", "0s", "s", "-5s", "1.5s", "30 s", "3d", "1m30"] {
            assert!(bad.parse::<Period>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn protocols_display_as_status_shows_them() {
        assert_eq!(
            "tcp,udp".parse::<Protocols>().unwrap().to_string(),
            "TCP, UDP"
        );
        assert_eq!("tcp".parse::<Protocols>().unwrap().to_string(), "TCP");
        assert!("sctp".parse::<Protocols>().is_err());
    }
}
