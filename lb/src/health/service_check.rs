//! The answer of one Service's health check node port, as kube-proxy's service health server
//! gives it: the same for every path and method, 200 only while this node has a ready local
//! endpoint of the service and the agent keeps up, 503 otherwise, so an external load
//! balancer sends the service's traffic only to nodes that can serve it locally.

use super::Answer;
use crate::model::ServiceName;

/// The answer for `service` with `local_endpoints` ready endpoints on this node while the
/// agent's own health is `healthy` ([`super::HealthState::healthy`], not the node's
/// eligibility, as kube-proxy).
///
/// The body is kube-proxy's, byte for byte: its indented layout (tabs, no final newline) with
/// `service`, `localEndpoints` and `serviceProxyHealthy`; the count is also sent as
/// `X-Load-Balancing-Endpoint-Weight`, which weighted load balancers read.
pub fn service_answer(service: &ServiceName, local_endpoints: usize, healthy: bool) -> Answer {
    let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\
         \t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        quoted(&service.namespace),
        quoted(&service.name),
    );
    Answer {
        status: if local_endpoints > 0 && healthy {
            200
        } else {
            503
        },
        content_type: "application/json",
        body,
        endpoint_weight: Some(local_endpoints),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ServiceName {
        ServiceName {
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    fn json(a: &Answer) -> serde_json::Value {
        serde_json::from_str(&a.body).unwrap()
    }

    #[test]
    fn one_local_endpoint_and_healthy_is_200_in_kube_proxys_layout() {
        let a = service_answer(&web(), 1, true);
        assert_eq!(a.status, 200);
        assert_eq!(a.content_type, "application/json");
        assert_eq!(a.endpoint_weight, Some(1));
        assert_eq!(
            a.body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"shop\",\n\t\t\"name\": \"web\"\n\t},\n\
             \t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
        );
    }

    #[test]
    fn three_local_endpoints_weigh_three() {
        let a = service_answer(&web(), 3, true);
        assert_eq!(a.status, 200);
        assert_eq!(a.endpoint_weight, Some(3));
        let body = json(&a);
        assert_eq!(body["localEndpoints"], 3);
        assert_eq!(body["service"]["namespace"], "shop");
        assert_eq!(body["service"]["name"], "web");
    }

    /// Also the answer when only terminating endpoints are left: translation counts none.
    #[test]
    fn no_local_endpoint_is_503_with_weight_zero() {
        let a = service_answer(&web(), 0, true);
        assert_eq!(a.status, 503);
        assert_eq!(a.endpoint_weight, Some(0));
        let body = json(&a);
        assert_eq!(body["localEndpoints"], 0);
        assert_eq!(body["serviceProxyHealthy"], true);
    }

    #[test]
    fn an_unhealthy_agent_is_503_whatever_the_endpoints() {
        let a = service_answer(&web(), 2, false);
        assert_eq!(a.status, 503);
        assert_eq!(a.endpoint_weight, Some(2));
        let body = json(&a);
        assert_eq!(body["serviceProxyHealthy"], false);
        assert_eq!(body["localEndpoints"], 2);
    }
}
