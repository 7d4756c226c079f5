//! What the tiers that run `lb-agent` itself share: a netsim node with its bpffs, manifest
//! directory and state directory, the agent's command line for it, and a clean stop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use libtest_mimic::Failed;
use netsim::{NodeSpec, Topology};

use super::{ScratchDir, TestBpffs};

/// A netsim node for one agent test, with its bpffs and a scratch directory holding
/// `manifests/` (the Node object, with the node's InternalIP, already in it) and `state/`.
/// Fields drop in order: the scratch directory and the bpffs before the node and its topology.
pub struct AgentNode {
    pub scratch: ScratchDir,
    pub bpffs: TestBpffs,
    pub node: netsim::Node,
    pub topology: Topology,
    pub manifests: PathBuf,
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
}

impl AgentNode {
    /// Node `tag` at `address`/24; the bpffs and scratch directory are named after it.
    pub fn new(tag: &str, address: &str) -> Result<Self, Failed> {
        let mut topology = Topology::new()?;
        let node = topology.add_node(NodeSpec::new(tag).eth0(format!("{address}/24").parse()?))?;
        let bpffs = TestBpffs::new(&format!("agent-{tag}"))?;
        let scratch = ScratchDir::named(&format!("agent-{tag}"))?;
        std::fs::create_dir_all(scratch.0.join("manifests"))?;
        let manifests = scratch.0.join("manifests");
        std::fs::write(
            manifests.join("node.yaml"),
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {tag}}}\n\
                 status: {{addresses: [{{type: InternalIP, address: {address}}}]}}\n"
            ),
        )?;
        Ok(AgentNode {
            state_dir: scratch.0.join("state"),
            pin_dir: bpffs.path.join(lb::agent::PIN_SUBDIR),
            manifests,
            scratch,
            bpffs,
            node,
            topology,
        })
    }
}

/// `lb-agent` for `node`: its bpffs root, cgroup, manifest directory, node name and state
/// directory, stdin closed. Each test adds its options, output and log level.
pub fn lb_agent(
    bpffs: &TestBpffs,
    node: &netsim::Node,
    manifests: &Path,
    state_dir: &Path,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
    cmd.arg("--set")
        .arg(format!("bpf.root={}", bpffs.path.display()))
        .arg("--set")
        .arg(format!("cgroup.hostRoot={}", node.cgroup_path().display()))
        .arg("--manifests")
        .arg(manifests)
        .arg("--node")
        .arg(node.name())
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::null());
    cmd
}

/// Sends `agent` SIGTERM and waits (10 s at most) for it to exit cleanly, as an operator's
/// `systemctl stop` or a pod deletion would; `who` names it in the failure.
pub fn stop_with_sigterm(agent: &mut netsim::Process, who: &str) -> Result<(), Failed> {
    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = agent.wait_timeout(Duration::from_secs(10))?;
    if !status.success() {
        return Err(format!("{who} exited with {status} on SIGTERM").into());
    }
    Ok(())
}

/// Where the metrics test's agent serves `/metrics` inside its node's namespace (Cilium's
/// port: the namespace is the test's own, so nothing else holds it).
pub const METRICS_PORT: u16 = 9962;

/// The `/metrics` text from inside `node`'s namespace, or why there was none. The answer must
/// be 200 in the OpenMetrics text format.
pub fn scrape(node: &netsim::Node) -> Result<String, String> {
    let answer = http_get_raw(node, &format!("127.0.0.1:{METRICS_PORT}"), "/metrics")?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers: {answer:?}"))?;
    let head = head.to_ascii_lowercase();
    if !head.starts_with("http/1.1 200 ")
        || !head.contains("\r\ncontent-type: application/openmetrics-text;")
    {
        return Err(format!("not a 200 OpenMetrics answer: {head:?}"));
    }
    Ok(body.to_owned())
}

/// The value of the sample `name` (with its labels, as printed) in `text`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// The raw answer to `GET path` over HTTP/1.1 to `addr` from inside `node`'s namespace
/// (`Connection: close`, read to the end), or why there was none.
pub fn http_get_raw(node: &netsim::Node, addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let (addr, path) = (addr.to_owned(), path.to_owned());
    node.in_netns(move || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}
