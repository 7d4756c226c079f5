//! A socket held open across exchanges: a TCP connection or a connected UDP socket that a test
//! opens once and uses step after step, to see that it keeps its backend (or that the agent
//! destroyed it).
//!
//! [`HeldSocket`] is the socket itself, used inside `netsim-client hold` (a process in the
//! node's or pod's namespace and cgroup, so the node's socket hooks see it). [`HeldClient`] is
//! the test's handle on that process: it writes one command a line on the child's stdin
//! (`send`, `close`) and reads one [`Reply`] a JSON line for each.
//!
//! Before each exchange the socket's pending error is taken (`getsockopt(SO_ERROR)`), as an
//! event-driven application does when poll reports `POLLERR`: a UDP socket destroyed through
//! sock_diag has `ECONNABORTED` pending, and is also disconnected, so a bare `send()` would
//! fail with `EDESTADDRREQ` instead.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::client::{binary_path, udp_socket, ClientMode, Reply};
use crate::error::{Error, Result};
use crate::place::{Place, CLIENT_TIMEOUT};
use crate::process::Process;

/// The request line a held socket sends in each exchange (TCP and UDP alike).
const REQUEST: &[u8] = b"hello\n";

/// An open TCP connection or connected UDP socket.
#[derive(Debug)]
pub enum HeldSocket {
    /// A connection, with a reader over the same stream for the server's lines.
    Tcp(TcpStream, BufReader<TcpStream>),
    /// A connected UDP socket.
    Udp(UdpSocket),
}

impl HeldSocket {
    /// Connects to `target` and makes the first exchange (for TCP the server's greeting; for
    /// UDP a datagram and its answer). The socket is `None` when the connect failed.
    pub fn open(mode: ClientMode, target: SocketAddr, timeout: Duration) -> (Option<Self>, Reply) {
        match mode {
            ClientMode::Tcp => {
                let stream = match TcpStream::connect_timeout(&target, timeout) {
                    Ok(s) => s,
                    Err(e) => return (None, Reply::failed("connect", &e, None)),
                };
                if let Err(e) = stream.set_read_timeout(Some(timeout)) {
                    return (None, Reply::failed("setsockopt(SO_RCVTIMEO)", &e, None));
                }
                let reader = match stream.try_clone() {
                    Ok(r) => BufReader::new(r),
                    Err(e) => return (None, Reply::failed("dup", &e, None)),
                };
                let mut held = HeldSocket::Tcp(stream, reader);
                let reply = held.read_answer();
                (Some(held), reply)
            }
            ClientMode::Http => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an HTTP exchange is not held: use tcp",
                );
                (None, Reply::failed("hold", &e, None))
            }
            ClientMode::UdpConnected | ClientMode::UdpUnconnected => {
                let socket = match udp_socket(target, timeout) {
                    Ok(s) => s,
                    Err(reply) => return (None, reply),
                };
                if let Err(e) = socket.connect(target) {
                    return (None, Reply::failed("connect", &e, None));
                }
                let mut held = HeldSocket::Udp(socket);
                let reply = held.exchange();
                (Some(held), reply)
            }
        }
    }

    fn local(&self) -> Option<SocketAddr> {
        match self {
            HeldSocket::Tcp(s, _) => s.local_addr().ok(),
            HeldSocket::Udp(s) => s.local_addr().ok(),
        }
    }

    /// One exchange on the open socket: the pending error if there is one, else send a line
    /// and read the answer.
    pub fn exchange(&mut self) -> Reply {
        let local = self.local();
        let pending = match self {
            HeldSocket::Tcp(s, _) => s.take_error(),
            HeldSocket::Udp(s) => s.take_error(),
        };
        match pending {
            Ok(Some(e)) => return Reply::failed("pending socket error", &e, local),
            Ok(None) => {}
            Err(e) => return Reply::failed("getsockopt(SO_ERROR)", &e, local),
        }
        let sent = match self {
            HeldSocket::Tcp(s, _) => s.write_all(REQUEST),
            HeldSocket::Udp(s) => s.send(REQUEST).map(drop),
        };
        if let Err(e) = sent {
            return Reply::failed("send", &e, local);
        }
        self.read_answer()
    }

    fn read_answer(&mut self) -> Reply {
        let local = self.local();
        let answer = match self {
            HeldSocket::Tcp(_, reader) => {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                    Ok(_) => Ok(line),
                    Err(e) => Err(e),
                }
            }
            HeldSocket::Udp(s) => {
                let mut buf = [0u8; 2048];
                s.recv(&mut buf)
                    .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
            }
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return Reply::failed("recv", &e, local),
        };
        let peer = match self {
            HeldSocket::Tcp(s, _) => s.peer_addr(),
            HeldSocket::Udp(s) => s.peer_addr(),
        };
        match peer {
            Ok(peer) => Reply {
                answer: Some(answer.trim_end().to_owned()),
                local,
                peer: Some(peer),
                error: None,
                errno: None,
            },
            Err(e) => Reply::failed("getpeername", &e, local),
        }
    }
}

/// A `netsim-client hold` process in a place, with its socket open; killed on drop.
#[derive(Debug)]
pub struct HeldClient {
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    process: Process,
    place: String,
}

/// How long one command may take: two blocking steps of the client's timeout, and start-up.
const COMMAND_DEADLINE: Duration = Duration::from_secs(2 * CLIENT_TIMEOUT.as_secs() + 5);

impl HeldClient {
    /// Starts `netsim-client hold MODE TARGET` in `place` and returns with the first
    /// exchange's reply (a failed connect is a reply with `error` set; the process then exits).
    pub fn open(place: &Place, mode: ClientMode, target: SocketAddr) -> Result<(Self, Reply)> {
        let mut cmd = Command::new(binary_path("netsim-client")?);
        cmd.args([
            "hold",
            mode.as_arg(),
            &target.to_string(),
            "--timeout-ms",
            &CLIENT_TIMEOUT.as_millis().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut process = place.spawn(cmd)?;
        let stdin = process.child_mut().stdin.take();
        let stdout = process.child_mut().stdout.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut client = HeldClient {
            stdin,
            lines,
            process,
            place: place.name().to_owned(),
        };
        let reply = client.reply("open")?;
        Ok((client, reply))
    }

    /// One exchange on the held socket.
    pub fn send(&mut self) -> Result<Reply> {
        self.command("send")?;
        self.reply("send")
    }

    /// Closes the socket and waits for the process to exit.
    pub fn close(mut self) -> Result<()> {
        self.command("close")?;
        self.stdin = None;
        self.process.wait_timeout(COMMAND_DEADLINE)?;
        Ok(())
    }

    fn command(&mut self, command: &str) -> Result<()> {
        let err = |source| Error::Process {
            program: "netsim-client hold".into(),
            place: self.place.clone(),
            op: "write a command to stdin",
            source,
        };
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| err(std::io::ErrorKind::BrokenPipe.into()))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(err)
    }

    fn reply(&mut self, command: &str) -> Result<Reply> {
        let line = match self.lines.recv_timeout(COMMAND_DEADLINE) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(Error::Timeout {
                    what: format!("netsim-client hold in {} to answer {command}", self.place),
                    waited: COMMAND_DEADLINE,
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::BadOutput {
                    program: "netsim-client hold".into(),
                    place: self.place.clone(),
                    output: String::new(),
                    why: format!("exited without answering {command} (was its socket closed?)"),
                })
            }
        };
        serde_json::from_str(&line).map_err(|e| Error::BadOutput {
            program: "netsim-client hold".into(),
            place: self.place.clone(),
            output: line.clone(),
            why: format!("not a JSON reply: {e}"),
        })
    }
}
