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
//! The kernel copies the frame into a page once, when its page pool first hands the page out,
//! and recycles pages that come back (from a freed skb, too) *as they are*: a page whose frame
//! the middle node rewrote (NAT, a new Ethernet header, a lower TTL) comes round again
//! rewritten, and the node would drop it (not addressed to it). So the test program is, for
//! every variant alike, a short prefix that writes the whole frame back (15 word stores), then
//! returns `XDP_PASS` or, for XDP, tail-calls the agent's program (whose verdict stands).
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

/// `BPF_MAP_CREATE`, `BPF_MAP_UPDATE_ELEM`, `BPF_PROG_LOAD`, `BPF_PROG_TEST_RUN`,
/// `BPF_PROG_GET_FD_BY_ID`.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
/// `BPF_PROG_TYPE_XDP`, `BPF_MAP_TYPE_PROG_ARRAY`.
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
/// The helper `bpf_tail_call`.
const BPF_FUNC_TAIL_CALL: i32 = 12;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// `XDP_ABORTED`, `XDP_DROP`, `XDP_PASS`.
const XDP_ABORTED: i32 = 0;
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
const XDP_REDIRECT: u32 = 4;
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
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        }
    }
    /// `dst = imm` (64-bit).
    fn mov_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0xb7, dst, 0, 0, imm)
    }
    /// `dst = src` (64-bit).
    fn mov_reg(dst: u8, src: u8) -> Insn {
        Insn::new(0xbf, dst, src, 0, 0)
    }
    /// `dst += imm` (64-bit).
    fn add_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(0x07, dst, 0, 0, imm)
    }
    /// `dst = *(u32 *)(src + off)`.
    fn load_word(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x61, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = imm`.
    fn store_word(dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(0x62, dst, 0, off, imm)
    }
    /// `if dst > src goto +off` (unsigned).
    fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(0x2d, dst, src, off, 0)
    }
    /// `call helper`.
    fn call(helper: i32) -> Insn {
        Insn::new(0x85, 0, 0, 0, helper)
    }
    fn exit() -> Insn {
        Insn::new(0x95, 0, 0, 0, 0)
    }
    /// `dst = map` (the two halves of a 64-bit load of a map descriptor).
    fn load_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        /// `BPF_PSEUDO_MAP_FD`.
        const PSEUDO_MAP_FD: u8 = 1;
        [
            Insn::new(0x18, dst, PSEUDO_MAP_FD, 0, fd),
            Insn::new(0, 0, 0, 0, 0),
        ]
    }
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
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
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
    load_program(&[Insn::mov_imm(0, verdict), Insn::exit()])
        .with_context(|| format!("loading an XDP program returning {verdict}"))
}

/// What the restoring prefix does once the frame is written back.
enum Then<'a> {
    /// Returns `XDP_PASS`.
    Pass,
    /// Tail-calls entry 0 of this program array.
    TailCall(&'a OwnedFd),
}

/// Loads an XDP program that writes `frame` over the frame it is given (of the same length,
/// a multiple of 4 bytes), then does `then`; a frame of another length is dropped.
fn load_restoring_program(frame: &[u8], then: Then) -> Result<OwnedFd> {
    if frame.len() % 4 != 0 || frame.len() > 256 {
        bail!(
            "a {}-byte frame: the restoring program takes up to 256 bytes in words",
            frame.len()
        );
    }
    let len = frame.len() as i32;
    // r6 = ctx; r2 = data; r3 = data_end; r4 = data + len; if r4 > r3 goto drop
    let mut insns = vec![
        Insn::mov_reg(6, 1),
        Insn::load_word(2, 1, 0),
        Insn::load_word(3, 1, 4),
        Insn::mov_reg(4, 2),
        Insn::add_imm(4, len),
    ];
    let mut body: Vec<Insn> = frame
        .chunks_exact(4)
        .zip((0i16..).step_by(4))
        .map(|(word, off)| {
            let word = i32::from_le_bytes(word.try_into().expect("4 bytes"));
            Insn::store_word(2, off, word)
        })
        .collect();
    match then {
        Then::Pass => body.extend([Insn::mov_imm(0, XDP_PASS), Insn::exit()]),
        Then::TailCall(array) => {
            body.push(Insn::mov_reg(1, 6));
            body.extend(Insn::load_map_fd(2, array.as_raw_fd()));
            body.extend([
                Insn::mov_imm(3, 0),
                Insn::call(BPF_FUNC_TAIL_CALL),
                // Only reached when the tail call fails.
                Insn::mov_imm(0, XDP_ABORTED),
                Insn::exit(),
            ]);
        }
    }
    insns.push(Insn::jgt_reg(4, 3, i16::try_from(body.len())?));
    insns.extend(body);
    insns.extend([Insn::mov_imm(0, XDP_DROP), Insn::exit()]);
    load_program(&insns).context("loading the frame-restoring XDP program")
}

/// Loads `insns` as a GPL XDP program for devices (`BPF_XDP`, as aya loads the agent's, so
/// one may tail-call the other); a refusal carries the verifier's log.
fn load_program(insns: &[Insn]) -> Result<OwnedFd> {
    /// `BPF_XDP`.
    const BPF_XDP: u32 = 37;
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
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
        prog_name: *b"lb_bench_live\0\0\0",
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP,
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned_fd(fd)),
        Err(e) => {
            // Again with the verifier's log, to say why.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr).map(owned_fd);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!(
                "BPF_PROG_LOAD: {e}; verifier: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            )
        }
    }
}

/// A program array of one entry holding `prog`.
fn program_array_of(prog: &OwnedFd) -> Result<OwnedFd> {
    #[repr(C)]
    struct MapCreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    #[repr(C)]
    struct MapUpdateAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut create = MapCreateAttr {
        map_type: BPF_MAP_TYPE_PROG_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    let array = owned_fd(bpf(BPF_MAP_CREATE, &mut create).context("creating a program array")?);
    let key = 0u32;
    let value = prog.as_raw_fd() as u32;
    let mut update = MapUpdateAttr {
        map_fd: array.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(&key) as u64,
        value: std::ptr::from_ref(&value) as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut update)
        .context("putting the agent's XDP program into a program array")?;
    Ok(array)
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
/// `ifindex` (of the calling thread's namespace). Returns the time the kernel spent on the
/// frames: its own measure of the run (`duration`, ns a frame), which leaves out the run's
/// setup and teardown (a page pool created and destroyed, about 25 ms a call in this VM,
/// 3 µs a frame at 8 192 frames a call: more than any path costs) and includes what the
/// frames set off on this CPU before the run ends (the stack's receive, redirects flushed,
/// the softirqs they raise).
fn run_live(prog: &OwnedFd, frame: &[u8], ifindex: u32, repeat: u32) -> std::io::Result<Duration> {
    let (_, ns_per_frame) = test_run(prog, frame, ifindex, Some(repeat))?;
    Ok(Duration::from_nanos(
        u64::from(ns_per_frame) * u64::from(repeat),
    ))
}

/// `prog`'s verdict for `frame` received on `ifindex`, in an ordinary test run: nothing is
/// sent, though the program's map updates stay.
fn verdict(prog: &OwnedFd, frame: &[u8], ifindex: u32) -> std::io::Result<u32> {
    test_run(prog, frame, ifindex, None).map(|(verdict, _)| verdict)
}

/// A test run of `prog` over `frame`: live, `repeat` times, or once as a unit test; returns
/// the (last) verdict and the kernel's time per frame in ns.
fn test_run(
    prog: &OwnedFd,
    frame: &[u8],
    ifindex: u32,
    live_repeat: Option<u32>,
) -> std::io::Result<(u32, u32)> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: live_repeat.unwrap_or(1),
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: std::ptr::from_ref(&ctx) as u64,
        flags: if live_repeat.is_some() {
            BPF_F_TEST_XDP_LIVE_FRAMES
        } else {
            0
        },
        batch_size: if live_repeat.is_some() { BATCH_SIZE } else { 0 },
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok((attr.retval, attr.duration))
}

/// Whether this kernel runs XDP programs in live-frames mode: frames through a program that
/// drops them (so nothing reaches any stack), on `place`'s loopback, from `cpu`, for
/// `duration`. Returns the frames/s of that: the generator's own limit. `Err` says why not.
pub fn supported(place: &Place, cpu: usize, duration: Duration) -> Result<f64> {
    place.in_netns(|| supported_here(cpu, duration))?
}

fn supported_here(cpu: usize, duration: Duration) -> Result<f64> {
    pin(cpu)?;
    let drop_all = load_constant_program(XDP_DROP)?;
    let frame = PacketBuilder::udp(
        "192.0.2.1:1".parse().expect("address"),
        "192.0.2.2:2".parse().expect("address"),
    )
    .payload(&[0; PAYLOAD])
    .build();
    let loopback = 1;
    match run_live(&drop_all, &frame, loopback, 1) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => bail!(
            "this kernel refuses BPF_F_TEST_XDP_LIVE_FRAMES ({e}); live frames need Linux 5.18"
        ),
        Err(e) => return Err(e).context("a live-frames test run of an XDP_DROP program"),
    }
    let started = Instant::now();
    let mut injected = 0u64;
    let mut busy = Duration::ZERO;
    while started.elapsed() < duration {
        busy += run_live(&drop_all, &frame, loopback, REPEAT)
            .context("a live-frames test run of an XDP_DROP program")?;
        injected += u64::from(REPEAT);
    }
    Ok(injected as f64 / busy.as_secs_f64())
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
    /// Per flow, its frame and the program that restores it.
    flows: Vec<(Vec<u8>, OwnedFd)>,
    /// The program array holding the agent's program, for the XDP variant: the kernel empties
    /// a program array when its last descriptor closes, so the generator keeps it.
    _array: Option<OwnedFd>,
    /// The verdict the programs should give: `XDP_REDIRECT` (the agent's, out of the other
    /// device) or `XDP_PASS`.
    verdict: u32,
    ingress: u32,
    egress: String,
}

/// What one measurement injected and what left towards the backend.
#[derive(Clone, Copy, Debug)]
pub struct Live {
    pub injected: u64,
    pub forwarded: u64,
    /// The kernel's time on the frames (see [`run_live`]), not the wall clock's.
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
        // The agent's program, behind a program array the prefixes tail-call.
        let array = match program {
            Program::Attached(pin) => Some(program_array_of(&attached_program(&pin)?)?),
            Program::Pass => None,
        };
        let flows = (0..flows)
            .map(|k| {
                let src = SocketAddrV4::new(from.1, first_port + k);
                let dst = targets[usize::from(k) % targets.len()];
                let frame = PacketBuilder::udp(src.into(), dst.into())
                    .macs(ingress.mac, from.0.mac)
                    .payload(&[0; PAYLOAD])
                    .build();
                let then = match &array {
                    Some(array) => Then::TailCall(array),
                    None => Then::Pass,
                };
                let program = load_restoring_program(&frame, then)?;
                Ok((frame, program))
            })
            .collect::<Result<_>>()?;
        Ok(Generator {
            place: place.clone(),
            flows,
            verdict: if array.is_some() {
                XDP_REDIRECT
            } else {
                XDP_PASS as u32
            },
            _array: array,
            ingress: ingress.ifindex,
            egress: egress.to_owned(),
        })
    }

    /// Injects frames for `duration` from `cpu`, the flows in turn, [`REPEAT`] per test run;
    /// counts what the egress device sent meanwhile. With `check`, fails unless nearly all
    /// were forwarded.
    pub fn run(&self, cpu: usize, duration: Duration, check: bool) -> Result<Live> {
        let live = self.place.in_netns(|| {
            if check {
                self.check_verdicts(self.verdict)?;
            }
            self.run_here(cpu, duration)
        })??;
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

    /// Fails unless every flow's program gives `want` for its frame (an ordinary test run).
    fn check_verdicts(&self, want: u32) -> Result<()> {
        for (frame, program) in &self.flows {
            let got = verdict(program, frame, self.ingress).context("a test run")?;
            if got != want {
                bail!(
                    "{}: the test program's verdict for a frame is {got}, not {want}",
                    self.place.name()
                );
            }
        }
        Ok(())
    }

    fn run_here(&self, cpu: usize, duration: Duration) -> Result<Live> {
        pin(cpu)?;
        let before = tx_packets(&self.egress)?;
        let started = Instant::now();
        let mut injected = 0u64;
        let mut busy = Duration::ZERO;
        'run: loop {
            for (frame, program) in &self.flows {
                if started.elapsed() >= duration {
                    break 'run;
                }
                busy += run_live(program, frame, self.ingress, REPEAT).with_context(|| {
                    format!("a live-frames test run on ifindex {}", self.ingress)
                })?;
                injected += u64::from(REPEAT);
            }
        }
        let elapsed = busy;
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
