//! `lbctl service list`: one row per frontend with its backends, numbered like the agent does.

use std::collections::BTreeMap;

use serde::Serialize;

use super::table;
use crate::datapath::ListedFrontend;
use crate::model::{BackendState, DesiredState, Frontend, L3n4Addr, ServiceName};

/// One frontend as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    /// Service id.
    pub id: u32,
    /// The frontend.
    pub frontend: Frontend,
    /// The Kubernetes object it serves (unknown for entries no agent record names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    /// Its backends.
    pub backends: Vec<BackendEntry>,
}

/// One backend of a listed frontend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendEntry {
    /// Backend id (the same address has the same id under every frontend).
    pub id: u32,
    /// Address.
    pub addr: L3n4Addr,
    /// State.
    pub state: BackendState,
}

/// The whole list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ServiceList {
    /// Entries in id order.
    pub entries: Vec<ServiceEntry>,
}

impl ServiceList {
    /// Numbers the frontends of `state` in its order and backends by first appearance, as an
    /// agent starting from empty maps would.
    pub fn from_desired(state: &DesiredState) -> Self {
        let mut backend_ids: BTreeMap<L3n4Addr, u32> = BTreeMap::new();
        let entries = state
            .services()
            .zip(1..)
            .map(|(svc, id)| ServiceEntry {
                id,
                frontend: svc.frontend,
                service: Some(svc.name.clone()),
                backends: svc
                    .backends
                    .iter()
                    .map(|b| {
                        let next = backend_ids.len() as u32 + 1;
                        BackendEntry {
                            id: *backend_ids.entry(b.addr).or_insert(next),
                            addr: b.addr,
                            state: b.state,
                        }
                    })
                    .collect(),
            })
            .collect();
        ServiceList { entries }
    }

    /// The frontends as read back from the maps, with the service names the agent recorded
    /// for their ids.
    pub fn from_listed(listed: &[ListedFrontend], names: &BTreeMap<u16, ServiceName>) -> Self {
        let entries = listed
            .iter()
            .map(|f| ServiceEntry {
                id: u32::from(f.id),
                frontend: f.frontend,
                service: names.get(&f.id).cloned(),
                backends: f
                    .backends
                    .iter()
                    .map(|&(id, addr, state)| BackendEntry { id, addr, state })
                    .collect(),
            })
            .collect();
        ServiceList { entries }
    }

    /// The table: `ID  Frontend  Service Type  Backend`, one `N => addr (state)` line per
    /// backend.
    pub fn render(&self) -> String {
        let mut rows = vec![vec![
            "ID".to_owned(),
            "Frontend".to_owned(),
            "Service Type".to_owned(),
            "Backend".to_owned(),
        ]];
        for entry in &self.entries {
            let mut backends = entry
                .backends
                .iter()
                .map(|b| format!("{} => {} ({})", b.id, b.addr, b.state));
            rows.push(vec![
                entry.id.to_string(),
                entry.frontend.to_string(),
                entry.frontend.kind.to_string(),
                backends.next().unwrap_or_default(),
            ]);
            rows.extend(
                backends.map(|line| vec![String::new(), String::new(), String::new(), line]),
            );
        }
        table::render(&rows)
    }
}
