//! The static source: Kubernetes YAML in a directory (Service, EndpointSlice, Pod, Node),
//! translated for this node with its live devices, and followed with inotify so an edit,
//! a new file or a deleted file is programmed within moments.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::AgentError;
use crate::offline::{self, DeviceArg, OfflineError, OfflineInputs, OfflineView};

/// How long the directory must stay quiet before a batch of changes is read: an editor's
/// save or a `cp` of several files becomes one reload.
const SETTLE: Duration = Duration::from_millis(100);

/// A manifest directory and the options to translate it with.
#[derive(Debug)]
pub struct ManifestSource {
    inputs: OfflineInputs,
    inotify: Inotify,
}

impl ManifestSource {
    /// Watches `dir`; `values`, `sets` and `node` are as for `lb-agent`.
    pub fn new(
        values: Option<PathBuf>,
        sets: Vec<String>,
        dir: &Path,
        node: Option<String>,
    ) -> Result<Self, AgentError> {
        let watch_failed = |e: nix::Error| AgentError::State {
            path: dir.to_owned(),
            detail: format!("cannot watch the manifest directory: {e}"),
        };
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(watch_failed)?;
        inotify
            .add_watch(
                dir,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_CREATE,
            )
            .map_err(watch_failed)?;
        Ok(ManifestSource {
            inputs: OfflineInputs {
                values,
                sets,
                manifests: Some(dir.to_owned()),
                node,
                devices: Vec::new(),
            },
            inotify,
        })
    }

    /// Reads and translates the directory for this node, whose devices are the ones in the
    /// agent's network namespace now.
    pub fn load(&self) -> Result<Result<OfflineView, OfflineError>, AgentError> {
        let devices = crate::host::local_devices()?
            .into_iter()
            .map(DeviceArg)
            .collect();
        Ok(offline::render(&OfflineInputs {
            devices,
            ..self.inputs.clone()
        }))
    }

    /// Waits up to `timeout` for the directory to change, then for it to settle. Returns
    /// whether it changed.
    pub fn wait_for_change(&self, timeout: Duration) -> Result<bool, AgentError> {
        if !self.wait_readable(timeout)? {
            return Ok(false);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            self.drain();
            if Instant::now() >= deadline || !self.wait_readable(SETTLE)? {
                return Ok(true);
            }
        }
    }

    fn wait_readable(&self, timeout: Duration) -> Result<bool, AgentError> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(nix::Error::EINTR) => Ok(false),
            Err(e) => Err(AgentError::State {
                path: self.inputs.manifests.clone().unwrap_or_default(),
                detail: format!("waiting for changes: {e}"),
            }),
        }
    }

    fn drain(&self) {
        while matches!(self.inotify.read_events(), Ok(events) if !events.is_empty()) {}
    }
}
