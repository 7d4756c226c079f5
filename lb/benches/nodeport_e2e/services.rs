//! The bench's NodePort services, written two ways: as Kubernetes YAML for `lb-agent`
//! (Nodes, Services, EndpointSlices), and as the `nat` table kube-proxy's iptables mode would
//! generate for the same services, for `iptables-restore`.
//!
//! Service `i` (0-based) is `default/np-NNNNN`, type NodePort, ClusterIP `10.96.0.1 + i`, with
//! a TCP port 80 → [`BACKEND_PORT`] on node port [`FIRST_NODE_PORT`]` + i`, and the same ready
//! endpoints on the backend node. The last service, the measured one, has a UDP port too, on
//! the same node port (as Kubernetes allows): the agent gives every port four frontends
//! (ClusterIP, the node port on each device's address and on any address), and 10 000 services
//! with both protocols would not fit its 65 535 service ids.
//! Services are written in index order, so the last one is the last rule of `KUBE-SERVICES`
//! and of `KUBE-NODEPORTS`: the one the bench sends to.

use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The services' port.
pub const SERVICE_PORT: u16 = 80;
/// The backends' port, TCP and UDP.
pub const BACKEND_PORT: u16 = 8080;
/// Service `i`'s node port is this plus `i`; 10 000 services end at 39 999.
pub const FIRST_NODE_PORT: u16 = 30000;
/// The agent's `nodePort.range`, wide enough for 10 000 services.
pub const NODE_PORT_RANGE: &str = "30000,40000";
const FIRST_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const PROTOCOLS: [(&str, &str); 2] = [("TCP", "tcp"), ("UDP", "udp")];

/// `count` NodePort services sharing `backends`, served by a load-balancing node.
#[derive(Clone, Debug)]
pub struct ServiceSet {
    /// How many services.
    pub count: u32,
    /// Every service's endpoints (their addresses; the port is [`BACKEND_PORT`]).
    pub backends: Vec<Ipv4Addr>,
    /// The node the endpoints are on, and its InternalIP.
    pub backend_node: (String, Ipv4Addr),
    /// The load-balancing node, and its InternalIP.
    pub lb_node: (String, Ipv4Addr),
}

impl ServiceSet {
    fn name(i: u32) -> String {
        format!("np-{i:05}")
    }

    fn cluster_ip(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(FIRST_CLUSTER_IP) + i)
    }

    fn node_port(i: u32) -> u16 {
        FIRST_NODE_PORT + u16::try_from(i).expect("at most 10 000 services")
    }

    /// The node port the bench sends to: the last service's.
    pub fn measured_node_port(&self) -> u16 {
        Self::node_port(self.count - 1)
    }

    /// The protocols of service `i`'s ports: TCP, and UDP too for the measured service.
    fn protocols(&self, i: u32) -> &'static [(&'static str, &'static str)] {
        if i + 1 == self.count {
            &PROTOCOLS
        } else {
            &PROTOCOLS[..1]
        }
    }

    fn endpoints(&self) -> impl Iterator<Item = SocketAddrV4> + '_ {
        self.backends
            .iter()
            .map(|&ip| SocketAddrV4::new(ip, BACKEND_PORT))
    }

    /// Both Nodes, then a Service and an EndpointSlice per service, as one multi-document YAML.
    pub fn manifests(&self) -> String {
        let mut out = String::new();
        for (name, ip) in [&self.lb_node, &self.backend_node] {
            write!(
                out,
                "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n\
                 status: {{addresses: [{{type: InternalIP, address: \"{ip}\"}}]}}\n"
            )
            .expect("writing to a String cannot fail");
        }
        let endpoints: String = self
            .backends
            .iter()
            .map(|ip| {
                format!(
                    "  - {{addresses: [\"{ip}\"], conditions: {{ready: true}}, nodeName: {}}}\n",
                    self.backend_node.0
                )
            })
            .collect();
        for i in 0..self.count {
            let name = Self::name(i);
            let ip = Self::cluster_ip(i);
            let np = Self::node_port(i);
            let protocols = self.protocols(i);
            let ports: String = protocols
                .iter()
                .map(|(p, name)| {
                    format!(
                        "  - {{name: {name}, port: {SERVICE_PORT}, protocol: {p}, \
                         targetPort: {BACKEND_PORT}, nodePort: {np}}}\n"
                    )
                })
                .collect();
            let slice_ports: Vec<String> = protocols
                .iter()
                .map(|(p, name)| format!("{{name: {name}, port: {BACKEND_PORT}, protocol: {p}}}"))
                .collect();
            write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
                 spec:\n  type: NodePort\n  clusterIP: \"{ip}\"\n  clusterIPs: [\"{ip}\"]\n  \
                 ports:\n{ports}\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata:\n  name: {name}-1\n  namespace: default\n  \
                 labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\n\
                 ports: [{}]\nendpoints:\n{endpoints}",
                slice_ports.join(", ")
            )
            .expect("writing to a String cannot fail");
        }
        out
    }

    /// The `nat` table kube-proxy's iptables mode writes for these services, for traffic
    /// arriving at the node: `PREROUTING` jumps to `KUBE-SERVICES`, which has one rule per
    /// frontend (ClusterIP, protocol, port) jumping to its `KUBE-SVC-…` chain and ends with
    /// the jump to `KUBE-NODEPORTS` for local destinations; that has one rule per node port
    /// jumping to a `KUBE-EXT-…` chain, which marks the packet for masquerading and goes on to
    /// `KUBE-SVC-…`; that picks an endpoint with `-m statistic --mode random --probability
    /// 1/(n-i)` rules, each jumping to a `KUBE-SEP-…` chain that DNATs. Marked packets are
    /// masqueraded in `POSTROUTING` (`--random-fully`).
    pub fn iptables_restore(&self) -> String {
        let mut chains = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
             :KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
        );
        let fixed = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
             -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
             -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
             -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n";
        let mut services = String::new();
        let mut node_ports = String::new();
        let mut per_service = String::new();
        let n = self.backends.len();
        for i in 0..self.count {
            let ip = Self::cluster_ip(i);
            let np = Self::node_port(i);
            for &(proto_name, proto) in self.protocols(i) {
                let name = format!("default/{}:{proto}", Self::name(i));
                let svc = chain_name("KUBE-SVC-", &name);
                let ext = chain_name("KUBE-EXT-", &name);
                writeln!(chains, ":{svc} - [0:0]\n:{ext} - [0:0]").expect("String");
                writeln!(
                    services,
                    "-A KUBE-SERVICES -d {ip}/32 -p {proto} -m comment --comment \"{name} cluster IP\" \
                     -m {proto} --dport {SERVICE_PORT} -j {svc}"
                )
                .expect("String");
                writeln!(
                    node_ports,
                    "-A KUBE-NODEPORTS -p {proto} -m comment --comment \"{name}\" -m {proto} \
                     --dport {np} -j {ext}"
                )
                .expect("String");
                writeln!(
                    per_service,
                    "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" \
                     -j KUBE-MARK-MASQ\n-A {ext} -j {svc}"
                )
                .expect("String");
                for (k, ep) in self.endpoints().enumerate() {
                    let sep = chain_name("KUBE-SEP-", &format!("{name} {ep} {proto_name}"));
                    writeln!(chains, ":{sep} - [0:0]").expect("String");
                    let pick = if k + 1 < n {
                        format!(
                            " -m statistic --mode random --probability {:.10}",
                            1.0 / (n - k) as f64
                        )
                    } else {
                        String::new()
                    };
                    writeln!(
                        per_service,
                        "-A {svc} -m comment --comment \"{name} -> {ep}\"{pick} -j {sep}\n\
                         -A {sep} -s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ\n\
                         -A {sep} -p {proto} -m comment --comment \"{name}\" -m {proto} \
                         -j DNAT --to-destination {ep}",
                        ep.ip()
                    )
                    .expect("String");
                }
            }
        }
        services.push_str(
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
             be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
        );
        format!("{chains}{fixed}{services}{node_ports}{per_service}COMMIT\n")
    }
}

/// `prefix` and 16 characters of a hash of `what`: kube-proxy's chain names have this shape
/// (it uses base32 of SHA-256; any stable hash serves here).
fn chain_name(prefix: &str, what: &str) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(what.as_bytes());
    format!("{prefix}{:016X}", h.finish())
}
