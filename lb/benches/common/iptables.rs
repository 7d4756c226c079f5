//! kube-proxy-style rules for the benches' reference: one `iptables-restore` into a node's
//! `nat` table, and the conntrack setting that keeps a connection-heavy bench's table small.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netsim::Place;

/// The restore binary: Debian's `iptables` package, nftables backend.
pub const IPTABLES_RESTORE: &str = "iptables-nft-restore";

/// Loads `rules` (an `iptables-restore` file) in `place` with one `iptables-restore`, waiting
/// at most `deadline`; returns how many rules (`-A` lines) it held.
pub fn restore(place: &Place, rules: String, deadline: Duration) -> Result<usize> {
    let count = rules.lines().filter(|l| l.starts_with("-A ")).count();
    let mut cmd = Command::new(IPTABLES_RESTORE);
    cmd.arg("-w")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = place.spawn(cmd)?;
    let mut stdin = process.child_mut().stdin.take().context("stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(rules.as_bytes()));
    let output = process.output(deadline)?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the rule writer panicked"))?
        .context("writing the rules to iptables-restore")?;
    if !output.status.success() {
        bail!(
            "{IPTABLES_RESTORE} in {} exited with {}: {}",
            place.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(count)
}

/// Closed connections' conntrack entries would otherwise wait 120 s in TIME_WAIT; the table
/// is shared by every namespace of the machine, so a bench keeps its own small.
pub fn shorten_time_wait(place: &Place) -> Result<()> {
    set_sysctl(
        place,
        "net/netfilter/nf_conntrack_tcp_timeout_time_wait",
        "1",
    )
}

/// Writes `value` to `/proc/sys/<key>` inside `place`'s namespace.
pub fn set_sysctl(place: &Place, key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    place
        .in_netns(|| std::fs::write(&path, value))?
        .with_context(|| format!("writing {value} to {} in {}", path.display(), place.name()))
}
