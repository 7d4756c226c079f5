//! Privileged tests of netsim itself: two nodes with a pod each, traffic between them, a capture,
//! and cleanup after drop and after a panic.
//!
//! Without root (or without cgroup v2) the tests are reported as ignored, with a line saying
//! why; under `CI=true` they fail instead, since CI must run this tier.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libtest_mimic::{Arguments, Failed};
use netsim::{ClientMode, Node, NodeSpec, Pod, PodSpec, Proto, Topology};

type TestFn = fn() -> Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let tier = netsim::Tier::detect("netsim privileged tests");
    let tests: [(&str, TestFn); 14] = [
        (
            "pods::tcp_across_nodes_answers_with_the_backend_identity",
            tcp_across_nodes,
        ),
        ("pods::tcp_across_nodes_over_ipv6", tcp_across_nodes_v6),
        (
            "pods::udp_connected_and_unconnected_across_nodes",
            udp_across_nodes,
        ),
        (
            "pods::http_across_nodes_answers_200_with_the_identity",
            http_across_nodes,
        ),
        (
            "pods::spawned_http_server_answers_a_plain_tcp_request",
            spawned_http_server,
        ),
        (
            "pods::client_runs_in_the_pod_cgroup_under_the_node_cgroup",
            client_cgroup,
        ),
        (
            "pods::spawned_server_binds_before_returning",
            spawned_server,
        ),
        (
            "pods::held_sockets_keep_their_connection_across_exchanges",
            held_sockets,
        ),
        ("nodes::node_to_node_over_eth0_and_eth1", node_to_node),
        ("capture::tcp_syn_seen_on_node_eth0", capture_syn),
        ("cleanup::drop_removes_everything", cleanup_after_drop),
        (
            "cleanup::panic_in_a_closure_still_cleans_up",
            cleanup_after_panic,
        ),
        (
            "cleanup::a_failed_pod_leaves_nothing_behind",
            cleanup_after_failed_pod,
        ),
        (
            "cleanup::a_new_topology_reclaims_what_a_killed_process_left",
            reclaim_after_kill,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, test)| tier.trial(name, test))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Two nodes on one segment (and a second one), each with a pod, both families.
struct TwoNodes {
    topo: Topology,
    a: Node,
    b: Node,
    client: Pod,
    backend: Pod,
}

fn two_nodes() -> Result<TwoNodes, Failed> {
    let mut topo = Topology::new()?;
    let a = topo.add_node(
        NodeSpec::new("a")
            .eth0("192.168.56.11/24".parse()?)
            .eth0("fd00:56::11/64".parse()?)
            .eth1("192.168.57.11/24".parse()?)
            .pod_cidr("10.0.1.0/24".parse()?)
            .pod_cidr("fd00:10:1::/64".parse()?),
    )?;
    let b = topo.add_node(
        NodeSpec::new("b")
            .eth0("192.168.56.12/24".parse()?)
            .eth0("fd00:56::12/64".parse()?)
            .eth1("192.168.57.12/24".parse()?)
            .pod_cidr("10.0.2.0/24".parse()?)
            .pod_cidr("fd00:10:2::/64".parse()?),
    )?;
    let client = topo.add_pod(
        &a,
        PodSpec::new("client", "10.0.1.5".parse()?).ipv6("fd00:10:1::5".parse()?),
    )?;
    let backend = topo.add_pod(
        &b,
        PodSpec::new("backend", "10.0.2.7".parse()?).ipv6("fd00:10:2::7".parse()?),
    )?;
    Ok(TwoNodes {
        topo,
        a,
        b,
        client,
        backend,
    })
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what().into())
    }
}

/// The exchange answered by `identity`, which saw `client_ip` as the source, and the client's
/// peer is `target`.
fn check_reply(
    reply: &netsim::Reply,
    identity: &str,
    client_ip: IpAddr,
    target: SocketAddr,
) -> Result<(), Failed> {
    check(reply.error.is_none(), || {
        format!("exchange failed: {reply:?}")
    })?;
    check(reply.identity() == Some(identity), || {
        format!("expected {identity} to answer: {reply:?}")
    })?;
    check(
        reply.seen_by_server().map(|a| a.ip()) == Some(client_ip),
        || format!("server should see {client_ip}: {reply:?}"),
    )?;
    check(reply.peer == Some(target), || {
        format!("client's peer should be {target}: {reply:?}")
    })
}

fn tcp_across_nodes() -> Result<(), Failed> {
    let t = two_nodes()?;
    let target: SocketAddr = "10.0.2.7:8080".parse()?;
    let _server = t.backend.server(Proto::Tcp, target, "backend-b")?;
    for reply in t.client.client(ClientMode::Tcp, target, 3)? {
        check_reply(&reply, "backend-b", t.client.ipv4().into(), target)?;
    }
    Ok(())
}

fn tcp_across_nodes_v6() -> Result<(), Failed> {
    let t = two_nodes()?;
    let target: SocketAddr = "[fd00:10:2::7]:8080".parse()?;
    let _server = t.backend.server(Proto::Tcp, target, "backend-b6")?;
    let reply = t.client.client_once(ClientMode::Tcp, target)?;
    let client_ip = t.client.ipv6().ok_or("client has IPv6")?;
    check_reply(&reply, "backend-b6", client_ip.into(), target)
}

fn http_across_nodes() -> Result<(), Failed> {
    let t = two_nodes()?;
    let target: SocketAddr = "10.0.2.7:80".parse()?;
    let _server = t.backend.server(Proto::Http, target, "backend-h")?;
    for reply in t.client.client(ClientMode::Http, target, 3)? {
        check_reply(&reply, "backend-h", t.client.ipv4().into(), target)?;
    }
    Ok(())
}

/// The `netsim-server http` process answers a request written by hand, as curl would send it.
fn spawned_http_server() -> Result<(), Failed> {
    use std::io::{Read, Write};
    let t = two_nodes()?;
    let (_server, bound) =
        t.backend
            .spawn_server(Proto::Http, "10.0.2.7:0".parse()?, "backend-hp")?;
    let response = t.b.in_netns(move || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(bound)?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })??;
    check(response.starts_with("HTTP/1.1 200 OK\r\n"), || {
        format!("status line: {response:?}")
    })?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body);
    check(
        body.is_some_and(|b| b.starts_with("backend-hp ") && b.ends_with('\n')),
        || format!("body should be the identity line: {response:?}"),
    )
}

/// A held socket keeps exchanging with the same server over one connection.
fn held_sockets() -> Result<(), Failed> {
    let t = two_nodes()?;
    let target: SocketAddr = "10.0.2.7:8080".parse()?;
    let _tcp = t.backend.server(Proto::Tcp, target, "backend-t")?;
    let _udp = t.backend.server(Proto::Udp, target, "backend-u")?;
    for (mode, identity) in [
        (ClientMode::Tcp, "backend-t"),
        (ClientMode::UdpConnected, "backend-u"),
    ] {
        let (mut held, first) = t.client.hold(mode, target)?;
        check_reply(&first, identity, t.client.ipv4().into(), target)?;
        for _ in 0..3 {
            let reply = held.send()?;
            check_reply(&reply, identity, t.client.ipv4().into(), target)?;
            // The same socket: the server saw the same client port every time.
            check(reply.seen_by_server() == first.seen_by_server(), || {
                format!("{mode:?}: a new source port, so not the held socket: {reply:?} after {first:?}")
            })?;
        }
        held.close()?;
    }
    // Nothing listens on this port: the held TCP socket reports the refusal and exits.
    let (_held, refused) = t.client.hold(ClientMode::Tcp, "10.0.2.7:8081".parse()?)?;
    check(refused.errno == Some(libc::ECONNREFUSED), || {
        format!("expected ECONNREFUSED: {refused:?}")
    })
}

fn udp_across_nodes() -> Result<(), Failed> {
    let t = two_nodes()?;
    let target: SocketAddr = "10.0.2.7:5353".parse()?;
    let _server = t.backend.server(Proto::Udp, target, "backend-u")?;
    for mode in [ClientMode::UdpConnected, ClientMode::UdpUnconnected] {
        for reply in t.client.client(mode, target, 2)? {
            check_reply(&reply, "backend-u", t.client.ipv4().into(), target)?;
        }
    }
    Ok(())
}

/// The cgroup (relative to the cgroup2 mount) that process `pid` is in.
fn cgroup_of(pid: u32) -> Result<PathBuf, Failed> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 line")?;
    let root = netsim::cgroup2_mount().ok_or("no cgroup2 mount")?;
    Ok(root.join(rel.trim_start_matches('/')))
}

fn client_cgroup() -> Result<(), Failed> {
    let t = two_nodes()?;
    check(
        t.client.cgroup_path().parent() == Some(t.a.cgroup_path()),
        || "the pod's cgroup is a child of its node's".into(),
    )?;
    check(
        t.a.cgroup_path().parent() == Some(t.topo.cgroup_path()),
        || "the node's cgroup is a child of the topology's".into(),
    )?;
    // A process spawned in the pod is in the pod's cgroup and the pod's namespace.
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let process = t.client.spawn(cmd)?;
    let cgroup = cgroup_of(process.pid())?;
    check(cgroup == t.client.cgroup_path(), || {
        format!("spawned process is in {}", cgroup.display())
    })?;
    let ns_of = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let child_ns = ns_of(Path::new(&format!("/proc/{}/ns/net", process.pid())))?;
    check(child_ns == ns_of(t.client.netns_path())?, || {
        "spawned process is not in the pod's namespace".into()
    })
}

fn spawned_server() -> Result<(), Failed> {
    let t = two_nodes()?;
    let (server, bound) =
        t.backend
            .spawn_server(Proto::Tcp, "10.0.2.7:0".parse()?, "backend-proc")?;
    check(bound.port() != 0, || "the kernel chose a port".into())?;
    check(cgroup_of(server.pid())? == t.backend.cgroup_path(), || {
        "server process is in the backend's cgroup".into()
    })?;
    let reply = t.client.client_once(ClientMode::Tcp, bound)?;
    check_reply(&reply, "backend-proc", t.client.ipv4().into(), bound)
}

fn node_to_node() -> Result<(), Failed> {
    let t = two_nodes()?;
    for (target, from) in [
        ("192.168.56.12:9000", "192.168.56.11"),
        ("[fd00:56::12]:9000", "fd00:56::11"),
        ("192.168.57.12:9000", "192.168.57.11"),
    ] {
        let target: SocketAddr = target.parse()?;
        let _server = t.b.server(Proto::Tcp, target, "node-b")?;
        let reply = t.a.client_once(ClientMode::Tcp, target)?;
        check_reply(&reply, "node-b", from.parse()?, target)?;
    }
    // A node reaches another node's pod through the pod CIDR route.
    let target: SocketAddr = "10.0.2.7:9001".parse()?;
    let _server = t.backend.server(Proto::Udp, target, "backend")?;
    let reply = t.a.client_once(ClientMode::UdpUnconnected, target)?;
    check_reply(&reply, "backend", "192.168.56.11".parse()?, target)
}

fn capture_syn() -> Result<(), Failed> {
    let t = two_nodes()?;
    let target: SocketAddr = "10.0.2.7:8080".parse()?;
    let _server = t.backend.server(Proto::Tcp, target, "backend")?;
    let capture = t.a.capture("eth0")?;
    let reply = t.client.client_once(ClientMode::Tcp, target)?;
    check(reply.error.is_none(), || format!("{reply:?}"))?;
    let frames = capture.stop();
    let client_port = reply.local.ok_or("client reports its address")?.port();
    let syn = frames.iter().find(|f| f.is_tcp_syn());
    let syn = syn.ok_or_else(|| format!("no SYN among {} frames", frames.len()))?;
    check(syn.src_ip == Some(t.client.ipv4().into()), || {
        format!("SYN from {:?}", syn.src_ip)
    })?;
    check(syn.dst_ip == Some(target.ip()), || {
        format!("SYN to {:?}", syn.dst_ip)
    })?;
    check(syn.protocol == Some(6), || "SYN is TCP".into())?;
    check(
        syn.src_port == Some(client_port) && syn.dst_port == Some(target.port()),
        || format!("SYN ports {:?} -> {:?}", syn.src_port, syn.dst_port),
    )
}

/// What a topology leaves behind if cleanup failed.
struct Traces {
    run_dir: PathBuf,
    cgroup: PathBuf,
    ifnames: Vec<String>,
}

impl Traces {
    fn of(t: &TwoNodes) -> Traces {
        Traces {
            run_dir: t.topo.run_dir().to_owned(),
            cgroup: t.topo.cgroup_path().to_owned(),
            ifnames: vec![
                t.client.node_veth().to_owned(),
                t.backend.node_veth().to_owned(),
                "s0-a".into(),
                "s1-b".into(),
            ],
        }
    }

    fn check_gone(&self) -> Result<(), Failed> {
        check(!self.run_dir.exists(), || {
            format!("{} still exists", self.run_dir.display())
        })?;
        check(!self.cgroup.exists(), || {
            format!("{} still exists", self.cgroup.display())
        })?;
        let links = Command::new("ip").args(["-o", "link", "show"]).output()?;
        let links = String::from_utf8_lossy(&links.stdout);
        for name in &self.ifnames {
            check(
                !links.contains(&format!(": {name}@")) && !links.contains(&format!(": {name}:")),
                || format!("interface {name} in the host namespace"),
            )?;
        }
        Ok(())
    }
}

fn cleanup_after_drop() -> Result<(), Failed> {
    let t = two_nodes()?;
    let traces = Traces::of(&t);
    check(traces.run_dir.join("client").exists(), || {
        "netns file exists".into()
    })?;
    // A process left running in a pod and a server thread must not keep anything alive.
    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    let sleeper = t.client.spawn(cmd)?;
    std::mem::forget(sleeper);
    drop(t);
    traces.check_gone()
}

fn cleanup_after_panic() -> Result<(), Failed> {
    let t = two_nodes()?;
    let traces = Traces::of(&t);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _t = t;
        let _ = _t.client.in_netns(|| {
            panic!("deliberate panic inside the pod (this test checks cleanup after it)")
        });
    }));
    check(outcome.is_err(), || "the panic reaches the caller".into())?;
    traces.check_gone()
}

fn cleanup_after_failed_pod() -> Result<(), Failed> {
    let mut t = two_nodes()?;
    // The second pod with the client's address fails at its host route, after its namespace
    // and cgroup were made.
    let err = t
        .topo
        .add_pod(&t.a, PodSpec::new("twin", t.client.ipv4()))
        .err()
        .ok_or("a second pod with the same address must fail")?;
    check(err.to_string().contains("add route"), || {
        format!("failed elsewhere: {err}")
    })?;
    check(!t.topo.run_dir().join("twin").exists(), || {
        "the failed pod's netns file is left".into()
    })?;
    check(!t.a.cgroup_path().join("twin").exists(), || {
        "the failed pod's cgroup is left".into()
    })?;
    check(t.topo.pods().count() == 2, || {
        "the failed pod is listed".into()
    })?;
    // The topology still works.
    let target: SocketAddr = "10.0.2.7:8080".parse()?;
    let _server = t.backend.server(Proto::Tcp, target, "backend")?;
    let reply = t.client.client_once(ClientMode::Tcp, target)?;
    check_reply(&reply, "backend", t.client.ipv4().into(), target)
}

/// A topology's leftovers as a process killed by a signal leaves them (its drop never ran): a
/// run directory holding a mounted namespace file, and a cgroup with a child cgroup and a
/// process still in it. The pid in their names is one that has exited.
fn reclaim_after_kill() -> Result<(), Failed> {
    let mut gone = Command::new("true").spawn()?;
    let pid = gone.id();
    gone.wait()?;
    let prefix = format!("{pid}-0-dead");
    let run_dir = Path::new("/run/netsim").join(&prefix);
    std::fs::create_dir_all(&run_dir)?;
    let ns_name = format!("netsim-reclaim-{}", std::process::id());
    let sh = |script: String| -> Result<(), Failed> {
        let status = Command::new("sh").arg("-c").arg(&script).status()?;
        check(status.success(), || format!("`{script}` failed"))
    };
    sh(format!(
        "ip netns add {ns_name} && touch {0}/node1 && mount --bind /run/netns/{ns_name} {0}/node1 \
         && ip netns del {ns_name}",
        run_dir.display()
    ))?;
    let cgroup_root = PathBuf::from(
        std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                post.starts_with("cgroup2 ")
                    .then(|| pre.split_whitespace().nth(4).map(str::to_owned))?
            })
            .ok_or("no cgroup2 mount")?,
    );
    let cgroup = cgroup_root.join(format!("netsim-{prefix}"));
    let child = cgroup.join("node1");
    std::fs::create_dir_all(&child)?;
    let mut sleeper = Command::new("sleep").arg("600").spawn()?;
    std::fs::write(child.join("cgroup.procs"), sleeper.id().to_string())?;

    let topo = Topology::new()?;
    drop(topo);
    // The reclaim killed it: it exits at once (waited for with a deadline, then killed here
    // so a failing run leaves nothing either).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut reaped = false;
    while std::time::Instant::now() < deadline {
        if sleeper.try_wait()?.is_some() {
            reaped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if !reaped {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    check(reaped, || "the leftover process was killed".into())?;
    check(!run_dir.exists(), || {
        format!("{} is still there", run_dir.display())
    })?;
    check(!cgroup.exists(), || {
        format!("{} is still there", cgroup.display())
    })
}
