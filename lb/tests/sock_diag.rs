//! Privileged tests of destroying connected UDP sockets through sock_diag, in a network
//! namespace (a netsim node) the test creates: only sockets the hooks connected to a removed
//! backend are destroyed, IPv4, IPv6 and IPv4-mapped alike, and their owner sees `ECONNABORTED`.
//!
//! Without root the tests are reported as ignored, with a line saying why; under `CI=true` they
//! fail instead, since CI must run this tier.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};

use lb::agent::udp_destroy::{self, SweepScope};
use lb::datapath::{canonical, RemovedBackends};
use lb::host::sock_diag::{self, SockDiag, Support};
use libtest_mimic::{Arguments, Failed, Trial};
use netsim::{NodeSpec, Topology};

fn main() {
    let args = Arguments::from_args();
    let tier = netsim::Tier::detect("sock_diag privileged tests");
    let trials: Vec<Trial> = vec![
        tier.trial(
            "sock_diag::probe_finds_destroy_support_on_this_kernel",
            probe,
        ),
        tier.trial(
            "sock_diag::only_sockets_the_hooks_connected_to_removed_backends_are_destroyed",
            destroy_only_removed,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A UDP socket bound to `local` and connected to `peer`.
fn connected(local: &str, peer: &str) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(local)?;
    s.connect(peer)?;
    Ok(s)
}

fn probe() -> Result<(), Failed> {
    let mut topo = Topology::new()?;
    let node = topo.add_node(NodeSpec::new("diag"))?;
    let support = node.in_netns(sock_diag::probe)?;
    // This project's kernels have the three options; a kernel without them is reported by
    // the probe with the option's name, which is what the agent logs.
    if support != Support::Available {
        return Err(format!("sock_diag cannot destroy UDP sockets here: {support:?}").into());
    }
    Ok(())
}

fn destroy_only_removed() -> Result<(), Failed> {
    let mut topo = Topology::new()?;
    let node = topo.add_node(NodeSpec::new("diag"))?;
    let cgroup = node.cgroup_path().to_owned();
    node.in_netns(move || -> Result<(), Failed> {
        // Backends: 127.0.0.2:53 (removed), 127.0.0.3:53 (kept), [::1]:53 (removed).
        let _servers = [
            UdpSocket::bind("127.0.0.2:53")?,
            UdpSocket::bind("127.0.0.3:53")?,
            UdpSocket::bind("[::1]:53")?,
        ];
        let to_removed = connected("127.0.0.1:0", "127.0.0.2:53")?;
        let to_kept = connected("127.0.0.1:0", "127.0.0.3:53")?;
        let v6 = connected("[::1]:0", "[::1]:53")?;
        // A dual-stack IPv6 socket connected to the IPv4 backend: listed as ::ffff:127.0.0.2.
        let mapped = connected("[::]:0", "[::ffff:127.0.0.2]:53")?;
        let unconnected = UdpSocket::bind("127.0.0.1:0")?;
        // Connected to a removed backend by the application itself, not by the hooks: kept.
        let direct = connected("127.0.0.1:0", "127.0.0.2:53")?;

        let entries = SockDiag::open()?.connected_udp()?;
        let listed: Vec<SocketAddr> = entries.iter().map(|s| s.peer()).collect();
        // What the reverse map would hold had the hooks connected these four.
        let hooked: Vec<u16> = [&to_removed, &to_kept, &v6, &mapped]
            .iter()
            .map(|s| s.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        let translated: HashSet<(u64, SocketAddr)> = entries
            .iter()
            .filter(|e| hooked.contains(&e.local().port()))
            .map(|e| (e.cookie(), canonical(e.peer())))
            .collect();
        if translated.len() != hooked.len() {
            return Err(format!("cookies of {hooked:?} not all listed: {translated:?}").into());
        }
        for want in [
            "127.0.0.2:53",
            "127.0.0.3:53",
            "[::1]:53",
            "[::ffff:127.0.0.2]:53",
        ] {
            if !listed.contains(&sa(want)) {
                return Err(format!("{want} not among the connected sockets {listed:?}").into());
            }
        }

        let removed: RemovedBackends = [sa("127.0.0.2:53"), sa("[::1]:53")].into_iter().collect();
        let destroyed = udp_destroy::sweep(&cgroup, SweepScope::HostOnly, &removed, &translated)?;
        let mut peers: Vec<SocketAddr> = destroyed.iter().map(|d| d.peer).collect();
        peers.sort();
        let mut want = vec![
            sa("127.0.0.2:53"),
            sa("[::1]:53"),
            sa("[::ffff:127.0.0.2]:53"),
        ];
        want.sort();
        if peers != want {
            return Err(format!("destroyed {peers:?}, expected {want:?}").into());
        }
        for (name, s) in [
            ("IPv4", &to_removed),
            ("IPv6", &v6),
            ("IPv4-mapped", &mapped),
        ] {
            let err = s.take_error()?.map(|e| e.raw_os_error());
            if err != Some(Some(nix::libc::ECONNABORTED)) {
                return Err(
                    format!("{name} socket: pending error {err:?}, expected ECONNABORTED").into(),
                );
            }
            if s.peer_addr().is_ok() {
                return Err(format!("{name} socket is still connected").into());
            }
        }
        for (name, s) in [
            ("kept", &to_kept),
            ("unconnected", &unconnected),
            ("untranslated", &direct),
        ] {
            if let Some(e) = s.take_error()? {
                return Err(format!("{name} socket has an error: {e}").into());
            }
        }
        to_kept.send(b"still here")?;
        if to_kept.peer_addr()? != sa("127.0.0.3:53") {
            return Err("the kept socket lost its peer".into());
        }
        // Nothing left to destroy: a second sweep finds nothing.
        let again = udp_destroy::sweep(&cgroup, SweepScope::HostOnly, &removed, &translated)?;
        if !again.is_empty() {
            return Err(format!("a second sweep destroyed {again:?}").into());
        }
        Ok(())
    })?
}
