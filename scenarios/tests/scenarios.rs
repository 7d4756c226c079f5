//! The scenario runner: every file in `scenarios/cases/` becomes two tests, `sim::<name>` on
//! the simulator and `kernel::<name>` on the host kernel (network namespaces, a cgroup subtree
//! per node, and the real agent). The same file must pass on both.
//!
//! On the kernel backend each scenario first asks the agent's feature probes whether this
//! kernel has what it needs (`scenarios::features`). When it does not, the test becomes
//! `[unsupported] kernel::<name>`, and it is recorded as `unsupported` in the report file
//! (`LB_SCENARIO_REPORT`, read by the VM runner). If the missing feature is one the agent itself
//! needs, that test still sets the scenario up and passes only if the agent refuses to start
//! with a message naming the feature (so "unsupported" is the agent's own verdict, not a
//! skip); a feature only the scenario declares makes it ignored.
//!
//! Without root the kernel tests are reported as ignored, with a line saying why; under
//! `CI=true` they fail instead, since CI must run this tier.

use std::path::{Path, PathBuf};

use lb::host::features::Missing;
use libtest_mimic::{Arguments, Failed, Trial};
use scenarios::features::Probed;
use scenarios::kernel_world::{self, KernelWorld};
use scenarios::report::{self, Outcome, Record};
use scenarios::sim_world::SimWorld;
use scenarios::{runner, Scenario, World};

fn main() {
    if kernel_world::is_child() {
        kernel_world::run_child();
        return;
    }
    let args = Arguments::from_args();
    let kernel = netsim::Tier::detect("scenario kernel backend");
    let probed = if kernel.available() {
        Probed::run()
    } else {
        Probed::default()
    };
    if kernel.available() && !args.list {
        // For the VM matrix: every probe's answer and what the agent degrades here.
        report::kernel_features(&scenarios::features::kernel_record());
    }
    let lacking = probed.missing();
    if !lacking.is_empty() && !args.list {
        let names: Vec<String> = lacking.iter().map(ToString::to_string).collect();
        eprintln!("this kernel lacks: {}", names.join(", "));
    }
    let wants_kernel = |name: &str| {
        args.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    };
    let mut trials = Vec::new();
    for path in scenario_files() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let sim_path = path.clone();
        trials.push(Trial::test(format!("sim::{name}"), move || {
            run_sim(&sim_path)
        }));
        let trial_name = format!("kernel::{name}");
        let missing = Scenario::load(&path)
            .ok()
            .and_then(|s| probed.first_missing(&s));
        if let Some(missing) = missing {
            if !lb::host::features::required_by_agent().contains(&missing.feature) {
                if wants_kernel(&trial_name) && !args.list {
                    eprintln!("{trial_name}: unsupported on this kernel: {missing}");
                    report::write(&Record {
                        scenario: &name,
                        outcome: Outcome::Unsupported,
                        detail: &missing.to_string(),
                    });
                }
                trials.push(Trial::test(trial_name, || Ok(())).with_ignored_flag(true));
                continue;
            }
            trials.push(
                kernel
                    .trial(trial_name, move || {
                        report::started(&name);
                        let result = agent_refuses(&path, &missing).map(|refusal| {
                            eprintln!("kernel::{name}: {refusal}");
                        });
                        let unsupported =
                            format!("{missing}; the agent refused to start, naming it");
                        record(&name, &result, (Outcome::Unsupported, &unsupported));
                        result
                    })
                    .with_kind("unsupported"),
            );
            continue;
        }
        trials.push(kernel.trial(trial_name, move || {
            report::started(&name);
            // A panic (insta's snapshot mismatch is one) fails the scenario like an error, so
            // the report names it rather than leaving it out.
            let result = std::panic::catch_unwind(|| run_kernel(&path))
                .unwrap_or_else(|panic| Err(panic_message(panic.as_ref()).into()));
            record(&name, &result, (Outcome::Passed, ""));
            result
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}

/// What a caught panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    format!("panicked: {text}")
}

/// Writes a kernel scenario's line of the run's report: `on_success` when it passed (the
/// outcome and its detail), failed with the reason otherwise.
fn record(name: &str, result: &Result<(), Failed>, on_success: (Outcome, &str)) {
    let failure;
    let (outcome, detail) = match result {
        Ok(()) => on_success,
        Err(e) => {
            failure = e.message().map(str::to_owned).unwrap_or_default();
            (Outcome::Failed, failure.as_str())
        }
    };
    report::write(&Record {
        scenario: name,
        outcome,
        detail,
    });
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cases")
}

fn scenario_files() -> Vec<PathBuf> {
    let dir = cases_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn run_sim(path: &Path) -> Result<(), Failed> {
    let scenario = Scenario::load(path).map_err(|e| format!("{e:#}"))?;
    let mut world = SimWorld::new(&scenario).map_err(|e| format!("setup: {e:#}"))?;
    runner::run(&scenario, &mut world).map_err(|e| format!("{e:#}"))?;
    snapshot_views(&scenario, &mut world)
}

/// Sets the scenario up on a kernel that lacks `missing`: the agent must refuse to start with
/// a message naming the feature. Returns the refusal's first line.
fn agent_refuses(path: &Path, missing: &Missing) -> Result<String, Failed> {
    let scenario = Scenario::load(path).map_err(|e| format!("{e:#}"))?;
    match KernelWorld::new(&scenario) {
        Ok(_) => Err(format!(
            "the probes say this kernel lacks {missing}, yet every agent started"
        )
        .into()),
        Err(e) => {
            let text = format!("{e:#}");
            let feature = missing.feature.name();
            match text.lines().find(|l| l.contains(feature)) {
                Some(line) => {
                    // From the agent's own sentence on, without the runner's prefixes.
                    let start = [
                        "kubeProxyReplacement=true needs",
                        "the socket datapath needs",
                    ]
                    .iter()
                    .find_map(|p| line.find(p))
                    .unwrap_or(0);
                    Ok(format!("the agent refused: {}", line[start..].trim()))
                }
                None => Err(format!(
                    "the setup failed without naming the missing feature {feature}: {text}"
                )
                .into()),
            }
        }
    }
}

fn run_kernel(path: &Path) -> Result<(), Failed> {
    let scenario = Scenario::load(path).map_err(|e| format!("{e:#}"))?;
    let mut world = KernelWorld::new(&scenario).map_err(|e| format!("setup: {e:#}"))?;
    runner::run(&scenario, &mut world).map_err(|e| format!("{e:#}"))?;
    snapshot_views(&scenario, &mut world)?;
    world.finish().map_err(|e| format!("{e:#}").into())
}

/// `lbctl service list` and `status --verbose` of every node after the last step, as insta
/// snapshots beside the scenario files. Both backends compare against the same snapshot, so
/// the simulator's maps and the kernel's must read back the same.
fn snapshot_views(scenario: &Scenario, world: &mut dyn World) -> Result<(), Failed> {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(cases_dir().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    // Which drop counters counted is the same on every backend; how many packets is not (a
    // kernel client retransmits a SYN the simulator's client sends once).
    settings.add_filter(
        r"(?m)^(  (?:Packet Drops:)?\s+)\d+ ([a-z_]+): ",
        "$1[n] $2: ",
    );
    for node in &scenario.topology.nodes {
        let views = world
            .views(&node.name)
            .map_err(|e| format!("lbctl views of {}: {e:#}", node.name))?;
        settings.set_description(format!(
            "lbctl on {} after the last step of {}",
            node.name, scenario.name
        ));
        settings.bind(|| {
            let name = format!("{}@{}", scenario.name, node.name);
            insta::assert_snapshot!(format!("{name}.service-list"), views.service_list);
            insta::assert_snapshot!(format!("{name}.status"), views.status);
        });
    }
    Ok(())
}
