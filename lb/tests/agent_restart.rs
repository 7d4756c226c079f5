//! Restart without disruption: with long-lived TCP connections open and a steady stream of new
//! TCP and UDP flows running, through socket-LB (a pod to the ClusterIP) and through NodePort
//! (another node to this node's address), `lb-agent` is SIGKILLed, a backend is added while no
//! agent runs, and the agent is started again. No established connection breaks, no new flow
//! fails at any moment, the restarted agent adopts the pinned state (the backend that stayed
//! keeps its id) and then corrects it (the added backend is programmed and answers).
//!
//! Without root the test is reported as ignored, with a line saying why; under `CI=true` it
//! fails instead, since CI must run this tier.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb::datapath::ServiceMaps;
use libtest_mimic::Failed;
use netsim::{ClientMode, HeldClient, NodeSpec, PodSpec, Proto, Reply, Topology};
use support::{ScratchDir, TestBpffs, TestFn};

#[allow(
    dead_code,
    reason = "the guards this binary does not use serve the other tiers"
)]
mod support;

/// How long each wait for the agent or the traffic may take.
const WITHIN: Duration = Duration::from_secs(30);
/// Successful new flows each stream must make in each phase (before the kill, while no agent
/// runs, after the restart).
const FLOWS_PER_PHASE: usize = 25;
const CLUSTER_IP: &str = "10.96.6.10";
const NODE_IP: &str = "192.168.83.11";
const FIRST_BACKEND: &str = "10.83.1.9";
const ADDED_BACKEND: &str = "10.83.1.10";

fn main() {
    let tests: [(&str, TestFn); 1] = [(
        "restart::sigkill_and_restart_under_traffic_breaks_no_connection_and_fails_no_flow",
        restart_under_traffic,
    )];
    support::run_tier("agent restart", tests.into());
}

/// A NodePort service with TCP 80 (node port 30080) and UDP 53 (30053), to these backends.
fn service_yaml(backends: &[&str]) -> String {
    let endpoints: Vec<String> = backends
        .iter()
        .map(|a| format!("{{addresses: [{a}], conditions: {{ready: true}}}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
         spec:\n  type: NodePort\n  clusterIP: {CLUSTER_IP}\n  ports:\n  \
         - {{name: http, port: 80, nodePort: 30080, protocol: TCP, targetPort: 8080}}\n  \
         - {{name: dns, port: 53, nodePort: 30053, protocol: UDP, targetPort: 8053}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: web-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\n\
         addressType: IPv4\n\
         ports: [{{name: http, port: 8080, protocol: TCP}}, {{name: dns, port: 8053, protocol: UDP}}]\n\
         endpoints: [{}]\n",
        endpoints.join(", ")
    )
}

/// What a stream of new flows has seen so far.
#[derive(Default)]
struct Tally {
    ok: usize,
    /// Identities that answered.
    identities: std::collections::BTreeSet<String>,
    /// The failed exchanges' lines, with how many successes came before each.
    failures: Vec<String>,
}

/// `netsim-client MODE TARGET` making new flows one after another in `place` until dropped,
/// its replies tallied.
struct FlowStream {
    what: String,
    tally: Arc<Mutex<Tally>>,
    _process: netsim::Process,
}

impl FlowStream {
    fn start(place: &netsim::Place, mode: ClientMode, target: SocketAddr) -> Result<Self, Failed> {
        let mut cmd = Command::new(netsim::binary_path("netsim-client")?);
        cmd.args([mode.as_arg(), &target.to_string(), "100000000"])
            .args(["--timeout-ms", "2000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut process = place.spawn(cmd)?;
        let out = process.child_mut().stdout.take().ok_or("no stdout")?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let counted = Arc::clone(&tally);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut t = counted.lock().unwrap();
                match serde_json::from_str::<Reply>(&line) {
                    Ok(reply) if reply.error.is_none() && reply.answer.is_some() => {
                        t.ok += 1;
                        if let Some(id) = reply.identity() {
                            t.identities.insert(id.to_owned());
                        }
                    }
                    _ => {
                        let after = t.ok;
                        t.failures.push(format!("after {after} good flows: {line}"));
                    }
                }
            }
        });
        Ok(FlowStream {
            what: format!("{} {target} from {}", mode.as_arg(), place.name()),
            tally,
            _process: process,
        })
    }

    fn ok(&self) -> usize {
        self.tally.lock().unwrap().ok
    }
}

/// Waits until every stream has made `more` successful flows beyond what it had.
fn wait_for_flows(streams: &[FlowStream], more: usize, phase: &str) -> Result<(), Failed> {
    let from: Vec<usize> = streams.iter().map(FlowStream::ok).collect();
    let deadline = Instant::now() + WITHIN;
    loop {
        let behind: Vec<&str> = streams
            .iter()
            .zip(&from)
            .filter(|(s, &f)| s.ok() < f + more)
            .map(|(s, _)| s.what.as_str())
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{phase}: fewer than {more} new flows within {WITHIN:?}: {behind:?}"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the agent's log has `count` lines containing `text`.
fn wait_for_log(log: &std::path::Path, text: &str, count: usize) -> Result<(), Failed> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let have = std::fs::read_to_string(log).unwrap_or_default();
        if have.lines().filter(|l| l.contains(text)).count() >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the agent did not log {text:?} {count} times:\n{have}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Backend address → id, as the pinned maps hold them now.
fn backend_ids(pin_dir: &std::path::Path) -> Result<Vec<(String, u32)>, Failed> {
    let contents = ServiceMaps::open_pinned(pin_dir)?.read()?;
    let mut out: Vec<(String, u32)> = contents
        .frontends()
        .into_iter()
        .flat_map(|f| f.backends)
        .map(|(id, addr, _)| (addr.ip.to_string(), id))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Sends once more on each held connection; each must answer from the backend it had.
fn held_still_answer(held: &mut [(HeldClient, String)], phase: &str) -> Result<(), Failed> {
    for (client, identity) in held.iter_mut() {
        let reply = client.send()?;
        if reply.identity() != Some(identity.as_str()) {
            return Err(format!(
                "{phase}: an established connection to {identity} broke: {reply:?}"
            )
            .into());
        }
    }
    Ok(())
}

fn restart_under_traffic() -> Result<(), Failed> {
    let mut topology = Topology::new()?;
    let node = topology.add_node(
        NodeSpec::new("rst")
            .eth0(format!("{NODE_IP}/24").parse()?)
            .pod_cidr("10.83.1.0/24".parse()?),
    )?;
    let outside = topology.add_node(NodeSpec::new("rstx").eth0("192.168.83.12/24".parse()?))?;
    let client = topology.add_pod(&node, PodSpec::new("rst-c", "10.83.1.5".parse()?))?;
    let first = topology.add_pod(&node, PodSpec::new("rst-b1", FIRST_BACKEND.parse()?))?;
    let added = topology.add_pod(&node, PodSpec::new("rst-b2", ADDED_BACKEND.parse()?))?;
    let mut servers = Vec::new();
    for (pod, identity) in [(&first, "b1"), (&added, "b2")] {
        let ip = pod.ipv4();
        servers.push(
            pod.place()
                .server(Proto::Tcp, SocketAddr::new(ip.into(), 8080), identity)?,
        );
        servers.push(
            pod.place()
                .server(Proto::Udp, SocketAddr::new(ip.into(), 8053), identity)?,
        );
    }

    let bpffs = TestBpffs::new("agent-restart")?;
    let scratch = ScratchDir::named("agent-restart")?;
    let manifests = scratch.0.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    for (name, address) in [("rst", NODE_IP), ("rstx", "192.168.83.12")] {
        std::fs::write(
            manifests.join(format!("node-{name}.yaml")),
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n\
                 status: {{addresses: [{{type: InternalIP, address: {address}}}]}}\n"
            ),
        )?;
    }
    std::fs::write(manifests.join("web.yaml"), service_yaml(&[FIRST_BACKEND]))?;
    let log = scratch.0.join("agent.log");
    let pin_dir = bpffs.path.join(lb::agent::PIN_SUBDIR);
    let agent = |log: &std::path::Path| -> Result<netsim::Process, Failed> {
        let mut cmd = support::agent::lb_agent(&bpffs, &node, &manifests, &scratch.0.join("state"));
        cmd.args([
            "--set",
            "kubeProxyReplacement=true",
            "--set",
            "devices=eth0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?,
        );
        Ok(node.spawn(cmd)?)
    };

    let running = agent(&log)?;
    wait_for_log(&log, "datapath ready", 1)?;
    let cluster_tcp: SocketAddr = format!("{CLUSTER_IP}:80").parse()?;
    let cluster_udp: SocketAddr = format!("{CLUSTER_IP}:53").parse()?;
    let node_tcp: SocketAddr = format!("{NODE_IP}:30080").parse()?;
    let node_udp: SocketAddr = format!("{NODE_IP}:30053").parse()?;

    let mut held = Vec::new();
    for (place, target) in [(client.place(), cluster_tcp), (outside.place(), node_tcp)] {
        let (conn, reply) = HeldClient::open(place, ClientMode::Tcp, target)?;
        let identity = reply
            .identity()
            .ok_or_else(|| format!("no connection to {target} from {}: {reply:?}", place.name()))?
            .to_owned();
        held.push((conn, identity));
    }
    let streams = vec![
        FlowStream::start(client.place(), ClientMode::Tcp, cluster_tcp)?,
        FlowStream::start(client.place(), ClientMode::UdpConnected, cluster_udp)?,
        FlowStream::start(outside.place(), ClientMode::Tcp, node_tcp)?,
        FlowStream::start(outside.place(), ClientMode::UdpConnected, node_udp)?,
    ];
    wait_for_flows(&streams, FLOWS_PER_PHASE, "before the kill")?;
    let ids_before = backend_ids(&pin_dir)?;

    // SIGKILL, then a change while no agent runs: the pinned datapath keeps serving.
    drop(running);
    std::fs::write(
        manifests.join("web.yaml"),
        service_yaml(&[FIRST_BACKEND, ADDED_BACKEND]),
    )?;
    wait_for_flows(&streams, FLOWS_PER_PHASE, "with the agent killed")?;
    held_still_answer(&mut held, "with the agent killed")?;

    let _restarted = agent(&log)?;
    wait_for_log(&log, "datapath ready", 2)?;
    wait_for_flows(&streams, FLOWS_PER_PHASE, "after the restart")?;
    held_still_answer(&mut held, "after the restart")?;

    let ids_after = backend_ids(&pin_dir)?;
    let kept = ids_before
        .iter()
        .all(|(addr, id)| ids_after.iter().any(|(a, i)| a == addr && i == id));
    if !kept || !ids_after.iter().any(|(a, _)| a == ADDED_BACKEND) {
        return Err(format!(
            "the restarted agent did not adopt and correct the maps: backends {ids_before:?} \
             before, {ids_after:?} after"
        )
        .into());
    }
    // The added backend answers new flows (both backends share them at random).
    let deadline = Instant::now() + WITHIN;
    while !streams[0].tally.lock().unwrap().identities.contains("b2") {
        if Instant::now() > deadline {
            return Err("the backend added while no agent ran never answered".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let failures: Vec<String> = streams
        .iter()
        .flat_map(|s| {
            let t = s.tally.lock().unwrap();
            t.failures
                .iter()
                .map(|f| format!("{}: {f}", s.what))
                .collect::<Vec<_>>()
        })
        .collect();
    let counts: Vec<String> = streams
        .iter()
        .map(|s| format!("{}: {} flows", s.what, s.ok()))
        .collect();
    eprintln!("restart under traffic: {}", counts.join(", "));
    if !failures.is_empty() {
        return Err(format!(
            "{} new flows failed:\n{}",
            failures.len(),
            failures.join("\n")
        )
        .into());
    }
    for (conn, _) in held {
        conn.close()?;
    }
    drop(servers);
    Ok(())
}
