//! Which kernel features a scenario needs on the `kernel` backend, and whether this kernel has
//! them, by the agent's own probes ([`lb::host::features`]).

use std::collections::BTreeMap;

use lb::host::features::{self, Feature, Missing};

use crate::Scenario;

/// The features the `kernel` backend needs for `scenario`: every feature the socket datapath
/// uses (a scenario expects the complete behaviour unless it says otherwise), less those its
/// `assume_missing` makes the agents do without, plus its own `requires`. `SO_NETNS_COOKIE` is
/// not among them: agents learn their namespace's cookie through a BPF hook without it.
pub fn required(scenario: &Scenario) -> Vec<Feature> {
    let mut wanted: Vec<Feature> = Feature::ALL
        .into_iter()
        .filter(|&f| f != Feature::SoNetnsCookie)
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
