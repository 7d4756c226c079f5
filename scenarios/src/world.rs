//! What a backend must provide to replay a scenario: a world built from its topology, in
//! which clients call, agents reconcile and restart.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb::views::TraceSockEvent;

use crate::spec::{Bind, Connect, Open, Reroute};

/// What a client observed from one successful call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The pod or node whose server answered.
    pub answered_by: String,
    /// The peer address the application sees (getpeername, or recvfrom's source).
    pub peer_name: SocketAddr,
    /// The source address the server saw.
    pub seen_source: IpAddr,
}

/// How a call failed, in the terms scenarios use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// EPERM.
    Perm,
    /// Refused: ECONNREFUSED, a TCP reset or, on a connected UDP socket, an ICMP port
    /// unreachable (an unconnected UDP socket is not told: its call times out).
    Refused,
    /// No answer before the deadline: ETIMEDOUT, EAGAIN from a receive timeout, or a connect
    /// still in progress (EINPROGRESS) when the deadline passed.
    TimedOut,
    /// No route to the destination: EHOSTUNREACH or ENETUNREACH (no route here, or an ICMP
    /// host or network unreachable from a router on the way).
    Unreachable,
    /// Another errno, by its name (`ECONNABORTED`).
    Errno(String),
    /// Anything else, as the backend reported it.
    Other(String),
}

impl CallError {
    /// The name an `expect.error` uses.
    pub fn name(&self) -> &str {
        match self {
            CallError::Perm => "EPERM",
            CallError::Refused => "ECONNREFUSED",
            CallError::TimedOut => "timeout",
            CallError::Unreachable => "unreachable",
            CallError::Errno(s) | CallError::Other(s) => s,
        }
    }

    /// The scenario's name for an errno a call failed with.
    pub fn from_errno(errno: nix::errno::Errno) -> CallError {
        use nix::errno::Errno;
        match errno {
            Errno::EPERM => CallError::Perm,
            Errno::ECONNREFUSED => CallError::Refused,
            Errno::ETIMEDOUT | Errno::EAGAIN | Errno::EINPROGRESS => CallError::TimedOut,
            Errno::ENETUNREACH | Errno::EHOSTUNREACH => CallError::Unreachable,
            other => CallError::Errno(format!("{other:?}")),
        }
    }

    /// Why `name` cannot be an `expect.error`, if it cannot: the errnos that one of the kinds
    /// above stands for are written as that kind, so an expectation cannot name an errno the
    /// runner never reports.
    pub fn unusable_name(name: &str) -> Option<String> {
        const KINDS: &str =
            "EPERM, ECONNREFUSED, timeout, unreachable, none, or another errno by name";
        let kind = match name {
            "ETIMEDOUT" | "EAGAIN" | "EWOULDBLOCK" | "EINPROGRESS" => Some("timeout"),
            "EHOSTUNREACH" | "ENETUNREACH" => Some("unreachable"),
            _ => None,
        };
        if let Some(kind) = kind {
            return Some(format!("{name} is reported as `{kind}`; write that"));
        }
        let errno_like = name.len() > 1
            && name.starts_with('E')
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        let known = matches!(name, "timeout" | "unreachable" | "none");
        (!errno_like && !known).then(|| format!("unknown error {name:?}; accepted: {KINDS}"))
    }
}

/// What `lbctl monitor -t trace-sock` showed on the caller's node during one call.
#[derive(Clone, Debug)]
pub struct Traced {
    /// The caller's cgroup v2 id, as the events carry it.
    pub caller_cgroup: u64,
    /// Every event the monitor printed, oldest first (also other processes' ones).
    pub events: Vec<TraceSockEvent>,
}

/// `lbctl`'s text views of one node.
#[derive(Clone, Debug)]
pub struct NodeViews {
    /// `lbctl service list`.
    pub service_list: String,
    /// `lbctl status --verbose`.
    pub status: String,
}

/// A topology with agents running, on the simulator or on the kernel.
pub trait World {
    /// Makes one call (a fresh socket) and reports what the application saw.
    fn connect(&mut self, call: &Connect) -> anyhow::Result<Result<Answer, CallError>>;
    /// Makes one call with the trace-sock monitor running on the caller's node.
    fn connect_traced(
        &mut self,
        call: &Connect,
    ) -> anyhow::Result<(Result<Answer, CallError>, Traced)>;
    /// Opens a socket held under `open.id` until closed, and makes a first exchange on it.
    fn open(&mut self, open: &Open) -> anyhow::Result<Result<Answer, CallError>>;
    /// One more exchange on the held socket `id`.
    fn send(&mut self, id: &str) -> anyhow::Result<Result<Answer, CallError>>;
    /// Closes the held socket `id`.
    fn close(&mut self, id: &str) -> anyhow::Result<()>;
    /// Binds a fresh socket.
    fn bind(&mut self, bind: &Bind) -> anyhow::Result<Result<(), CallError>>;
    /// Gives every agent these objects (Kubernetes YAML) and waits until each has
    /// programmed them.
    fn set_objects(&mut self, objects: &[serde_yaml::Value]) -> anyhow::Result<()>;
    /// Restarts a node's agent (its maps and programs stay pinned meanwhile).
    fn restart_agent(&mut self, node: &str) -> anyhow::Result<()>;
    /// Points an external host's route elsewhere (`reroute.to` must be one of its routes).
    fn reroute(&mut self, reroute: &Reroute) -> anyhow::Result<()>;
    /// Lets time pass.
    fn wait(&mut self, duration: Duration) -> anyhow::Result<()>;
    /// A path MTU probe from an external host: the MTU its socket reports afterwards.
    fn path_mtu(&mut self, probe: &crate::spec::PmtuProbe) -> anyhow::Result<u32>;
    /// A sysctl's value in a node's namespace.
    fn sysctl(&mut self, node: &str, key: &str) -> anyhow::Result<String>;
    /// The frontends `lbctl service list` shows on a node.
    fn frontends(&mut self, node: &str) -> anyhow::Result<Vec<String>>;
    /// The names of the packet programs' drop counters that are not zero on a node.
    fn drops(&mut self, node: &str) -> anyhow::Result<Vec<String>>;
    /// The neighbour entries a node's agent pushed (`IP dev DEVICE`, sorted; an entry the
    /// kernel has not resolved says so), once they are `want` or a deadline passed: the kernel
    /// resolves them a moment after the agent pushed them.
    fn neighbours(&mut self, node: &str, want: &[String]) -> anyhow::Result<Vec<String>>;
    /// What an operator reads on a node: `lbctl service list` and `lbctl status --verbose`.
    fn views(&mut self, node: &str) -> anyhow::Result<NodeViews>;
}
