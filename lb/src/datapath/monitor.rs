//! Reading trace-sock events. Each monitor takes one of `MONITOR_SLOTS` slots, so every
//! monitor sees every event:
//!
//! - slot n has a pinned perf event array `lb_events_s<n>_v2`; the monitor installs one perf
//!   buffer per CPU in it through its own descriptor of the array, and the kernel removes them
//!   when that descriptor closes, also when the monitor is killed with SIGKILL (Linux 4.10;
//!   the programs send with `bpf_perf_event_output`, Linux 5.7 for cgroup sock_addr
//!   programs). Nothing is sent to a slot without buffers.
//! - `lb_monitor_v2[0]` has bit n set while slot n listens, so the hooks build events only
//!   when someone reads them.
//! - Slot n is owned by whoever holds an exclusive `flock` on the bpffs directory
//!   `<pin dir>/monitor/<n>`; the kernel releases it when the owner exits, however it exits.
//!   A bit whose slot lock can be taken belongs to a dead monitor: the next monitor and the
//!   agent's every pass ([`reclaim_monitor_slots`]) clear it. Changes to the bits are made
//!   under a lock on `<pin dir>/monitor` itself.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer};
use aya::maps::{Array, Map, MapData};
use ebpf::maps::{LbTraceRecord, LbTraceSock, LB_EVENTS_SLOTS, LB_MONITOR, MONITOR_SLOTS};
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::pin_paths::remove_if_present;
use super::DatapathError;

/// The bpffs directory, under the pin directory, of the monitor slots' locks.
pub const MONITOR_DIR: &str = "monitor";
/// Pages of each per-CPU buffer (64 KiB with 4 KiB pages: about 1 300 events).
const PAGES_PER_CPU: usize = 16;

/// A reader of the agent's trace events, listening in a slot of its own until dropped.
pub struct TraceMonitor {
    pin_dir: PathBuf,
    slot: usize,
    buffers: Vec<PerfEventArrayBuffer<MapData>>,
    lost: u64,
    /// Held for the monitor's life: the slot is ours while it is.
    _slot_lock: Flock<File>,
}

impl TraceMonitor {
    /// Takes a free slot of the maps pinned in `pin_dir` (clearing those of dead monitors on
    /// the way), installs its buffers and turns its bit on.
    pub fn open(pin_dir: &Path) -> Result<Self, DatapathError> {
        let dir = pin_dir.join(MONITOR_DIR);
        std::fs::create_dir_all(&dir).map_err(DatapathError::pin(&dir))?;
        let _bits = lock(&dir, FlockArg::LockExclusive)?.ok_or_else(|| busy(&dir))?;
        let mut switch = open_switch(pin_dir)?;
        let mut listening = reclaim(&dir, read_bits(&switch)?)?;
        let mut claimed = None;
        for slot in 0..MONITOR_SLOTS {
            if listening & bit(slot) != 0 {
                continue;
            }
            let path = slot_dir(&dir, slot);
            std::fs::create_dir_all(&path).map_err(DatapathError::pin(&path))?;
            if let Some(held) = lock(&path, FlockArg::LockExclusiveNonblock)? {
                claimed = Some((slot, held));
                break;
            }
        }
        let Some((slot, slot_lock)) = claimed else {
            write_bits(&mut switch, listening)?;
            return Err(DatapathError::MonitorSlotsTaken {
                slots: MONITOR_SLOTS,
            });
        };
        let name = LB_EVENTS_SLOTS[slot];
        let typed = |source| DatapathError::Map { map: name, source };
        let data = MapData::from_pin(pin_dir.join(name)).map_err(typed)?;
        let mut events = PerfEventArray::try_from(Map::PerfEventArray(data)).map_err(typed)?;
        let cpus = aya::util::online_cpus().map_err(|(path, e)| DatapathError::Pin {
            path: path.into(),
            detail: format!("reading the online CPUs: {e}"),
        })?;
        let buffers = cpus
            .into_iter()
            .map(|cpu| {
                events
                    .open(cpu, Some(PAGES_PER_CPU))
                    .map_err(|e| DatapathError::Pin {
                        path: pin_dir.join(name),
                        detail: format!("opening the perf buffer of CPU {cpu}: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        listening |= bit(slot);
        write_bits(&mut switch, listening)?;
        Ok(TraceMonitor {
            pin_dir: pin_dir.to_owned(),
            slot,
            buffers,
            lost: 0,
            _slot_lock: slot_lock,
        })
    }

    /// The slot this monitor listens in (0-based, of `MONITOR_SLOTS`).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Events the kernel dropped because this monitor's buffers were full.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The events that arrive within `timeout` (at least one, unless none arrives), in the
    /// order the hooks ran.
    pub fn next_events(&mut self, timeout: Duration) -> Result<Vec<LbTraceSock>, DatapathError> {
        let mut out = self.drain();
        if out.is_empty() {
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            let mut fds: Vec<PollFd<'_>> = self
                .buffers
                .iter()
                .map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => {
                    return Err(DatapathError::Pin {
                        path: self.pin_dir.join(LB_EVENTS_SLOTS[self.slot]),
                        detail: format!("waiting for events: {e}"),
                    })
                }
            }
            out = self.drain();
        }
        Ok(out)
    }

    fn drain(&mut self) -> Vec<LbTraceSock> {
        let mut records = Vec::new();
        let mut lost = 0;
        for buffer in &mut self.buffers {
            buffer.for_each(|event| match event {
                PerfEvent::Sample { head, tail } => {
                    let mut bytes = [0u8; size_of::<LbTraceRecord>()];
                    let mut got = 0;
                    for chunk in [head, tail] {
                        let n = chunk.len().min(bytes.len() - got);
                        bytes[got..got + n].copy_from_slice(&chunk[..n]);
                        got += n;
                    }
                    if got == bytes.len() {
                        // SAFETY: LbTraceRecord is Pod and `bytes` holds exactly its size;
                        // the read is unaligned-safe.
                        records.push(unsafe {
                            std::ptr::read_unaligned(bytes.as_ptr().cast::<LbTraceRecord>())
                        });
                    }
                }
                PerfEvent::Lost { count } => lost += count,
            });
        }
        self.lost += lost;
        records.sort_by_key(|r| r.ktime_ns);
        records.into_iter().map(|r| r.event).collect()
    }
}

impl std::fmt::Debug for TraceMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceMonitor")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Drop for TraceMonitor {
    /// Turns this slot's bit off; then the fields close the buffers (the kernel removes them
    /// from the array) and release the slot.
    fn drop(&mut self) {
        let dir = self.pin_dir.join(MONITOR_DIR);
        let Ok(Some(_bits)) = lock(&dir, FlockArg::LockExclusive) else {
            return; // the next monitor or the agent clears the bit
        };
        if let Ok(mut switch) = open_switch(&self.pin_dir) {
            if let Ok(listening) = read_bits(&switch) {
                let _ = write_bits(&mut switch, listening & !bit(self.slot));
            }
        }
    }
}

/// Clears the bits of monitors that are gone (killed, crashed) in the maps pinned in
/// `pin_dir`; returns how many. The agent calls it at every pass, so a killed monitor's bit
/// does not outlive it by more than a resync (its buffers are already gone: nothing is sent).
pub fn reclaim_monitor_slots(pin_dir: &Path) -> Result<usize, DatapathError> {
    let dir = pin_dir.join(MONITOR_DIR);
    let mut switch = open_switch(pin_dir)?;
    if !dir.exists() {
        // No monitor ever ran here, so no bit can be set; clear any a crash left.
        let listening = read_bits(&switch)?;
        write_bits(&mut switch, 0)?;
        return Ok(listening.count_ones() as usize);
    }
    let Some(_bits) = lock(&dir, FlockArg::LockExclusive)? else {
        return Ok(0);
    };
    let listening = read_bits(&switch)?;
    let kept = reclaim(&dir, listening)?;
    if kept != listening {
        write_bits(&mut switch, kept)?;
    }
    Ok((listening & !kept).count_ones() as usize)
}

/// Removes the slot lock directories under `pin_dir` (for `lbctl cleanup`); returns them.
pub fn remove_monitor_dirs(pin_dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    let dir = pin_dir.join(MONITOR_DIR);
    let mut removed = Vec::new();
    for slot in 0..MONITOR_SLOTS {
        remove_if_present(
            slot_dir(&dir, slot),
            |p| std::fs::remove_dir(p),
            &mut removed,
        )?;
    }
    remove_if_present(dir, |p| std::fs::remove_dir(p), &mut removed)?;
    Ok(removed)
}

/// `listening` without the bits whose slot lock nobody holds (their monitor is gone).
fn reclaim(dir: &Path, listening: u32) -> Result<u32, DatapathError> {
    let mut kept = listening;
    for slot in (0..MONITOR_SLOTS).filter(|s| listening & bit(*s) != 0) {
        let path = slot_dir(dir, slot);
        let dead = !path.exists() || lock(&path, FlockArg::LockExclusiveNonblock)?.is_some();
        if dead {
            kept &= !bit(slot);
        }
    }
    Ok(kept)
}

fn bit(slot: usize) -> u32 {
    1 << slot
}

fn slot_dir(dir: &Path, slot: usize) -> PathBuf {
    dir.join(slot.to_string())
}

/// An exclusive `flock` on the directory `path`; `None` when non-blocking and someone else
/// holds it.
fn lock(path: &Path, how: FlockArg) -> Result<Option<Flock<File>>, DatapathError> {
    let file = File::open(path).map_err(DatapathError::pin(path))?;
    match Flock::lock(file, how) {
        Ok(held) => Ok(Some(held)),
        Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(DatapathError::Pin {
            path: path.to_owned(),
            detail: format!("locking: {e}"),
        }),
    }
}

fn busy(dir: &Path) -> DatapathError {
    DatapathError::Pin {
        path: dir.to_owned(),
        detail: "the monitor slots' lock is held".into(),
    }
}

fn open_switch(pin_dir: &Path) -> Result<Array<MapData, u32>, DatapathError> {
    let typed = |source| DatapathError::Map {
        map: LB_MONITOR,
        source,
    };
    let data = MapData::from_pin(pin_dir.join(LB_MONITOR)).map_err(typed)?;
    Array::try_from(Map::Array(data)).map_err(typed)
}

fn read_bits(switch: &Array<MapData, u32>) -> Result<u32, DatapathError> {
    switch.get(&0, 0).map_err(|source| DatapathError::Map {
        map: LB_MONITOR,
        source,
    })
}

fn write_bits(switch: &mut Array<MapData, u32>, bits: u32) -> Result<(), DatapathError> {
    switch.set(0, bits, 0).map_err(|source| DatapathError::Map {
        map: LB_MONITOR,
        source,
    })
}
