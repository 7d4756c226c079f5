//! The live-frames generator: frames injected straight into a middle node's outside-facing
//! device with `BPF_PROG_TEST_RUN` and `BPF_F_TEST_XDP_LIVE_FRAMES` (Linux 5.18), so no
//! sender's sockets, syscalls per packet, outside host or first bridge stand in front of the
//! middle node.
//!
//! In live mode the kernel acts on the test program's verdict for real: `XDP_REDIRECT` sends
//! the frame out of the target device, `XDP_PASS` turns it into an skb received on the device
//! given as `ingress_ifindex` (tc ingress, netfilter, routing, and out). So the XDP variant runs
//! the very program the agent attached to the device, and every other variant a program that
//! returns `XDP_PASS`, which hands the frame to the stack as the device's receive path would.
//! What the middle node sends on towards the backend is counted on its backend-side device.
//!
//! aya's `TestRun` has no live-frames flag or batch size, so this speaks `bpf(2)` directly.

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lb::datapath::sim::packet_builder::PacketBuilder;
use netsim::Place;
use nix::libc;

use crate::traffic::{pin, PAYLOAD};

/// `BPF_PROG_LOAD`, `BPF_PROG_TEST_RUN`, `BPF_PROG_GET_FD_BY_ID`.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// `XDP_DROP`, `XDP_PASS`.
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
/// Frames the kernel runs between two flushes of the redirects and the stack's receive (its
/// default, `NAPI_POLL_WEIGHT`, as a driver's poll).
const BATCH_SIZE: u32 = 64;
/// Frames per test run: a few milliseconds, so a measurement ends close to its duration and
/// turns over the flows often.
const REPEAT: u32 = 8192;
/// How long the backend-side counters may take to take in the last frames.
const SETTLE: Duration = Duration::from_millis(200);
/// Below this share of the injected frames forwarded, a variant is broken, not slow.
const MIN_FORWARDED: f64 = 0.9;

/// One BPF instruction.
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The head of `union bpf_attr` for `BPF_PROG_LOAD` (the kernel takes what follows as zero).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The `test` member of `union bpf_attr` (`BPF_PROG_TEST_RUN`), up to `batch_size`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// The struct's tail padding, zero as the kernel requires of unused bytes.
    _pad: u32,
}

/// `struct xdp_md`, the context given to the test run.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, fully initialised prefix of `union bpf_attr` for `cmd` of the
    // size passed; every pointer in it points at memory that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned_fd(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a new descriptor the kernel just returned, owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads an XDP program that returns `verdict` for every frame.
fn load_constant_program(verdict: i32) -> Result<OwnedFd> {
    let insns = [
        // BPF_ALU64 | BPF_MOV | BPF_K: r0 = verdict
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: verdict,
        },
        // BPF_JMP | BPF_EXIT
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)
        .with_context(|| format!("loading an XDP program returning {verdict}"))?;
    Ok(owned_fd(fd))
}

/// A descriptor of the program with kernel id `id`.
fn program_by_id(id: u32) -> Result<OwnedFd> {
    #[repr(C)]
    struct GetFdAttr {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = GetFdAttr {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
        .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?;
    Ok(owned_fd(fd))
}

/// One live-frames test run of `prog` over `frame`, `repeat` times, as received on
/// `ifindex` (of the calling thread's namespace).
fn run_live(prog: &OwnedFd, frame: &[u8], ifindex: u32, repeat: u32) -> std::io::Result<()> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: std::ptr::from_ref(&ctx) as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: BATCH_SIZE,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).map(drop)
}

/// Whether this kernel runs XDP programs in live-frames mode: one frame through a program
/// that drops it (so nothing reaches any stack), on `place`'s loopback. `Err` says why not.
pub fn supported(place: &Place) -> Result<()> {
    place.in_netns(supported_here)?
}

fn supported_here() -> Result<()> {
    let drop_all = load_constant_program(XDP_DROP)?;
    let frame = PacketBuilder::udp(
        "192.0.2.1:1".parse().expect("address"),
        "192.0.2.2:2".parse().expect("address"),
    )
    .payload(&[0; PAYLOAD])
    .build();
    let loopback = 1;
    match run_live(&drop_all, &frame, loopback, 1) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => bail!(
            "this kernel refuses BPF_F_TEST_XDP_LIVE_FRAMES ({e}); live frames need Linux 5.18"
        ),
        Err(e) => Err(e).context("a live-frames test run of an XDP_DROP program"),
    }
}

/// Which XDP program the frames meet.
pub enum Program {
    /// The program attached to the ingress device through the link pinned here.
    Attached(PathBuf),
    /// A program returning `XDP_PASS`: the frames go to the device's stack.
    Pass,
}

/// A device of a node: its index and MAC address, read in the node's namespace.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// `name`'s index and MAC address in `place`.
pub fn device(place: &Place, name: &str) -> Result<Device> {
    place
        .in_netns(|| device_here(name))?
        .with_context(|| format!("reading {name}'s index and address in {}", place.name()))
}

fn device_here(name: &str) -> Result<Device> {
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error()).context("if_nametoindex");
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").context("a socket for SIOCGIFHWADDR")?;
    // SAFETY: ifreq is plain data; all zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(cname.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: ifr is valid for the call; SIOCGIFHWADDR writes its address member only.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCGIFHWADDR");
    }
    // SAFETY: SIOCGIFHWADDR filled the hardware address member of the union.
    let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(Device { ifindex, mac })
}

/// The XDP program of the link pinned at `pin` (a `bpffs` path).
fn attached_program(pin: &Path) -> Result<OwnedFd> {
    use aya::programs::links::{FdLink, PinnedLink};
    let link: FdLink = PinnedLink::from_pin(pin)
        .with_context(|| format!("opening the pinned link {}", pin.display()))?
        .into();
    let id = link
        .info()
        .with_context(|| format!("reading the link {}", pin.display()))?
        .program_id();
    program_by_id(id)
}

/// A generator for one middle node: the program, the frames (one per flow) and where they
/// enter and leave.
pub struct Generator {
    place: Place,
    program: OwnedFd,
    frames: Vec<Vec<u8>>,
    ingress: u32,
    egress: String,
}

/// What one measurement injected and what left towards the backend.
#[derive(Clone, Copy, Debug)]
pub struct Live {
    pub injected: u64,
    pub forwarded: u64,
    pub elapsed: Duration,
}

impl Generator {
    /// Frames from `from` (the outside host's device and address) to `ingress` of the node
    /// in `place`, one flow per source port `first_port..first_port + flows`, flow `k` to
    /// `targets[k % len]`; they meet `program` and what the node forwards leaves by `egress`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        place: &Place,
        program: Program,
        from: (Device, std::net::Ipv4Addr),
        ingress: Device,
        egress: &str,
        targets: &[SocketAddrV4],
        first_port: u16,
        flows: u16,
    ) -> Result<Generator> {
        let program = match program {
            Program::Attached(pin) => attached_program(&pin)?,
            Program::Pass => load_constant_program(XDP_PASS)?,
        };
        let frames = (0..flows)
            .map(|k| {
                let src = SocketAddrV4::new(from.1, first_port + k);
                let dst = targets[usize::from(k) % targets.len()];
                PacketBuilder::udp(src.into(), dst.into())
                    .macs(ingress.mac, from.0.mac)
                    .payload(&[0; PAYLOAD])
                    .build()
            })
            .collect();
        Ok(Generator {
            place: place.clone(),
            program,
            frames,
            ingress: ingress.ifindex,
            egress: egress.to_owned(),
        })
    }

    /// Injects frames for `duration` from `cpu`, the flows in turn, [`REPEAT`] per test run;
    /// counts what the egress device sent meanwhile. With `check`, fails unless nearly all
    /// were forwarded.
    pub fn run(&self, cpu: usize, duration: Duration, check: bool) -> Result<Live> {
        let live = self.place.in_netns(|| self.run_here(cpu, duration))??;
        if check && (live.forwarded as f64) < MIN_FORWARDED * live.injected as f64 {
            bail!(
                "{}: of {} frames injected on ifindex {}, {} left by {} (below {:.0} %)",
                self.place.name(),
                live.injected,
                self.ingress,
                live.forwarded,
                self.egress,
                MIN_FORWARDED * 100.0
            );
        }
        Ok(live)
    }

    fn run_here(&self, cpu: usize, duration: Duration) -> Result<Live> {
        pin(cpu)?;
        let before = tx_packets(&self.egress)?;
        let started = Instant::now();
        let mut injected = 0u64;
        'run: loop {
            for frame in &self.frames {
                if started.elapsed() >= duration {
                    break 'run;
                }
                run_live(&self.program, frame, self.ingress, REPEAT).with_context(|| {
                    format!("a live-frames test run on ifindex {}", self.ingress)
                })?;
                injected += u64::from(REPEAT);
            }
        }
        let elapsed = started.elapsed();
        let forwarded = settled_tx_packets(&self.egress)? - before;
        Ok(Live {
            injected,
            forwarded,
            elapsed,
        })
    }
}

/// `device`'s transmitted packets in the calling thread's namespace (`/proc/thread-self`,
/// since a thread of this process may be in another namespace than its main thread).
fn tx_packets(device: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")
        .context("reading /proc/thread-self/net/dev")?;
    for line in text.lines() {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == device {
            // Receive: bytes packets errs drop fifo frame compressed multicast; then
            // transmit: bytes packets ...
            return counters
                .split_whitespace()
                .nth(9)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no tx packets for {device} in: {line}"));
        }
    }
    bail!("no {device} in /proc/thread-self/net/dev")
}

/// [`tx_packets`] once it stops moving, at most [`SETTLE`] on.
fn settled_tx_packets(device: &str) -> Result<u64> {
    let until = Instant::now() + SETTLE;
    let mut last = tx_packets(device)?;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = tx_packets(device)?;
        if now == last || Instant::now() > until {
            return Ok(now);
        }
        last = now;
    }
}
