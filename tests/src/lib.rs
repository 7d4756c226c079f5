//! End-to-end testing against a real Kubernetes API server.
//!
//! Debian has no kube-apiserver binary, so `cargo xtask apiserver` builds a small one
//! (`tests/apiserver/`, Go) on Kubernetes' server library as Debian packages it, and fetches
//! Debian's `kubectl`; [`build`] says where they are. [`ApiServer`] runs one for a test and
//! [`Kubectl`] drives it the way an operator would; `agent::ApiAgent` (feature `agent`, on by
//! default) runs `lb-agent` on a netsim node watching it.

#[cfg(feature = "agent")]
pub mod agent;
pub mod build;
mod server;

pub use server::{ApiServer, Kubectl, Watch};
