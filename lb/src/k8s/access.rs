//! What the agent asks of the Kubernetes API server: one entry per resource it reads, with the
//! verbs it uses. The API source watches exactly these, and the RBAC rules in `deploy/` grant
//! exactly these (a test compares the two), so a new watch cannot ship without its permission
//! and a permission cannot outlive the watch that needed it.

/// One resource the agent reads, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiAccess {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, plural as in RBAC rules.
    pub resource: &'static str,
    /// The verbs used on it, sorted.
    pub verbs: &'static [&'static str],
}

/// Everything the agent reads from the API server. It never writes: a node's load balancer has
/// nothing to tell the cluster that kube-proxy would.
pub const API_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
    },
    ApiAccess {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
    },
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["list", "watch"],
    },
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_is_listed_once_with_sorted_verbs() {
        let mut seen = std::collections::BTreeSet::new();
        for a in API_ACCESS {
            assert!(seen.insert((a.group, a.resource)), "{a:?} listed twice");
            assert!(
                a.verbs.windows(2).all(|w| w[0] < w[1]),
                "{a:?} verbs unsorted"
            );
        }
    }
}
