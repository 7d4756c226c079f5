//! `lb-agent`'s loop: sync the source into the store, translate for this node, start the agent
//! on the first result, then reconcile after every change (and every [`RESYNC`] anyway, so
//! changed node addresses are followed; every [`MAP_AUDIT`] the pass reads the maps back, so
//! anything else that touched them is put right). Each change
//! received, each reconcile done and this node's Node are reported to [`crate::health`], which
//! serves them on `kubeProxyReplacementHealthzBindAddr`; each translation's health checks are
//! served on their services' `healthCheckNodePort`s (`nodePort.enableHealthCheck`). The same
//! events feed [`crate::metrics`], served on `prometheus.port` with `prometheus.enabled`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{error, info, warn};

use super::options_watch::OptionsWatch;
use super::translation_log::TranslationLog;
use super::{Agent, AgentError};
use crate::config::AgentConfig;
use crate::health::{
    self, Health, HealthServer, ServiceHealthServers, SystemClock, HEALTH_TIMEOUT,
};
use crate::host::free_memory::return_free_memory;
use crate::k8s::{self, NodeTranslation, TranslationCache};
use crate::metrics::{ErrorKind, Metrics, MetricsServer};
use crate::source::{ClusterStore, Source, SyncReport};

/// How often the maps are checked against the source even without a change.
pub const RESYNC: Duration = Duration::from_secs(10);
/// How often the pass reads the service maps back from the kernel rather than trusting what
/// it wrote, so an entry changed or deleted behind the agent's back is put right. Reading them
/// takes two system calls per entry (about a second at 10 000 services), so not at every
/// [`RESYNC`]: a change arriving meanwhile would wait for it. (kube-proxy's iptables mode
/// rewrites everything once an hour.)
pub const MAP_AUDIT: Duration = Duration::from_secs(300);
/// How long one wait for a change lasts, so a stop request is seen promptly.
const POLL: Duration = Duration::from_millis(500);

/// What `lb-agent` was started with, besides its parsed options.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The values file the options came from (watched for changes, which are refused).
    pub values: Option<PathBuf>,
    /// The `--set` flags.
    pub sets: Vec<String>,
    /// This node's name among the Nodes (the only Node when `None`).
    pub node: Option<String>,
    /// Where the agent records what it installed.
    pub state_dir: PathBuf,
    /// Program once and return.
    pub once: bool,
}

/// Runs the agent with `config` on objects from `source` until a stop is requested (or once).
/// The caller holds the node's [`super::AgentLock`].
pub fn run(
    config: &AgentConfig,
    source: &mut dyn Source,
    opts: &RunOptions,
) -> Result<(), AgentError> {
    // Listening before anything is loaded, so a bad address stops the agent before it touches
    // the node; the first sync counts as a change waiting to be programmed.
    let health = start_health(config, opts)?;
    let metrics = start_metrics(config, opts)?;
    health.queued();
    let mut store = ClusterStore::default();
    let mut cache = TranslationCache::new();
    // The datapath loads while the lists arrive: loading needs only the options and the
    // kernel (the device selection comes with the Node and is applied after). A kernel or an
    // option that refuses the start is logged at once, and ends the agent when the lists
    // are in (the source cannot be interrupted while it waits for an API server).
    let (report, loaded) = std::thread::scope(|scope| {
        let loading = scope.spawn(|| {
            let started = Instant::now();
            Agent::load(config)
                .inspect_err(|e| {
                    error!("the datapath cannot load: {e}; the agent exits once the lists are in")
                })
                .map(|loaded| (loaded, started.elapsed()))
        });
        let report = source.sync(&mut store);
        let loaded = loading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (report, loaded)
    });
    let (loaded, loaded_in) = loaded?;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            loaded.abandon();
            return Err(e.into());
        }
    };
    // What the lists' pages and the loading (the kernel's BTF, parsed) freed goes back to
    // the kernel before translation and the first pass allocate (see `free_memory`).
    return_free_memory();
    store_synced(&metrics, &report, &store);
    log_sync(&report, &metrics);
    health.set_node_eligible(this_node_eligible(&store, opts));
    let pass = Instant::now();
    let first = match translate(config, &store, opts, &mut cache) {
        Ok(first) => first,
        Err(e) => {
            loaded.abandon();
            return Err(e);
        }
    };
    // Translation, the journal's only reader, has seen every change.
    store.forget_changes_through(store.version());
    let translated_in = pass.elapsed();
    let mut reported = TranslationLog::default();
    reported.report(&first.translation, &metrics);
    let attaching = Instant::now();
    let mut agent = loaded.start(config, &first.selection, &opts.state_dir)?;
    let attached_in = attaching.elapsed();
    // The pass is translation and reconciliation, as later ones: loading the datapath is not.
    let pass = Instant::now();
    reconcile(&mut agent, &first, &metrics, pass)?;
    let written_in = pass.elapsed();
    health.updated();
    metrics.set_pin_dir(agent.record().pin_dir.clone());
    metrics.synced(
        translated_in + pass.elapsed(),
        &first.translation.state,
        SystemTime::now(),
    );
    keep_neighbours(&mut agent, &store, &first);
    // Said once the first reconciliation is in the maps: from here the node is served. The
    // time each step of the start took is in it (loading ran beside the lists), for whoever
    // looks into a slow start.
    info!(
        translated_in = ?translated_in,
        loaded_in = ?loaded_in,
        attached_in = ?attached_in,
        written_in = ?written_in,
        source = %source.describe(),
        pin_dir = %agent.record().pin_dir.display(),
        cgroup = %agent.record().cgroup.display(),
        "datapath ready"
    );
    if opts.once {
        return Ok(());
    }
    let mut node_port_checks = start_service_health(config, &health)?;
    serve_health_checks(&mut node_port_checks, &first);
    crate::stop::install_handlers().map_err(|e| AgentError::State {
        path: PathBuf::from("/proc/self"),
        detail: format!("cannot install signal handlers: {e}"),
    })?;
    let mut options = OptionsWatch::new(opts.values.clone(), opts.sets.clone(), config);
    let mut last_sync = Instant::now();
    let mut last_audit = Instant::now();
    let mut last_gc = Instant::now();
    while !crate::stop::requested() {
        if last_gc.elapsed() >= super::ct_gc::CT_GC_INTERVAL {
            last_gc = Instant::now();
            match agent.collect_conntrack() {
                Ok(0) => {}
                Ok(deleted) => info!(deleted, "deleted stale conntrack entries"),
                Err(e) => warn!("conntrack garbage collection failed: {e}"),
            }
        }
        let refreshed = agent.refresh_neighbours();
        if refreshed > 0 {
            tracing::debug!(
                refreshed,
                "asked the kernel to re-resolve the neighbour entries"
            );
        }
        let changed = source.wait_for_change(POLL)?;
        if changed {
            health.queued();
        }
        if !changed && last_sync.elapsed() < RESYNC {
            continue;
        }
        last_sync = Instant::now();
        if last_audit.elapsed() >= MAP_AUDIT {
            last_audit = Instant::now();
            agent.reread_maps();
        }
        if let Some(complaint) = options.check() {
            error!("{complaint}");
        }
        let report = source.sync(&mut store)?;
        if report.changed {
            // A periodic resync that found changed objects has work to program too.
            health.queued();
        }
        store_synced(&metrics, &report, &store);
        if changed {
            log_sync(&report, &metrics);
        }
        health.set_node_eligible(this_node_eligible(&store, opts));
        let pass = Instant::now();
        let translated = translate(config, &store, opts, &mut cache);
        store.forget_changes_through(store.version());
        match translated {
            Ok(translation) => {
                reported.report(&translation.translation, &metrics);
                reconcile(&mut agent, &translation, &metrics, pass)?;
                health.updated();
                metrics.synced(
                    pass.elapsed(),
                    &translation.translation.state,
                    SystemTime::now(),
                );
                serve_health_checks(&mut node_port_checks, &translation);
                keep_neighbours(&mut agent, &store, &translation);
            }
            Err(AgentError::NodeNotFound(e)) => {
                // Nothing can be programmed for a node whose Node is gone, and waiting longer
                // will not change that: every change is handled, and `nodeEligible: false`
                // tells load balancers, as kube-proxy does when its Node is deleted.
                health.updated();
                metrics.errors(ErrorKind::Sync, 1);
                error!("objects not applied, keeping the current state: {e}");
            }
            Err(e) => {
                metrics.errors(ErrorKind::Sync, 1);
                error!("objects not applied, keeping the current state: {e}");
            }
        }
    }
    info!("stopping; the datapath stays attached (lbctl cleanup removes it)");
    Ok(())
}

/// The shared health state, and its server listening on `kubeProxyReplacementHealthzBindAddr`
/// when that is set and the agent keeps running (not `--once`). Without a server the state is
/// still kept: it is cheap, and the loop need not ask whether anyone reads it.
fn start_health(config: &AgentConfig, opts: &RunOptions) -> Result<Arc<Health>, AgentError> {
    let health = Arc::new(Health::new(HEALTH_TIMEOUT, Arc::new(SystemClock)));
    if let (Some(addr), false) = (config.healthz_bind_addr(), opts.once) {
        let server = HealthServer::start(addr, Arc::clone(&health))?;
        info!(address = %server.local_addr(), "serving /healthz and /livez");
    }
    Ok(health)
}

/// The shared metrics, and their server listening on `prometheus.port` when
/// `prometheus.enabled` is on and the agent keeps running (not `--once`). As with health, the
/// metrics are kept without a server.
fn start_metrics(config: &AgentConfig, opts: &RunOptions) -> Result<Arc<Metrics>, AgentError> {
    let metrics = Arc::new(Metrics::new(
        SystemTime::now(),
        config.graceful_termination(),
    ));
    if let (Some(port), false) = (config.prometheus_port(), opts.once) {
        let server = MetricsServer::start(port, Arc::clone(&metrics))?;
        info!(address = %server.local_addr(), "serving /metrics");
    }
    Ok(metrics)
}

/// Tells `metrics` the store's EndpointSlices when a sync changed them (a resync that found
/// nothing new tells nothing, so no transition is counted twice).
fn store_synced(metrics: &Metrics, report: &SyncReport, store: &ClusterStore) {
    if report.changed {
        metrics.slices_changed(store.endpoint_slices());
    }
}

/// The servers of the services' `healthCheckNodePort`s, when NodePort handling and
/// `nodePort.enableHealthCheck` are on (the caller does not ask with `--once`). Their answers
/// follow `health`.
fn start_service_health(
    config: &AgentConfig,
    health: &Arc<Health>,
) -> Result<Option<ServiceHealthServers>, AgentError> {
    if !(config.node_port() && config.values().node_port.enable_health_check) {
        return Ok(None);
    }
    ServiceHealthServers::start(Arc::clone(health))
        .map(Some)
        .map_err(|e| AgentError::State {
            path: PathBuf::from("/proc/self"),
            detail: format!("cannot start the health check node port servers: {e}"),
        })
}

/// Opens, updates and closes the health check node port servers after `translation`; a port
/// that cannot be opened is logged and tried again on the next pass.
fn serve_health_checks(servers: &mut Option<ServiceHealthServers>, translation: &NodeTranslation) {
    let Some(servers) = servers else { return };
    for e in servers.sync(&translation.translation.health_checks) {
        error!("{e}");
    }
}

/// Whether this node's Node, as the store holds it now, may receive traffic.
fn this_node_eligible(store: &ClusterStore, opts: &RunOptions) -> bool {
    health::node_eligible(&store.shared_nodes(), opts.node.as_deref())
}

/// The store's objects translated for this node with its devices now, redoing only what
/// changed since the last call with `cache`.
fn translate(
    config: &AgentConfig,
    store: &ClusterStore,
    opts: &RunOptions,
    cache: &mut TranslationCache,
) -> Result<NodeTranslation, AgentError> {
    let devices = crate::host::local_devices()?;
    k8s::translate_for_node_store(config, store, opts.node.as_deref(), devices, cache)
        .map_err(AgentError::NodeNotFound)
}

/// Reconciles the agent's maps with `translation`, in a pass that began at `pass` (its time,
/// translation included, is logged with what changed, as kube-proxy logs each sync's).
fn reconcile(
    agent: &mut Agent,
    translation: &NodeTranslation,
    metrics: &Metrics,
    pass: Instant,
) -> Result<(), AgentError> {
    let report = agent
        .reconcile(&translation.translation.state)
        .inspect_err(|e| metrics.errors(ErrorKind::of_reconcile(e), 1))?;
    metrics.errors(ErrorKind::MapFull, agent.fresh_refusals());
    if report.changed_anything() {
        info!(
            took = ?pass.elapsed(),
            frontends = report.frontends,
            written = report.maps.written,
            deleted = report.maps.deleted,
            local_addresses_changed = report.local_addrs.changed,
            devices_changed = report.devices_changed,
            udp_sockets_destroyed = report.udp_sockets_destroyed,
            "maps updated"
        );
    }
    Ok(())
}

/// The neighbour entries for the store's other Nodes; a failure is logged, and the next pass
/// tries again.
fn keep_neighbours(agent: &mut Agent, store: &ClusterStore, translation: &NodeTranslation) {
    if let Err(e) = agent.keep_neighbours(&store.shared_nodes(), &translation.node.name) {
        warn!("cannot keep the neighbour entries for the other nodes: {e}");
    }
}

fn log_sync(report: &SyncReport, metrics: &Metrics) {
    metrics.errors(ErrorKind::Source, report.errors.len());
    for e in &report.errors {
        warn!("error: {e}");
    }
    for file in &report.kept {
        warn!(
            file = %file.display(),
            "file not applied: it keeps the objects it had before the error"
        );
    }
}
