//! Differential tests: the socket-level programs on the host kernel against the simulator
//! (`lb::datapath::sim`), which must make the same decisions over the same maps.
//!
//! proptest generates services (every type, TCP and UDP, IPv4 and IPv6, up to four backends on
//! loopback, some terminating, some with session affinity of a 1 s or a 10 min timeout,
//! sometimes an internal-scope twin), the programs' switches, and a sequence of socket calls,
//! reconciles and waits (real time passing beyond the short timeout). Each case loads its own
//! copy of the programs with those switches, pins them in a directory of the test's bpffs,
//! attaches them to the test's cgroup, and writes the maps with `MapContents::build` and
//! `ServiceMaps::apply`, as the agent does. Two child processes, the clients, each in that
//! cgroup and in a fresh network namespace of its own (loopback and the node addresses only, so
//! untranslated traffic cannot leave the machine) start a backend on every backend address,
//! each answering with its own address, and make the calls one by one. The simulator's clock
//! follows the real one (see `Clock`); a case whose affinity expiry falls inside a call's own
//! duration ends there, since which way the kernel went cannot be told. After each call the
//! simulator replays it and must agree:
//!
//! - the backend that answered is one the simulator could have chosen (exactly the one when
//!   session affinity pins it or there is one candidate), and the simulator then follows the
//!   kernel's choice so that both carry the same affinity and reverse state on;
//! - what the application saw (getpeername, the recvfrom source) is what the simulator shows;
//! - failures agree: EPERM from bind exactly when the simulator refuses, ECONNREFUSED when the
//!   simulator's destination has no listener on a local address, ENETUNREACH when it is not
//!   local;
//! - the trace-sock events of the call are the simulator's, field by field (but the CPU).
//!
//! A mismatch names the step, the call, the configuration, the maps and both answers.
//! `LB_DIFFERENTIAL_SEED=<n>` replays a run; the seed is printed when the run starts. Without
//! root the test is reported as ignored; under `CI=true` it fails instead.
//!
//! A second trial (`differential/affinity.rs`) checks what single random choices cannot show:
//! that affinity is per client and per port, and that it expires.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use ebpf::maps::LbTraceSock;
use lb::config::Protocols;
use lb::datapath::sim::{SimConfig, SockCall, SockSim};
use lb::datapath::{MapContents, SockLb, SockLbConfig, TraceMonitor};
use lb::model::L4Protocol;
use lb::views::TraceSockEvent;
use libtest_mimic::Failed;
use nix::errno::Errno;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use support::{TestBpffs, TestCgroup};

#[path = "differential/affinity.rs"]
mod affinity;
#[path = "differential/case.rs"]
mod case;
#[path = "differential/child.rs"]
mod child;
mod support;
#[path = "differential/wire.rs"]
mod wire;

use case::{Case, HostNs, Services, Step, Style};
use wire::{Call, Report, Stage};

/// Set in the child process (to any value).
const CHILD_ROLE: &str = "LB_DIFFERENTIAL_TEST_CHILD";
/// A node address: on the child's loopback, and in `lb_local_addrs` when a case says so.
pub const NODE_ADDR4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The IPv6 node address.
pub const NODE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// Cases per run: each loads the programs and starts a child, about a tenth of a second.
const CASES: u32 = 32;
/// Replays a run's cases.
const SEED_ENV: &str = "LB_DIFFERENTIAL_SEED";
/// Prints every case's steps, to see what a run covers.
const VERBOSE_ENV: &str = "LB_DIFFERENTIAL_VERBOSE";

fn main() {
    if std::env::var_os(CHILD_ROLE).is_some() {
        child::run();
        return;
    }
    support::run_tier(
        "differential",
        vec![
            (
                "sock_lb::socket_calls_agree_with_the_simulator",
                socket_calls_agree,
            ),
            (
                "sock_lb::affinity_is_per_client_and_port_and_expires",
                affinity_expires,
            ),
        ],
    );
}

/// What every case of a run shares.
struct Env {
    cgroup: TestCgroup,
    cgroup_id: u64,
    bpffs: TestBpffs,
    /// The cookie of the namespace this process runs in: the initial one on a plain host. The
    /// simulator needs it for `cfg_host_netns_cookie == 0`; when this process is not in the
    /// initial namespace, it is still not the child's, which is all that matters here.
    initial_netns: u64,
    cases: Cell<usize>,
    calls: Cell<usize>,
    /// How often each kind of outcome was seen, to show what a run covered.
    seen: RefCell<BTreeMap<&'static str, usize>>,
}

impl Env {
    fn new(test: &str) -> Result<Self, Failed> {
        let cgroup = TestCgroup::new(test)?;
        Ok(Env {
            cgroup_id: cgroup.id()?,
            cgroup,
            bpffs: TestBpffs::new(test)?,
            initial_netns: lb::host::own_netns_cookie()?.cookie_for_bpf(),
            cases: Cell::new(0),
            calls: Cell::new(0),
            seen: RefCell::new(BTreeMap::new()),
        })
    }
}

fn affinity_expires() -> Result<(), Failed> {
    let env = Env::new("differential-affinity")?;
    affinity::run(&env).map_err(Failed::from)
}

/// The run's seed: `LB_DIFFERENTIAL_SEED` when set (to replay a run), else the clock.
fn seed() -> u64 {
    support::seed("differential", SEED_ENV)
}

fn socket_calls_agree() -> Result<(), Failed> {
    let env = Env::new("differential")?;
    let seed = seed();
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        // Each shrink step is a real case: bound them so a failure reports in a minute.
        max_shrink_iters: 64,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let started = Instant::now();
    let result = runner.run(&case::case(), |case| {
        run_case(&case, &env).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {
            eprintln!(
                "differential: {} cases, {} socket calls, {:.1?} ({SEED_ENV}={seed})\n  seen: {:?}",
                env.cases.get(),
                env.calls.get(),
                started.elapsed(),
                env.seen.borrow()
            );
            Ok(())
        }
        Err(TestError::Fail(why, case)) => Err(format!(
            "the kernel and the simulator disagree.\n{why}\nminimal case: {case:#?}\n\
             replay with {SEED_ENV}={seed}"
        )
        .into()),
        Err(TestError::Abort(why)) => Err(format!("aborted: {why} ({SEED_ENV}={seed})").into()),
    }
}

/// The child of one case: its namespace's cookie, and one line each way per call.
struct Child {
    process: std::process::Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    netns: u64,
}

impl Child {
    fn start(cgroup: &Path) -> Result<Self, String> {
        let mut cmd =
            support::sandboxed_child(CHILD_ROLE, "1", cgroup).map_err(|e| format!("{e:?}"))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut process = cmd
            .spawn()
            .map_err(|e| format!("cannot start the child: {e}"))?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().ok_or("the child has no stdout")?;
        let mut child = Child {
            process,
            stdin,
            stdout: BufReader::new(stdout),
            netns: 0,
        };
        let line = child.line()?;
        child.netns = line
            .strip_prefix("ready ")
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("the child did not get ready: {line:?}"))?;
        Ok(child)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the child exited early (its stderr is above)".into()),
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(format!("reading from the child: {e}")),
        }
    }

    fn call(&mut self, call: &Call) -> Result<Report, String> {
        let stdin = self.stdin.as_mut().ok_or("the child's stdin is closed")?;
        let json = serde_json::to_string(call).map_err(|e| e.to_string())?;
        writeln!(stdin, "{json}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to the child: {e}"))?;
        let line = self.line()?;
        serde_json::from_str(&line).map_err(|e| format!("the child's answer {line:?}: {e}"))
    }

    /// Closes the child's input, which ends it, and waits for it.
    fn finish(mut self) -> Result<(), String> {
        self.stdin = None;
        let status = self.process.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the child failed ({status})"))
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // After finish() this finds the process reaped; after a failure it ends it, so the
        // test cgroup can be removed.
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// A case's programs and maps, pinned in a directory of the test's bpffs. Dropping it closes
/// them and unpins everything, which detaches the programs (their links were only held by the
/// pins) and frees the maps, so the next case starts from empty maps.
struct CaseDatapath {
    lb: Option<SockLb>,
    monitor: Option<TraceMonitor>,
    dir: PathBuf,
}

impl CaseDatapath {
    fn load(dir: PathBuf, config: SockLbConfig, cgroup: &Path) -> Result<Self, String> {
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut out = CaseDatapath {
            lb: None,
            monitor: None,
            dir,
        };
        let mut lb = SockLb::load(config, &out.dir).map_err(|e| format!("loading: {e}"))?;
        lb.attach(cgroup).map_err(|e| format!("attaching: {e}"))?;
        out.lb = Some(lb);
        out.monitor = Some(TraceMonitor::open(&out.dir).map_err(|e| format!("monitor: {e}"))?);
        Ok(out)
    }

    fn lb(&mut self) -> &mut SockLb {
        self.lb.as_mut().expect("loaded")
    }

    fn apply(&mut self, want: &MapContents) -> Result<(), String> {
        self.lb()
            .service_maps()
            .and_then(|mut maps| maps.apply(want))
            .map(drop)
            .map_err(|e| format!("writing the maps: {e}"))
    }

    /// The events sent so far. The programs send them during the syscalls, which have
    /// returned, so nothing is in flight and a poll without waiting sees them all.
    fn events(&mut self) -> Result<Vec<LbTraceSock>, String> {
        let monitor = self.monitor.as_mut().expect("opened");
        let mut out = Vec::new();
        loop {
            let got = monitor
                .next_events(Duration::ZERO)
                .map_err(|e| format!("reading events: {e}"))?;
            if got.is_empty() {
                return Ok(out);
            }
            out.extend(got);
        }
    }
}

impl Drop for CaseDatapath {
    fn drop(&mut self) {
        self.monitor = None;
        self.lb = None;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: cannot unpin {}: {e}", self.dir.display());
        }
    }
}

/// Runs one case on the kernel and the simulator; the error says where they disagree.
fn run_case(case: &Case, env: &Env) -> Result<(), String> {
    let n = env.cases.get();
    env.cases.set(n + 1);
    let mut services = Services::new(&case.services);
    // Two clients, each in a namespace of its own: affinity is per client.
    let mut children = [
        Child::start(&env.cgroup.path)?,
        Child::start(&env.cgroup.path)?,
    ];
    let host_netns_cookie = match case.config.host {
        HostNs::Initial => 0,
        HostNs::Child => children[0].netns,
        HostNs::Other => children[0].netns.wrapping_add(1_000_003),
    };
    let config = SockLbConfig {
        protocols: Protocols {
            tcp: case.config.tcp,
            udp: case.config.udp,
        },
        map_max: 1024,
        host_namespace_only: case.config.host_namespace_only,
        bind_protection: case.config.bind_protection,
        host_netns_cookie,
        external_ip_mitigation: case.config.external_ip_mitigation,
        netns_cookies: case.config.netns_cookies,
        sock_v6only: case.config.sock_v6only,
        conn_slots: case.config.conn_slots,
    };
    let mut datapath = CaseDatapath::load(
        env.bpffs.path.join(format!("case-{n}")),
        config,
        &env.cgroup.path,
    )?;
    let want = MapContents::build(&services.desired(), &MapContents::default())
        .map_err(|e| format!("laying out the maps: {e}"))?;
    datapath.apply(&want)?;
    let node_addrs: Vec<IpAddr> = if case.config.node_addrs_listed {
        vec![NODE_ADDR4.into(), NODE_ADDR6.into()]
    } else {
        Vec::new()
    };
    datapath
        .lb()
        .set_local_addresses(&node_addrs)
        .map_err(|e| format!("writing lb_local_addrs: {e}"))?;
    let mut sim = SockSim::new(SimConfig::of(&config, env.initial_netns), want);
    sim.set_local_addresses(&node_addrs);
    sim.set_monitor(true);

    let mut replay = Replay {
        sim,
        listeners: BTreeSet::new(),
        kept: Vec::new(),
        log: Vec::new(),
        seen: Vec::new(),
        netns: [children[0].netns, children[1].netns],
        cgroup_id: env.cgroup_id,
        clock: Clock::new(),
        header: format!(
            "config: {config:?} (client netns {} and {}), node addresses listed: {}",
            children[0].netns, children[1].netns, case.config.node_addrs_listed
        ),
    };
    for (protocol, addr) in services.backends() {
        replay.listen(&mut children, protocol, addr)?;
    }
    for (i, step) in case.steps.iter().enumerate() {
        let (client, call) = match *step {
            Step::Send(t, style) => {
                let target = services.target(t);
                let call = match services.style(t, style) {
                    Style::Tcp => Call::TcpConnect(target),
                    Style::UdpConnect => Call::UdpConnect(target),
                    _ => Call::UdpSendTo(target),
                };
                (usize::from(t.second_client), call)
            }
            Step::Bind(b) => {
                let (protocol, local, v6only) = services.bind_at(b);
                (0, Call::Bind(protocol, local, v6only))
            }
            Step::PeerName(k) if !replay.kept.is_empty() => {
                let (client, index, _, _) = replay.kept[k % replay.kept.len()];
                (client, Call::PeerName(index))
            }
            Step::PeerName(_) => continue,
            Step::Wait => {
                std::thread::sleep(case::WAIT);
                replay.log.push(format!("step {i}: wait {:?}", case::WAIT));
                replay.seen.push("wait");
                continue;
            }
            Step::Reconcile(change) => {
                if let Some((protocol, addr)) = services.change(change) {
                    replay.listen(&mut children, protocol, addr)?;
                }
                let want = MapContents::build(&services.desired(), replay.sim.maps())
                    .map_err(|e| format!("laying out the maps: {e}"))?;
                datapath.apply(&want)?;
                replay.sim.set_maps(want);
                replay.log.push(format!("step {i}: reconcile {change:?}"));
                replay.seen.push("reconcile");
                continue;
            }
        };
        let window = replay.clock.start(&mut replay.sim);
        let kernel = children[client].call(&call)?;
        let window = replay.clock.end(window);
        env.calls.set(env.calls.get() + 1);
        if let Some((Stage::Socket | Stage::Listen, errno)) = kernel.error {
            return Err(format!(
                "step {i}: the child could not set up {call:?}: errno {errno}"
            ));
        }
        if let Some(why) = replay.undecidable(client, &call, window) {
            // Machine noise put an affinity entry's expiry inside a call: which way the kernel
            // went cannot be told, so the rest of the case says nothing.
            eprintln!("case {n}, step {i}: {why}; the case ends here");
            replay.seen.push("ended: expiry within a call");
            break;
        }
        let verdict = replay.check(client, &call, &kernel);
        let events = datapath.events()?;
        let verdict = verdict.and_then(|()| replay.check_events(events));
        if let Err(why) = verdict {
            return Err(format!(
                "step {i}: {call:?}\n{why}\n{}\nmaps:\n{}earlier steps:\n{}",
                replay.header,
                describe(replay.sim.maps()),
                replay.log.join("\n")
            ));
        }
        replay
            .log
            .push(format!("step {i}: client {client} {call:?} -> {kernel}"));
    }
    if std::env::var_os(VERBOSE_ENV).is_some() {
        eprintln!(
            "case {n}: {}\nmaps:\n{}{}\n",
            replay.header,
            describe(replay.sim.maps()),
            replay.log.join("\n")
        );
    }
    let mut seen = env.seen.borrow_mut();
    for kind in replay.seen {
        *seen.entry(kind).or_default() += 1;
    }
    drop(seen);
    drop(datapath);
    let [first, second] = children;
    first.finish()?;
    second.finish()
}

/// The kernel's clock (`bpf_ktime_get_ns`) as the test sees it: every call runs within a window
/// of elapsed nanoseconds, and the simulator's clock is set to the window's start before it
/// replays the call, so an affinity entry's last use in the simulator is the start of the
/// window of the call that made it, and in the kernel a moment within that window.
struct Clock {
    started: Instant,
    /// The simulator's clock.
    sim_now: u64,
    /// End of each call's window, by its start.
    windows: BTreeMap<u64, u64>,
}

/// A call's window: elapsed nanoseconds at its start and end.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

impl Clock {
    fn new() -> Self {
        Clock {
            started: Instant::now(),
            sim_now: 0,
            windows: BTreeMap::new(),
        }
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A call starts: the simulator's clock moves to now.
    fn start(&mut self, sim: &mut SockSim) -> u64 {
        let now = self.elapsed().max(self.sim_now);
        sim.advance_clock(Duration::from_nanos(now - self.sim_now));
        self.sim_now = now;
        now
    }

    /// The call that started at `start` has returned.
    fn end(&mut self, start: u64) -> Window {
        let end = self.elapsed();
        self.windows.insert(start, end);
        Window { start, end }
    }
}

/// The simulator's side of a case, and what it needs to know about the child's.
struct Replay {
    sim: SockSim,
    /// Every address a backend listens on (canonical: IPv4 as IPv4).
    listeners: BTreeSet<(L4Protocol, SocketAddr)>,
    /// The TCP sockets the clients kept: the client, its index in that client's list, the
    /// socket's cookie and real peer.
    kept: Vec<(usize, usize, u64, SocketAddr)>,
    /// What happened so far, for failure messages.
    log: Vec<String>,
    /// The clients' namespaces.
    netns: [u64; 2],
    cgroup_id: u64,
    clock: Clock,
    /// Outcomes seen, by kind.
    seen: Vec<&'static str>,
    header: String,
}

/// What becomes of a datagram or connection to an address in the child's namespace.
#[derive(Clone, Copy)]
enum Reach {
    /// A backend listens there.
    Listener,
    /// A local address where nothing listens: refused.
    Refused,
    /// Not local: no route in a namespace with only loopback.
    Unreachable,
}

impl Replay {
    /// A backend listens at `addr` in every client's namespace.
    fn listen(
        &mut self,
        children: &mut [Child; 2],
        protocol: L4Protocol,
        addr: SocketAddr,
    ) -> Result<(), String> {
        for child in children {
            let report = child.call(&Call::Listen(protocol, addr))?;
            if let Some(error) = report.error {
                return Err(format!(
                    "the child cannot listen on {addr} {protocol}: {error:?}"
                ));
            }
        }
        self.listeners.insert((protocol, canonical(addr)));
        Ok(())
    }

    fn reach(&self, protocol: L4Protocol, to: SocketAddr) -> Reach {
        let ip = to.ip().to_canonical();
        if self.listeners.contains(&(protocol, canonical(to))) {
            Reach::Listener
        } else if ip.is_loopback()
            || ip.is_unspecified()
            || ip == IpAddr::from(NODE_ADDR4)
            || ip == IpAddr::from(NODE_ADDR6)
        {
            Reach::Refused
        } else {
            Reach::Unreachable
        }
    }

    /// Why the kernel's affinity decision for `call` cannot be told from the simulator's: the
    /// client's entry for the target expires within the call's window, given that the
    /// kernel stamped it at some moment of the window of the call that last used it.
    fn undecidable(&self, client: usize, call: &Call, now: Window) -> Option<String> {
        let (Call::TcpConnect(target) | Call::UdpConnect(target) | Call::UdpSendTo(target)) = *call
        else {
            return None;
        };
        let protocol = match call {
            Call::TcpConnect(_) => L4Protocol::Tcp,
            _ => L4Protocol::Udp,
        };
        let (last, timeout) = self
            .sim
            .affinity_last_use(&self.sock(client, protocol, 0), target)?;
        let last_end = self.clock.windows.get(&last).copied().unwrap_or(last);
        let surely_fresh = now.end <= last + timeout;
        let surely_expired = now.start > last_end + timeout;
        (!surely_fresh && !surely_expired).then(|| {
            format!(
                "affinity of client {client} for {target} was used within [{last}, {last_end}] \
                 ns, expires {timeout} ns later, and the call ran within [{}, {}] ns",
                now.start, now.end
            )
        })
    }

    /// Replays `client`'s `call` on the simulator and compares with what the kernel did.
    fn check(&mut self, client: usize, call: &Call, kernel: &Report) -> Result<(), String> {
        match *call {
            Call::TcpConnect(target) => self.forward(client, L4Protocol::Tcp, target, kernel, true),
            Call::UdpConnect(target) => self.forward(client, L4Protocol::Udp, target, kernel, true),
            Call::UdpSendTo(target) => self.forward(client, L4Protocol::Udp, target, kernel, false),
            Call::Bind(protocol, local, v6only) => {
                let sock = SockCall {
                    v6only,
                    ..self.sock(client, protocol, kernel.cookie)
                };
                let model = self.sim.bind(&sock, local);
                let refused = kernel.error == Some((Stage::Bind, Errno::EPERM as i32));
                if refused != model.is_err() {
                    return Err(format!("kernel:    {kernel}\nsimulator: bind {model:?}"));
                }
                self.seen.push(match (refused, v6only) {
                    (true, false) => "bind refused",
                    (false, false) => "bind let through",
                    (true, true) => "v6only bind refused",
                    (false, true) => "v6only bind let through",
                });
                Ok(())
            }
            Call::PeerName(n) => {
                let (_, _, cookie, peer) = *self
                    .kept
                    .iter()
                    .find(|(c, index, _, _)| (*c, *index) == (client, n))
                    .ok_or("a getpeername of a socket the test did not keep")?;
                let sock = self.sock(client, L4Protocol::Tcp, cookie);
                let expected = Report {
                    cookie,
                    peer: Some(self.sim.peer_name(&sock, peer)),
                    ..Report::default()
                };
                self.seen.push(if expected.peer == Some(peer) {
                    "later getpeername: backend"
                } else {
                    "later getpeername: service"
                });
                same(kernel, &expected, "")
            }
            Call::Listen(..) => Ok(()),
        }
    }

    fn sock(&self, client: usize, protocol: L4Protocol, cookie: u64) -> SockCall {
        SockCall {
            netns_cookie: self.netns[client],
            socket_cookie: cookie,
            cgroup_id: self.cgroup_id,
            protocol,
            v6only: false,
        }
    }

    /// A connect or sendto to `target`: the simulator chooses what the kernel chose if it
    /// could have, then the expected report is built from where it went.
    fn forward(
        &mut self,
        client: usize,
        protocol: L4Protocol,
        target: SocketAddr,
        kernel: &Report,
        connected: bool,
    ) -> Result<(), String> {
        let sock = self.sock(client, protocol, kernel.cookie);
        let candidates = self.sim.candidates(&sock, target);
        let pinned = self.sim.affinity_target(&sock, target);
        let stale = pinned.is_none() && self.sim.affinity_last_use(&sock, target).is_some();
        let answered = kernel.answer;
        let mut follow = |slots: &[SocketAddr]| {
            slots
                .iter()
                .position(|s| Some(canonical(*s)) == answered)
                .unwrap_or(0)
        };
        let to = if connected {
            self.sim.connect_with(&sock, target, &mut follow)
        } else {
            self.sim.sendmsg_with(&sock, target, &mut follow)
        };
        // Where the packets really go: the unspecified address means loopback.
        let real = match to.ip().to_canonical() {
            IpAddr::V4(v4) if v4.is_unspecified() => SocketAddr::new(
                match to {
                    SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
                },
                to.port(),
            ),
            IpAddr::V6(v6) if v6.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), to.port())
            }
            _ => to,
        };
        let mut expected = Report {
            cookie: kernel.cookie,
            ..Report::default()
        };
        let tcp = protocol == L4Protocol::Tcp;
        let reach = self.reach(protocol, real);
        match reach {
            Reach::Unreachable => {
                let stage = if connected {
                    Stage::Connect
                } else {
                    Stage::Send
                };
                expected.error = Some((stage, Errno::ENETUNREACH as i32));
            }
            Reach::Listener if tcp => {
                expected.peer = Some(self.sim.peer_name(&sock, real));
                expected.answer = Some(canonical(real));
            }
            Reach::Refused if tcp => {
                expected.error = Some((Stage::Connect, Errno::ECONNREFUSED as i32))
            }
            Reach::Refused | Reach::Listener => {
                if connected {
                    expected.peer = Some(self.sim.peer_name(&sock, real));
                    self.connected_send(&sock, real)?;
                }
                if matches!(reach, Reach::Listener) {
                    expected.answer = Some(canonical(real));
                    expected.from = Some(self.sim.peer_name(&sock, real));
                } else {
                    expected.error = Some((Stage::Recv, Errno::ECONNREFUSED as i32));
                }
            }
        }
        let context = format!(
            "the simulator went to {to}; candidates {candidates:?}, pinned by affinity {pinned:?}"
        );
        if let (Some(answer), Some(pin)) = (kernel.answer, pinned) {
            if answer != canonical(pin) {
                return Err(format!(
                    "affinity pins {pin}, the kernel chose {answer}\n{context}"
                ));
            }
        }
        if let (Some(answer), Some(c)) = (kernel.answer, &candidates) {
            if pinned.is_none() && !c.iter().any(|a| canonical(*a) == answer) {
                return Err(format!(
                    "the kernel chose {answer}, not a candidate\n{context}"
                ));
            }
        }
        same(kernel, &expected, &context)?;
        self.seen.push(match reach {
            Reach::Listener => "answered",
            Reach::Refused => "refused",
            Reach::Unreachable => "unreachable",
        });
        if to != target {
            self.seen.push("translated");
        }
        if pinned.is_some() {
            self.seen.push("pinned by affinity");
        }
        if stale {
            self.seen.push("affinity expired or its backend left");
        }
        if expected
            .peer
            .or(expected.from)
            .is_some_and(|shown| shown != real)
        {
            self.seen.push("service shown");
        }
        if target.is_ipv6() && target.ip().to_canonical().is_ipv4() {
            self.seen.push("dual-stack");
        }
        if tcp && kernel.error.is_none() {
            let index = self.kept.iter().filter(|k| k.0 == client).count();
            self.kept.push((client, index, kernel.cookie, real));
        }
        Ok(())
    }

    /// `send` on a connected UDP socket runs no hook, except on a dual-stack socket connected
    /// to an IPv4-mapped address: the kernel hands the datagram to IPv4 with the peer as an
    /// explicit destination, so sendmsg4 runs with it. The peer is a backend (or what was
    /// left alone), so this translates nothing, but it is seen by the hook (and the monitor).
    fn connected_send(&mut self, sock: &SockCall, peer: SocketAddr) -> Result<(), String> {
        let SocketAddr::V6(v6) = peer else {
            return Ok(());
        };
        let Some(v4) = v6.ip().to_ipv4_mapped() else {
            return Ok(());
        };
        let dst = SocketAddr::from((v4, v6.port()));
        let again = self.sim.sendmsg(sock, dst);
        if again != dst {
            return Err(format!(
                "the simulator would translate the connected send to {dst} again, to {again}: \
                 the test's model of the kernel does not cover this"
            ));
        }
        Ok(())
    }

    /// The call's trace-sock events must be the simulator's (the CPU aside).
    fn check_events(&mut self, kernel: Vec<LbTraceSock>) -> Result<(), String> {
        let kernel: Vec<LbTraceSock> = kernel
            .into_iter()
            .map(|e| LbTraceSock { cpu: 0, ..e })
            .collect();
        let model = self.sim.take_events();
        if kernel == model {
            return Ok(());
        }
        let render = |events: &[LbTraceSock]| {
            events
                .iter()
                .map(|e| TraceSockEvent::decode(e).map_or_else(|| format!("{e:?}"), |d| d.render()))
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        Err(format!(
            "trace-sock events differ\nkernel:\n  {}\nsimulator:\n  {}",
            render(&kernel),
            render(&model)
        ))
    }
}

/// Compares the kernel's report with the simulator's expectation.
fn same(kernel: &Report, expected: &Report, context: &str) -> Result<(), String> {
    if kernel == expected {
        Ok(())
    } else {
        Err(format!(
            "kernel:    {kernel}\nsimulator: {expected}\n{context}"
        ))
    }
}

/// An address as a backend on this socket's other side reports itself: IPv4 as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The maps, one frontend per line with its id, flags and backends in slot order.
fn describe(maps: &MapContents) -> String {
    let mut out = String::new();
    for f in maps.frontends() {
        let head = maps
            .services
            .iter()
            .find(|(k, v)| k.backend_slot == 0 && v.rev_nat_index == f.id)
            .map(|(_, v)| *v)
            .unwrap_or_default();
        let _ = write!(
            out,
            "  #{} {} {} {:?} count {} qcount {} flags {:#04x} affinity {}s ->",
            f.id,
            f.frontend.addr.display_with_protocol(),
            f.frontend.kind,
            f.frontend.scope,
            head.count,
            head.qcount,
            head.flags,
            head.affinity_timeout
        );
        for (id, addr, state) in &f.backends {
            let _ = write!(out, " {id}:{addr}({state:?})");
        }
        out.push('\n');
    }
    out
}
