//! [`Metrics`]: every metric the agent exports, in one registry under the `lb_` prefix, fed by
//! the agent's loop and encoded for each scrape.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::k8s::StoredSlice;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::desired_counts;
use super::{buckets, ProgrammingLatency, SeenSlices, TerminatingEndpoints};
use crate::model::DesiredState;

/// The prefix of every metric name (Cilium's are `cilium_`, kube-proxy's `kubeproxy_`).
pub const PREFIX: &str = "lb";

/// What went wrong, as the `kind` label of `lb_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// An object the source could not read (a bad manifest).
    Source,
    /// An object translation refused (an invalid field, a conflict).
    Translation,
    /// A sync that could not program this node (its Node is missing, the devices cannot be
    /// read).
    Sync,
    /// A reconciliation that failed writing the maps.
    Reconcile,
    /// A reconciliation the kernel refused because a map was full (`bpf.lbMapMax`).
    MapFull,
    /// A map that could not be read for `lb_bpf_map_entries` at a scrape.
    MapRead,
}

impl ErrorKind {
    /// The kind of a failed reconciliation: [`ErrorKind::MapFull`] when somewhere in its chain
    /// the kernel refused an entry for want of room (`E2BIG` from a full hash map, `ENOSPC` from
    /// a full LPM trie), otherwise [`ErrorKind::Reconcile`].
    pub fn of_reconcile(error: &(dyn std::error::Error + 'static)) -> Self {
        let full = |e: &std::io::Error| {
            matches!(e.raw_os_error(), Some(nix::libc::E2BIG | nix::libc::ENOSPC))
        };
        let mut next = Some(error);
        while let Some(e) = next {
            let io = e.downcast_ref::<std::io::Error>().or_else(|| {
                e.downcast_ref::<aya::sys::SyscallError>()
                    .map(|s| &s.io_error)
            });
            if io.is_some_and(full) {
                return ErrorKind::MapFull;
            }
            next = e.source();
        }
        ErrorKind::Reconcile
    }

    fn label(self) -> &'static str {
        match self {
            ErrorKind::Source => "source",
            ErrorKind::Translation => "translation",
            ErrorKind::Sync => "sync",
            ErrorKind::Reconcile => "reconcile",
            ErrorKind::MapFull => "map_full",
            ErrorKind::MapRead => "map_read",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map_name: String,
}

/// The agent's metrics, shared (in an `Arc`) between the loop, which reports, and the server,
/// which encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    terminating_events: Counter,
    sync_duration: Histogram,
    programming_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    services: Gauge,
    backends: Gauge,
    errors: Family<KindLabel, Counter>,
    map_entries: Family<MapLabel, Gauge>,
    map_capacity: Family<MapLabel, Gauge>,
    snat_ports: Gauge,
    /// Where the maps are pinned, once the datapath is loaded; read at each scrape.
    pin_dir: Mutex<Option<PathBuf>>,
    /// The store's EndpointSlices as last seen, for the two metrics computed from their changes.
    slices: Mutex<SliceTrackers>,
    /// The last programmed desired state (shared with the reconciler), whose services and
    /// backends the gauges count at each scrape.
    desired: Mutex<DesiredState>,
}

#[derive(Debug)]
struct SliceTrackers {
    /// Count `lb_k8s_terminating_endpoints_events_total` (`enableK8sTerminatingEndpoint`).
    count_terminating: bool,
    /// The slices as last seen, to tell which changed.
    seen: SeenSlices,
    terminating: TerminatingEndpoints,
    programming: ProgrammingLatency,
}

impl Metrics {
    /// Every metric at zero. Trigger times before `started` are not measured; terminating
    /// endpoints are counted when `count_terminating` (Cilium counts them with graceful
    /// termination on).
    pub fn new(started: SystemTime, count_terminating: bool) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let terminating_events = Counter::default();
        registry.register(
            "k8s_terminating_endpoints_events",
            "Endpoints seen turning terminating in their EndpointSlices",
            terminating_events.clone(),
        );
        let sync_duration = Histogram::new(buckets::sync_duration());
        registry.register(
            "sync_proxy_rules_duration_seconds",
            "How long one pass from the objects to the maps took, in seconds",
            sync_duration.clone(),
        );
        let programming_duration = Histogram::new(buckets::network_programming());
        registry.register(
            "network_programming_duration_seconds",
            "From an EndpointSlice's last-change-trigger-time to its change in the maps, in seconds",
            programming_duration.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "When the maps were last brought up to date, in seconds since the Unix epoch",
            last_sync.clone(),
        );
        let services = Gauge::default();
        registry.register(
            "services",
            "Services (namespace/name) with at least one frontend in the maps, counted at the scrape",
            services.clone(),
        );
        let backends = Gauge::default();
        registry.register(
            "backends",
            "Distinct backend addresses (IP, port, protocol) in the maps, counted at the scrape",
            backends.clone(),
        );
        let errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "errors",
            "Errors by kind: source, translation, sync, reconcile, map_full, map_read",
            errors.clone(),
        );
        let map_entries = Family::<MapLabel, Gauge>::default();
        registry.register(
            "bpf_map_entries",
            "Entries in use in each pinned hash map, read at the scrape",
            map_entries.clone(),
        );
        let map_capacity = Family::<MapLabel, Gauge>::default();
        registry.register(
            "bpf_map_capacity",
            "Entries each pinned hash map can hold (max_entries)",
            map_capacity.clone(),
        );
        let snat_ports = Gauge::default();
        registry.register(
            "nodeport_snat_ports",
            "SNAT source ports held by forwarded NodePort flows in the conntrack map, read at the scrape",
            snat_ports.clone(),
        );
        Metrics {
            registry,
            terminating_events,
            sync_duration,
            programming_duration,
            last_sync,
            services,
            backends,
            errors,
            map_entries,
            map_capacity,
            snat_ports,
            pin_dir: Mutex::new(None),
            desired: Mutex::new(DesiredState::new()),
            slices: Mutex::new(SliceTrackers {
                count_terminating,
                seen: SeenSlices::default(),
                terminating: TerminatingEndpoints::default(),
                programming: ProgrammingLatency::new(started),
            }),
        }
    }

    /// The store changed: these are its EndpointSlices now. Only those that are new
    /// allocations since the last call, and those gone, are looked into (the store keeps an
    /// unchanged slice's allocation).
    pub fn slices_changed<'a>(&self, slices: impl IntoIterator<Item = &'a Arc<StoredSlice>>) {
        let mut t = self.slices.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = t.seen.look(slices);
        let turned = t.terminating.observe(&changes);
        if t.count_terminating {
            self.terminating_events.inc_by(turned);
        }
        t.programming.observe(&changes);
    }

    /// A pass that took `took` put `desired` in the maps at `now`.
    pub fn synced(&self, took: Duration, desired: &DesiredState, now: SystemTime) {
        self.sync_duration.observe(took.as_secs_f64());
        let latencies = self
            .slices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .programming
            .programmed(now);
        for latency in latencies {
            self.programming_duration.observe(latency.as_secs_f64());
        }
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_sync.set(since_epoch.as_secs_f64());
        *self.desired.lock().unwrap_or_else(PoisonError::into_inner) = desired.clone();
    }

    /// `count` errors of `kind` happened.
    pub fn errors(&self, kind: ErrorKind, count: usize) {
        if count > 0 {
            self.errors
                .get_or_create(&KindLabel {
                    kind: kind.label().to_owned(),
                })
                .inc_by(count as u64);
        }
    }

    /// The datapath's maps are pinned in `pin_dir` (read at each scrape from now on).
    pub fn set_pin_dir(&self, pin_dir: PathBuf) {
        *self.pin_dir.lock().unwrap_or_else(PoisonError::into_inner) = Some(pin_dir);
    }

    /// The OpenMetrics text of every metric, the maps' use read now.
    pub fn encode(&self) -> String {
        self.read_maps();
        self.count_desired();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Sets `lb_services` and `lb_backends` from the last programmed state.
    fn count_desired(&self) {
        // Counted on a copy (two pointers): the agent's pass does not wait for the scrape.
        let desired = self
            .desired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (services, backends) = desired_counts::count(&desired);
        self.services.set(services as i64);
        self.backends.set(backends as i64);
    }

    /// Sets the map gauges from the pinned maps, when there are any.
    fn read_maps(&self) {
        let Some(pin_dir) = self
            .pin_dir
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        match crate::datapath::map_usage(&pin_dir) {
            Ok(usage) => {
                for map in usage {
                    let label = MapLabel { map_name: map.name };
                    self.map_entries
                        .get_or_create(&label)
                        .set(map.entries as i64);
                    self.map_capacity
                        .get_or_create(&label)
                        .set(map.capacity as i64);
                }
            }
            Err(e) => {
                tracing::warn!("metrics: cannot read the maps' use: {e}");
                self.errors(ErrorKind::MapRead, 1);
            }
        }
        match crate::datapath::snat_ports_in_use(&pin_dir) {
            Ok(Some(ports)) => {
                self.snat_ports.set(ports as i64);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("metrics: cannot read the SNAT ports in use: {e}");
                self.errors(ErrorKind::MapRead, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Backend, Frontend, L3n4Addr, L4Protocol, LbService, ServiceName, ServiceType,
    };

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_284_800 + secs)
    }

    /// The value of the sample line starting with `name` (name and labels), if any.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    /// The `le` bounds of histogram `name`, +Inf left out.
    fn bounds(text: &str, name: &str) -> Vec<f64> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(&prefix)?.split('"').next())
            .filter(|le| *le != "+Inf")
            .map(|le| le.parse().unwrap())
            .collect()
    }

    fn slice(terminating: bool, trigger: &str) -> StoredSlice {
        serde_yaml::from_str(&format!(
            "metadata: {{name: a-1, namespace: default, labels: {{kubernetes.io/service-name: a}}, \
             annotations: {{endpoints.kubernetes.io/last-change-trigger-time: '{trigger}'}}}}\n\
             addressType: IPv4\n\
             endpoints: [{{addresses: [10.0.0.1], conditions: {{terminating: {terminating}}}}}]\n"
        ))
        .map(|s: k8s_openapi::api::discovery::v1::EndpointSlice| s.into())
        .unwrap()
    }

    fn desired(backends_per_port: &[&[&str]]) -> DesiredState {
        let mut d = DesiredState::new();
        for (i, backends) in backends_per_port.iter().enumerate() {
            let svc = LbService {
                frontend: Frontend::external(
                    L3n4Addr::new(
                        "10.96.0.10".parse().unwrap(),
                        80 + i as u16,
                        L4Protocol::Tcp,
                    ),
                    ServiceType::ClusterIP,
                ),
                name: ServiceName {
                    namespace: "default".into(),
                    name: "a".into(),
                },
                port_name: format!("p{i}"),
                backends: backends
                    .iter()
                    .map(|b| {
                        Backend::active(L3n4Addr::new(b.parse().unwrap(), 8080, L4Protocol::Tcp))
                    })
                    .collect(),
                policies: Default::default(),
                no_local_backends: false,
            };
            d.insert(svc).unwrap();
        }
        d
    }

    #[test]
    fn names_carry_the_prefix_and_the_histograms_kube_proxys_buckets() {
        let m = Metrics::new(at(0), true);
        let text = m.encode();
        for name in [
            "lb_k8s_terminating_endpoints_events_total",
            "lb_sync_proxy_rules_last_timestamp_seconds",
            "lb_services",
            "lb_backends",
            "lb_nodeport_snat_ports",
        ] {
            assert_eq!(sample(&text, name), Some(0.0), "{name} in\n{text}");
        }
        assert_eq!(
            bounds(&text, "lb_sync_proxy_rules_duration_seconds"),
            buckets::sync_duration()
        );
        assert_eq!(
            bounds(&text, "lb_network_programming_duration_seconds"),
            buckets::network_programming()
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_terminating_endpoint_counts_once_however_often_it_is_seen() {
        let m = Metrics::new(at(0), true);
        m.slices_changed(&[Arc::new(slice(false, "2026-12-03T08:00:01Z"))]);
        m.slices_changed(&[Arc::new(slice(true, "2026-12-03T08:00:02Z"))]);
        m.slices_changed(&[Arc::new(slice(true, "2026-12-03T08:00:02Z"))]);
        let text = m.encode();
        assert_eq!(
            sample(&text, "lb_k8s_terminating_endpoints_events_total"),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn without_graceful_termination_nothing_is_counted() {
        let m = Metrics::new(at(0), false);
        m.slices_changed(&[Arc::new(slice(false, "2026-12-03T08:00:01Z"))]);
        m.slices_changed(&[Arc::new(slice(true, "2026-12-03T08:00:02Z"))]);
        let text = m.encode();
        assert_eq!(
            sample(&text, "lb_k8s_terminating_endpoints_events_total"),
            Some(0.0)
        );
    }

    #[test]
    fn a_sync_sets_the_gauges_and_observes_both_histograms() {
        let m = Metrics::new(at(0), true);
        m.slices_changed(&[Arc::new(slice(false, "2026-12-03T08:00:01.5Z"))]);
        let d = desired(&[&["10.0.1.1", "10.0.1.2"], &["10.0.1.2", "10.0.1.3"]]);
        m.synced(Duration::from_millis(3), &d, at(4));
        let text = m.encode();
        assert_eq!(
            sample(&text, "lb_services"),
            Some(1.0),
            "one service, two ports"
        );
        assert_eq!(sample(&text, "lb_backends"), Some(3.0), "distinct backends");
        assert_eq!(
            sample(&text, "lb_sync_proxy_rules_last_timestamp_seconds"),
            Some(1_796_284_804.0)
        );
        assert_eq!(
            sample(&text, "lb_sync_proxy_rules_duration_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "lb_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "lb_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "lb_network_programming_duration_seconds_sum"),
            Some(2.5),
            "{text}"
        );
        m.synced(Duration::from_millis(3), &d, at(5));
        let text = m.encode();
        assert_eq!(
            sample(&text, "lb_network_programming_duration_seconds_count"),
            Some(1.0),
            "a resync without a change observes no latency"
        );
        assert_eq!(
            sample(&text, "lb_sync_proxy_rules_duration_seconds_count"),
            Some(2.0)
        );
    }

    #[test]
    fn a_reconcile_error_from_a_full_map_is_map_full() {
        let refused = |errno: i32| {
            crate::agent::AgentError::Reconcile(crate::reconciler::ReconcileError::Datapath(
                crate::datapath::DatapathError::Map {
                    map: "lb_services_v1",
                    source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                        call: "bpf_map_update_elem",
                        io_error: std::io::Error::from_raw_os_error(errno),
                    }),
                },
            ))
        };
        assert_eq!(
            ErrorKind::of_reconcile(&refused(nix::libc::E2BIG)),
            ErrorKind::MapFull
        );
        assert_eq!(
            ErrorKind::of_reconcile(&refused(nix::libc::ENOSPC)),
            ErrorKind::MapFull
        );
        assert_eq!(
            ErrorKind::of_reconcile(&refused(nix::libc::EPERM)),
            ErrorKind::Reconcile
        );
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let m = Metrics::new(at(0), true);
        m.errors(ErrorKind::Translation, 2);
        m.errors(ErrorKind::Reconcile, 1);
        m.errors(ErrorKind::Source, 0);
        let text = m.encode();
        assert_eq!(
            sample(&text, "lb_errors_total{kind=\"translation\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "lb_errors_total{kind=\"reconcile\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "lb_errors_total{kind=\"source\"}"), None);
    }
}
