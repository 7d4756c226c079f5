//! The two ends of a measured connection.
//!
//! The server is a thread per backend: `accept`, write one byte (the backend's number), close.
//! The client is a long-lived child process inside a client pod's namespace and cgroup (the
//! cgroup is what the socket hooks see), driven over its stdin: each request line
//! `ADDR[,ADDR…] COUNT BUDGET_MS` makes it time COUNT rounds of socket + connect (to one of
//! the addresses at random) + read of the first byte and of the server's close + close
//! (stopping early when the budget is spent), and answer with one line:
//! `ok SPREAD NS NS …` (SPREAD counts the first bytes seen, `1:340,2:330,…`) or `err WHY`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use nix::sys::time::TimeVal;

/// How long one connect or read may block before the connection counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a server thread looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

fn timeval(d: Duration) -> TimeVal {
    TimeVal::new(
        d.as_secs().try_into().unwrap_or(i64::MAX),
        d.subsec_micros().into(),
    )
}

/// One-byte servers on already bound listeners; stopped and joined on drop.
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Serves on each listener, writing `byte` to every connection it accepts.
    pub fn start(listeners: Vec<(TcpListener, u8)>) -> std::io::Result<Servers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (listener, byte) in listeners {
            // accept(2) honours SO_RCVTIMEO, so the thread sees the stop flag in time.
            socket::setsockopt(&listener, sockopt::ReceiveTimeout, &timeval(STOP_POLL))?;
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || serve(&listener, byte, &stop)));
        }
        Ok(Servers { stop, threads })
    }
}

fn serve(listener: &TcpListener, byte: u8, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                // A client that went away is its own failure to report, not the server's.
                let _ = conn.write_all(&[byte]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                eprintln!("socket-lb bench: server {byte} stops: accept failed: {e}");
                return;
            }
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The client process's main loop: answers requests on stdin until it closes.
pub fn client_main() -> std::process::ExitCode {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = match parse_request(&line) {
            Ok((addrs, count, budget)) => match measure(&addrs, count, budget) {
                Ok(m) => m.to_line(),
                Err(e) => format!("err {e}"),
            },
            Err(e) => format!("err {e}"),
        };
        if writeln!(stdout, "{answer}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
}

fn parse_request(line: &str) -> Result<(Vec<SocketAddrV4>, u32, Duration), String> {
    let bad = || format!("bad request {line:?}: expected `ADDR[,ADDR…] COUNT BUDGET_MS`");
    let mut words = line.split_whitespace();
    let addrs: Vec<SocketAddrV4> = words
        .next()
        .ok_or_else(bad)?
        .split(',')
        .map(|a| a.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let count = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let budget = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    Ok((addrs, count, Duration::from_millis(budget)))
}

/// What one request measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// Nanoseconds of each connection, in order.
    pub nanos: Vec<u64>,
    /// How many connections got each first byte.
    pub spread: BTreeMap<u8, u32>,
}

impl Measured {
    fn to_line(&self) -> String {
        let spread: Vec<String> = self
            .spread
            .iter()
            .map(|(b, n)| format!("{b}:{n}"))
            .collect();
        let mut line = format!("ok {}", spread.join(","));
        for n in &self.nanos {
            line.push(' ');
            line.push_str(&n.to_string());
        }
        line
    }

    /// Parses the client's answer line.
    pub fn from_line(line: &str) -> Result<Measured, String> {
        let rest = match line.strip_prefix("ok ") {
            Some(rest) => rest,
            None => return Err(line.strip_prefix("err ").unwrap_or(line).to_owned()),
        };
        let mut words = rest.split(' ');
        let mut out = Measured::default();
        for pair in words
            .next()
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let (b, n) = pair.split_once(':').ok_or(format!("bad spread {pair:?}"))?;
            out.spread.insert(
                b.parse().map_err(|_| format!("bad byte {b:?}"))?,
                n.parse().map_err(|_| format!("bad count {n:?}"))?,
            );
        }
        out.nanos = words
            .map(|w| w.parse().map_err(|_| format!("bad duration {w:?}")))
            .collect::<Result<_, _>>()?;
        Ok(out)
    }
}

fn measure(addrs: &[SocketAddrV4], count: u32, budget: Duration) -> Result<Measured, String> {
    let started = Instant::now();
    let mut out = Measured::default();
    let mut rng = XorShift::seeded();
    for i in 0..count {
        if started.elapsed() > budget {
            break;
        }
        let addr = addrs[rng.below(addrs.len())];
        let t = Instant::now();
        let byte = one_connection(addr).map_err(|e| format!("connection {i} to {addr}: {e}"))?;
        out.nanos
            .push(t.elapsed().as_nanos().try_into().unwrap_or(u64::MAX));
        *out.spread.entry(byte).or_default() += 1;
    }
    Ok(out)
}

/// A small pseudo-random generator (xorshift64): which backend a direct connection goes to.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        XorShift(u64::from(nanos) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// socket, connect, read one byte and the server's close, close: what is timed.
fn one_connection(addr: SocketAddrV4) -> Result<u8, String> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    // A blocking connect(2) honours SO_SNDTIMEO and read(2) SO_RCVTIMEO: no extra syscalls
    // for non-blocking connect and poll on the measured path.
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeval(IO_TIMEOUT))
        .map_err(|e| format!("SO_SNDTIMEO: {e}"))?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeval(IO_TIMEOUT))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(addr))
        .map_err(|e| format!("connect: {e}"))?;
    let mut byte = [0u8; 1];
    let first = match nix::unistd::read(&fd, &mut byte) {
        Ok(1) => byte[0],
        Ok(_) => return Err("closed before the first byte".into()),
        Err(e) => return Err(format!("read: {e}")),
    };
    // Wait for the server's close before closing: the server is then always the one that
    // closed first and keeps the TIME_WAIT socket. Otherwise whether the client's close or the
    // server's FIN came first would be a race, and a client's TIME_WAIT sockets would pile up
    // in its namespace in proportion to how many connections it made, slowing its port
    // search: the pod with two variants would fall behind the others as the run goes on.
    match nix::unistd::read(&fd, &mut byte) {
        Ok(0) => Ok(first),
        Ok(_) => Err("more than one byte before the server closed".into()),
        Err(e) => Err(format!("read to the server's close: {e}")),
    }
}

/// The backend a first byte names, for messages.
pub fn describe_spread(spread: &BTreeMap<u8, u32>) -> String {
    spread
        .iter()
        .map(|(b, n)| format!("backend-{b}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
