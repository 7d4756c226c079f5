//! Port-range protection (`nodePort.autoProtectPortRanges`): when the NodePort range overlaps
//! the ephemeral range `net.ipv4.ip_local_port_range`, the NodePort range is appended to
//! `net.ipv4.ip_local_reserved_ports`, so the kernel never picks a NodePort as a client port.
//! Both sysctls belong to the network namespace of the caller.

use std::path::Path;

use super::HostError;
use crate::config::PortRange;

const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

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
pub fn protect_port_range(node_ports: PortRange) -> Result<PortRangeProtection, HostError> {
    let (lo, hi) = read_local_port_range()?;
    if node_ports.high < lo || node_ports.low > hi {
        return Ok(PortRangeProtection::NoOverlap);
    }
    let reserved = read(RESERVED_PORTS)?;
    let entries = parse_reserved(&reserved)?;
    if (node_ports.low..=node_ports.high)
        .all(|p| entries.iter().any(|&(a, b)| (a..=b).contains(&p)))
    {
        return Ok(PortRangeProtection::AlreadyReserved);
    }
    let mut list: Vec<String> = entries.iter().map(|&(a, b)| format_range(a, b)).collect();
    list.push(format_range(node_ports.low, node_ports.high));
    write(RESERVED_PORTS, &list.join(","))?;
    Ok(PortRangeProtection::Appended)
}

/// Removes exactly the entry [`protect_port_range`] appended (the kernel may have merged it
/// with adjacent entries; then the merged range loses the NodePort part). Returns whether
/// anything was removed.
pub fn unprotect_port_range(node_ports: PortRange) -> Result<bool, HostError> {
    let entries = parse_reserved(&read(RESERVED_PORTS)?)?;
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
        write(RESERVED_PORTS, &list.join(","))?;
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

fn read_local_port_range() -> Result<(u16, u16), HostError> {
    let text = read(LOCAL_PORT_RANGE)?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok((lo, hi)),
        _ => Err(unexpected(LOCAL_PORT_RANGE, &text)),
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

fn read(path: &str) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(HostError::io(Path::new(path)))
}

fn write(path: &str, value: &str) -> Result<(), HostError> {
    std::fs::write(path, value).map_err(HostError::io(Path::new(path)))
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
}
