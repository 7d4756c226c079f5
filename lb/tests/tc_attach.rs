//! The NodePort programs on a node's devices: `lb-agent --once` inside a netsim node with two
//! devices (`eth0`, `eth1`) attaches `lb_nodeport_ingress` and `lb_nodeport_egress` on each,
//! as tcx links (the host kernel has tcx) and, with tcx treated as missing, as netlink
//! `cls_bpf` filters; a second agent replaces them instead of stacking a second copy; `lbctl
//! cleanup` (run in the node's namespace) leaves the devices bare; a `devices` entry naming a
//! device the node lacks is refused naming it.
//!
//! Without root the tests are reported as ignored, with a line saying why; under `CI=true` they
//! fail instead, since CI must run this tier.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use aya::programs::{tc::SchedClassifier, TcAttachType};
use libtest_mimic::Failed;
use netsim::{NodeSpec, Topology};
use support::{TestBpffs, TestFn};

#[allow(
    dead_code,
    reason = "the guards this binary does not use serve the other tiers"
)]
mod support;

const DEVICES: [&str; 2] = ["eth0", "eth1"];
/// How long one `lb-agent --once` or `lbctl` may take.
const RUN_WITHIN: Duration = Duration::from_secs(60);

fn main() {
    let tests: [(&str, TestFn); 3] = [
        (
            "tc::tcx_links_on_every_device_are_replaced_on_restart_and_removed_by_cleanup",
            tcx_links,
        ),
        (
            "tc::netlink_filters_on_every_device_are_replaced_in_place_and_removed_by_cleanup",
            netlink_filters,
        ),
        (
            "tc::a_devices_entry_naming_a_missing_device_is_refused_naming_it",
            missing_device,
        ),
    ];
    support::run_tier("tc attach", tests.into());
}

/// A node with two devices, its bpffs and a scratch directory with the Node object; fields
/// drop in order (scratch, bpffs, then the node and its topology).
struct TcNode {
    scratch: PathBuf,
    bpffs: TestBpffs,
    node: netsim::Node,
    _topology: Topology,
}

impl TcNode {
    fn new(tag: &str) -> Result<Self, Failed> {
        let mut topology = Topology::new()?;
        let node = topology.add_node(
            NodeSpec::new(tag)
                .eth0("192.168.79.11/24".parse()?)
                .eth1("172.16.79.11/24".parse()?),
        )?;
        let bpffs = TestBpffs::new(&format!("tc-{tag}"))?;
        let scratch = std::env::temp_dir().join(format!("lb-tc-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(scratch.join("manifests"))?;
        std::fs::write(
            scratch.join("manifests/node.yaml"),
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {tag}}}\n\
                 status: {{addresses: [{{type: InternalIP, address: 192.168.79.11}}]}}\n"
            ),
        )?;
        Ok(TcNode {
            scratch,
            bpffs,
            node,
            _topology: topology,
        })
    }

    fn state_dir(&self) -> PathBuf {
        self.scratch.join("state")
    }

    /// `lb-agent --once` in the node with these extra `--set`s and environment.
    fn agent_once(&self, sets: &[&str], env: &[(&str, &str)]) -> Result<Output, Failed> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
        cmd.args(["--set", "kubeProxyReplacement=true"])
            .arg("--set")
            .arg(format!("bpf.root={}", self.bpffs.path.display()))
            .arg("--set")
            .arg(format!(
                "cgroup.hostRoot={}",
                self.node.cgroup_path().display()
            ))
            .arg("--manifests")
            .arg(self.scratch.join("manifests"))
            .arg("--node")
            .arg(self.node.name())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--once")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for set in sets {
            cmd.args(["--set", set]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(self.node.spawn(cmd)?.output(RUN_WITHIN)?)
    }

    /// Runs the agent once and fails with its stderr unless it succeeded.
    fn agent_ok(&self, sets: &[&str], env: &[(&str, &str)]) -> Result<(), Failed> {
        let out = self.agent_once(sets, env)?;
        if !out.status.success() {
            return Err(format!(
                "lb-agent --once exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }

    /// `lbctl cleanup` in the node's namespace; its stdout.
    fn cleanup(&self) -> Result<String, Failed> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbctl"));
        cmd.arg("cleanup")
            .arg("--state-dir")
            .arg(self.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = self.node.spawn(cmd)?.output(RUN_WITHIN)?;
        if !out.status.success() {
            return Err(format!(
                "lbctl cleanup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The names of the tcx programs on `device`'s hook (the kernel keeps 15 characters).
    fn tcx_programs(&self, device: &str, hook: TcAttachType) -> Result<Vec<String>, Failed> {
        let device = device.to_owned();
        let (_, infos) = self
            .node
            .in_netns(move || SchedClassifier::query_tcx(&device, hook))?
            .map_err(|e| format!("tcx query: {e}"))?;
        Ok(infos
            .iter()
            .map(|i| i.name_as_str().unwrap_or_default().to_owned())
            .collect())
    }

    /// `tc ARGS` in the node's namespace; its stdout.
    fn tc(&self, args: &[&str]) -> Result<String, Failed> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let out = self
            .node
            .in_netns(move || Command::new("tc").args(&args).output())??;
        if !out.status.success() {
            return Err(format!("tc failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The bpf filters `tc filter show` lists on `device`'s `direction` hook, one line each.
    fn netlink_filters(&self, device: &str, direction: &str) -> Result<Vec<String>, Failed> {
        Ok(self
            .tc(&["filter", "show", "dev", device, direction])?
            .lines()
            .filter(|l| l.contains(" bpf ") && l.contains("handle"))
            .map(str::to_owned)
            .collect())
    }
}

impl Drop for TcNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Each device's ingress and egress run exactly the NodePort program of that direction.
fn expect_tcx(node: &TcNode, when: &str) -> Result<(), Failed> {
    for device in DEVICES {
        for (hook, want) in [
            (TcAttachType::Ingress, "lb_nodeport_ing"),
            (TcAttachType::Egress, "lb_nodeport_egr"),
        ] {
            let got = node.tcx_programs(device, hook)?;
            if got != [want] {
                return Err(format!(
                    "{when}: tcx programs on {device} {hook:?}: {got:?}, expected [{want}]"
                )
                .into());
            }
        }
    }
    Ok(())
}

fn tcx_links() -> Result<(), Failed> {
    if lb::host::features::Feature::Tcx.probe().is_err() {
        return Err("this kernel has no tcx; the netlink test covers it".into());
    }
    let node = TcNode::new("tcx")?;
    node.agent_ok(&["devices=eth+"], &[])?;
    expect_tcx(&node, "after the first agent")?;
    node.agent_ok(&["devices=eth+"], &[])?;
    expect_tcx(&node, "after a second agent")?;
    let links = node.bpffs.path.join("lb/links");
    let pinned: Vec<String> = std::fs::read_dir(&links)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    let tc_pins = pinned
        .iter()
        .filter(|n| n.starts_with("lb_nodeport_"))
        .count();
    if tc_pins != 4 {
        return Err(
            format!("pinned links after a restart: {pinned:?}, expected 4 NodePort ones").into(),
        );
    }
    let report = node.cleanup()?;
    for device in DEVICES {
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            let got = node.tcx_programs(device, hook)?;
            if !got.is_empty() {
                return Err(format!("after cleanup, {device} {hook:?} still runs {got:?}").into());
            }
        }
        if !report.contains(&format!("lb_nodeport_ingress_{device}-2")) {
            return Err(format!("cleanup does not report {device}'s link:\n{report}").into());
        }
    }
    Ok(())
}

fn netlink_filters() -> Result<(), Failed> {
    let node = TcNode::new("nl")?;
    let no_tcx = [("LB_ASSUME_MISSING_FEATURES", "tcx")];
    node.agent_ok(&["devices=eth+"], &no_tcx)?;
    let expect = |when: &str| -> Result<(), Failed> {
        for device in DEVICES {
            for (direction, program) in [
                ("ingress", "lb_nodeport_ingress"),
                ("egress", "lb_nodeport_egress"),
            ] {
                let filters = node.netlink_filters(device, direction)?;
                if filters.len() != 1 || !filters[0].contains(program) {
                    return Err(format!(
                        "{when}: filters on {device} {direction}: {filters:?}, expected one \
                         running {program}"
                    )
                    .into());
                }
            }
            if node
                .tcx_programs(device, TcAttachType::Ingress)
                .is_ok_and(|p| !p.is_empty())
            {
                return Err(format!("{when}: tcx links on {device} beside the filters").into());
            }
        }
        Ok(())
    };
    expect("after the first agent")?;
    node.agent_ok(&["devices=eth+"], &no_tcx)?;
    expect("after a second agent")?;
    let report = node.cleanup()?;
    for device in DEVICES {
        for direction in ["ingress", "egress"] {
            let left = node.netlink_filters(device, direction)?;
            if !left.is_empty() {
                return Err(format!("after cleanup, {device} {direction} keeps {left:?}").into());
            }
        }
        let qdiscs = node.tc(&["qdisc", "show", "dev", device])?;
        if qdiscs.contains("clsact") {
            return Err(format!(
                "after cleanup, {device} keeps the clsact qdisc the agent added:\n{qdiscs}"
            )
            .into());
        }
        if !report.contains(&format!(
            "deleted tc filter lb_nodeport_ingress on {device} ingress"
        )) {
            return Err(format!("cleanup does not report {device}'s filter:\n{report}").into());
        }
    }
    Ok(())
}

fn missing_device() -> Result<(), Failed> {
    let node = TcNode::new("nodev")?;
    let out = node.agent_once(&["devices={eth0,eth7}"], &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Err("lb-agent started with devices naming eth7, which the node lacks".into());
    }
    if !stderr.contains("devices names device eth7") || !stderr.contains("eth0, eth1") {
        return Err(
            format!("the refusal does not name eth7 and the node's devices: {stderr}").into(),
        );
    }
    for device in DEVICES {
        if !node.tcx_programs(device, TcAttachType::Ingress)?.is_empty() {
            return Err(format!("a refused start attached programs to {device}").into());
        }
    }
    Ok(())
}
