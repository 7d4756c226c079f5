//! `bpf.lbMapMax` changed between two agents: the pinned maps are migrated to the new size
//! without dropping traffic, or the change is refused naming the option.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use aya::maps::MapData;
use ebpf::maps::SOCK_LB_SIZED_MAPS;
use lb::datapath::{ServiceMaps, SockLb, SockLbConfig};
use libtest_mimic::Failed;
use support::TestCgroup;

use super::{expect_tcp_balanced, program, support, test_services, BOTH};
use super::{CHILD_ROLE, SERVICE_IP};

fn config(map_max: u32) -> SockLbConfig {
    SockLbConfig {
        protocols: BOTH,
        map_max,
        host_namespace_only: false,
        bind_protection: true,
        host_netns_cookie: 0,
        external_ip_mitigation: true,
        netns_cookies: true,
        sock_v6only: true,
        conn_slots: ebpf::maps::SOCK_CONN_SLOTS,
    }
}

/// `(max_entries, id)` of each map sized by `bpf.lbMapMax`, as pinned.
pub fn sized_maps(pin_dir: &Path) -> Result<Vec<(&'static str, u32, u32)>, Failed> {
    SOCK_LB_SIZED_MAPS
        .iter()
        .map(|name| {
            let info = MapData::from_pin(pin_dir.join(name))?.info()?;
            Ok((*name, info.max_entries(), info.id()))
        })
        .collect()
}

/// `(name, id)` of every pinned map: an unchanged restart must adopt each one.
pub fn pinned_ids(pin_dir: &Path) -> Result<Vec<(&'static str, u32)>, Failed> {
    ebpf::maps::SOCK_LB_MAPS
        .iter()
        .map(|name| Ok((*name, MapData::from_pin(pin_dir.join(name))?.info()?.id())))
        .collect()
}

/// An agent with `bpf.lbMapMax=1024` that attached to `cgroup`, programmed the test services
/// and exited: its programs and maps stay pinned in `pin_dir`. Returns what the maps hold.
fn exited_at_1024(cgroup: &Path, pin_dir: &Path) -> Result<lb::datapath::MapContents, Failed> {
    let mut first = SockLb::load(config(1024), pin_dir)?;
    first.attach(cgroup)?;
    program(&mut first, &test_services())?;
    let held = ServiceMaps::open_pinned(pin_dir)?.read()?;
    drop(first);
    Ok(held)
}

/// A larger `bpf.lbMapMax` on restart: every sized map is replaced by one of the new size
/// holding the same entries, a connection made before keeps showing the service through
/// getpeername (its reverse entry moved), and new connections are balanced.
pub fn a_changed_lb_map_max_is_migrated() -> Result<(), Failed> {
    let cgroup = TestCgroup::new("resize")?;
    let bpffs = support::TestBpffs::new("resize")?;
    let before = exited_at_1024(&cgroup.path, &bpffs.path)?;

    let mut held = support::sandboxed_child(CHILD_ROLE, "held-tcp", &cgroup.path)?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = BufReader::new(held.stdout.take().ok_or("no stdout")?).lines();
    let first_line = lines
        .next()
        .ok_or("the held connection printed nothing")??;
    let service = SocketAddr::from((SERVICE_IP, 80)).to_string();
    if !first_line.starts_with("held ") || !first_line.ends_with(&service) {
        return Err(format!("the held connection was not translated: {first_line}").into());
    }

    let mut second = SockLb::load(config(2048), &bpffs.path)?;
    second.attach(&cgroup.path)?;
    for (name, max, _) in sized_maps(&bpffs.path)? {
        if max != 2048 {
            return Err(format!(
                "bpf.lbMapMax=2048 was not applied: the pinned {name} still holds {max}"
            )
            .into());
        }
    }
    if ServiceMaps::open_pinned(&bpffs.path)?.read()? != before {
        return Err("the resized maps do not hold what the old ones held".into());
    }
    held.stdin.take().ok_or("no stdin")?.write_all(b"go\n")?;
    let after = lines
        .next()
        .ok_or("the held connection printed nothing after")??;
    if after != format!("after {service}") {
        return Err(
            format!("a connection made before the resize lost its reverse entry: {after}").into(),
        );
    }
    if !held.wait()?.success() {
        return Err("the held connection's child failed".into());
    }
    expect_tcp_balanced(&cgroup.path)?;
    let leftovers: Vec<_> = std::fs::read_dir(&bpffs.path)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // bpffs shows its own maps.debug and progs.debug at the root of a mount.
        .filter(|n| {
            !ebpf::maps::SOCK_LB_MAPS.contains(&n.as_str())
                && n != lb::datapath::LINKS_DIR
                && !n.ends_with(".debug")
        })
        .collect();
    if !leftovers.is_empty() {
        return Err(format!("the migration left pins behind: {leftovers:?}").into());
    }
    Ok(())
}

/// A load with another `bpf.lbMapMax` given up before it attached (the agent loads while the
/// lists arrive; a failed list or first translation gives the load up): the old maps are
/// pinned again, of their size and with their entries, and nothing is left aside.
pub fn a_resize_given_up_before_attaching_leaves_the_old_maps() -> Result<(), Failed> {
    let cgroup = TestCgroup::new("resize-abandon")?;
    let bpffs = support::TestBpffs::new("resize-abandon")?;
    let before = exited_at_1024(&cgroup.path, &bpffs.path)?;

    let second = SockLb::load(config(2048), &bpffs.path)?;
    if !bpffs.path.join(lb::datapath::MIGRATE_DIR).exists() {
        return Err("the resize moved no map aside: nothing to give up".into());
    }
    second.abandon();
    for (name, max, _) in sized_maps(&bpffs.path)? {
        if max != 1024 {
            return Err(format!("{name} holds {max} entries after the resize was given up").into());
        }
    }
    if ServiceMaps::open_pinned(&bpffs.path)?.read()? != before {
        return Err("the maps put back do not hold what they held".into());
    }
    if bpffs.path.join(lb::datapath::MIGRATE_DIR).exists() {
        return Err("the given-up resize left its migrate directory".into());
    }
    expect_tcp_balanced(&cgroup.path)?;
    Ok(())
}

/// A `bpf.lbMapMax` too small for what the maps hold is refused, naming the option and the
/// way out, and the pinned maps are left as they were.
pub fn a_too_small_lb_map_max_is_refused() -> Result<(), Failed> {
    let bpffs = support::TestBpffs::new("shrink")?;
    let mut first = SockLb::load(config(1024), &bpffs.path)?;
    program(&mut first, &test_services())?;
    drop(first);
    let pinned = sized_maps(&bpffs.path)?;
    let err = match SockLb::load(config(4), &bpffs.path) {
        Ok(_) => return Err("bpf.lbMapMax=4 below the 9 service entries was accepted".into()),
        Err(e) => e.to_string(),
    };
    for needle in ["bpf.lbMapMax", "1024", "lbctl cleanup"] {
        if !err.contains(needle) {
            return Err(format!("the refusal does not say {needle}: {err}").into());
        }
    }
    if sized_maps(&bpffs.path)? != pinned {
        return Err("a refused resize changed the pinned maps".into());
    }
    Ok(())
}
