//! The scenario runner: every file in `scenarios/cases/` becomes two tests, `sim::<name>` on
//! the simulator and `kernel::<name>` on the host kernel (network namespaces, a cgroup subtree
//! per node, and the real agent). The same file must pass on both.
//!
//! Without root the kernel tests are reported as ignored, with a line saying why; under
//! `CI=true` they fail instead, since CI must run this tier.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use scenarios::kernel_world::{self, KernelWorld};
use scenarios::sim_world::SimWorld;
use scenarios::{runner, Scenario, World};

fn main() {
    if kernel_world::is_child() {
        kernel_world::run_child();
        return;
    }
    let args = Arguments::from_args();
    let kernel = netsim::Tier::detect("scenario kernel backend");
    let mut trials = Vec::new();
    for path in scenario_files() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let sim_path = path.clone();
        trials.push(Trial::test(format!("sim::{name}"), move || {
            run_sim(&sim_path)
        }));
        trials.push(kernel.trial(format!("kernel::{name}"), move || run_kernel(&path)));
    }
    libtest_mimic::run(&args, trials).exit();
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
