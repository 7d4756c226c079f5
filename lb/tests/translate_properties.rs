//! Property tests of the translation from Kubernetes objects: generated clusters of Services
//! and EndpointSlices, checked for what a user would observe in `lbctl service list`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use lb::k8s::{
    translate, ClusterObjects, LocalNode, NodeContext, NodeDevice, TranslateOptions, Translation,
    TranslationCache,
};
use lb::model::{BackendState, IpFamily, LbService, Scope, ServiceType};
use lb::source::{Change, ClusterStore, Object, ObjectKey};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

const LOCAL: &str = "node-a";

#[derive(Clone, Debug)]
struct GenEndpoint {
    local: bool,
    ready: bool,
    serving: bool,
    terminating: bool,
}

#[derive(Clone, Debug)]
struct GenPort {
    udp: bool,
    port: u16,
    target: u16,
}

#[derive(Clone, Debug)]
struct GenService {
    kind: &'static str,
    dual_stack: bool,
    etp_local: bool,
    itp_local: bool,
    external_ip: bool,
    ports: Vec<GenPort>,
    endpoints: Vec<GenEndpoint>,
}

fn gen_endpoint() -> impl Strategy<Value = GenEndpoint> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(local, ready, serving, terminating)| GenEndpoint {
            local,
            ready,
            serving,
            terminating,
        },
    )
}

fn gen_service() -> impl Strategy<Value = GenService> {
    (
        prop::sample::select(vec!["ClusterIP", "NodePort", "LoadBalancer"]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((any::<bool>(), 1u16..=9000, 1u16..=65535), 1..=3),
        prop::collection::vec(gen_endpoint(), 0..=5),
    )
        .prop_map(
            |(kind, dual_stack, etp_local, itp_local, external_ip, ports, endpoints)| {
                // Kubernetes requires (port, protocol) to be unique within a Service.
                let mut seen = BTreeSet::new();
                let ports = ports
                    .into_iter()
                    .filter(|(udp, port, _)| seen.insert((*udp, *port)))
                    .map(|(udp, port, target)| GenPort { udp, port, target })
                    .collect();
                GenService {
                    kind,
                    dual_stack,
                    etp_local,
                    itp_local,
                    external_ip,
                    ports,
                    endpoints,
                }
            },
        )
}

fn cluster() -> impl Strategy<Value = Vec<GenService>> {
    prop::collection::vec(gen_service(), 1..=6)
}

fn name(i: usize) -> String {
    format!("svc-{i}")
}

fn service_json(i: usize, s: &GenService) -> Value {
    let mut cluster_ips = vec![format!("10.96.0.{}", i + 1)];
    if s.dual_stack {
        cluster_ips.push(format!("fd00:96::{:x}", i + 1));
    }
    let multi = s.ports.len() > 1;
    let ports: Vec<Value> = s
        .ports
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let mut port = json!({"port": p.port, "protocol": if p.udp {"UDP"} else {"TCP"}, "targetPort": p.target});
            if multi {
                port["name"] = json!(format!("p{j}"));
            }
            if s.kind != "ClusterIP" {
                port["nodePort"] = json!(30000 + i * 10 + j);
            }
            port
        })
        .collect();
    let mut spec = json!({
        "type": s.kind,
        "clusterIP": cluster_ips[0],
        "clusterIPs": cluster_ips,
        "ports": ports,
        "externalTrafficPolicy": if s.etp_local {"Local"} else {"Cluster"},
        "internalTrafficPolicy": if s.itp_local {"Local"} else {"Cluster"},
    });
    if s.external_ip {
        spec["externalIPs"] = json!([format!("203.0.113.{}", i + 1)]);
    }
    let mut svc = json!({"metadata": {"name": name(i), "namespace": "default"}, "spec": spec});
    if s.kind == "LoadBalancer" {
        svc["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": format!("192.0.2.{}", i + 1)}]}});
    }
    svc
}

fn slices_json(i: usize, s: &GenService) -> Vec<Value> {
    let multi = s.ports.len() > 1;
    let ports: Vec<Value> = s
        .ports
        .iter()
        .enumerate()
        .map(|(j, p)| {
            json!({"name": if multi { format!("p{j}") } else { String::new() }, "port": p.target,
                   "protocol": if p.udp {"UDP"} else {"TCP"}})
        })
        .collect();
    let families: &[&str] = if s.dual_stack {
        &["IPv4", "IPv6"]
    } else {
        &["IPv4"]
    };
    families
        .iter()
        .map(|family| {
            let endpoints: Vec<Value> = s
                .endpoints
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    let addr = if *family == "IPv4" {
                        format!("10.244.{}.{}", i, k + 1)
                    } else {
                        format!("fd00:244:{:x}::{:x}", i, k + 1)
                    };
                    json!({"addresses": [addr], "nodeName": if e.local { LOCAL } else { "node-b" },
                           "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating}})
                })
                .collect();
            json!({"metadata": {"name": format!("{}-{family}", name(i)), "namespace": "default",
                                "labels": {"kubernetes.io/service-name": name(i)}},
                   "addressType": family, "ports": ports, "endpoints": endpoints})
        })
        .collect()
}

fn objects(services: &[Value], slices: &[Value]) -> ClusterObjects {
    ClusterObjects {
        services: services
            .iter()
            .map(|v| Arc::new(serde_json::from_value::<Service>(v.clone()).unwrap().into()))
            .collect(),
        endpoint_slices: slices
            .iter()
            .map(|v| {
                Arc::new(
                    serde_json::from_value::<EndpointSlice>(v.clone())
                        .unwrap()
                        .into(),
                )
            })
            .collect(),
        ..ClusterObjects::default()
    }
}

fn to_json(gen: &[GenService]) -> (Vec<Value>, Vec<Value>) {
    let services = gen
        .iter()
        .enumerate()
        .map(|(i, s)| service_json(i, s))
        .collect();
    let slices = gen
        .iter()
        .enumerate()
        .flat_map(|(i, s)| slices_json(i, s))
        .collect();
    (services, slices)
}

fn node() -> LocalNode {
    let ctx = NodeContext {
        name: LOCAL.to_owned(),
        devices: vec![NodeDevice {
            name: "eth0".into(),
            addrs: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        }],
        ..NodeContext::default()
    };
    let selection = ctx.select_devices(&["eth0".parse().unwrap()], None);
    LocalNode::new(&ctx, &selection)
}

fn run(objects: &ClusterObjects) -> Translation {
    translate(objects, &node(), &TranslateOptions::default())
}

/// The state an endpoint's conditions give, as the API defines them.
fn expected_state(e: &GenEndpoint) -> Option<BackendState> {
    if e.ready && !e.terminating {
        Some(BackendState::Active)
    } else if e.terminating && e.serving {
        Some(BackendState::Terminating)
    } else {
        None
    }
}

fn frontends_of(t: &Translation, i: usize) -> Vec<&LbService> {
    t.state
        .services()
        .filter(|s| s.name.name == name(i))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn valid_clusters_translate_without_errors(gen in cluster()) {
        let (services, slices) = to_json(&gen);
        let t = run(&objects(&services, &slices));
        prop_assert!(t.errors.is_empty(), "{:?}", t.errors);
    }

    #[test]
    fn every_service_gets_the_frontends_its_type_and_policies_call_for(gen in cluster()) {
        let (services, slices) = to_json(&gen);
        let t = run(&objects(&services, &slices));
        for (i, s) in gen.iter().enumerate() {
            let scopes = if s.etp_local != s.itp_local { 2 } else { 1 };
            let node_facing = match s.kind {
                "ClusterIP" => 0,
                "NodePort" => 2,      // wildcard + eth0's address
                _ => 3,               // + the ingress IP
            } + usize::from(s.external_ip);
            let per_port_v4 = 1 + node_facing * scopes;
            // IPv6: wildcard and eth0's v6 address for node ports; the ingress and external IPs
            // are IPv4 only.
            let per_port_v6 = if s.dual_stack { 1 + if s.kind == "ClusterIP" { 0 } else { 2 } * scopes } else { 0 };
            let got = frontends_of(&t, i);
            prop_assert_eq!(got.len(), s.ports.len() * (per_port_v4 + per_port_v6), "{}: {:?}", name(i), got);
            let internal = got.iter().filter(|f| f.frontend.scope == Scope::Internal).count();
            prop_assert_eq!(internal > 0, s.etp_local != s.itp_local && node_facing > 0);
        }
    }

    #[test]
    fn backends_follow_endpoint_conditions_and_traffic_policies(gen in cluster()) {
        let (services, slices) = to_json(&gen);
        let t = run(&objects(&services, &slices));
        for (i, s) in gen.iter().enumerate() {
            for f in frontends_of(&t, i) {
                let family = f.frontend.addr.family();
                let local_only = match (f.frontend.kind, f.frontend.scope) {
                    (ServiceType::ClusterIP, _) | (_, Scope::Internal) => s.itp_local,
                    _ => s.etp_local,
                };
                // The service port behind this frontend: node ports are 30000 + 10·i + j.
                let udp = f.frontend.addr.protocol == lb::model::L4Protocol::Udp;
                let port = s.ports.iter().enumerate().find(|(j, p)| {
                    p.udp == udp && match f.frontend.kind {
                        ServiceType::NodePort => usize::from(f.frontend.addr.port) == 30000 + i * 10 + j,
                        _ => p.port == f.frontend.addr.port,
                    }
                }).map(|(_, p)| p).unwrap();
                // kube-proxy's rule, per scope (this node's endpoints under Local): ready
                // endpoints take new connections; without any, the serving-terminating ones do.
                let in_scope = || s.endpoints.iter().enumerate().filter(|(_, e)| !local_only || e.local);
                let fallback = !in_scope().any(|(_, e)| expected_state(e) == Some(BackendState::Active));
                let expected: BTreeSet<(IpAddr, u16, BackendState)> = in_scope()
                    .filter_map(|(k, e)| {
                        let ip: IpAddr = match family {
                            IpFamily::V4 => format!("10.244.{}.{}", i, k + 1).parse().unwrap(),
                            IpFamily::V6 => format!("fd00:244:{:x}::{:x}", i, k + 1).parse().unwrap(),
                        };
                        let state = match expected_state(e)? {
                            BackendState::Terminating if fallback => BackendState::Active,
                            state => state,
                        };
                        Some((ip, port.target, state))
                    })
                    .collect();
                let got: BTreeSet<(IpAddr, u16, BackendState)> =
                    f.backends.iter().map(|b| (b.addr.ip, b.addr.port, b.state)).collect();
                prop_assert_eq!(&got, &expected, "{} {}", name(i), f.frontend);
            }
        }
    }

    #[test]
    fn the_result_does_not_depend_on_object_order(gen in cluster(), seed in any::<u64>()) {
        let (services, slices) = to_json(&gen);
        let mut shuffled_services = services.clone();
        let mut shuffled_slices = slices.clone();
        let mut rng = seed;
        let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        for v in [&mut shuffled_services, &mut shuffled_slices] {
            for k in (1..v.len()).rev() {
                let j = (next() % (k as u64 + 1)) as usize;
                v.swap(k, j);
            }
        }
        let a = run(&objects(&services, &slices));
        let b = run(&objects(&shuffled_services, &shuffled_slices));
        prop_assert_eq!(a.state, b.state);
    }

    #[test]
    fn one_bad_service_is_reported_and_the_others_are_programmed(
        gen in cluster(),
        victim in any::<Index>(),
        fault in 0usize..6,
    ) {
        let (mut services, slices) = to_json(&gen);
        let v = victim.index(services.len());
        let (pointer, value, field) = match fault {
            0 => ("/spec/clusterIP", json!("10.96.0.300"), "spec.clusterIPs[0]"),
            1 => ("/spec/ports/0/port", json!(70000), "spec.ports[0].port"),
            2 => ("/spec/ports/0/protocol", json!("HTTP"), "spec.ports[0].protocol"),
            3 => ("/spec/externalTrafficPolicy", json!("Sometimes"), "spec.externalTrafficPolicy"),
            4 => ("/spec/externalIPs", json!(["not-an-ip"]), "spec.externalIPs[0]"),
            _ => ("/spec/sessionAffinity", json!("Sticky"), "spec.sessionAffinity"),
        };
        if fault == 0 {
            // clusterIPs wins over clusterIP when both are set; corrupt the list's first entry.
            services[v]["spec"]["clusterIPs"][0] = value.clone();
        } else {
            *services[v].pointer_mut(pointer).map(|p| p as &mut Value).unwrap_or(&mut Value::Null) = value.clone();
            if services[v].pointer(pointer).is_none() {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                services[v].pointer_mut(parent).unwrap()[key] = value.clone();
            }
        }
        let t = run(&objects(&services, &slices));
        prop_assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
        let err = &t.errors[0];
        prop_assert_eq!(err.object.to_string(), format!("Service default/{}", name(v)));
        prop_assert_eq!(&err.field, field);
        let shown = match &value { Value::Array(a) => a[0].to_string(), other => other.to_string() };
        prop_assert_eq!(&err.value, &shown);
        prop_assert!(frontends_of(&t, v).is_empty(), "nothing of the bad service is programmed");
        // Everything else is exactly what it is without the bad service.
        let mut without = services.clone();
        without.remove(v);
        let reference = run(&objects(&without, &slices));
        prop_assert_eq!(t.state, reference.state);
    }

    #[test]
    fn a_bad_endpoint_slice_is_reported_and_the_rest_programmed(gen in cluster(), victim in any::<Index>()) {
        prop_assume!(gen.iter().any(|s| !s.endpoints.is_empty()));
        let (services, mut slices) = to_json(&gen);
        let candidates: Vec<usize> = (0..slices.len())
            .filter(|&k| !slices[k]["endpoints"].as_array().unwrap().is_empty())
            .collect();
        let k = candidates[victim.index(candidates.len())];
        slices[k]["endpoints"][0]["addresses"][0] = json!("10.244.0.999");
        let slice_name = slices[k]["metadata"]["name"].as_str().unwrap().to_owned();
        let t = run(&objects(&services, &slices));
        prop_assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
        prop_assert_eq!(t.errors[0].object.to_string(), format!("EndpointSlice default/{slice_name}"));
        prop_assert_eq!(&t.errors[0].field, "endpoints[0].addresses[0]");
        prop_assert_eq!(&t.errors[0].value, "\"10.244.0.999\"");
        let mut without = slices.clone();
        without.remove(k);
        prop_assert_eq!(t.state, run(&objects(&services, &without)).state);
    }
}

// The translation cache: random sequences of changes to a store, each followed by a cached
// and a plain translation of the same objects, which must agree in everything, the cached one
// handing on the frontends that did not change as the same allocations.

/// Services and EndpointSlices are drawn from a few names, so changes hit the same objects
/// again and frontends collide.
const CHURN_SERVICES: usize = 4;
const CHURN_SLICES: usize = 5;
/// The origins objects come from: the API server and a manifest file that may hold a copy.
const ORIGINS: [&str; 2] = ["api", "copy.yaml"];

#[derive(Clone, Debug)]
struct ChurnService {
    /// One of three cluster IPs, so two services may claim the same one.
    ip: u8,
    kind: &'static str,
    /// One of two node ports, or (2) one outside the NodePort range, which is a warning.
    node_port: u8,
    etp_local: bool,
    headless_label: bool,
    second_port: bool,
    prefer_close: bool,
    /// A clusterIP that is no address: the service is left out with an error.
    broken: bool,
}

#[derive(Clone, Debug)]
struct ChurnEndpoint {
    host: u8,
    local: bool,
    ready: bool,
    terminating: bool,
    hint: Option<&'static str>,
}

#[derive(Clone, Debug)]
struct ChurnSlice {
    /// The service its label names.
    service: usize,
    port_name: &'static str,
    endpoints: Vec<ChurnEndpoint>,
    /// An address that is no address: the slice is left out with an error.
    broken: bool,
}

#[derive(Clone, Debug)]
struct ChurnNode {
    name: &'static str,
    zone: Option<&'static str>,
    addr: u8,
}

#[derive(Clone, Debug)]
enum ChurnOp {
    UpsertService(usize, usize, ChurnService),
    DeleteService(usize, usize),
    UpsertSlice(usize, usize, ChurnSlice),
    DeleteSlice(usize, usize),
    UpsertPod(u8),
    /// An origin re-listed with the objects it holds, as new allocations of equal contents.
    Relist(usize),
    Forget(usize),
    Node(ChurnNode),
    Options {
        topology: bool,
        terminating: bool,
    },
}

fn churn_service() -> impl Strategy<Value = ChurnService> {
    (
        0u8..3,
        prop::sample::select(vec!["ClusterIP", "NodePort", "LoadBalancer"]),
        0u8..3,
        any::<bool>(),
        prop::bool::weighted(0.15),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                ip,
                kind,
                node_port,
                etp_local,
                headless_label,
                second_port,
                prefer_close,
                broken,
            )| {
                ChurnService {
                    ip,
                    kind,
                    node_port,
                    etp_local,
                    headless_label,
                    second_port,
                    prefer_close,
                    broken,
                }
            },
        )
}

fn churn_slice() -> impl Strategy<Value = ChurnSlice> {
    let endpoint = (
        1u8..5,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["z1", "z2"])),
    )
        .prop_map(|(host, local, ready, terminating, hint)| ChurnEndpoint {
            host,
            local,
            ready,
            terminating,
            hint,
        });
    (
        0..CHURN_SERVICES,
        prop::sample::select(vec!["", "http", "dns"]),
        prop::collection::vec(endpoint, 0..4),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(service, port_name, endpoints, broken)| ChurnSlice {
            service,
            port_name,
            endpoints,
            broken,
        })
}

fn churn_op() -> impl Strategy<Value = ChurnOp> {
    let origin = || prop::sample::select(vec![0usize, 0, 0, 1]);
    prop_oneof![
        6 => (origin(), 0..CHURN_SERVICES, churn_service())
            .prop_map(|(o, i, s)| ChurnOp::UpsertService(o, i, s)),
        2 => (origin(), 0..CHURN_SERVICES).prop_map(|(o, i)| ChurnOp::DeleteService(o, i)),
        6 => (origin(), 0..CHURN_SLICES, churn_slice())
            .prop_map(|(o, j, s)| ChurnOp::UpsertSlice(o, j, s)),
        2 => (origin(), 0..CHURN_SLICES).prop_map(|(o, j)| ChurnOp::DeleteSlice(o, j)),
        1 => (0u8..3).prop_map(ChurnOp::UpsertPod),
        1 => origin().prop_map(ChurnOp::Relist),
        1 => origin().prop_map(ChurnOp::Forget),
        1 => (
            prop::sample::select(vec![LOCAL, "node-b"]),
            prop::option::of(prop::sample::select(vec!["z1", "z2"])),
            1u8..3,
        )
            .prop_map(|(name, zone, addr)| ChurnOp::Node(ChurnNode { name, zone, addr })),
        1 => (any::<bool>(), any::<bool>())
            .prop_map(|(topology, terminating)| ChurnOp::Options { topology, terminating }),
    ]
}

fn churn_service_json(i: usize, s: &ChurnService) -> Value {
    let mut labels = json!({"app": "churn"});
    if s.headless_label {
        labels[lb::k8s::HEADLESS_LABEL] = json!("");
    }
    let cluster_ip = if s.broken {
        "10.96.1.300".to_owned()
    } else {
        format!("10.96.1.{}", s.ip + 1)
    };
    let node_port = |base: u16| {
        if s.kind == "ClusterIP" {
            Value::Null
        } else {
            json!(match s.node_port {
                2 => base - 10000,
                n => base + u16::from(n),
            })
        }
    };
    let mut ports = vec![
        json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                                "nodePort": node_port(30080)}),
    ];
    if s.second_port {
        ports.push(
            json!({"name": "dns", "port": 53, "protocol": "UDP", "nodePort": node_port(30053)}),
        );
    } else {
        ports[0]["name"] = json!("");
    }
    let mut spec = json!({"type": s.kind, "clusterIP": cluster_ip, "ports": ports});
    if s.kind != "ClusterIP" && s.etp_local {
        spec["externalTrafficPolicy"] = json!("Local");
        if s.kind == "LoadBalancer" {
            spec["healthCheckNodePort"] = json!(32000 + i);
        }
    }
    if s.prefer_close {
        spec["trafficDistribution"] = json!("PreferClose");
    }
    let mut svc = json!({"metadata": {"name": name(i), "namespace": "default", "labels": labels},
                         "spec": spec});
    if s.kind == "LoadBalancer" {
        svc["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": format!("192.0.2.{}", s.ip + 1)}]}});
    }
    svc
}

fn churn_slice_json(j: usize, s: &ChurnSlice) -> Value {
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let addr = if s.broken && k == 0 {
                "10.244.9.999".to_owned()
            } else {
                format!("10.244.{}.{}", s.service, e.host)
            };
            let mut ep = json!({"addresses": [addr],
                                "nodeName": if e.local { LOCAL } else { "node-b" },
                                "zone": if e.local { "z1" } else { "z2" },
                                "conditions": {"ready": e.ready, "serving": true, "terminating": e.terminating}});
            if let Some(zone) = e.hint {
                ep["hints"] = json!({"forZones": [{"name": zone}]});
            }
            ep
        })
        .collect();
    json!({"metadata": {"name": format!("slice-{j}"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": name(s.service)}},
           "addressType": "IPv4",
           "ports": [{"name": s.port_name, "port": 8080, "protocol": "TCP"},
                     {"name": "dns", "port": 5353, "protocol": "UDP"}],
           "endpoints": endpoints})
}

/// A pod's hostPort: two free ones, and one inside the NodePort range (a warning).
const HOST_PORTS: [u16; 3] = [8080, 8081, 30080];

fn churn_pod_json(host_port: u8) -> Value {
    json!({"metadata": {"name": "hp", "namespace": "default"},
           "spec": {"nodeName": LOCAL, "containers": [{"name": "c", "ports": [
               {"containerPort": 80, "hostPort": HOST_PORTS[usize::from(host_port)], "protocol": "TCP"}]}]},
           "status": {"phase": "Running", "podIP": "10.244.7.7"}})
}

fn churn_node(n: &ChurnNode) -> LocalNode {
    let addr: IpAddr = format!("10.0.0.{}", n.addr).parse().unwrap();
    let ctx = NodeContext {
        name: n.name.to_owned(),
        zone: n.zone.map(str::to_owned),
        devices: vec![NodeDevice {
            name: "eth0".into(),
            addrs: vec![addr],
        }],
        ..NodeContext::default()
    };
    let selection = ctx.select_devices(&["eth0".parse().unwrap()], None);
    LocalNode::new(&ctx, &selection)
}

/// A deep copy of `object`: equal contents in a new allocation.
fn copied(object: &Object) -> Object {
    match object {
        Object::Service(o) => Object::Service(Arc::new((**o).clone())),
        Object::EndpointSlice(o) => Object::EndpointSlice(Arc::new((**o).clone())),
        Object::Node(o) => Object::Node(Arc::new((**o).clone())),
        Object::Pod(o) => Object::Pod(Arc::new((**o).clone())),
    }
}

/// What each origin holds, kept beside the store for re-lists, in the store's order.
#[derive(Default)]
struct Origins(BTreeMap<String, Vec<Object>>);

impl Origins {
    fn upsert(&mut self, origin: &str, object: Object) {
        let held = self.0.entry(origin.to_owned()).or_default();
        match held.iter_mut().find(|o| o.key() == object.key()) {
            Some(o) => *o = object,
            None => held.push(object),
        }
    }

    fn delete(&mut self, origin: &str, key: &ObjectKey) {
        if let Some(held) = self.0.get_mut(origin) {
            held.retain(|o| o.key() != *key);
        }
    }
}

fn key(kind: &'static str, name: String) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: "default".into(),
        name,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn cached_translation_equals_the_plain_one_and_shares_unchanged_frontends(
        ops in prop::collection::vec(churn_op(), 1..40),
        single_origin in any::<bool>(),
    ) {
        // With one origin (the API server's case) most changes are patched into the last
        // result; with two, names may be held twice and everything is translated again.
        let origin = |o: usize| ORIGINS[if single_origin { 0 } else { o }];
        let mut store = ClusterStore::default();
        let mut origins = Origins::default();
        let mut cache = TranslationCache::new();
        let mut node = churn_node(&ChurnNode { name: LOCAL, zone: Some("z1"), addr: 1 });
        let mut opts = TranslateOptions::default();
        let mut before: Option<Translation> = None;
        for op in &ops {
            let change = match op.clone() {
                ChurnOp::UpsertService(o, i, s) => {
                    let object = Object::Service(Arc::new(
                        serde_json::from_value::<Service>(churn_service_json(i, &s))
                            .unwrap()
                            .into(),
                    ));
                    origins.upsert(origin(o), object.clone());
                    Some(Change::Upsert { origin: origin(o).into(), object })
                }
                ChurnOp::DeleteService(o, i) => {
                    let key = key("Service", name(i));
                    origins.delete(origin(o), &key);
                    Some(Change::Delete { origin: origin(o).into(), key })
                }
                ChurnOp::UpsertSlice(o, j, s) => {
                    let slice: EndpointSlice =
                        serde_json::from_value(churn_slice_json(j, &s)).unwrap();
                    let object = Object::EndpointSlice(Arc::new(slice.into()));
                    origins.upsert(origin(o), object.clone());
                    Some(Change::Upsert { origin: origin(o).into(), object })
                }
                ChurnOp::DeleteSlice(o, j) => {
                    let key = key("EndpointSlice", format!("slice-{j}"));
                    origins.delete(origin(o), &key);
                    Some(Change::Delete { origin: origin(o).into(), key })
                }
                ChurnOp::UpsertPod(port) => {
                    let object = Object::Pod(Arc::new(
                        serde_json::from_value(churn_pod_json(port)).unwrap(),
                    ));
                    origins.upsert(ORIGINS[0], object.clone());
                    Some(Change::Upsert { origin: ORIGINS[0].into(), object })
                }
                ChurnOp::Relist(o) => {
                    let objects = origins.0.get(origin(o)).into_iter().flatten().map(copied).collect();
                    Some(Change::Replace { origin: origin(o).into(), objects })
                }
                ChurnOp::Forget(o) => {
                    origins.0.remove(origin(o));
                    Some(Change::Forget { origin: origin(o).into() })
                }
                ChurnOp::Node(n) => {
                    node = churn_node(&n);
                    None
                }
                ChurnOp::Options { topology, terminating } => {
                    opts.service_topology = topology;
                    opts.terminating_endpoints = terminating;
                    None
                }
            };
            if let Some(change) = change {
                store.apply(change);
            }
            let objects = store.objects();
            let cached = cache.translate_store(&store, &node, &opts);
            let plain = translate(&objects, &node, &opts);
            prop_assert_eq!(&cached.state, &plain.state, "after {:?}", op);
            prop_assert_eq!(&cached.errors, &plain.errors, "after {:?}", op);
            prop_assert_eq!(&cached.warnings, &plain.warnings, "after {:?}", op);
            prop_assert_eq!(&cached.ignored, &plain.ignored, "after {:?}", op);
            prop_assert_eq!(&cached.health_checks, &plain.health_checks, "after {:?}", op);
            if let Some(before) = &before {
                for now in cached.state.shared_services() {
                    if let Some(then) = before.state.get_shared(&now.frontend) {
                        prop_assert!(
                            **then != **now || Arc::ptr_eq(then, now),
                            "after {:?}: {} is unchanged but a new allocation",
                            op,
                            now.frontend.addr.display_with_protocol()
                        );
                    }
                }
            }
            before = Some(cached);
        }
    }
}
