//! How the socket datapath runs on the kernel at hand. The documents run socket-LB from
//! 4.19.57 / 5.1.16 / 5.2 (TCP only from 4.17) and treat the newer hooks as improvements, so
//! the agent starts without them and says what it does without: a missing hook is left
//! unattached and its effect is named in the log and in `lbctl status --verbose`. It refuses
//! only what the requested options cannot work without, naming the option and the feature.

use std::collections::BTreeMap;

use super::AgentError;
use crate::config::{AgentConfig, Protocols};
use crate::datapath::SocketHooks;
use crate::host::features::{Degradation, Feature, Missing};

/// Names features to treat as missing (comma-separated), so degraded modes can be tested on
/// kernels that have everything. For tests; the agent says so in its log when it is set.
pub const ASSUME_MISSING_ENV: &str = "LB_ASSUME_MISSING_FEATURES";

/// The kernel's answer for every feature, probed once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    missing: BTreeMap<Feature, String>,
}

impl KernelFeatures {
    /// Probes the running kernel, then applies [`ASSUME_MISSING_ENV`].
    pub fn probe() -> Result<Self, AgentError> {
        let missing = Feature::ALL
            .into_iter()
            .filter_map(|f| f.probe().err().map(|detail| (f, detail)))
            .collect();
        let assumed = std::env::var(ASSUME_MISSING_ENV).unwrap_or_default();
        KernelFeatures { missing }.assuming_missing(&assumed)
    }

    /// A kernel with every feature.
    pub fn complete() -> Self {
        KernelFeatures::default()
    }

    /// These features (comma-separated names) treated as missing as well; an unknown name is
    /// an error naming the accepted ones.
    pub fn assuming_missing(mut self, names: &str) -> Result<Self, AgentError> {
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let feature = Feature::from_name(name).ok_or_else(|| AgentError::UnknownFeature {
                name: name.to_owned(),
                known: Feature::ALL.iter().map(|f| f.name()).collect(),
            })?;
            tracing::warn!(
                feature = name,
                "treating a kernel feature as missing ({ASSUME_MISSING_ENV})"
            );
            self.missing
                .entry(feature)
                .or_insert_with(|| format!("assumed missing ({ASSUME_MISSING_ENV})"));
        }
        Ok(self)
    }

    /// Whether the kernel has `feature`.
    pub fn has(&self, feature: Feature) -> bool {
        !self.missing.contains_key(&feature)
    }

    /// What the kernel lacks, with its answers.
    pub fn missing(&self) -> Vec<Missing> {
        self.missing
            .iter()
            .map(|(&feature, detail)| Missing {
                feature,
                detail: detail.clone(),
            })
            .collect()
    }

    fn missing_one(&self, feature: Feature) -> Missing {
        Missing {
            feature,
            detail: self.missing.get(&feature).cloned().unwrap_or_default(),
        }
    }
}

/// How the socket datapath runs with these options on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketLbPlan {
    /// The hooks loaded and attached.
    pub hooks: SocketHooks,
    /// The protocols translated: the configured ones, less UDP without its hooks.
    pub protocols: Protocols,
    /// The programs get network namespace cookies (`cfg_netns_cookies`).
    pub netns_cookies: bool,
    /// bind6 reads `IPV6_V6ONLY` through the socket casts (`cfg_sock_v6only`).
    pub sock_v6only: bool,
    /// The programs built for BPF atomics are loaded, which keep connected sockets'
    /// translations in slots (`lb_sock_conn_slots_v1`). Without them the hash map alone holds
    /// them: the same behaviour at a higher cost per connect and close, so not a degradation.
    pub bpf_atomics: bool,
    /// What is degraded, in feature order.
    pub degraded: Vec<Degradation>,
}

/// The plan for `config` on a kernel with `features`, or the refusal of an option the kernel
/// cannot serve at all.
pub fn plan(config: &AgentConfig, features: &KernelFeatures) -> Result<SocketLbPlan, AgentError> {
    let mut protocols = config.protocols();
    let mut hooks = SocketHooks::ALL;
    let mut degraded = Vec::new();
    // `feature`: the missing feature(s) by name and version, as `Feature` displays them.
    let mut degrade = |feature: String, effect: &str| {
        degraded.push(Degradation {
            feature,
            effect: effect.to_owned(),
        });
    };
    let refuse = |option: &'static str, feature: Feature| AgentError::MissingFeature {
        option,
        missing: features.missing_one(feature),
    };
    if !config.socket_lb() {
        return Ok(SocketLbPlan {
            hooks,
            protocols,
            netns_cookies: features.has(Feature::NetnsCookieHelper),
            sock_v6only: features.has(Feature::SockV6only),
            bpf_atomics: features.has(Feature::BpfAtomics),
            degraded,
        });
    }
    if !features.has(Feature::CgroupConnect) {
        return Err(refuse("socketLB.enabled=true", Feature::CgroupConnect));
    }
    let udp_missing: Vec<Feature> = [Feature::CgroupSendmsg, Feature::CgroupRecvmsg]
        .into_iter()
        .filter(|&f| !features.has(f))
        .collect();
    if let Some(&first) = udp_missing.first() {
        if protocols.udp && !protocols.tcp {
            return Err(refuse("hostServices.protocols=udp", first));
        }
        hooks.udp = false;
        if protocols.udp {
            protocols.udp = false;
            degrade(
                udp_missing
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                "UDP services are not translated at the socket: TCP only, as with \
                 hostServices.protocols=tcp",
            );
        }
    }
    if !features.has(Feature::CgroupGetpeername) {
        hooks.getpeername = false;
        degrade(
            Feature::CgroupGetpeername.to_string(),
            "getpeername() shows the backend's address instead of the service's",
        );
    }
    let bind_protection = config.values().node_port.bind_protection && config.node_port();
    if !features.has(Feature::CgroupBind) {
        hooks.bind = false;
        if bind_protection {
            degrade(
                Feature::CgroupBind.to_string(),
                "no bind protection: bind(2) to a NodePort port is not refused",
            );
        }
    }
    let sock_v6only = features.has(Feature::SockV6only);
    if !sock_v6only && hooks.bind && bind_protection {
        degrade(
            Feature::SockV6only.to_string(),
            "bind(2) to [::] with IPV6_V6ONLY is refused like a dual-stack bind for an IPv4 \
             NodePort port",
        );
    }
    if !features.has(Feature::CgroupSockRelease) {
        hooks.sock_release = false;
        degrade(
            Feature::CgroupSockRelease.to_string(),
            "closed sockets' entries are left to the LRU map to evict",
        );
    }
    let netns_cookies = features.has(Feature::NetnsCookieHelper);
    if !netns_cookies {
        if config.values().socket_lb.host_namespace_only {
            return Err(refuse(
                "socketLB.hostNamespaceOnly=true",
                Feature::NetnsCookieHelper,
            ));
        }
        degrade(
            Feature::NetnsCookieHelper.to_string(),
            "every socket counts as the host namespace's: bind protection applies in pods too \
             and a pod's 127.0.0.1:NODE_PORT reaches the service",
        );
        if config.session_affinity() {
            degrade(
                Feature::NetnsCookieHelper.to_string(),
                "session affinity from inside the cluster has one client per service, not one \
                 per network namespace",
            );
        }
    }
    Ok(SocketLbPlan {
        hooks,
        protocols,
        netns_cookies,
        sock_v6only,
        bpf_atomics: features.has(Feature::BpfAtomics),
        degraded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sets: &[&str]) -> AgentConfig {
        let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
        crate::config::load(None, &sets).unwrap()
    }

    fn without(names: &str) -> KernelFeatures {
        KernelFeatures::complete().assuming_missing(names).unwrap()
    }

    #[test]
    fn a_complete_kernel_degrades_nothing() {
        let plan = plan(
            &config(&["kubeProxyReplacement=true"]),
            &KernelFeatures::complete(),
        );
        let plan = plan.unwrap();
        assert_eq!(plan.hooks, SocketHooks::ALL);
        assert!(plan.degraded.is_empty());
    }

    #[test]
    fn without_getpeername_or_sock_release_the_agent_starts_and_says_what_is_degraded() {
        let plan = plan(
            &config(&["kubeProxyReplacement=true"]),
            &without("cgroup-getpeername,cgroup-sock-release"),
        )
        .unwrap();
        assert!(!plan.hooks.getpeername && !plan.hooks.sock_release && plan.hooks.udp);
        let features: Vec<&str> = plan.degraded.iter().map(|d| d.feature.as_str()).collect();
        assert_eq!(
            features,
            [
                "cgroup-getpeername (Linux 5.8)",
                "cgroup-sock-release (Linux 5.9)"
            ]
        );
    }

    #[test]
    fn without_udp_hooks_tcp_goes_on_and_udp_alone_is_refused_naming_the_option() {
        let kpr = config(&["kubeProxyReplacement=true"]);
        let plan = plan(&kpr, &without("cgroup-recvmsg")).unwrap();
        assert!(plan.protocols.tcp && !plan.protocols.udp && !plan.hooks.udp);
        assert_eq!(plan.degraded.len(), 1);

        let udp_only = config(&["kubeProxyReplacement=true", "hostServices.protocols=udp"]);
        let err = super::plan(&udp_only, &without("cgroup-sendmsg")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("hostServices.protocols=udp"), "{text}");
        assert!(text.contains("cgroup-sendmsg"), "{text}");
    }

    #[test]
    fn without_connect_hooks_socket_lb_is_refused_but_a_disabled_one_is_not() {
        let err = plan(
            &config(&["kubeProxyReplacement=true"]),
            &without("cgroup-connect"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("socketLB.enabled=true"), "{err}");
        assert!(plan(
            &config(&["kubeProxyReplacement=true", "socketLB.enabled=false"]),
            &without("cgroup-connect"),
        )
        .is_ok());
    }

    #[test]
    fn without_netns_cookies_the_agent_starts_unless_host_namespace_only_needs_them() {
        let plan = plan(
            &config(&["kubeProxyReplacement=true"]),
            &without("netns-cookie-helper"),
        )
        .unwrap();
        assert!(!plan.netns_cookies);
        assert_eq!(plan.degraded.len(), 2, "{:?}", plan.degraded);
        let err = super::plan(
            &config(&[
                "kubeProxyReplacement=true",
                "socketLB.hostNamespaceOnly=true",
            ]),
            &without("netns-cookie-helper"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("socketLB.hostNamespaceOnly=true") && err.contains("netns-cookie-helper"),
            "{err}"
        );
    }

    #[test]
    fn without_the_socket_casts_a_v6only_bind_is_refused_as_dual_stack_and_said_so() {
        let kpr = config(&["kubeProxyReplacement=true"]);
        let plan = plan(&kpr, &without("sock-v6only")).unwrap();
        assert!(!plan.sock_v6only && plan.hooks.bind);
        let effects: Vec<(&str, &str)> = plan
            .degraded
            .iter()
            .map(|d| (d.feature.as_str(), d.effect.as_str()))
            .collect();
        assert_eq!(
            effects,
            [(
                "sock-v6only (Linux 5.10)",
                "bind(2) to [::] with IPV6_V6ONLY is refused like a dual-stack bind for an IPv4 \
                 NodePort port"
            )]
        );
        assert!(
            super::plan(&kpr, &KernelFeatures::complete())
                .unwrap()
                .sock_v6only
        );
        // Nothing to degrade where nothing is protected.
        let unprotected = config(&["kubeProxyReplacement=true", "nodePort.bindProtection=false"]);
        let plan = super::plan(&unprotected, &without("sock-v6only")).unwrap();
        assert!(plan.degraded.is_empty(), "{:?}", plan.degraded);
        let plan = super::plan(&kpr, &without("sock-v6only,cgroup-bind")).unwrap();
        let features: Vec<&str> = plan.degraded.iter().map(|d| d.feature.as_str()).collect();
        assert_eq!(features, ["cgroup-bind (Linux 4.17)"]);
    }

    #[test]
    fn unknown_feature_names_are_refused_with_the_known_ones() {
        let err = KernelFeatures::complete()
            .assuming_missing("cgroup-getpeer")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cgroup-getpeer") && err.contains("cgroup-getpeername"),
            "{err}"
        );
    }
}
