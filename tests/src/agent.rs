//! `lb-agent` on a netsim node, watching a test [`ApiServer`].
//!
//! The API server listens on the host's loopback; the agent runs inside a node's network
//! namespace, where that address is not the host's. [`ApiForward`] bridges the two without
//! touching any host interface: it listens on `127.0.0.1:`[`API_PORT`] inside the node's
//! namespace (the address the server's certificate names) and forwards each connection to the
//! server's current port on the host. It can also cut the agent off (every open connection
//! closed, new ones refused), which is how a test makes a watch gap while the server runs.
//!
//! [`ApiAgent`] runs the agent there with its own bpffs, state directory and a kubeconfig that
//! points at the forward, and can SIGKILL it and start it again on the same pinned state.
//! `lb-agent` itself is found next to the test binary (`netsim::binary_path`), so
//! `cargo build -p lb --bins` must have run.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::ApiServer;

/// The port the agent's kubeconfig names, on loopback inside the node's namespace.
pub const API_PORT: u16 = 6443;

/// How long the agent may take to log that its datapath is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The agent's `RUST_LOG`: info, and the API watches' debug lines (`listing`, `listed` with
/// each kind and count, `listing again` after 410 Gone), so a test can see a re-list.
pub const LOG_LEVELS: &str = "info,lb::source::api::watch=debug";

/// What the agent logs once its first sync is programmed (`lb/src/agent/run.rs`).
pub const READY_LINE: &str = "datapath ready";

/// Forwards connections made to `127.0.0.1:`[`API_PORT`] inside a namespace to the API
/// server on the host. Dropping it stops accepting and closes every forwarded connection.
#[derive(Debug)]
pub struct ApiForward {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The server's port on the host loopback.
    target: AtomicU16,
    /// Whether new connections are forwarded (else closed at once).
    open: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every forwarded connection, to cut them.
    conns: Mutex<Vec<TcpStream>>,
}

impl ApiForward {
    /// Listens inside `place`'s namespace and forwards to `server`.
    pub fn start(place: &netsim::Place, server: &ApiServer) -> Result<ApiForward> {
        let listener = place
            .in_netns(|| TcpListener::bind(("127.0.0.1", API_PORT)))?
            .with_context(|| format!("binding 127.0.0.1:{API_PORT} in {}", place.name()))?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            target: AtomicU16::new(server_port(server)?),
            open: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(&listener, &accepting));
        Ok(ApiForward { shared })
    }

    /// Closes every forwarded connection and refuses new ones until [`ApiForward::reconnect`]:
    /// to the agent the server is gone.
    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        for conn in self.shared.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again, to `server`'s current port (it changes on restart).
    pub fn reconnect(&self, server: &ApiServer) -> Result<()> {
        self.shared
            .target
            .store(server_port(server)?, Ordering::SeqCst);
        self.shared.open.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for ApiForward {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn server_port(server: &ApiServer) -> Result<u16> {
    let url = server.url();
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in the server's URL {url}"))
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if !shared.open.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let _ = client.set_nonblocking(false);
                let port = shared.target.load(Ordering::SeqCst);
                // This thread is in the host's namespace: the server's loopback.
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
                    continue;
                };
                {
                    let mut conns = shared.conns.lock().unwrap();
                    conns.retain(|c| c.peer_addr().is_ok());
                    for s in [&client, &upstream] {
                        if let Ok(s) = s.try_clone() {
                            conns.push(s);
                        }
                    }
                }
                std::thread::spawn(move || pipe(client, u2));
                std::thread::spawn(move || pipe(upstream, c2));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Copies `from` to `to` until either ends, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A bpffs mounted for one agent (or bench); unmounted on drop.
#[derive(Debug)]
pub struct Bpffs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Bpffs {
    /// Mounts a bpffs at `path`, creating the directory.
    pub fn mount(path: PathBuf) -> Result<Bpffs> {
        std::fs::create_dir_all(&path)?;
        nix::mount::mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting bpffs at {}", path.display()))?;
        Ok(Bpffs { path })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount(&self.path) {
            eprintln!("warning: cannot unmount {}: {e}", self.path.display());
        }
    }
}

/// `lb-agent` on a netsim node with the API server as its source (no `--manifests`), its
/// log appended to one file across restarts. Dropping it kills the agent, unmounts its bpffs
/// and removes its directory.
#[derive(Debug)]
pub struct ApiAgent {
    process: Option<netsim::Process>,
    place: netsim::Place,
    node: String,
    extra: Vec<String>,
    starts: usize,
    forward: ApiForward,
    // Dropped after the process (fields drop in order): the bpffs, then the directory.
    bpffs: Bpffs,
    dir: tempfile::TempDir,
}

impl ApiAgent {
    /// Starts the agent on `node` against `server`, with `extra` arguments (such as
    /// `--set kubeProxyReplacement=true`), and waits until it logs [`READY_LINE`]. The agent
    /// programs only once every kind has listed, so the node's Node object should exist.
    pub fn start(node: &netsim::Node, server: &ApiServer, extra: &[&str]) -> Result<ApiAgent> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("lb-e2e-agent-{}-", node.name()))
            .tempdir()?;
        let bpffs = Bpffs::mount(dir.path().join("bpffs"))?;
        let forward = ApiForward::start(node.place(), server)?;
        std::fs::write(
            dir.path().join("kubeconfig"),
            agent_kubeconfig(server)?
                .replace(&server.url(), &format!("https://127.0.0.1:{API_PORT}")),
        )?;
        let mut agent = ApiAgent {
            process: None,
            place: node.place().clone(),
            node: node.name().to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            starts: 0,
            forward,
            bpffs,
            dir,
        };
        agent.start_again()?;
        Ok(agent)
    }

    /// Starts the agent again after [`ApiAgent::kill`] (on the same pinned maps and state
    /// directory) and waits until it logs [`READY_LINE`] once more.
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            bail!("the agent on {} is already running", self.node);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(netsim::binary_path("lb-agent")?);
        cmd.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--node")
            .arg(&self.node)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--set")
            .arg(format!("bpf.root={}", self.bpffs.path.display()))
            .arg("--set")
            .arg(format!(
                "cgroup.hostRoot={}",
                self.place.cgroup_path().display()
            ))
            .args(&self.extra)
            .env("RUST_LOG", LOG_LEVELS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.process = Some(self.place.spawn(cmd)?);
        self.starts += 1;
        self.wait_for_log(READY_LINE, self.starts, READY_WITHIN)
    }

    /// SIGKILLs the agent (its pinned datapath stays) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut process) = self.process.take() else {
            bail!("the agent on {} is not running", self.node);
        };
        kill(Pid::from_raw(process.pid() as i32), Signal::SIGKILL)?;
        process.wait_timeout(Duration::from_secs(10))?;
        Ok(())
    }

    /// The forward between the agent and the server: cut it to make a watch gap, and
    /// reconnect it after [`ApiServer::restart`] (the server's port changes).
    pub fn forward(&self) -> &ApiForward {
        &self.forward
    }

    /// Where its maps are pinned (for `lb::datapath::ServiceMaps::open_pinned`).
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.path.join(lb::agent::PIN_SUBDIR)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// Everything the agent logged, across its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the log has `count` lines containing `text`; the error shows the log.
    pub fn wait_for_log(&self, text: &str, count: usize, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.lines().filter(|l| l.contains(text)).count() >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent on {} did not log {text:?} {count} time(s) within {within:?}:\n{}",
                    self.node,
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last lines of `text`, for failure messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The server's kubeconfig, as it wrote it.
fn agent_kubeconfig(server: &ApiServer) -> Result<String> {
    let path: &Path = &server.kubeconfig();
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
