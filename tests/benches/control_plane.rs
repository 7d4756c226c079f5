//! `cargo xtask bench control-plane`: how fast `lb-agent` turns the API server's objects into
//! the datapath, and what memory it takes to hold them. Root.
//!
//! For 10 and for 10 000 Services (each a ClusterIP with one port and an EndpointSlice of 10
//! ready endpoints), in a netsim node of its own (its network namespace, cgroup and bpffs) with
//! the test API server running inside that namespace:
//!
//! - cold start: the objects are created first (parallel requests), then `lb-agent` starts;
//!   measured is the time from its start until every Service's frontend is in the pinned
//!   services map with its 10 backends, and from the agent's log (its `listed` lines at debug
//!   level and `datapath ready`, which logs the steps' times) how much of that was listing,
//!   translating, loading the programs and writing the maps;
//! - single change: 200 writes that add an endpoint to one Service's EndpointSlice or remove it
//!   again (a JSON merge patch of its endpoints, sent with the kube client so no client start
//!   is measured); measured is the time from the write's response to the services map holding
//!   the new backend count (the map polled every 50 µs), and how much of that the agent's
//!   own pass took (each `maps updated` line logs it; the rest is the API server's watch
//!   delivering the change);
//! - the agent's peak RSS (VmHWM) after the cold start and its RSS after the changes.
//!
//! The anchors are kube-proxy's: its network programming latency at scale (p50 about 5 s,
//! KEP-3453) and the time to add one rule to iptables with 10 000 Services (about 9.5 s).

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use ebpf::maps::{LbKey, LbService};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

/// Backends per Service.
const BACKENDS: usize = 10;
/// Single changes per size.
const CHANGES: usize = 200;
/// Requests in flight while creating the objects.
const PARALLEL: usize = 32;
/// How long the agent may take to program everything.
const PROGRAM_DEADLINE: Duration = Duration::from_secs(120);
/// How long one change may take to reach the maps.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// `bpf.lbMapMax`: room for 10 000 services of 10 backends.
const MAP_MAX: u32 = 262_144;
/// The frontend port of every Service.
const PORT: u16 = 80;
/// The node's name and address.
const NODE: &str = "cp-node";
const NODE_ADDRESS: &str = "192.168.77.2";

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("bench control-plane needs root (a netsim node, a bpffs, BPF programs)");
    }
    let agent_bin = sibling_binary("lb-agent")?;
    let mut results = Vec::new();
    for count in [10, 10_000] {
        eprintln!("control-plane: {count} services…");
        results.push(run_size(count, &agent_bin)?);
    }
    print_report(&results);
    Ok(())
}

/// The figures of one size.
struct SizeResult {
    services: usize,
    created_in: Duration,
    cold_start: Duration,
    listed_after: Option<f64>,
    ready_after: Option<f64>,
    /// From `datapath ready`: seconds loading the programs (beside the lists), translating,
    /// attaching the programs, writing the maps.
    start_steps: [Option<f64>; 4],
    /// From the `maps updated` lines after the first: each pass's time in the agent
    /// (translation and reconciliation), sorted.
    agent_passes: Vec<Duration>,
    peak_rss_kib: u64,
    rss_after_kib: u64,
    /// The CPU time lb-agent had used (all its threads) when every frontend was in the maps:
    /// far below the cold start's wall time when the agent waits on the API server.
    cpu_at_programmed: Duration,
    latencies: Vec<Duration>,
}

/// A binary built beside this bench (`target/release/NAME`, built by xtask first).
fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench binary has no target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run `cargo xtask bench control-plane` (it builds the release \
             binaries first)",
            path.display()
        );
    }
    Ok(path)
}

fn run_size(count: usize, agent_bin: &Path) -> Result<SizeResult> {
    let mut topology = netsim::Topology::new()?;
    let node = topology.add_node(
        netsim::NodeSpec::new(&format!("cp{count}")).eth0(format!("{NODE_ADDRESS}/24").parse()?),
    )?;
    let bpffs = e2e::agent::Bpffs::mount(
        std::env::temp_dir().join(format!("lb-bench-bpffs-{}-cp{count}", std::process::id())),
    )?;
    let scratch = tempfile::Builder::new()
        .prefix("lb-bench-control-plane-")
        .tempdir()?;
    // The API server and the client run inside the node's namespace, so the agent reaches the
    // server on its loopback as a pod-network-less node agent would reach a local one.
    let node_ref = &node;
    node.in_netns(move || -> Result<SizeResult> {
        let server = e2e::ApiServer::start()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(client_for(&server.kubeconfig()))?;
        let created = Instant::now();
        runtime.block_on(create_objects(&client, count))?;
        let created_in = created.elapsed();
        eprintln!(
            "control-plane: {count} services: created in {:.1} s",
            created_in.as_secs_f64()
        );

        let log_path = scratch.path().join("agent.log");
        let mut cmd = Command::new(agent_bin);
        cmd.arg("--set")
            .arg(format!("bpf.root={}", bpffs.path.display()))
            .arg("--set")
            .arg(format!(
                "cgroup.hostRoot={}",
                node_ref.cgroup_path().display()
            ))
            // 10 000 services take 110 000 entries of the services map (a head and 10
            // slots each): more than the default 65 536.
            .arg("--set")
            .arg(format!("bpf.lbMapMax={MAP_MAX}"))
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .arg("--node")
            .arg(NODE)
            .arg("--state-dir")
            .arg(scratch.path().join("state"))
            .env("RUST_LOG", "info,lb::source::api=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?);
        let started_wall = SystemTime::now();
        let started = Instant::now();
        let mut agent = node_ref.spawn(cmd)?;
        let pid = agent.pid();
        let pin_dir = bpffs.path.join(lb::agent::PIN_SUBDIR);
        let services = wait_for_map(&pin_dir, started + PROGRAM_DEADLINE, &log_path)?;
        for i in 0..count {
            wait_for_count(
                &services,
                i,
                BACKENDS as u16,
                started + PROGRAM_DEADLINE,
                &log_path,
            )?;
        }
        let cold_start = started.elapsed();
        let peak_rss_kib = proc_status(pid, "VmHWM")?;
        let cpu_at_programmed = proc_cpu(pid)?;
        eprintln!(
            "control-plane: {count} services: programmed {:.3} s after the agent started",
            cold_start.as_secs_f64()
        );

        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let mut latencies = Vec::with_capacity(CHANGES);
        // The changes go round the services spread over the set.
        for change in 0..CHANGES {
            let service = (change / 2 * 7919) % count;
            let grow = change % 2 == 0;
            let backends = if grow { BACKENDS + 1 } else { BACKENDS };
            let patch = json!({ "endpoints": endpoints(service, backends) });
            runtime.block_on(slices.patch(
                &slice_name(service),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ))?;
            let accepted = Instant::now();
            wait_for_count(
                &services,
                service,
                backends as u16,
                accepted + CHANGE_DEADLINE,
                &log_path,
            )?;
            latencies.push(accepted.elapsed());
        }
        // Read now: the agent logs `datapath ready` only after the maps are written.
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let (listed_after, ready_after) = log_marks(&log, started_wall);
        let ready_line = log.lines().find(|l| l.contains("datapath ready"));
        let start_steps = ["loaded_in", "translated_in", "attached_in", "written_in"]
            .map(|field| ready_line.and_then(|l| log_duration(l, field)));
        let mut agent_passes: Vec<Duration> = log
            .lines()
            .filter(|l| l.contains("maps updated"))
            .skip(1)
            .filter_map(|l| log_duration(l, "took"))
            .map(Duration::from_secs_f64)
            .collect();
        agent_passes.sort();
        // A second for the allocator to give back what the changes' passes freed.
        std::thread::sleep(Duration::from_secs(1));
        let rss_after_kib = proc_status(pid, "VmRSS")?;
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let status = agent.wait_timeout(Duration::from_secs(10))?;
        if !status.success() {
            bail!(
                "lb-agent exited with {status} on SIGTERM:\n{}",
                tail(&log_path)
            );
        }
        // The datapath stays pinned after the agent exits; take it away before the bpffs.
        lb::agent::cleanup(&scratch.path().join("state"))?;
        drop(server);
        Ok(SizeResult {
            services: count,
            created_in,
            cold_start,
            listed_after,
            ready_after,
            start_steps,
            agent_passes,
            peak_rss_kib,
            rss_after_kib,
            cpu_at_programmed,
            latencies,
        })
    })?
}

async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The Node and `count` Services with their EndpointSlices.
async fn create_objects(client: &Client, count: usize) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": { "name": NODE },
    }))?;
    nodes.create(&PostParams::default(), &node).await?;
    let status =
        json!({ "status": { "addresses": [{ "type": "InternalIP", "address": NODE_ADDRESS }] } });
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..count)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                let service: Service = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": { "name": service_name(i), "namespace": "default" },
                    "spec": {
                        "type": "ClusterIP",
                        "clusterIP": cluster_ip(i).to_string(),
                        "ports": [{ "name": "http", "port": PORT, "protocol": "TCP", "targetPort": 8080 }],
                    },
                }))?;
                services.create(&PostParams::default(), &service).await?;
                let slice: EndpointSlice = serde_json::from_value(json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {
                        "name": slice_name(i), "namespace": "default",
                        "labels": { "kubernetes.io/service-name": service_name(i) },
                    },
                    "addressType": "IPv4",
                    "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
                    "endpoints": endpoints(i, BACKENDS),
                }))?;
                slices.create(&PostParams::default(), &slice).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

fn slice_name(i: usize) -> String {
    format!("svc-{i}-abcde")
}

/// Service `i`'s ClusterIP, in 10.96.0.0/12.
fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32)
}

/// `n` ready endpoints of service `i` (each service its own addresses).
fn endpoints(i: usize, n: usize) -> serde_json::Value {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i as u32) * 16;
    (0..n)
        .map(|b| {
            json!({
                "addresses": [Ipv4Addr::from(base + b as u32).to_string()],
                "conditions": { "ready": true, "serving": true, "terminating": false },
            })
        })
        .collect()
}

/// The services map's slot-0 key of service `i`.
fn frontend_key(i: usize) -> LbKey {
    LbKey {
        address: std::net::IpAddr::V4(cluster_ip(i)).into(),
        dport: PORT.to_be(),
        backend_slot: 0,
        proto: 6,
        scope: ebpf::maps::scope::EXT,
        pad: [0; 2],
    }
}

type ServicesMap = HashMap<MapData, LbKey, LbService>;

/// The pinned services map, once the agent has pinned it.
fn wait_for_map(pin_dir: &Path, deadline: Instant, log: &Path) -> Result<ServicesMap> {
    let path = pin_dir.join(ebpf::maps::LB_SERVICES);
    loop {
        if path.exists() {
            let data = MapData::from_pin(&path)?;
            return Ok(HashMap::try_from(Map::HashMap(data))?);
        }
        if Instant::now() > deadline {
            bail!("lb-agent pinned no services map:\n{}", tail(log));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Polls until service `i`'s frontend has `count` active backends.
fn wait_for_count(
    map: &ServicesMap,
    i: usize,
    count: u16,
    deadline: Instant,
    log: &Path,
) -> Result<()> {
    let key = frontend_key(i);
    loop {
        if map.get(&key, 0).is_ok_and(|s| s.count == count) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "service {i} did not reach {count} backends in the maps in time:\n{}",
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// A field of /proc/PID/status in KiB.
fn proc_status(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The user and system CPU time process `pid` has used, from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command's closing parenthesis, from the state (field 3) on.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |field: usize| -> Result<u64> {
        fields
            .get(field - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no field {field} in /proc/{pid}/stat"))
    };
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        bail!("sysconf(_SC_CLK_TCK) gave {per_second}");
    }
    let per_second = per_second as f64;
    Ok(Duration::from_secs_f64(
        (ticks(14)? + ticks(15)?) as f64 / per_second,
    ))
}

/// Seconds after `started` of the last `listed` line and of `datapath ready` in the agent's
/// log (its lines start with an RFC 3339 UTC timestamp).
fn log_marks(log: &str, started: SystemTime) -> (Option<f64>, Option<f64>) {
    let start = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        % 86_400.0;
    let at = |line: &str| -> Option<f64> {
        // 2026-12-03T12:30:01.123456Z
        let time = line.get(11..)?.split(['Z', ' ']).next()?;
        let mut parts = time.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s - start)
    };
    let listed = log
        .lines()
        .filter(|l| l.contains(" listed"))
        .filter_map(at)
        .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.max(t))));
    let ready = log
        .lines()
        .find(|l| l.contains("datapath ready"))
        .and_then(at);
    (listed, ready)
}

/// The duration logged as `field=12.3ms` (Rust's `Debug` of a `Duration`) in `line`, in
/// seconds.
fn log_duration(line: &str, field: &str) -> Option<f64> {
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))?;
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = value.split_at(split);
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * scale)
}

fn tail(log: &Path) -> String {
    let mut text = String::new();
    let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn print_report(results: &[SizeResult]) {
    println!();
    println!("Single change: write response -> services map holds the new backend count");
    println!(
        "({CHANGES} changes, an endpoint added to or removed from one service's EndpointSlice)"
    );
    println!("| services | p50 | p99 | max | lb-agent's pass (its log): p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let mut sorted = r.latencies.clone();
        sorted.sort();
        let agent = |p: f64| {
            if r.agent_passes.is_empty() {
                "?".to_owned()
            } else if p >= 100.0 {
                ms(*r.agent_passes.last().expect("not empty"))
            } else {
                ms(percentile(&r.agent_passes, p))
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.services,
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 99.0)),
            ms(*sorted.last().expect("changes were made")),
            agent(50.0),
            agent(99.0),
            agent(100.0)
        );
    }
    println!("| kube-proxy (iptables), at scale | ~5 s (KEP-3453) | | | | | |");
    println!("| kube-proxy (iptables), one rule at 10 000 services | ~9.5 s | | | | | |");
    println!();
    println!("Cold start: lb-agent started with the objects already in the API server");
    println!(
        "| services x {BACKENDS} backends | objects created in | all frontends in the maps | \
         last list done | datapath ready (log) | peak RSS (VmHWM) | RSS after the changes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let secs = |v: Option<f64>| v.map_or("?".to_owned(), |s| format!("{s:.3} s"));
    for r in results {
        println!(
            "| {} | {:.1} s | {:.3} s | {} | {} | {:.1} MiB | {:.1} MiB |",
            r.services,
            r.created_in.as_secs_f64(),
            r.cold_start.as_secs_f64(),
            secs(r.listed_after),
            secs(r.ready_after),
            r.peak_rss_kib as f64 / 1024.0,
            r.rss_after_kib as f64 / 1024.0
        );
    }
    println!();
    println!("Cold start, step by step (from lb-agent's `datapath ready` line)");
    println!(
        "| services | load the programs (beside the lists) | then translate | attach | write \
         the maps | lb-agent CPU until programmed |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let [load, translate, attach, write] = r.start_steps.map(secs);
        println!(
            "| {} | {load} | {translate} | {attach} | {write} | {:.2} s |",
            r.services,
            r.cpu_at_programmed.as_secs_f64()
        );
    }
    println!("Targets: p99 single change < 10 ms; 10 000 services in < 1 s; RSS < 100 MiB.");
}
