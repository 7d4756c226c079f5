//! The running agent follows its manifest directory: `lb-agent` (not `--once`) inside a netsim
//! node programs a new file, an edited file and a removed file within moments, exits cleanly on
//! SIGTERM leaving the datapath in place, and `lbctl cleanup` then removes it.
//!
//! Without root the test is reported as ignored, with a line saying why; under `CI=true` it
//! fails instead, since CI must run this tier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lb::datapath::ServiceMaps;
use libtest_mimic::Failed;
use netsim::{NodeSpec, Topology};
use support::{TestBpffs, TestFn};

#[allow(
    dead_code,
    reason = "the guards this binary does not use serve the other tiers"
)]
mod support;

/// How long the agent may take to program a change (it settles 100 ms, then reconciles).
const PROGRAMMED_WITHIN: Duration = Duration::from_secs(15);

fn main() {
    let tests: [(&str, TestFn); 1] = [(
        "agent::follows_new_edited_and_removed_manifest_files",
        follows_the_manifest_directory,
    )];
    support::run_tier("agent watch", tests.into());
}

/// A scratch directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("lb-agent-watch-{}", std::process::id()));
        std::fs::create_dir_all(path.join("manifests"))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A ClusterIP service `name` at `ip:80` with these endpoint addresses, as one YAML file.
fn service_yaml(name: &str, ip: &str, endpoints: &[&str]) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|a| format!("  - {{addresses: [{a}], conditions: {{ready: true}}}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  type: ClusterIP\n  clusterIP: {ip}\n  ports: [{{port: 80, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: \"\", port: 80, protocol: TCP}}]\nendpoints:\n{endpoints}"
    )
}

/// Frontend → number of backends, as the pinned maps hold them now (empty before the agent
/// pinned anything).
fn programmed(pin_dir: &Path) -> BTreeMap<String, usize> {
    let Ok(maps) = ServiceMaps::open_pinned(pin_dir) else {
        return BTreeMap::new();
    };
    let Ok(contents) = maps.read() else {
        return BTreeMap::new();
    };
    contents
        .frontends()
        .into_iter()
        .map(|f| (f.frontend.to_string(), f.backends.len()))
        .collect()
}

/// Waits until the maps hold exactly `want`, or fails saying what they held.
fn wait_programmed(pin_dir: &Path, want: &[(&str, usize)], after: &str) -> Result<(), Failed> {
    let want: BTreeMap<String, usize> = want.iter().map(|(f, n)| (f.to_string(), *n)).collect();
    let deadline = Instant::now() + PROGRAMMED_WITHIN;
    loop {
        let have = programmed(pin_dir);
        if have == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{PROGRAMMED_WITHIN:?} after {after}, the maps hold {have:?}, expected {want:?}"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn follows_the_manifest_directory() -> Result<(), Failed> {
    let mut topology = Topology::new()?;
    let node = topology.add_node(NodeSpec::new("watch").eth0("192.168.77.11/24".parse()?))?;
    let bpffs = TestBpffs::new("agent-watch")?;
    let scratch = ScratchDir::new()?;
    let manifests = scratch.0.join("manifests");
    let state_dir = scratch.0.join("state");
    let pin_dir = bpffs.path.join(lb::agent::PIN_SUBDIR);
    std::fs::write(
        scratch.0.join("values.yaml"),
        "kubeProxyReplacement: true\n",
    )?;
    std::fs::write(
        manifests.join("node.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata: {name: watch}\n\
         status: {addresses: [{type: InternalIP, address: 192.168.77.11}]}\n",
    )?;
    let a = manifests.join("a.yaml");
    let b = manifests.join("b.yaml");
    std::fs::write(
        &a,
        service_yaml("a", "10.96.0.10", &["10.0.1.5", "10.0.1.6"]),
    )?;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
    cmd.arg("--values")
        .arg(scratch.0.join("values.yaml"))
        .arg("--set")
        .arg(format!("bpf.root={}", bpffs.path.display()))
        .arg("--set")
        .arg(format!("cgroup.hostRoot={}", node.cgroup_path().display()))
        .arg("--manifests")
        .arg(&manifests)
        .arg("--node")
        .arg("watch")
        .arg("--state-dir")
        .arg(&state_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut agent = node.spawn(cmd)?;
    wait_programmed(&pin_dir, &[("10.96.0.10:80", 2)], "the agent started")?;

    std::fs::write(&b, service_yaml("b", "10.96.0.11", &["10.0.1.7"]))?;
    wait_programmed(
        &pin_dir,
        &[("10.96.0.10:80", 2), ("10.96.0.11:80", 1)],
        "a new file",
    )?;

    std::fs::write(&a, service_yaml("a", "10.96.0.10", &["10.0.1.6"]))?;
    wait_programmed(
        &pin_dir,
        &[("10.96.0.10:80", 1), ("10.96.0.11:80", 1)],
        "an edit that removed a backend",
    )?;

    std::fs::remove_file(&b)?;
    wait_programmed(&pin_dir, &[("10.96.0.10:80", 1)], "a removed file")?;

    // A file that stops being YAML keeps what it delivered; the next file still arrives.
    std::fs::write(&a, "this: is: not: yaml: [\n")?;
    let c = manifests.join("c.yaml");
    std::fs::write(&c, service_yaml("c", "10.96.0.12", &["10.0.1.8"]))?;
    wait_programmed(
        &pin_dir,
        &[("10.96.0.10:80", 1), ("10.96.0.12:80", 1)],
        "a broken file beside a new one",
    )?;
    std::fs::remove_file(&c)?;
    wait_programmed(&pin_dir, &[("10.96.0.10:80", 1)], "a removed file")?;

    let tree = lbctl(&["cgroup", "tree", "--state-dir"], &state_dir)?;
    for hook in ["connect4", "connect6", "getpeername4", "sock_release"] {
        if !tree
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(hook))
        {
            return Err(format!("lbctl cgroup tree shows no {hook} hook:\n{tree}").into());
        }
    }

    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = agent.wait_timeout(Duration::from_secs(10))?;
    if !status.success() {
        return Err(format!("lb-agent exited with {status} on SIGTERM").into());
    }
    if programmed(&pin_dir) != BTreeMap::from([("10.96.0.10:80".to_owned(), 1)]) {
        return Err("the datapath did not stay in place after the agent exited".into());
    }

    lbctl(&["cleanup", "--state-dir"], &state_dir)?;
    if pin_dir.join(ebpf::maps::LB_SERVICES).exists() || !programmed(&pin_dir).is_empty() {
        return Err("lbctl cleanup left pinned maps behind".into());
    }
    let tree = lbctl(&["cgroup", "tree"], node.cgroup_path())?;
    if tree.lines().count() > 2 {
        return Err(format!("lbctl cleanup left programs attached:\n{tree}").into());
    }
    drop(topology);
    Ok(())
}

/// `lbctl ARGS... PATH`'s standard output; a failure is an error with its standard error.
fn lbctl(args: &[&str], path: &Path) -> Result<String, Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(args)
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "lbctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
