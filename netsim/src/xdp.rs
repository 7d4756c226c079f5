//! A pass-through XDP program for the fabric's ends of the nodes' links (and a dropping one,
//! for a bench that wants a link's far end to take frames and go no further).
//!
//! A veth hands a frame sent by XDP (`XDP_TX`, or `XDP_REDIRECT` into it) only to a peer whose
//! receive path runs in NAPI, and that is on only while the peer has an XDP program (or, from
//! Linux 5.13, GRO). A node whose NodePort devices run the agent's XDP program therefore needs
//! one on the fabric's end of each link, or everything its XDP program forwards is dropped:
//! this one passes every frame on, as if it were not there.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// `BPF_PROG_LOAD`.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `XDP_DROP`, `XDP_PASS`.
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;

/// One BPF instruction.
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The head of `union bpf_attr` for `BPF_PROG_LOAD` (the kernel zeroes what follows).
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

/// Loads `r0 = XDP_PASS; exit`; the returned descriptor holds the program.
pub(crate) fn load_pass_program() -> Result<OwnedFd> {
    load_verdict_program(XDP_PASS)
}

/// Loads `r0 = XDP_DROP; exit`.
pub(crate) fn load_drop_program() -> Result<OwnedFd> {
    load_verdict_program(XDP_DROP)
}

/// Loads `r0 = verdict; exit`.
fn load_verdict_program(verdict: i32) -> Result<OwnedFd> {
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
    let attr = ProgLoadAttr {
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
    // SAFETY: attr points at a valid, initialised prefix of union bpf_attr of the size given,
    // whose pointers outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(Error::Topology {
            what: "cannot load the fabric's XDP program",
            name: std::io::Error::last_os_error().to_string(),
        });
    }
    // SAFETY: a new descriptor the kernel just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `SIOCETHTOOL` and its legacy `ETHTOOL_STXCSUM` command.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with `ifr_data`.
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Turns off transmit checksum offload on link `name` of the calling thread's namespace, as
/// `ethtool -K name tx off` does: the frames it sends on carry complete checksums.
///
/// A veth keeps a local sender's checksum partial (the field holds only the pseudo-header's
/// sum, the kernel's `CHECKSUM_PARTIAL`) all the way to the receiver, and XDP cannot know: a
/// program that rewrites such a frame and sends it out again (`XDP_TX`) sends a wrong checksum.
/// Frames from a NIC are always complete; turning the offload off on the fabric's end of each
/// node's link makes the bridge complete them before they reach the node, as a wire would.
pub(crate) fn disable_tx_checksum(name: &str) -> Result<()> {
    let failed = |op: &'static str| Error::Topology {
        what: op,
        name: format!("{name}: {}", std::io::Error::last_os_error()),
    };
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&mut value as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    for (dst, src) in ifr
        .name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain socket creation.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(failed("cannot open a socket for SIOCETHTOOL"));
    }
    // SAFETY: a new descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifr and value are valid for the call, as SIOCETHTOOL's ETHTOOL_STXCSUM reads
    // them.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            SIOCETHTOOL,
            &mut ifr,
        )
    };
    if rc < 0 {
        return Err(failed("cannot turn off transmit checksum offload"));
    }
    Ok(())
}
