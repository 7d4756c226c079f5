//! Neighbour entries for the other nodes (the documents' "Neighbor Discovery"): `lb-agent`
//! inside netsim node1, with node2 beside it on two segments, keeps an entry for node2's next
//! hop (IPv4 and IPv6) on each NodePort device that has a route towards node2 — `managed
//! extern_learn` on this kernel, resolved by the kernel to node2's MAC — follows a new route,
//! removes the entries when node2's Node object goes (also when it went while no agent ran: a
//! restarted agent adopts its predecessor's entries), and `lbctl cleanup` removes exactly its
//! own entries, leaving others' alone. With managed neighbours treated as missing (as before
//! Linux 5.16) the entries are plain `extern_learn` and the agent itself keeps asking the
//! kernel to re-resolve them; an agent started with `l2NeighDiscovery.enabled=false` removes
//! them.
//!
//! The entries are read with `ip -json neigh`, independently of the agent's own netlink code.
//!
//! Without root the tests are reported as ignored, with a line saying why; under `CI=true` they
//! fail instead, since CI must run this tier.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use netsim::{NodeSpec, Topology};
use support::{ScratchDir, TestBpffs, TestFn};

#[allow(
    dead_code,
    reason = "the guards this binary does not use serve the other tiers"
)]
mod support;

/// How long the agent and the kernel may take to push, resolve or remove an entry: a route
/// change is seen at the agent's next resync (10 s).
const WITHIN: Duration = Duration::from_secs(30);

fn main() {
    let tests: [(&str, TestFn); 2] = [
        (
            "neigh::managed_entries_follow_nodes_and_routes_and_cleanup_removes_only_the_agents",
            managed_entries,
        ),
        (
            "neigh::without_managed_neighbours_the_agent_keeps_re_resolving_its_entries",
            agent_refreshed_entries,
        ),
    ];
    support::run_tier("neighbours", tests.into());
}

/// One neighbour entry as `ip -statistics -details -json neigh` shows it.
#[derive(Debug, Clone)]
struct Entry {
    dst: String,
    dev: String,
    lladdr: Option<String>,
    managed: bool,
    extern_learn: bool,
    permanent: bool,
    state: Vec<String>,
    /// Seconds since the entry was last used (an `NTF_USE` counts).
    used: Option<u64>,
}

impl Entry {
    fn resolved_to(&self, mac: &str) -> bool {
        self.lladdr.as_deref() == Some(mac)
            && self
                .state
                .iter()
                .any(|s| s == "REACHABLE" || s == "STALE" || s == "DELAY" || s == "PROBE")
    }
}

fn neighbours(node: &netsim::Node) -> Result<Vec<Entry>, Failed> {
    let out = node.in_netns(|| {
        Command::new("ip")
            .args(["-statistics", "-details", "-json", "neigh", "show"])
            .output()
    })??;
    if !out.status.success() {
        return Err(format!("ip neigh failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    Ok(list
        .iter()
        .map(|e| {
            let text = |k: &str| e.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            let state: Vec<String> = e
                .get("state")
                .and_then(|s| s.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Entry {
                dst: text("dst").unwrap_or_default(),
                dev: text("dev").unwrap_or_default(),
                lladdr: text("lladdr"),
                managed: e.get("managed").is_some(),
                extern_learn: e.get("extern_learn").is_some(),
                permanent: state.iter().any(|s| s == "PERMANENT"),
                state,
                used: e.get("used").and_then(|u| u.as_u64()),
            }
        })
        .collect())
}

fn find<'a>(entries: &'a [Entry], dst: &str, dev: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| e.dst == dst && e.dev == dev)
}

/// Polls node1's neighbour table until `ok` holds, or fails after [`WITHIN`] with the table.
fn wait_for(
    node: &netsim::Node,
    what: &str,
    ok: impl Fn(&[Entry]) -> bool,
) -> Result<Vec<Entry>, Failed> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let entries = neighbours(node)?;
        if ok(&entries) {
            return Ok(entries);
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {WITHIN:?}; the table: {entries:#?}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The MAC address of `device` in `node`.
fn mac(node: &netsim::Node, device: &str) -> Result<String, Failed> {
    let device = device.to_owned();
    let out = node.in_netns(move || {
        Command::new("ip")
            .args(["-json", "link", "show", "dev", &device])
            .output()
    })??;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    links[0]["address"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no MAC in {links}").into())
}

/// `ip ARGS...` in `node`, which must succeed.
fn ip(node: &netsim::Node, args: &[&str]) -> Result<(), Failed> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = node.in_netns(move || Command::new("ip").args(&args).output())??;
    if !out.status.success() {
        return Err(format!("ip failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn node_yaml(name: &str, address: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n\
         status: {{addresses: [{{type: InternalIP, address: {address}}}]}}\n"
    )
}

/// node2's Node object: an IPv4 and an IPv6 InternalIP on eth0.
fn node2_yaml(net: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: node2}}\n\
         status: {{addresses: [{{type: InternalIP, address: 192.168.{net}.12}}, \
         {{type: InternalIP, address: \"fd00:{net}::12\"}}]}}\n"
    )
}

/// Two nodes on two segments (eth0 192.168.<net>.0/24, eth1 172.16.<net>.0/24) and node1's
/// manifests naming both Nodes.
struct Cluster {
    scratch: ScratchDir,
    bpffs: TestBpffs,
    node1: netsim::Node,
    node2: netsim::Node,
    topology: Topology,
}

impl Cluster {
    fn new(tag: &str, net: u8) -> Result<Self, Failed> {
        let mut topology = Topology::new()?;
        let node1 = topology.add_node(
            NodeSpec::new("node1")
                .eth0(format!("192.168.{net}.11/24").parse()?)
                .eth0(format!("fd00:{net}::11/64").parse()?)
                .eth1(format!("172.16.{net}.11/24").parse()?),
        )?;
        let node2 = topology.add_node(
            NodeSpec::new("node2")
                .eth0(format!("192.168.{net}.12/24").parse()?)
                .eth0(format!("fd00:{net}::12/64").parse()?)
                .eth1(format!("172.16.{net}.12/24").parse()?),
        )?;
        let bpffs = TestBpffs::new(&format!("neigh-{tag}"))?;
        let scratch =
            ScratchDir(std::env::temp_dir().join(format!("lb-neigh-{tag}-{}", std::process::id())));
        let manifests = scratch.0.join("manifests");
        std::fs::create_dir_all(&manifests)?;
        std::fs::write(
            manifests.join("node1.yaml"),
            node_yaml("node1", &format!("192.168.{net}.11")),
        )?;
        std::fs::write(manifests.join("node2.yaml"), node2_yaml(net))?;
        Ok(Cluster {
            scratch,
            bpffs,
            node1,
            node2,
            topology,
        })
    }

    fn manifests(&self) -> PathBuf {
        self.scratch.0.join("manifests")
    }

    fn state_dir(&self) -> PathBuf {
        self.scratch.0.join("state")
    }

    /// The running agent on node1 with NodePort on `eth0` and `eth1`, these `--set`s and
    /// environment; killed on drop.
    fn agent(&self, sets: &[&str], env: &[(&str, &str)]) -> Result<netsim::Process, Failed> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
        cmd.args([
            "--set",
            "kubeProxyReplacement=true",
            "--set",
            "devices=eth+",
        ])
        .arg("--set")
        .arg(format!("bpf.root={}", self.bpffs.path.display()))
        .arg("--set")
        .arg(format!(
            "cgroup.hostRoot={}",
            self.node1.cgroup_path().display()
        ))
        .arg("--manifests")
        .arg(self.manifests())
        .arg("--node")
        .arg("node1")
        .arg("--state-dir")
        .arg(self.state_dir())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        for set in sets {
            cmd.args(["--set", set]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(self.node1.spawn(cmd)?)
    }

    /// Stops the agent with SIGTERM, which leaves what it installed.
    fn stop(&self, mut agent: netsim::Process) -> Result<(), Failed> {
        let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let status = agent.wait_timeout(Duration::from_secs(10))?;
        if !status.success() {
            return Err(format!("lb-agent exited with {status} on SIGTERM").into());
        }
        Ok(())
    }

    /// `lbctl cleanup` in node1; its standard output.
    fn cleanup(&self) -> Result<String, Failed> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbctl"));
        cmd.args(["cleanup", "--state-dir"])
            .arg(self.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = self.node1.spawn(cmd)?.output(Duration::from_secs(60))?;
        if !out.status.success() {
            return Err(format!(
                "lbctl cleanup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn managed_entries() -> Result<(), Failed> {
    let cluster = Cluster::new("managed", 81)?;
    let (node1, node2) = (&cluster.node1, &cluster.node2);
    let eth0_mac = mac(node2, "eth0")?;
    let eth1_mac = mac(node2, "eth1")?;
    // Managed on kernels that have managed neighbours (5.16+, this project's host), plain
    // extern_learn before.
    let managed = lb::host::features::Feature::ManagedNeighbours
        .probe()
        .is_ok();
    let agent = cluster.agent(&["ipv6.enabled=true"], &[])?;

    // node2's InternalIPs are on eth0's link; eth1 has no route towards them, so no entry
    // there.
    let managed_on_eth0 = |t: &[Entry]| {
        ["192.168.81.12", "fd00:81::12"].iter().all(|ip| {
            find(t, ip, "eth0")
                .is_some_and(|e| e.managed == managed && e.extern_learn && e.resolved_to(&eth0_mac))
        })
    };
    let table = wait_for(
        node1,
        &format!(
            "node2's IPv4 and IPv6 entries on eth0, extern_learn (managed: {managed}), \
             resolved to {eth0_mac}"
        ),
        managed_on_eth0,
    )?;
    if let Some(e) = table.iter().find(|e| e.dev == "eth1" && e.extern_learn) {
        return Err(format!("an entry on eth1, which has no route to node2: {e:?}").into());
    }

    // A route to node2 through eth1 gives eth1 a next hop too: one entry per device, as in
    // the documents' two-device example.
    cluster
        .topology
        .add_route(node1, "192.168.81.12/32".parse()?, "172.16.81.12".parse()?)?;
    wait_for(
        node1,
        &format!("node2's next hop on eth1 (172.16.81.12, {eth1_mac}) after a route through eth1 appeared"),
        |t| {
            managed_on_eth0(t)
                && find(t, "172.16.81.12", "eth1").is_some_and(|e| {
                    e.managed == managed && e.extern_learn && e.resolved_to(&eth1_mac)
                })
        },
    )?;

    // node2 leaves the cluster: its entries go.
    let agents = [
        ("192.168.81.12", "eth0"),
        ("fd00:81::12", "eth0"),
        ("172.16.81.12", "eth1"),
    ];
    let all_gone = |t: &[Entry]| agents.iter().all(|(ip, dev)| find(t, ip, dev).is_none());
    let all_back = |t: &[Entry]| {
        agents
            .iter()
            .all(|(ip, dev)| find(t, ip, dev).is_some_and(|e| e.extern_learn))
    };
    let node2_file = cluster.manifests().join("node2.yaml");
    std::fs::remove_file(&node2_file)?;
    wait_for(
        node1,
        "the entries removed after node2's Node was deleted",
        all_gone,
    )?;

    // It comes back.
    std::fs::write(&node2_file, node2_yaml(81))?;
    wait_for(
        node1,
        "the entries back after node2's Node returned",
        all_back,
    )?;

    // A restarted agent adopts the entries its predecessor recorded: node2 gone while no agent
    // ran, the new one deletes them as its own.
    cluster.stop(agent)?;
    std::fs::remove_file(&node2_file)?;
    let agent = cluster.agent(&["ipv6.enabled=true"], &[])?;
    wait_for(
        node1,
        "the entries removed by a restarted agent after node2's Node went while none ran",
        all_gone,
    )?;
    std::fs::write(&node2_file, node2_yaml(81))?;
    wait_for(
        node1,
        "the entries back after node2's Node returned",
        all_back,
    )?;

    // Others' entries sit beside the agent's: a permanent one and an externally learned one
    // the agent never created.
    ip(
        node1,
        &[
            "neigh",
            "add",
            "192.168.81.98",
            "dev",
            "eth0",
            "lladdr",
            "02:00:00:00:00:98",
            "nud",
            "permanent",
        ],
    )?;
    ip(
        node1,
        &[
            "neigh",
            "add",
            "192.168.81.99",
            "dev",
            "eth0",
            "lladdr",
            "02:00:00:00:00:99",
            "extern_learn",
        ],
    )?;
    cluster.stop(agent)?;
    if find(&neighbours(node1)?, "192.168.81.12", "eth0").is_none() {
        return Err("the entries did not stay after the agent stopped".into());
    }

    let report = cluster.cleanup()?;
    for (ip, dev) in agents {
        let line = format!("deleted neighbour entry {ip} dev {dev}");
        if !report.lines().any(|l| l == line) {
            return Err(format!("lbctl cleanup does not say {line:?}:\n{report}").into());
        }
    }
    if report.matches("neighbour entry").count() != agents.len() {
        return Err(format!("lbctl cleanup reports other neighbour entries:\n{report}").into());
    }
    let table = neighbours(node1)?;
    if !all_gone(&table) {
        return Err(format!("lbctl cleanup left the agent's entries: {table:#?}").into());
    }
    let kept_permanent = find(&table, "192.168.81.98", "eth0").is_some_and(|e| e.permanent);
    let kept_learned = find(&table, "192.168.81.99", "eth0").is_some_and(|e| e.extern_learn);
    if !kept_permanent || !kept_learned {
        return Err(format!("lbctl cleanup removed entries it did not create: {table:#?}").into());
    }
    Ok(())
}

fn agent_refreshed_entries() -> Result<(), Failed> {
    let cluster = Cluster::new("refresh", 82)?;
    let (node1, node2) = (&cluster.node1, &cluster.node2);
    let eth0_mac = mac(node2, "eth0")?;
    let agent = cluster.agent(
        &["l2NeighDiscovery.refreshPeriod=1s"],
        &[("LB_ASSUME_MISSING_FEATURES", "managed-neigh")],
    )?;
    wait_for(
        node1,
        &format!("node2's entry on eth0, extern_learn without managed, resolved to {eth0_mac}"),
        |t| {
            find(t, "192.168.82.12", "eth0")
                .is_some_and(|e| !e.managed && e.extern_learn && e.resolved_to(&eth0_mac))
        },
    )?;
    // Nothing sends to node2, so only the agent's refresh (every second) uses the entry: its
    // age since last use stays small for longer than the kernel's own probe interval (5 s)
    // and the agent's resync (10 s) — without the refresh it would grow past 3 s.
    let watch = Duration::from_secs(12);
    let start = Instant::now();
    let mut samples = 0;
    while start.elapsed() < watch {
        let table = neighbours(node1)?;
        let entry = find(&table, "192.168.82.12", "eth0")
            .ok_or("the entry went away while the agent refreshed it")?;
        match entry.used {
            Some(used) if used <= 3 => samples += 1,
            other => {
                return Err(format!(
                    "the entry was last used {other:?} s ago, {:?} into the watch: the agent \
                     does not refresh it every second: {entry:?}",
                    start.elapsed()
                )
                .into())
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if samples < 10 {
        return Err(format!("only {samples} samples of the entry in {watch:?}").into());
    }

    // Restarted with neighbour discovery off, the agent removes its predecessor's entries.
    cluster.stop(agent)?;
    let _agent = cluster.agent(&["l2NeighDiscovery.enabled=false"], &[])?;
    wait_for(
        node1,
        "the entry removed by an agent started with l2NeighDiscovery.enabled=false",
        |t| find(t, "192.168.82.12", "eth0").is_none(),
    )?;
    Ok(())
}
