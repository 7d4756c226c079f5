//! `lb-agent` watching a real API server from a netsim node, changed with kubectl under
//! traffic: what a user of the cluster sees (which backends answer, which addresses stop
//! answering) follows each change, no new connection fails except where the change says it
//! must, and the agent survives an API server restart, a watch gap and its own SIGKILL (an
//! established connection included).
//!
//! A privileged tier: without root (or netns, bpffs, cgroup v2) the tests are reported as
//! ignored with a line saying why; under `CI=true` they fail instead. They need the test API
//! server (`cargo xtask apiserver`) and `lb-agent` and `netsim-client` built next to this
//! binary (`cargo build -p lb -p netsim --bins`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e::agent::ApiAgent;
use e2e::{ApiServer, Kubectl};
use lb::datapath::ServiceMaps;
use libtest_mimic::{Arguments, Failed};
use netsim::{ClientMode, HeldClient, NodeSpec, PodSpec, Proto, Reply, Topology};

/// How long any one wait for the agent or the traffic may take.
const WITHIN: Duration = Duration::from_secs(30);
/// New flows a stream must make to show that traffic goes on through a phase.
const FLOWS: usize = 25;
/// The most recent flows that must all come from the expected backends (and cover them).
const RECENT: usize = 30;
/// How long a flow that started before a change was undone may still fail after it: each
/// of `netsim-client`'s blocking steps gives up after 2 s.
const FLOW_TIMEOUT_SLACK: Duration = Duration::from_secs(5);

type TestFn = fn() -> Result<(), Failed>;

fn main() {
    let tests: [(&str, TestFn); 4] = [
        (
            "agent::follows_kubectl_changes_under_traffic",
            follows_kubectl_changes,
        ),
        (
            "agent::keeps_serving_through_an_api_server_restart_and_reconnects",
            api_server_restart,
        ),
        (
            "agent::sigkill_and_restart_with_a_change_while_down_fails_no_flow",
            agent_restart,
        ),
        (
            "agent::objects_deleted_during_a_watch_gap_leave_no_map_entry",
            watch_gap_deletion,
        ),
    ];
    let args = Arguments::from_args();
    let tier = netsim::Tier::detect("e2e agent tier");
    let trials = tests
        .into_iter()
        .map(|(name, test)| tier.trial(name, test))
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// An error with its whole chain of causes, for libtest's report.
fn failed(e: anyhow::Error) -> Failed {
    format!("{e:#}").into()
}

// ---------------------------------------------------------------------------------------------
// The cluster: one agent node with a client pod and three backend pods, another node outside,
// the API server holding both Nodes, and the agent watching it.

/// The identities of the backend pods, with their addresses (the last octet is per test).
const BACKENDS: [(&str, u8); 3] = [("b1", 9), ("b2", 10), ("b3", 11)];
/// Port the backends serve on (the services' targetPort).
const TARGET_PORT: u16 = 8080;
/// A second port the backends serve on, with the same identities: a targetPort change moves
/// the traffic there without changing who answers.
const OTHER_TARGET_PORT: u16 = 8081;

struct Cluster {
    // Fields drop in order: the agent first (it runs in the node), then servers and topology.
    agent: ApiAgent,
    server: ApiServer,
    _servers: Vec<netsim::IdentityServer>,
    client: netsim::Pod,
    outside: netsim::Node,
    _topology: Topology,
    /// `10.<net>.1.0/24` pods, `192.168.<net>.0/24` nodes, `10.96.<net>.0/24` ClusterIPs.
    net: u8,
}

impl Cluster {
    /// The topology, the API server with the two Nodes and `manifest` applied, and the agent
    /// started (ready: its first sync is programmed).
    fn start(tag: &str, net: u8, manifest: &str) -> Result<Cluster> {
        let mut topology = Topology::new()?;
        let node = topology.add_node(
            NodeSpec::new(tag)
                .eth0(format!("192.168.{net}.11/24").parse()?)
                .pod_cidr(format!("10.{net}.1.0/24").parse()?),
        )?;
        let outside = topology.add_node(
            NodeSpec::new(&format!("{tag}x")).eth0(format!("192.168.{net}.12/24").parse()?),
        )?;
        let client = topology.add_pod(
            &node,
            PodSpec::new(&format!("{tag}-c"), format!("10.{net}.1.5").parse()?),
        )?;
        let mut servers = Vec::new();
        for (identity, octet) in BACKENDS {
            let ip: std::net::Ipv4Addr = format!("10.{net}.1.{octet}").parse()?;
            let pod = topology.add_pod(&node, PodSpec::new(&format!("{tag}-{identity}"), ip))?;
            // TCP and UDP on both target ports, answering with the pod's identity.
            for proto in [Proto::Tcp, Proto::Udp] {
                for port in [TARGET_PORT, OTHER_TARGET_PORT] {
                    let addr = SocketAddr::new(ip.into(), port);
                    servers.push(pod.place().server(proto, addr, identity)?);
                }
            }
        }

        let server = ApiServer::start()?;
        let kubectl = server.kubectl();
        for (name, address) in [
            (node.name(), format!("192.168.{net}.11")),
            (outside.name(), format!("192.168.{net}.12")),
        ] {
            kubectl.apply(
                &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"),
                &[],
            )?;
            kubectl.run(
                &[
                    "patch",
                    "node",
                    name,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &format!(
                        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"{address}"}}]}}}}"#
                    ),
                ],
                None,
            )?;
        }
        kubectl.apply(manifest, &[])?;
        let agent = ApiAgent::start(
            &node,
            &server,
            &[
                "--set",
                "kubeProxyReplacement=true",
                "--set",
                "devices=eth0",
            ],
        )?;
        Ok(Cluster {
            agent,
            server,
            _servers: servers,
            client,
            outside,
            _topology: topology,
            net,
        })
    }

    fn kubectl(&self) -> Kubectl {
        self.server.kubectl()
    }

    fn backend_ip(&self, identity: &str) -> String {
        backend_ip(self.net, identity)
    }

    fn cluster_ip(&self, host: u8) -> String {
        format!("10.96.{}.{host}", self.net)
    }

    fn node_ip(&self) -> String {
        format!("192.168.{}.11", self.net)
    }

    /// `kubectl apply` of `manifest` (client-side, as an operator's edits are).
    fn apply(&self, manifest: &str) -> Result<()> {
        self.kubectl().apply(manifest, &[]).map(drop)
    }

    /// `kubectl ARGS`.
    fn kubectl_run(&self, args: &[&str]) -> Result<()> {
        self.kubectl().run(args, None).map(drop)
    }

    /// A stream of new flows (`mode`) from the client pod to `target`.
    fn stream(&self, mode: ClientMode, target: &str) -> Result<FlowStream> {
        FlowStream::start(self.client.place(), mode, target.parse()?)
    }
}

/// The address of the backend pod `identity` in the cluster of `net`.
fn backend_ip(net: u8, identity: &str) -> String {
    let octet = BACKENDS
        .iter()
        .find(|(i, _)| *i == identity)
        .map(|(_, o)| *o)
        .expect("a known backend");
    format!("10.{net}.1.{octet}")
}

/// Service `name` at ClusterIP `ip` (port `port`, type `kind`, with `nodePort` when given and
/// `labels`), and its EndpointSlice `name-1` with `backends` ready.
fn service(
    name: &str,
    ip: &str,
    port: u16,
    node_port: Option<u16>,
    labels: &str,
    backends: &[String],
) -> String {
    let (kind, node_port) = match node_port {
        Some(p) => ("NodePort", format!(", nodePort: {p}")),
        None => ("ClusterIP", String::new()),
    };
    let endpoints: Vec<String> = backends
        .iter()
        .map(|a| format!("{{addresses: [{a}], conditions: {{ready: true}}}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\n\
         metadata: {{name: {name}, namespace: default, labels: {{{labels}}}}}\n\
         spec:\n  type: {kind}\n  clusterIP: {ip}\n  ports:\n  \
         - {{name: http, port: {port}, protocol: TCP, targetPort: {TARGET_PORT}{node_port}}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: {name}-1\n  namespace: default\n  \
         labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {TARGET_PORT}, protocol: TCP}}]\n\
         endpoints: [{}]\n",
        endpoints.join(", ")
    )
}

/// The node ports of [`Web`] as a NodePort service: `http` (TCP) and `dns` (UDP).
const HTTP_NODE_PORT: u16 = 30080;
const DNS_NODE_PORT: u16 = 30053;

/// One state of the `web` service the kubectl test changes, as `kubectl apply` is given it:
/// ClusterIP `10.96.<net>.10` with two ports, `http` (TCP, `port`) and `dns` (UDP 53), both
/// to `target_port` of the ready `backends`, and its EndpointSlice `web-1`.
#[derive(Clone, Copy)]
struct Web {
    net: u8,
    port: u16,
    /// Type NodePort (on [`HTTP_NODE_PORT`] and [`DNS_NODE_PORT`]) instead of ClusterIP.
    node_port: bool,
    target_port: u16,
    backends: &'static [&'static str],
}

impl Web {
    fn manifest(self) -> String {
        let Web {
            net,
            port,
            node_port,
            target_port,
            backends,
        } = self;
        let (kind, http_node_port, dns_node_port) = if node_port {
            (
                "NodePort",
                format!(", nodePort: {HTTP_NODE_PORT}"),
                format!(", nodePort: {DNS_NODE_PORT}"),
            )
        } else {
            ("ClusterIP", String::new(), String::new())
        };
        let endpoints: Vec<String> = backends
            .iter()
            .map(|id| {
                format!(
                    "{{addresses: [{}], conditions: {{ready: true}}}}",
                    backend_ip(net, id)
                )
            })
            .collect();
        format!(
            "apiVersion: v1\nkind: Service\n\
             metadata: {{name: web, namespace: default}}\n\
             spec:\n  type: {kind}\n  clusterIP: 10.96.{net}.10\n  ports:\n  \
             - {{name: http, port: {port}, protocol: TCP, targetPort: {target_port}{http_node_port}}}\n  \
             - {{name: dns, port: 53, protocol: UDP, targetPort: {target_port}{dns_node_port}}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: web-1\n  namespace: default\n  \
             labels: {{kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports:\n\
             - {{name: http, port: {target_port}, protocol: TCP}}\n\
             - {{name: dns, port: {target_port}, protocol: UDP}}\n\
             endpoints: [{}]\n",
            endpoints.join(", ")
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic.

/// One flow a stream made: when its line arrived, and who answered (None: it failed).
struct Flow {
    at: Instant,
    identity: Option<String>,
    line: String,
}

/// `netsim-client MODE TARGET` making new flows one after another in a place until dropped
/// (a new socket for each: a TCP connection, or a connected UDP socket's one exchange), each
/// one's result recorded.
struct FlowStream {
    what: String,
    flows: Arc<Mutex<Vec<Flow>>>,
    _process: netsim::Process,
}

impl FlowStream {
    fn start(place: &netsim::Place, mode: ClientMode, target: SocketAddr) -> Result<FlowStream> {
        let mut cmd = Command::new(netsim::binary_path("netsim-client")?);
        cmd.args([mode.as_arg(), &target.to_string(), "100000000"])
            .args(["--timeout-ms", "2000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut process = place.spawn(cmd)?;
        let out = process.child_mut().stdout.take().context("no stdout")?;
        let flows = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&flows);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let identity = serde_json::from_str::<Reply>(&line)
                    .ok()
                    .filter(|r| r.error.is_none())
                    .and_then(|r| r.identity().map(str::to_owned));
                recorded.lock().unwrap().push(Flow {
                    at: Instant::now(),
                    identity,
                    line,
                });
            }
        });
        Ok(FlowStream {
            what: format!("{} {target} from {}", mode.as_arg(), place.name()),
            flows,
            _process: process,
        })
    }

    fn ok(&self) -> usize {
        let flows = self.flows.lock().unwrap();
        flows.iter().filter(|f| f.identity.is_some()).count()
    }

    /// Waits for `more` successful flows beyond those so far.
    fn wait_for_flows(&self, more: usize, phase: &str) -> Result<()> {
        let want = self.ok() + more;
        wait_until(phase, || {
            let ok = self.ok();
            (ok >= want).then_some(()).ok_or(format!(
                "{}: {ok} good flows, waiting for {want}",
                self.what
            ))
        })
    }

    /// Waits until the last [`RECENT`] flows, all made after `since`, were all answered and
    /// by exactly the backends `expected`.
    fn wait_for_backends(&self, since: Instant, expected: &[&str], phase: &str) -> Result<()> {
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        wait_until(phase, || {
            let flows = self.flows.lock().unwrap();
            let recent: Vec<&Flow> = flows.iter().rev().take_while(|f| f.at > since).collect();
            let seen: BTreeSet<String> = recent
                .iter()
                .take(RECENT)
                .filter_map(|f| f.identity.clone())
                .collect();
            let answered = recent.iter().take(RECENT).all(|f| f.identity.is_some());
            if recent.len() >= RECENT && answered && seen == expected {
                Ok(())
            } else {
                Err(format!(
                    "{}: the last {} flows since the change were answered by {seen:?}{}, \
                     waiting for {RECENT} answered by exactly {expected:?}",
                    self.what,
                    recent.len().min(RECENT),
                    if answered { "" } else { " with failures" }
                ))
            }
        })
    }

    /// Fails listing every failed flow outside `allowed` windows; else prints how many flows
    /// it made.
    fn check(&self, allowed: &[(Instant, Instant)]) -> Result<()> {
        let flows = self.flows.lock().unwrap();
        let (mut good, mut failed) = (0, 0);
        let mut outside = Vec::new();
        for flow in flows.iter() {
            if flow.identity.is_some() {
                good += 1;
                continue;
            }
            failed += 1;
            if !allowed.iter().any(|(a, b)| flow.at >= *a && flow.at <= *b) {
                outside.push(format!(
                    "{}: after {good} good flows: {}",
                    self.what, flow.line
                ));
            }
        }
        eprintln!(
            "{}: {good} good flows, {} failed inside the allowed windows",
            self.what,
            failed - outside.len()
        );
        if !outside.is_empty() {
            bail!(
                "{} new flows failed where no change made them:\n{}",
                outside.len(),
                outside.join("\n")
            );
        }
        Ok(())
    }
}

/// A TCP connection from the client pod opened before a disruption, to show established
/// connections survive it.
struct Held {
    client: HeldClient,
    identity: String,
}

impl Held {
    /// Opens it to `target`; `identity` must answer.
    fn open(cluster: &Cluster, target: &str, identity: &str) -> Result<Held> {
        let (client, reply) =
            HeldClient::open(cluster.client.place(), ClientMode::Tcp, target.parse()?)?;
        if reply.identity() != Some(identity) {
            bail!("a held connection to {target}: {reply:?}, not {identity}");
        }
        Ok(Held {
            client,
            identity: identity.to_owned(),
        })
    }

    /// Sends on it once more: the same backend must answer.
    fn still_answers(&mut self, phase: &str) -> Result<()> {
        let reply = self.client.send()?;
        if reply.identity() != Some(self.identity.as_str()) {
            bail!(
                "{phase}: an established connection to {} broke: {reply:?}",
                self.identity
            );
        }
        Ok(())
    }
}

/// Polls `condition` until it holds or [`WITHIN`] passes; the error names `phase` and the
/// condition's last word.
fn wait_until(phase: &str, mut condition: impl FnMut() -> Result<(), String>) -> Result<()> {
    let deadline = Instant::now() + WITHIN;
    loop {
        match condition() {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() > deadline => {
                bail!("{phase}: not within {WITHIN:?}: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits until a new flow (`mode`) from `place` to `target` is answered by one of
/// `identities`.
fn wait_answered(
    place: &netsim::Place,
    mode: ClientMode,
    target: &str,
    identities: &[&str],
    phase: &str,
) -> Result<()> {
    let target: SocketAddr = target.parse()?;
    wait_until(phase, || {
        let reply = place.client_once(mode, target).map_err(|e| e.to_string())?;
        match reply.identity() {
            Some(id) if identities.contains(&id) => Ok(()),
            _ => Err(format!("{target} from {}: {reply:?}", place.name())),
        }
    })
}

/// Waits until a new flow (`mode`) from `place` to `target` is not answered (refused,
/// unreachable or timed out: nothing serves it any more); the reply that was not answered.
fn wait_unanswered(
    place: &netsim::Place,
    mode: ClientMode,
    target: &str,
    phase: &str,
) -> Result<Reply> {
    let target: SocketAddr = target.parse()?;
    let mut unanswered = None;
    wait_until(phase, || {
        let reply = place.client_once(mode, target).map_err(|e| e.to_string())?;
        match reply.identity() {
            None => {
                unanswered = Some(reply);
                Ok(())
            }
            Some(id) => Err(format!(
                "{target} from {} still answered by {id}",
                place.name()
            )),
        }
    })?;
    unanswered.context("no reply")
}

// ---------------------------------------------------------------------------------------------
// The tests.

fn follows_kubectl_changes() -> Result<(), Failed> {
    follows_kubectl_changes_inner().map_err(failed)
}

fn follows_kubectl_changes_inner() -> Result<()> {
    let net = 92;
    let web = Web {
        net,
        port: 80,
        node_port: false,
        target_port: TARGET_PORT,
        backends: &["b1"],
    };
    let cluster = Cluster::start("e2k", net, &web.manifest())?;
    let client = cluster.client.place();
    let (tcp_mode, udp_mode) = (ClientMode::Tcp, ClientMode::UdpConnected);
    let http = format!("{}:80", cluster.cluster_ip(10));
    let dns = format!("{}:53", cluster.cluster_ip(10));
    wait_answered(client, tcp_mode, &http, &["b1"], "the first sync (http)")?;
    wait_answered(client, udp_mode, &dns, &["b1"], "the first sync (dns)")?;
    let tcp = cluster.stream(tcp_mode, &http)?;
    let udp = cluster.stream(udp_mode, &dns)?;
    let streams = [&tcp, &udp];
    let wait_for_flows = |phase: &str| -> Result<()> {
        streams
            .iter()
            .try_for_each(|s| s.wait_for_flows(FLOWS, phase))
    };
    let wait_for_backends = |since: Instant, expected: &[&str], phase: &str| -> Result<()> {
        streams
            .iter()
            .try_for_each(|s| s.wait_for_backends(since, expected, phase))
    };
    wait_for_flows("before any change")?;
    // Failed flows are accepted only between a change that must stop the service and the
    // moment it answers again (plus the client's timeout for flows already under way). A
    // change of the http port leaves dns alone: each stream has its own windows.
    let (mut tcp_allowed, mut udp_allowed) = (Vec::new(), Vec::new());

    // Scale up, then down: the answers over TCP and UDP follow the endpoints, and no flow
    // fails (each flow is a new socket; the agent destroys only connected UDP sockets whose
    // backend went away).
    let t = Instant::now();
    cluster.apply(
        &Web {
            backends: &["b1", "b2", "b3"],
            ..web
        }
        .manifest(),
    )?;
    wait_for_backends(t, &["b1", "b2", "b3"], "scale up to three endpoints")?;
    let web = Web {
        backends: &["b2"],
        ..web
    };
    let t = Instant::now();
    cluster.apply(&web.manifest())?;
    wait_for_backends(t, &["b2"], "scale down to one endpoint")?;

    // A targetPort change (the Service's targetPort and the slice's port): the same backend
    // answers both protocols, now on its second port, and no flow fails on the way.
    let web = Web {
        target_port: OTHER_TARGET_PORT,
        ..web
    };
    cluster.apply(&web.manifest())?;
    let moved_ports = BTreeMap::from([
        (format!("TCP {http}"), BTreeSet::from([OTHER_TARGET_PORT])),
        (format!("UDP {dns}"), BTreeSet::from([OTHER_TARGET_PORT])),
    ]);
    wait_until("the targetPort change in the pinned maps", || {
        let ports =
            backend_ports(&cluster, &cluster.cluster_ip(10)).map_err(|e| format!("{e:#}"))?;
        (ports == moved_ports).then_some(()).ok_or(format!(
            "backend ports by frontend: {ports:?}, waiting for {moved_ports:?}"
        ))
    })?;
    let t = Instant::now();
    wait_for_backends(t, &["b2"], "after the targetPort change")?;

    // A port change: the new port answers, the old one stops; and back. dns never stops.
    let start = Instant::now();
    cluster.apply(&Web { port: 8000, ..web }.manifest())?;
    let moved = format!("{}:8000", cluster.cluster_ip(10));
    wait_answered(
        client,
        tcp_mode,
        &moved,
        &["b2"],
        "the service on its new port",
    )?;
    let _ = wait_unanswered(
        client,
        tcp_mode,
        &http,
        "the old port after the port change",
    )?;
    cluster.apply(&web.manifest())?;
    wait_answered(client, tcp_mode, &http, &["b2"], "the port changed back")?;
    let _ = wait_unanswered(
        client,
        tcp_mode,
        &moved,
        "the second port after the change back",
    )?;
    tcp_allowed.push((start, Instant::now() + FLOW_TIMEOUT_SLACK));
    wait_for_flows("after the port change")?;

    // ClusterIP -> NodePort: the node port answers new connections from the other node, and
    // those follow the endpoints scaled up and down like the ClusterIP's; and back: the node
    // port is refused. The ClusterIP keeps serving throughout.
    let outside = cluster.outside.place();
    let node_port = format!("{}:{HTTP_NODE_PORT}", cluster.node_ip());
    let web = Web {
        node_port: true,
        ..web
    };
    cluster.apply(&web.manifest())?;
    wait_answered(
        outside,
        tcp_mode,
        &node_port,
        &["b2"],
        "the NodePort from another node",
    )?;
    let from_outside = FlowStream::start(outside, tcp_mode, node_port.parse()?)?;
    from_outside.wait_for_flows(FLOWS, "the NodePort from another node")?;
    let all_streams = [&tcp, &udp, &from_outside];
    for (backends, phase) in [
        (
            &["b1", "b2", "b3"][..],
            "NodePort scaled up to three endpoints",
        ),
        (&["b3"][..], "NodePort scaled down to one endpoint"),
    ] {
        let t = Instant::now();
        cluster.apply(&Web { backends, ..web }.manifest())?;
        for stream in all_streams {
            stream.wait_for_backends(t, backends, phase)?;
        }
    }
    from_outside.check(&[])?;
    drop(from_outside);
    let web = Web {
        node_port: false,
        backends: &["b3"],
        ..web
    };
    cluster.apply(&web.manifest())?;
    let reply = wait_unanswered(
        outside,
        tcp_mode,
        &node_port,
        "the NodePort after the type went back",
    )?;
    // Nothing listens on the node port: the node's own stack refuses the connection.
    if reply.errno != Some(nix::libc::ECONNREFUSED) {
        bail!("the NodePort after the type went back: not refused: {reply:?}");
    }
    wait_for_flows("after the type changes")?;

    // The service-proxy-name label hands the service to another proxy (neither port answers);
    // removing it brings it back.
    let start = Instant::now();
    let label = "service.kubernetes.io/service-proxy-name";
    cluster.kubectl_run(&["label", "service", "web", &format!("{label}=other-proxy")])?;
    let phase = "the service labelled for another proxy";
    let _ = wait_unanswered(client, tcp_mode, &http, phase)?;
    let _ = wait_unanswered(client, udp_mode, &dns, phase)?;
    cluster.kubectl_run(&["label", "service", "web", &format!("{label}-")])?;
    wait_answered(client, tcp_mode, &http, &["b3"], "the label removed (http)")?;
    wait_answered(client, udp_mode, &dns, &["b3"], "the label removed (dns)")?;
    let window = (start, Instant::now() + FLOW_TIMEOUT_SLACK);
    tcp_allowed.push(window);
    udp_allowed.push(window);
    wait_for_flows("after the label toggle")?;

    // Delete the service and its slice (neither port answers); recreate them.
    let start = Instant::now();
    cluster.kubectl_run(&["delete", "service", "web"])?;
    cluster.kubectl_run(&["delete", "endpointslices.discovery.k8s.io", "web-1"])?;
    let _ = wait_unanswered(client, tcp_mode, &http, "the service deleted (http)")?;
    let _ = wait_unanswered(client, udp_mode, &dns, "the service deleted (dns)")?;
    let recreated: &[&str] = &["b1", "b3"];
    cluster.apply(
        &Web {
            backends: recreated,
            ..web
        }
        .manifest(),
    )?;
    wait_answered(
        client,
        tcp_mode,
        &http,
        recreated,
        "the service recreated (http)",
    )?;
    wait_answered(
        client,
        udp_mode,
        &dns,
        recreated,
        "the service recreated (dns)",
    )?;
    let window = (start, Instant::now() + FLOW_TIMEOUT_SLACK);
    tcp_allowed.push(window);
    udp_allowed.push(window);
    let t = Instant::now();
    wait_for_backends(t, recreated, "the recreated service's endpoints")?;

    // Both streams' verdicts, so one failing does not hide the other's.
    let verdicts = [tcp.check(&tcp_allowed), udp.check(&udp_allowed)];
    let errors: Vec<String> = verdicts
        .into_iter()
        .filter_map(|v| v.err().map(|e| format!("{e:#}")))
        .collect();
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

/// The ports of the backends the pinned maps give each frontend at `ip`, by frontend
/// (`TCP 10.96.92.10:80`): where the datapath really sends a service's traffic.
fn backend_ports(cluster: &Cluster, ip: &str) -> Result<BTreeMap<String, BTreeSet<u16>>> {
    let contents = ServiceMaps::open_pinned(&cluster.agent.pin_dir())?.read()?;
    Ok(contents
        .frontends()
        .into_iter()
        .filter(|f| f.frontend.addr.ip.to_string() == ip)
        .map(|f| {
            let addr = f.frontend.addr;
            let ports = f
                .backends
                .iter()
                .map(|(_, backend, _)| backend.port)
                .collect();
            (
                format!("{} {}:{}", addr.protocol, addr.ip, addr.port),
                ports,
            )
        })
        .collect())
}

/// What the agent logs when a request to the API server fails (`lb/src/source/api/watch.rs`).
const API_WARNING: &str = "Kubernetes API:";

/// How many failed API requests the agent has logged so far.
fn api_warnings(cluster: &Cluster) -> usize {
    cluster
        .agent
        .log()
        .lines()
        .filter(|l| l.contains(API_WARNING))
        .count()
}

fn api_server_restart() -> Result<(), Failed> {
    api_server_restart_inner().map_err(failed)
}

fn api_server_restart_inner() -> Result<()> {
    let net = 93;
    let ip = format!("10.96.{net}.10");
    let mut cluster = Cluster::start(
        "e2s",
        net,
        &service("web", &ip, 80, None, "", &[format!("10.{net}.1.9")]),
    )?;
    let front = format!("{ip}:80");
    let mut held = Held::open(&cluster, &front, "b1")?;
    let stream = cluster.stream(ClientMode::Tcp, &front)?;
    stream.wait_for_flows(FLOWS, "before the restart")?;

    // The agent loses the server (its connections are cut while the server restarts); the
    // pinned datapath serves on meanwhile.
    let warned = api_warnings(&cluster);
    cluster.agent.forward().cut();
    cluster.server.restart()?;
    stream.wait_for_flows(FLOWS, "while the agent had no API server")?;
    cluster
        .agent
        .wait_for_log(API_WARNING, warned + 1, WITHIN)
        .context("the agent never noticed it had lost the server")?;
    cluster.agent.forward().reconnect(&cluster.server)?;

    // A change made after the restart reaches the datapath: the agent reconnected.
    let t = Instant::now();
    cluster.apply(&service(
        "web",
        &ip,
        80,
        None,
        "",
        &[cluster.backend_ip("b1"), cluster.backend_ip("b2")],
    ))?;
    stream.wait_for_backends(t, &["b1", "b2"], "a change after the server restarted")?;
    held.still_answers("after the API server's restart")?;
    stream.check(&[])
}

fn agent_restart() -> Result<(), Failed> {
    agent_restart_inner().map_err(failed)
}

fn agent_restart_inner() -> Result<()> {
    let net = 94;
    let ip = format!("10.96.{net}.10");
    let mut cluster = Cluster::start(
        "e2r",
        net,
        &service("web", &ip, 80, None, "", &[format!("10.{net}.1.9")]),
    )?;
    let front = format!("{ip}:80");
    let mut held = Held::open(&cluster, &front, "b1")?;
    let stream = cluster.stream(ClientMode::Tcp, &front)?;
    stream.wait_for_flows(FLOWS, "before the kill")?;

    cluster.agent.kill()?;
    cluster.apply(&service(
        "web",
        &ip,
        80,
        None,
        "",
        &[cluster.backend_ip("b1"), cluster.backend_ip("b2")],
    ))?;
    stream.wait_for_flows(FLOWS, "with the agent killed")?;
    let t = Instant::now();
    cluster.agent.start_again()?;
    stream.wait_for_backends(t, &["b1", "b2"], "the change made while the agent was down")?;
    held.still_answers("after the agent's restart")?;
    stream.check(&[])
}

fn watch_gap_deletion() -> Result<(), Failed> {
    watch_gap_deletion_inner().map_err(failed)
}

/// Frontend addresses and backend ids in the pinned maps: (frontends as `ip:port`, the
/// backend ids the frontends use, every backend id in the backends map).
fn pinned(cluster: &Cluster) -> Result<(BTreeSet<String>, BTreeSet<u32>, BTreeSet<u32>)> {
    let contents = ServiceMaps::open_pinned(&cluster.agent.pin_dir())?.read()?;
    let frontends = contents.frontends();
    let addrs = frontends
        .iter()
        .map(|f| format!("{}:{}", f.frontend.addr.ip, f.frontend.addr.port))
        .collect();
    let used = frontends
        .iter()
        .flat_map(|f| f.backends.iter().map(|(id, _, _)| *id))
        .collect();
    let all = contents.backends.keys().copied().collect();
    Ok((addrs, used, all))
}

/// How many complete Service lists the agent has logged (its first, and each re-list).
fn service_lists(cluster: &Cluster) -> usize {
    cluster
        .agent
        .log()
        .lines()
        // The message and the kind's value (`listed kind="Service" objects=N`).
        .filter(|l| l.contains("listed") && l.contains(r#""Service""#))
        .count()
}

fn watch_gap_deletion_inner() -> Result<()> {
    let net = 95;
    let kept_ip = format!("10.96.{net}.10");
    let gone_ip = format!("10.96.{net}.20");
    let manifest = format!(
        "{}---\n{}",
        service("web", &kept_ip, 80, None, "", &[format!("10.{net}.1.9")]),
        service("gone", &gone_ip, 80, None, "", &[format!("10.{net}.1.11")]),
    );
    let mut cluster = Cluster::start("e2g", net, &manifest)?;
    let client = cluster.client.place();
    let gone = format!("{gone_ip}:80");
    wait_answered(
        client,
        ClientMode::Tcp,
        &gone,
        &["b3"],
        "the service to delete, before the gap",
    )?;
    let stream = cluster.stream(ClientMode::Tcp, &format!("{kept_ip}:80"))?;
    stream.wait_for_flows(FLOWS, "before the gap")?;
    let (before, _, _) = pinned(&cluster)?;
    if !before.contains(&gone) {
        bail!("{gone} is not in the pinned maps before the gap: {before:?}");
    }

    // Cut the agent off, delete one service while it cannot see it, and compact the history
    // so its watch cannot resume: it must re-list and find the service gone.
    let warned = api_warnings(&cluster);
    let lists_before = service_lists(&cluster);
    cluster.agent.forward().cut();
    cluster.kubectl_run(&["delete", "service", "gone"])?;
    cluster.kubectl_run(&["delete", "endpointslices.discovery.k8s.io", "gone-1"])?;
    cluster.kubectl().run(
        &["create", "--raw", "/lbtest/compact", "-f", "-"],
        Some("{}"),
    )?;
    // The watch cache keeps recent events in memory; a restart starts it from etcd.
    cluster.server.restart()?;
    stream.wait_for_flows(FLOWS, "during the gap")?;
    cluster
        .agent
        .wait_for_log(API_WARNING, warned + 1, WITHIN)
        .context("the agent never noticed the gap")?;
    cluster.agent.forward().reconnect(&cluster.server)?;

    wait_until("the agent's re-list of Services after the gap", || {
        let now = service_lists(&cluster);
        (now > lists_before).then_some(()).ok_or(format!(
            "{now} Service lists logged, as before the gap; the agent's list lines:\n{}",
            cluster
                .agent
                .log()
                .lines()
                .filter(|l| l.contains("list"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    })?;
    let _ = wait_unanswered(
        client,
        ClientMode::Tcp,
        &gone,
        "the service deleted during the gap",
    )?;
    wait_until("the pinned maps after the re-list", || {
        let (addrs, used, all) = pinned(&cluster).map_err(|e| format!("{e:#}"))?;
        let kept = format!("{kept_ip}:80");
        if addrs.contains(&gone) || !addrs.contains(&kept) || used != all {
            Err(format!(
                "frontends {addrs:?}, backend ids used {used:?}, backend ids in the map {all:?}"
            ))
        } else {
            Ok(())
        }
    })?;
    stream.check(&[])
}
