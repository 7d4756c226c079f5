//! Rendering what the agent would program from files alone: options, Kubernetes YAML and the
//! node's devices given on the command line, for `lbctl`'s views without an agent.

use std::path::PathBuf;
use std::str::FromStr;

use crate::config::{self, AgentConfig, ConfigErrors};
use crate::k8s::manifests::{self, ManifestError, Manifests};
use crate::k8s::{self, DeviceSelection, NodeContext, NodeDevice, NodeTranslation, Translation};

/// The files and flags an offline rendering starts from.
#[derive(Clone, Debug, Default)]
pub struct OfflineInputs {
    /// Helm-style values file.
    pub values: Option<PathBuf>,
    /// `--set` flags, in order.
    pub sets: Vec<String>,
    /// Directory of Kubernetes YAML.
    pub manifests: Option<PathBuf>,
    /// The local node's name; defaults to the only Node in the manifests.
    pub node: Option<String>,
    /// The local node's devices.
    pub devices: Vec<DeviceArg>,
}

/// `--device NAME=IP[,IP…]`: a device of the local node with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceArg(pub NodeDevice);

impl FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = "expected NAME=IP[,IP…], e.g. eth0=192.168.178.29";
        let (name, addrs) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid device {s:?}: {expected}"))?;
        let name: config::DevicePattern = name
            .parse()
            .map_err(|e| format!("invalid device name {name:?}: {e}"))?;
        let config::DevicePattern::Name(name) = name else {
            return Err(format!(
                "invalid device {s:?}: a device is a name, not a wildcard; {expected}"
            ));
        };
        let addrs = addrs
            .split(',')
            .map(|a| {
                a.trim()
                    .parse()
                    .map_err(|_| format!("invalid address {a:?} for device {name}: {expected}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(DeviceArg(NodeDevice { name, addrs }))
    }
}

/// What the agent would program.
#[derive(Debug)]
pub struct OfflineView {
    /// The validated options.
    pub config: AgentConfig,
    /// The local node.
    pub node: NodeContext,
    /// NodePort devices and the direct-routing device.
    pub selection: DeviceSelection,
    /// The translation of the manifests.
    pub translation: Translation,
    /// Files or documents that could not be read.
    pub manifest_errors: Vec<ManifestError>,
    /// Kinds present in the manifests but not used.
    pub skipped_kinds: Vec<String>,
}

/// Why an offline rendering could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The options are invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The manifests directory could not be read.
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    /// `--node` names no Node in the manifests.
    #[error(transparent)]
    NodeNotFound(#[from] k8s::NodeNotFound),
}

/// Loads the options and manifests and translates them for the local node.
pub fn render(inputs: &OfflineInputs) -> Result<OfflineView, OfflineError> {
    let config = config::load(inputs.values.as_deref(), &inputs.sets)?;
    let loaded = match &inputs.manifests {
        Some(dir) => manifests::load_dir(dir)?,
        None => Manifests::default(),
    };
    let devices: Vec<NodeDevice> = inputs.devices.iter().map(|d| d.0.clone()).collect();
    let NodeTranslation {
        node,
        selection,
        translation,
    } = k8s::translate_for_node(&config, &loaded.objects, inputs.node.as_deref(), devices)?;
    Ok(OfflineView {
        config,
        node,
        selection,
        translation,
        manifest_errors: loaded.errors,
        skipped_kinds: loaded.skipped_kinds,
    })
}

impl OfflineView {
    /// Every problem with the inputs, one line each, for stderr.
    pub fn problems(&self) -> Vec<String> {
        self.manifest_errors
            .iter()
            .map(|e| format!("error: {e}"))
            .chain(
                self.translation
                    .errors
                    .iter()
                    .map(|e| format!("error: {e}")),
            )
            .chain(
                self.config
                    .warnings()
                    .iter()
                    .map(|w| format!("warning: {w}")),
            )
            .chain(
                self.translation
                    .warnings
                    .iter()
                    .map(|w| format!("warning: {w}")),
            )
            .collect()
    }

    /// Whether some file, document or object was rejected.
    pub fn has_errors(&self) -> bool {
        !self.manifest_errors.is_empty() || !self.translation.errors.is_empty()
    }
}
