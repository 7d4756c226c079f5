//! The node the packets run on: a fresh network namespace (entered by the calling thread
//! only, and gone with it) with two NodePort devices and a pod's veth, addresses, routes and
//! permanent neighbours, so that `bpf_fib_lookup` answers every kind of question; and the same
//! answers as the simulator's [`FibTable`].

use std::net::IpAddr;
use std::process::Command;

use ebpf::maps::{LbAddr, LbDevice};
use lb::datapath::sim::{FibResult, FibTable};

/// The NodePort device towards clients: its MAC, addresses.
pub const NP0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const NP0_V4: &str = "192.0.2.1";
pub const NP0_V6: &str = "2001:db8:1::1";
/// The NodePort device towards the other nodes.
pub const NP1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const NP1_V4: &str = "198.51.100.1";
pub const NP1_V6: &str = "2001:db8:2::1";
/// The gateway on np0 behind which the far clients are.
const GATEWAY: &str = "192.0.2.254";
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0xfe];

/// Clients: on np0's segment (with neighbours), behind the gateway, or where the node has
/// no route (their SNATed replies cannot be forwarded).
pub const CLIENTS_V4: [&str; 4] = ["192.0.2.100", "192.0.2.101", "203.0.113.50", "198.18.0.1"];
pub const CLIENTS_V6: [&str; 3] = ["2001:db8:1::100", "2001:db8:1::101", "3fff::50"];

/// What kind of place a backend address is, for the FIB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    /// Behind the pod veth (local).
    Pod,
    /// On np1's segment with a permanent neighbour entry (remote, redirect).
    Remote(u8),
    /// On np1's segment without one (remote, redirect_neigh).
    RemoteNoNeigh,
    /// An address of the node (local, NOT_FWDED).
    Node,
    /// No route (local: the kernel decides).
    Nowhere,
}

/// Backends by family, with where they are.
pub const BACKENDS_V4: [(&str, Where); 7] = [
    ("10.0.1.5", Where::Pod),
    ("10.0.1.6", Where::Pod),
    ("198.51.100.10", Where::Remote(0x10)),
    ("198.51.100.11", Where::Remote(0x11)),
    ("198.51.100.20", Where::RemoteNoNeigh),
    (NP0_V4, Where::Node),
    ("233.252.0.1", Where::Nowhere),
];
pub const BACKENDS_V6: [(&str, Where); 5] = [
    ("fd00:1::5", Where::Pod),
    ("2001:db8:2::10", Where::Remote(0x20)),
    ("2001:db8:2::20", Where::RemoteNoNeigh),
    (NP0_V6, Where::Node),
    ("3fff::1", Where::Nowhere),
];

/// The node's devices, by what the test needs of them.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub np0: u32,
    pub np1: u32,
    pub pod: u32,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address constant")
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn client_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, i as u8]
}

pub fn remote_mac(tag: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, tag]
}

/// Runs a command in this thread's namespace (a child inherits the forking thread's).
fn run(cmd: &str) -> Result<(), String> {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

impl Node {
    /// Moves the calling thread into a new network namespace and builds the node there.
    pub fn build() -> Result<Node, String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        // bpf_fib_lookup answers FWD_DISABLED on a device that does not forward. The files
        // under /proc/sys/net are those of the opening thread's namespace.
        for family in ["ipv4", "ipv6"] {
            for conf in ["all", "default"] {
                let path = format!("/proc/sys/net/{family}/conf/{conf}/forwarding");
                std::fs::write(&path, "1").map_err(|e| format!("{path}: {e}"))?;
            }
        }
        let mut cmds = vec![
            "ip link set lo up".to_string(),
            format!(
                "ip link add np0 address {} type veth peer name np0p",
                mac(NP0_MAC)
            ),
            format!(
                "ip link add np1 address {} type veth peer name np1p",
                mac(NP1_MAC)
            ),
            "ip link add pod0 address 02:00:00:00:00:03 type veth peer name pod0p".to_string(),
        ];
        for dev in ["np0", "np0p", "np1", "np1p", "pod0", "pod0p"] {
            cmds.push(format!("ip link set {dev} up"));
        }
        cmds.extend([
            format!("ip addr add {NP0_V4}/24 dev np0"),
            format!("ip -6 addr add {NP0_V6}/64 dev np0 nodad"),
            format!("ip addr add {NP1_V4}/24 dev np1"),
            format!("ip -6 addr add {NP1_V6}/64 dev np1 nodad"),
            "ip route add 10.0.1.0/24 dev pod0".to_string(),
            "ip -6 route add fd00:1::/64 dev pod0".to_string(),
            format!(
                "ip neigh add {GATEWAY} lladdr {} nud permanent dev np0",
                mac(GATEWAY_MAC)
            ),
            format!("ip route add 203.0.113.0/24 via {GATEWAY} dev np0"),
        ]);
        for (i, c) in CLIENTS_V4
            .iter()
            .enumerate()
            .filter(|(_, c)| c.starts_with("192."))
        {
            cmds.push(format!(
                "ip neigh add {c} lladdr {} nud permanent dev np0",
                mac(client_mac(i))
            ));
        }
        for (i, c) in CLIENTS_V6
            .iter()
            .enumerate()
            .filter(|(_, c)| c.starts_with("2001:db8:1:"))
        {
            cmds.push(format!(
                "ip -6 neigh add {c} lladdr {} nud permanent dev np0",
                mac(client_mac(0x10 + i))
            ));
        }
        for (b, w) in BACKENDS_V4.iter().chain(BACKENDS_V6.iter()) {
            if let Where::Remote(tag) = w {
                cmds.push(format!(
                    "ip neigh add {b} lladdr {} nud permanent dev np1",
                    mac(remote_mac(*tag))
                ));
            }
        }
        for cmd in &cmds {
            run(cmd)?;
        }
        let index = |name: &str| {
            nix::net::if_::if_nametoindex(name).map_err(|e| format!("ifindex of {name}: {e}"))
        };
        Ok(Node {
            np0: index("np0")?,
            np1: index("np1")?,
            pod: index("pod0")?,
        })
    }

    /// What the kernel's FIB in this namespace answers, as the simulator's table.
    pub fn fib(&self) -> FibTable {
        let via = |ifindex, smac, dmac| FibResult::Forward {
            ifindex,
            smac,
            dmac,
        };
        let mut fib = FibTable::new();
        for (i, c) in CLIENTS_V4.iter().enumerate() {
            if c.starts_with("192.") {
                fib = fib.route(ip(c), via(self.np0, NP0_MAC, client_mac(i)));
            } else if c.starts_with("203.") {
                fib = fib.route(ip(c), via(self.np0, NP0_MAC, GATEWAY_MAC));
            }
        }
        for (i, c) in CLIENTS_V6.iter().enumerate() {
            if c.starts_with("2001:db8:1:") {
                fib = fib.route(ip(c), via(self.np0, NP0_MAC, client_mac(0x10 + i)));
            }
        }
        for (b, w) in BACKENDS_V4.iter().chain(BACKENDS_V6.iter()) {
            let answer = match *w {
                Where::Pod => FibResult::NoNeigh { ifindex: self.pod },
                Where::Remote(tag) => via(self.np1, NP1_MAC, remote_mac(tag)),
                Where::RemoteNoNeigh => FibResult::NoNeigh { ifindex: self.np1 },
                Where::Node => FibResult::Local,
                Where::Nowhere => FibResult::Unreachable,
            };
            fib = fib.route(ip(b), answer);
        }
        for local in [NP0_V4, NP0_V6, NP1_V4, NP1_V6] {
            fib = fib.route(ip(local), FibResult::Local);
        }
        fib
    }

    /// `lb_devices_v1`: np0 with both addresses, np1 with its IPv4 one and its IPv6 one when
    /// `np1_v6`.
    pub fn devices(&self, np1_v6: bool) -> Vec<(u32, LbDevice)> {
        let a = |s| LbAddr::from(ip(s));
        vec![
            (
                self.np0,
                LbDevice {
                    addr4: a(NP0_V4),
                    addr6: a(NP0_V6),
                    flags: 0,
                },
            ),
            (
                self.np1,
                LbDevice {
                    addr4: a(NP1_V4),
                    addr6: if np1_v6 { a(NP1_V6) } else { LbAddr::default() },
                    flags: 0,
                },
            ),
        ]
    }

    /// `lb_local_addrs_v1`: the devices' addresses, and loopback (which the packet programs
    /// must still not take for the node's).
    pub fn local_addrs() -> Vec<IpAddr> {
        [NP0_V4, NP0_V6, NP1_V4, NP1_V6, "127.0.0.1", "::1"]
            .iter()
            .map(|s| ip(s))
            .collect()
    }
}
