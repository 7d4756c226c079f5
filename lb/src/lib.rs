//! `lb`: an eBPF service load balancer for Kubernetes nodes that replaces kube-proxy.
//!
//! This library holds what the agent (`lb-agent`) and the CLI (`lbctl`) share: the service
//! model, translation from Kubernetes objects, the agent's options, and Maglev.

pub mod agent;
pub mod config;
pub mod datapath;
pub mod exact;
pub mod health;
pub mod host;
pub mod k8s;
pub mod logging;
pub mod maglev;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod reconciler;
pub mod source;
pub mod stop;
pub mod views;
pub mod yaml;
