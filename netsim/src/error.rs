//! The crate's one error type: every variant names what failed (which namespace, interface,
//! path or process) and keeps the underlying error as its source.

use std::path::PathBuf;
use std::time::Duration;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while building, using or tearing down a topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process cannot build topologies here (not root, or no cgroup v2 mount). Test runners
    /// match on this variant to report their tests as skipped, loudly.
    #[error("netsim cannot run here: {why}")]
    Unprivileged { why: String },

    /// A node, pod or interface name the caller gave is not usable.
    #[error("invalid name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },

    /// A namespace operation (unshare, setns, mount) failed.
    #[error("{op} for namespace {ns}: {source}")]
    Namespace {
        ns: String,
        op: &'static str,
        #[source]
        source: nix::errno::Errno,
    },

    /// A file-system operation (cgroup, netns file, sysctl) failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A netlink request failed.
    #[error("netlink: {op} in namespace {ns}: {source}")]
    Netlink {
        ns: String,
        op: String,
        #[source]
        source: rtnetlink::Error,
    },

    /// A socket or runtime operation inside a namespace failed.
    #[error("{op} in namespace {ns}: {source}")]
    Socket {
        ns: String,
        op: String,
        #[source]
        source: std::io::Error,
    },

    /// A child process could not be started, waited for, or gave output we could not read.
    #[error("process {program} in {place}: {op}: {source}")]
    Process {
        program: String,
        place: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A helper binary of this crate is not built.
    #[error(
        "binary {name} not found (looked in {looked_in}); build it with `cargo build -p netsim --bins`"
    )]
    BinaryMissing { name: String, looked_in: String },

    /// A helper binary ran but its output was not what it promises.
    #[error("{program} in {place} printed {output:?}: {why}")]
    BadOutput {
        program: String,
        place: String,
        output: String,
        why: String,
    },

    /// A condition was not met before its deadline.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },

    /// A name was used twice in one topology, or an unknown one was referred to.
    #[error("{what} {name:?}")]
    Topology { what: &'static str, name: String },
}

impl Error {
    /// Whether this error means "cannot run here" rather than "broken".
    pub fn is_unprivileged(&self) -> bool {
        matches!(self, Error::Unprivileged { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
