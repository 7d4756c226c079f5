//! Churn: `lb-agent` follows thousands of random Service and EndpointSlice changes — services
//! deleted while their slices keep changing, recreated with other ports, slices split, emptied
//! and removed — and when the changes stop its maps hold exactly what Kubernetes' rules say the
//! final objects mean, with no entry left over from an earlier state (the documents' known issue
//! of backend entries leaked by a deletion racing endpoint updates). The same holds when the agent
//! is SIGKILLed in the middle of the churn and started again while the churn goes on. And a
//! service that does not fit `bpf.lbMapMax` is refused by name while the others keep working.
//!
//! The expected frontends come from the test's own model of the objects, by Kubernetes' rules
//! (a service port's backends are the ready endpoints of its slices, at the slice port of the
//! same name and protocol), not from the agent's translation code.
//!
//! Without root the tests are reported as ignored, with a line saying why; under `CI=true` they
//! fail instead, since CI must run this tier.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lb::datapath::{MapContents, ServiceMaps};
use libtest_mimic::Failed;
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use support::agent::{lb_agent, stop_with_sigterm, AgentNode};
use support::TestFn;

#[allow(
    dead_code,
    reason = "the guards this binary does not use serve the other tiers"
)]
mod support;

/// How long the agent may take to catch up once the changes stop.
const CONVERGED_WITHIN: Duration = Duration::from_secs(30);
/// Services the churn plays with (few, so deletions and recreations of the same one are common).
const SERVICES: usize = 12;
/// Slices each service may have.
const SLICE_SUFFIXES: [char; 2] = ['a', 'b'];
/// Endpoint addresses the slices draw from.
const ENDPOINT_POOL: u8 = 24;

fn main() {
    let tests: [(&str, TestFn); 3] = [
        (
            "churn::random_service_and_slice_changes_leave_exactly_the_desired_entries",
            churn_converges,
        ),
        (
            "churn::an_agent_killed_mid_churn_restarts_and_leaves_exactly_the_desired_entries",
            churn_across_a_kill,
        ),
        (
            "churn::a_full_map_refuses_the_new_service_by_name_and_keeps_the_others",
            full_map,
        ),
    ];
    support::run_tier("agent churn", tests.into());
}

/// A port a service may declare: name, protocol and the service port numbers it may take. Two
/// names share port 53 with both protocols, as DNS does.
const PORT_CATALOGUE: [(&str, &str, [u16; 2]); 4] = [
    ("http", "TCP", [80, 81]),
    ("dns", "UDP", [53, 53]),
    ("dns-tcp", "TCP", [53, 53]),
    ("metrics", "TCP", [9090, 9091]),
];

/// One service port: name, protocol, port.
#[derive(Clone, Debug)]
struct ServicePort {
    name: &'static str,
    protocol: &'static str,
    port: u16,
}

/// One slice: its ports (name, protocol, target port) and endpoints (address, ready).
#[derive(Clone, Debug)]
struct Slice {
    ports: Vec<(&'static str, &'static str, u16)>,
    endpoints: Vec<(String, bool)>,
}

/// The objects as the test last wrote them to the manifest directory.
#[derive(Default)]
struct Cluster {
    services: BTreeMap<usize, Vec<ServicePort>>,
    slices: BTreeMap<(usize, char), Slice>,
}

impl Cluster {
    /// Frontend (`ip:port/PROTO`) → its backends (`ip:port`), by Kubernetes' rules.
    fn expected(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for (&svc, ports) in &self.services {
            for p in ports {
                let backends = SLICE_SUFFIXES
                    .iter()
                    .filter_map(|&s| self.slices.get(&(svc, s)))
                    .flat_map(|slice| {
                        let target = slice
                            .ports
                            .iter()
                            .find(|(name, proto, _)| *name == p.name && *proto == p.protocol)
                            .map(|(_, _, port)| *port);
                        slice.endpoints.iter().filter_map(move |(addr, ready)| {
                            Some(format!("{addr}:{}", target.filter(|_| *ready)?))
                        })
                    })
                    .collect();
                out.insert(
                    format!("{}:{}/{}", cluster_ip(svc), p.port, p.protocol),
                    backends,
                );
            }
        }
        out
    }
}

fn cluster_ip(svc: usize) -> String {
    format!("10.96.9.{}", 10 + svc)
}

fn service_file(svc: usize) -> String {
    format!("svc-{svc}.yaml")
}

fn slice_file(svc: usize, suffix: char) -> String {
    format!("svc-{svc}-{suffix}.yaml")
}

fn service_yaml(svc: usize, ports: &[ServicePort]) -> String {
    let ports: String = ports
        .iter()
        .map(|p| {
            format!(
                "  - {{name: {}, port: {}, protocol: {}, targetPort: {}}}\n",
                p.name, p.port, p.protocol, p.name
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{svc}, namespace: default}}\n\
         spec:\n  type: ClusterIP\n  clusterIP: {}\n  ports:\n{ports}",
        cluster_ip(svc)
    )
}

fn slice_yaml(svc: usize, suffix: char, slice: &Slice) -> String {
    let ports: Vec<String> = slice
        .ports
        .iter()
        .map(|(name, proto, port)| format!("{{name: {name}, port: {port}, protocol: {proto}}}"))
        .collect();
    let endpoints: Vec<String> = slice
        .endpoints
        .iter()
        .map(|(a, ready)| format!("{{addresses: [{a}], conditions: {{ready: {ready}}}}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: svc-{svc}-{suffix}\n  namespace: default\n  \
         labels: {{kubernetes.io/service-name: svc-{svc}}}\n\
         addressType: IPv4\nports: [{}]\nendpoints: [{}]\n",
        ports.join(", "),
        endpoints.join(", ")
    )
}

/// Writes the random changes into a manifest directory, each file replaced whole by a rename
/// (as a configuration tool would), and keeps [`Cluster`] in step.
struct Churn<'a> {
    dir: &'a Path,
    rng: TestRng,
    cluster: Cluster,
    changes: usize,
}

impl<'a> Churn<'a> {
    fn new(dir: &'a Path, seed: u64) -> Self {
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Churn {
            dir,
            rng: TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
            cluster: Cluster::default(),
            changes: 0,
        }
    }

    /// Makes `count` changes in bursts of up to 40 with pauses of up to 150 ms between them, so
    /// the agent programs many intermediate states, some mid-burst.
    fn run(&mut self, count: usize) -> Result<(), Failed> {
        let mut left = count;
        while left > 0 {
            let burst = self.rng.random_range(1..=40).min(left);
            for _ in 0..burst {
                self.one_change()?;
            }
            left -= burst;
            // Pacing the writer, not waiting for the agent: the agent is never waited on here.
            std::thread::sleep(Duration::from_millis(self.rng.random_range(0..150)));
        }
        Ok(())
    }

    fn one_change(&mut self) -> Result<(), Failed> {
        self.changes += 1;
        let svc = self.rng.random_range(0..SERVICES);
        let suffix = SLICE_SUFFIXES[self.rng.random_range(0..SLICE_SUFFIXES.len())];
        match self.rng.random_range(0..10) {
            // Delete the service, its slices left in place (and changed by later steps).
            0 => {
                self.cluster.services.remove(&svc);
                self.remove(&service_file(svc))
            }
            // Delete a slice.
            1 => {
                self.cluster.slices.remove(&(svc, suffix));
                self.remove(&slice_file(svc, suffix))
            }
            // Create or change the service: a new set of ports.
            2 | 3 => {
                let ports = self.random_ports();
                let text = service_yaml(svc, &ports);
                self.cluster.services.insert(svc, ports);
                self.write(&service_file(svc), &text)
            }
            // Create or change a slice.
            _ => {
                let slice = self.random_slice();
                let text = slice_yaml(svc, suffix, &slice);
                self.cluster.slices.insert((svc, suffix), slice);
                self.write(&slice_file(svc, suffix), &text)
            }
        }
    }

    fn random_ports(&mut self) -> Vec<ServicePort> {
        loop {
            let mut ports = Vec::new();
            for &(name, protocol, choices) in &PORT_CATALOGUE {
                if self.rng.random_bool(0.5) {
                    let port = choices[self.rng.random_range(0..2)];
                    ports.push(ServicePort {
                        name,
                        protocol,
                        port,
                    });
                }
            }
            if !ports.is_empty() {
                return ports;
            }
        }
    }

    fn random_slice(&mut self) -> Slice {
        let mut ports = Vec::new();
        for &(name, protocol, _) in &PORT_CATALOGUE {
            if self.rng.random_bool(0.7) {
                ports.push((name, protocol, self.rng.random_range(8080..8083)));
            }
        }
        let mut addrs = BTreeSet::new();
        for _ in 0..self.rng.random_range(0..6) {
            addrs.insert(self.rng.random_range(1..=ENDPOINT_POOL));
        }
        let endpoints = addrs
            .into_iter()
            .map(|a| (format!("10.0.9.{a}"), self.rng.random_bool(0.8)))
            .collect();
        Slice { ports, endpoints }
    }

    fn write(&self, file: &str, text: &str) -> Result<(), Failed> {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.dir.join(file))?;
        Ok(())
    }

    fn remove(&self, file: &str) -> Result<(), Failed> {
        match std::fs::remove_file(self.dir.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// The frontends in `contents` as [`Cluster::expected`] writes them, or the entries that no
/// desired state could have produced: backends no slot names, reverse NAT entries no frontend
/// uses, slots outside a frontend's counts, affinity or Maglev entries these services never ask for.
fn programmed(contents: &MapContents) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut leaks = Vec::new();
    let frontends = contents.frontends();
    let mut used_backends = BTreeSet::new();
    let mut used_rev_nat = BTreeSet::new();
    let mut slots = BTreeSet::new();
    for f in &frontends {
        used_rev_nat.insert(f.id);
        for (id, _, _) in &f.backends {
            used_backends.insert(*id);
        }
    }
    for (key, value) in &contents.services {
        if key.backend_slot == 0 {
            let counted = u32::from(value.count) + u32::from(value.qcount);
            for slot in 1..=counted {
                slots.insert((*key, slot));
            }
        }
    }
    for (key, value) in &contents.services {
        if key.backend_slot == 0 {
            continue;
        }
        let master = ebpf::maps::LbKey {
            backend_slot: 0,
            ..*key
        };
        if !slots.contains(&(master, u32::from(key.backend_slot))) {
            leaks.push(format!(
                "service slot {} of {:?} (backend {}) outside its frontend's counts",
                key.backend_slot, key, value.backend_id
            ));
        }
    }
    for id in contents.backends.keys() {
        if !used_backends.contains(id) {
            leaks.push(format!(
                "backend {id} ({:?}) is in no service",
                contents.backends[id]
            ));
        }
    }
    for id in contents.reverse_nat.keys() {
        if !used_rev_nat.contains(id) {
            leaks.push(format!("reverse NAT entry {id} belongs to no frontend"));
        }
    }
    if !contents.affinity_match.is_empty() || !contents.maglev.is_empty() {
        leaks.push(format!(
            "{} affinity and {} Maglev entries for services without affinity or Maglev",
            contents.affinity_match.len(),
            contents.maglev.len()
        ));
    }
    if !leaks.is_empty() {
        return Err(leaks.join("\n"));
    }
    Ok(frontends
        .into_iter()
        .map(|f| {
            let addr = f.frontend.addr;
            (
                format!(
                    "{}:{}/{}",
                    addr.ip,
                    addr.port,
                    format!("{:?}", addr.protocol).to_uppercase()
                ),
                f.backends
                    .iter()
                    .map(|(_, b, _)| format!("{}:{}", b.ip, b.port))
                    .collect(),
            )
        })
        .collect())
}

/// Waits until the pinned maps hold exactly `cluster`'s frontends with no leftover entry, or
/// fails showing the difference.
fn wait_converged(pin_dir: &Path, cluster: &Cluster, after: &str) -> Result<(), Failed> {
    let want = cluster.expected();
    let deadline = Instant::now() + CONVERGED_WITHIN;
    loop {
        let have = ServiceMaps::open_pinned(pin_dir)
            .and_then(|m| m.read())
            .map_err(|e| e.to_string())
            .and_then(|c| programmed(&c));
        if matches!(&have, Ok(h) if *h == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let detail = match have {
                Err(leaks) => format!("entries left over:\n{leaks}"),
                Ok(have) => difference(&have, &want),
            };
            return Err(format!("{CONVERGED_WITHIN:?} after {after}: {detail}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn difference(
    have: &BTreeMap<String, BTreeSet<String>>,
    want: &BTreeMap<String, BTreeSet<String>>,
) -> String {
    let mut out = String::from("the maps differ from the objects:\n");
    for f in have.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
        match (have.get(f), want.get(f)) {
            (Some(h), Some(w)) if h == w => {}
            (h, w) => out.push_str(&format!("  {f}: maps {h:?}, objects {w:?}\n")),
        }
    }
    out
}

fn start_agent(node: &AgentNode, log: &Path) -> Result<netsim::Process, Failed> {
    let mut cmd = lb_agent(&node.bpffs, &node.node, &node.manifests, &node.state_dir);
    cmd.arg("--set")
        .arg("kubeProxyReplacement=true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?,
        );
    Ok(node.node.spawn(cmd)?)
}

/// Fails with the agent's log attached, so a CI failure says what the agent saw.
fn with_log(result: Result<(), Failed>, log: &Path) -> Result<(), Failed> {
    result.map_err(|e| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{}\nlast lines of the agent's log:\n{}",
            e.message().unwrap_or("failed"),
            tail.join("\n")
        )
        .into()
    })
}

fn churn_converges() -> Result<(), Failed> {
    let node = AgentNode::new("churn", "192.168.78.11")?;
    let log = node.scratch.0.join("agent.log");
    let seed = support::seed("churn", "LB_CHURN_SEED");
    let mut agent = start_agent(&node, &log)?;
    let mut churn = Churn::new(&node.manifests, seed);
    churn.run(3000)?;
    with_log(
        wait_converged(&node.pin_dir, &churn.cluster, "3000 changes"),
        &log,
    )?;
    stop_with_sigterm(&mut agent, "lb-agent")?;
    // A file removed between the agent's listing and its read is a deletion, not an error.
    let text = std::fs::read_to_string(&log)?;
    if let Some(line) = text.lines().find(|l| l.contains("cannot read")) {
        return Err(format!("the agent reported a removed file as unreadable: {line}").into());
    }
    Ok(())
}

fn churn_across_a_kill() -> Result<(), Failed> {
    let node = AgentNode::new("churnkill", "192.168.79.11")?;
    let log = node.scratch.0.join("agent.log");
    let seed = support::seed("churn-kill", "LB_CHURN_SEED");
    let mut churn = Churn::new(&node.manifests, seed);
    let agent = start_agent(&node, &log)?;
    churn.run(1000)?;
    // SIGKILL (the drop) in the middle of programming, with changes still arriving.
    drop(agent);
    churn.run(300)?;
    let mut agent = start_agent(&node, &log)?;
    churn.run(700)?;
    with_log(
        wait_converged(
            &node.pin_dir,
            &churn.cluster,
            "a SIGKILL and a restart in the middle of 2000 changes",
        ),
        &log,
    )?;
    stop_with_sigterm(&mut agent, "lb-agent")
}

/// With `bpf.lbMapMax=8`, two services of one frontend and two backends each (6 entries of the
/// service map) fit and a third does not: it is refused with an error naming it and the option,
/// the two keep their entries, and once one of them is deleted the third is programmed.
fn full_map() -> Result<(), Failed> {
    let node = AgentNode::new("full", "192.168.80.11")?;
    let log = node.scratch.0.join("agent.log");
    let mut cluster = Cluster::default();
    let two_backends = |svc: usize| Slice {
        ports: vec![("http", "TCP", 8080)],
        endpoints: vec![
            (format!("10.0.9.{}", 2 * svc + 1), true),
            (format!("10.0.9.{}", 2 * svc + 2), true),
        ],
    };
    let http = vec![ServicePort {
        name: "http",
        protocol: "TCP",
        port: 80,
    }];
    let churn = Churn::new(&node.manifests, 0);
    for svc in [1, 2] {
        churn.write(&service_file(svc), &service_yaml(svc, &http))?;
        churn.write(
            &slice_file(svc, 'a'),
            &slice_yaml(svc, 'a', &two_backends(svc)),
        )?;
        cluster.services.insert(svc, http.clone());
        cluster.slices.insert((svc, 'a'), two_backends(svc));
    }
    let mut cmd = lb_agent(&node.bpffs, &node.node, &node.manifests, &node.state_dir);
    cmd.args([
        "--set",
        "kubeProxyReplacement=true",
        "--set",
        "bpf.lbMapMax=8",
        "--set",
        "prometheus.enabled=true",
    ])
    .arg("--set")
    .arg(format!("prometheus.port={}", support::agent::METRICS_PORT))
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log)?);
    let mut agent = node.node.spawn(cmd)?;
    with_log(
        wait_converged(&node.pin_dir, &cluster, "two services"),
        &log,
    )?;
    let before = ServiceMaps::open_pinned(&node.pin_dir)?.read()?;

    // The third does not fit: it is named, and nothing else moves.
    churn.write(&slice_file(3, 'a'), &slice_yaml(3, 'a', &two_backends(3)))?;
    churn.write(&service_file(3), &service_yaml(3, &http))?;
    let refusal = wait_for_log(
        &log,
        "service default/svc-3 not programmed: map lb_services_v1 is full (8 entries, bpf.lbMapMax)",
    )?;
    let after = ServiceMaps::open_pinned(&node.pin_dir)?.read()?;
    if after != before {
        return Err(format!(
            "the maps changed when a service did not fit ({refusal}):\nbefore {before:?}\nafter {after:?}"
        )
        .into());
    }
    with_log(
        wait_converged(&node.pin_dir, &cluster, "a refused third service"),
        &log,
    )?;
    // Counted once (the counter moves just after the refusal's log line).
    wait_for_map_full_count(&node.node, 1.0)?;

    // Room again: the third is programmed.
    churn.remove(&service_file(1))?;
    cluster.services.remove(&1);
    cluster.services.insert(3, http.clone());
    cluster.slices.insert((3, 'a'), two_backends(3));
    with_log(
        wait_converged(
            &node.pin_dir,
            &cluster,
            "the deletion of one of the first two",
        ),
        &log,
    )?;
    wait_for_log(&log, "the maps have room again: service programmed")?;
    // However many passes the refusal lasted, it counted once.
    wait_for_map_full_count(&node.node, 1.0)?;
    stop_with_sigterm(&mut agent, "lb-agent")
}

/// Waits until the agent's log has a line containing `text` and returns it, or fails with the
/// log's end.
fn wait_for_log(log: &Path, text: &str) -> Result<String, Failed> {
    let deadline = Instant::now() + CONVERGED_WITHIN;
    loop {
        let have = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = have.lines().find(|l| l.contains(text)) {
            return Ok(line.to_owned());
        }
        if Instant::now() > deadline {
            return with_log(
                Err(format!("{CONVERGED_WITHIN:?} without the agent logging {text:?}").into()),
                log,
            )
            .map(|()| String::new());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `/metrics` shows `lb_errors_total{kind="map_full"}` at `want`, or fails with
/// the value it last showed.
fn wait_for_map_full_count(node: &netsim::Node, want: f64) -> Result<(), Failed> {
    const SAMPLE: &str = "lb_errors_total{kind=\"map_full\"}";
    let deadline = Instant::now() + CONVERGED_WITHIN;
    loop {
        let have = support::agent::scrape(node).map(|text| support::agent::sample(&text, SAMPLE));
        if matches!(have, Ok(Some(v)) if v == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{SAMPLE} is {have:?}, expected {want}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
