//! Port-range protection (`nodePort.autoProtectPortRanges`): when the NodePort range overlaps
//! the ephemeral range `net.ipv4.ip_local_port_range`, the NodePort range is appended to
//! `net.ipv4.ip_local_reserved_ports`, so the kernel never picks a NodePort as a client port.
//! Both sysctls belong to the network namespace of the caller. They are read and written
//! through [`Sysctls`], which is `/proc/sys` for the agent ([`ProcSysctls`]) and a model of
//! them for the simulator, so both make the same decision with the same code.

use std::path::PathBuf;

use super::HostError;
use crate::config::PortRange;

/// The ephemeral port range, `LOW\tHIGH`.
pub const LOCAL_PORT_RANGE: &str = "net.ipv4.ip_local_port_range";
/// Ports the kernel never picks as ephemeral ones, `A-B,C,...`.
pub const RESERVED_PORTS: &str = "net.ipv4.ip_local_reserved_ports";

/// The sysctls of one network namespace, by their dotted names.
pub trait Sysctls {
    /// The value of `key`.
    fn read(&mut self, key: &str) -> Result<String, HostError>;
    /// Sets `key` to `value`.
    fn write(&mut self, key: &str, value: &str) -> Result<(), HostError>;
}

/// The calling thread's network namespace's sysctls, under `/proc/sys`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSysctls;

impl ProcSysctls {
    fn path(key: &str) -> PathBuf {
        PathBuf::from("/proc/sys").join(key.replace('.', "/"))
    }
}

impl Sysctls for ProcSysctls {
    fn read(&mut self, key: &str) -> Result<String, HostError> {
        let path = Self::path(key);
        std::fs::read_to_string(&path).map_err(HostError::io(&path))
    }

    fn write(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        let path = Self::path(key);
        std::fs::write(&path, value).map_err(HostError::io(&path))
    }
}

/// What [`protect_port_range`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRangeProtection {
    /// The ranges do not overlap: nothing to protect.
    NoOverlap,
    /// The NodePort range was already reserved (by an earlier agent or the administrator).
    AlreadyReserved,
    /// The NodePort range was appended to the reserved ports.
    Appended,
}

/// Reserves `node_ports` when it overlaps the ephemeral range.
pub fn protect_port_range(
    node_ports: PortRange,
    sysctls: &mut (impl Sysctls + ?Sized),
) -> Result<PortRangeProtection, HostError> {
    let local_range = sysctls.read(LOCAL_PORT_RANGE)?;
    let reserved = sysctls.read(RESERVED_PORTS)?;
    let (outcome, new_reserved) = port_range_protection(node_ports, &local_range, &reserved)?;
    if let Some(value) = new_reserved {
        sysctls.write(RESERVED_PORTS, &value)?;
    }
    Ok(outcome)
}

/// The decision of [`protect_port_range`] on the two sysctls' text, and the new
/// `ip_local_reserved_ports` to write when the range is appended.
fn port_range_protection(
    node_ports: PortRange,
    local_port_range: &str,
    reserved_ports: &str,
) -> Result<(PortRangeProtection, Option<String>), HostError> {
    let (lo, hi) = parse_local_port_range(local_port_range)?;
    if node_ports.high < lo || node_ports.low > hi {
        return Ok((PortRangeProtection::NoOverlap, None));
    }
    let entries = parse_reserved(reserved_ports)?;
    if (node_ports.low..=node_ports.high)
        .all(|p| entries.iter().any(|&(a, b)| (a..=b).contains(&p)))
    {
        return Ok((PortRangeProtection::AlreadyReserved, None));
    }
    let mut list: Vec<String> = entries.iter().map(|&(a, b)| format_range(a, b)).collect();
    list.push(format_range(node_ports.low, node_ports.high));
    Ok((PortRangeProtection::Appended, Some(list.join(","))))
}

/// Removes exactly the entry [`protect_port_range`] appended (the kernel may have merged it
/// with adjacent entries; then the merged range loses the NodePort part). Returns whether
/// anything was removed.
pub fn unprotect_port_range(
    node_ports: PortRange,
    sysctls: &mut (impl Sysctls + ?Sized),
) -> Result<bool, HostError> {
    let entries = parse_reserved(&sysctls.read(RESERVED_PORTS)?)?;
    let mut kept = Vec::new();
    let mut removed = false;
    for (a, b) in entries {
        if b < node_ports.low || a > node_ports.high {
            kept.push((a, b));
            continue;
        }
        removed = true;
        if a < node_ports.low {
            kept.push((a, node_ports.low - 1));
        }
        if b > node_ports.high {
            kept.push((node_ports.high + 1, b));
        }
    }
    if removed {
        let list: Vec<String> = kept.iter().map(|&(a, b)| format_range(a, b)).collect();
        sysctls.write(RESERVED_PORTS, &list.join(","))?;
    }
    Ok(removed)
}

fn format_range(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

fn parse_local_port_range(text: &str) -> Result<(u16, u16), HostError> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok((lo, hi)),
        _ => Err(unexpected(LOCAL_PORT_RANGE, text)),
    }
}

/// `1-3,100,200-300` as ranges.
fn parse_reserved(text: &str) -> Result<Vec<(u16, u16)>, HostError> {
    text.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (a, b) = entry.split_once('-').unwrap_or((entry, entry));
            match (a.trim().parse(), b.trim().parse()) {
                (Ok(a), Ok(b)) => Ok((a, b)),
                _ => Err(unexpected(RESERVED_PORTS, text)),
            }
        })
        .collect()
}

fn unexpected(path: &str, text: &str) -> HostError {
    HostError::Unexpected {
        what: path.to_owned(),
        detail: format!("cannot parse {:?}", text.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_port_lists_parse_single_ports_and_ranges() {
        assert_eq!(
            parse_reserved("1-3,100,200-300\n").unwrap(),
            vec![(1, 3), (100, 100), (200, 300)]
        );
        assert_eq!(parse_reserved("\n").unwrap(), vec![]);
        assert!(parse_reserved("x-3").is_err());
    }

    const NODE_PORTS: PortRange = PortRange {
        low: 30000,
        high: 32767,
    };

    #[test]
    fn an_overlapping_ephemeral_range_gets_the_node_port_range_appended() {
        assert_eq!(
            port_range_protection(NODE_PORTS, "30000\t60999\n", "8080\n").unwrap(),
            (
                PortRangeProtection::Appended,
                Some("8080,30000-32767".to_owned())
            )
        );
        assert_eq!(
            port_range_protection(NODE_PORTS, "32768 60999", "").unwrap(),
            (PortRangeProtection::NoOverlap, None)
        );
        assert_eq!(
            port_range_protection(NODE_PORTS, "1024 65535", "29000-33000").unwrap(),
            (PortRangeProtection::AlreadyReserved, None)
        );
    }
}
