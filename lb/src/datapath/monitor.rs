//! Reading trace-sock events from the pinned ring buffer. While a [`TraceMonitor`] lives, the
//! programs' monitor switch is on; dropping it turns the switch off, so the hooks stop paying
//! for events nobody reads.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use aya::maps::{Array, Map, MapData, RingBuf};
use ebpf::maps::{LbTraceSock, LB_EVENTS, LB_MONITOR};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::DatapathError;

/// A reader of the agent's trace events.
pub struct TraceMonitor {
    switch: Array<MapData, u32>,
    events: RingBuf<MapData>,
}

impl TraceMonitor {
    /// Opens the maps pinned in `pin_dir` and turns tracing on.
    pub fn open(pin_dir: &Path) -> Result<Self, DatapathError> {
        let open = |name: &'static str| {
            MapData::from_pin(pin_dir.join(name))
                .map_err(|source| DatapathError::Map { map: name, source })
        };
        let typed = |name| move |source| DatapathError::Map { map: name, source };
        let mut switch: Array<MapData, u32> =
            Array::try_from(Map::Array(open(LB_MONITOR)?)).map_err(typed(LB_MONITOR))?;
        let events = RingBuf::try_from(Map::RingBuf(open(LB_EVENTS)?)).map_err(typed(LB_EVENTS))?;
        switch.set(0, 1, 0).map_err(typed(LB_MONITOR))?;
        Ok(TraceMonitor { switch, events })
    }

    /// The events that arrive within `timeout` (at least one, unless none arrives).
    pub fn next_events(&mut self, timeout: Duration) -> Result<Vec<LbTraceSock>, DatapathError> {
        let mut out = self.drain();
        if out.is_empty() {
            // SAFETY: the ring buffer's fd lives as long as self.events, beyond this call.
            let fd = unsafe { BorrowedFd::borrow_raw(self.events.as_raw_fd()) };
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => {
                    return Err(DatapathError::Pin {
                        path: LB_EVENTS.into(),
                        detail: format!("waiting for events: {e}"),
                    })
                }
            }
            out = self.drain();
        }
        Ok(out)
    }

    fn drain(&mut self) -> Vec<LbTraceSock> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() >= size_of::<LbTraceSock>() {
                // SAFETY: LbTraceSock is Pod and the item holds at least its size; the read
                // is unaligned-safe.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
            }
        }
        out
    }
}

impl std::fmt::Debug for TraceMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceMonitor").finish_non_exhaustive()
    }
}

impl Drop for TraceMonitor {
    fn drop(&mut self) {
        let _ = self.switch.set(0, 0, 0);
    }
}
