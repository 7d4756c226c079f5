//! What the privileged test binaries (`privileged.rs`, `differential.rs`) share: the tier's
//! runner, which reports the tests as ignored (or, under `CI=true`, failed) with a loud line
//! when this machine cannot run them, and the guards that give each test a cgroup and a bpffs
//! of its own and run its traffic in a child process inside that cgroup and inside a fresh
//! network namespace that has only loopback, so untranslated traffic can never leave the
//! machine.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed};

#[allow(dead_code, reason = "only the tiers that run lb-agent itself use it")]
pub mod agent;

/// A privileged test.
pub type TestFn = fn() -> Result<(), Failed>;

/// Runs `tests` as the privileged tier `tier` (named in the line printed when it cannot run)
/// and exits with libtest's status.
pub fn run_tier(tier: &str, tests: Vec<(&'static str, TestFn)>) -> ! {
    let args = Arguments::from_args();
    let tier = netsim::Tier::detect(&format!("{tier} tier"));
    let trials = tests
        .into_iter()
        .map(|(name, test)| tier.trial(name, test))
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// A cgroup made for one test; removed on drop once its processes are gone.
pub struct TestCgroup {
    /// Its directory under the cgroup2 mount.
    pub path: PathBuf,
}

impl TestCgroup {
    /// A new cgroup named for this process and `test`.
    pub fn new(test: &str) -> Result<Self, Failed> {
        let root = netsim::cgroup2_mount().ok_or("no cgroup v2 mount")?;
        let path = root.join(format!("lb-test-{}-{test}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TestCgroup { path })
    }

    #[allow(dead_code, reason = "differential.rs uses it, privileged.rs does not")]
    /// Its cgroup id, as `bpf_get_current_cgroup_id` gives it: the directory's inode number.
    pub fn id(&self) -> Result<u64, Failed> {
        Ok(std::fs::metadata(&self.path)
            .map_err(|e| format!("cannot stat {}: {e}", self.path.display()))?
            .ino())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // A process that just exited may still be counted for a moment: retry until a deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = std::fs::remove_dir(&self.path) {
            if Instant::now() > deadline {
                eprintln!(
                    "warning: cannot remove test cgroup {}: {e}",
                    self.path.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A bpffs instance mounted for one test, where its maps are pinned; unmounted on drop.
pub struct TestBpffs {
    /// The mount point.
    pub path: PathBuf,
}

impl TestBpffs {
    /// A new bpffs mounted under the temporary directory, named for this process and `test`.
    pub fn new(test: &str) -> Result<Self, Failed> {
        let path =
            std::env::temp_dir().join(format!("lb-test-bpffs-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        nix::mount::mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("cannot mount bpffs at {}: {e}", path.display()))?;
        Ok(TestBpffs { path })
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount(&self.path) {
            eprintln!("warning: cannot unmount {}: {e}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// This test binary as a child playing `role` (passed in the environment variable `role_env`),
/// started inside `cgroup` and in a new network namespace. The caller sets its stdio.
pub fn sandboxed_child(role_env: &str, role: &str, cgroup: &Path) -> Result<Command, Failed> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .map_err(|e| format!("cannot open cgroup.procs: {e}"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(role_env, role);
    // SAFETY: between fork and exec only async-signal-safe calls are made (write, unshare),
    // with no allocation: the fd was opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::write(procs.as_fd(), b"0")?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }
    Ok(cmd)
}

/// In the child: brings loopback up (a new namespace starts with it down), then runs `ip`
/// with each of `extra` (e.g. addresses to add).
pub fn loopback_up(extra: &[&[&str]]) -> Result<(), Box<dyn std::error::Error>> {
    let up: &[&str] = &["link", "set", "lo", "up"];
    for args in std::iter::once(up).chain(extra.iter().copied()) {
        let status = Command::new("ip").args(args).status()?;
        if !status.success() {
            return Err(format!("ip {} failed ({status})", args.join(" ")).into());
        }
    }
    Ok(())
}

/// A differential test's seed: the environment variable `env` when set (to replay a run), else
/// the clock. Printed before the run starts, as `<test>: <env>=<seed>`, so even a run that
/// hangs or is killed can be replayed.
#[allow(dead_code)] // not every test binary that includes this module has a seed
pub fn seed(test: &str, env: &str) -> u64 {
    let seed = std::env::var(env)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: {env}={seed}");
    seed
}

/// A scratch directory of a test, removed with everything in it on drop (after a failure too).
#[allow(
    dead_code,
    reason = "not every test binary that includes support writes scratch files"
)]
pub struct ScratchDir(pub PathBuf);

#[allow(
    dead_code,
    reason = "not every test binary that includes support writes scratch files"
)]
impl ScratchDir {
    /// `<tmp>/lb-<tag>-<pid>`, created with its parents.
    pub fn named(tag: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("lb-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
