//! The NodePort programs on a node's devices: `lb-agent --once` inside a netsim node with two
//! devices (`eth0`, `eth1`) attaches `lb_nodeport_ingress` and `lb_nodeport_egress` on each,
//! as tcx links (the host kernel has tcx) and, with tcx treated as missing, as netlink
//! `cls_bpf` filters; a second agent replaces them instead of stacking a second copy; `lbctl
//! cleanup` (run in the node's namespace) leaves the devices bare; a `devices` entry naming a
//! device the node lacks is refused naming it. End to end, a client outside the cluster
//! reaches a NodePort on the node, answered by a pod on that node (which sees the client's
//! address) and by one on another node (which sees the node's: SNAT).
//!
//! Without root the tests are reported as ignored, with a line saying why; under `CI=true` they
//! fail instead, since CI must run this tier.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use aya::programs::{tc::SchedClassifier, TcAttachType};
use libtest_mimic::Failed;
use netsim::{ClientMode, NodeSpec, PodSpec, Proto, Topology};
use support::{ScratchDir, TestBpffs, TestFn};

#[allow(
    dead_code,
    reason = "the guards this binary does not use serve the other tiers"
)]
mod support;

const DEVICES: [&str; 2] = ["eth0", "eth1"];
/// How long one `lb-agent --once` or `lbctl` may take.
const RUN_WITHIN: Duration = Duration::from_secs(60);

fn main() {
    let tests: [(&str, TestFn); 11] = [
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
        (
            "tc::an_outside_client_reaches_a_nodeport_served_on_the_node_and_through_snat_on_another",
            || outside_client("tcx", &[]),
        ),
        (
            "tc::an_outside_client_reaches_both_backends_through_netlink_filters_too",
            || outside_client("netlink", &[("LB_ASSUME_MISSING_FEATURES", "tcx")]),
        ),
        (
            "tc::conntrack_gc_deletes_expired_flows_and_keeps_one_alive_in_either_direction",
            conntrack_gc,
        ),
        (
            "tc::a_changed_lb_map_max_resizes_the_conntrack_table_keeping_its_flows",
            conntrack_resize,
        ),
        (
            "tc::flows_of_the_first_conntrack_layout_are_taken_over_and_its_pin_removed",
            conntrack_v1_taken_over,
        ),
        (
            "tc::a_changed_maglev_table_size_replaces_the_table_map_instead_of_refusing_to_start",
            maglev_resize,
        ),
        (
            "xdp::native_xdp_on_every_device_is_replaced_on_restart_detached_when_off_and_cleaned_up",
            xdp_native,
        ),
        (
            "xdp::best_effort_leaves_a_refusing_device_to_tc_and_native_refuses_naming_it",
            xdp_refused,
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
        Self::with_mtu(tag, None)
    }

    /// A node whose devices have MTU `mtu` (1500 without).
    fn with_mtu(tag: &str, mtu: Option<u32>) -> Result<Self, Failed> {
        let mut topology = Topology::new()?;
        let mut spec = NodeSpec::new(tag)
            .eth0("192.168.79.11/24".parse()?)
            .eth1("172.16.79.11/24".parse()?);
        if let Some(mtu) = mtu {
            spec = spec.mtu(mtu);
        }
        let node = topology.add_node(spec)?;
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

    /// `lbctl status --verbose`; its stdout.
    fn status(&self) -> Result<String, Failed> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbctl"));
        cmd.args(["status", "--verbose", "--state-dir"])
            .arg(self.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = self.node.spawn(cmd)?.output(RUN_WITHIN)?;
        if !out.status.success() {
            return Err(format!(
                "lbctl status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The XDP program on `device` as `ip -details link` reports it: its mode (1 = in the
    /// driver) and name; `None` without one.
    fn xdp_program(&self, device: &str) -> Result<Option<(u64, String)>, Failed> {
        let device = device.to_owned();
        let out = self.node.in_netns(move || {
            Command::new("ip")
                .args(["-json", "-details", "link", "show", "dev", &device])
                .output()
        })??;
        if !out.status.success() {
            return Err(format!("ip link failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let Some(xdp) = links[0].get("xdp") else {
            return Ok(None);
        };
        Ok(Some((
            xdp["mode"].as_u64().unwrap_or_default(),
            xdp["prog"]["name"].as_str().unwrap_or_default().to_owned(),
        )))
    }

    /// The names of the pinned links.
    fn pinned_links(&self) -> Result<Vec<String>, Failed> {
        let links = self.bpffs.path.join("lb/links");
        let mut names: Vec<String> = std::fs::read_dir(&links)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        Ok(names)
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

/// A NodePort service `name` on `node_port` with one TCP backend `backend:8080` on `node`.
fn node_port_yaml(
    name: &str,
    cluster_ip: &str,
    node_port: u16,
    backend: &str,
    node: &str,
) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  type: NodePort\n  clusterIP: {cluster_ip}\n\
         \x20 ports: [{{port: 80, protocol: TCP, targetPort: 8080, nodePort: {node_port}}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: \"\", port: 8080, protocol: TCP}}]\nendpoints:\n\
         \x20 - {{addresses: [{backend}], conditions: {{ready: true}}, nodeName: {node}}}\n"
    )
}

/// `lb-agent --once` on `node` with these manifests and extra environment.
fn agent_on(
    node: &netsim::Node,
    bpffs: &TestBpffs,
    manifests: &std::path::Path,
    state_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Result<(), Failed> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
    cmd.args(["--set", "kubeProxyReplacement=true", "--set"])
        .arg(format!("bpf.root={}", bpffs.path.display()))
        .arg("--set")
        .arg(format!("cgroup.hostRoot={}", node.cgroup_path().display()))
        .arg("--manifests")
        .arg(manifests)
        .args(["--node", node.name(), "--once", "--state-dir"])
        .arg(state_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = node.spawn(cmd)?.output(RUN_WITHIN)?;
    if !out.status.success() {
        return Err(format!(
            "lb-agent --once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// node1 runs the agent; `local-1` is a pod on node1, `remote-1` one on node2 (no agent
/// there: SNAT needs nothing of it); `outside` is a host on the segment with no agent. Its TCP
/// exchanges with node1's NodePorts are answered by each pod, which sees the client's address
/// (local) or node1's (remote, SNAT); the client sees the replies come from the NodePort.
/// `env` is the agent's extra environment (tcx treated as missing: netlink filters).
/// `tag` names its bpffs and scratch directory (the variants run in parallel).
fn outside_client(tag: &str, env: &[(&str, &str)]) -> Result<(), Failed> {
    let mut topology = Topology::new()?;
    let node1 = topology.add_node(
        NodeSpec::new("node1")
            .eth0("192.168.80.11/24".parse()?)
            .pod_cidr("10.80.1.0/24".parse()?),
    )?;
    let node2 = topology.add_node(
        NodeSpec::new("node2")
            .eth0("192.168.80.12/24".parse()?)
            .pod_cidr("10.80.2.0/24".parse()?),
    )?;
    let outside = topology.add_node(NodeSpec::new("outside").eth0("192.168.80.100/24".parse()?))?;
    let local = topology.add_pod(&node1, PodSpec::new("local-1", "10.80.1.5".parse()?))?;
    let remote = topology.add_pod(&node2, PodSpec::new("remote-1", "10.80.2.5".parse()?))?;
    let _local_server = local.server(Proto::Tcp, "10.80.1.5:8080".parse()?, "local-1")?;
    let _remote_server = remote.server(Proto::Tcp, "10.80.2.5:8080".parse()?, "remote-1")?;

    let bpffs = TestBpffs::new(&format!("tc-e2e-{tag}"))?;
    let scratch =
        ScratchDir(std::env::temp_dir().join(format!("lb-tc-e2e-{tag}-{}", std::process::id())));
    let manifests = scratch.0.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(
        manifests.join("nodes.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata: {name: node1}\n\
         status: {addresses: [{type: InternalIP, address: 192.168.80.11}]}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: node2}\n\
         status: {addresses: [{type: InternalIP, address: 192.168.80.12}]}\n",
    )?;
    std::fs::write(
        manifests.join("services.yaml"),
        format!(
            "{}---\n{}",
            node_port_yaml("local", "10.96.80.1", 31001, "10.80.1.5", "node1"),
            node_port_yaml("remote", "10.96.80.2", 31002, "10.80.2.5", "node2")
        ),
    )?;
    let state_dir = scratch.0.join("state");
    agent_on(&node1, &bpffs, &manifests, &state_dir, env)?;

    for (port, identity, seen) in [
        (31001, "local-1", "192.168.80.100"),
        (31002, "remote-1", "192.168.80.11"),
    ] {
        let target: std::net::SocketAddr = format!("192.168.80.11:{port}").parse()?;
        let reply = outside.client_once(ClientMode::Tcp, target)?;
        if reply.identity() != Some(identity) {
            return Err(
                format!("{target} from outside: answered {reply:?}, expected {identity}").into(),
            );
        }
        let saw = reply.seen_by_server().map(|a| a.ip().to_string());
        if saw.as_deref() != Some(seen) {
            return Err(format!("{identity} saw the client as {saw:?}, expected {seen}").into());
        }
        if reply.peer != Some(target) {
            return Err(format!(
                "the client's peer is {:?}, expected the NodePort {target}",
                reply.peer
            )
            .into());
        }
    }

    // The metrics' readings of the same maps: two flows of two entries each in conntrack, and
    // one SNAT port, the remote flow's.
    let pin_dir = bpffs.path.join(lb::agent::PIN_SUBDIR);
    let ct = lb::datapath::map_usage(&pin_dir)?
        .into_iter()
        .find(|m| m.name == ebpf::maps::LB_CT);
    if ct.as_ref().map(|m| m.entries) != Some(4) {
        return Err(format!(
            "after two flows, {} holds {ct:?}, expected 4 entries",
            ebpf::maps::LB_CT
        )
        .into());
    }
    let snat = lb::datapath::snat_ports_in_use(&pin_dir)?;
    if snat != Some(1) {
        return Err(
            format!("after one forwarded flow, SNAT ports in use: {snat:?}, expected 1").into(),
        );
    }

    // lbctl explain, over the node's live maps and FIB, says what the packets above met.
    for (port, wants) in [
        (
            31001,
            &[
                "Backend:     10.80.1.5:8080",
                "sees the client's address",
                "Verdict:     pass",
            ][..],
        ),
        (
            31002,
            &[
                "Backend:     10.80.2.5:8080",
                "becomes 192.168.80.11:",
                "SNAT",
                "Verdict:     redirect out of ifindex",
            ][..],
        ),
    ] {
        let out = lbctl_explain(
            &node1,
            &state_dir,
            &[
                "--from",
                "192.168.80.100:45000",
                "--to",
                &format!("192.168.80.11:{port}"),
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !wants.iter().all(|w| text.contains(w)) {
            return Err(format!(
                "lbctl explain of port {port} lacks {wants:?}:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
    }
    let out = lbctl_explain(
        &node1,
        &state_dir,
        &[
            "--from",
            "192.168.80.100:45000",
            "--to",
            "192.168.80.11:31002",
            "--device",
            "eth9",
        ],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !stderr.contains("eth9") || !stderr.contains("eth0") {
        return Err(format!("explain on a device the agent does not use: {stderr}").into());
    }

    let mut cleanup = Command::new(env!("CARGO_BIN_EXE_lbctl"));
    cleanup
        .arg("cleanup")
        .arg("--state-dir")
        .arg(&state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = node1.spawn(cleanup)?.output(RUN_WITHIN)?;
    if !out.status.success() {
        return Err(format!(
            "lbctl cleanup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// `lb_ct_v2` of freshly loaded programs holds three flows (two entries each): one expired in
/// both directions, one whose reply entry is still alive, one alive; and a lone expired entry.
/// The agent's collection deletes the first flow and the lone entry, and keeps the rest.
fn conntrack_gc() -> Result<(), Failed> {
    use ebpf::maps::{ct_flags, LbAddr, LbCtEntry, LbCtKey};

    let bpffs = TestBpffs::new("tc-gc")?;
    let mut lb = load_nodeport(&bpffs, 1024)?;
    let now = lb::agent::ct_gc::monotonic_now();
    let addr = |s: &str| LbAddr::from(s.parse::<std::net::IpAddr>().unwrap());
    // Client 10.0.0.N:40000 -> 192.168.1.1:30080, backend 10.1.0.5:80: (forward, reply).
    let flow = |client: &str, forward: u32, reply: u32| {
        let key = |s: &str, d: &str, sp: u16, dp: u16| LbCtKey {
            saddr: addr(s),
            daddr: addr(d),
            sport: sp.to_be(),
            dport: dp.to_be(),
            proto: 6,
            pad: [0; 3],
        };
        let entry = |to: LbCtKey, flags, expires| LbCtEntry {
            saddr: to.saddr,
            daddr: to.daddr,
            sport: to.sport,
            dport: to.dport,
            flags,
            expires,
            ..LbCtEntry::default()
        };
        [
            (
                key(client, "192.168.1.1", 40000, 30080),
                entry(key(client, "10.1.0.5", 40000, 80), 0, forward),
            ),
            (
                key("10.1.0.5", client, 80, 40000),
                entry(
                    key("192.168.1.1", client, 30080, 40000),
                    ct_flags::REPLY,
                    reply,
                ),
            ),
        ]
    };
    let expired = flow("10.0.0.1", now - 20, now - 20);
    let half = flow("10.0.0.2", now - 20, now + 100);
    let alive = flow("10.0.0.3", now + 100, now + 100);
    let lone = flow("10.0.0.4", now - 20, now - 20)[0];
    {
        let mut ct = lb.conntrack()?;
        for (k, e) in expired.iter().chain(&half).chain(&alive).chain([&lone]) {
            ct.insert(k, e, 0)?;
        }
    }
    let deleted = lb::agent::ct_gc::collect(&mut lb, now)?;
    let ct = lb.conntrack()?;
    let mut left: Vec<LbCtKey> = ct.keys().collect::<Result<_, _>>()?;
    left.sort();
    let mut want: Vec<LbCtKey> = half.iter().chain(&alive).map(|(k, _)| *k).collect();
    want.sort();
    if deleted != 3 || left != want {
        return Err(format!(
            "collection deleted {deleted} (expected 3) and left {} entries (expected the 4 of \
             the two live flows): {left:?}",
            left.len()
        )
        .into());
    }
    Ok(())
}

/// The NodePort programs alone, their maps in `bpffs`, sized `map_max`.
fn load_nodeport(bpffs: &TestBpffs, map_max: u32) -> Result<lb::datapath::NodePortLb, Failed> {
    load_nodeport_with(bpffs, map_max, None)
}

/// [`load_nodeport`] with Maglev tables of `maglev_m` entries (`None`: random).
fn load_nodeport_with(
    bpffs: &TestBpffs,
    map_max: u32,
    maglev_m: Option<u32>,
) -> Result<lb::datapath::NodePortLb, Failed> {
    Ok(lb::datapath::NodePortLb::load(
        lb::datapath::NodePortConfig {
            map_max,
            snat_port_min: 61000,
            snat_port_max: 65535,
            flow_seed: 0,
            external_clusterip: false,
            xdp: true,
            external_ip_mitigation: true,
            maglev_m,
        },
        &bpffs.path,
    )?)
}

/// The conntrack key of client 10.0.0.`i`'s TCP flow to NodePort 192.168.1.1:30080.
fn client_flow(i: u8) -> ebpf::maps::LbCtKey {
    ebpf::maps::LbCtKey {
        saddr: ebpf::maps::LbAddr::from(std::net::IpAddr::from([10, 0, 0, i])),
        daddr: ebpf::maps::LbAddr::from(std::net::IpAddr::from([192, 168, 1, 1])),
        sport: 40000u16.to_be(),
        dport: 30080u16.to_be(),
        proto: 6,
        pad: [0; 3],
    }
}

/// Conntrack entries pinned with `bpf.lbMapMax=1024`, programs loaded again with 2048: the
/// pinned `lb_ct_v2` is a fresh map of 2048 entries holding every flow, and nothing is left
/// under `migrate/` once the new programs are attached.
fn conntrack_resize() -> Result<(), Failed> {
    use ebpf::maps::{LbCtEntry, LbCtKey, LB_CT};

    let bpffs = TestBpffs::new("tc-resize")?;
    let keys: Vec<LbCtKey> = (1..=50u8).map(client_flow).collect();
    {
        let mut first = load_nodeport(&bpffs, 1024)?;
        let mut ct = first.conntrack()?;
        for key in &keys {
            let value = LbCtEntry {
                expires: u32::MAX,
                ..LbCtEntry::default()
            };
            ct.insert(key, value, 0)?;
        }
    }
    let pin = bpffs.path.join(LB_CT);
    let size = |path: &std::path::Path| -> Result<u32, Failed> {
        Ok(aya::maps::MapData::from_pin(path)?.info()?.max_entries())
    };
    if size(&pin)? != 1024 {
        return Err(format!(
            "the first load pinned {} entries, expected 1024",
            size(&pin)?
        )
        .into());
    }
    let mut second = load_nodeport(&bpffs, 2048)?;
    second.attach(&[], &[], lb::datapath::TcMode::Tcx, &Default::default())?;
    if size(&pin)? != 2048 {
        return Err(format!("after a load with 2048, {LB_CT} holds {}", size(&pin)?).into());
    }
    let mut have: Vec<LbCtKey> = second.conntrack()?.keys().collect::<Result<_, _>>()?;
    have.sort();
    let mut want = keys.clone();
    want.sort();
    if have != want {
        return Err(format!("{} of 50 flows survived the resize", have.len()).into());
    }
    if bpffs.path.join(lb::datapath::MIGRATE_DIR).exists() {
        return Err("the resize left migrate/ behind".into());
    }
    Ok(())
}

/// An earlier version's `lb_ct_v1` (entries without a next hop) pinned with 50 flows: the
/// programs load over it, every flow is in `lb_ct_v2` with the same translation and expiry and
/// no next hop kept (its next packet asks the FIB), and once they are attached the old pin is
/// gone and nothing is left under `migrate/`.
fn conntrack_v1_taken_over() -> Result<(), Failed> {
    use ebpf::maps::{LbAddr, LbCtEntry, LbCtEntryV1, LbCtKey, LB_CT, LB_CT_V1};

    let bpffs = TestBpffs::new("tc-ct-v1")?;
    let old_pin = bpffs.path.join(LB_CT_V1);
    let flows: Vec<(LbCtKey, LbCtEntryV1)> = (1..=50u8)
        .map(|i| {
            let key = client_flow(i);
            let entry = LbCtEntryV1 {
                saddr: LbAddr::from(std::net::IpAddr::from([192, 168, 1, 1])),
                daddr: LbAddr::from(std::net::IpAddr::from([10, 1, 0, i])),
                sport: (61000 + u16::from(i)).to_be(),
                dport: 8080u16.to_be(),
                rev_nat_index: u16::from(i),
                flags: ebpf::maps::ct_flags::SNAT,
                pad: 0,
                backend_id: u32::from(i),
                expires: 1_000_000 + u32::from(i),
            };
            (key, entry)
        })
        .collect();
    {
        // The version-1 map as that agent created it: the conntrack map's definition with the
        // shorter value.
        let object = aya_obj::Object::parse(ebpf::nodeport_object())
            .map_err(|e| format!("parsing nodeport.o: {e}"))?;
        let mut def = object
            .maps
            .get(LB_CT)
            .cloned()
            .ok_or("no lb_ct in nodeport.o")?;
        def.set_value_size(std::mem::size_of::<LbCtEntryV1>() as u32);
        def.set_max_entries(1024);
        // Without the object's BTF: its value type is version 2's.
        if let aya_obj::Map::Btf(btf) = &mut def {
            btf.def.btf_key_type_id = 0;
            btf.def.btf_value_type_id = 0;
        }
        let data = aya::maps::MapData::create(def, LB_CT_V1, None)
            .map_err(|e| format!("creating {LB_CT_V1}: {e:?}"))?;
        data.pin(&old_pin)
            .map_err(|e| format!("pinning {}: {e}", old_pin.display()))?;
        let mut map: aya::maps::HashMap<_, LbCtKey, LbCtEntryV1> =
            aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data))?;
        for (key, entry) in &flows {
            map.insert(key, entry, 0)?;
        }
    }
    let mut lb = load_nodeport(&bpffs, 1024)?;
    lb.attach(&[], &[], lb::datapath::TcMode::Tcx, &Default::default())?;
    let ct = lb.conntrack()?;
    for (key, old) in &flows {
        let have = ct.get(key, 0).map_err(|e| format!("flow {key:?}: {e}"))?;
        if have != LbCtEntry::from(*old) || have.hop != Default::default() {
            return Err(format!("flow {key:?}: {have:?}, expected {old:?} with no hop").into());
        }
    }
    if old_pin.exists() {
        return Err(format!("{} is still pinned", old_pin.display()).into());
    }
    if bpffs.path.join(lb::datapath::MIGRATE_DIR).exists() {
        return Err("the takeover left migrate/ behind".into());
    }
    Ok(())
}

/// Every device runs exactly the NodePort XDP program, in its driver.
fn expect_xdp_native(node: &TcNode, when: &str) -> Result<(), Failed> {
    for device in DEVICES {
        let got = node.xdp_program(device)?;
        // The kernel keeps 15 characters of a program's name.
        if got != Some((1, "lb_nodeport_xdp".to_owned())) {
            return Err(format!(
                "{when}: XDP on {device}: {got:?}, expected lb_nodeport_xdp in the driver (mode 1)"
            )
            .into());
        }
    }
    let xdp_pins: Vec<String> = node
        .pinned_links()?
        .into_iter()
        .filter(|n| n.starts_with("lb_nodeport_xdp_"))
        .collect();
    if xdp_pins != ["lb_nodeport_xdp_eth0", "lb_nodeport_xdp_eth1"] {
        return Err(format!("{when}: pinned XDP links {xdp_pins:?}").into());
    }
    Ok(())
}

fn xdp_native() -> Result<(), Failed> {
    let node = TcNode::new("xdp")?;
    let native = ["devices=eth+", "loadBalancer.acceleration=native"];
    node.agent_ok(&native, &[])?;
    expect_xdp_native(&node, "after the first agent")?;
    let status = node.status()?;
    for line in [
        "XDP Acceleration:      Native",
        "eth0: Native",
        "eth1: Native",
    ] {
        if !status.contains(line) {
            return Err(format!("status lacks {line:?}:\n{status}").into());
        }
    }
    node.agent_ok(&native, &[])?;
    expect_xdp_native(&node, "after a second agent")?;
    // Acceleration off: the next agent takes the programs off the devices, tc stays.
    node.agent_ok(&["devices=eth+"], &[])?;
    for device in DEVICES {
        if let Some(p) = node.xdp_program(device)? {
            return Err(format!("acceleration off, {device} still runs XDP {p:?}").into());
        }
    }
    if node.pinned_links()?.iter().any(|n| n.contains("xdp")) {
        return Err(format!("XDP links left pinned: {:?}", node.pinned_links()?).into());
    }
    node.agent_ok(&native, &[])?;
    let report = node.cleanup()?;
    for device in DEVICES {
        if let Some(p) = node.xdp_program(device)? {
            return Err(format!("after cleanup, {device} still runs XDP {p:?}").into());
        }
        if !report.contains(&format!("lb_nodeport_xdp_{device}")) {
            return Err(format!("cleanup does not report {device}'s XDP link:\n{report}").into());
        }
    }
    Ok(())
}

fn xdp_refused() -> Result<(), Failed> {
    // A veth whose peer's MTU leaves no room for XDP's headroom in a page refuses native XDP.
    let node = TcNode::with_mtu("xdpjumbo", Some(9000))?;
    let out = node.agent_once(
        &["devices=eth0", "loadBalancer.acceleration=best-effort"],
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("best-effort refused to start: {stderr}").into());
    }
    if !(stderr.contains("eth0") && stderr.contains("MTU too large for XDP")) {
        return Err(format!("no warning naming eth0 and why: {stderr}").into());
    }
    if let Some(p) = node.xdp_program("eth0")? {
        return Err(format!("eth0 runs XDP {p:?} although it refused").into());
    }
    let has_tcx = lb::host::features::Feature::Tcx.probe().is_ok();
    if has_tcx && node.tcx_programs("eth0", TcAttachType::Ingress)? != ["lb_nodeport_ing"] {
        return Err("eth0 is not served at tc".into());
    }
    let status = node.status()?;
    if !status.contains("eth0: tc only (MTU too large for XDP)") {
        return Err(format!("status does not say eth0 is tc only and why:\n{status}").into());
    }
    let out = node.agent_once(&["devices=eth0", "loadBalancer.acceleration=native"], &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Err("native started although eth0 refuses XDP".into());
    }
    if !(stderr.contains("eth0") && stderr.contains("refuses native XDP")) {
        return Err(format!("the refusal does not name eth0: {stderr}").into());
    }
    eprintln!("native on a refusing device: {}", stderr.trim());
    node.cleanup()?;
    Ok(())
}
/// `maglev.tableSize` is the length of every `lb_maglev_v1` value: a restart with another size
/// (or algorithm) replaces the pinned map, which the reconciler then fills again, where it
/// once refused to start on the layout change. Tables are written only when they change, and
/// deleted when nothing wants them.
fn maglev_resize() -> Result<(), Failed> {
    use std::collections::BTreeMap;

    use ebpf::maps::LB_MAGLEV;

    let bpffs = TestBpffs::new("tc-maglev")?;
    let pin = bpffs.path.join(LB_MAGLEV);
    let value_size =
        || -> Result<u32, Failed> { Ok(aya::maps::MapData::from_pin(&pin)?.info()?.value_size()) };
    let table = |m: usize| -> BTreeMap<u16, Vec<u32>> { [(7u16, vec![3u32; m])].into() };
    {
        let mut first = load_nodeport_with(&bpffs, 1024, Some(251))?;
        let written = first.apply_maglev(&table(251))?.written;
        if written != 1 || first.maglev_tables()? != table(251) {
            return Err(format!("{written} tables written, read back differently").into());
        }
        if first.apply_maglev(&table(251))?.written != 0 {
            return Err("an unchanged table was written again".into());
        }
        let gone = first.apply_maglev(&BTreeMap::new())?;
        if gone.deleted != 1 || !first.maglev_tables()?.is_empty() {
            return Err("a table nothing wants was not deleted".into());
        }
        first.apply_maglev(&table(251))?;
    }
    if value_size()? != 251 * 4 {
        return Err(format!("tables of 251 ids, values of {} bytes", value_size()?).into());
    }
    let mut second = load_nodeport_with(&bpffs, 1024, Some(509))?;
    second.attach(&[], &[], lb::datapath::TcMode::Tcx, &Default::default())?;
    if value_size()? != 509 * 4 || !second.maglev_tables()?.is_empty() {
        return Err(format!(
            "after a load with 509: values of {} bytes, {} tables",
            value_size()?,
            second.maglev_tables()?.len()
        )
        .into());
    }
    if second.apply_maglev(&table(509))?.written != 1 || second.maglev_tables()? != table(509) {
        return Err("a 509-entry table was not written".into());
    }
    // Frontend id 7 keeps its frontend: its table stays; it goes to another: the table goes
    // before the new frontend's head is written.
    let owned_by = |addr: [u8; 4]| {
        let mut c = lb::datapath::MapContents::default();
        c.services.insert(
            ebpf::maps::LbKey::new(addr.into(), 80, 6, ebpf::maps::scope::EXT, 0),
            ebpf::maps::LbService {
                rev_nat_index: 7,
                flags: ebpf::maps::svc_flags::NODE_PORT,
                ..Default::default()
            },
        );
        c
    };
    let (a, b) = (owned_by([10, 0, 0, 1]), owned_by([10, 0, 0, 2]));
    let reassigned = |have: &lb::datapath::MapContents, want: &lb::datapath::MapContents| {
        lb::datapath::MapDelta::between(have, want).reassigned_ids(have)
    };
    if second.drop_tables(&reassigned(&a, &a))?.deleted != 0 {
        return Err("the table of a frontend that keeps its id was deleted".into());
    }
    if second.drop_tables(&reassigned(&a, &b))?.deleted != 1 || !second.maglev_tables()?.is_empty()
    {
        return Err("the table of an id another frontend takes stayed".into());
    }
    drop(second);
    let mut third = load_nodeport_with(&bpffs, 1024, None)?;
    third.attach(&[], &[], lb::datapath::TcMode::Tcx, &Default::default())?;
    if value_size()? != 4 {
        return Err(format!("random keeps values of {} bytes", value_size()?).into());
    }
    if bpffs.path.join(lb::datapath::MIGRATE_DIR).exists() {
        return Err("the replacement left migrate/ behind".into());
    }
    Ok(())
}

/// `lbctl explain ARGS` in `node`, with `--device eth0` unless ARGS name one.
fn lbctl_explain(
    node: &netsim::Node,
    state_dir: &std::path::Path,
    args: &[&str],
) -> Result<Output, Failed> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbctl"));
    cmd.arg("explain").args(args);
    if !args.contains(&"--device") {
        cmd.args(["--device", "eth0"]);
    }
    cmd.arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(node.spawn(cmd)?.output(RUN_WITHIN)?)
}
