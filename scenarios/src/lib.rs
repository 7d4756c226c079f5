//! The documents' scenarios, replayed: a scenario file (YAML) describes a topology, the
//! agent's options, Kubernetes objects and steps with what a user would observe; the runner
//! replays it on a backend, the simulator (`sim`) or the real kernel (`kernel`), and the same
//! file must pass on both.

pub mod features;
mod files;
pub mod kernel_world;
pub mod report;
pub mod runner;
pub mod sim_net;
pub mod sim_world;
pub mod spec;
mod trace_monitor;
pub mod world;

pub use spec::Scenario;
pub use world::{Answer, CallError, World};
