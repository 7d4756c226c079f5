//! Translation for one node: the local Node object found among the cluster's objects, the
//! NodePort devices chosen among the node's devices, and every object translated with them.
//! The agent runs it on its store after each change; `lbctl`'s offline views run it on files.

use super::node::{DeviceSelection, NodeContext, NodeDevice};
use super::translate::{translate, ClusterObjects, LocalNode, Translation};
use super::translate_cache::TranslationCache;
use super::TranslateOptions;
use crate::config::AgentConfig;
use crate::source::ClusterStore;
use k8s_openapi::api::core::v1::Node;
use std::sync::Arc;

/// What a node programs, and the node and devices it was worked out for.
#[derive(Clone, Debug)]
pub struct NodeTranslation {
    /// The local node.
    pub node: NodeContext,
    /// NodePort devices and the direct-routing device.
    pub selection: DeviceSelection,
    /// The translation.
    pub translation: Translation,
}

/// The local node named on the command line is not among the Nodes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no Node named {name:?} among the objects; Nodes found: {}", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
pub struct NodeNotFound {
    /// The name asked for.
    pub name: String,
    /// The Nodes there are.
    pub available: Vec<String>,
}

/// Translates `objects` for the node `node_name` (the only Node when `None`) with these
/// devices.
pub fn translate_for_node(
    config: &AgentConfig,
    objects: &ClusterObjects,
    node_name: Option<&str>,
    devices: Vec<NodeDevice>,
) -> Result<NodeTranslation, NodeNotFound> {
    for_node(config, &objects.nodes, node_name, devices, |n, t| {
        translate(objects, n, t)
    })
}

/// [`translate_for_node`] of `store`'s objects through `cache`, which keeps what it worked out
/// for the next call and redoes only what changed since
/// ([`TranslationCache::translate_store`]): the agent translates this way after every change.
pub fn translate_for_node_store(
    config: &AgentConfig,
    store: &ClusterStore,
    node_name: Option<&str>,
    devices: Vec<NodeDevice>,
    cache: &mut TranslationCache,
) -> Result<NodeTranslation, NodeNotFound> {
    for_node(config, &store.shared_nodes(), node_name, devices, |n, t| {
        cache.translate_store(store, n, t)
    })
}

/// The local node and its devices worked out from `nodes`, and the objects translated for
/// them with `translate`.
fn for_node(
    config: &AgentConfig,
    nodes: &[Arc<Node>],
    node_name: Option<&str>,
    devices: Vec<NodeDevice>,
    translate: impl FnOnce(&LocalNode, &TranslateOptions) -> Translation,
) -> Result<NodeTranslation, NodeNotFound> {
    let node_object = match node_name {
        Some(name) => Some(
            nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(name))
                .ok_or_else(|| NodeNotFound {
                    name: name.to_owned(),
                    available: nodes
                        .iter()
                        .filter_map(|n| n.metadata.name.clone())
                        .collect(),
                })?,
        ),
        None if nodes.len() == 1 => nodes.first(),
        None => None,
    };
    let mut notes = Vec::new();
    let (node, node_errors) = match node_object {
        Some(n) => NodeContext::from_node(n, devices),
        None => {
            if nodes.len() > 1 {
                notes.push(format!(
                    "{} Nodes and no --node: the local node is unknown, so traffic-policy Local \
                     frontends get no backends and no hostPort is served",
                    nodes.len()
                ));
            }
            let ctx = NodeContext {
                name: node_name.unwrap_or_default().to_owned(),
                devices,
                ..NodeContext::default()
            };
            (ctx, Vec::new())
        }
    };
    let selection = node.select_devices(config.devices(), config.direct_routing_device());
    if selection.patterns_matched_nothing {
        let patterns: Vec<String> = config.devices().iter().map(ToString::to_string).collect();
        notes.push(format!(
            "devices={} matched no device of this node; auto-detected: {}",
            patterns.join(","),
            if selection.devices.is_empty() {
                "none".to_owned()
            } else {
                selection.devices.join(", ")
            }
        ));
    }
    let mut translation = translate(
        &LocalNode::new(&node, &selection),
        &TranslateOptions::from(config),
    );
    translation.errors.extend(node_errors);
    translation.warnings.extend(notes);
    Ok(NodeTranslation {
        node,
        selection,
        translation,
    })
}
