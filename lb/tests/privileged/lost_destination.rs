//! Sockets that lost their destination: a TCP connect the backend refused (the kernel clears
//! the destination), `connect(AF_UNSPEC)` and a reconnect elsewhere. What their connects
//! translated must still go with the socket (a connected socket's translation lives in its
//! storage; `sock_release` finds a UDP socket's index entry through it) or with the reconnect,
//! never be left to fill the LRU map.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;

use lb::model::L4Protocol;
use libtest_mimic::Failed;

use super::support::{self, TestBpffs};
use super::{cluster_ip, program, setup, test_services, BOTH, CHILD_ROLE, SERVICE_IP};

/// A TCP port of [`SERVICE_IP`] whose one backend, [`REFUSING_BACKEND`], has no listener.
pub const REFUSED_PORT: u16 = 81;
/// Nobody listens there in the child's namespace: a connect is refused.
const REFUSING_BACKEND: (Ipv4Addr, u16) = (Ipv4Addr::new(127, 0, 0, 2), 9);
/// A second UDP service port of [`SERVICE_IP`] ("service B"; port 53 is service A).
pub const SECOND_UDP_PORT: u16 = 55;
/// How many sockets the child opens in the refused and AF_UNSPEC cases.
pub const SOCKETS: usize = 3;
/// Sockets per backend in the straight-reconnect case: each one's service connect picks the
/// backend it then reconnects to with probability 1/backends, so with 2 backends all 20 miss
/// it with probability 2^-20.
pub const DIRECT_ROUNDS: usize = 10;

/// The test services plus the refusing TCP service and the second UDP service.
fn setup_lost(
    test: &str,
) -> Result<(lb::datapath::SockLb, support::TestCgroup, TestBpffs), Failed> {
    let (mut lb, cgroup, bpffs) = setup(test, BOTH)?;
    let mut desired = test_services();
    let second = super::v4_backends(5355);
    for svc in [
        cluster_ip(
            SERVICE_IP.into(),
            REFUSED_PORT,
            L4Protocol::Tcp,
            &[SocketAddr::from(REFUSING_BACKEND)],
        ),
        cluster_ip(SERVICE_IP.into(), SECOND_UDP_PORT, L4Protocol::Udp, &second),
    ] {
        desired.insert(svc).map_err(|_| "duplicate test frontend")?;
    }
    program(&mut lb, &desired)?;
    Ok((lb, cgroup, bpffs))
}

/// The frontend ports (host order) of everything the hooks remember in `bpffs`: connected
/// sockets' translations, then unconnected sends'.
fn reverse_frontend_ports(bpffs: &TestBpffs) -> Result<Vec<u16>, Failed> {
    let (mut ports, sent) = super::remembered_frontend_ports(bpffs)?;
    ports.extend(sent);
    Ok(ports)
}

fn expect_none_left(bpffs: &TestBpffs, what: &str) -> Result<(), Failed> {
    let left = reverse_frontend_ports(bpffs)?;
    if !left.is_empty() {
        return Err(format!(
            "{what}: {} reverse entries (frontend ports {left:?}) outlived their closed sockets",
            left.len()
        )
        .into());
    }
    Ok(())
}

/// Each connect to a ClusterIP whose backend refuses is translated, then the kernel clears the
/// socket's destination: nothing may be left in the LRU map once it is closed.
pub fn refused_tcp_connect_leaves_no_reverse_entry() -> Result<(), Failed> {
    let (_lb, cgroup, bpffs) = setup_lost("refused")?;
    let lines = super::run_child("tcp-refused", &cgroup.path)?;
    let refused = super::records(&lines, "tcp-refused").len();
    if refused != SOCKETS {
        return Err(
            format!("expected {SOCKETS} refused connects, the child said {lines:?}").into(),
        );
    }
    expect_none_left(&bpffs, "refused connects")
}

/// A UDP socket connected to the service, then to AF_UNSPEC (which clears its destination),
/// then closed: no entry may be left.
pub fn af_unspec_then_close_leaves_no_reverse_entry() -> Result<(), Failed> {
    let (_lb, cgroup, bpffs) = setup_lost("unspec")?;
    let lines = super::run_child("udp-unspec", &cgroup.path)?;
    let done = super::records(&lines, "udp-unspec").len();
    if done != SOCKETS {
        return Err(format!("expected {SOCKETS} disconnected sockets, got {lines:?}").into());
    }
    expect_none_left(&bpffs, "AF_UNSPEC")
}

/// A UDP socket connected to service A, then reconnected to service B: while it is open only
/// B's entry exists, and after close none. The child waits on its stdin between the two.
pub fn reconnect_keeps_only_the_new_entry() -> Result<(), Failed> {
    let (_lb, cgroup, bpffs) = setup_lost("reconnect")?;
    let mut cmd = support::sandboxed_child(CHILD_ROLE, "udp-reconnect", &cgroup.path)?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let open = if line.trim() == "udp-reconnected" {
        reverse_frontend_ports(&bpffs)
    } else {
        Err(format!("the child said {line:?} instead of udp-reconnected").into())
    };
    // Let the child close its socket and exit whatever was found, so it never lingers.
    let _ = stdin.write_all(b"close\n");
    drop(stdin);
    let status = child.wait()?;
    let open = open?;
    if open != [SECOND_UDP_PORT] {
        return Err(format!(
            "after the reconnect the reverse entries' frontend ports are {open:?}, expected \
             only service B's [{SECOND_UDP_PORT}]"
        )
        .into());
    }
    if !status.success() {
        return Err(format!("child udp-reconnect failed ({status})").into());
    }
    expect_none_left(&bpffs, "reconnect then close")
}

/// A UDP socket connected to the service and then straight to a backend asked for no service
/// the second time: getpeername shows the backend, also when it is the one the service had
/// chosen (whose translation the first connect kept: before, getpeername showed the service).
pub fn reconnect_straight_to_a_backend_shows_it() -> Result<(), Failed> {
    let (_lb, cgroup, bpffs) = setup_lost("direct")?;
    let lines = super::run_child("udp-reconnect-direct", &cgroup.path)?;
    let records = super::records(&lines, "udp-direct");
    if records.len() != super::v4_backends(5353).len() * DIRECT_ROUNDS {
        return Err(format!("expected one record per backend, the child said {lines:?}").into());
    }
    if let Some(r) = records.iter().find(|r| r[0] != r[1]) {
        return Err(format!(
            "a socket reconnected straight to {} shows {} through getpeername",
            r[0], r[1]
        )
        .into());
    }
    expect_none_left(&bpffs, "direct reconnects then close")
}
