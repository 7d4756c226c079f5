//! Stopping long-running loops cleanly on Ctrl-C or SIGTERM: the handler only sets a flag, and
//! the loop (the agent's watch, `lbctl monitor`) checks it and leaves through its normal path,
//! so what it must undo on the way out is undone.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`requested`]. Without `SA_RESTART`, a blocking `poll` returns
/// `EINTR`, so the loop notices at once.
pub fn install_handlers() -> Result<(), nix::Error> {
    let action = SigAction::new(
        SigHandler::Handler(request_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
