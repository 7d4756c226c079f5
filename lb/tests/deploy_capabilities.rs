//! The DaemonSet's capabilities (`deploy/03-daemonset.yaml`) are what `lb-agent` needs, shown
//! on this kernel: started as root with exactly those in its bounding set (`setpriv`, as a
//! container runtime starts a root process), the agent in a netsim node programs a NodePort
//! service and, once the UDP backend is removed, destroys the connected UDP socket of a pod
//! process running as another user. Without SYS_ADMIN (`setns` into the pod's namespace) or
//! without SYS_PTRACE (opening that process's `/proc/PID/ns/net`) the socket is left alone,
//! which is why the set has them. SYS_ADMIN also stands for BPF and PERFMON in the kernel's
//! checks; without it, PERFMON is what gets the NodePort program past the verifier.
//!
//! Without root the tests are reported as ignored, with a line saying why; under `CI=true` they
//! fail instead, since CI must run this tier.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use libtest_mimic::Failed;
use netsim::{NodeSpec, PodSpec, Topology};
use support::{ScratchDir, TestBpffs, TestFn};

#[allow(
    dead_code,
    reason = "the guards this binary does not use serve the other tiers"
)]
mod support;

/// Set in the child that holds the pod's UDP socket: the address it connects to.
const HOLDER_ENV: &str = "LB_DEPLOY_CAPS_UDP_HOLDER";
/// The user the pod's process runs as: not the agent's.
const POD_UID: &str = "1000";
const CLUSTER_IP: &str = "10.96.0.10";
/// How long the agent may take to start, program a change or sweep.
const WITHIN: Duration = Duration::from_secs(20);

fn main() {
    if let Ok(target) = std::env::var(HOLDER_ENV) {
        hold_udp_socket(&target);
    }
    let tests: [(&str, TestFn); 4] = [
        (
            "deploy::the_daemonsets_capabilities_program_services_and_sweep_pod_udp_sockets",
            with_the_daemonsets_capabilities,
        ),
        (
            "deploy::without_sys_admin_the_pod_udp_socket_is_not_swept",
            without_sys_admin,
        ),
        (
            "deploy::without_sys_ptrace_the_pod_udp_socket_is_not_swept",
            without_sys_ptrace,
        ),
        (
            "deploy::without_sys_admin_and_perfmon_the_nodeport_program_is_refused",
            without_sys_admin_and_perfmon,
        ),
    ];
    support::run_tier("deploy capabilities", tests.into());
}

/// The child in the pod: connects a UDP socket to `target` (the hooks translate it), says so,
/// then reports what a receive on it ends with (`ECONNABORTED` once the agent destroys it).
fn hold_udp_socket(target: &str) -> ! {
    let socket = UdpSocket::bind("0.0.0.0:0").and_then(|s| s.connect(target).map(|()| s));
    match socket {
        Ok(socket) => {
            println!("connected");
            let err = socket.recv(&mut [0u8; 64]).err();
            println!("ended: {:?}", err.and_then(|e| e.raw_os_error()));
            std::process::exit(0)
        }
        Err(e) => {
            println!("failed: {e}");
            std::process::exit(1)
        }
    }
}

/// The capabilities the DaemonSet's agent container adds.
fn daemonset_capabilities() -> Result<Vec<String>, Failed> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/03-daemonset.yaml");
    let ds: DaemonSet = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    let pod = ds.spec.and_then(|s| s.template.spec).ok_or("no pod spec")?;
    let container = pod
        .containers
        .into_iter()
        .find(|c| c.name == "lb-agent")
        .ok_or("no lb-agent container")?;
    let caps = container
        .security_context
        .and_then(|s| s.capabilities)
        .and_then(|c| c.add)
        .ok_or("the lb-agent container adds no capabilities")?;
    Ok(caps)
}

fn with_the_daemonsets_capabilities() -> Result<(), Failed> {
    let destroyed = sweep_with(&daemonset_capabilities()?, "all")?;
    if destroyed != 1 {
        return Err(format!(
            "with the DaemonSet's capabilities the agent destroyed {destroyed} sockets, not the pod's one"
        )
        .into());
    }
    Ok(())
}

fn without_sys_admin() -> Result<(), Failed> {
    without("SYS_ADMIN", "noadmin")
}

fn without_sys_ptrace() -> Result<(), Failed> {
    without("SYS_PTRACE", "noptrace")
}

fn without(capability: &str, tag: &str) -> Result<(), Failed> {
    let mut caps = daemonset_capabilities()?;
    let before = caps.len();
    caps.retain(|c| c != capability);
    if caps.len() == before {
        return Err(format!("the DaemonSet does not add {capability}").into());
    }
    let destroyed = sweep_with(&caps, tag)?;
    if destroyed != 0 {
        return Err(format!(
            "without {capability} the agent still destroyed {destroyed} sockets: the \
             DaemonSet would not need it"
        )
        .into());
    }
    Ok(())
}

fn without_sys_admin_and_perfmon() -> Result<(), Failed> {
    let caps: Vec<String> = daemonset_capabilities()?
        .into_iter()
        .filter(|c| c != "SYS_ADMIN" && c != "PERFMON")
        .collect();
    let mut topology = Topology::new()?;
    let node = topology.add_node(NodeSpec::new("capnoperf").eth0("192.168.81.11/24".parse()?))?;
    let bpffs = TestBpffs::new("caps-noperf")?;
    let scratch = ScratchDir::named("caps-noperf")?;
    let manifests = scratch.0.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("svc.yaml"), service_yaml(&["10.81.9.9"]))?;
    let mut agent = Command::new("setpriv");
    agent
        .arg(format!("--bounding-set={}", bounding_set(&caps)))
        .arg(env!("CARGO_BIN_EXE_lb-agent"))
        .args([
            "--set",
            "kubeProxyReplacement=true",
            "--set",
            "devices=eth0",
        ])
        .arg("--set")
        .arg(format!("bpf.root={}", bpffs.path.display()))
        .arg("--set")
        .arg(format!("cgroup.hostRoot={}", node.cgroup_path().display()))
        .args([
            "--set",
            "cgroup.autoMount.enabled=false",
            "--once",
            "--manifests",
        ])
        .arg(&manifests)
        .arg("--state-dir")
        .arg(scratch.0.join("state"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = node.spawn(agent)?.output(WITHIN)?;
    let log = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() || !log.contains("lb_nodeport_ingress") {
        return Err(format!(
            "with {caps:?} the agent was expected to stop at the NodePort program ({}):\n{log}",
            out.status
        )
        .into());
    }
    Ok(())
}

/// `setpriv`'s bounding-set argument for `caps`: everything dropped, then these.
fn bounding_set(caps: &[String]) -> String {
    let mut arg = "-all".to_owned();
    for cap in caps {
        arg.push_str(",+");
        arg.push_str(&cap.to_lowercase());
    }
    arg
}

/// Runs the agent with only `caps` on a node with a pod, checks it programmed the services, has
/// a process of another user in the pod connect a UDP socket to the service, removes the
/// service's backend and returns how many connected UDP sockets the agent says it destroyed
/// (after checking the pod's process saw its socket destroyed exactly when the agent says so).
fn sweep_with(caps: &[String], tag: &str) -> Result<usize, Failed> {
    let mut topology = Topology::new()?;
    let node =
        topology.add_node(NodeSpec::new(&format!("cap{tag}")).eth0("192.168.81.11/24".parse()?))?;
    let pod = topology.add_pod(
        &node,
        PodSpec::new(&format!("cap{tag}-p"), "10.81.1.5".parse()?),
    )?;
    let bpffs = TestBpffs::new(&format!("caps-{tag}"))?;
    let scratch = ScratchDir::named(&format!("caps-{tag}"))?;
    let manifests = scratch.0.join("manifests");
    let state_dir = scratch.0.join("state");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(
        manifests.join("node.yaml"),
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\n\
             status: {{addresses: [{{type: InternalIP, address: 192.168.81.11}}]}}\n",
            node.name()
        ),
    )?;
    std::fs::write(manifests.join("svc.yaml"), service_yaml(&["10.81.9.9"]))?;
    let log_path = scratch.0.join("agent.log");

    let mut agent = Command::new("setpriv");
    agent
        .arg(format!("--bounding-set={}", bounding_set(caps)))
        .arg(env!("CARGO_BIN_EXE_lb-agent"))
        .args([
            "--set",
            "kubeProxyReplacement=true",
            "--set",
            "devices=eth0",
        ])
        .arg("--set")
        .arg(format!("bpf.root={}", bpffs.path.display()))
        .arg("--set")
        .arg(format!("cgroup.hostRoot={}", node.cgroup_path().display()))
        .args(["--set", "cgroup.autoMount.enabled=false", "--manifests"])
        .arg(&manifests)
        .args(["--node", node.name(), "--state-dir"])
        .arg(&state_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?);
    let mut agent = node.spawn(agent)?;
    let result = (|| {
        wait_for_updates(&log_path, 1)?;
        let pin_dir = bpffs.path.join(lb::agent::PIN_SUBDIR);
        let maps = lb::datapath::ServiceMaps::open_pinned(&pin_dir)
            .map_err(|e| format!("no pinned maps: {e}"))?;
        let contents = maps.read().map_err(|e| e.to_string())?;
        let frontends: Vec<String> = contents
            .frontends()
            .into_iter()
            .map(|f| f.frontend.to_string())
            .collect();
        // The ClusterIP, the NodePort on the wildcard and on the node's address.
        if frontends.len() < 3 {
            return Err(format!(
                "expected the ClusterIP and NodePort frontends, found {frontends:?}"
            ));
        }

        let mut holder = Command::new("setpriv");
        holder
            .args(["--reuid", POD_UID, "--regid", POD_UID, "--clear-groups"])
            .arg(std::env::current_exe().map_err(|e| e.to_string())?)
            .env(HOLDER_ENV, format!("{CLUSTER_IP}:53"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut holder = pod.place().spawn(holder).map_err(|e| e.to_string())?;
        let lines = line_reader(holder.child_mut().stdout.take().ok_or("no stdout")?);
        match lines.recv_timeout(WITHIN) {
            Ok(line) if line == "connected" => {}
            other => return Err(format!("the pod's process did not connect: {other:?}")),
        }

        std::fs::write(manifests.join("svc.yaml"), service_yaml(&[])).map_err(|e| e.to_string())?;
        let destroyed = wait_for_updates(&log_path, 2)?;
        let ended = lines.recv_timeout(if destroyed > 0 {
            WITHIN
        } else {
            Duration::ZERO
        });
        match (destroyed, ended) {
            (0, Err(_)) => {}
            (1, Ok(line)) if line == format!("ended: Some({})", nix::libc::ECONNABORTED) => {}
            (n, line) => {
                return Err(format!(
                    "the agent destroyed {n} sockets but the pod's process saw {line:?}"
                ))
            }
        }
        Ok(destroyed)
    })();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait_timeout(WITHIN);
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
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    result.map_err(|e| format!("{e}\nagent log:\n{}", strip_ansi(&log)).into())
}

/// A NodePort service with a UDP port 53 and these backends.
fn service_yaml(backends: &[&str]) -> String {
    let endpoints: String = backends
        .iter()
        .map(|a| format!("  - {{addresses: [{a}], conditions: {{ready: true}}}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: dns, namespace: default}}\n\
         spec:\n  type: NodePort\n  clusterIP: {CLUSTER_IP}\n  \
         ports: [{{port: 53, nodePort: 31053, protocol: UDP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: dns-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: dns}}\n\
         addressType: IPv4\nports: [{{name: \"\", port: 53, protocol: UDP}}]\nendpoints:\n{endpoints}"
    )
}

/// Each line of `out` as it arrives.
fn line_reader(out: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits until the agent has logged `count` map updates; returns the last one's
/// `udp_sockets_destroyed`.
fn wait_for_updates(log_path: &Path, count: usize) -> Result<usize, String> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let log = strip_ansi(&std::fs::read_to_string(log_path).unwrap_or_default());
        let updates: Vec<&str> = log.lines().filter(|l| l.contains("maps updated")).collect();
        if updates.len() >= count {
            let last = updates[count - 1];
            return last
                .split_whitespace()
                .find_map(|w| w.strip_prefix("udp_sockets_destroyed="))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("no udp_sockets_destroyed in {last:?}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the agent logged {} map updates within {WITHIN:?}, not {count}",
                updates.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `text` without terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
