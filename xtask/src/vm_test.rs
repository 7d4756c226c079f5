//! `cargo xtask vm-test --kernel X [--filter NAME]`: the scenario suite's `kernel` backend in a
//! VM on a Debian kernel (or the matrix of `ci/kernels.toml` with `--kernel all`), results read
//! back per scenario, printed as a table with the closing line
//! `N passed, N failed, N unsupported`.
//!
//! Steps: build the scenario test binary and the binaries it runs (paths from cargo's JSON
//! messages); probe KVM once; then per kernel fetch it into the cache, prepare its modules,
//! pack the initramfs, boot, and read each scenario's result as the guest prints it (so a guest
//! killed at its deadline still reports what finished and names what was running). The launcher is the built-in one (own
//! initramfs and init; see `vm::initramfs`), named in every table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use vm::cache;
use vm::catalog::KernelChoice;
use vm::initramfs::{self, Payload};
use vm::launch::{self, Accel, Boot, Ending, Launcher};
use vm::matrix::{Matrix, MatrixKernel};
use vm::report::{self, KernelRun};

use crate::cmd::{cargo, workspace_root};
use crate::deps;

/// Options of `cargo xtask vm-test`.
#[derive(Debug, Args)]
pub struct Options {
    /// The kernel: 5.10, 6.1, 6.12, sid (or newest), host, all (the matrix in
    /// ci/kernels.toml), or a path to a kernel image (with --modules DIR).
    #[arg(long, default_value = "6.1")]
    pub kernel: String,
    /// The modules directory of a kernel given by path (the one holding kernel/).
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// Run only the scenarios whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Where kernels are cached (default: $LB_VM_CACHE, $XDG_CACHE_HOME/lb-vm, ~/.cache/lb-vm).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Ask the archive for newer kernel packages even when some are cached.
    #[arg(long)]
    pub refresh: bool,
    /// What boots the guest: builtin (qemu with the runner's own initramfs; any kernel),
    /// virtme-ng (the host's root over 9p; kernels with 9p: Debian's generic flavour, fetched
    /// for it, or a build of your own), or auto: virtme-ng for a kernel image given by path
    /// whose config has 9p, else what ci/kernels.toml names, else builtin.
    #[arg(long, value_enum, default_value_t = LauncherChoice::Auto)]
    pub launcher: LauncherChoice,
    /// The accelerator: auto probes KVM and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Seconds a guest may run before it is killed and reported with its console's tail.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
}

/// `--accel`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccelChoice {
    /// Probe KVM; TCG when it cannot run a guest.
    Auto,
    /// KVM, no probe.
    Kvm,
    /// TCG.
    Tcg,
}

/// `--launcher`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LauncherChoice {
    /// virtme-ng where the kernel can boot it and was given by path, else the matrix's choice,
    /// else the built-in one.
    Auto,
    /// The built-in initramfs launcher.
    Builtin,
    /// virtme-ng, installed from PyPI into a venv under the cache.
    VirtmeNg,
}

/// What the run knows about KVM.
#[derive(Clone, Copy, Debug)]
enum AccelState {
    /// Chosen by the user or already decided.
    Fixed(Accel),
    /// `/dev/kvm` opens; the first boot decides.
    TryKvm,
}

/// The suite's binaries on the host.
#[derive(Debug)]
struct Binaries {
    test: PathBuf,
    helpers: Vec<PathBuf>,
}

/// Runs `vm-test`; fails when any scenario failed or differed from `ci/kernels.toml`.
pub fn run(options: Options) -> Result<()> {
    let kernels = if options.kernel == "all" {
        matrix()?.kernel
    } else {
        let listed = matrix()
            .ok()
            .and_then(|m| m.kernel.into_iter().find(|k| k.kernel == options.kernel));
        vec![listed.unwrap_or(MatrixKernel {
            kernel: options.kernel.clone(),
            ci: false,
            unsupported: Vec::new(),
            unsupported_all: None,
            launcher: None,
        })]
    };
    let runs = run_kernels(&options, &kernels)?;
    finish(&runs, options.kernel == "all")
}

/// The VM tier of `cargo xtask ci`: the matrix's `ci = true` kernels with default options.
/// Returns the runs so CI can total them.
pub fn run_ci() -> Result<Vec<KernelRun>> {
    let kernels: Vec<MatrixKernel> = matrix()?.kernel.into_iter().filter(|k| k.ci).collect();
    let options = Options {
        kernel: "ci".into(),
        modules: None,
        filter: None,
        cache_dir: None,
        refresh: false,
        launcher: LauncherChoice::Auto,
        accel: AccelChoice::Auto,
        timeout: 900,
        memory: 2048,
        cpus: 2,
    };
    let runs = run_kernels(&options, &kernels)?;
    finish(&runs, true)?;
    Ok(runs)
}

fn matrix() -> Result<Matrix> {
    Matrix::load(&workspace_root().join("ci/kernels.toml"))
}

fn run_kernels(options: &Options, kernels: &[MatrixKernel]) -> Result<Vec<KernelRun>> {
    deps::ensure()?; // the suite's own build (clang for the eBPF programs, …)
    deps::ensure_packages(deps::VM_PACKAGES)?;
    let choices: Vec<KernelChoice> = kernels
        .iter()
        .map(|k| KernelChoice::parse(&k.kernel, options.modules.clone()))
        .collect::<Result<_>>()?;
    let cache_root = cache::cache_root(options.cache_dir.as_deref())?;
    let work = workspace_root().join("target/vm");
    std::fs::create_dir_all(&work)?;
    let binaries = build()?;
    let verdict = launch::KvmVerdict::new(&cache_root);
    let mut accel = match options.accel {
        AccelChoice::Kvm => AccelState::Fixed(Accel::Kvm),
        AccelChoice::Tcg => AccelState::Fixed(Accel::Tcg),
        AccelChoice::Auto if launch::kvm_openable() && verdict.hangs() => {
            eprintln!(
                "lb-vm: KVM could not boot a guest on this host before ({}): using TCG \
                 (-accel tcg); --accel kvm tries it again",
                verdict.path().display()
            );
            AccelState::Fixed(Accel::Tcg)
        }
        AccelChoice::Auto if launch::kvm_openable() => AccelState::TryKvm,
        AccelChoice::Auto => {
            eprintln!("lb-vm: /dev/kvm cannot be opened: using TCG (-accel tcg)");
            AccelState::Fixed(Accel::Tcg)
        }
    };
    let mut runs = Vec::new();
    for (choice, expect) in choices.iter().zip(kernels) {
        let started = Instant::now();
        let mut run = match boot_one(
            options,
            (&cache_root, &work),
            (choice, expect),
            &binaries,
            (&mut accel, &verdict),
        ) {
            Ok(run) => run,
            Err(e) => KernelRun {
                label: choice.label(),
                error: Some(format!("{e:#}")),
                ..KernelRun::default()
            },
        };
        run.wall_time = started.elapsed();
        if run.error.is_none() {
            run.mismatches = expect.mismatches(&run.results);
        }
        if kernels.len() > 1 {
            eprintln!("\n{}", report::kernel_table(&run));
        }
        runs.push(run);
    }
    Ok(runs)
}

fn finish(runs: &[KernelRun], matrix: bool) -> Result<()> {
    if matrix {
        let text = report::matrix_text(runs);
        println!("\n{text}");
        let target = workspace_root().join("target");
        let md = target.join("vm-matrix.md");
        let html = target.join("vm-matrix.html");
        std::fs::write(&md, report::matrix_markdown(runs))?;
        std::fs::write(&html, report::matrix_html(runs))?;
        eprintln!("lb-vm: wrote {} and {}", md.display(), html.display());
    } else if let Some(run) = runs.first() {
        println!("\n{}", report::kernel_table(run));
    }
    let closing = report::closing_line(runs);
    println!("{closing}");
    if runs.iter().any(KernelRun::failed) {
        bail!("vm-test: {closing}");
    }
    Ok(())
}

fn boot_one(
    options: &Options,
    (cache_root, work): (&Path, &Path),
    (choice, expect): (&KernelChoice, &MatrixKernel),
    binaries: &Binaries,
    (accel_state, verdict): (&mut AccelState, &launch::KvmVerdict),
) -> Result<KernelRun> {
    eprintln!("\n==> vm-test: kernel {choice}");
    let wanted = match (options.launcher, expect.launcher) {
        (LauncherChoice::Builtin, _) => Some(Launcher::Builtin),
        (LauncherChoice::VirtmeNg, _) => Some(Launcher::VirtmeNg),
        (LauncherChoice::Auto, listed) => listed,
    };
    // Debian's cloud flavour has no 9p: virtme-ng boots the generic one.
    let flavour = if wanted == Some(Launcher::VirtmeNg) {
        cache::Flavour::Generic
    } else {
        cache::Flavour::Smallest
    };
    let kernel = cache::kernel(cache_root, choice, options.refresh, flavour)?;
    let launcher = choose_launcher(wanted, choice, &kernel)?;
    let label = match (launcher, choice) {
        (Launcher::VirtmeNg, KernelChoice::Debian(_)) => format!("{}-generic", choice.label()),
        _ => choice.label(),
    };
    eprintln!("lb-vm: {label}: launcher {}", launcher.name());
    let dir = work.join(&label);
    std::fs::create_dir_all(&dir)?;
    let filter = options
        .filter
        .as_deref()
        .map(|f| f.trim_start_matches("kernel::"))
        .unwrap_or_default();
    let test_args = vec![
        format!("kernel::{filter}"),
        "--color".into(),
        "never".into(),
    ];
    let guest = match launcher {
        Launcher::Builtin => {
            pack_initramfs(&label, &dir, &kernel, binaries, test_args)?;
            Guest::Builtin
        }
        Launcher::VirtmeNg => {
            deps::ensure_packages(VIRTME_PACKAGES)?;
            let install = vm::virtme::Install::ensure(cache_root)?;
            let staging = dir.join("staging");
            std::fs::create_dir_all(&staging)?;
            let mut staged = Vec::new();
            for binary in std::iter::once(&binaries.test).chain(&binaries.helpers) {
                staged.push(initramfs::strip(binary, &staging)?);
            }
            let test_name = staged[0]
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let script = dir.join("virtme-guest.sh");
            std::fs::write(
                &script,
                vm::virtme::guest_script(vm::modules::WANTED, &staged, &test_name, &test_args),
            )?;
            Guest::VirtmeNg { install, script }
        }
    };
    let console_log = dir.join("console.log");
    let mut boot = Boot {
        kernel: kernel.image.clone(),
        initrd: dir.join("initramfs.cpio"),
        accel: Accel::Kvm,
        memory_mib: options.memory,
        cpus: options.cpus,
        deadline: Duration::from_secs(options.timeout),
        boot_deadline: None,
        console_log: console_log.clone(),
        echo_prefix: label.clone(),
    };
    let mut stream = vm::results::Stream::default();
    let mut echo = |at: Duration, line: &str| echo_progress(&label, &mut stream, at, line);
    let start = |boot: &Boot, echo: &mut dyn FnMut(Duration, &str)| match &guest {
        Guest::Builtin => launch::run(boot, echo),
        Guest::VirtmeNg { install, script } => {
            launch::watch(install.command(boot, script), boot, echo)
        }
    };
    let console = match *accel_state {
        AccelState::Fixed(accel) => {
            boot.accel = accel;
            start(&boot, &mut echo)?
        }
        AccelState::TryKvm => {
            boot.boot_deadline = Some(launch::KVM_BOOT_DEADLINE);
            let console = start(&boot, &mut echo)?;
            // KVM that cannot run a guest here either hangs (no init by the deadline) or makes
            // qemu exit before init (`failed to set MSR …`): both mean TCG.
            if console.ending == Ending::BootTimedOut || console.boot_time.is_none() {
                let why = if console.ending == Ending::BootTimedOut {
                    format!(
                        "did not reach init in {} s",
                        launch::KVM_BOOT_DEADLINE.as_secs()
                    )
                } else {
                    format!("ended before init ({})", console.tail(1).trim())
                };
                eprintln!(
                    "lb-vm: /dev/kvm exists but a KVM guest {why}: using TCG (-accel tcg) from \
                     here on"
                );
                verdict.record_hang();
                *accel_state = AccelState::Fixed(Accel::Tcg);
                boot.accel = Accel::Tcg;
                boot.boot_deadline = None;
                start(&boot, &mut echo)?
            } else {
                verdict.clear();
                *accel_state = AccelState::Fixed(Accel::Kvm);
                console
            }
        }
    };
    let accel = boot.accel;
    let mut run = KernelRun {
        label,
        source: kernel.source.clone(),
        launcher: match launcher {
            Launcher::Builtin => format!("built-in initramfs, qemu -accel {}", accel.name()),
            Launcher::VirtmeNg => format!(
                "virtme-ng {} (9p root), qemu -accel {}",
                vm::virtme::VERSION,
                accel.name()
            ),
        },
        boot_time: console.boot_time,
        test_time: console.test_time,
        ..KernelRun::default()
    };
    let expected = scenario_names(filter);
    let log = console_log.display().to_string();
    read_results(
        &mut run,
        &console,
        &stream,
        &expected,
        (options.timeout, &log),
    );
    run.features = stream.features().cloned();
    Ok(run)
}

/// How the guest is started.
enum Guest {
    /// qemu with the initramfs packed in the kernel's work directory.
    Builtin,
    /// virtme-ng running this script from the host's disk.
    VirtmeNg {
        install: vm::virtme::Install,
        script: PathBuf,
    },
}

/// Debian packages virtme-ng needs beside qemu and busybox.
const VIRTME_PACKAGES: &[(&str, &str)] = &[
    (
        "python3-venv",
        "virtme-ng is installed from PyPI into a venv under the cache",
    ),
    (
        "kmod",
        "virtme-ng runs depmod on Debian's kernel trees, and its guests load modules with modprobe",
    ),
];

/// The launcher for `kernel`: the one `wanted` (virtme-ng refused, naming why, when it cannot
/// boot the kernel), else virtme-ng for a kernel given by path that it can boot, else the
/// built-in one.
fn choose_launcher(
    wanted: Option<Launcher>,
    choice: &KernelChoice,
    kernel: &cache::Kernel,
) -> Result<Launcher> {
    Ok(match wanted {
        Some(Launcher::VirtmeNg) => {
            if let Some(why) = virtme_cannot_boot(kernel) {
                bail!(
                    "--launcher virtme-ng cannot boot {}: {why}; --launcher builtin boots it",
                    kernel.source
                );
            }
            Launcher::VirtmeNg
        }
        Some(Launcher::Builtin) => Launcher::Builtin,
        None if matches!(choice, KernelChoice::Path { .. }) => match virtme_cannot_boot(kernel) {
            None => Launcher::VirtmeNg,
            Some(why) => {
                eprintln!(
                    "lb-vm: virtme-ng cannot boot {} ({why}): using the built-in launcher",
                    kernel.source
                );
                Launcher::Builtin
            }
        },
        None => Launcher::Builtin,
    })
}

/// Why virtme-ng cannot boot `kernel`, if it cannot: its config lacks 9p (or has no config), or
/// its modules are where virtme-ng does not look (it takes them from `lib/modules` in a
/// directory above the image, or from the build tree the image is in).
fn virtme_cannot_boot(kernel: &cache::Kernel) -> Option<String> {
    if let Some(modules) = &kernel.modules {
        let beside = kernel
            .image
            .ancestors()
            .skip(1)
            .any(|a| modules.starts_with(a.join("lib/modules")));
        let build_tree = kernel
            .image
            .ancestors()
            .skip(1)
            .any(|a| a.join(".config").is_file() && a.join("modules.order").is_file());
        if !beside && !build_tree {
            return Some(format!(
                "virtme-ng finds modules only in lib/modules/RELEASE under a directory above the \
                 image or in its build tree, and {} is neither",
                modules.display()
            ));
        }
    }
    let Some(config) = vm::virtme::find_config(&kernel.image, kernel.modules.as_deref()) else {
        return Some(
            "no kernel config found beside it (boot/config-RELEASE, a build tree's .config, or \
             the modules directory's config) to check for 9p"
                .to_owned(),
        );
    };
    let text = std::fs::read_to_string(&config).ok()?;
    let missing = vm::virtme::missing_config(&text);
    (!missing.is_empty()).then(|| {
        format!(
            "its config ({}) has neither built in nor as a module {}",
            config.display(),
            missing.join(", ")
        )
    })
}

/// Packs the built-in launcher's initramfs into `dir`.
fn pack_initramfs(
    label: &str,
    dir: &Path,
    kernel: &cache::Kernel,
    binaries: &Binaries,
    test_args: Vec<String>,
) -> Result<()> {
    let (modules, absent) = match &kernel.modules {
        Some(m) => vm::modules::prepare(m, &dir.join("modules"))?,
        None => (Vec::new(), Vec::new()),
    };
    if !absent.is_empty() {
        eprintln!(
            "lb-vm: {label}: no module or built-in for {} (scenarios needing them will fail)",
            absent.join(", ")
        );
    }
    let payload = Payload {
        test_binary: binaries.test.clone(),
        test_args,
        helpers: binaries.helpers.clone(),
        data_dirs: vec![workspace_root().join("scenarios/cases")],
        modules,
    };
    let initrd = dir.join("initramfs.cpio");
    let packed = Instant::now();
    initramfs::build(&payload, &dir.join("staging"), &initrd)?;
    eprintln!(
        "lb-vm: {label}: initramfs {} MiB packed in {:.1} s",
        std::fs::metadata(&initrd)?.len() >> 20,
        packed.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Echoes a scenario's end as the guest reports it, and feeds the stream.
fn echo_progress(label: &str, stream: &mut vm::results::Stream, at: Duration, line: &str) {
    use vm::results::Event;
    match stream.feed(at, line) {
        Some(Event::Finished(r, took)) => {
            let took = took
                .map(|d| format!(" ({:.1} s)", d.as_secs_f64()))
                .unwrap_or_default();
            let detail = r.detail.lines().next().unwrap_or_default();
            let sep = if detail.is_empty() { "" } else { ": " };
            eprintln!("{label}: {} {}{took}{sep}{detail}", r.scenario, r.outcome);
        }
        Some(Event::Garbled(name, text)) => eprintln!(
            "{label}: a result line of {} was cut on the console: {text}",
            name.as_deref().unwrap_or("a scenario")
        ),
        Some(Event::Features(f)) => {
            let lacks: Vec<&str> = f.missing().map(|a| a.name.as_str()).collect();
            let degraded: Vec<&str> = f.degraded.iter().map(|d| d.feature.as_str()).collect();
            eprintln!(
                "{label}: kernel lacks: {}; netns cookie: {}; degraded with {}: {}",
                if lacks.is_empty() {
                    "nothing".to_owned()
                } else {
                    lacks.join(", ")
                },
                f.netns_cookie_text(),
                f.options,
                match &f.refused {
                    Some(why) => format!("refused ({why})"),
                    None if degraded.is_empty() => "nothing".to_owned(),
                    None => degraded.join(", "),
                }
            );
        }
        Some(Event::Started(_)) | None => {}
    }
}

/// The scenario files' names that `filter` selects, sorted: what the guest should report.
fn scenario_names(filter: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace_root().join("scenarios/cases"))
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
                // The guest's libtest filter is `kernel::FILTER`, a substring of the test name.
                .filter(|n| format!("kernel::{n}").contains(&format!("kernel::{filter}")))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Fills `run`'s results and error from what the guest printed: the whole report when the
/// guest finished, else what the stream showed (what finished, and what was running when the
/// guest was killed or panicked, reported failed).
fn read_results(
    run: &mut KernelRun,
    console: &launch::Console,
    stream: &vm::results::Stream,
    expected: &[String],
    (timeout, log): (u64, &str),
) {
    let problem = match console.ending {
        Ending::TimedOut | Ending::BootTimedOut => {
            Some(format!("the guest was killed after {timeout} s"))
        }
        Ending::Panicked => Some("the guest kernel panicked".to_owned()),
        Ending::PoweredOff => None,
    };
    let suite_exit = vm::results::suite_exit(&console.lines);
    if let Some(problem) = problem {
        run.results = stream.finished().to_vec();
        let running: Vec<String> = stream
            .running()
            .iter()
            .map(|(name, at)| {
                format!(
                    "{name} (started {:.0} s after the launch)",
                    at.as_secs_f64()
                )
            })
            .collect();
        for (name, _) in stream.running() {
            run.results.push(vm::results::ScenarioResult {
                scenario: name.clone(),
                outcome: vm::results::Outcome::Failed,
                detail: format!("still running when {problem}"),
            });
        }
        let seen: std::collections::BTreeSet<&str> =
            run.results.iter().map(|r| r.scenario.as_str()).collect();
        let not_reached: Vec<&str> = expected
            .iter()
            .map(String::as_str)
            .filter(|n| !seen.contains(n))
            .collect();
        run.results.sort_by(|a, b| a.scenario.cmp(&b.scenario));
        run.error = Some(format!(
            "{problem} while running {}; {} scenario(s) had finished (above); not reached: {}; \
             console tail ({log}):\n{}",
            if running.is_empty() {
                "no scenario".to_owned()
            } else {
                running.join(", ")
            },
            stream.finished().len(),
            if not_reached.is_empty() {
                "none".to_owned()
            } else {
                not_reached.join(", ")
            },
            console.tail(30)
        ));
        return;
    }
    match vm::results::parse(&console.lines) {
        // The suite's own verdict counts too: a scenario that panicked (a snapshot mismatch
        // does) writes no report line, but the test binary exits non-zero.
        Ok(results)
            if suite_exit != Some(0)
                && !results.is_empty()
                && results
                    .iter()
                    .all(|r| r.outcome != vm::results::Outcome::Failed) =>
        {
            run.results = results;
            run.error = Some(format!(
                "the scenario suite exited with {suite_exit:?} although every reported scenario \
                 passed or was unsupported; console ({log}):\n{}",
                console.tail(30)
            ));
        }
        Ok(results) if !results.is_empty() => run.results = results,
        Ok(_) => {
            run.error = Some(format!(
                "the guest reported no scenario (suite exit {suite_exit:?}); console tail \
                 ({log}):\n{}",
                console.tail(30)
            ))
        }
        Err(e) => {
            // The whole report is missing or cut: the streamed records are what is known.
            run.results = stream.finished().to_vec();
            run.results.sort_by(|a, b| a.scenario.cmp(&b.scenario));
            run.error = Some(format!(
                "{e:#}; console tail ({log}):\n{}",
                console.tail(30)
            ));
        }
    }
}

/// Builds the scenario test binary and the binaries it runs; their paths come from cargo's
/// JSON messages.
fn build() -> Result<Binaries> {
    let mut helpers_cmd = cargo();
    helpers_cmd.args([
        "build",
        "--message-format=json-render-diagnostics",
        "-p",
        "lb",
        "--bin",
        "lb-agent",
        "--bin",
        "lbctl",
        "-p",
        "netsim",
        "--bins",
    ]);
    let helpers = executables(helpers_cmd)?;
    let mut test_cmd = cargo();
    test_cmd.args([
        "test",
        "--message-format=json-render-diagnostics",
        "-p",
        "scenarios",
        "--test",
        "scenarios",
        "--no-run",
    ]);
    let test = executables(test_cmd)?
        .into_iter()
        .next()
        .context("cargo test --no-run built no scenarios test binary")?;
    Ok(Binaries { test, helpers })
}

fn executables(mut cmd: Command) -> Result<Vec<PathBuf>> {
    eprintln!("==> vm-test: building {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("cargo failed: {}", out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" {
            if let Some(exe) = msg["executable"].as_str() {
                found.push(PathBuf::from(exe));
            }
        }
    }
    Ok(found)
}
