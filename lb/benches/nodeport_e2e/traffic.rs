//! The traffic: a UDP flood with `sendmmsg` from many source ports, counting sinks reading
//! with `recvmmsg` at the backends, and a TCP request/response loop with one-byte servers.
//!
//! Everything runs on threads of the bench process: a socket belongs to the network namespace
//! it was created in, so each is created inside its place (`Place::in_netns`) and the loops
//! that use it run there too, pinned to a CPU (see `main.rs` for which).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netsim::Place;
use nix::libc;
use nix::sys::socket::{self, sockopt};
use nix::sys::time::TimeVal;

/// UDP payload: 18 bytes make 64-byte Ethernet frames (with the FCS), as packet generators
/// count them.
pub const PAYLOAD: usize = 18;
/// Messages per `sendmmsg` / `recvmmsg`.
const BATCH: usize = 64;
/// How long a blocking socket call may wait: a sink's look at its stop flag, a connect or a
/// read of the request loop.
const POLL: Duration = Duration::from_millis(100);
const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn timeval(d: Duration) -> TimeVal {
    TimeVal::new(
        d.as_secs().try_into().unwrap_or(i64::MAX),
        d.subsec_micros().into(),
    )
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning a thread to CPU {cpu}"))
}

/// The backends: per backend a UDP sink counting datagrams and a TCP server answering each
/// connection's request byte with the backend's number; stopped and joined on drop.
#[derive(Debug)]
pub struct Backends {
    counts: Vec<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Backends {
    /// Starts them in `places` (backend `k + 1` in `places[k]`) on `addr`s, pinned to `cpu`.
    pub fn start(places: &[(Place, SocketAddrV4)], cpu: usize) -> Result<Backends> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut counts = Vec::new();
        let mut threads = Vec::new();
        for ((place, addr), number) in places.iter().zip(1u8..) {
            let (udp, tcp) = place
                .in_netns(|| -> std::io::Result<(UdpSocket, TcpListener)> {
                    Ok((UdpSocket::bind(addr)?, TcpListener::bind(addr)?))
                })?
                .with_context(|| format!("binding {addr} in {}", place.name()))?;
            // Room for a burst while the sink thread waits for its CPU.
            socket::setsockopt(&udp, sockopt::RcvBufForce, &(8 << 20)).context("SO_RCVBUFFORCE")?;
            socket::setsockopt(&udp, sockopt::ReceiveTimeout, &timeval(POLL))?;
            socket::setsockopt(&tcp, sockopt::ReceiveTimeout, &timeval(POLL))?;
            let count = Arc::new(AtomicU64::new(0));
            counts.push(Arc::clone(&count));
            let stop_udp = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                if pin(cpu).is_ok() {
                    sink(&udp, &count, &stop_udp);
                }
            }));
            let stop_tcp = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                if pin(cpu).is_ok() {
                    serve(&tcp, number, &stop_tcp);
                }
            }));
        }
        Ok(Backends {
            counts,
            stop,
            threads,
        })
    }

    /// Datagrams each backend has received so far.
    pub fn received(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits until the counts stop moving (the datagrams in flight have landed, or been
    /// dropped on the way), at most `deadline`; returns them.
    pub fn settled(&self, deadline: Duration) -> Vec<u64> {
        let until = Instant::now() + deadline;
        let mut last = self.received();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.received();
            if now == last || Instant::now() > until {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads datagrams in batches until `stop`, adding how many to `count`.
fn sink(socket: &UdpSocket, count: &AtomicU64, stop: &AtomicBool) {
    let mut bufs = [[0u8; 256]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` holds BATCH headers, each pointing at one live iovec of a live buffer;
        // the kernel writes into those buffers only, within their lengths.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Accepts connections until `stop`: reads the request byte, answers `number`, waits for the
/// client's close (so the client keeps the TIME_WAIT socket, see [`request_loop`]).
fn serve(listener: &TcpListener, number: u8, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
        let mut byte = [0u8; 1];
        // A client that went away is its own failure to report, not the server's.
        if conn.read_exact(&mut byte).is_ok() && conn.write_all(&[number]).is_ok() {
            let _ = conn.read(&mut byte);
        }
    }
}

/// What one UDP flood did.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    /// Datagrams `sendmmsg` accepted.
    pub sent: u64,
    /// How long it sent.
    pub elapsed: Duration,
}

/// From `place`, pinned to `cpu`: sends UDP datagrams for `duration` from `flows` sockets
/// (source ports) in turn, `BATCH` per `sendmmsg`. Socket `k` sends to `targets[k % len]`:
/// each flow has one destination, as each has one backend behind a service, so a batch lands
/// on one backend whether the middle node balances it or the client addressed it.
pub fn flood(
    place: &Place,
    cpu: usize,
    targets: &[SocketAddrV4],
    flows: usize,
    duration: Duration,
) -> Result<Flood> {
    let targets = targets.to_vec();
    place.in_netns(move || flood_here(cpu, &targets, flows, duration))?
}

fn flood_here(
    cpu: usize,
    targets: &[SocketAddrV4],
    flows: usize,
    duration: Duration,
) -> Result<Flood> {
    pin(cpu)?;
    let sockets: Vec<UdpSocket> = (0..flows)
        .map(|_| UdpSocket::bind("0.0.0.0:0"))
        .collect::<std::io::Result<_>>()
        .context("binding the flood's sockets")?;
    let mut payload = [0u8; PAYLOAD];
    let addrs: Vec<libc::sockaddr_in> = targets
        .iter()
        .map(|t| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: t.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*t.ip()).to_be(),
            },
            sin_zero: [0; 8],
        })
        .collect();
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: PAYLOAD,
    };
    // One batch of headers per target, every header of a batch to that target.
    let mut batches: Vec<Vec<libc::mmsghdr>> = addrs
        .iter()
        .map(|addr| {
            (0..BATCH)
                .map(|_| {
                    // SAFETY: mmsghdr is plain data; all zero is a valid empty header.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_name = std::ptr::from_ref(addr).cast_mut().cast();
                    m.msg_hdr.msg_namelen =
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    m.msg_hdr.msg_iov = &mut iov;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    'send: loop {
        for (k, s) in sockets.iter().enumerate() {
            if started.elapsed() >= duration {
                break 'send;
            }
            let msgs = &mut batches[k % addrs.len()];
            // SAFETY: every header points at a live address of the right length and at the one
            // live iovec over `payload`; the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as libc::c_uint, 0)
            };
            if n > 0 {
                sent += n as u64;
            } else {
                errors += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    if sent == 0 {
        bail!("sendmmsg sent nothing to {targets:?} ({errors} failed calls)");
    }
    Ok(Flood { sent, elapsed })
}

/// What one run of the request loop did.
#[derive(Debug, Default)]
pub struct Requests {
    /// Requests answered.
    pub done: u64,
    /// How long it ran.
    pub elapsed: Duration,
    /// How many answers each backend gave.
    pub spread: BTreeMap<u8, u64>,
    /// Requests that failed (each after up to [`IO_TIMEOUT`]), and the first one's error.
    pub failed: u64,
    pub first_error: Option<String>,
}

/// From `place`, pinned to `cpu`: for `duration` or `count` requests, whichever ends first,
/// one connection after another to `targets` (in turn): connect, write a request byte, read the one-byte answer, close. The client
/// closes first, so the TIME_WAIT sockets stay in the client's namespace (which reuses them,
/// `tcp_tw_reuse`), never at a backend, where a reused source port of the load balancer's
/// SNAT would meet one. A failed request is counted, and costs the loop its wait.
pub fn request_loop(
    place: &Place,
    cpu: usize,
    targets: &[SocketAddrV4],
    count: u64,
    duration: Duration,
) -> Result<Requests> {
    let targets = targets.to_vec();
    place.in_netns(move || -> Result<Requests> {
        pin(cpu)?;
        let mut out = Requests::default();
        let started = Instant::now();
        for target in targets.iter().cycle() {
            if started.elapsed() >= duration || out.done + out.failed >= count {
                break;
            }
            match one_request(*target) {
                Ok(number) => {
                    out.done += 1;
                    *out.spread.entry(number).or_default() += 1;
                }
                Err(e) => {
                    out.failed += 1;
                    out.first_error
                        .get_or_insert_with(|| format!("request to {target}: {e:#}"));
                }
            }
        }
        out.elapsed = started.elapsed();
        Ok(out)
    })?
}

fn one_request(target: SocketAddrV4) -> Result<u8> {
    let mut conn = TcpStream::connect_timeout(&target.into(), IO_TIMEOUT).context("connect")?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(&[0]).context("write")?;
    let mut byte = [0u8; 1];
    conn.read_exact(&mut byte).context("read the answer")?;
    Ok(byte[0])
}
