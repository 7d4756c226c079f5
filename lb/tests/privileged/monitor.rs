//! `lbctl monitor -t trace-sock` on the test's pinned maps: every monitor sees every event,
//! and a monitor killed with SIGKILL leaves tracing off.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use ebpf::maps::LB_MONITOR;
use lb::agent::AgentRecord;
use lb::datapath::TraceMonitor;
use lb::k8s::DeviceSelection;
use lb::views::{KprStatus, TraceSockEvent};
use libtest_mimic::Failed;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{child, run_child, setup, BOTH};

/// How long `lbctl monitor` may take to start or to stop.
const DEADLINE: Duration = Duration::from_secs(10);

/// A state directory with an agent record pointing at the test's pins, as `lbctl` reads it;
/// removed on drop.
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn new(test: &str, pin_dir: &Path, cgroup: &Path) -> Result<Self, Failed> {
        let dir = std::env::temp_dir().join(format!("lb-test-state-{}-{test}", std::process::id()));
        let config = lb::config::load(None, &[]).map_err(|e| format!("default options: {e}"))?;
        let selection = DeviceSelection {
            devices: Vec::new(),
            direct_routing: None,
            patterns_matched_nothing: false,
        };
        AgentRecord {
            pin_dir: pin_dir.to_owned(),
            cgroup: cgroup.to_owned(),
            links: Vec::new(),
            reserved_ports: None,
            status: KprStatus::new(&config, &selection),
            services: Default::default(),
            tc: Default::default(),
            nodeport: None,
            neighbours: Default::default(),
        }
        .write(&dir)?;
        Ok(StateDir(dir))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `lbctl monitor -t trace-sock`; killed on drop if still running.
struct Monitor {
    child: Child,
    stdout: Option<ChildStdout>,
}

impl Monitor {
    /// Starts it and returns once it says it is listening.
    fn start(state: &StateDir) -> Result<Self, Failed> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lbctl"))
            .args(["monitor", "-t", "trace-sock", "--state-dir"])
            .arg(&state.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().ok_or("stderr is piped")?;
        let monitor = Monitor { child, stdout };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut said = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
            Ok(Err(said)) => Err(format!("lbctl monitor exited before listening: {said}").into()),
            Err(_) => Err(format!("lbctl monitor did not listen within {DEADLINE:?}").into()),
        }
    }

    fn signal(&self, signal: Signal) -> Result<(), Failed> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, signal).map_err(|e| format!("cannot send {signal} to lbctl monitor: {e}"))?;
        Ok(())
    }

    /// Waits for it to exit, within the deadline.
    fn wait(&mut self) -> Result<std::process::ExitStatus, Failed> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!("lbctl monitor did not exit within {DEADLINE:?}").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it as Ctrl-C would and returns the events it printed.
    fn stop(mut self) -> Result<Vec<TraceSockEvent>, Failed> {
        self.signal(Signal::SIGINT)?;
        let status = self.wait()?;
        let mut text = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            stdout.read_to_string(&mut text)?;
        }
        if !status.success() {
            return Err(format!("lbctl monitor exited with {status}; it printed: {text}").into());
        }
        text.lines()
            .map(|line| {
                TraceSockEvent::parse(line)
                    .ok_or_else(|| format!("lbctl monitor printed {line:?}").into())
            })
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The subscribers the programs see: `lb_monitor`'s value, non-zero while any monitor
/// listens.
fn subscribers(pin_dir: &Path) -> Result<u32, Failed> {
    let data = MapData::from_pin(pin_dir.join(LB_MONITOR))?;
    let map: Array<MapData, u32> = Array::try_from(Map::Array(data))?;
    Ok(map.get(&0, 0)?)
}

/// Every kind of event a translated TCP connection with getpeername makes, once per
/// connection of `rounds` runs of the child.
fn expect_every_event(who: &str, events: &[TraceSockEvent], rounds: usize) -> Result<(), Failed> {
    let connections = rounds * child::ATTEMPTS;
    for kind in [
        "pre-xlate-fwd",
        "post-xlate-fwd",
        "pre-xlate-rev",
        "post-xlate-rev",
    ] {
        let seen = events.iter().filter(|e| e.kind == kind).count();
        if seen != connections {
            return Err(format!(
                "{who} saw {seen} {kind} events of {connections} connections ({} events in all)",
                events.len()
            )
            .into());
        }
    }
    Ok(())
}

/// Two monitors at once: each prints all four events of every connection made while it runs,
/// even when one reads later than the other (stopped during the traffic, as one piped into a
/// pager may be), and one stopping does not stop the other.
pub fn two_monitors_each_see_every_event() -> Result<(), Failed> {
    let (_lb, cgroup, bpffs) = setup("monitors", BOTH)?;
    let state = StateDir::new("monitors", &bpffs.path, &cgroup.path)?;
    let first = Monitor::start(&state)?;
    let second = Monitor::start(&state)?;
    second.signal(Signal::SIGSTOP)?;
    let traffic = run_child("tcp", &cgroup.path);
    second.signal(Signal::SIGCONT)?;
    traffic?;
    let a = first.stop()?;
    run_child("tcp", &cgroup.path)?;
    let b = second.stop()?;
    expect_every_event("the first monitor", &a, 1)?;
    expect_every_event("the second monitor", &b, 2)?;
    let left = subscribers(&bpffs.path)?;
    if left != 0 {
        return Err(format!("after both monitors stopped, lb_monitor still says {left:#x}").into());
    }
    Ok(())
}

/// A monitor killed with SIGKILL cannot turn tracing off itself: the programs must not keep
/// sending events nobody reads, and the next monitor clears its subscription.
pub fn a_killed_monitor_leaves_tracing_off() -> Result<(), Failed> {
    let (_lb, cgroup, bpffs) = setup("monitor-kill", BOTH)?;
    let state = StateDir::new("monitor-kill", &bpffs.path, &cgroup.path)?;
    let mut killed = Monitor::start(&state)?;
    killed.signal(Signal::SIGKILL)?;
    killed.wait()?;
    // Connections while nobody listens.
    run_child("tcp", &cgroup.path)?;
    // The next monitor sees nothing of them, and once it is gone nobody is subscribed.
    let mut next = TraceMonitor::open(&bpffs.path)?;
    let stale = next.next_events(Duration::ZERO)?;
    if !stale.is_empty() {
        return Err(format!(
            "the programs kept sending events after the monitor was killed: the next monitor \
             found {} queued",
            stale.len()
        )
        .into());
    }
    drop(next);
    let left = subscribers(&bpffs.path)?;
    if left != 0 {
        return Err(format!("after the next monitor, lb_monitor still says {left:#x}").into());
    }
    // Without a next monitor, the agent's pass clears it; a live monitor's bit stays.
    let live = Monitor::start(&state)?;
    let mut killed = Monitor::start(&state)?;
    killed.signal(Signal::SIGKILL)?;
    killed.wait()?;
    if subscribers(&bpffs.path)?.count_ones() != 2 {
        return Err("two monitors started, but lb_monitor does not show two".into());
    }
    let cleared = lb::datapath::reclaim_monitor_slots(&bpffs.path)?;
    let left = subscribers(&bpffs.path)?;
    if cleared != 1 || left.count_ones() != 1 {
        return Err(format!(
            "the agent's pass cleared {cleared} slots and left {left:#x}: expected the killed \
             monitor's slot cleared and the live one's kept"
        )
        .into());
    }
    run_child("tcp", &cgroup.path)?;
    expect_every_event("the live monitor", &live.stop()?, 1)
}
