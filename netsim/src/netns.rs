//! Network namespaces kept alive by a bind mount of their nsfs file, and code run inside them.
//!
//! A namespace is created by a short-lived thread that `unshare(CLONE_NEWNET)`s and bind-mounts
//! `/proc/thread-self/ns/net` onto a file of ours, as `ip netns add` does. Code runs inside a
//! namespace on a fresh thread that `setns`es into it; the rest of the process (and its mount
//! namespace, so /sys, bpffs and cgroup2 stay visible) is untouched. Never `ip netns exec`.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

/// A network namespace pinned by a file; unmounted and removed on drop.
///
/// Dropping the guard removes the pin: the kernel frees the namespace, and every device in it,
/// once no process, thread or socket uses it any more.
#[derive(Debug)]
pub(crate) struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// Creates a namespace named `name`, pinned at `path`, with loopback up and the given sysctls.
    pub(crate) fn create(name: &str, path: PathBuf) -> Result<NetNs> {
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create netns file", &path, e))?;
        // From here on the guard removes the file, mounted or not.
        let ns = NetNs {
            name: name.to_owned(),
            path,
        };
        let target = ns.path.clone();
        let err = |op| {
            move |source| Error::Namespace {
                ns: name.to_owned(),
                op,
                source,
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| -> Result<()> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(err("unshare(CLONE_NEWNET)"))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(err("bind-mount /proc/thread-self/ns/net"))
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })?;
        Ok(ns)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // A lazy unmount cannot fail because something still uses the namespace; EINVAL means
        // the creation failed before the mount.
        match umount2(&self.path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => eprintln!("netsim: cannot unmount {}: {e}", self.path.display()),
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            eprintln!("netsim: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace pinned at `path`.
///
/// Sockets and netlink handles `f` creates belong to that namespace, and keep doing so when
/// handed to other threads. A panic in `f` is resumed in the caller.
pub(crate) fn run_in<T: Send>(ns: &str, path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let file = File::open(path).map_err(|e| Error::io("open netns file", path, e))?;
    std::thread::scope(|s| {
        s.spawn(move || -> Result<T> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Namespace {
                ns: ns.to_owned(),
                op: "setns(CLONE_NEWNET)",
                source,
            })?;
            drop(file);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Writes a sysctl of the calling thread's network namespace, e.g. `net/ipv4/ip_forward`.
///
/// `/proc/sys/net` resolves against the namespace of the thread that opens it, so call this
/// from inside [`run_in`].
pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value).map_err(|e| Error::io("write sysctl", path, e))
}
