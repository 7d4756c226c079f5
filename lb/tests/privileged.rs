//! Privileged tests: the socket-level programs on the host kernel.
//!
//! Each test loads its own copy of the programs and maps, attaches them to a cgroup of its own,
//! and runs the client and the backends in a child process inside that cgroup and inside a
//! fresh network namespace that has only loopback: the backends listen on 127.0.0.x, and a
//! service address that were not translated would be unreachable there, so no test packet can
//! ever leave the machine.
//!
//! Without root the tests are reported as ignored, with a line saying why; under `CI=true` they
//! fail instead, since CI must run this tier.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;

use ebpf::maps::{
    LbAddr, LbLocalAddr, LbSockConn, LbSockConnSlot, LbSockKey, LbSockValue, LB_LOCAL_ADDRS,
    LB_REVERSE_SK, LB_SOCK_CONN, LB_SOCK_CONN_SLOTS, SOCK_CONN_SLOTS,
};
use lb::config::Protocols;
use lb::datapath::{MapContents, ServiceMaps, SockLb, SockLbConfig};
use lb::model::{
    Backend, DesiredState, Frontend, L3n4Addr, L4Protocol, LbService, ServiceName, ServicePolicies,
    ServiceType,
};
use libtest_mimic::Failed;
use support::{TestBpffs, TestCgroup, TestFn};

#[path = "privileged/child.rs"]
mod child;
#[path = "privileged/lost_destination.rs"]
mod lost_destination;
#[path = "privileged/monitor.rs"]
mod monitor;
#[path = "privileged/resize.rs"]
mod resize;
#[path = "privileged/slots.rs"]
mod slots;
mod support;

/// Set in the child process to the role it plays.
const CHILD_ROLE: &str = "LB_PRIVILEGED_TEST_CHILD";

const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
/// An IPv6 service; its backends are [::1]:8080 and [::1]:8081 (IPv6 has one loopback address).
const SERVICE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
const BACKEND_PORTS6: [u16; 2] = [8080, 8081];
/// A UDP port of [`SERVICE_IP`] whose backend is IPv6, which the agent never lays out: the
/// IPv4 hooks must leave it alone without a trace.
const MISMATCHED_PORT: u16 = 54;

fn main() {
    if let Ok(role) = std::env::var(CHILD_ROLE) {
        child::run(&role);
        return;
    }
    let tests: [(&str, TestFn); 19] = [
        (
            "sock_lb::clusterip_tcp_connects_to_a_backend_and_getpeername_shows_the_service_and_close_forgets_it",
            clusterip_tcp,
        ),
        (
            "sock_lb::clusterip_udp_unconnected_replies_come_from_the_service",
            clusterip_udp_unconnected,
        ),
        (
            "sock_lb::tcp_only_protocols_leave_udp_alone",
            tcp_only_protocols,
        ),
        (
            "sock_lb::ipv6_clusterip_tcp_and_close_forgets_it",
            ipv6_clusterip_tcp,
        ),
        (
            "sock_lb::a_translation_the_hook_cannot_store_leaves_no_reverse_entry",
            unstorable_translation,
        ),
        (
            "sock_lb::a_refused_tcp_connect_leaves_no_reverse_entry_after_close",
            lost_destination::refused_tcp_connect_leaves_no_reverse_entry,
        ),
        (
            "sock_lb::a_udp_socket_disconnected_with_af_unspec_leaves_no_reverse_entry_after_close",
            lost_destination::af_unspec_then_close_leaves_no_reverse_entry,
        ),
        (
            "sock_lb::a_udp_reconnect_keeps_only_the_new_services_entry_and_none_after_close",
            lost_destination::reconnect_keeps_only_the_new_entry,
        ),
        (
            "sock_lb::a_udp_socket_reconnected_straight_to_a_backend_shows_that_backend",
            lost_destination::reconnect_straight_to_a_backend_shows_it,
        ),
        (
            "sock_lb::sockets_sharing_a_slot_are_each_translated_and_a_closed_sockets_slot_is_free",
            slots::sockets_sharing_a_slot,
        ),
        (
            "host::the_bpf_netns_cookie_probe_agrees_with_so_netns_cookie",
            netns_cookie_probe,
        ),
        (
            "maps::a_restarted_agent_adopts_the_pinned_maps_and_changes_only_what_changed",
            restart_adopts_pinned_maps,
        ),
        (
            "sock_lb::more_node_addresses_than_the_map_holds_are_reported_and_services_keep_working",
            many_node_addresses,
        ),
        (
            "monitor::two_monitors_at_once_each_see_every_event",
            monitor::two_monitors_each_see_every_event,
        ),
        (
            "monitor::a_monitor_killed_with_sigkill_leaves_tracing_off",
            monitor::a_killed_monitor_leaves_tracing_off,
        ),
        (
            "maps::a_changed_lb_map_max_is_migrated_without_dropping_traffic",
            resize::a_changed_lb_map_max_is_migrated,
        ),
        (
            "maps::a_lb_map_max_too_small_for_the_entries_is_refused_naming_the_option",
            resize::a_too_small_lb_map_max_is_refused,
        ),
        (
            "maps::a_resize_given_up_before_attaching_leaves_the_old_maps_in_place",
            resize::a_resize_given_up_before_attaching_leaves_the_old_maps,
        ),
        (
            "sock_lb::replaced_and_removed_links_are_off_the_cgroup_when_the_call_returns",
            links_leave_the_cgroup_at_once,
        ),
    ];
    support::run_tier("privileged", tests.into());
}

/// One ClusterIP frontend with active backends.
fn cluster_ip(ip: IpAddr, port: u16, protocol: L4Protocol, backends: &[SocketAddr]) -> LbService {
    LbService {
        frontend: Frontend::external(L3n4Addr::new(ip, port, protocol), ServiceType::ClusterIP),
        name: ServiceName {
            namespace: "default".into(),
            name: format!("svc-{port}"),
        },
        port_name: String::new(),
        no_local_backends: false,
        backends: backends
            .iter()
            .map(|b| Backend::active(L3n4Addr::new(b.ip(), b.port(), protocol)))
            .collect(),
        policies: ServicePolicies::default(),
    }
}

/// The test services: TCP and UDP on the IPv4 service address, TCP on the IPv6 one.
fn test_services() -> DesiredState {
    let v4 = |port| BACKENDS.map(|ip| SocketAddr::from((ip, port)));
    let v6 = BACKEND_PORTS6.map(|port| SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
    let mut state = DesiredState::new();
    for svc in [
        cluster_ip(SERVICE_IP.into(), 80, L4Protocol::Tcp, &v4(8080)),
        cluster_ip(SERVICE_IP.into(), 53, L4Protocol::Udp, &v4(5353)),
        cluster_ip(SERVICE_IP6.into(), 80, L4Protocol::Tcp, &v6),
    ] {
        state
            .insert(svc)
            .map_err(|_| "duplicate test frontend")
            .unwrap();
    }
    state
}

/// Writes `desired` into the maps of `lb`.
fn program(lb: &mut SockLb, desired: &DesiredState) -> Result<lb::datapath::ApplyReport, Failed> {
    let mut maps = lb.service_maps()?;
    let want = MapContents::build(desired, &maps.read()?)?;
    Ok(maps.apply(&want)?)
}

/// The programs loaded with maps pinned in a fresh bpffs, attached to a fresh cgroup, with the
/// test's services written.
fn setup(test: &str, protocols: Protocols) -> Result<(SockLb, TestCgroup, TestBpffs), Failed> {
    setup_with_slots(test, protocols, SOCK_CONN_SLOTS)
}

/// [`setup`] with `conn_slots` slots of `lb_sock_conn_slots_v1` in use (0: the programs built
/// without atomics, as on kernels before 5.12).
fn setup_with_slots(
    test: &str,
    protocols: Protocols,
    conn_slots: u32,
) -> Result<(SockLb, TestCgroup, TestBpffs), Failed> {
    let cgroup = TestCgroup::new(test)?;
    let bpffs = TestBpffs::new(test)?;
    let mut lb = SockLb::load(
        SockLbConfig {
            protocols,
            map_max: 1024,
            host_namespace_only: false,
            bind_protection: true,
            host_netns_cookie: 0,
            external_ip_mitigation: true,
            netns_cookies: true,
            sock_v6only: true,
            conn_slots,
        },
        &bpffs.path,
    )?;
    lb.attach(&cgroup.path)?;
    program(&mut lb, &test_services())?;
    Ok((lb, cgroup, bpffs))
}

/// Runs the child `role` in `cgroup` and a new network namespace; returns its stdout lines.
fn run_child(role: &str, cgroup: &Path) -> Result<Vec<String>, Failed> {
    let mut cmd = support::sandboxed_child(CHILD_ROLE, role, cgroup)?;
    cmd.env("LB_TEST_CGROUP", cgroup);
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let lines: Vec<String> = std::io::BufReader::new(stdout)
        .lines()
        .collect::<Result<_, _>>()?;
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("child {role} failed ({status}); output: {lines:?}").into());
    }
    Ok(lines)
}

/// The lines of `kind` (`tcp answered-by peer`), split in fields.
fn records<'a>(lines: &'a [String], kind: &str) -> Vec<Vec<&'a str>> {
    lines
        .iter()
        .filter_map(|l| {
            l.strip_prefix(kind)
                .map(|rest| rest.split_whitespace().collect())
        })
        .collect()
}

/// Checks the child's `TAG answer peer` lines: one per attempt, every backend in `backends`
/// answered and nothing else did, and `peer_call` (getpeername, recvfrom) showed `service`.
fn expect_balanced(
    lines: &[String],
    tag: &str,
    backends: &[SocketAddr],
    service: SocketAddr,
    peer_call: &str,
) -> Result<(), Failed> {
    let seen = records(lines, &format!("{tag} "));
    if seen.len() != child::ATTEMPTS {
        return Err(format!("expected {} {tag} answers, got {lines:?}", child::ATTEMPTS).into());
    }
    let backends: Vec<String> = backends.iter().map(ToString::to_string).collect();
    if let Some(missing) = backends
        .iter()
        .find(|b| !seen.iter().any(|r| r[0] == b.as_str()))
    {
        return Err(format!("backend {missing} never answered: {seen:?}").into());
    }
    if let Some(r) = seen
        .iter()
        .find(|r| !backends.iter().any(|b| r[0] == b.as_str()))
    {
        return Err(format!("{} answered, which is not a backend", r[0]).into());
    }
    let service = service.to_string();
    if let Some(r) = seen.iter().find(|r| r[1] != service) {
        return Err(format!("{peer_call} gave {} instead of the service {service}", r[1]).into());
    }
    Ok(())
}

/// The child's TCP connections to the test service from the cgroup at `cgroup`: each answered
/// by one of its backends, every backend used, getpeername showing the service.
fn expect_tcp_balanced(cgroup: &Path) -> Result<(), Failed> {
    let lines = run_child("tcp", cgroup)?;
    expect_balanced(
        &lines,
        "tcp",
        &v4_backends(8080),
        SocketAddr::from((SERVICE_IP, 80)),
        "getpeername",
    )
}

/// The IPv4 backends on `port`.
fn v4_backends(port: u16) -> Vec<SocketAddr> {
    BACKENDS
        .iter()
        .map(|ip| SocketAddr::from((*ip, port)))
        .collect()
}

const BOTH: Protocols = Protocols {
    tcp: true,
    udp: true,
};

/// On kernels without `SO_NETNS_COOKIE` the agent learns its namespace's cookie from a BPF
/// hook; on this one both ways exist, and in a fresh namespace they must give the same cookie.
fn netns_cookie_probe() -> Result<(), Failed> {
    let cgroup = TestCgroup::new("netns-cookie")?;
    let lines = run_child("netns-cookie", &cgroup.path)?;
    match records(&lines, "netns-cookie ").first().map(Vec::as_slice) {
        Some([probed, option]) if probed == option && *probed != "0" => Ok(()),
        other => Err(format!(
            "the BPF probe and SO_NETNS_COOKIE disagree (probe, option): {other:?}"
        )
        .into()),
    }
}

/// A pinned map of `bpffs`.
fn open_pinned(bpffs: &TestBpffs, name: &str) -> Result<aya::maps::MapData, Failed> {
    let path = bpffs.path.join(name);
    aya::maps::MapData::from_pin(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()).into())
}

/// Connected sockets' translations as pinned in `bpffs`.
#[derive(Debug, Default)]
struct ConnTranslations {
    /// `(slot, its cookie field, translation)` of every slot of `lb_sock_conn_slots_v1` that
    /// is not free (a claimed, unpublished one too: its cookie has the claim bit).
    slots: Vec<(u32, u64, LbSockConn)>,
    /// `(cookie, translation)` of every `lb_sock_conn_v1` entry.
    entries: Vec<(u64, LbSockConn)>,
}

impl ConnTranslations {
    fn read(bpffs: &TestBpffs) -> Result<Self, Failed> {
        let slots: aya::maps::Array<_, LbSockConnSlot> = aya::maps::Array::try_from(
            aya::maps::Map::Array(open_pinned(bpffs, LB_SOCK_CONN_SLOTS)?),
        )?;
        let conns: aya::maps::HashMap<_, u64, LbSockConn> = aya::maps::HashMap::try_from(
            aya::maps::Map::LruHashMap(open_pinned(bpffs, LB_SOCK_CONN)?),
        )?;
        let mut out = ConnTranslations::default();
        for (index, slot) in (0..).zip(slots.iter()) {
            let slot = slot?;
            if slot.cookie != 0 {
                out.slots.push((index, slot.cookie, slot.conn));
            }
        }
        for entry in conns.iter() {
            out.entries.push(entry?);
        }
        Ok(out)
    }

    /// The frontend ports (host order) of all of them.
    fn frontend_ports(&self) -> Vec<u16> {
        let slots = self.slots.iter().map(|(_, _, conn)| conn);
        let entries = self.entries.iter().map(|(_, conn)| conn);
        slots
            .chain(entries)
            .map(|c| u16::from_be(c.orig.port))
            .collect()
    }
}

/// The frontend ports (host order) of what the hooks remember in `bpffs`: of connected
/// sockets' translations (`lb_sock_conn_slots_v1` and `lb_sock_conn_v1`), and of unconnected
/// sends' (`lb_reverse_sk_v1`).
fn remembered_frontend_ports(bpffs: &TestBpffs) -> Result<(Vec<u16>, Vec<u16>), Failed> {
    let sends: aya::maps::HashMap<_, LbSockKey, LbSockValue> = aya::maps::HashMap::try_from(
        aya::maps::Map::LruHashMap(open_pinned(bpffs, LB_REVERSE_SK)?),
    )?;
    let connected = ConnTranslations::read(bpffs)?.frontend_ports();
    let sent = sends
        .iter()
        .map(|entry| Ok(u16::from_be(entry?.1.port)))
        .collect::<Result<_, Failed>>()?;
    Ok((connected, sent))
}

/// Once the child's sockets are closed, nothing they translated is left: sock_release deleted
/// what each connected socket kept under its cookie (the map holds live sockets only), and no
/// send wrote an entry (the sends here either go nowhere translated or are checked elsewhere).
fn expect_no_reverse_entries(bpffs: &TestBpffs) -> Result<(), Failed> {
    let (connected, sent) = remembered_frontend_ports(bpffs)?;
    if !(connected.is_empty() && sent.is_empty()) {
        return Err(format!(
            "entries outlived their closed sockets: connected sockets' for frontend ports \
             {connected:?}, sends' for {sent:?}"
        )
        .into());
    }
    Ok(())
}

/// An IPv4 socket sent to a frontend whose backend is IPv6: the hook cannot write the backend
/// into its context, so the socket keeps its destination and no reverse entry may claim it
/// went to the backend.
fn unstorable_translation() -> Result<(), Failed> {
    let (mut lb, cgroup, bpffs) = setup("unstorable", BOTH)?;
    let mut desired = test_services();
    let backend = SocketAddr::from((Ipv6Addr::LOCALHOST, 5354));
    desired
        .insert(cluster_ip(
            SERVICE_IP.into(),
            MISMATCHED_PORT,
            L4Protocol::Udp,
            &[backend],
        ))
        .map_err(|_| "duplicate test frontend")?;
    program(&mut lb, &desired)?;
    let lines = run_child("udp-to-ipv6-backend", &cgroup.path)?;
    if !lines.iter().any(|l| l.starts_with("udp-")) {
        return Err(format!("the child said {lines:?}").into());
    }
    expect_no_reverse_entries(&bpffs)
}

fn clusterip_tcp() -> Result<(), Failed> {
    let (_lb, cgroup, bpffs) = setup("tcp", BOTH)?;
    expect_tcp_balanced(&cgroup.path)?;
    expect_no_reverse_entries(&bpffs)
}

fn clusterip_udp_unconnected() -> Result<(), Failed> {
    let (_lb, cgroup, _bpffs) = setup("udp", BOTH)?;
    let lines = run_child("udp", &cgroup.path)?;
    expect_balanced(
        &lines,
        "udp",
        &v4_backends(5353),
        SocketAddr::from((SERVICE_IP, 53)),
        "recvfrom",
    )
}

fn tcp_only_protocols() -> Result<(), Failed> {
    let (_lb, cgroup, _bpffs) = setup(
        "tcponly",
        Protocols {
            tcp: true,
            udp: false,
        },
    )?;
    let lines = run_child("udp-untranslated", &cgroup.path)?;
    match records(&lines, "udp-error ").first() {
        // In a namespace with only loopback, an untranslated service address is unreachable.
        Some(r) if r.join(" ").contains("unreachable") => {}
        other => {
            return Err(
                format!("UDP to the service was not left alone: {other:?} in {lines:?}").into(),
            )
        }
    }
    expect_tcp_balanced(&cgroup.path)
}

fn ipv6_clusterip_tcp() -> Result<(), Failed> {
    let (_lb, cgroup, bpffs) = setup("tcp6", BOTH)?;
    let lines = run_child("tcp6", &cgroup.path)?;
    let backends = BACKEND_PORTS6.map(|port| SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
    expect_balanced(
        &lines,
        "tcp6",
        &backends,
        SocketAddr::from((SERVICE_IP6, 80)),
        "getpeername",
    )?;
    expect_no_reverse_entries(&bpffs)
}

/// Maps pinned by one agent are found by the next: nothing is rewritten when nothing changed,
/// ids stay, and a removed backend removes exactly its entries. `lbctl`'s read-only view of the
/// pinned maps sees the same.
/// The attach types that hold a program on `cgroup` more than once: after a generation swap
/// each hook must hold exactly one (the new generation's), after a detach none.
fn programs_per_hook(cgroup: &Path) -> Result<std::collections::BTreeMap<String, usize>, Failed> {
    let mut count = std::collections::BTreeMap::new();
    for p in lb::host::cgroup_query::attached_programs(cgroup)? {
        *count.entry(p.attach_type.to_owned()).or_insert(0) += 1;
    }
    Ok(count)
}

/// A second `attach` (a restarted agent's new generation) leaves one program per hook as soon
/// as it returns, and detaching every pinned link leaves none: nothing waits for bpffs to drop
/// its reference, which happens later (after an RCU grace period, then a workqueue).
fn links_leave_the_cgroup_at_once() -> Result<(), Failed> {
    let (mut lb, cgroup, bpffs) = setup("links-at-once", BOTH)?;
    let first = programs_per_hook(&cgroup.path)?;
    if first.is_empty() || first.values().any(|&n| n != 1) {
        return Err(format!("after the first attach: {first:?}").into());
    }
    for round in 0..20 {
        lb.attach(&cgroup.path)?;
        let now = programs_per_hook(&cgroup.path)?;
        if now != first {
            return Err(format!(
                "right after generation swap {round}, the hooks hold {now:?}, expected {first:?}"
            )
            .into());
        }
    }
    let links = lb::datapath::pinned_links(&bpffs.path.join(lb::datapath::LINKS_DIR))?;
    if links.len() != first.len() {
        return Err(format!("{} links pinned for {} hooks", links.len(), first.len()).into());
    }
    for (path, _) in links {
        if lb::datapath::detach_and_unpin(&path)? != lb::datapath::Unpinned::Removed {
            return Err(format!("{} was not there to remove", path.display()).into());
        }
    }
    let left = programs_per_hook(&cgroup.path)?;
    if !left.is_empty() {
        return Err(format!("right after detaching every link, the hooks hold {left:?}").into());
    }
    Ok(())
}

fn restart_adopts_pinned_maps() -> Result<(), Failed> {
    let bpffs = TestBpffs::new("restart")?;
    let config = SockLbConfig {
        protocols: BOTH,
        map_max: 1024,
        host_namespace_only: false,
        bind_protection: true,
        host_netns_cookie: 0,
        external_ip_mitigation: true,
        netns_cookies: true,
        sock_v6only: true,
        conn_slots: SOCK_CONN_SLOTS,
    };
    let desired = test_services();
    let first = {
        let mut lb = SockLb::load(config, &bpffs.path)?;
        let report = program(&mut lb, &desired)?;
        if report.written == 0 {
            return Err("the first agent wrote nothing".into());
        }
        lb.service_maps()?.read()?
    }; // the first agent exits; its maps stay pinned
    let ids = resize::pinned_ids(&bpffs.path)?;
    let mut lb = SockLb::load(config, &bpffs.path)?;
    if resize::pinned_ids(&bpffs.path)? != ids {
        return Err("an unchanged restart replaced pinned maps instead of adopting them".into());
    }
    if lb.service_maps()?.read()? != first {
        return Err("the second agent does not see the first one's maps".into());
    }
    let report = program(&mut lb, &desired)?;
    if report.written != 0 || report.deleted != 0 {
        return Err(format!("an unchanged state rewrote entries: {report:?}").into());
    }
    // Drop one backend of the TCP service: its slot and (unshared) backend entry go; the
    // service entry is rewritten with one slot fewer; every id that remains is unchanged.
    let mut smaller = DesiredState::new();
    for mut svc in desired.services().cloned() {
        if svc.frontend.addr.port == 80 && svc.frontend.addr.ip == IpAddr::from(SERVICE_IP) {
            svc.backends.truncate(1);
        }
        smaller.insert(svc).map_err(|_| "duplicate")?;
    }
    let report = program(&mut lb, &smaller)?;
    if report
        != (lb::datapath::ApplyReport {
            written: 1,
            deleted: 2,
        })
    {
        return Err(format!("removing one backend should write the service entry and delete a slot and a backend: {report:?}").into());
    }
    let after = ServiceMaps::open_pinned(&bpffs.path)?.read()?;
    let before: Vec<_> = first
        .frontends()
        .into_iter()
        .map(|f| (f.id, f.frontend))
        .collect();
    let now: Vec<_> = after
        .frontends()
        .into_iter()
        .map(|f| (f.id, f.frontend))
        .collect();
    if before != now {
        return Err(format!("frontend ids changed: {before:?} -> {now:?}").into());
    }
    let tcp = after
        .frontends()
        .into_iter()
        .find(|f| f.frontend.addr.port == 80 && f.frontend.addr.ip == IpAddr::from(SERVICE_IP));
    match tcp {
        Some(f) if f.backends.len() == 1 => Ok(()),
        other => Err(format!("the TCP service should have one backend left: {other:?}").into()),
    }
}

/// A node with more addresses than `lb_local_addrs_v1` holds (1 200 on one device, as
/// kube-proxy's IPVS dummy device carries): the writer programs what fits, reports the rest
/// naming the map and the option, and services keep working. `docker*` addresses are left out.
fn many_node_addresses() -> Result<(), Failed> {
    let (mut lb, cgroup, bpffs) = setup("addrs", BOTH)?;
    let lines = run_child("node-addrs", &cgroup.path)?;
    let addrs: Vec<IpAddr> = records(&lines, "addr ")
        .iter()
        .map(|r| r[0].parse())
        .collect::<Result<_, _>>()?;
    if addrs.iter().any(|a| a.to_string() == child::DOCKER_ADDR) {
        return Err(format!(
            "docker0's {} is among the node's addresses",
            child::DOCKER_ADDR
        )
        .into());
    }
    if addrs.len() < child::NODE_ADDRS {
        return Err(format!(
            "the child found {} addresses, expected at least {}",
            addrs.len(),
            child::NODE_ADDRS
        )
        .into());
    }
    let report = lb.set_local_addresses(&addrs).map_err(|e| {
        format!(
            "writing {} node addresses into a map of 1024: {e}",
            addrs.len()
        )
    })?;
    if report.programmed != 1024 || report.found != addrs.len() {
        return Err(format!("expected 1024 of {} programmed: {report:?}", addrs.len()).into());
    }
    let warning = report.warning().ok_or("a full map gives no warning")?;
    for needle in [LB_LOCAL_ADDRS, "bpf.lbMapMax"] {
        if !warning.contains(needle) {
            return Err(format!("the warning does not name {needle}: {warning}").into());
        }
    }
    let path = bpffs.path.join(LB_LOCAL_ADDRS);
    let map = aya::maps::MapData::from_pin(&path)?;
    let map: aya::maps::HashMap<_, LbAddr, LbLocalAddr> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(map))?;
    if map.keys().count() != 1024 {
        return Err(format!("{LB_LOCAL_ADDRS} holds {} entries", map.keys().count()).into());
    }
    // Again with the same addresses: nothing changes, nothing fails.
    let again = lb.set_local_addresses(&addrs)?;
    if again.changed != 0 {
        return Err(format!("an unchanged address list rewrote entries: {again:?}").into());
    }
    expect_tcp_balanced(&cgroup.path)
}
