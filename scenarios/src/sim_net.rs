//! The network around the simulated nodes, for traffic that crosses it as packets: a client
//! outside the cluster reaching a NodePort. Hosts on the segment (the nodes and the external
//! hosts), pods behind their nodes, and frames carried between them through each node's
//! simulated tc programs ([`PktSim`]), hop by hop, as netsim's namespaces and the kernel carry
//! them on the `kernel` backend.
//!
//! What the kernel's stack would do around the programs is modelled here, simply: a node
//! delivers to its own addresses and pods, and routes the rest out of the device on the
//! segment where a host owns the destination (`eth0` on the first, `eth1` on the second) or to
//! the node whose pod CIDR holds it (over the first).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use lb::datapath::sim::packet_builder::{tcp_flags, FrameView, IcmpErrorBuilder, PacketBuilder};
use lb::datapath::sim::{FibResult, FibTable, PktOutcome, PktSim, Verdict, XdpAction};

use crate::spec::Transport;
use crate::world::CallError;

/// The ifindex of every node's `eth0` in the simulator, on the first segment.
pub const ETH0: u32 = 2;
/// The ifindex of a node's `eth1`, on the second segment, where it has one.
pub const ETH1: u32 = 3;
/// Pods' host-side interfaces are numbered from here, in the node's pod order.
const POD_VETH_BASE: u32 = 100;
/// More hops than any path of a scenario takes: a frame still moving after them is looping.
const MAX_HOPS: usize = 16;
/// Source ports of the external clients' sockets, counted up from here.
pub const FIRST_CLIENT_PORT: u16 = 40000;

/// A node's packet programs, once its agent has loaded them.
#[derive(Debug)]
pub struct NodePrograms {
    /// The tc programs and, when `xdp`, the XDP program (one datapath over the same maps).
    pub pkt: PktSim,
    /// Whether the XDP program runs on eth0 before tc ingress (`loadBalancer.acceleration`,
    /// where the device took it).
    pub xdp: bool,
    /// Whether the pod programs run on the pods' interfaces (`socketLB.hostNamespaceOnly`):
    /// `lb_pod_ingress` on what a pod sends, `lb_nodeport_egress` on what it receives.
    pub pods: bool,
    /// The ifindexes of the NodePort devices the programs are attached to: a frame crossing
    /// another device of the node meets none of them.
    pub attached: Vec<u32>,
}

/// Where a frame goes after a node's ingress programs.
enum AfterIngress {
    /// Into the node's stack.
    Stack,
    /// Out of this device by tc's redirect: the egress program sees it too.
    Egress(u32),
    /// Out of this device by XDP: straight onto its segment, past tc.
    Segment(u32),
}

/// A node as the network sees it.
#[derive(Clone, Debug)]
pub struct NetNode {
    /// Its name.
    pub name: String,
    /// Its eth0 addresses.
    pub addresses: Vec<IpAddr>,
    /// Its eth1 addresses (on the second segment); empty without an eth1.
    pub eth1: Vec<IpAddr>,
    /// Pod CIDRs the other nodes route to it.
    pub pod_cidrs: Vec<IpNet>,
    /// Its pods: name and addresses.
    pub pods: Vec<(String, Vec<IpAddr>)>,
    /// The MTUs of pods' veths where they are not 1500, by pod name.
    pub pod_mtus: BTreeMap<String, u32>,
}

/// A host outside the cluster, on one segment.
#[derive(Clone, Debug)]
pub struct NetExternal {
    /// Its name.
    pub name: String,
    /// The addresses of its one device.
    pub addresses: Vec<IpAddr>,
    /// The segment that device is on: 0 (the nodes' eth0) or 1 (their eth1).
    pub segment: usize,
    /// Its routes beyond the segment: destination and next hop.
    pub routes: Vec<(IpNet, IpAddr)>,
}

/// Who ends up with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receiver {
    /// A node's own stack (one of its addresses).
    Node(usize),
    /// A pod, by name.
    Pod(String),
    /// An external host, by name.
    External(String),
}

impl Receiver {
    /// The name of the host or pod.
    pub fn name<'a>(&'a self, net: &'a Net) -> &'a str {
        match self {
            Receiver::Node(i) => &net.nodes[*i].name,
            Receiver::Pod(name) | Receiver::External(name) => name,
        }
    }
}

/// Where a frame is between hops.
#[derive(Clone, Copy, Debug)]
enum At {
    /// On this segment, for whoever owns its destination there.
    Segment(usize),
    /// Entering a node through its device on this segment.
    NodeIngress(usize, usize),
    /// In a node's stack (after its ingress program, or sent by the node or one of its pods).
    NodeStack(usize),
}

/// A frame that reached no one: dropped by a program, or with no route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lost;

/// The topology of a scenario, for packets.
#[derive(Clone, Debug, Default)]
pub struct Net {
    /// The nodes, in the scenario's order.
    pub nodes: Vec<NetNode>,
    /// The external hosts.
    pub externals: Vec<NetExternal>,
}

/// A made-up MAC address per host: the programs write the FIB's MACs, which nothing here
/// reads (frames are carried by address), so they need only be distinct.
fn mac(host: usize) -> [u8; 6] {
    let [hi, lo] = u16::try_from(host).unwrap_or(u16::MAX).to_be_bytes();
    [0x02, 0x00, 0x5e, 0x00, hi, lo]
}

impl Net {
    /// What `bpf_fib_lookup` answers on node `index`: its own addresses are local, its pods
    /// behind their veths, the hosts of a segment it is on out of its device there, and the
    /// other nodes' pods out of eth0.
    pub fn fib(&self, index: usize) -> FibTable {
        let node = &self.nodes[index];
        let smac = mac(index);
        let mut fib = FibTable::new();
        for &ip in node.addresses.iter().chain(&node.eth1) {
            fib = fib.route(ip, FibResult::Local);
        }
        for (k, (_, addrs)) in node.pods.iter().enumerate() {
            let veth = POD_VETH_BASE + u32::try_from(k).unwrap_or(u32::MAX - POD_VETH_BASE);
            for &ip in addrs {
                fib = fib.route(
                    ip,
                    FibResult::Forward {
                        ifindex: veth,
                        smac,
                        dmac: mac(1000 + k),
                    },
                );
            }
        }
        let out = |host: usize, segment: usize| FibResult::Forward {
            ifindex: device_ifindex(segment),
            smac,
            dmac: mac(host),
        };
        for (j, other) in self.nodes.iter().enumerate().filter(|(j, _)| *j != index) {
            for segment in (0..2).filter(|&s| node.on_segment(s)) {
                for &ip in other.segment_addresses(segment) {
                    fib = fib.route(ip, out(j, segment));
                }
            }
            for (_, addrs) in &other.pods {
                for &ip in addrs.iter().filter(|ip| other.routes(**ip)) {
                    fib = fib.route(ip, out(j, 0));
                }
            }
        }
        for (k, external) in self.externals.iter().enumerate() {
            if !node.on_segment(external.segment) {
                continue;
            }
            for &ip in &external.addresses {
                fib = fib.route(ip, out(self.nodes.len() + k, external.segment));
            }
        }
        fib
    }

    /// Carries `frame`, sent from `from`, until someone receives it.
    pub fn carry(
        &self,
        programs: &mut [Option<NodePrograms>],
        from: &Receiver,
        mut frame: Vec<u8>,
    ) -> Result<(Receiver, Vec<u8>), Lost> {
        let mut at = match from {
            Receiver::Node(i) => At::NodeStack(*i),
            Receiver::Pod(name) => {
                let i = self.node_of_pod(name).ok_or(Lost)?;
                if let Some(p) = pod_programs(programs, i) {
                    let out = p.pkt.pod_ingress(self.pod_veth(i, name), &frame);
                    frame = out.packet;
                    match out.verdict {
                        Verdict::Pass => {}
                        Verdict::Drop(_) => return Err(Lost),
                        // Rejected: the ICMP error goes back into the pod.
                        Verdict::Redirect { .. } => return Ok((from.clone(), frame)),
                    }
                }
                At::NodeStack(i)
            }
            Receiver::External(name) => self.external_first_hop(name, &frame)?,
        };
        for _ in 0..MAX_HOPS {
            let dst = destination(&frame).ok_or(Lost)?;
            at = match at {
                At::Segment(segment) => match self.segment_owner(dst, segment) {
                    Some(SegmentOwner::Node(i)) => At::NodeIngress(i, segment),
                    Some(SegmentOwner::External(name)) => {
                        return Ok((Receiver::External(name), frame))
                    }
                    None => return Err(Lost),
                },
                At::NodeIngress(i, segment) => {
                    match ingress(programs, i, device_ifindex(segment), &mut frame)? {
                        AfterIngress::Stack => At::NodeStack(i),
                        AfterIngress::Egress(ifindex) => {
                            self.leave(programs, i, segment_of(ifindex), &mut frame)?
                        }
                        AfterIngress::Segment(ifindex) => At::Segment(segment_of(ifindex)),
                    }
                }
                At::NodeStack(i) => {
                    let node = &self.nodes[i];
                    if node.addresses.contains(&dst) || node.eth1.contains(&dst) {
                        return Ok((Receiver::Node(i), frame));
                    }
                    if let Some((pod, _)) = node.pods.iter().find(|(_, a)| a.contains(&dst)) {
                        if let Some(p) = pod_programs(programs, i) {
                            let out = p.pkt.egress(self.pod_veth(i, pod), &frame);
                            frame = out.packet;
                            if let Verdict::Drop(_) = out.verdict {
                                return Err(Lost);
                            }
                        }
                        return Ok((Receiver::Pod(pod.clone()), frame));
                    }
                    let segment = (0..2)
                        .filter(|&s| node.on_segment(s))
                        .find(|&s| self.segment_owner(dst, s).is_some())
                        .ok_or(Lost)?;
                    self.leave(programs, i, segment, &mut frame)?
                }
            };
        }
        Err(Lost)
    }

    /// A frame leaves node `i` through its device on `segment`: that device's egress program
    /// runs, then the segment.
    fn leave(
        &self,
        programs: &mut [Option<NodePrograms>],
        i: usize,
        segment: usize,
        frame: &mut Vec<u8>,
    ) -> Result<At, Lost> {
        let outcome = run(programs, i, device_ifindex(segment), frame, PktSim::egress);
        *frame = outcome.packet;
        match outcome.verdict {
            Verdict::Drop(_) => Err(Lost),
            Verdict::Pass | Verdict::Redirect { .. } => Ok(At::Segment(segment)),
        }
    }

    /// Who takes a frame for `dst` off `segment`: the host with that address there, or (on the
    /// first segment) the node whose pod CIDR holds it.
    fn segment_owner(&self, dst: IpAddr, segment: usize) -> Option<SegmentOwner> {
        if let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.segment_addresses(segment).contains(&dst))
        {
            return Some(SegmentOwner::Node(i));
        }
        if let Some(e) = self
            .externals
            .iter()
            .find(|e| e.segment == segment && e.addresses.contains(&dst))
        {
            return Some(SegmentOwner::External(e.name.clone()));
        }
        if segment != 0 {
            return None;
        }
        self.nodes
            .iter()
            .position(|n| n.routes(dst))
            .map(SegmentOwner::Node)
    }

    /// Where an external host's frame goes first: to its destination on its segment, or to
    /// the node its route names as the next hop there.
    fn external_first_hop(&self, name: &str, frame: &[u8]) -> Result<At, Lost> {
        let dst = destination(frame).ok_or(Lost)?;
        let external = self.externals.iter().find(|e| e.name == name).ok_or(Lost)?;
        let segment = external.segment;
        if self.segment_owner(dst, segment).is_some() {
            return Ok(At::Segment(segment));
        }
        let (_, via) = external
            .routes
            .iter()
            .find(|(to, _)| to.contains(&dst))
            .ok_or(Lost)?;
        self.nodes
            .iter()
            .position(|n| n.segment_addresses(segment).contains(via))
            .map(|i| At::NodeIngress(i, segment))
            .ok_or(Lost)
    }

    /// The ifindex of a pod's host-side interface on node `i`.
    fn pod_veth(&self, i: usize, pod: &str) -> u32 {
        let k = self.nodes[i]
            .pods
            .iter()
            .position(|(name, _)| name == pod)
            .unwrap_or(0);
        POD_VETH_BASE + u32::try_from(k).unwrap_or(u32::MAX - POD_VETH_BASE)
    }

    /// What a pod's node does with a frame it would forward to the pod over a smaller MTU
    /// than the frame's IP length: it answers, as the kernel's forwarding does for a packet
    /// that may not be fragmented (every probe's), with an ICMP fragmentation needed (ICMPv6
    /// packet too big) from its own address to the frame's source, quoting it. `None` when
    /// the frame fits.
    pub fn too_big_for_pod(&self, pod: &str, frame: &[u8]) -> Option<(Receiver, Vec<u8>)> {
        let i = self.node_of_pod(pod)?;
        let mtu = *self.nodes[i].pod_mtus.get(pod)?;
        let v6 = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) == 0x86dd;
        let ip_len = if v6 {
            40 + u32::from(u16::from_be_bytes([*frame.get(18)?, *frame.get(19)?]))
        } else {
            u32::from(u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]))
        };
        if ip_len <= mtu {
            return None;
        }
        let view = FrameView::of(frame)?;
        let node = *self.nodes[i].addresses.iter().find(|a| a.is_ipv6() == v6)?;
        let error = if v6 {
            IcmpErrorBuilder::packet_too_big(node, view.src.ip(), frame, mtu)
        } else {
            IcmpErrorBuilder::frag_needed(node, view.src.ip(), frame, u16::try_from(mtu).ok()?)
        };
        Some((Receiver::Node(i), error.build()))
    }

    fn node_of_pod(&self, pod: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.pods.iter().any(|(name, _)| name == pod))
    }

    /// An external host's first address of `dst`'s family.
    pub fn external_address(&self, name: &str, dst: IpAddr) -> Option<IpAddr> {
        let external = self.externals.iter().find(|e| e.name == name)?;
        external
            .addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == dst.is_ipv4())
    }
}

impl NetNode {
    /// Whether one of its pod CIDRs holds `ip`.
    fn routes(&self, ip: IpAddr) -> bool {
        self.pod_cidrs.iter().any(|c| c.contains(&ip))
    }

    /// The addresses of its device on `segment` (eth0 on 0, eth1 on 1).
    fn segment_addresses(&self, segment: usize) -> &[IpAddr] {
        if segment == 0 {
            &self.addresses
        } else {
            &self.eth1
        }
    }

    /// Whether it has a device on `segment`.
    fn on_segment(&self, segment: usize) -> bool {
        segment == 0 || !self.eth1.is_empty()
    }
}

/// The ifindex of a node's device on `segment`.
fn device_ifindex(segment: usize) -> u32 {
    if segment == 0 {
        ETH0
    } else {
        ETH1
    }
}

/// The segment a node's device (by ifindex) is on.
fn segment_of(ifindex: u32) -> usize {
    usize::from(ifindex == ETH1)
}

enum SegmentOwner {
    Node(usize),
    External(String),
}

/// A frame entering node `i` through device `ifindex` meets its XDP program (when attached),
/// then its tc ingress program (told what XDP left, when it passed the frame on).
fn ingress(
    programs: &mut [Option<NodePrograms>],
    i: usize,
    ifindex: u32,
    frame: &mut Vec<u8>,
) -> Result<AfterIngress, Lost> {
    let tc = match programs.get_mut(i).and_then(Option::as_mut) {
        Some(p) if p.xdp && p.attached.contains(&ifindex) => {
            let at_xdp = p.pkt.xdp(ifindex, frame);
            *frame = at_xdp.packet;
            match (at_xdp.action, at_xdp.xfer) {
                (XdpAction::Drop(_), _) => return Err(Lost),
                (XdpAction::Tx, _) => return Ok(AfterIngress::Segment(ifindex)),
                (XdpAction::Redirect(out), _) => return Ok(AfterIngress::Segment(out)),
                (XdpAction::Pass, Some(xfer)) => p.pkt.ingress_handed_over(ifindex, frame, xfer),
                (XdpAction::Pass, None) => p.pkt.ingress(ifindex, frame),
            }
        }
        _ => run(programs, i, ifindex, frame, PktSim::ingress),
    };
    *frame = tc.packet;
    match tc.verdict {
        Verdict::Pass => Ok(AfterIngress::Stack),
        Verdict::Drop(_) => Err(Lost),
        Verdict::Redirect { ifindex, .. } => Ok(AfterIngress::Egress(ifindex)),
    }
}

/// Node `i`'s programs when its pods' interfaces run them.
fn pod_programs(programs: &mut [Option<NodePrograms>], i: usize) -> Option<&mut NodePrograms> {
    programs
        .get_mut(i)
        .and_then(Option::as_mut)
        .filter(|p| p.pods)
}

/// Runs one of node `i`'s tc programs on device `ifindex`; a node whose agent has not
/// loaded them, or a device they are not attached to, passes everything.
fn run(
    programs: &mut [Option<NodePrograms>],
    i: usize,
    ifindex: u32,
    frame: &[u8],
    program: fn(&mut PktSim, u32, &[u8]) -> PktOutcome,
) -> PktOutcome {
    match programs.get_mut(i).and_then(Option::as_mut) {
        Some(p) if p.attached.contains(&ifindex) => program(&mut p.pkt, ifindex, frame),
        _ => PktOutcome {
            verdict: Verdict::Pass,
            packet: frame.to_vec(),
        },
    }
}

/// The IP destination of a frame, whatever it carries (ICMP errors too).
fn destination(frame: &[u8]) -> Option<IpAddr> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match ethertype {
        0x0800 => {
            let b: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        0x86dd => {
            let b: [u8; 16] = frame.get(38..54)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The first frame of a call: a TCP SYN or a UDP datagram.
pub fn request(src: SocketAddr, dst: SocketAddr, transport: Transport) -> Vec<u8> {
    match transport {
        Transport::Tcp => PacketBuilder::tcp(src, dst, tcp_flags::SYN).build(),
        Transport::UdpConnected | Transport::UdpUnconnected => {
            PacketBuilder::udp(src, dst).payload(b"hello\n").build()
        }
    }
}

/// What a server that received `frame` sends back: a SYN-ACK or a datagram from where it was
/// reached to where it came from; `None` for a frame that is not TCP or UDP.
pub fn answer(frame: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let view = FrameView::of(frame)?;
    Some(match transport {
        Transport::Tcp => {
            PacketBuilder::tcp(view.dst, view.src, tcp_flags::SYN | tcp_flags::ACK).build()
        }
        Transport::UdpConnected | Transport::UdpUnconnected => {
            PacketBuilder::udp(view.dst, view.src)
                .payload(b"id\n")
                .build()
        }
    })
}

/// What the client that sent `request` to `to` makes of a frame it received: its answer
/// (`Ok` with the server's source seen as the peer), an ICMP error (refused), or a frame it
/// does not recognise, which it ignores (timed out).
pub fn client_reading(
    frame: &[u8],
    from: SocketAddr,
    to: SocketAddr,
    transport: Transport,
) -> Result<(), CallError> {
    match FrameView::of(frame) {
        Some(view) if view.src == to && view.dst == from => Ok(()),
        Some(_) => Err(CallError::TimedOut),
        // Not TCP or UDP: an ICMP error about the request. An unconnected UDP socket is not
        // told of it.
        None if transport == Transport::UdpUnconnected => Err(CallError::TimedOut),
        None => Err(CallError::Refused),
    }
}

/// A node's device as the agent describes a NodePort device: its ifindex here (`eth0` or
/// `eth1`) and its first address of each family.
pub fn device(name: &str, addresses: &[IpAddr]) -> lb::datapath::DeviceAddrs {
    lb::datapath::DeviceAddrs {
        name: name.to_owned(),
        ifindex: if name == "eth1" { ETH1 } else { ETH0 },
        addr4: addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        }),
        addr6: addresses.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        }),
    }
}
