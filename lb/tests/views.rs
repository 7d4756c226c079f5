//! `lbctl service list` and `status` rendered offline from the fixtures under `data/`, as
//! insta snapshots, plus the document's own output compared line by line.

use std::path::PathBuf;

use lb::k8s::NodeDevice;
use lb::offline::{self, DeviceArg, OfflineInputs, OfflineView};
use lb::views::{KprStatus, ServiceList};

fn data(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(case)
}

fn device(name: &str, addrs: &[&str]) -> DeviceArg {
    DeviceArg(NodeDevice {
        name: name.to_owned(),
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
    })
}

fn render(case: &str, node: Option<&str>, devices: Vec<DeviceArg>) -> OfflineView {
    offline::render(&OfflineInputs {
        values: Some(data(case).join("values.yaml")),
        sets: Vec::new(),
        manifests: Some(data(case).join("manifests")),
        node: node.map(str::to_owned),
        devices,
    })
    .unwrap()
}

fn nginx() -> OfflineView {
    render(
        "nginx-nodeport",
        Some("apoc"),
        vec![
            device("eth0", &["192.168.178.29"]),
            device("eth1", &["172.16.0.29"]),
        ],
    )
}

fn policies() -> OfflineView {
    render(
        "policies",
        None,
        vec![device("eth0", &["10.0.0.1", "fd00::1", "fe80::1"])],
    )
}

#[test]
fn nginx_service_list() {
    let view = nginx();
    assert!(view.problems().is_empty(), "{:?}", view.problems());
    insta::assert_snapshot!(ServiceList::from_desired(&view.translation.state).render());
}

#[test]
fn nginx_service_list_has_the_documents_rows() {
    // The document's listing (without the "(state)" suffix this project adds, and numbered
    // from 4 there because of other services): ClusterIP, wildcard, then eth0's and eth1's
    // addresses, each with both backends.
    let rendered = ServiceList::from_desired(&nginx().translation.state).render();
    let frontends: Vec<(&str, &str)> = rendered
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(' ')) // continuation lines carry further backends
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[1], cols[2])
        })
        .collect();
    assert_eq!(
        frontends,
        [
            ("10.104.239.135:80", "ClusterIP"),
            ("0.0.0.0:31940", "NodePort"),
            ("192.168.178.29:31940", "NodePort"),
            ("172.16.0.29:31940", "NodePort"),
        ]
    );
    assert_eq!(rendered.matches("1 => 10.217.0.107:80").count(), 4);
    assert_eq!(rendered.matches("2 => 10.217.0.149:80").count(), 4);
    assert!(rendered.starts_with("ID   Frontend               Service Type   Backend\n"));
}

#[test]
fn nginx_status_verbose_is_the_documents_block() {
    let view = nginx();
    let status = KprStatus::new(&view.config, &view.selection).render_verbose();
    let documented = "\
KubeProxyReplacement Details:
  Status:                True
  Socket LB:             Enabled
  Protocols:             TCP, UDP
  Devices:               eth0 (Direct Routing), eth1
  Mode:                  SNAT
  Backend Selection:     Random
  Session Affinity:      Enabled
  Graceful Termination:  Enabled
  NAT46/64 Support:      Enabled
  XDP Acceleration:      Disabled
  Services:
  - ClusterIP:      Enabled
  - NodePort:       Enabled (Range: 30000-32767)
  - LoadBalancer:   Enabled
  - externalIPs:    Enabled
  - HostPort:       Enabled
";
    assert!(status.ends_with(documented), "got:\n{status}");
    assert!(status.starts_with("KubeProxyReplacement:   True\t[eth0 (Direct Routing), eth1]\n"));
}

#[test]
fn a_running_agents_status_says_whether_udp_sockets_are_destroyed() {
    let view = nginx();
    let mut status = KprStatus::new(&view.config, &view.selection);
    // Offline nothing probed the kernel, so the line is left out (the documents' block above).
    assert!(!status.render_verbose().contains("UDP Socket Destroy"));
    status.udp_socket_destroy = Some(
        "Disabled (SOCK_DESTROY not supported, the kernel lacks CONFIG_INET_DIAG_DESTROY)".into(),
    );
    let text = status.render_verbose();
    assert!(
        text.contains("  Protocols:             TCP, UDP\n  UDP Socket Destroy:    Disabled (SOCK_DESTROY not supported, the kernel lacks CONFIG_INET_DIAG_DESTROY)\n  Devices:"),
        "got:\n{text}"
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(
        json["udpSocketDestroy"],
        status.udp_socket_destroy.clone().unwrap()
    );
}

#[test]
fn a_full_node_address_map_shows_in_the_status_with_its_count() {
    let view = nginx();
    let mut status = KprStatus::new(&view.config, &view.selection);
    status.local_addresses = Some(lb::views::LocalAddressCount {
        programmed: 12,
        found: 12,
        capacity: 65536,
    });
    // All programmed: the block reads as the documents' one.
    assert!(!status.render_verbose().contains("Node Addresses"));
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["localAddresses"]["programmed"], 12);
    status.local_addresses = Some(lb::views::LocalAddressCount {
        programmed: 1024,
        found: 1210,
        capacity: 1024,
    });
    let text = status.render_verbose();
    assert!(
        text.contains("  Node Addresses:        1024 of 1210 programmed, 186 left out (map full at 1024: raise bpf.lbMapMax)\n"),
        "got:\n{text}"
    );
}

#[test]
fn nginx_status_json() {
    let view = nginx();
    insta::assert_json_snapshot!(KprStatus::new(&view.config, &view.selection));
}

#[test]
fn policies_service_list() {
    let view = policies();
    insta::assert_snapshot!(ServiceList::from_desired(&view.translation.state).render());
}

#[test]
fn policies_service_list_json() {
    let view = policies();
    insta::assert_json_snapshot!(ServiceList::from_desired(&view.translation.state));
}

#[test]
fn policies_problems_and_ignored_objects() {
    let view = policies();
    insta::assert_yaml_snapshot!((view.problems(), &view.translation.ignored));
}

#[test]
fn policies_status_verbose() {
    let view = policies();
    insta::assert_snapshot!(KprStatus::new(&view.config, &view.selection).render_verbose());
}

#[test]
fn broken_objects_are_reported_and_the_rest_programmed() {
    let view = render("broken", None, Vec::new());
    insta::assert_snapshot!(ServiceList::from_desired(&view.translation.state).render());
    // Paths are those of this checkout; the snapshot keeps them relative to the crate.
    let crate_dir = format!("{}/", env!("CARGO_MANIFEST_DIR"));
    let problems: Vec<String> = view
        .problems()
        .iter()
        .map(|p| p.replace(&crate_dir, ""))
        .collect();
    insta::assert_yaml_snapshot!(problems);
}

#[test]
fn partial_mode_status_without_devices_shows_the_configured_patterns() {
    let view = offline::render(&OfflineInputs {
        sets: vec![
            "kubeProxyReplacement=false".into(),
            "nodePort.enabled=true".into(),
            "nodePort.enableHealthCheck=false".into(),
            "devices=eth+".into(),
            "nodePort.directRoutingDevice=eth0".into(),
            r"nodePort.range=10000\,32767".into(),
            "loadBalancer.acceleration=best-effort".into(),
        ],
        ..OfflineInputs::default()
    })
    .unwrap();
    insta::assert_snapshot!(KprStatus::new(&view.config, &view.selection).render_verbose());
}
