//! Errors of running the agent.

use std::path::PathBuf;

/// Why the agent could not start or apply a change.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Preparing the node failed.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// Loading, attaching or programming the datapath failed.
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    /// The agent's state file could not be read or written.
    #[error("{}: {detail}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

impl AgentError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.to_owned();
        move |e| AgentError::State {
            path,
            detail: e.to_string(),
        }
    }
}
