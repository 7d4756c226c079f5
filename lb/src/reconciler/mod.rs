//! The reconciler: the one place that turns desired state into map writes. It lays out the
//! desired services over what the maps hold (keeping the ids that still mean the same thing),
//! applies the difference, deletes what nothing owns, points the wildcard frontends at the
//! node's current addresses, remembers which service each frontend id belongs to, and destroys
//! the connected UDP sockets still pointing at backends it removed.
//!
//! It works over [`DatapathMaps`] and [`UdpSocketSweeper`], which the kernel and the simulator
//! both implement: `lb-agent` and the `sim` scenarios run this same code. The north-south
//! maps are written here too: the NodePort devices with their addresses, and the Maglev tables
//! (with the services, in an order that never leaves a table naming a missing backend).

mod fit;
mod incremental;
mod kernel;
mod maps;
mod memory;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

pub use fit::NotProgrammed;
pub use kernel::KernelMaps;
pub use maps::{DatapathMaps, UdpSocketSweeper};
pub use memory::{MemoryMaps, NoSockets};

use crate::agent::udp_destroy::SweepScope;
use crate::datapath::{
    ApplyReport, DatapathError, DeviceAddrs, LayoutError, ListedFrontend, LocalAddrsReport,
    MaglevSettings, MapContents, MapDelta, RemovedBackends,
};
use crate::model::{DesiredState, L4Protocol, ServiceName};
use incremental::Programmed;

/// Why a reconciliation failed; the maps keep what they held before the failing write.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The desired state does not fit the maps' layout.
    #[error("cannot lay out the services in the maps: {0}")]
    Layout(#[from] LayoutError),
    /// Reading or writing a map failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

/// What one reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Map entries written and deleted.
    pub maps: ApplyReport,
    /// Frontends now programmed.
    pub frontends: usize,
    /// What changed in the local-address map, and what did not fit.
    pub local_addrs: LocalAddrsReport,
    /// NodePort device entries written or deleted.
    pub devices_changed: usize,
    /// Connected UDP sockets to removed backends that were destroyed.
    pub udp_sockets_destroyed: usize,
    /// Services left out because the maps are full (`bpf.lbMapMax`), in name order.
    pub not_programmed: Vec<NotProgrammed>,
}

impl ReconcileReport {
    /// Whether anything changed.
    pub fn changed_anything(&self) -> bool {
        self.maps.written
            + self.maps.deleted
            + self.local_addrs.changed
            + self.devices_changed
            + self.udp_sockets_destroyed
            > 0
    }
}

/// Keeps a node's maps equal to the desired state.
#[derive(Clone, Debug, Default)]
pub struct Reconciler {
    /// Where connected UDP sockets to removed backends are destroyed; `None` when UDP is not
    /// translated by the socket hooks or the kernel cannot destroy sockets.
    udp_sweep: Option<SweepScope>,
    /// The service behind each frontend id, as of the last reconciliation.
    names: BTreeMap<u16, ServiceName>,
    /// With `loadBalancer.algorithm=maglev`: how the packet programs' Maglev tables are built.
    maglev: Option<MaglevSettings>,
    /// What the service maps hold after the last pass, so the next one need not read them
    /// back (at 10 000 services that read is most of a single change's time). `None` at first,
    /// after a pass that failed and after [`Reconciler::reread_maps`]: then they are read.
    held: Option<MapContents>,
    /// What the last pass programmed, when it programmed all of `desired` without Maglev
    /// tables: then the next pass lays out only what changed ([`incremental`]). `None` makes
    /// it lay out everything.
    programmed: Option<Programmed>,
    /// Whether the last pass laid out only what changed.
    stepped: bool,
}

impl Reconciler {
    /// A reconciler that sweeps UDP sockets in `udp_sweep` (nowhere with `None`).
    pub fn new(udp_sweep: Option<SweepScope>) -> Self {
        Reconciler {
            udp_sweep,
            names: BTreeMap::new(),
            maglev: None,
            held: None,
            programmed: None,
            stepped: false,
        }
    }

    /// Makes the next pass read the service maps from the kernel rather than trust what the
    /// last one wrote (the agent asks at its periodic resync, so a map changed behind its back
    /// is put right as before).
    pub fn reread_maps(&mut self) {
        self.held = None;
        self.programmed = None;
    }

    /// This reconciler, writing a Maglev table for every externally served frontend (with
    /// `Some`; `None` keeps the table map empty).
    pub fn with_maglev(mut self, maglev: Option<MaglevSettings>) -> Self {
        self.maglev = maglev;
        self
    }

    /// Makes `maps` hold exactly `desired` with `local_addrs` as the node's addresses and
    /// `devices` as the NodePort devices, keeping the ids of what did not change; entries nothing wants are deleted. After a
    /// removal of UDP backends, `sweeper` destroys the sockets the hooks pointed at them; a
    /// failed sweep is a warning (the maps are right, and the next removal sweeps again).
    pub fn reconcile(
        &mut self,
        desired: &DesiredState,
        local_addrs: &[IpAddr],
        devices: &[DeviceAddrs],
        maps: &mut (impl DatapathMaps + ?Sized),
        sweeper: &mut (impl UdpSocketSweeper + ?Sized),
    ) -> Result<ReconcileReport, ReconcileError> {
        let local = maps.set_local_addresses(local_addrs)?;
        let devices_changed = maps.set_devices(devices)?;
        // Taken: a pass that fails on the way leaves them unknown, and the next one reads and
        // lays everything out.
        let programmed = self.programmed.take();
        let mut current = match self.held.take() {
            Some(held) => held,
            None => maps.read_services()?,
        };
        let capacity = maps.service_capacity()?;
        let step = match programmed {
            Some(mut programmed) => programmed
                .step(desired, &current, capacity)
                .map(|step| (step, programmed)),
            None => None,
        };
        self.stepped = step.is_some();
        let (applied, removed, not_programmed) = match step {
            Some((step, programmed)) => {
                let applied = maps.apply_services(&current, &step.delta)?;
                step.delta.apply_to(&mut current);
                for id in &step.unnamed {
                    self.names.remove(id);
                }
                self.names.extend(step.named);
                self.programmed = Some(programmed);
                self.held = Some(current);
                (applied, step.removed_udp, Vec::new())
            }
            None => self.lay_out_all(desired, current, capacity, maps)?,
        };
        let udp_sockets_destroyed = self.sweep_udp(&removed, maps, sweeper)?;
        let frontends = self.names.len();
        Ok(ReconcileReport {
            maps: applied,
            frontends,
            local_addrs: local,
            devices_changed,
            udp_sockets_destroyed,
            not_programmed,
        })
    }

    /// The whole layout: `desired` (or as much of it as fits) laid out over `current`, the
    /// difference applied, the names of every frontend id worked out again. Returns what was
    /// applied, the UDP backends removed and the services left out.
    fn lay_out_all(
        &mut self,
        desired: &DesiredState,
        current: MapContents,
        capacity: usize,
        maps: &mut (impl DatapathMaps + ?Sized),
    ) -> Result<(ApplyReport, RemovedBackends, Vec<NotProgrammed>), ReconcileError> {
        let (mut want, mut not_programmed) = self.fitted(desired, &current, capacity)?;
        let mut applied = maps.apply_services(&current, &MapDelta::between(&current, &want))?;
        if !not_programmed.is_empty() && applied.deleted > 0 {
            // Services left out for room that entries deleted just now have freed: once more,
            // from what the maps hold now.
            let (again, left_out) = self.fitted(desired, &want, capacity)?;
            let more = maps.apply_services(&want, &MapDelta::between(&want, &again))?;
            applied.written += more.written;
            applied.deleted += more.deleted;
            (want, not_programmed) = (again, left_out);
        }
        self.names = service_names(desired, &want.frontends());
        let removed = RemovedBackends::between(&current, &want, L4Protocol::Udp);
        // The maps hold `want` now; the Maglev tables are the packet programs' map, which
        // `read_services` leaves out too.
        want.maglev = BTreeMap::new();
        if not_programmed.is_empty() && self.maglev.is_none() {
            self.programmed = Programmed::new(desired, &want);
        }
        self.held = Some(want);
        Ok((applied, removed, not_programmed))
    }

    /// Destroys the connected UDP sockets still pointing at `removed` backends; a failed
    /// sweep is a warning (the maps are right, and the next removal sweeps again).
    fn sweep_udp(
        &self,
        removed: &RemovedBackends,
        maps: &mut (impl DatapathMaps + ?Sized),
        sweeper: &mut (impl UdpSocketSweeper + ?Sized),
    ) -> Result<usize, ReconcileError> {
        let Some(scope) = self.udp_sweep.filter(|_| !removed.is_empty()) else {
            return Ok(0);
        };
        let translated = maps.translated_sockets()?;
        match sweeper.sweep(scope, removed, &translated) {
            Ok(destroyed) => {
                // Their index entries would stay until the applications close the destroyed
                // sockets: forget them now.
                maps.forget_translated(&destroyed)?;
                Ok(destroyed.len())
            }
            Err(e) => {
                tracing::warn!("connected UDP sockets to removed backends not destroyed: {e}");
                Ok(0)
            }
        }
    }

    /// What to write over `current`: `desired` laid out, or as much of it as fits maps of
    /// `capacity` entries, with the services left out.
    fn fitted(
        &self,
        desired: &DesiredState,
        current: &MapContents,
        capacity: usize,
    ) -> Result<(MapContents, Vec<NotProgrammed>), ReconcileError> {
        let want = self.lay_out(desired, current)?;
        match fit::fit(desired, current, &want, capacity) {
            None => Ok((want, Vec::new())),
            Some((fitting, left_out)) => Ok((self.lay_out(&fitting, current)?, left_out)),
        }
    }

    /// `desired` laid out over `current`, with the Maglev tables when they are built.
    fn lay_out(
        &self,
        desired: &DesiredState,
        current: &MapContents,
    ) -> Result<MapContents, ReconcileError> {
        let mut want = MapContents::build(desired, current)?;
        if let Some(maglev) = &self.maglev {
            want.add_maglev_tables(desired, maglev);
        }
        Ok(want)
    }

    /// Whether the last pass laid out only the frontends that changed (rather than all).
    pub fn stepped(&self) -> bool {
        self.stepped
    }

    /// The service (or pod) behind each frontend id, for `lbctl service list`.
    pub fn service_names(&self) -> &BTreeMap<u16, ServiceName> {
        &self.names
    }
}

/// The service each listed frontend id belongs to (the maps hold ids and addresses, not names).
fn service_names(desired: &DesiredState, listed: &[ListedFrontend]) -> BTreeMap<u16, ServiceName> {
    let names: HashMap<_, _> = desired.services().map(|s| (s.frontend, &s.name)).collect();
    listed
        .iter()
        .filter_map(|f| Some((f.id, (*names.get(&f.frontend)?).clone())))
        .collect()
}
