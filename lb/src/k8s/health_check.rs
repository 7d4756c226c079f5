//! A Service's health check node port (`spec.healthCheckNodePort`) and what its server reports:
//! the number of this node's ready endpoints.

use std::collections::BTreeMap;

use super::endpoints::{local_ready_addresses, ParsedSlice};
use super::translate::LocalNode;
use super::TranslateOptions;
use crate::model::{IpFamily, ServiceName, TrafficPolicy};

/// What one Service's health check server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The port it listens on (`spec.healthCheckNodePort`).
    pub port: u16,
    /// This node's ready endpoints of the service (see [`local_ready_addresses`]).
    pub local_endpoints: usize,
}

/// The health check servers this node runs, by service.
pub type HealthChecks = BTreeMap<ServiceName, HealthCheck>;

/// The health check of a Service this agent programs, when it has one: as kube-proxy, a
/// `LoadBalancer` with `externalTrafficPolicy: Local` and a `healthCheckNodePort` (`port`; the
/// API server allocates one for exactly those), with NodePort handling and
/// `nodePort.enableHealthCheck` on. Endpoints count in the families this agent serves.
pub fn health_check_of(
    port: Option<u16>,
    kind: &str,
    external_traffic_policy: TrafficPolicy,
    slices: &[&ParsedSlice],
    node: &LocalNode,
    opts: &TranslateOptions,
) -> Option<HealthCheck> {
    if !opts.health_check_node_ports
        || kind != "LoadBalancer"
        || external_traffic_policy != TrafficPolicy::Local
    {
        return None;
    }
    let families: Vec<IpFamily> = [(IpFamily::V4, opts.ipv4), (IpFamily::V6, opts.ipv6)]
        .into_iter()
        .filter_map(|(f, on)| on.then_some(f))
        .collect();
    Some(HealthCheck {
        port: port?,
        local_endpoints: local_ready_addresses(slices, &node.name, &families).len(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::k8s::manifests::{load_text, Manifests};
    use crate::k8s::{translate, DeviceSelection, NodeContext};

    /// This node.
    const NODE: &str = "n1";

    fn local_node() -> LocalNode {
        let ctx = NodeContext {
            name: NODE.into(),
            ..NodeContext::default()
        };
        let selection = DeviceSelection {
            devices: vec![],
            direct_routing: None,
            patterns_matched_nothing: false,
        };
        LocalNode::new(&ctx, &selection)
    }

    /// Service `ns/web` of `kind` with `etp` and, when given, `healthCheckNodePort`, ports 80
    /// and 443; one EndpointSlice with `endpoints` (YAML flow mappings).
    fn objects(kind: &str, etp: &str, hc_port: Option<i32>, endpoints: &[&str]) -> String {
        let hc = hc_port.map_or(String::new(), |p| format!("  healthCheckNodePort: {p}\n"));
        let endpoints: String = endpoints.iter().map(|e| format!("- {e}\n")).collect();
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: ns}}\nspec:\n  \
             type: {kind}\n  clusterIP: 10.96.0.7\n  externalTrafficPolicy: {etp}\n{hc}  \
             ports:\n  - {{name: http, port: 80, nodePort: 30080}}\n  \
             - {{name: https, port: 443, nodePort: 30443}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: web-1, namespace: ns, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports:\n- {{name: http, port: 8080, protocol: TCP}}\n\
             - {{name: https, port: 8443, protocol: TCP}}\nendpoints:\n{endpoints}"
        )
    }

    fn checks_with(text: &str, opts: &TranslateOptions) -> HealthChecks {
        let mut m = Manifests::default();
        load_text(Path::new("t.yaml"), text, &mut m);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        let t = translate(&m.objects, &local_node(), opts);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        t.health_checks
    }

    fn checks(text: &str) -> HealthChecks {
        checks_with(text, &TranslateOptions::default())
    }

    fn web() -> ServiceName {
        ServiceName {
            namespace: "ns".into(),
            name: "web".into(),
        }
    }

    fn local(ip: &str) -> String {
        format!("{{addresses: [{ip}], nodeName: {NODE}, conditions: {{ready: true}}}}")
    }

    fn remote(ip: &str) -> String {
        format!("{{addresses: [{ip}], nodeName: n2, conditions: {{ready: true}}}}")
    }

    fn terminating(ip: &str) -> String {
        format!(
            "{{addresses: [{ip}], nodeName: {NODE}, \
             conditions: {{ready: false, serving: true, terminating: true}}}}"
        )
    }

    #[test]
    fn a_local_load_balancer_counts_this_nodes_ready_endpoints_by_address() {
        let eps = [local("10.0.1.1"), local("10.0.1.2"), local("10.0.1.3")];
        let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
        let got = checks(&objects("LoadBalancer", "Local", Some(31500), &eps));
        // Two service ports, three pods: three endpoints, as kube-proxy counts them.
        assert_eq!(
            got,
            HealthChecks::from([(
                web(),
                HealthCheck {
                    port: 31500,
                    local_endpoints: 3
                }
            )])
        );
    }

    #[test]
    fn endpoints_on_other_nodes_do_not_count() {
        let eps = [remote("10.0.2.1"), remote("10.0.2.2"), local("10.0.1.1")];
        let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
        let got = checks(&objects("LoadBalancer", "Local", Some(31500), &eps));
        assert_eq!(got[&web()].local_endpoints, 1);
        let eps = [remote("10.0.2.1")];
        let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
        let got = checks(&objects("LoadBalancer", "Local", Some(31500), &eps));
        assert_eq!(
            got[&web()].local_endpoints,
            0,
            "the server still runs, answering 503"
        );
    }

    #[test]
    fn terminating_and_not_ready_endpoints_do_not_count() {
        let not_ready =
            format!("{{addresses: [10.0.1.9], nodeName: {NODE}, conditions: {{ready: false}}}}");
        let eps = [terminating("10.0.1.1"), not_ready];
        let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
        let got = checks(&objects("LoadBalancer", "Local", Some(31500), &eps));
        assert_eq!(got[&web()].local_endpoints, 0);
    }

    #[test]
    fn cluster_policy_other_types_and_no_port_have_no_health_check() {
        let eps = [local("10.0.1.1")];
        let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
        for (kind, etp, port) in [
            ("LoadBalancer", "Cluster", Some(31500)),
            ("NodePort", "Local", Some(31500)),
            ("LoadBalancer", "Local", None),
            ("LoadBalancer", "Local", Some(0)),
        ] {
            let got = checks(&objects(kind, etp, port, &eps));
            assert!(got.is_empty(), "{kind} {etp} {port:?}: {got:?}");
        }
    }

    #[test]
    fn the_option_or_nodeport_handling_off_turns_health_checks_off() {
        let eps = [local("10.0.1.1")];
        let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
        let off = TranslateOptions {
            health_check_node_ports: false,
            ..TranslateOptions::default()
        };
        assert!(checks_with(&objects("LoadBalancer", "Local", Some(31500), &eps), &off).is_empty());
    }

    #[test]
    fn a_port_out_of_range_is_a_warning_and_no_server() {
        let eps = [local("10.0.1.1")];
        let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
        let mut m = Manifests::default();
        load_text(
            Path::new("t.yaml"),
            &objects("LoadBalancer", "Local", Some(70000), &eps),
            &mut m,
        );
        let t = translate(&m.objects, &local_node(), &TranslateOptions::default());
        assert!(t.health_checks.is_empty());
        assert!(
            t.warnings
                .iter()
                .any(|w| w.contains("ns/web") && w.contains("healthCheckNodePort 70000")),
            "{:?}",
            t.warnings
        );
        assert!(!t.state.is_empty(), "the frontends are still programmed");
    }
}
