//! What BPF programs are attached to a cgroup, asked of the kernel (`BPF_PROG_QUERY`), for
//! `lbctl cgroup tree` (the documents' "Validate BPF cgroup programs attachment", which they
//! show with `bpftool cgroup tree`) and for a status that says what is attached rather than
//! what was configured.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::HostError;

/// The cgroup attach types, as `enum bpf_attach_type` in `<linux/bpf.h>` numbers them, with
/// the names bpftool prints.
const CGROUP_ATTACH_TYPES: &[(u32, &str)] = &[
    (0, "ingress"),
    (1, "egress"),
    (2, "sock_create"),
    (3, "sock_ops"),
    (6, "device"),
    (8, "bind4"),
    (9, "bind6"),
    (10, "connect4"),
    (11, "connect6"),
    (12, "post_bind4"),
    (13, "post_bind6"),
    (14, "sendmsg4"),
    (15, "sendmsg6"),
    (18, "sysctl"),
    (19, "recvmsg4"),
    (20, "recvmsg6"),
    (21, "getsockopt"),
    (22, "setsockopt"),
    (29, "getpeername4"),
    (30, "getpeername6"),
    (31, "getsockname4"),
    (32, "getsockname6"),
    (34, "sock_release"),
];

const BPF_PROG_QUERY: nix::libc::c_long = 16;
const BPF_F_ALLOW_OVERRIDE: u32 = 1;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// More programs than one attach type of one cgroup holds in practice (the kernel's limit
/// is 64 per type).
const MAX_PROGRAMS: usize = 64;

/// A program attached to a cgroup.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttachedProgram {
    /// The program's id.
    pub id: u32,
    /// Where it is attached (`connect4`, `sock_release`, ...).
    pub attach_type: &'static str,
    /// `multi`, `override` or empty, as bpftool shows them.
    pub attach_flags: &'static str,
    /// The program's name, when the kernel knows it.
    pub name: String,
}

/// The programs attached directly to the cgroup at `path` (not inherited ones), in attach
/// type order.
pub fn attached_programs(path: &Path) -> Result<Vec<AttachedProgram>, HostError> {
    let dir = std::fs::File::open(path).map_err(HostError::io(path))?;
    let names = program_names();
    let mut out = Vec::new();
    for &(attach_type, type_name) in CGROUP_ATTACH_TYPES {
        let (flags, ids) =
            query(dir.as_raw_fd(), attach_type).map_err(|e| HostError::Unexpected {
                what: format!("the BPF programs attached to {}", path.display()),
                detail: format!("BPF_PROG_QUERY for {type_name}: {e}"),
            })?;
        let attach_flags = if flags & BPF_F_ALLOW_MULTI != 0 {
            "multi"
        } else if flags & BPF_F_ALLOW_OVERRIDE != 0 {
            "override"
        } else {
            ""
        };
        out.extend(ids.into_iter().map(|id| {
            AttachedProgram {
                id,
                attach_type: type_name,
                attach_flags,
                name: names
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default(),
            }
        }));
    }
    Ok(out)
}

/// Every cgroup under `root` (itself included) that has programs attached, parents first.
pub fn cgroup_tree(root: &Path) -> Result<Vec<(PathBuf, Vec<AttachedProgram>)>, HostError> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let attached = attached_programs(&dir)?;
        if !attached.is_empty() {
            out.push((dir.clone(), attached));
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(HostError::io(&dir))?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        children.sort();
        pending.extend(children.into_iter().rev());
    }
    Ok(out)
}

/// `(id, name)` of every loaded program.
fn program_names() -> Vec<(u32, String)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// `BPF_PROG_QUERY` of one attach type: the attach flags and the program ids.
fn query(target_fd: i32, attach_type: u32) -> std::io::Result<(u32, Vec<u32>)> {
    /// The `query` member of `union bpf_attr`, padded to a size every kernel accepts (bytes
    /// a kernel does not know must be zero, and are).
    #[repr(C, align(8))]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: [u8; 36],
    }
    let mut ids = [0u32; MAX_PROGRAMS];
    let mut attr = QueryAttr {
        target_fd: target_fd as u32,
        attach_type,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: MAX_PROGRAMS as u32,
        pad: [0; 36],
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the size passed, and
    // prog_ids points at MAX_PROGRAMS u32s that outlive the call.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            std::mem::size_of::<QueryAttr>(),
        )
    };
    if ret < 0 {
        let err = std::io::Error::last_os_error();
        // An attach type this kernel does not know has nothing attached.
        if err.raw_os_error() == Some(nix::libc::EINVAL) {
            return Ok((0, Vec::new()));
        }
        return Err(err);
    }
    let count = (attr.prog_cnt as usize).min(MAX_PROGRAMS);
    Ok((attr.attach_flags, ids[..count].to_vec()))
}

/// Which of `expected` (`(program name, attach type)`) are not attached directly to the cgroup
/// at `path`, by attach type and name (the kernel keeps the first 15 bytes of a name).
pub fn missing_programs<'a>(
    path: &Path,
    expected: &[(&'a str, &'a str)],
) -> Result<Vec<&'a str>, HostError> {
    let attached = attached_programs(path)?;
    Ok(expected
        .iter()
        .filter(|(name, attach_type)| {
            let kernel_name = &name[..name.len().min(15)];
            !attached
                .iter()
                .any(|a| a.attach_type == *attach_type && a.name == kernel_name)
        })
        .map(|(_, attach_type)| *attach_type)
        .collect())
}
