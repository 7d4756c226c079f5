//! The binaries' log output: `tracing` events as text lines on stderr, filtered by `RUST_LOG`
//! (`info` by default), in colour only when a person is likely to read them on a terminal.
//!
//! A DaemonSet's log, a file or a pipe to another program gets plain text: colour codes there
//! only garble `kubectl logs`, `grep` and log collectors. `NO_COLOR` (<https://no-color.org>)
//! turns colour off on a terminal too.

use std::ffi::OsStr;
use std::io::IsTerminal;

/// Sends the process's `tracing` events to stderr (see the module documentation).
pub fn init_stderr() {
    let colour = colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

/// Whether to colour the log: only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (as the convention says).
pub fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(
            colour_wanted(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is as if unset"
        );
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None), "a file or a pipe");
        assert!(!colour_wanted(false, Some(OsStr::new("1"))));
    }
}
