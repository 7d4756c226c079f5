//! The running agent follows its manifest directory: `lb-agent` (not `--once`) inside a netsim
//! node programs a new file, an edited file and a removed file within moments, exits cleanly on
//! SIGTERM leaving the datapath in place, and `lbctl cleanup` then removes it. Its `/healthz`
//! and `/livez` server follows this node's Node object, and a taken address stops it at start.
//! A LoadBalancer service's `healthCheckNodePort` follows its local endpoints and goes with it,
//! and a port taken by another process is logged and opened on a later pass. Its `/metrics`
//! (`prometheus.enabled`) follows the services, backends, syncs and terminating endpoints, and
//! a taken `prometheus.port` stops it at start.
//!
//! Without root the test is reported as ignored, with a line saying why; under `CI=true` it
//! fails instead, since CI must run this tier.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lb::datapath::ServiceMaps;
use libtest_mimic::Failed;
use support::agent::{lb_agent, sample, scrape, stop_with_sigterm, AgentNode, METRICS_PORT};
use support::TestFn;

#[allow(
    dead_code,
    reason = "the guards this binary does not use serve the other tiers"
)]
mod support;

/// How long the agent may take to program a change (it settles 100 ms, then reconciles).
const PROGRAMMED_WITHIN: Duration = Duration::from_secs(15);

fn main() {
    let tests: [(&str, TestFn); 10] = [
        (
            "agent::follows_new_edited_and_removed_manifest_files",
            follows_the_manifest_directory,
        ),
        (
            "agent::more_node_addresses_than_lb_map_max_are_reported_not_fatal",
            many_node_addresses,
        ),
        (
            "agent::a_changed_lb_map_max_is_applied_on_restart_or_refused_naming_it",
            lb_map_max_on_restart,
        ),
        (
            "agent::second_agent_waits_for_the_first_then_adopts",
            second_agent_waits_for_the_first,
        ),
        (
            "agent::healthz_and_livez_follow_the_node_object",
            healthz_follows_the_node,
        ),
        (
            "agent::healthz_address_in_use_is_refused_naming_the_option",
            healthz_address_in_use,
        ),
        (
            "agent::health_check_node_port_follows_the_local_endpoints_and_the_service",
            health_check_node_port,
        ),
        (
            "agent::a_taken_health_check_node_port_is_logged_and_retried",
            health_check_node_port_taken,
        ),
        (
            "agent::metrics_follow_the_manifests_and_count_terminating_endpoints_once",
            metrics_follow_the_manifests,
        ),
        (
            "agent::metrics_port_in_use_is_refused_naming_the_option",
            metrics_port_in_use,
        ),
    ];
    support::run_tier("agent watch", tests.into());
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
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch,
        manifests,
        state_dir,
        pin_dir,
        ..
    } = AgentNode::new("watch", "192.168.77.11")?;
    std::fs::write(
        scratch.0.join("values.yaml"),
        "kubeProxyReplacement: true\n",
    )?;
    let a = manifests.join("a.yaml");
    let b = manifests.join("b.yaml");
    std::fs::write(
        &a,
        service_yaml("a", "10.96.0.10", &["10.0.1.5", "10.0.1.6"]),
    )?;

    let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
    cmd.arg("--values")
        .arg(scratch.0.join("values.yaml"))
        .env("RUST_LOG", "warn")
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

    stop_with_sigterm(&mut agent, "lb-agent")?;
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

/// Addresses the node gets beyond its own: more than `bpf.lbMapMax=1024` holds, as kube-proxy's
/// IPVS dummy device carries on a busy node.
const EXTRA_ADDRS: usize = 1200;

/// `lb-agent --once` on a node with 1 201 addresses and `bpf.lbMapMax=1024`: it programs the
/// services and the addresses that fit, exits 0, logs the full map naming it and the option,
/// and `lbctl status` reports the count.
fn many_node_addresses() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch,
        manifests,
        state_dir,
        ..
    } = AgentNode::new("addrs", "192.168.78.11")?;
    std::fs::write(
        manifests.join("a.yaml"),
        service_yaml("a", "10.96.0.10", &["10.0.1.5"]),
    )?;
    let batch: String = (0..EXTRA_ADDRS)
        .map(|i| format!("addr add 10.200.{}.{}/32 dev eth0\n", i / 250, i % 250 + 1))
        .collect();
    std::fs::write(scratch.0.join("addrs.batch"), batch)?;
    let mut ip = Command::new("ip");
    ip.arg("-batch").arg(scratch.0.join("addrs.batch"));
    let status = node.spawn(ip)?.wait_timeout(Duration::from_secs(30))?;
    if !status.success() {
        return Err(format!("adding {EXTRA_ADDRS} addresses failed ({status})").into());
    }

    let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
    cmd.args([
        "--set",
        "kubeProxyReplacement=true",
        "--set",
        "bpf.lbMapMax=1024",
        "--once",
    ])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = node.spawn(cmd)?.output(Duration::from_secs(60))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("lb-agent exited with {}: {log}", out.status).into());
    }
    for needle in [ebpf::maps::LB_LOCAL_ADDRS, "bpf.lbMapMax"] {
        if !log.contains(needle) {
            return Err(format!("the agent's log does not name {needle}: {log}").into());
        }
    }
    let pin_dir = bpffs.path.join(lb::agent::PIN_SUBDIR);
    if programmed(&pin_dir) != BTreeMap::from([("10.96.0.10:80".to_owned(), 1)]) {
        return Err("the service was not programmed".into());
    }
    let status = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["status", "--verbose", "-o", "json", "--state-dir"])
        .arg(&state_dir)
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    let count = &json["localAddresses"];
    if count["programmed"] != 1024 || count["found"].as_u64() < Some(EXTRA_ADDRS as u64 + 1) {
        return Err(format!("lbctl status reports {count} for the node's addresses").into());
    }
    let text = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["status", "--verbose", "--state-dir"])
        .arg(&state_dir)
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    if !text.contains("Node Addresses:        1024 of ") {
        return Err(format!("lbctl status --verbose does not show the count:\n{text}").into());
    }
    let cleanup = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("cleanup")
        .arg("--state-dir")
        .arg(&state_dir)
        .output()?;
    if !cleanup.status.success() {
        return Err(format!(
            "lbctl cleanup failed: {}",
            String::from_utf8_lossy(&cleanup.stderr)
        )
        .into());
    }
    drop(topology);
    Ok(())
}

/// `lb-agent --once` restarted with another `bpf.lbMapMax`: a larger one resizes the pinned
/// maps keeping the services; one below what they hold is refused naming the option, and the
/// maps stay as they were.
fn lb_map_max_on_restart() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch: _scratch,
        manifests,
        state_dir,
        pin_dir,
    } = AgentNode::new("resize", "192.168.79.11")?;
    std::fs::write(
        manifests.join("a.yaml"),
        service_yaml("a", "10.96.0.10", &["10.0.1.5", "10.0.1.6"]),
    )?;
    let run = |map_max: u32| -> Result<std::process::Output, Failed> {
        let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
        cmd.args(["--set", "kubeProxyReplacement=true", "--once", "--set"])
            .arg(format!("bpf.lbMapMax={map_max}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(node.spawn(cmd)?.output(Duration::from_secs(60))?)
    };
    let size = || -> Result<u32, Failed> {
        let data = aya::maps::MapData::from_pin(pin_dir.join(ebpf::maps::LB_SERVICES))?;
        Ok(data.info()?.max_entries())
    };
    let want = BTreeMap::from([("10.96.0.10:80".to_owned(), 2)]);
    for map_max in [1024, 2048] {
        let out = run(map_max)?;
        if !out.status.success() {
            return Err(format!(
                "lb-agent with bpf.lbMapMax={map_max} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        if size()? != map_max || programmed(&pin_dir) != want {
            return Err(format!(
                "after lb-agent with bpf.lbMapMax={map_max}: {} holds {} entries, services {:?}",
                ebpf::maps::LB_SERVICES,
                size()?,
                programmed(&pin_dir)
            )
            .into());
        }
    }
    let out = run(2)?;
    let log = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !log.contains("bpf.lbMapMax=2 cannot hold") {
        return Err(format!(
            "bpf.lbMapMax=2 was not refused clearly ({}): {log}",
            out.status
        )
        .into());
    }
    if size()? != 2048 || programmed(&pin_dir) != want {
        return Err("a refused bpf.lbMapMax changed the maps".into());
    }
    let cleanup = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("cleanup")
        .arg("--state-dir")
        .arg(&state_dir)
        .output()?;
    if !cleanup.status.success() {
        return Err(format!(
            "lbctl cleanup failed: {}",
            String::from_utf8_lossy(&cleanup.stderr)
        )
        .into());
    }
    drop(topology);
    Ok(())
}

/// The names in the pinned links directory: `<program>-<generation>`, one generation per
/// agent that attached.
fn pinned_links(pin_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until `file` contains `text`, returning the file's contents.
fn wait_for_text(file: &Path, text: &str, what: &str) -> Result<String, Failed> {
    let deadline = Instant::now() + PROGRAMMED_WITHIN;
    loop {
        let log = std::fs::read_to_string(file).unwrap_or_default();
        if log.contains(text) {
            return Ok(log);
        }
        if Instant::now() > deadline {
            return Err(
                format!("{PROGRAMMED_WITHIN:?} and no {what}: {text:?} not in:\n{log}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Defect 12: a second agent with the same state and pin directories waits for the first
/// (which keeps the pins and links to itself), and adopts once the first is killed.
fn second_agent_waits_for_the_first() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch,
        manifests,
        state_dir,
        pin_dir,
        ..
    } = AgentNode::new("lock", "192.168.77.12")?;
    std::fs::write(
        manifests.join("a.yaml"),
        service_yaml("a", "10.96.0.10", &["10.0.1.5", "10.0.1.6"]),
    )?;
    let agent = |log: &str| -> Result<netsim::Process, Failed> {
        let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
        cmd.args(["--set", "kubeProxyReplacement=true"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.0.join(log))?);
        Ok(node.spawn(cmd)?)
    };

    let mut first = agent("first.log")?;
    wait_programmed(&pin_dir, &[("10.96.0.10:80", 2)], "the first agent started")?;
    let links = pinned_links(&pin_dir);

    let mut second = agent("second.log")?;
    let waiting = format!(
        "another lb-agent (pid {}) holds {}; waiting for it to exit",
        first.pid(),
        state_dir.join(lb::agent::LOCK_FILE).display()
    );
    wait_for_text(&scratch.0.join("second.log"), &waiting, "wait message")?;
    // The first agent still follows the directory, alone: the second touched no pin or link.
    std::fs::write(
        manifests.join("b.yaml"),
        service_yaml("b", "10.96.0.11", &["10.0.1.7"]),
    )?;
    wait_programmed(
        &pin_dir,
        &[("10.96.0.10:80", 2), ("10.96.0.11:80", 1)],
        "a new file while the second agent waits",
    )?;
    if pinned_links(&pin_dir) != links {
        return Err(format!(
            "the waiting agent replaced the links: {links:?} became {:?}",
            pinned_links(&pin_dir)
        )
        .into());
    }
    let second_log = std::fs::read_to_string(scratch.0.join("second.log"))?;
    if second_log.contains("datapath ready") {
        return Err(format!("the second agent attached beside the first:\n{second_log}").into());
    }
    if let Some(status) = second.child_mut().try_wait()? {
        return Err(format!("the waiting agent exited with {status}:\n{second_log}").into());
    }

    let pid = nix::unistd::Pid::from_raw(first.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
    first.wait_timeout(Duration::from_secs(10))?;
    wait_for_text(
        &scratch.0.join("second.log"),
        "datapath ready",
        "start of the second agent after the first was killed",
    )?;
    // It adopted the maps (both services kept) and follows the directory.
    std::fs::write(
        manifests.join("c.yaml"),
        service_yaml("c", "10.96.0.12", &["10.0.1.8"]),
    )?;
    wait_programmed(
        &pin_dir,
        &[
            ("10.96.0.10:80", 2),
            ("10.96.0.11:80", 1),
            ("10.96.0.12:80", 1),
        ],
        "a new file after the second agent took over",
    )?;
    let now = pinned_links(&pin_dir);
    if now.len() != links.len() || now == links {
        return Err(
            format!("links not replaced by the second agent: {links:?} then {now:?}").into(),
        );
    }

    stop_with_sigterm(&mut second, "the second lb-agent")?;
    let cleanup = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("cleanup")
        .arg("--state-dir")
        .arg(&state_dir)
        .output()?;
    if !cleanup.status.success() {
        return Err(format!(
            "lbctl cleanup failed: {}",
            String::from_utf8_lossy(&cleanup.stderr)
        )
        .into());
    }
    drop(topology);
    Ok(())
}

/// Where the health tests' agents serve `/healthz`, inside their node's namespace.
const HEALTHZ_ADDR: &str = "127.0.0.1:10256";

/// `GET path` over HTTP/1.1 to [`HEALTHZ_ADDR`] from inside `node`'s namespace: the status code
/// and the body, or why there was no answer (the server not listening yet, say).
fn http_get(node: &netsim::Node, path: &str) -> Result<(u16, String), String> {
    http_get_at(node, HEALTHZ_ADDR, path).map(|(status, _head, body)| (status, body))
}

/// `GET path` over HTTP/1.1 to `addr` from inside `node`'s namespace: the status code, the
/// headers (lower case) and the body, or why there was no answer. Every answer must carry the
/// JSON content type and `nosniff`.
fn http_get_at(
    node: &netsim::Node,
    addr: &str,
    path: &str,
) -> Result<(u16, String, String), String> {
    let answer = support::agent::http_get_raw(node, addr, path)?;
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP/1.1 response: {answer:?}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers: {answer:?}"))?;
    let head = head.to_ascii_lowercase();
    for header in [
        "content-type: application/json",
        "x-content-type-options: nosniff",
    ] {
        if !head.contains(&format!("\r\n{header}\r\n")) {
            return Err(format!("no {header:?} header: {answer:?}"));
        }
    }
    Ok((status, head, body.to_owned()))
}

/// Waits until `path` answers `status` with `nodeEligible` (in `/healthz`'s body) as `eligible`,
/// or fails with the last answer.
fn wait_health(
    node: &netsim::Node,
    path: &str,
    status: u16,
    eligible: Option<bool>,
    after: &str,
) -> Result<serde_json::Value, Failed> {
    let deadline = Instant::now() + PROGRAMMED_WITHIN;
    loop {
        let last = match http_get(node, path) {
            Ok((code, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(json) if code == status && json["nodeEligible"].as_bool() == eligible => {
                    return Ok(json);
                }
                Ok(_) => format!("{code} {body}"),
                Err(e) => format!("{code} with a body that is not JSON ({e}): {body:?}"),
            },
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "{PROGRAMMED_WITHIN:?} after {after}, {path} answers {last}, expected {status}"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `lb-agent` with `kubeProxyReplacementHealthzBindAddr`: `/healthz` and `/livez` answer 200
/// once it runs; the autoscaler's taint on this node's Node, and then deleting the Node, turn
/// `/healthz` to 503 with `nodeEligible: false` while `/livez` stays 200.
fn healthz_follows_the_node() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch: _scratch,
        manifests,
        state_dir,
        pin_dir,
    } = AgentNode::new("health", "192.168.80.11")?;
    std::fs::write(
        manifests.join("a.yaml"),
        service_yaml("a", "10.96.0.10", &["10.0.1.5"]),
    )?;
    let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
    cmd.args(["--set", "kubeProxyReplacement=true", "--set"])
        .arg(format!(
            "kubeProxyReplacementHealthzBindAddr={HEALTHZ_ADDR}"
        ))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut agent = node.spawn(cmd)?;
    wait_programmed(&pin_dir, &[("10.96.0.10:80", 1)], "the agent started")?;
    let body = wait_health(&node, "/healthz", 200, Some(true), "the agent started")?;
    if body["healthy"] != true || body["lastUpdated"] != body["currentTime"] {
        return Err(format!("a healthy /healthz answered {body}").into());
    }
    wait_health(&node, "/livez", 200, None, "the agent started")?;

    let node_yaml = manifests.join("node.yaml");
    let plain = std::fs::read_to_string(&node_yaml)?;
    std::fs::write(
        &node_yaml,
        format!(
            "{plain}spec: {{taints: [{{key: ToBeDeletedByClusterAutoscaler, \
             value: '1796284800', effect: NoSchedule}}]}}\n"
        ),
    )?;
    wait_health(
        &node,
        "/healthz",
        503,
        Some(false),
        "the autoscaler's taint",
    )?;
    std::fs::write(&node_yaml, &plain)?;
    wait_health(&node, "/healthz", 200, Some(true), "the taint was removed")?;

    std::fs::remove_file(&node_yaml)?;
    let body = wait_health(&node, "/healthz", 503, Some(false), "the Node was deleted")?;
    if body["healthy"] != true {
        return Err(format!("the agent itself should stay healthy: {body}").into());
    }
    let body = wait_health(&node, "/livez", 200, None, "the Node was deleted")?;
    if body["healthy"] != true {
        return Err(format!("/livez answered {body}").into());
    }

    stop_with_sigterm(&mut agent, "lb-agent")?;
    lbctl(&["cleanup", "--state-dir"], &state_dir)?;
    drop(topology);
    Ok(())
}

/// With `kubeProxyReplacementHealthzBindAddr` on a port already taken, `lb-agent` refuses to
/// start naming the option and the address, leaving nothing pinned; `--once` starts no server,
/// so it runs.
fn healthz_address_in_use() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch: _scratch,
        manifests,
        state_dir,
        pin_dir,
    } = AgentNode::new("hzbind", "192.168.81.11")?;
    std::fs::write(
        manifests.join("a.yaml"),
        service_yaml("a", "10.96.0.10", &["10.0.1.5"]),
    )?;
    let _taken = node.in_netns(|| std::net::TcpListener::bind(HEALTHZ_ADDR))??;
    let run = |once: bool| -> Result<std::process::Output, Failed> {
        let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
        cmd.args(["--set", "kubeProxyReplacement=true", "--set"])
            .arg(format!(
                "kubeProxyReplacementHealthzBindAddr={HEALTHZ_ADDR}"
            ))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if once {
            cmd.arg("--once");
        }
        Ok(node.spawn(cmd)?.output(Duration::from_secs(60))?)
    };

    let out = run(false)?;
    let log = String::from_utf8_lossy(&out.stderr);
    let named = format!("kubeProxyReplacementHealthzBindAddr={HEALTHZ_ADDR}: cannot listen");
    if out.status.success() || !log.contains(&named) {
        return Err(format!(
            "a taken address was not refused clearly ({}): {log}",
            out.status
        )
        .into());
    }
    if !programmed(&pin_dir).is_empty() {
        return Err("the refused agent programmed the maps".into());
    }

    let out = run(true)?;
    if !out.status.success() {
        return Err(format!(
            "lb-agent --once with a taken health address exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    lbctl(&["cleanup", "--state-dir"], &state_dir)?;
    drop(topology);
    Ok(())
}

/// The health check node port of the test service, on the node's own address.
const HC_ADDR: &str = "192.168.82.11:31999";

/// A LoadBalancer service `web` with `externalTrafficPolicy: Local` and
/// `healthCheckNodePort: 31999`, and one endpoint on node `node` that is `ready` or not.
fn local_lb_yaml(node: &str, ready: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\n\
         spec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.20\n  externalTrafficPolicy: Local\n  \
         healthCheckNodePort: 31999\n  ports: [{{port: 80, nodePort: 30080, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: web-1\n  namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{{name: \"\", port: 8080, protocol: TCP}}]\nendpoints:\n\
         - {{addresses: [10.0.1.5], nodeName: {node}, conditions: {{ready: {ready}}}}}\n"
    )
}

/// Waits until [`HC_ADDR`] answers `status` with `localEndpoints` and the weight header both
/// `local`, or fails with the last answer.
fn wait_service_health(
    node: &netsim::Node,
    status: u16,
    local: u64,
    after: &str,
) -> Result<serde_json::Value, Failed> {
    let deadline = Instant::now() + PROGRAMMED_WITHIN;
    loop {
        let last = match http_get_at(node, HC_ADDR, "/any/path") {
            Ok((code, head, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(json)
                    if code == status
                        && json["localEndpoints"] == local
                        && head.contains(&format!(
                            "\r\nx-load-balancing-endpoint-weight: {local}\r\n"
                        )) =>
                {
                    return Ok(json);
                }
                Ok(_) => format!("{code} {head:?} {body}"),
                Err(e) => format!("{code} with a body that is not JSON ({e}): {body:?}"),
            },
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "{PROGRAMMED_WITHIN:?} after {after}, {HC_ADDR} answers {last}, expected {status} \
                 with {local} local endpoints"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `lb-agent` serves a LoadBalancer service's `healthCheckNodePort` (eTP=Local) on the node's
/// addresses in both families: 200 with one local ready endpoint, 503 once the manifest makes it not ready,
/// and the port closed (connection refused) once the service is deleted.
fn health_check_node_port() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch: _scratch,
        manifests,
        state_dir,
        pin_dir: _pin_dir,
    } = AgentNode::new("hcnp", "192.168.82.11")?;
    let web = manifests.join("web.yaml");
    std::fs::write(&web, local_lb_yaml("hcnp", true))?;
    let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
    cmd.args(["--set", "kubeProxyReplacement=true"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut agent = node.spawn(cmd)?;
    let body = wait_service_health(&node, 200, 1, "the agent started")?;
    let want = serde_json::json!({
        "service": {"namespace": "shop", "name": "web"},
        "localEndpoints": 1,
        "serviceProxyHealthy": true,
    });
    if body != want {
        return Err(format!("the health check answered {body}, expected {want}").into());
    }
    // `[::]` too: the port answers over IPv6, though the agent serves only IPv4 services.
    match http_get_at(&node, "[::1]:31999", "/") {
        Ok((200, _, _)) => {}
        other => return Err(format!("[::1]:31999 answered {other:?}, expected 200").into()),
    }

    std::fs::write(&web, local_lb_yaml("hcnp", false))?;
    wait_service_health(&node, 503, 0, "the endpoint became not ready")?;

    std::fs::remove_file(&web)?;
    let deadline = Instant::now() + PROGRAMMED_WITHIN;
    loop {
        let connected = node.in_netns(|| std::net::TcpStream::connect(HC_ADDR).map(drop))?;
        match connected {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other if Instant::now() > deadline => {
                return Err(format!(
                    "{PROGRAMMED_WITHIN:?} after the service was deleted, connecting to \
                     {HC_ADDR} gives {other:?}, expected connection refused"
                )
                .into());
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }

    stop_with_sigterm(&mut agent, "lb-agent")?;
    lbctl(&["cleanup", "--state-dir"], &state_dir)?;
    drop(topology);
    Ok(())
}

/// A `healthCheckNodePort` another process holds does not stop `lb-agent`: it programs the
/// service, logs the service and the port, and serves the port on a later pass once it is free.
fn health_check_node_port_taken() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch,
        manifests,
        state_dir,
        pin_dir,
    } = AgentNode::new("hctaken", "192.168.82.11")?;
    std::fs::write(manifests.join("web.yaml"), local_lb_yaml("hctaken", true))?;
    let taken = node.in_netns(|| std::net::TcpListener::bind("0.0.0.0:31999"))??;
    let log_path = scratch.0.join("agent.log");
    let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
    cmd.args(["--set", "kubeProxyReplacement=true"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?);
    let mut agent = node.spawn(cmd)?;
    wait_programmed(
        &pin_dir,
        &[
            ("10.96.0.20:80", 1),
            ("0.0.0.0:30080", 1),
            ("0.0.0.0:30080/i", 1),
            ("192.168.82.11:30080", 1),
            ("192.168.82.11:30080/i", 1),
        ],
        "the agent started",
    )?;
    let named = "service shop/web: cannot serve its healthCheckNodePort 31999 on 0.0.0.0:31999";
    let deadline = Instant::now() + PROGRAMMED_WITHIN;
    loop {
        let log = std::fs::read_to_string(&log_path)?;
        if log.contains(named) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the taken port was not logged as {named:?}: {log}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(taken);
    // The next pass (at most a resync period away) opens it.
    wait_service_health(&node, 200, 1, "the port was freed")?;

    stop_with_sigterm(&mut agent, "lb-agent")?;
    lbctl(&["cleanup", "--state-dir"], &state_dir)?;
    drop(topology);
    Ok(())
}

/// Scrapes until every `(sample, test)` holds, or fails with the last scrape.
fn wait_metrics(
    node: &netsim::Node,
    want: &[(&str, &dyn Fn(f64) -> bool)],
    after: &str,
) -> Result<String, Failed> {
    let deadline = Instant::now() + PROGRAMMED_WITHIN;
    loop {
        let last = match scrape(node) {
            Ok(text) => {
                let off: Vec<String> = want
                    .iter()
                    .filter(|(name, ok)| !sample(&text, name).is_some_and(ok))
                    .map(|(name, _)| format!("{name} = {:?}", sample(&text, name)))
                    .collect();
                if off.is_empty() {
                    return Ok(text);
                }
                format!("{}\n{text}", off.join(", "))
            }
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!("{PROGRAMMED_WITHIN:?} after {after}, /metrics: {last}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Service `name` at `ip:80` whose one EndpointSlice has these (address, terminating)
/// endpoints and, with `trigger`, the EndpointSlice controller's trigger-time annotation.
fn metrics_service_yaml(
    name: &str,
    ip: &str,
    endpoints: &[(&str, bool)],
    trigger: Option<&str>,
) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|(a, terminating)| {
            format!(
                "  - {{addresses: [{a}], conditions: {{ready: {}, serving: true, \
                 terminating: {terminating}}}}}\n",
                !terminating
            )
        })
        .collect();
    let annotations = trigger.map_or_else(String::new, |t| {
        format!("  annotations: {{endpoints.kubernetes.io/last-change-trigger-time: '{t}'}}\n")
    });
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  type: ClusterIP\n  clusterIP: {ip}\n  ports: [{{port: 80, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n{annotations}\
         addressType: IPv4\nports: [{{name: \"\", port: 80, protocol: TCP}}]\nendpoints:\n{endpoints}"
    )
}

/// `lb-agent` with `prometheus.enabled`: `/metrics` shows the programmed services and
/// backends, a sync per change in the duration histogram, the network programming latency of
/// a slice changed after the start (from its trigger-time annotation), the maps' use, and one
/// terminating event when an endpoint turns terminating, not again on later changes.
fn metrics_follow_the_manifests() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch: _scratch,
        manifests,
        state_dir,
        pin_dir,
    } = AgentNode::new("metrics", "192.168.83.11")?;
    let a = manifests.join("a.yaml");
    let a_serving = [("10.0.1.5", false), ("10.0.1.6", false)];
    std::fs::write(
        &a,
        metrics_service_yaml("a", "10.96.0.10", &a_serving, None),
    )?;
    let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
    cmd.args(["--set", "kubeProxyReplacement=true"])
        .args(["--set", "prometheus.enabled=true", "--set"])
        .arg(format!("prometheus.port={METRICS_PORT}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut agent = node.spawn(cmd)?;
    wait_programmed(&pin_dir, &[("10.96.0.10:80", 2)], "the agent started")?;
    let is = |want: f64| move |v: f64| v == want;
    let text = wait_metrics(
        &node,
        &[
            ("lb_services", &is(1.0)),
            ("lb_backends", &is(2.0)),
            ("lb_sync_proxy_rules_duration_seconds_count", &|v| v >= 1.0),
            ("lb_sync_proxy_rules_last_timestamp_seconds", &|v| v > 1.7e9),
            ("lb_k8s_terminating_endpoints_events_total", &is(0.0)),
            (
                "lb_bpf_map_capacity{map_name=\"lb_services_v1\"}",
                &is(65536.0),
            ),
            ("lb_bpf_map_entries{map_name=\"lb_services_v1\"}", &|v| {
                v >= 1.0
            }),
            ("lb_nodeport_snat_ports", &is(0.0)),
        ],
        "the agent started",
    )?;
    let syncs = sample(&text, "lb_sync_proxy_rules_duration_seconds_count").unwrap_or(0.0);

    // A new service whose slice the controller stamped now: one latency observation.
    let now = lb::metrics::LAST_CHANGE_TRIGGER_TIME;
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let stamp = k8s_openapi::jiff::Timestamp::new(
        since_epoch.as_secs() as i64,
        since_epoch.subsec_nanos() as i32,
    )?
    .to_string();
    let b = manifests.join("b.yaml");
    std::fs::write(
        &b,
        metrics_service_yaml("b", "10.96.0.11", &[("10.0.1.7", false)], Some(&stamp)),
    )?;
    wait_metrics(
        &node,
        &[
            ("lb_services", &is(2.0)),
            ("lb_backends", &is(3.0)),
            ("lb_sync_proxy_rules_duration_seconds_count", &|v| v > syncs),
            ("lb_network_programming_duration_seconds_count", &is(1.0)),
            // Seconds at most, from a stamp taken just before the file was written.
            ("lb_network_programming_duration_seconds_sum", &|v| v < 15.0),
        ],
        &format!("service b was added with {now}: {stamp}"),
    )?;

    // One endpoint of a turns terminating: one event.
    let a_terminating = [("10.0.1.5", true), ("10.0.1.6", false)];
    std::fs::write(
        &a,
        metrics_service_yaml("a", "10.96.0.10", &a_terminating, None),
    )?;
    wait_metrics(
        &node,
        &[("lb_k8s_terminating_endpoints_events_total", &is(1.0))],
        "an endpoint of a turned terminating",
    )?;
    // Another change, programmed, does not count the terminating endpoint again.
    std::fs::write(
        &b,
        metrics_service_yaml(
            "b",
            "10.96.0.11",
            &[("10.0.1.7", false), ("10.0.1.8", false)],
            None,
        ),
    )?;
    wait_metrics(
        &node,
        &[
            ("lb_backends", &is(4.0)),
            ("lb_k8s_terminating_endpoints_events_total", &is(1.0)),
        ],
        "service b got a second endpoint",
    )?;

    stop_with_sigterm(&mut agent, "lb-agent")?;
    lbctl(&["cleanup", "--state-dir"], &state_dir)?;
    drop(topology);
    Ok(())
}

/// With `prometheus.port` taken, `lb-agent` refuses to start naming the option and the
/// address, before it pins or programs anything.
fn metrics_port_in_use() -> Result<(), Failed> {
    let AgentNode {
        topology,
        node,
        bpffs,
        scratch: _scratch,
        manifests,
        state_dir,
        pin_dir,
    } = AgentNode::new("metbind", "192.168.84.11")?;
    std::fs::write(
        manifests.join("a.yaml"),
        service_yaml("a", "10.96.0.10", &["10.0.1.5"]),
    )?;
    let _taken = node.in_netns(|| std::net::TcpListener::bind(("::", METRICS_PORT)))??;
    let mut cmd = lb_agent(&bpffs, &node, &manifests, &state_dir);
    cmd.args(["--set", "kubeProxyReplacement=true"])
        .args(["--set", "prometheus.enabled=true", "--set"])
        .arg(format!("prometheus.port={METRICS_PORT}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = node.spawn(cmd)?.output(Duration::from_secs(60))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let named = format!("prometheus.port={METRICS_PORT}: cannot listen on [::]:{METRICS_PORT}");
    if out.status.success() || !log.contains(&named) {
        return Err(format!(
            "a taken metrics port was not refused clearly ({}): {log}",
            out.status
        )
        .into());
    }
    if pin_dir.exists() || !programmed(&pin_dir).is_empty() {
        return Err("the refused agent pinned or programmed the maps".into());
    }
    drop(topology);
    Ok(())
}
