//! Property tests of the translation from Kubernetes objects: generated clusters of Services
//! and EndpointSlices, checked for what a user would observe in `lbctl service list`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use lb::k8s::{
    translate, ClusterObjects, LocalNode, NodeContext, NodeDevice, TranslateOptions, Translation,
};
use lb::model::{BackendState, IpFamily, LbService, Scope, ServiceType};
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
            .map(|v| Arc::new(serde_json::from_value::<Service>(v.clone()).unwrap()))
            .collect(),
        endpoint_slices: slices
            .iter()
            .map(|v| Arc::new(serde_json::from_value::<EndpointSlice>(v.clone()).unwrap()))
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
