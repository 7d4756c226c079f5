//! What the socket programs cost per call, as the kernel counts it (`run_time_ns` /
//! `run_cnt` with BPF statistics on): `lb_sock4_connect` and `lb_sock_release` for TCP
//! connections to a ClusterIP and straight to a pod, with the connected sockets' translations
//! in the slot array or, with `--slots 0`, in the hash map alone (the build for kernels
//! without BPF atomics).
//!
//! Root. `cargo run -p lb --example sock_conn_cost -- --slots 65536 --connects 3000`. It makes
//! a cgroup, a bpffs and, for the client and its server, a network namespace of its own, and
//! removes them. Statistics are on only while it runs (`BPF_ENABLE_STATS`, a descriptor the
//! kernel counts: closing it turns them off unless someone else holds one); they cost every BPF
//! program on the machine some tens of ns per run meanwhile.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lb::config::Protocols;
use lb::datapath::{MapContents, SockLb, SockLbConfig};
use lb::model::{
    Backend, DesiredState, Frontend, L3n4Addr, L4Protocol, LbService, ServiceName, ServicePolicies,
    ServiceType,
};

const ROLE: &str = "SOCK_CONN_COST_CHILD";
const SERVICE: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 96, 0, 10), 80);
const BACKEND: (Ipv4Addr, u16) = (Ipv4Addr::new(127, 0, 0, 2), 8080);

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: u32| -> Result<u32, Error> {
        match args.iter().position(|a| a == flag) {
            Some(i) => Ok(args
                .get(i + 1)
                .ok_or(format!("{flag} needs a value"))?
                .parse()?),
            None => Ok(default),
        }
    };
    let connects = value("--connects", 3000)?;
    if let Ok(target) = std::env::var(ROLE) {
        return child(&target, connects);
    }
    let slots = value("--slots", ebpf::maps::SOCK_CONN_SLOTS)?;
    let name = format!("sock-conn-cost-{}", std::process::id());
    let cgroup = Cgroup::new(&name)?;
    let bpffs = Bpffs::new(&name)?;
    let mut lb = SockLb::load(
        SockLbConfig {
            protocols: Protocols {
                tcp: true,
                udp: true,
            },
            map_max: 65536,
            host_namespace_only: false,
            bind_protection: true,
            host_netns_cookie: 0,
            external_ip_mitigation: true,
            netns_cookies: true,
            sock_v6only: true,
            conn_slots: slots,
        },
        &bpffs.path,
    )?;
    lb.attach(&cgroup.path)?;
    let mut desired = DesiredState::new();
    desired
        .insert(LbService {
            frontend: Frontend::external(
                L3n4Addr::new(SERVICE.0.into(), SERVICE.1, L4Protocol::Tcp),
                ServiceType::ClusterIP,
            ),
            name: ServiceName {
                namespace: "default".into(),
                name: "svc".into(),
            },
            port_name: String::new(),
            no_local_backends: false,
            backends: vec![Backend::active(L3n4Addr::new(
                BACKEND.0.into(),
                BACKEND.1,
                L4Protocol::Tcp,
            ))],
            policies: ServicePolicies::default(),
        })
        .map_err(|_| "duplicate frontend")?;
    {
        let mut maps = lb.service_maps()?;
        let want = MapContents::build(&desired, &maps.read()?)?;
        maps.apply(&want)?;
    }
    let ids = program_ids(&bpffs.path)?;
    let _stats = enable_stats()?;
    println!("slots {slots}, {connects} connects per target");
    for target in ["service", "pod", "service", "pod"] {
        let before = stats(&ids)?;
        let status = child_command(&cgroup.path, target, connects)?.status()?;
        if !status.success() {
            return Err(format!("the {target} client failed ({status})").into());
        }
        let after = stats(&ids)?;
        let mut line = format!("{target:>8}:");
        for (name, (ns0, n0)) in &before {
            let (ns1, n1) = after[name];
            let calls = n1 - n0;
            let per = (ns1 - ns0).checked_div(calls).unwrap_or(0);
            line.push_str(&format!("  {name} {per} ns ({calls} runs)"));
        }
        println!("{line}");
    }
    drop(lb);
    Ok(())
}

/// The client: a server at [`BACKEND`] that writes a byte per connection, and `connects`
/// connections to `target` (the service or the backend itself), each read and closed.
fn child(target: &str, connects: u32) -> Result<(), Error> {
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !up.success() {
        return Err("ip link set lo up failed".into());
    }
    let listener = TcpListener::bind(BACKEND)?;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"x");
        }
    });
    let to = match target {
        "service" => SocketAddr::from(SERVICE),
        _ => SocketAddr::from(BACKEND),
    };
    for _ in 0..connects {
        let mut stream = TcpStream::connect(to)?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
    }
    Ok(())
}

/// This program as the client for `target`, in `cgroup` and a new network namespace.
fn child_command(cgroup: &Path, target: &str, connects: u32) -> Result<Command, Error> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE, target)
        .args(["--connects", &connects.to_string()]);
    // SAFETY: between fork and exec only async-signal-safe calls (write, unshare).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::write(procs.as_fd(), b"0")?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }
    Ok(cmd)
}

/// `name -> program id` of the programs linked in `pin_dir/links`, through `bpftool`.
fn program_ids(pin_dir: &Path) -> Result<Vec<(String, u64)>, Error> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(pin_dir.join(lb::datapath::LINKS_DIR))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('-'))
            .map(|(n, _)| n.to_owned())
            .ok_or("unexpected link name")?;
        if !["lb_sock4_connect", "lb_sock_release"].contains(&name.as_str()) {
            continue;
        }
        let json = Command::new("bpftool")
            .args(["-j", "link", "show", "pinned"])
            .arg(&path)
            .output()?;
        let link: serde_json::Value = serde_json::from_slice(&json.stdout)?;
        let id = link["prog_id"].as_u64().ok_or("no prog_id")?;
        out.push((name, id));
    }
    out.sort();
    Ok(out)
}

/// `name -> (run_time_ns, run_cnt)` of each program.
fn stats(ids: &[(String, u64)]) -> Result<std::collections::BTreeMap<String, (u64, u64)>, Error> {
    let mut out = std::collections::BTreeMap::new();
    for (name, id) in ids {
        let json = Command::new("bpftool")
            .args(["-j", "prog", "show", "id", &id.to_string()])
            .output()?;
        let prog: serde_json::Value = serde_json::from_slice(&json.stdout)?;
        let ns = prog["run_time_ns"].as_u64().unwrap_or(0);
        let cnt = prog["run_cnt"].as_u64().unwrap_or(0);
        out.insert(name.clone(), (ns, cnt));
    }
    Ok(out)
}

/// `BPF_ENABLE_STATS` of run time: on while the returned descriptor is open.
fn enable_stats() -> Result<std::os::fd::OwnedFd, Error> {
    const BPF_ENABLE_STATS: nix::libc::c_long = 32;
    #[repr(C)]
    struct Attr {
        kind: u32,
        pad: [u8; 124],
    }
    let attr = Attr {
        kind: 0, // BPF_STATS_RUN_TIME
        pad: [0; 124],
    };
    // SAFETY: attr is valid for the call and its size is passed.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            BPF_ENABLE_STATS,
            &attr as *const Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if fd < 0 {
        return Err(format!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error()).into());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nothing else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn new(name: &str) -> Result<Self, Error> {
        let root = netsim::cgroup2_mount().ok_or("no cgroup v2 mount")?;
        let path = root.join(name);
        std::fs::create_dir(&path)?;
        Ok(Cgroup { path })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..250 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("warning: cannot remove {}", self.path.display());
    }
}

struct Bpffs {
    path: PathBuf,
}

impl Bpffs {
    fn new(name: &str) -> Result<Self, Error> {
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)?;
        nix::mount::mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )?;
        Ok(Bpffs { path })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if nix::mount::umount(&self.path).is_ok() {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}
