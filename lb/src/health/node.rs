//! Whether this node may receive load-balanced traffic: kube-proxy's `nodeEligible`.

use k8s_openapi::api::core::v1::Node;

/// The taint the cluster autoscaler puts on a node it is about to remove.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Whether this node's Node is among `nodes` and neither being deleted (a deletion timestamp)
/// nor tainted for removal by the cluster autoscaler, as kube-proxy decides `nodeEligible`.
///
/// This node is `name` when given (`--node`); without it, the only Node, as translation takes
/// it. No Node, or several and no name, is not eligible: a load balancer should not send
/// traffic to a node the agent cannot place.
pub fn node_eligible<N: std::borrow::Borrow<Node>>(nodes: &[N], name: Option<&str>) -> bool {
    let this: Option<&Node> = match name {
        Some(name) => nodes
            .iter()
            .map(N::borrow)
            .find(|n| n.metadata.name.as_deref() == Some(name)),
        None if nodes.len() == 1 => nodes.first().map(N::borrow),
        None => None,
    };
    let Some(node) = this else {
        return false;
    };
    let deleting = node.metadata.deletion_timestamp.is_some();
    let to_be_deleted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
    !deleting && !to_be_deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(yaml: &str) -> Node {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn plain(name: &str) -> Node {
        node(&format!("metadata: {{name: {name}}}"))
    }

    #[test]
    fn a_plain_node_is_eligible() {
        assert!(node_eligible(&[plain("a"), plain("b")], Some("b")));
    }

    #[test]
    fn a_missing_node_is_not_eligible() {
        assert!(!node_eligible(&[plain("a")], Some("b")));
        assert!(!node_eligible::<Node>(&[], Some("b")));
    }

    #[test]
    fn without_a_name_the_only_node_is_this_one() {
        assert!(node_eligible(&[plain("a")], None));
        assert!(!node_eligible::<Node>(&[], None));
        assert!(!node_eligible(&[plain("a"), plain("b")], None));
    }

    #[test]
    fn a_node_being_deleted_is_not_eligible() {
        let n = node("metadata: {name: a, deletionTimestamp: '2026-12-03T08:00:00Z'}");
        assert!(!node_eligible(&[n], Some("a")));
    }

    #[test]
    fn the_autoscaler_taint_makes_a_node_ineligible_other_taints_do_not() {
        let tainted = node(
            "metadata: {name: a}\nspec: {taints: [{key: ToBeDeletedByClusterAutoscaler, \
             value: '1700000000', effect: NoSchedule}]}",
        );
        assert!(!node_eligible(&[tainted], Some("a")));
        let other = node(
            "metadata: {name: a}\nspec: {taints: [{key: node.kubernetes.io/unschedulable, \
             effect: NoSchedule}]}",
        );
        assert!(node_eligible(&[other], Some("a")));
    }
}
