//! Detaching a pinned BPF link before its pin goes, so the program is off its hook when the
//! call returns.
//!
//! Removing a link's pin alone does detach it, but later: bpffs drops its reference after an
//! RCU grace period, and from Linux 6.6 that last reference frees the link from a workqueue.
//! Until then the old program still runs. `lbctl cleanup` would report a hook as removed while
//! `bpftool cgroup tree` still lists it, and a generation swap would copy what the old programs
//! wrote while they can still write. `BPF_LINK_DETACH` (Linux 5.9) takes the program off its
//! hook at once; where the kernel or link type lacks it, the pin's removal is all there is.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::DatapathError;

/// `BPF_OBJ_GET` in the kernel's `enum bpf_cmd`.
const BPF_OBJ_GET: nix::libc::c_long = 7;
/// `BPF_LINK_DETACH` in the kernel's `enum bpf_cmd`.
const BPF_LINK_DETACH: nix::libc::c_long = 34;

/// Whether the pin was there to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpinned {
    /// The link was detached (or its pin removed, on kernels without `BPF_LINK_DETACH`) and
    /// the pin is gone.
    Removed,
    /// Nothing was pinned at the path.
    Absent,
}

/// Detaches the link pinned at `path` and removes the pin. A path with nothing pinned is
/// [`Unpinned::Absent`]; any other failure is an error naming the path.
pub fn detach_and_unpin(path: &Path) -> Result<Unpinned, DatapathError> {
    match open_pinned(path) {
        Ok(link) => detach(&link).map_err(|e| DatapathError::Pin {
            path: path.to_owned(),
            detail: format!("detaching the link: {e}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Unpinned::Absent),
        Err(e) => return Err(DatapathError::pin(path)(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Unpinned::Removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Unpinned::Absent),
        Err(e) => Err(DatapathError::pin(path)(e)),
    }
}

/// The object pinned at `path`, by `BPF_OBJ_GET` (aya keeps a pinned link's descriptor to
/// itself).
fn open_pinned(path: &Path) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the size passed, and its
    // path points at a NUL-terminated string that outlives the call.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut attr as *mut ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_LINK_DETACH` on `link`. A kernel without the command (`EINVAL`, before 5.9) or a link
/// type without detach (`EOPNOTSUPP`) is not an error: the pin's removal detaches it later.
fn detach(link: &OwnedFd) -> std::io::Result<()> {
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }
    let mut attr = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the size passed, and the
    // descriptor it names stays open for the call.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_LINK_DETACH,
            &mut attr as *mut LinkDetachAttr,
            std::mem::size_of::<LinkDetachAttr>(),
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(nix::libc::EINVAL) | Some(nix::libc::EOPNOTSUPP) => Ok(()),
        _ => Err(err),
    }
}
