//! Ctrl-C and SIGTERM as a request to stop: the handler only sets a flag, and the demo checks
//! it between steps and while it waits, so the topology is always taken down through the normal
//! path (agents' `lbctl cleanup`, then the topology dropped) instead of the process dying with
//! namespaces, cgroups and pinned programs left behind.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`requested`].
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("sigaction({signal})"))?;
    }
    Ok(())
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Fails when a stop was requested, so `?` unwinds to the cleanup.
pub fn check() -> Result<()> {
    if requested() {
        bail!("interrupted by a signal");
    }
    Ok(())
}
