//! Errors of running the agent.

use std::path::PathBuf;

/// Why the agent could not start or apply a change.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Preparing the node failed.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// Loading, attaching or programming the datapath failed.
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    /// The kernel lacks a feature the datapath needs (found by [`crate::host::features`]).
    #[error(
        "{option} needs {}, which this kernel lacks ({})",
        missing.feature,
        missing.detail
    )]
    MissingFeature {
        /// The option that needs it (`kubeProxyReplacement=true` or `socketLB.enabled=true`).
        option: &'static str,
        /// The feature and the probe's answer.
        missing: crate::host::features::Missing,
    },
    /// The desired state could not be written to the maps.
    #[error(transparent)]
    Reconcile(#[from] crate::reconciler::ReconcileError),
    /// The source of objects failed as a whole.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// `--node` names no Node among the objects.
    #[error(transparent)]
    NodeNotFound(crate::k8s::NodeNotFound),
    /// A feature name (in the test override of the probes) that does not exist.
    #[error("unknown kernel feature {name:?}; known: {}", known.join(", "))]
    UnknownFeature {
        /// The name given.
        name: String,
        /// The names there are.
        known: Vec<&'static str>,
    },
    /// A device option names a device the node lacks.
    #[error(transparent)]
    UnknownDevice(#[from] super::nodeport::UnknownDevice),
    /// The `/healthz` server could not start.
    #[error(transparent)]
    Health(#[from] crate::health::HealthServerError),
    /// The metrics server cannot listen on `prometheus.port`.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsServerError),
    /// The agent's state file could not be read or written.
    #[error("{}: {detail}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

impl AgentError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.to_owned();
        move |e| AgentError::State {
            path,
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::features::{Feature, Missing};

    #[test]
    fn a_missing_feature_is_named_with_the_option_that_needs_it() {
        let err = AgentError::MissingFeature {
            option: "kubeProxyReplacement=true",
            missing: Missing {
                feature: Feature::CgroupSockRelease,
                detail: "the kernel refused the probe program: Invalid argument".into(),
            },
        };
        let text = err.to_string();
        assert!(
            text.starts_with("kubeProxyReplacement=true needs cgroup-sock-release (Linux 5.9)"),
            "{text}"
        );
        assert!(text.contains("Invalid argument"), "{text}");
    }
}
