//! The child side of the privileged tests: backends and a client, in the test's cgroup and a
//! network namespace of their own. Prints one line per observation for the parent to check.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use super::{lost_destination, BACKENDS, BACKEND_PORTS6, MISMATCHED_PORT, SERVICE_IP, SERVICE_IP6};

/// Connections or datagrams per test: with two backends chosen at random, the chance that one
/// is never chosen is 2^-39.
pub const ATTEMPTS: usize = 40;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `role` and exits non-zero on any unexpected error.
pub fn run(role: &str) {
    if let Err(e) = run_role(role) {
        eprintln!("child {role}: {e}");
        std::process::exit(1);
    }
}

fn run_role(role: &str) -> Result<(), Box<dyn std::error::Error>> {
    super::support::loopback_up(&[])?;
    match role {
        "tcp" => tcp_client(),
        "tcp6" => tcp6_client(),
        "udp" => udp_client(),
        "netns-cookie" => {
            let cgroup = std::env::var("LB_TEST_CGROUP")?;
            let probed = lb::datapath::netns_cookie_through_bpf(std::path::Path::new(&cgroup))?;
            let option = lb::host::own_netns_cookie()?.cookie_for_bpf();
            println!("netns-cookie {probed} {option}");
            Ok(())
        }
        "node-addrs" => node_addrs(),
        "held-tcp" => held_tcp(),
        "slot-sharing" => slot_sharing(),
        "tcp-refused" => tcp_refused(),
        "udp-unspec" => udp_unspec(),
        "udp-reconnect" => udp_reconnect(),
        "udp-reconnect-direct" => udp_reconnect_direct(),
        "udp-untranslated" => {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            match socket.send_to(b"ping", SocketAddrV4::new(SERVICE_IP, 53)) {
                Ok(_) => println!("udp-sent"),
                Err(e) => println!("udp-error {}", e.to_string().to_lowercase()),
            }
            Ok(())
        }
        "udp-to-ipv6-backend" => {
            // An IPv4 socket to a frontend whose backend is IPv6: the hook cannot store it.
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            match socket.send_to(b"ping", SocketAddrV4::new(SERVICE_IP, MISMATCHED_PORT)) {
                Ok(_) => println!("udp-sent"),
                Err(e) => println!("udp-error {}", e.to_string().to_lowercase()),
            }
            Ok(())
        }
        other => Err(format!("unknown role {other}").into()),
    }
}

/// A backend at `addr` that answers every connection with its own address.
fn serve_identity_tcp(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr)?;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let me = stream
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let _ = stream.write_all(me.as_bytes());
        }
    });
    Ok(())
}

/// Connects to `service` [`ATTEMPTS`] times and prints `TAG answer peer` for each connection:
/// who answered, and what getpeername says the socket is connected to.
fn connect_and_report(tag: &str, service: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..ATTEMPTS {
        let mut stream = TcpStream::connect_timeout(&service, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let peer = stream.peer_addr()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        println!("{tag} {answer} {peer}");
    }
    Ok(())
}

fn tcp_client() -> Result<(), Box<dyn std::error::Error>> {
    for ip in BACKENDS {
        serve_identity_tcp(SocketAddr::from((ip, 8080)))?;
    }
    connect_and_report("tcp", SocketAddr::from((SERVICE_IP, 80)))
}

fn tcp6_client() -> Result<(), Box<dyn std::error::Error>> {
    for port in BACKEND_PORTS6 {
        serve_identity_tcp(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)))?;
    }
    connect_and_report("tcp6", SocketAddr::from((SERVICE_IP6, 80)))
}

/// Backends that answer every datagram with their own address.
fn udp_backends() -> Result<(), Box<dyn std::error::Error>> {
    for ip in BACKENDS {
        let socket = UdpSocket::bind(SocketAddrV4::new(ip, 5353))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let me = socket
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let _ = socket.send_to(me.as_bytes(), from);
            }
        });
    }
    Ok(())
}

fn udp_client() -> Result<(), Box<dyn std::error::Error>> {
    udp_backends()?;
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = [0u8; 64];
    for _ in 0..ATTEMPTS {
        socket.send_to(b"ping", SocketAddrV4::new(SERVICE_IP, 53))?;
        let (n, from) = socket.recv_from(&mut buf)?;
        println!("udp {} {from}", String::from_utf8_lossy(&buf[..n]));
    }
    Ok(())
}

/// Addresses on the node's `big` device: more than `lb_local_addrs` holds at the tests'
/// `bpf.lbMapMax` (what kube-proxy's IPVS dummy device carries on a busy node).
pub const NODE_ADDRS: usize = 1200;
/// The address of the `docker0` device, which the documents leave out of the node's addresses.
pub const DOCKER_ADDR: &str = "172.17.0.1";

/// Gives this namespace a device with [`NODE_ADDRS`] addresses and a `docker0` with one,
/// then prints `addr IP` for every address the agent would program as the node's.
fn node_addrs() -> Result<(), Box<dyn std::error::Error>> {
    // No dummy module here (no loadable modules): a veth end stands in for the dummy device,
    // and docker0 is a bridge, as Docker makes it.
    let mut batch = String::from("link add big type veth peer name big-peer\n");
    batch.push_str("link add docker0 type bridge\n");
    batch.push_str(&format!("addr add {DOCKER_ADDR}/16 dev docker0\n"));
    for i in 0..NODE_ADDRS {
        batch.push_str(&format!(
            "addr add 10.200.{}.{}/32 dev big\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let mut ip = std::process::Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    ip.stdin
        .take()
        .ok_or("no stdin")?
        .write_all(batch.as_bytes())?;
    let status = ip.wait()?;
    if !status.success() {
        return Err(format!("ip -batch failed ({status})").into());
    }
    for addr in lb::host::local_addresses()? {
        println!("addr {addr}");
    }
    Ok(())
}

/// One connection to the TCP service held open across a datapath change: prints `held ANSWER
/// PEER`, waits for a line on stdin, then prints `after PEER` (getpeername again).
fn held_tcp() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::BufRead;
    for ip in BACKENDS {
        serve_identity_tcp(SocketAddr::from((ip, 8080)))?;
    }
    let service = SocketAddr::from((SERVICE_IP, 80));
    let mut stream = TcpStream::connect_timeout(&service, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    println!("held {answer} {}", stream.peer_addr()?);
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    println!("after {}", stream.peer_addr()?);
    Ok(())
}

/// The kernel's cookie of a socket (`SO_COOKIE`), what the hooks key its translation by.
fn socket_cookie(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<u64> {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: the descriptor is open for the call; cookie and len are valid for writes of the
    // size passed.
    let rc = unsafe {
        nix::libc::getsockopt(
            socket.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Two TCP connections to the service held open, then the first closed and a third made,
/// each step after a line on stdin, so the parent can look at the maps in between. Prints
/// `socket NAME COOKIE PEER` for each (getpeername), `closed a`, and at the end `socket b ...`
/// again: the second socket's getpeername after the others came and went.
fn slot_sharing() -> Result<(), Box<dyn std::error::Error>> {
    use std::io::BufRead;
    for ip in BACKENDS {
        serve_identity_tcp(SocketAddr::from((ip, 8080)))?;
    }
    let service = SocketAddr::from((SERVICE_IP, 80));
    let report = |name: &str, stream: &TcpStream| -> Result<(), Box<dyn std::error::Error>> {
        println!(
            "socket {name} {} {}",
            socket_cookie(stream)?,
            stream.peer_addr()?
        );
        std::io::stdout().flush()?;
        Ok(())
    };
    let wait = || -> std::io::Result<()> {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(drop)
    };
    let a = TcpStream::connect_timeout(&service, TIMEOUT)?;
    let b = TcpStream::connect_timeout(&service, TIMEOUT)?;
    report("a", &a)?;
    report("b", &b)?;
    wait()?;
    drop(a);
    println!("closed a");
    std::io::stdout().flush()?;
    wait()?;
    let d = TcpStream::connect_timeout(&service, TIMEOUT)?;
    report("d", &d)?;
    wait()?;
    report("b", &b)?;
    Ok(())
}

/// Connects [`lost_destination::SOCKETS`] TCP sockets to the service whose backend refuses;
/// each is closed after the refusal. Blocking connects, as most clients make them: the kernel
/// disconnects such a socket when the refusal arrives, which clears its destination (a
/// non-blocking connect polled for the result keeps it).
fn tcp_refused() -> Result<(), Box<dyn std::error::Error>> {
    let service = SocketAddr::from((SERVICE_IP, lost_destination::REFUSED_PORT));
    for _ in 0..lost_destination::SOCKETS {
        match TcpStream::connect(service) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                println!("tcp-refused")
            }
            other => return Err(format!("expected a refusal, got {other:?}").into()),
        }
    }
    Ok(())
}

/// `connect(fd, {AF_UNSPEC})`: dissolves a UDP socket's association (std has no call for it).
fn disconnect(socket: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let unspec = nix::libc::sockaddr {
        sa_family: nix::libc::AF_UNSPEC as nix::libc::sa_family_t,
        sa_data: [0; 14],
    };
    let len = std::mem::size_of::<nix::libc::sockaddr>() as nix::libc::socklen_t;
    // SAFETY: `unspec` is a valid sockaddr of `len` bytes that outlives the call, and the
    // descriptor belongs to `socket`, which is borrowed for the call.
    if unsafe { nix::libc::connect(socket.as_raw_fd(), &unspec, len) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// UDP sockets connected to the service, disconnected with AF_UNSPEC, then closed.
fn udp_unspec() -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..lost_destination::SOCKETS {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(SocketAddrV4::new(SERVICE_IP, 53))?;
        disconnect(&socket)?;
        if socket.peer_addr().is_ok() {
            return Err("the socket is still connected after AF_UNSPEC".into());
        }
        println!("udp-unspec");
    }
    Ok(())
}

/// A UDP socket connected to service A (port 53), then to service B; says so and keeps the
/// socket open until the parent writes a line.
fn udp_reconnect() -> Result<(), Box<dyn std::error::Error>> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(SocketAddrV4::new(SERVICE_IP, 53))?;
    socket.connect(SocketAddrV4::new(
        SERVICE_IP,
        lost_destination::SECOND_UDP_PORT,
    ))?;
    println!("udp-reconnected");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    drop(socket);
    Ok(())
}

/// For each backend of service A (port 53), [`lost_destination::DIRECT_ROUNDS`] times: a UDP
/// socket connected to the service, then straight to that backend; prints
/// `udp-direct BACKEND PEER` with what getpeername shows. Some of the service connects went to
/// the backend the socket then reconnects to.
fn udp_reconnect_direct() -> Result<(), Box<dyn std::error::Error>> {
    for backend in super::v4_backends(5353) {
        for _ in 0..lost_destination::DIRECT_ROUNDS {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.connect(SocketAddrV4::new(SERVICE_IP, 53))?;
            socket.connect(backend)?;
            println!("udp-direct {backend} {}", socket.peer_addr()?);
        }
    }
    Ok(())
}
