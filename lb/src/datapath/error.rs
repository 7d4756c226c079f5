//! Errors of loading, attaching and programming the datapath.

use std::path::PathBuf;

/// Something the kernel or the object refused.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The object could not be loaded (verifier, missing kernel feature, permissions).
    #[error("cannot load the eBPF object: {source}{}", source_chain(source))]
    Load {
        /// What aya or the kernel said.
        #[from]
        source: aya::EbpfError,
    },
    /// A program could not be loaded or attached.
    #[error("program {program}: {source}{}", source_chain(source))]
    Program {
        /// The program's name.
        program: &'static str,
        /// The kernel's answer.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A program or map the object should have is missing: the object and this build disagree.
    #[error("the eBPF object has no {kind} named {name}")]
    Missing {
        /// `program` or `map`.
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// The cgroup to attach to could not be opened.
    #[error("cannot open cgroup {}: {source}", path.display())]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A map could not be read or written.
    #[error("map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The kernel's answer.
        #[source]
        source: aya::maps::MapError,
    },
    /// A pin in bpffs could not be made, read or removed.
    #[error("pin {}: {detail}", path.display())]
    Pin {
        /// The pinned path.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The kernel lacks something the datapath needs.
    #[error("this kernel cannot provide {what}: it needs {needs}")]
    Unsupported {
        /// What was asked for.
        what: String,
        /// The feature and the kernel version that has it.
        needs: &'static str,
    },
    /// A pinned map holds more entries than the size the options ask for.
    #[error(
        "bpf.lbMapMax={requested} cannot hold the {entries} entries pinned in {map} (made with \
         bpf.lbMapMax={pinned}): give bpf.lbMapMax of at least {entries}, keep {pinned}, or run \
         `lbctl cleanup` first (which removes this node's socket-LB state)"
    )]
    MapTooSmall {
        /// The map.
        map: &'static str,
        /// Entries it holds.
        entries: usize,
        /// The size asked for.
        requested: u32,
        /// The size it has.
        pinned: u32,
    },
    /// A pinned map has another layout than this build's under the same name.
    #[error(
        "pinned map {map} ({}) does not match this agent: {detail}; it was made by another \
         version: run `lbctl cleanup` and start again",
        path.display()
    )]
    PinnedLayout {
        /// The map.
        map: &'static str,
        /// Its pin.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// The embedded object could not be read.
    #[error("cannot read the eBPF object's map definitions: {detail}")]
    Object {
        /// What the parser said.
        detail: String,
    },
    /// Every monitor slot is taken by a running monitor.
    #[error(
        "all {slots} trace monitor slots are taken: {slots} `lbctl monitor`s are running on \
         this node; stop one and try again"
    )]
    MonitorSlotsTaken {
        /// How many monitors can listen at once.
        slots: usize,
    },
    /// A network device refused a program or a tc change.
    #[error("device {device}: {what}: {detail}")]
    Device {
        /// The device's name.
        device: String,
        /// What was being done.
        what: String,
        /// The kernel's answer.
        detail: String,
    },
    /// The desired state does not fit the maps' id spaces.
    #[error(transparent)]
    Layout(#[from] super::LayoutError),
}

impl DatapathError {
    pub(crate) fn pin(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DatapathError {
        let path = path.to_owned();
        move |e| DatapathError::Pin {
            path,
            detail: e.to_string(),
        }
    }
}

/// `: cause: cause…` for the causes below `err`, which aya's messages leave out.
pub(crate) fn source_chain(err: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}
