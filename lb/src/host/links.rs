//! The node's network devices as the NodePort programs need them: name, ifindex, addresses
//! and whether a default route leaves through it (the documents' auto-detection).

use std::net::IpAddr;

use super::HostError;

/// A network device of this namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// Interface name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Its addresses (loopback ones left out), in the kernel's order.
    pub addrs: Vec<IpAddr>,
    /// An IPv4 or IPv6 default route leaves through it.
    pub default_route: bool,
}

/// Every device of this network namespace but loopback, in name order.
pub fn host_devices() -> Result<Vec<HostDevice>, HostError> {
    let unexpected = |what: &str, detail: String| HostError::Unexpected {
        what: what.into(),
        detail,
    };
    let defaults = default_route_devices();
    let mut out: Vec<HostDevice> = Vec::new();
    for name in nix::net::if_::if_nameindex()
        .map_err(|e| unexpected("the node's devices (if_nameindex)", e.to_string()))?
        .iter()
    {
        let name = name.name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let ifindex = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|e| unexpected(&format!("the ifindex of {name}"), e.to_string()))?;
        out.push(HostDevice {
            default_route: defaults.contains(&name),
            name,
            ifindex,
            addrs: Vec::new(),
        });
    }
    for d in super::local_devices()? {
        if let Some(h) = out.iter_mut().find(|h| h.name == d.name) {
            h.addrs = d.addrs;
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Names of the devices a default route leaves through, from this namespace's
/// `/proc/self/net/route` and `/proc/self/net/ipv6_route` (unreadable ones count as none).
fn default_route_devices() -> Vec<String> {
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let mut out = defaults_v4(&read("/proc/self/net/route"));
    out.extend(defaults_v6(&read("/proc/self/net/ipv6_route")));
    out
}

/// `Iface Destination Gateway Flags … Mask …`: the default route has destination and mask 0.
fn defaults_v4(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
        })
        .collect()
}

/// `dest plen src splen next metric refcnt use flags dev`: the default route is `::/0`.
fn defaults_v6(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() == 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo")
                .then(|| f[9].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_are_read_from_both_tables() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth1\t0010AC00\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0\n";
        assert_eq!(defaults_v4(v4), ["eth0"]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth2\n\
                  fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(defaults_v6(v6), ["eth2"]);
    }
}
