//! The bench's service set, written two ways: as Kubernetes YAML for `lb-agent` (Services,
//! EndpointSlices and the Node), and as the `nat` table kube-proxy's iptables mode would
//! generate for the same services, for `iptables-restore`.
//!
//! Service `i` (0-based) is `default/svc-NNNNN` with ClusterIP `first_ip + i`, TCP port
//! [`SERVICE_PORT`], and the same ready endpoints (`BACKEND_PORT` on each backend address).
//! Services are written in index order, so the last one is the last rule of `KUBE-SERVICES`.

use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The services' port.
pub const SERVICE_PORT: u16 = 80;
/// The backends' port.
pub const BACKEND_PORT: u16 = 8080;

/// `count` ClusterIP services sharing `backends`.
#[derive(Clone, Debug)]
pub struct ServiceSet {
    /// How many services.
    pub count: u32,
    /// The ClusterIP of service 0; service `i` has `first_ip + i`.
    pub first_ip: Ipv4Addr,
    /// Every service's endpoints (their addresses; the port is [`BACKEND_PORT`]).
    pub backends: Vec<Ipv4Addr>,
    /// The node the endpoints are on.
    pub node: String,
    /// That node's InternalIP.
    pub node_ip: Ipv4Addr,
}

impl ServiceSet {
    /// The name of service `i`.
    pub fn name(&self, i: u32) -> String {
        format!("svc-{i:05}")
    }

    /// The ClusterIP of service `i`.
    ///
    /// # Panics
    /// When the set does not fit above `first_ip` (a bench constant, not user input).
    pub fn cluster_ip(&self, i: u32) -> Ipv4Addr {
        let ip = u32::from(self.first_ip)
            .checked_add(i)
            .expect("the service range fits IPv4");
        Ipv4Addr::from(ip)
    }

    /// The frontend of service `i`.
    pub fn frontend(&self, i: u32) -> SocketAddrV4 {
        SocketAddrV4::new(self.cluster_ip(i), SERVICE_PORT)
    }

    /// The frontend of the last service: the end of the iptables chain.
    pub fn last(&self) -> SocketAddrV4 {
        self.frontend(self.count - 1)
    }

    /// The backend addresses with their port.
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddrV4> + '_ {
        self.backends
            .iter()
            .map(|&ip| SocketAddrV4::new(ip, BACKEND_PORT))
    }

    /// The Node, then a Service and an EndpointSlice per service, as one multi-document YAML.
    pub fn manifests(&self) -> String {
        let mut out = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\n\
             status: {{addresses: [{{type: InternalIP, address: \"{}\"}}]}}\n",
            self.node, self.node_ip
        );
        let endpoints: Vec<String> = self
            .backends
            .iter()
            .map(|ip| {
                format!(
                    "  - {{addresses: [\"{ip}\"], conditions: {{ready: true}}, nodeName: {}}}\n",
                    self.node
                )
            })
            .collect();
        let endpoints = endpoints.concat();
        for i in 0..self.count {
            let name = self.name(i);
            let ip = self.cluster_ip(i);
            write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
                 spec:\n  type: ClusterIP\n  clusterIP: \"{ip}\"\n  clusterIPs: [\"{ip}\"]\n  \
                 ports: [{{port: {SERVICE_PORT}, protocol: TCP, targetPort: {BACKEND_PORT}}}]\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata:\n  name: {name}-1\n  namespace: default\n  \
                 labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\n\
                 ports: [{{name: \"\", port: {BACKEND_PORT}, protocol: TCP}}]\nendpoints:\n{endpoints}"
            )
            .expect("writing to a String cannot fail");
        }
        out
    }

    /// The `nat` table as kube-proxy's iptables mode writes it for these services, for
    /// locally originated connections: `OUTPUT` jumps to `KUBE-SERVICES`, one rule per service
    /// (ClusterIP and port) jumps to its `KUBE-SVC-…` chain, which picks an endpoint with
    /// `-m statistic --mode random --probability 1/(n-i)` rules, each jumping to a
    /// `KUBE-SEP-…` chain that DNATs; `KUBE-SERVICES` ends with the node-port rule; marked
    /// packets are masqueraded in `POSTROUTING`.
    pub fn iptables_restore(&self) -> String {
        let mut chains = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
             :KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
        );
        let rules = String::from(
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
             -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
             -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
             -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
        );
        let mut services = String::new();
        let mut per_service = String::new();
        let n = self.backends.len();
        for i in 0..self.count {
            let name = format!("default/{}", self.name(i));
            let svc = chain_name("KUBE-SVC-", &name);
            let ip = self.cluster_ip(i);
            writeln!(chains, ":{svc} - [0:0]").expect("String");
            writeln!(
                services,
                "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" \
                 -m tcp --dport {SERVICE_PORT} -j {svc}"
            )
            .expect("String");
            for (k, ep) in self.endpoints().enumerate() {
                let sep = chain_name("KUBE-SEP-", &format!("{name} {ep}"));
                writeln!(chains, ":{sep} - [0:0]").expect("String");
                let pick = if k + 1 < n {
                    format!(
                        " -m statistic --mode random --probability {}",
                        probability(n - k)
                    )
                } else {
                    String::new()
                };
                writeln!(
                    per_service,
                    "-A {svc} -m comment --comment \"{name} -> {ep}\"{pick} -j {sep}"
                )
                .expect("String");
                writeln!(
                    per_service,
                    "-A {sep} -s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ\n\
                     -A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ep}",
                    ep.ip()
                )
                .expect("String");
            }
        }
        services.push_str(
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
             be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
        );
        format!("{chains}{rules}{services}{per_service}COMMIT\n")
    }
}

/// The probability that picks one of `remaining` endpoints uniformly, as kube-proxy prints it.
fn probability(remaining: usize) -> String {
    format!("{:.10}", 1.0 / remaining as f64)
}

/// `prefix` and 16 characters of a hash of `what`: kube-proxy's chain names are 25
/// characters of this shape (it uses base32 of SHA-256; any stable hash serves here).
fn chain_name(prefix: &str, what: &str) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(what.as_bytes());
    format!("{prefix}{:016X}", h.finish())
}
