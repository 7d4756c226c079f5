//! What the demo builds, read from its Kubernetes YAML (`xtask/demo/manifests`): one netsim
//! node per Node, one netsim pod per Pod, HTTP servers on the pods' container ports, and the
//! requests aimed at the Service. Reading the topology from the same files the agents program
//! keeps the two from drifting apart.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use ipnet::Ipv4Net;
use serde::Deserialize;

/// The demo's inputs, checked.
#[derive(Debug)]
pub struct DemoSpec {
    /// The agents' values file.
    pub values: PathBuf,
    /// Manifest files every agent starts with (Nodes, Pods).
    pub initial_files: Vec<PathBuf>,
    /// The file applied once the agents run (the Service and its EndpointSlice).
    pub service_file: PathBuf,
    /// The nodes, in file order; requests are made from the first.
    pub nodes: Vec<NodeDef>,
    /// The pods, in file order.
    pub pods: Vec<PodDef>,
    /// The service the requests go to.
    pub service: ServiceDef,
}

/// A Node: name, InternalIP (on `eth0`) and podCIDR.
#[derive(Debug, Clone)]
pub struct NodeDef {
    pub name: String,
    pub address: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
}

/// A Pod: name, node, IP and the container ports it serves HTTP on (none for a client).
#[derive(Debug, Clone)]
pub struct PodDef {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<u16>,
}

/// The NodePort service and the pods its EndpointSlices name.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: u16,
    /// Names of the pods whose IPs are the service's endpoints.
    pub backends: Vec<String>,
}

impl DemoSpec {
    /// The node requests are made from.
    pub fn first_node(&self) -> &NodeDef {
        &self.nodes[0]
    }

    /// The pod making requests from inside the cluster: the first pod without container
    /// ports on the first node.
    pub fn client_pod(&self) -> Option<&PodDef> {
        self.pods
            .iter()
            .find(|p| p.ports.is_empty() && p.node == self.first_node().name)
    }
}

#[derive(Deserialize)]
struct Meta {
    name: String,
}

#[derive(Deserialize)]
struct NodeObject {
    metadata: Meta,
    spec: NodeObjectSpec,
    status: NodeObjectStatus,
}

#[derive(Deserialize)]
struct NodeObjectSpec {
    #[serde(rename = "podCIDR")]
    pod_cidr: Ipv4Net,
}

#[derive(Deserialize)]
struct NodeObjectStatus {
    addresses: Vec<NodeAddress>,
}

#[derive(Deserialize)]
struct NodeAddress {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

#[derive(Deserialize)]
struct PodObject {
    metadata: Meta,
    spec: PodObjectSpec,
    status: PodObjectStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodObjectSpec {
    node_name: String,
    containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    ports: Vec<ContainerPort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    container_port: u16,
}

#[derive(Deserialize)]
struct PodObjectStatus {
    #[serde(rename = "podIP")]
    pod_ip: Ipv4Addr,
}

#[derive(Deserialize)]
struct ServiceObject {
    metadata: Meta,
    spec: ServiceObjectSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceObjectSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Ipv4Addr,
    ports: Vec<ServicePort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePort {
    port: u16,
    node_port: Option<u16>,
}

#[derive(Deserialize)]
struct SliceObject {
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
struct Endpoint {
    addresses: Vec<Ipv4Addr>,
}

/// Objects read so far, with the files they came from.
#[derive(Default)]
struct Collected {
    nodes: Vec<NodeDef>,
    pods: Vec<PodDef>,
    services: Vec<(PathBuf, ServiceObject)>,
    endpoint_ips: Vec<Ipv4Addr>,
}

/// Reads `dir/values.yaml` and every `*.yaml` in `dir/manifests`.
pub fn load(dir: &Path) -> Result<DemoSpec> {
    let values = dir.join("values.yaml");
    ensure!(values.is_file(), "{} is missing", values.display());
    let manifests = dir.join("manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&manifests)
        .with_context(|| format!("reading {}", manifests.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut collected = Collected::default();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc)
                .with_context(|| format!("{}: document {index} is not YAML", file.display()))?;
            collect(file, index, value, &mut collected)?;
        }
    }
    finish(values, files, collected)
}

fn collect(file: &Path, index: usize, value: serde_yaml::Value, out: &mut Collected) -> Result<()> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_owned();
    let at = || format!("{}: document {index} ({kind})", file.display());
    match kind.as_str() {
        "Node" => {
            let node: NodeObject = serde_yaml::from_value(value).with_context(at)?;
            let address = node
                .status
                .addresses
                .iter()
                .find(|a| a.kind == "InternalIP")
                .with_context(|| format!("{}: status.addresses has no InternalIP", at()))?;
            let address = address.address.parse().with_context(|| {
                format!(
                    "{}: InternalIP {:?} is not an IPv4 address",
                    at(),
                    address.address
                )
            })?;
            out.nodes.push(NodeDef {
                name: node.metadata.name,
                address,
                pod_cidr: node.spec.pod_cidr,
            });
        }
        "Pod" => {
            let pod: PodObject = serde_yaml::from_value(value).with_context(at)?;
            let ports = pod
                .spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().map(|p| p.container_port))
                .collect();
            out.pods.push(PodDef {
                name: pod.metadata.name,
                node: pod.spec.node_name,
                ip: pod.status.pod_ip,
                ports,
            });
        }
        "Service" => {
            let service: ServiceObject = serde_yaml::from_value(value).with_context(at)?;
            out.services.push((file.to_owned(), service));
        }
        "EndpointSlice" => {
            let slice: SliceObject = serde_yaml::from_value(value).with_context(at)?;
            out.endpoint_ips
                .extend(slice.endpoints.into_iter().flat_map(|e| e.addresses));
        }
        other => bail!(
            "{}: kind {other:?} is not one the demo builds (Node, Pod, Service, EndpointSlice)",
            at()
        ),
    }
    Ok(())
}

fn finish(values: PathBuf, files: Vec<PathBuf>, c: Collected) -> Result<DemoSpec> {
    ensure!(!c.nodes.is_empty(), "the demo's manifests define no Node");
    let [(service_file, service)] = <[_; 1]>::try_from(c.services).map_err(|s| {
        anyhow::anyhow!(
            "the demo's manifests must define exactly one Service, not {}",
            s.len()
        )
    })?;
    let port = service
        .spec
        .ports
        .first()
        .with_context(|| format!("Service {}: spec.ports is empty", service.metadata.name))?;
    let node_port = port.node_port.with_context(|| {
        format!(
            "Service {}: spec.ports[0].nodePort is missing (the demo needs a NodePort service)",
            service.metadata.name
        )
    })?;
    for pod in &c.pods {
        ensure!(
            c.nodes.iter().any(|n| n.name == pod.node),
            "Pod {}: spec.nodeName {:?} is not a Node of the demo ({})",
            pod.name,
            pod.node,
            c.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut backends = Vec::new();
    for ip in &c.endpoint_ips {
        let pod = c
            .pods
            .iter()
            .find(|p| p.ip == *ip)
            .with_context(|| format!("EndpointSlice address {ip} is not the podIP of a Pod"))?;
        backends.push(pod.name.clone());
    }
    ensure!(
        !backends.is_empty(),
        "Service {}: no EndpointSlice names a pod",
        service.metadata.name
    );
    let spec = DemoSpec {
        values,
        initial_files: files.into_iter().filter(|f| *f != service_file).collect(),
        service_file,
        nodes: c.nodes,
        pods: c.pods,
        service: ServiceDef {
            name: service.metadata.name,
            cluster_ip: service.spec.cluster_ip,
            port: port.port,
            node_port,
            backends,
        },
    };
    ensure!(
        spec.client_pod().is_some(),
        "no client pod: the demo needs a Pod without container ports on {}",
        spec.first_node().name
    );
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_manifests_give_two_nodes_with_a_backend_each() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
        let spec = load(&dir).unwrap();
        let nodes: Vec<&str> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nodes, ["node1", "node2"]);
        let backend_nodes: Vec<&str> = spec
            .service
            .backends
            .iter()
            .map(|b| {
                spec.pods
                    .iter()
                    .find(|p| p.name == *b)
                    .unwrap()
                    .node
                    .as_str()
            })
            .collect();
        assert_eq!(backend_nodes, ["node1", "node2"], "one backend per node");
        assert_eq!(spec.service.node_port, 31940);
        assert_eq!(spec.client_pod().unwrap().name, "client");
        assert!(spec.service_file.ends_with("my-nginx.yaml"));
        assert!(!spec.initial_files.contains(&spec.service_file));
    }

    /// A demo directory in a scratch place with `manifests/objects.yaml` holding `objects`.
    fn load_objects(name: &str, objects: &str) -> Result<DemoSpec> {
        let dir =
            std::env::temp_dir().join(format!("xtask-demo-spec-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        std::fs::write(dir.join("values.yaml"), "kubeProxyReplacement: true\n").unwrap();
        std::fs::write(dir.join("manifests/objects.yaml"), objects).unwrap();
        let spec = load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        spec
    }

    const NODE: &str = "kind: Node\nmetadata: {name: node1}\nspec: {podCIDR: 10.217.0.0/25}\nstatus: {addresses: [{type: InternalIP, address: 192.168.56.11}]}\n";

    #[test]
    fn a_pod_on_an_unknown_node_is_refused_naming_both() {
        let objects = format!("{NODE}---\nkind: Pod\nmetadata: {{name: web}}\nspec: {{nodeName: node9, containers: [{{name: c}}]}}\nstatus: {{podIP: 10.217.0.5}}\n---\nkind: Service\nmetadata: {{name: s}}\nspec: {{clusterIP: 10.96.0.1, ports: [{{port: 80, nodePort: 31000}}]}}\n");
        let err = format!("{:#}", load_objects("unknown-node", &objects).unwrap_err());
        assert!(
            err.contains("Pod web") && err.contains("node9") && err.contains("node1"),
            "{err}"
        );
    }

    #[test]
    fn a_service_without_node_port_is_refused() {
        let objects = format!("{NODE}---\nkind: Service\nmetadata: {{name: s}}\nspec: {{clusterIP: 10.96.0.1, ports: [{{port: 80}}]}}\n");
        let err = format!("{:#}", load_objects("no-nodeport", &objects).unwrap_err());
        assert!(
            err.contains("Service s") && err.contains("nodePort"),
            "{err}"
        );
    }

    #[test]
    fn a_node_without_pod_cidr_is_refused_naming_the_file() {
        let err = load_objects(
            "no-cidr",
            "kind: Node\nmetadata: {name: node1}\nspec: {}\nstatus: {addresses: []}\n",
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("objects.yaml: document 0 (Node)") && err.contains("podCIDR"),
            "{err}"
        );
    }
}
