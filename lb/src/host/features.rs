//! Kernel feature probes: what the socket datapath needs from the running kernel, each found
//! by asking the kernel (loading a two-instruction program with the attach type or helper in
//! question, or calling the socket option), never by comparing version numbers, since
//! distributions backport.
//!
//! The agent probes at start-up and refuses to start when a feature its configuration needs is
//! missing, naming it; the scenario runner uses the same probes to report a scenario as
//! unsupported on a kernel instead of failing it obscurely.

use std::fmt;

/// A kernel feature the datapath can need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// cgroup `connect4`/`connect6` hooks (`BPF_PROG_TYPE_CGROUP_SOCK_ADDR`, Linux 4.17).
    CgroupConnect,
    /// cgroup `sendmsg4/6` hooks for unconnected UDP (Linux 4.18).
    CgroupSendmsg,
    /// cgroup `recvmsg4/6` hooks, the reverse translation for UDP (Linux 5.2).
    CgroupRecvmsg,
    /// cgroup `getpeername4/6` hooks (Linux 5.8).
    CgroupGetpeername,
    /// cgroup `bind4/6` hooks (`BPF_CGROUP_INET4_BIND`), where bind protection runs (Linux
    /// 4.17).
    CgroupBind,
    /// The `bpf_get_netns_cookie` helper in socket-address programs (Linux 5.7).
    NetnsCookieHelper,
    /// The cgroup `sock_release` hook with `bpf_get_socket_cookie` (Linux 5.9): a closing
    /// socket deletes its reverse-translation entry.
    CgroupSockRelease,
    /// The `SO_NETNS_COOKIE` socket option (Linux 5.14): how an agent outside the initial
    /// network namespace learns its own namespace's cookie.
    SoNetnsCookie,
    /// `bpf_skc_to_tcp6_sock`/`bpf_skc_to_udp6_sock` in socket-address programs (Linux 5.10):
    /// how bind6 reads `IPV6_V6ONLY`, so a bind to `[::]` that takes no IPv4 is not refused
    /// for an IPv4 NodePort.
    SockV6only,
    /// tcx: tc programs attached through BPF links on a device's ingress and egress (Linux
    /// 6.6), pinnable like the socket hooks' links. Without it the NodePort programs are
    /// attached as netlink `cls_bpf` filters on a `clsact` qdisc, which stay without pinning.
    Tcx,
    /// Managed neighbour entries (`NTF_EXT_MANAGED`, Linux 5.16): the kernel keeps the entries
    /// for the other nodes' next hops resolved itself. Without them the agent asks it to
    /// re-resolve them every `l2NeighDiscovery.refreshPeriod`.
    ManagedNeighbours,
    /// BPF atomic compare-and-exchange and exchange (`BPF_CMPXCHG`/`BPF_XCHG`, Linux 5.12):
    /// how connect claims a slot of `lb_sock_conn_slots_v1` for a connected socket's
    /// translation. Without it the agent loads the socket programs built without atomics,
    /// which keep every translation in the hash map `lb_sock_conn_v1` (a slower connect and
    /// close, the same behaviour).
    BpfAtomics,
}

impl Feature {
    /// Every feature, in probe order.
    pub const ALL: [Feature; 12] = [
        Feature::CgroupConnect,
        Feature::CgroupSendmsg,
        Feature::CgroupRecvmsg,
        Feature::CgroupGetpeername,
        Feature::CgroupBind,
        Feature::NetnsCookieHelper,
        Feature::CgroupSockRelease,
        Feature::SoNetnsCookie,
        Feature::SockV6only,
        Feature::Tcx,
        Feature::ManagedNeighbours,
        Feature::BpfAtomics,
    ];

    /// The name used in messages, scenario files and `ci/kernels.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::CgroupConnect => "cgroup-connect",
            Feature::CgroupSendmsg => "cgroup-sendmsg",
            Feature::CgroupRecvmsg => "cgroup-recvmsg",
            Feature::CgroupGetpeername => "cgroup-getpeername",
            Feature::CgroupBind => "cgroup-bind",
            Feature::NetnsCookieHelper => "netns-cookie-helper",
            Feature::CgroupSockRelease => "cgroup-sock-release",
            Feature::SoNetnsCookie => "so-netns-cookie",
            Feature::SockV6only => "sock-v6only",
            Feature::Tcx => "tcx",
            Feature::ManagedNeighbours => "managed-neigh",
            Feature::BpfAtomics => "bpf-atomics",
        }
    }

    /// The mainline version that brought it, for the message (the probe decides, not this).
    pub fn since(self) -> &'static str {
        match self {
            Feature::CgroupConnect | Feature::CgroupBind => "4.17",
            Feature::CgroupSendmsg => "4.18",
            Feature::CgroupRecvmsg => "5.2",
            Feature::CgroupGetpeername => "5.8",
            Feature::NetnsCookieHelper => "5.7",
            Feature::CgroupSockRelease => "5.9",
            Feature::SoNetnsCookie => "5.14",
            Feature::SockV6only => "5.10",
            Feature::Tcx => "6.6",
            Feature::ManagedNeighbours => "5.16",
            Feature::BpfAtomics => "5.12",
        }
    }

    /// The feature called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Asks the running kernel; `Err` says what the kernel answered.
    pub fn probe(self) -> Result<(), String> {
        raise_memlock_limit();
        match self {
            Feature::CgroupConnect => sock_addr_program(attach::INET4_CONNECT, false),
            Feature::CgroupSendmsg => sock_addr_program(attach::UDP4_SENDMSG, false),
            Feature::CgroupRecvmsg => sock_addr_program(attach::UDP4_RECVMSG, false),
            Feature::CgroupGetpeername => sock_addr_program(attach::INET4_GETPEERNAME, false),
            // The hook the bind programs attach to (a sock_addr program at bind4), not
            // post_bind4, which the programs do not use.
            Feature::CgroupBind => sock_addr_program(attach::INET4_BIND, false),
            Feature::CgroupSockRelease => {
                cgroup_sock_program(attach::INET_SOCK_RELEASE, Some(BPF_FUNC_GET_SOCKET_COOKIE))
            }
            Feature::NetnsCookieHelper => sock_addr_program(attach::INET4_CONNECT, true),
            Feature::SoNetnsCookie => super::netns::so_netns_cookie().map(drop),
            Feature::SockV6only => kernel_btf().and_then(|()| {
                load(
                    BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                    attach::INET6_BIND,
                    &sock_cast_insns(BPF_FUNC_SKC_TO_TCP6_SOCK),
                )
            }),
            Feature::Tcx => tcx_query(),
            Feature::ManagedNeighbours => super::neigh::probe_managed(),
            Feature::BpfAtomics => load(
                BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
                attach::INET4_CONNECT,
                &cmpxchg_insns(),
            ),
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (Linux {})", self.name(), self.since())
    }
}

/// What runs without a missing feature.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Degradation {
    /// The feature's name and the kernel that brought it, `cgroup-getpeername (Linux 5.8)`.
    pub feature: String,
    /// What is different without it.
    pub effect: String,
}

/// A feature the kernel lacks, with the kernel's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The feature.
    pub feature: Feature,
    /// What the probe got.
    pub detail: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.feature, self.detail)
    }
}

/// The features of `wanted` the running kernel lacks, probed in order.
pub fn missing(wanted: &[Feature]) -> Vec<Missing> {
    wanted
        .iter()
        .filter_map(|&feature| {
            feature
                .probe()
                .err()
                .map(|detail| Missing { feature, detail })
        })
        .collect()
}

/// What the agent cannot start socket-LB without (see `lb::agent::degrade` for what it does
/// without the rest): the connect hooks.
pub fn required_by_agent() -> Vec<Feature> {
    vec![Feature::CgroupConnect]
}

/// Kernels before 5.11 charge BPF memory to `RLIMIT_MEMLOCK`; its default is too small for the
/// maps, so the limit is lifted as every BPF loader does. Failure is left to the load to report.
pub fn raise_memlock_limit() {
    let unlimited = nix::libc::rlimit {
        rlim_cur: nix::libc::RLIM_INFINITY,
        rlim_max: nix::libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct for the duration of the call.
    unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// Asks for the tcx programs on the loopback device's ingress (`BPF_PROG_QUERY` with
/// `BPF_TCX_INGRESS`): a kernel without tcx refuses the attach type, one with it answers with
/// what is attached (nothing, normally). Loopback is in every network namespace.
fn tcx_query() -> Result<(), String> {
    use aya::programs::{tc::SchedClassifier, TcAttachType};
    SchedClassifier::query_tcx("lo", TcAttachType::Ingress)
        .map(drop)
        .map_err(|e| {
            format!(
                "the kernel refused a tcx query: {e}{}",
                crate::datapath::source_chain(&e)
            )
        })
}

/// `enum bpf_attach_type` values used by the probes (linux/bpf.h).
mod attach {
    pub const INET4_BIND: u32 = 8;
    pub const INET6_BIND: u32 = 9;
    pub const INET4_CONNECT: u32 = 10;
    pub const UDP4_SENDMSG: u32 = 14;
    pub const UDP4_RECVMSG: u32 = 19;
    pub const INET4_GETPEERNAME: u32 = 29;
    pub const INET_SOCK_RELEASE: u32 = 34;
}

const BPF_PROG_LOAD: nix::libc::c_long = 5;
const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_FUNC_KTIME_GET_COARSE_NS: i32 = 160;
const BPF_FUNC_JIFFIES64: i32 = 118;
const BPF_FUNC_GET_NETNS_COOKIE: i32 = 122;
const BPF_FUNC_GET_SOCKET_COOKIE: i32 = 46;
const BPF_FUNC_SKC_TO_TCP6_SOCK: i32 = 136;
/// `offsetof(struct bpf_sock_addr, sk)`.
const SOCK_ADDR_SK_OFFSET: i16 = 64;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const MOV64_R0_1: Insn = Insn {
    code: 0xb7,
    regs: 0,
    off: 0,
    imm: 1,
};
const EXIT: Insn = Insn {
    code: 0x95,
    regs: 0,
    off: 0,
    imm: 0,
};

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, padded with zeros as the kernel requires.
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
    pad: [u8; 64],
}

fn sock_addr_program(attach_type: u32, netns_cookie: bool) -> Result<(), String> {
    let helper = netns_cookie.then_some(BPF_FUNC_GET_NETNS_COOKIE);
    load(
        BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        attach_type,
        &probe_insns(helper),
    )
}

/// Whether the packet programs may read the clock with `bpf_ktime_get_coarse_ns` (Linux 5.11):
/// the tick's time, a load where `bpf_ktime_get_ns` reads the clock source. Conntrack counts
/// in seconds, which either serves; the coarse one is cheaper per packet. Asked once.
pub fn coarse_clock() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        raise_memlock_limit();
        load(
            BPF_PROG_TYPE_XDP,
            0,
            &probe_insns(Some(BPF_FUNC_KTIME_GET_COARSE_NS)),
        )
        .is_ok()
    })
}

/// The tick clock the packet programs count conntrack seconds by (`super::jiffies`), when the
/// kernel lets them read jiffies (`bpf_jiffies64`, Linux 5.5) and the tick can be calibrated.
/// `None`: they keep a helper clock ([`coarse_clock`]). Asked once.
pub fn jiffies_clock() -> Option<super::jiffies::JiffiesClock> {
    static ANSWER: std::sync::OnceLock<Option<super::jiffies::JiffiesClock>> =
        std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        raise_memlock_limit();
        load(BPF_PROG_TYPE_XDP, 0, &probe_insns(Some(BPF_FUNC_JIFFIES64))).ok()?;
        super::jiffies::clock()
    })
}

fn cgroup_sock_program(attach_type: u32, helper: Option<i32>) -> Result<(), String> {
    load(BPF_PROG_TYPE_CGROUP_SOCK, attach_type, &probe_insns(helper))
}

/// `return 1`, after calling `helper(ctx)` when given (r1 is the context on entry), so the
/// verifier says whether this program type may call it.
fn probe_insns(helper: Option<i32>) -> Vec<Insn> {
    let call = helper.map(|imm| Insn {
        code: 0x85,
        regs: 0,
        off: 0,
        imm,
    });
    call.into_iter().chain([MOV64_R0_1, EXIT]).collect()
}

/// `return 1`, after a compare-and-exchange (`BPF_ATOMIC | BPF_DW`, `BPF_CMPXCHG`) on a stack
/// slot: a kernel before 5.12 refuses the instruction itself ("reserved fields"), wherever it
/// points, so the stack serves as well as a map value and the probe needs no map.
fn cmpxchg_insns() -> Vec<Insn> {
    let zero_slot = Insn {
        code: 0x7a, // BPF_ST | BPF_MEM | BPF_DW: *(u64 *)(r10 - 8) = 0
        regs: 0x0a,
        off: -8,
        imm: 0,
    };
    let expect_zero = Insn {
        code: 0xb7, // r0 = 0: what cmpxchg compares with
        regs: 0,
        off: 0,
        imm: 0,
    };
    let new_value = Insn {
        code: 0xb7, // r1 = 1
        regs: 0x01,
        off: 0,
        imm: 1,
    };
    let cmpxchg = Insn {
        code: 0xdb, // BPF_STX | BPF_ATOMIC | BPF_DW
        regs: 0x1a, // src r1, dst r10
        off: -8,
        imm: 0xf1, // BPF_CMPXCHG
    };
    vec![zero_slot, expect_zero, new_value, cmpxchg, MOV64_R0_1, EXIT]
}

/// Where the loader reads the running kernel's BTF.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF is readable: the loader relocates bind6's read of `skc_ipv6only` against
/// it (CO-RE), so the casts are of no use without it.
fn kernel_btf() -> Result<(), String> {
    std::fs::File::open(KERNEL_BTF).map(drop).map_err(|e| {
        format!("no kernel BTF to relocate the socket field read against: {KERNEL_BTF}: {e}")
    })
}

/// `return 1`, after calling `helper(ctx->sk)` on a socket-address context: the socket casts
/// take a socket, not the context, and the verifier checks the argument's type.
fn sock_cast_insns(helper: i32) -> Vec<Insn> {
    let load_sk = Insn {
        code: 0x79, // BPF_LDX | BPF_MEM | BPF_DW
        regs: 0x11, // r1 = *(u64 *)(r1 + off)
        off: SOCK_ADDR_SK_OFFSET,
        imm: 0,
    };
    let call = Insn {
        code: 0x85,
        regs: 0,
        off: 0,
        imm: helper,
    };
    vec![load_sk, call, MOV64_R0_1, EXIT]
}

/// Loads the program and closes it at once; `Err` holds the errno and the verifier's reason.
fn load(prog_type: u32, expected_attach_type: u32, insns: &[Insn]) -> Result<(), String> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: [0; 16],
        prog_ifindex: 0,
        expected_attach_type,
        pad: [0; 64],
    };
    // SAFETY: attr points at valid instructions, license and log buffer that outlive the call,
    // and its size is passed.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a file descriptor the kernel just gave us and nothing else owns.
        unsafe { nix::libc::close(fd as i32) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let text = String::from_utf8_lossy(&log);
    let first = verifier_reason(text.split('\0').next().unwrap_or_default()).to_owned();
    Err(if first.is_empty() {
        format!("the kernel refused the probe program: {err}")
    } else {
        format!("the kernel refused the probe program: {err} ({first})")
    })
}

/// The first line of a verifier log that is not the trace of an instruction (`N: ...`, which
/// the log level that makes it say why prints for every instruction it walks): why it refused.
fn verifier_reason(log: &str) -> &str {
    let is_trace = |line: &str| {
        line.split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    log.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !is_trace(l))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_shown_is_the_verifier_reason_not_its_instruction_trace() {
        let log = "0: (79) r1 = *(u64 *)(r1 +64)\n1: (85) call bpf_skc_to_tcp6_sock#136\n\
                   unknown func bpf_skc_to_tcp6_sock#136\nprocessed 2 insns\n";
        assert_eq!(
            verifier_reason(log),
            "unknown func bpf_skc_to_tcp6_sock#136"
        );
        assert_eq!(verifier_reason(""), "");
    }

    #[test]
    fn names_round_trip() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        assert_eq!(Feature::from_name("bogus"), None);
    }

    #[test]
    fn an_agent_outside_the_initial_netns_does_without_the_socket_option() {
        // The BPF probe (datapath::netns_cookie_through_bpf) stands in for SO_NETNS_COOKIE.
        assert!(!required_by_agent().contains(&Feature::SoNetnsCookie));
        assert!(!required_by_agent().contains(&Feature::NetnsCookieHelper));
    }
}
