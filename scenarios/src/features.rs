//! Which kernel features a scenario needs on the `kernel` backend, and whether this kernel has
//! them, by the agent's own probes ([`lb::host::features`]).

use std::collections::BTreeMap;

use lb::agent::degrade;
use lb::host::features::{self, Feature, Missing};

use crate::{report, Scenario};

/// The features the `kernel` backend needs for `scenario`: every feature the socket datapath
/// uses (a scenario expects the complete behaviour unless it says otherwise), less those its
/// `assume_missing` makes the agents do without, plus its own `requires`. `SO_NETNS_COOKIE` is
/// not among them: agents learn their namespace's cookie through a BPF hook without it. Nor is
/// tcx: without it the tc programs are attached through netlink, with the same behaviour. Nor
/// are managed neighbours: without them the agent refreshes the entries itself. Nor are BPF
/// atomics: without them the agent loads the socket programs built without the slot array,
/// which keep connected sockets' translations in the hash map alone, with the same behaviour.
pub fn required(scenario: &Scenario) -> Vec<Feature> {
    let mut wanted: Vec<Feature> = Feature::ALL
        .into_iter()
        .filter(|&f| {
            f != Feature::SoNetnsCookie
                && f != Feature::Tcx
                && f != Feature::ManagedNeighbours
                && f != Feature::BpfAtomics
        })
        .filter(|f| !scenario.assume_missing.iter().any(|n| n == f.name()))
        .chain(features::required_by_agent())
        .collect();
    wanted.extend(
        scenario
            .requires
            .iter()
            .filter_map(|name| Feature::from_name(name)),
    );
    wanted.sort();
    wanted.dedup();
    wanted
}

/// The running kernel's answer for every feature, probed once.
#[derive(Clone, Debug, Default)]
pub struct Probed(BTreeMap<Feature, Result<(), String>>);

impl Probed {
    /// Probes every feature on the running kernel.
    pub fn run() -> Probed {
        Probed(Feature::ALL.into_iter().map(|f| (f, f.probe())).collect())
    }

    /// The first feature `scenario` needs that this kernel lacks.
    pub fn first_missing(&self, scenario: &Scenario) -> Option<Missing> {
        required(scenario)
            .into_iter()
            .find_map(|feature| match self.0.get(&feature) {
                Some(Err(detail)) => Some(Missing {
                    feature,
                    detail: detail.clone(),
                }),
                _ => None,
            })
    }

    /// The features this kernel lacks, for the run's header line.
    pub fn missing(&self) -> Vec<Feature> {
        self.0
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(f, _)| *f)
            .collect()
    }
}

/// The options whose degradations the kernel record lists: the documents' default,
/// kube-proxy replacement.
pub const RECORD_OPTIONS: &str = "kubeProxyReplacement=true";

/// What an agent with [`RECORD_OPTIONS`] finds on the running kernel, as the VM matrix shows it:
/// the probes as the agent sees them (`LB_ASSUME_MISSING_FEATURES` honoured), its plan and how
/// it learns its namespace's cookie.
pub fn kernel_record() -> report::KernelFeatures {
    let assumed = std::env::var(degrade::ASSUME_MISSING_ENV).unwrap_or_default();
    match degrade::KernelFeatures::probe() {
        Ok(features) => describe(&features, &assumed),
        Err(e) => {
            // An unknown name in the override: the agent refuses to start; show the kernel's
            // own answers beside the refusal.
            let answers = Feature::ALL.into_iter().map(|f| (f, f.probe())).collect();
            record(answers, Err(e.to_string()), &assumed)
        }
    }
}

/// The record of an agent with [`RECORD_OPTIONS`] on a kernel with `features`.
pub fn describe(features: &degrade::KernelFeatures, assumed: &str) -> report::KernelFeatures {
    let missing = features.missing();
    let answers = Feature::ALL
        .into_iter()
        .map(|f| {
            let answer = match missing.iter().find(|m| m.feature == f) {
                Some(m) => Err(m.detail.clone()),
                None => Ok(()),
            };
            (f, answer)
        })
        .collect();
    let config =
        lb::config::load(None, &[RECORD_OPTIONS.to_owned()]).expect("the default options load");
    let plan = degrade::plan(&config, features)
        .map(|p| p.degraded)
        .map_err(|e| e.to_string());
    record(answers, plan, assumed)
}

fn record(
    answers: Vec<(Feature, Result<(), String>)>,
    plan: Result<Vec<features::Degradation>, String>,
    assumed: &str,
) -> report::KernelFeatures {
    let has = |f| answers.iter().any(|(g, a)| *g == f && a.is_ok());
    // The agent's order (`Agent::start`): the socket option, else the one-shot BPF hook, which
    // needs the connect hook and the netns-cookie helper.
    let netns_cookie = if has(Feature::SoNetnsCookie) {
        "SO_NETNS_COOKIE"
    } else if has(Feature::CgroupConnect) && has(Feature::NetnsCookieHelper) {
        "bpf-probe"
    } else {
        "none"
    };
    let (degraded, refused) = match plan {
        Ok(degraded) => (degraded, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    report::KernelFeatures {
        features: answers
            .into_iter()
            .map(|(f, answer)| report::FeatureAnswer {
                name: f.name().to_owned(),
                since: f.since().to_owned(),
                present: answer.is_ok(),
                answer: answer.err().unwrap_or_default(),
            })
            .collect(),
        netns_cookie: netns_cookie.to_owned(),
        options: RECORD_OPTIONS.to_owned(),
        degraded,
        refused,
        assumed_missing: assumed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without(names: &str) -> report::KernelFeatures {
        let features = degrade::KernelFeatures::complete()
            .assuming_missing(names)
            .unwrap();
        describe(&features, names)
    }

    #[test]
    fn a_kernel_before_5_14_learns_the_cookie_through_the_bpf_probe_and_lists_what_it_lacks() {
        let r = without("so-netns-cookie");
        assert_eq!(r.netns_cookie, "bpf-probe");
        let absent: Vec<(&str, &str)> = r
            .features
            .iter()
            .filter(|f| !f.present)
            .map(|f| (f.name.as_str(), f.answer.as_str()))
            .collect();
        assert_eq!(
            absent,
            [(
                "so-netns-cookie",
                "assumed missing (LB_ASSUME_MISSING_FEATURES)"
            )]
        );
        assert_eq!(r.features.len(), Feature::ALL.len());
        assert!(r.degraded.is_empty() && r.refused.is_none());
    }

    #[test]
    fn degradations_and_refusals_are_the_agents_plan() {
        let r = without("cgroup-getpeername,cgroup-sock-release");
        assert_eq!(r.netns_cookie, "SO_NETNS_COOKIE");
        let degraded: Vec<&str> = r.degraded.iter().map(|d| d.feature.as_str()).collect();
        assert_eq!(
            degraded,
            [
                "cgroup-getpeername (Linux 5.8)",
                "cgroup-sock-release (Linux 5.9)"
            ]
        );
        let r = without("so-netns-cookie,netns-cookie-helper");
        assert_eq!(r.netns_cookie, "none");
        assert!(r.refused.is_none(), "{:?}", r.refused);
        assert!(
            r.degraded
                .iter()
                .all(|d| d.feature == "netns-cookie-helper (Linux 5.7)"),
            "{:?}",
            r.degraded
        );
        let refused = without("cgroup-connect").refused.unwrap();
        assert!(refused.contains("cgroup-connect"), "{refused}");
    }
}
