//! The socket-LB bench's service generator (`benches/socket_lb/services.rs`): its YAML is what
//! the agent programs as the intended services, and its iptables rules have kube-proxy's shape
//! with the measured service last in `KUBE-SERVICES`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use lb::model::{BackendState, ServiceType};
use lb::offline::{render, DeviceArg, OfflineInputs};

#[path = "../benches/socket_lb/services.rs"]
mod services;

use services::{ServiceSet, BACKEND_PORT, SERVICE_PORT};

fn set(count: u32) -> ServiceSet {
    ServiceSet {
        count,
        first_ip: Ipv4Addr::new(10, 96, 0, 1),
        backends: vec![
            Ipv4Addr::new(10, 0, 1, 11),
            Ipv4Addr::new(10, 0, 1, 12),
            Ipv4Addr::new(10, 0, 1, 13),
        ],
        node: "n1".into(),
        node_ip: Ipv4Addr::new(192, 168, 56, 11),
    }
}

#[test]
fn manifests_translate_to_one_clusterip_per_service_with_every_backend() {
    let set = set(300);
    let dir = std::env::temp_dir().join(format!("lb-bench-services-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("services.yaml"), set.manifests()).unwrap();
    let view = render(&OfflineInputs {
        sets: vec!["kubeProxyReplacement=true".into()],
        manifests: Some(dir.clone()),
        devices: vec!["eth0=192.168.56.11".parse::<DeviceArg>().unwrap()],
        ..OfflineInputs::default()
    });
    std::fs::remove_dir_all(&dir).unwrap();
    let view = view.unwrap();
    assert!(!view.has_errors(), "{:?}", view.problems());
    let state = &view.translation.state;
    assert_eq!(state.len(), 300);
    let want_backends: BTreeSet<SocketAddr> = set.endpoints().map(SocketAddr::V4).collect();
    let mut frontends = BTreeSet::new();
    for svc in state.services() {
        assert_eq!(svc.frontend.kind, ServiceType::ClusterIP);
        let backends: BTreeSet<SocketAddr> = svc
            .backends
            .iter()
            .inspect(|b| assert_eq!(b.state, BackendState::Active))
            .map(|b| SocketAddr::new(b.addr.ip, b.addr.port))
            .collect();
        assert_eq!(backends, want_backends, "{}", svc.frontend);
        frontends.insert(SocketAddr::new(
            svc.frontend.addr.ip,
            svc.frontend.addr.port,
        ));
    }
    let want: BTreeSet<SocketAddr> = (0..300).map(|i| SocketAddr::V4(set.frontend(i))).collect();
    assert_eq!(frontends, want);
    assert_eq!(
        set.last(),
        "10.96.1.44:80".parse().unwrap(),
        "service 299 is first_ip + 299"
    );
}

#[test]
fn iptables_rules_have_kube_proxy_shape_with_the_last_service_last() {
    let set = set(50);
    let text = set.iptables_restore();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"*nat"));
    assert_eq!(lines.last(), Some(&"COMMIT"));
    let declared: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(':'))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    // Every chain jumped to is declared or built in, and no name is over iptables' limit.
    let targets = ["ACCEPT", "RETURN", "DNAT", "MARK", "MASQUERADE"];
    for l in lines.iter().filter(|l| l.starts_with("-A ")) {
        let chain = l.split_whitespace().nth(1).unwrap();
        assert!(declared.contains(chain), "{l}");
        let target = l
            .split(" -j ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        assert!(
            declared.contains(target) || targets.contains(&target),
            "{l}"
        );
        assert!(chain.len() <= 28, "{chain}");
    }
    // One KUBE-SERVICES rule per service in index order, then the node-port rule.
    let services: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("-A KUBE-SERVICES "))
        .collect();
    assert_eq!(services.len(), 51);
    assert!(services[50].ends_with("-j KUBE-NODEPORTS"));
    let last = format!("-d {}/32 ", set.last().ip());
    assert!(services[49].contains(&last), "{}", services[49]);
    assert!(services[49].contains(&format!("--dport {SERVICE_PORT} ")));
    // Each service picks among its 3 endpoints with 1/3, then 1/2, then the rest.
    let svc_chain = services[49].rsplit(' ').next().unwrap();
    let picks: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with(&format!("-A {svc_chain} ")))
        .collect();
    assert_eq!(picks.len(), 3);
    assert!(picks[0].contains("--probability 0.3333333333 "));
    assert!(picks[1].contains("--probability 0.5000000000 "));
    assert!(!picks[2].contains("statistic"));
    // Each endpoint chain DNATs to its backend.
    let dnat: BTreeSet<IpAddr> = lines
        .iter()
        .filter_map(|l| l.split("--to-destination ").nth(1))
        .map(|a| a.parse::<SocketAddr>().unwrap())
        .inspect(|a| assert_eq!(a.port(), BACKEND_PORT))
        .map(|a| a.ip())
        .collect();
    assert_eq!(
        dnat,
        set.backends.iter().map(|&ip| IpAddr::V4(ip)).collect()
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("-j DNAT")).count(),
        50 * 3
    );
}
