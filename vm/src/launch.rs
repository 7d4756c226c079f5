//! Booting a guest under qemu and reading its serial console.
//!
//! The accelerator is chosen by the first boot: where `/dev/kvm` opens, the first guest boots
//! with KVM and must reach init within [`KVM_BOOT_DEADLINE`]. Where `/dev/kvm` exists but
//! cannot run a guest (as on a nested set-up here: a real-mode boot sector runs, the kernel
//! hangs), that boot ends [`Ending::BootTimedOut`] and the caller boots again with TCG, saying
//! so once.
//!
//! The guest's console (`-serial stdio`) is read line by line with a time stamp, echoed where
//! it says something a user wants to see live, and kept; a guest that does not power off by its
//! deadline is killed and reported with the tail of its console.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::initramfs::marker;

/// How long a KVM guest may take to reach init before KVM is taken to be unusable here. A
/// working KVM reaches it in a few seconds, and even TCG does here (about 4 s).
pub const KVM_BOOT_DEADLINE: Duration = Duration::from_secs(20);

/// The qemu binary (Debian package `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";

/// The accelerator qemu runs the guest with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's binary translator: slower, works everywhere.
    Tcg,
}

impl Accel {
    /// qemu's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Which program boots the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Launcher {
    /// qemu with the runner's own initramfs ([`crate::initramfs`]): boots any kernel with the
    /// few modules the scenarios need.
    Builtin,
    /// virtme-ng ([`crate::virtme`]): the host's root over 9p; needs a kernel with 9p.
    VirtmeNg,
}

impl Launcher {
    /// Its name on the command line and in `ci/kernels.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Builtin => "builtin",
            Launcher::VirtmeNg => "virtme-ng",
        }
    }
}

/// Whether `/dev/kvm` can be opened: the precondition for trying KVM at all.
pub fn kvm_openable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// One boot.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// When the guest is killed.
    pub deadline: Duration,
    /// When the guest is killed if init has not said [`marker::BOOTED`] by then.
    pub boot_deadline: Option<Duration>,
    /// Where the whole console is written.
    pub console_log: PathBuf,
    /// A prefix for the lines echoed live (the kernel's label).
    pub echo_prefix: String,
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The guest powered off by itself.
    PoweredOff,
    /// The kernel panicked (the guest reboots on panic, which ends qemu).
    Panicked,
    /// Killed at the deadline.
    TimedOut,
    /// Killed at the boot deadline, before init was ready.
    BootTimedOut,
}

/// What a boot showed.
#[derive(Debug, Clone)]
pub struct Console {
    /// Every console line.
    pub lines: Vec<String>,
    /// From qemu's start to init's [`marker::BOOTED`].
    pub boot_time: Option<Duration>,
    /// From [`marker::BOOTED`] to [`marker::TESTS_EXIT`]: the suite's run time.
    pub test_time: Option<Duration>,
    /// The whole boot, start to end.
    pub total: Duration,
    /// How it ended.
    pub ending: Ending,
}

impl Console {
    /// The last `n` lines, for a report of a guest that failed.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..].join("\n")
    }
}

/// Boots with the built-in launcher (qemu with the initramfs) and waits for the guest to end,
/// at most until the deadline. Every console line goes to `on_line` as it arrives, with the time
/// since qemu started.
pub fn run(boot: &Boot, on_line: &mut dyn FnMut(Duration, &str)) -> Result<Console> {
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", boot.accel.name()])
        .args([
            "-cpu",
            if boot.accel == Accel::Kvm {
                "host"
            } else {
                "max"
            },
        ])
        .args(["-m", &boot.memory_mib.to_string()])
        .args(["-smp", &boot.cpus.to_string()])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&boot.kernel)
        .arg("-initrd")
        .arg(&boot.initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init",
        ]);
    watch(cmd, boot, on_line)
        .with_context(|| format!("cannot start {QEMU} (Debian package qemu-system-x86)"))
}

/// Runs `cmd` (a launcher whose stdout and stderr carry the guest's console) until it exits or
/// `boot`'s deadline passes: the console is logged, handed to `on_line` line by line, and
/// watched for init's markers and a kernel panic.
pub fn watch(
    mut cmd: Command,
    boot: &Boot,
    on_line: &mut dyn FnMut(Duration, &str),
) -> Result<Console> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A process group of its own, so a guest killed at its deadline takes the launcher's
    // children (virtme-ng runs qemu as one) with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // The launcher dies with the runner: an interrupted run leaves no guest behind.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || forward(stdout, &tx));
    std::thread::spawn(move || forward(stderr, &tx2));
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(&boot.console_log)
            .with_context(|| format!("creating {}", boot.console_log.display()))?,
    );
    let mut lines = Vec::new();
    let mut booted_at = None;
    let mut tests_done_at = None;
    let mut ending = None;
    loop {
        let deadline = match (booted_at, boot.boot_deadline) {
            (None, Some(b)) => b.min(boot.deadline),
            _ => boot.deadline,
        };
        let left = deadline.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
                let _ = log.flush();
                // virtme-ng's init prints on the same console: the marker may not start the line.
                if line.contains(marker::BOOTED) && booted_at.is_none() {
                    booted_at = Some(at);
                    eprintln!(
                        "{}: booted in {:.1} s",
                        boot.echo_prefix,
                        (at - started).as_secs_f64()
                    );
                } else if line.starts_with(marker::TESTS_EXIT) {
                    tests_done_at = Some(at);
                } else if line.starts_with("test result:") || line.starts_with("lb-vm:") {
                    eprintln!("{}: {line}", boot.echo_prefix);
                }
                if line.contains("Kernel panic") && ending.is_none() {
                    ending = Some(Ending::Panicked);
                }
                on_line(at - started, &line);
                lines.push(line);
            }
            // Both pipes closed: qemu has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill(&mut child);
                ending = Some(if booted_at.is_none() && deadline < boot.deadline {
                    Ending::BootTimedOut
                } else {
                    Ending::TimedOut
                });
                break;
            }
        }
    }
    let _ = child.wait();
    let total = started.elapsed();
    Ok(Console {
        lines,
        boot_time: booted_at.map(|b| b - started),
        test_time: booted_at.zip(tests_done_at).map(|(b, e)| e - b),
        total,
        ending: ending.unwrap_or(Ending::PoweredOff),
    })
}

fn forward(from: impl std::io::Read, to: &mpsc::Sender<(Instant, String)>) {
    for line in BufReader::new(from).split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_owned();
        if to.send((Instant::now(), text)).is_err() {
            break;
        }
    }
}

/// Kills the launcher's process group (the launcher and what it started, such as qemu).
fn kill(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
}

/// A record, in the cache, that KVM could not boot a guest on this host: later runs use TCG at
/// once instead of spending [`KVM_BOOT_DEADLINE`] finding out again. It is keyed by the host's
/// kernel release and qemu's version, so a changed host tries KVM again.
#[derive(Debug, Clone)]
pub struct KvmVerdict {
    path: PathBuf,
}

impl KvmVerdict {
    /// The record under the cache directory `cache_root`.
    pub fn new(cache_root: &std::path::Path) -> Self {
        KvmVerdict {
            path: cache_root.join("kvm-hangs"),
        }
    }

    /// Where the record is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn host_key() -> String {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let qemu = Command::new(QEMU)
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default();
        format!("{} / {qemu}\n", release.trim())
    }

    /// Whether KVM was found to hang on this host (same kernel, same qemu).
    pub fn hangs(&self) -> bool {
        std::fs::read_to_string(&self.path).is_ok_and(|k| k == Self::host_key())
    }

    /// Records that KVM hung.
    pub fn record_hang(&self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&self.path, Self::host_key());
    }

    /// Forgets the record (KVM worked).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
