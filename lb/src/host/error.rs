//! Errors of preparing the node.

use std::path::PathBuf;

/// Something on the node could not be read, mounted or written.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A filesystem could not be mounted where the options say.
    #[error("cannot mount {fstype} at {}: {source} (set {option} to a mounted {fstype}, or run as root)", path.display())]
    Mount {
        /// `bpf` or `cgroup2`.
        fstype: &'static str,
        /// Where.
        path: PathBuf,
        /// The option that names the place.
        option: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path exists but is not the filesystem it must be, and auto-mount is off.
    #[error("{} is not a {fstype} mount and {option} is off; mount {fstype} there or enable it", path.display())]
    NotMounted {
        /// `bpf` or `cgroup2`.
        fstype: &'static str,
        /// Where.
        path: PathBuf,
        /// The option that would mount it.
        option: &'static str,
    },
    /// A file under /proc or /sys could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A kernel interface answered something unexpected.
    #[error("{what}: {detail}")]
    Unexpected {
        /// What was read.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
}

impl HostError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HostError {
        let path = path.into();
        move |source| HostError::Io { path, source }
    }
}
