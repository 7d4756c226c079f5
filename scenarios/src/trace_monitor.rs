//! The kernel backend's view of trace-sock events: the real `lbctl monitor -t trace-sock`
//! following a node's pinned maps, as an operator runs it, and its printed lines read back.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lb::views::TraceSockEvent;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long `lbctl monitor` may take to start or to stop.
const DEADLINE: Duration = Duration::from_secs(10);

/// A running `lbctl monitor -t trace-sock`; killed on drop if still running.
#[derive(Debug)]
pub struct MonitorProcess {
    child: Child,
    stdout: Option<ChildStdout>,
}

impl MonitorProcess {
    /// Starts the monitor on the node whose agent records its state in `state_dir`, and
    /// returns once it says it is listening (tracing is on from then).
    pub fn start(state_dir: &Path) -> Result<Self> {
        let lbctl = netsim::binary_path("lbctl")?;
        let mut child = Command::new(lbctl)
            .args(["monitor", "-t", "trace-sock", "--state-dir"])
            .arg(state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start lbctl monitor")?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut monitor = MonitorProcess { child, stdout };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut said = String::new();
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if line.starts_with("Listening for trace-sock events") {
                    let _ = tx.send(Ok(()));
                    return;
                }
                said.push_str(&line);
                said.push('\n');
            }
            let _ = tx.send(Err(said));
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(Ok(())) => Ok(monitor),
            Ok(Err(said)) => bail!("lbctl monitor exited before listening: {said}"),
            Err(_) => {
                let _ = monitor.child.kill();
                bail!("lbctl monitor did not start listening within {DEADLINE:?}")
            }
        }
    }

    /// Stops it as Ctrl-C would and returns every event it printed.
    pub fn stop(mut self) -> Result<Vec<TraceSockEvent>> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("pid")?);
        kill(pid, Signal::SIGINT).context("cannot signal lbctl monitor")?;
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("lbctl monitor did not stop within {DEADLINE:?} of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut text = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            stdout.read_to_string(&mut text)?;
        }
        if !status.success() {
            bail!("lbctl monitor exited with {status}; it printed: {text}");
        }
        text.lines()
            .map(|line| {
                TraceSockEvent::parse(line).with_context(|| {
                    format!("lbctl monitor printed a line it should not: {line:?}")
                })
            })
            .collect()
    }
}

impl Drop for MonitorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
