//! Finding and, when missing, mounting bpffs and cgroup v2, as the documents describe: the
//! agent pins under `bpf.root` and attaches its socket hooks to the cgroup v2 root at
//! `cgroup.hostRoot`, mounting either when it is not there.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC};

use super::HostError;

/// The first mount point of filesystem type `fstype` in this mount namespace.
pub fn find_mount(fstype: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER"
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        (right.split(' ').next()? == fstype).then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn fs_type(path: &Path) -> Option<FsType> {
    statfs(path).ok().map(|s| s.filesystem_type())
}

/// Makes sure `root` (`bpf.root`) is on a bpffs, mounting one there when it is not and
/// `auto_mount` (`bpf.autoMount.enabled`) allows.
pub fn ensure_bpffs(root: &Path, auto_mount: bool) -> Result<(), HostError> {
    if fs_type(root) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    if !auto_mount {
        return Err(HostError::NotMounted {
            fstype: "bpf",
            path: root.to_owned(),
            option: "bpf.autoMount.enabled",
        });
    }
    mount_fs(root, "bpf", "bpf.root")
}

/// The cgroup v2 directory to attach the socket hooks to: `host_root` (`cgroup.hostRoot`) when
/// it is on a cgroup v2 filesystem (a mount, or a subtree of one when several agents share a
/// machine); otherwise cgroup v2 is mounted there when `auto_mount` allows.
pub fn ensure_cgroup2(host_root: &Path, auto_mount: bool) -> Result<PathBuf, HostError> {
    if fs_type(host_root) == Some(CGROUP2_SUPER_MAGIC) {
        return Ok(host_root.to_owned());
    }
    if !auto_mount {
        return Err(HostError::NotMounted {
            fstype: "cgroup2",
            path: host_root.to_owned(),
            option: "cgroup.autoMount.enabled",
        });
    }
    mount_fs(host_root, "cgroup2", "cgroup.hostRoot")?;
    Ok(host_root.to_owned())
}

fn mount_fs(path: &Path, fstype: &'static str, option: &'static str) -> Result<(), HostError> {
    let failed = |source| HostError::Mount {
        fstype,
        path: path.to_owned(),
        option,
        source,
    };
    std::fs::create_dir_all(path).map_err(failed)?;
    mount(
        Some(fstype),
        path,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| failed(errno.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_found_as_a_proc_mount() {
        assert_eq!(find_mount("proc"), Some(PathBuf::from("/proc")));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/run/a\\040b"), "/run/a b");
    }

    #[test]
    fn a_directory_without_bpffs_is_refused_without_auto_mount_and_names_the_option() {
        let dir = std::env::temp_dir();
        let err = ensure_bpffs(&dir, false).unwrap_err().to_string();
        assert!(err.contains("bpf.autoMount.enabled"), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }

    #[test]
    fn a_plain_directory_is_refused_without_auto_mount_and_names_the_option() {
        let dir = std::env::temp_dir();
        let err = ensure_cgroup2(&dir, false).unwrap_err().to_string();
        assert!(err.contains("cgroup.autoMount.enabled"), "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }
}
