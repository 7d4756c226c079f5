//! What the caller asks for: nodes and pods with their names and addresses, checked before
//! anything is created.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::{Error, Result};

/// A node to create: its name, its addresses on each segment, and the pod CIDRs it routes.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let spec = netsim::NodeSpec::new("a")
///     .eth0("192.168.56.11/24".parse()?)
///     .eth0("fd00:56::11/64".parse()?)
///     .pod_cidr("10.0.1.0/24".parse()?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub(crate) name: String,
    /// Addresses per segment: index 0 is `eth0` on the first segment, 1 is `eth1`.
    pub(crate) segments: [Vec<IpNet>; 2],
    pub(crate) pod_cidrs: Vec<IpNet>,
    pub(crate) mtu: Option<u32>,
}

impl NodeSpec {
    /// A node called `name` (at most 12 characters of `a-z`, `0-9`, `-`).
    pub fn new(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.to_owned(),
            segments: [Vec::new(), Vec::new()],
            pod_cidrs: Vec::new(),
            mtu: None,
        }
    }

    /// Connects the node to the first segment as `eth0`, with this address (call again for
    /// another family).
    pub fn eth0(mut self, addr: IpNet) -> NodeSpec {
        self.segments[0].push(addr);
        self
    }

    /// Connects the node to the second segment as `eth1`, with this address.
    pub fn eth1(mut self, addr: IpNet) -> NodeSpec {
        self.segments[1].push(addr);
        self
    }

    /// The MTU of the node's devices (and of the fabric's ends of its links), instead of
    /// 1500.
    pub fn mtu(mut self, mtu: u32) -> NodeSpec {
        self.mtu = Some(mtu);
        self
    }

    /// A pod CIDR of this node: every other node gets a route to it via this node's address
    /// on a segment they share.
    pub fn pod_cidr(mut self, cidr: IpNet) -> NodeSpec {
        self.pod_cidrs.push(cidr);
        self
    }
}

/// A pod (or any host) inside a node: its name and addresses.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub(crate) name: String,
    pub(crate) ipv4: Ipv4Addr,
    pub(crate) ipv6: Option<Ipv6Addr>,
    pub(crate) mtu: Option<u32>,
}

impl PodSpec {
    /// A pod called `name` (at most 13 characters of `a-z`, `0-9`, `-`) with this IPv4 address.
    pub fn new(name: &str, ipv4: Ipv4Addr) -> PodSpec {
        PodSpec {
            name: name.to_owned(),
            ipv4,
            ipv6: None,
            mtu: None,
        }
    }

    /// Gives the pod an IPv6 address too.
    pub fn ipv6(mut self, ipv6: Ipv6Addr) -> PodSpec {
        self.ipv6 = Some(ipv6);
        self
    }

    /// The MTU of the pod's veth (both ends), instead of 1500: the node then answers a larger
    /// packet it would forward to the pod with an ICMP fragmentation needed / packet too big.
    pub fn mtu(mut self, mtu: u32) -> PodSpec {
        self.mtu = Some(mtu);
        self
    }
}

/// Longest node name: the fabric-side port `sN-<node>` must fit in 15 characters.
pub(crate) const MAX_NODE_NAME: usize = 12;
/// Longest pod name: the node-side veth `v-<pod>` must fit in 15 characters.
pub(crate) const MAX_POD_NAME: usize = 13;

/// Checks that `name` can be a file name and part of an interface name.
pub(crate) fn check_name(name: &str, max: usize) -> Result<()> {
    let why = if name.is_empty() || name.len() > max {
        Some(if max == MAX_NODE_NAME {
            "must be 1 to 12 characters long"
        } else {
            "must be 1 to 13 characters long"
        })
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("may hold only a-z, 0-9 and -")
    } else if name == "fabric" {
        Some("is reserved for the topology's fabric namespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("node-1", MAX_NODE_NAME).is_ok());
        assert!(check_name("", MAX_NODE_NAME).is_err());
        assert!(check_name("abcdefghijklm", MAX_NODE_NAME).is_err());
        assert!(check_name("abcdefghijklm", MAX_POD_NAME).is_ok());
        assert!(check_name("Node", MAX_NODE_NAME).is_err());
        assert!(check_name("a/b", MAX_POD_NAME).is_err());
        assert!(check_name("fabric", MAX_NODE_NAME).is_err());
    }
}
