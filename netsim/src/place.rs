//! [`Place`]: somewhere code runs, a network namespace with a cgroup, and what can be done
//! there — run a closure, start a process, serve, be a client, capture. Nodes and pods are
//! places (they dereference to one).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::capture::Capture;
use crate::client::{binary_path, ClientMode, Reply};
use crate::error::{Error, Result};
use crate::held::HeldClient;
use crate::netns::run_in;
use crate::process::{spawn_in, Process};
use crate::server::{BoundSocket, IdentityServer, Proto};

/// How long a client waits at each blocking step (connect, read) before reporting a failure.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a spawned `netsim-server` may take to bind and say so.
const SERVER_READY: Duration = Duration::from_secs(5);

/// A network namespace and a cgroup directory, named for error messages.
///
/// A `Place` is a handle: it stays valid while its [`Topology`](crate::Topology) lives, and its
/// operations fail (naming the missing netns file) once the topology is dropped.
#[derive(Debug, Clone)]
pub struct Place {
    name: String,
    netns: PathBuf,
    cgroup: PathBuf,
}

impl Place {
    pub(crate) fn new(name: &str, netns: &Path, cgroup: &Path) -> Place {
        Place {
            name: name.to_owned(),
            netns: netns.to_owned(),
            cgroup: cgroup.to_owned(),
        }
    }

    /// The node's or pod's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file pinning the network namespace (usable with `setns` or `nsenter --net=`).
    pub fn netns_path(&self) -> &Path {
        &self.netns
    }

    /// The cgroup directory: attach cgroup BPF programs here to see this place's processes.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    /// Runs `f` on a fresh thread inside the network namespace (not the cgroup: only a process
    /// can join one). For netlink, sysctls and creating sockets; a panic in `f` is resumed here.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        run_in(&self.name, &self.netns, f)
    }

    /// Starts `cmd` as a child process inside the network namespace and the cgroup; the guard
    /// kills and reaps it on drop.
    pub fn spawn(&self, cmd: Command) -> Result<Process> {
        spawn_in(&self.name, &self.netns, &self.cgroup, cmd)
    }

    /// Starts an identity server on a thread of this process, its socket bound to `addr` inside
    /// the namespace before this returns.
    pub fn server(&self, proto: Proto, addr: SocketAddr, identity: &str) -> Result<IdentityServer> {
        let socket = self
            .in_netns(|| BoundSocket::bind(proto, addr))?
            .map_err(|source| Error::Socket {
                ns: self.name.clone(),
                op: format!("bind {proto:?} server to {addr}"),
                source,
            })?;
        IdentityServer::start(socket, identity, &self.name)
    }

    /// Starts the `netsim-server` binary inside the namespace and cgroup and waits until it has
    /// bound `addr`; returns the process and the address it bound.
    pub fn spawn_server(
        &self,
        proto: Proto,
        addr: SocketAddr,
        identity: &str,
    ) -> Result<(Process, SocketAddr)> {
        let mut cmd = Command::new(binary_path("netsim-server")?);
        cmd.args([proto.as_arg(), &addr.to_string(), identity])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut process = self.spawn(cmd)?;
        let stdout = process.child_mut().stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            }
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(SERVER_READY).map_err(|_| Error::Timeout {
            what: format!("netsim-server {identity} in {} to bind {addr}", self.name),
            waited: SERVER_READY,
        })?;
        let bound = line
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| Error::BadOutput {
                program: "netsim-server".into(),
                place: self.name.clone(),
                output: line.clone(),
                why: "expected `listening ADDR`".into(),
            })?;
        Ok((process, bound))
    }

    /// Runs `netsim-client` inside the namespace and cgroup: `count` exchanges with `target`,
    /// one [`Reply`] each (failures are replies with `error` set, not errors).
    pub fn client(&self, mode: ClientMode, target: SocketAddr, count: u32) -> Result<Vec<Reply>> {
        self.client_from(mode, target, count, None)
    }

    /// [`Place::client`] from a socket bound to `source_port` (UDP modes) when given.
    fn client_from(
        &self,
        mode: ClientMode,
        target: SocketAddr,
        count: u32,
        source_port: Option<u16>,
    ) -> Result<Vec<Reply>> {
        let mut cmd = Command::new(binary_path("netsim-client")?);
        cmd.args([
            mode.as_arg(),
            &target.to_string(),
            &count.to_string(),
            "--timeout-ms",
            &CLIENT_TIMEOUT.as_millis().to_string(),
        ]);
        if let Some(port) = source_port {
            cmd.args(["--source-port", &port.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let process = self.spawn(cmd)?;
        // Each exchange has at most two blocking steps of CLIENT_TIMEOUT.
        let output = process.output(CLIENT_TIMEOUT * 2 * count + Duration::from_secs(5))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let bad = |why: String| Error::BadOutput {
            program: "netsim-client".into(),
            place: self.name.clone(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
            why,
        };
        if !output.status.success() {
            return Err(bad(format!("exited with {}", output.status)));
        }
        let replies = stdout
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Reply>, _>>()
            .map_err(|e| bad(format!("not JSON lines of replies: {e}")))?;
        if replies.len() != count as usize {
            return Err(bad(format!(
                "{} replies for {count} exchanges",
                replies.len()
            )));
        }
        Ok(replies)
    }

    /// A path MTU probe to `target` with packets of `size` bytes by `netsim-client pmtu` in
    /// this place (see [`crate::path_mtu`]).
    pub fn path_mtu(&self, target: SocketAddr, size: usize) -> Result<crate::PathMtu> {
        let mut cmd = Command::new(binary_path("netsim-client")?);
        cmd.args([
            "pmtu",
            &target.to_string(),
            &size.to_string(),
            "--timeout-ms",
            &CLIENT_TIMEOUT.as_millis().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let process = self.spawn(cmd)?;
        let output = process.output(CLIENT_TIMEOUT + Duration::from_secs(5))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let bad = |why: String| Error::BadOutput {
            program: "netsim-client".into(),
            place: self.name.clone(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
            why,
        };
        if !output.status.success() {
            return Err(bad(format!("exited with {}", output.status)));
        }
        serde_json::from_str(stdout.trim()).map_err(|e| bad(format!("not a JSON probe line: {e}")))
    }

    /// One exchange with `target` by `netsim-client` in this place.
    pub fn client_once(&self, mode: ClientMode, target: SocketAddr) -> Result<Reply> {
        self.client_once_from(mode, target, None)
    }

    /// One exchange with `target` from source port `source_port` when given (a UDP mode: the
    /// same flow can be sent again, e.g. through another node).
    pub fn client_once_from(
        &self,
        mode: ClientMode,
        target: SocketAddr,
        source_port: Option<u16>,
    ) -> Result<Reply> {
        let mut replies = self.client_from(mode, target, 1, source_port)?;
        Ok(replies.remove(0))
    }

    /// Opens a socket to `target` held by a `netsim-client hold` process in this place, with
    /// the first exchange's reply; see [`HeldClient`].
    pub fn hold(&self, mode: ClientMode, target: SocketAddr) -> Result<(HeldClient, Reply)> {
        HeldClient::open(self, mode, target)
    }

    /// Starts capturing frames on the interface `ifname` of this namespace.
    pub fn capture(&self, ifname: &str) -> Result<Capture> {
        Capture::start(&self.name, &self.netns, ifname)
    }
}
