//! Frames for the packet programs' tests, built field by field with valid checksums, and read
//! back: `PacketBuilder::tcp(client, frontend, tcp_flags::SYN).ttl(3).build()`.
//!
//! Shared by the simulator's unit tests, the packet-level differential test
//! (`lb/tests/differential_pkt.rs`) and packet fixtures, so that every one of them speaks of
//! packets the same way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use super::packet::checksums_valid;
use super::packet::{self, ETH_HLEN};

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The transport of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Transport {
    Tcp {
        flags: u8,
    },
    Udp {
        checksum: bool,
    },
    /// Another protocol's bytes (the programs pass it).
    Other {
        proto: u8,
    },
}

/// A frame under construction. IPv4 or IPv6 follows the addresses given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketBuilder {
    dmac: [u8; 6],
    smac: [u8; 6],
    vlan: Option<u16>,
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u8,
    ipv4_options: Vec<u8>,
    /// Fragment offset (8-byte units) and More Fragments.
    fragment: (u16, bool),
    hop_by_hop: bool,
    transport: Transport,
    payload: Vec<u8>,
}

impl PacketBuilder {
    fn new(src: SocketAddr, dst: SocketAddr, transport: Transport) -> Self {
        PacketBuilder {
            dmac: [0x02, 0, 0, 0, 0, 0x01],
            smac: [0x02, 0, 0, 0, 0, 0x02],
            vlan: None,
            src,
            dst,
            ttl: 64,
            ipv4_options: Vec::new(),
            fragment: (0, false),
            hop_by_hop: false,
            transport,
            payload: Vec::new(),
        }
    }

    /// A TCP segment from `src` to `dst` with these [`tcp_flags`].
    pub fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8) -> Self {
        Self::new(src, dst, Transport::Tcp { flags })
    }

    /// A UDP datagram from `src` to `dst`, with a checksum.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(src, dst, Transport::Udp { checksum: true })
    }

    /// A packet of IP protocol `proto` (not TCP or UDP: ICMP, SCTP, ...) whose payload starts
    /// with the ports of `src` and `dst`, as if it had any.
    pub fn other(proto: u8, src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(src, dst, Transport::Other { proto })
    }

    /// Ethernet destination and source.
    pub fn macs(mut self, dmac: [u8; 6], smac: [u8; 6]) -> Self {
        self.dmac = dmac;
        self.smac = smac;
        self
    }

    /// An 802.1Q tag with this VLAN id.
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
        self
    }

    /// IPv4 TTL or IPv6 hop limit (64 unless set).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// IPv4 options (padded with End of Options to a multiple of 4 bytes, at most 40).
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        let padded = options.len().div_ceil(4) * 4;
        self.ipv4_options.resize(padded.min(40), 0);
        self
    }

    /// An IPv4 fragment: offset in 8-byte units, and whether more follow.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.fragment = (offset & 0x1fff, more);
        self
    }

    /// An IPv6 hop-by-hop options header (PadN) before the transport header.
    pub fn hop_by_hop(mut self) -> Self {
        self.hop_by_hop = true;
        self
    }

    /// UDP over IPv4 without a checksum (the field 0).
    pub fn no_udp_checksum(mut self) -> Self {
        if let Transport::Udp { checksum } = &mut self.transport {
            *checksum = false;
        }
        self
    }

    /// The transport payload.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    fn proto(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => packet::IPPROTO_TCP,
            Transport::Udp { .. } => packet::IPPROTO_UDP,
            Transport::Other { proto } => proto,
        }
    }

    fn transport_bytes(&self) -> Vec<u8> {
        let ports = |out: &mut Vec<u8>| {
            out.extend_from_slice(&self.src.port().to_be_bytes());
            out.extend_from_slice(&self.dst.port().to_be_bytes());
        };
        let mut out = Vec::new();
        match self.transport {
            Transport::Tcp { flags } => {
                ports(&mut out);
                out.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
                let ack = if flags & tcp_flags::ACK != 0 {
                    0x0a0b_0c0d
                } else {
                    0
                };
                out.extend_from_slice(&u32::to_be_bytes(ack));
                out.extend_from_slice(&[5 << 4, flags]);
                out.extend_from_slice(&64240u16.to_be_bytes()); // window
                out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            }
            Transport::Udp { .. } => {
                ports(&mut out);
                let len = 8 + self.payload.len();
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Transport::Other { .. } => ports(&mut out),
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// The frame's bytes, checksums computed.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dmac);
        f.extend_from_slice(&self.smac);
        if let Some(id) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        let mut l4 = self.transport_bytes();
        self.fill_checksum(&mut l4);
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.ipv4(&mut f, s, d, l4.len()),
            (s, d) => self.ipv6(&mut f, to_v6(s), to_v6(d), l4.len()),
        }
        f.extend_from_slice(&l4);
        f
    }

    /// The TCP or UDP checksum of the transport bytes (over all of them, fragment or not).
    fn fill_checksum(&self, l4: &mut [u8]) {
        let at = match self.transport {
            Transport::Tcp { .. } => 16,
            Transport::Udp { checksum: true } => 6,
            Transport::Udp { checksum: false } | Transport::Other { .. } => return,
        };
        let (src, dst) = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
            (s, d) => (to_v6(s).octets().to_vec(), to_v6(d).octets().to_vec()),
        };
        let mut c = packet::transport_checksum(&src, &dst, self.proto(), l4);
        if at == 6 && c == 0 {
            c = 0xffff;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn ipv4(&self, f: &mut Vec<u8>, s: Ipv4Addr, d: Ipv4Addr, l4_len: usize) {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let ihl = 20 + self.ipv4_options.len();
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
        f.extend_from_slice(&0x1234u16.to_be_bytes());
        let (offset, more) = self.fragment;
        let frag = offset | if more { 0x2000 } else { 0 };
        f.extend_from_slice(&frag.to_be_bytes());
        f.push(self.ttl);
        f.push(self.proto());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&s.octets());
        f.extend_from_slice(&d.octets());
        f.extend_from_slice(&self.ipv4_options);
        // The header checksum (also for frames the programs do not parse).
        let l3 = f.len() - ihl;
        let mut sum = 0u32;
        for c in f[l3..].chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[l3 + 10..l3 + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }

    fn ipv6(&self, f: &mut Vec<u8>, s: Ipv6Addr, d: Ipv6Addr, l4_len: usize) {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        let ext = if self.hop_by_hop { 8 } else { 0 };
        f.extend_from_slice(&((ext + l4_len) as u16).to_be_bytes());
        f.push(if self.hop_by_hop { 0 } else { self.proto() });
        f.push(self.ttl);
        f.extend_from_slice(&s.octets());
        f.extend_from_slice(&d.octets());
        if self.hop_by_hop {
            // Next header, length 0 (8 bytes), PadN of 4 bytes.
            f.extend_from_slice(&[self.proto(), 0, 1, 4, 0, 0, 0, 0]);
        }
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// What a test reads back from a frame the programs parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameView {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Ethernet destination.
    pub dmac: [u8; 6],
    /// Ethernet source.
    pub smac: [u8; 6],
    /// The TCP flags byte, 0 for UDP.
    pub tcp_flags: u8,
}

impl FrameView {
    /// The frame's fields, `None` for one the programs do not parse.
    pub fn of(frame: &[u8]) -> Option<Self> {
        let p = packet::parse(frame)?;
        let addr = |a: ebpf::maps::LbAddr, port: u16| SocketAddr::new(a.into(), u16::from_be(port));
        let mut dmac = [0; 6];
        dmac.copy_from_slice(&frame[..6]);
        let mut smac = [0; 6];
        smac.copy_from_slice(&frame[6..12]);
        Some(FrameView {
            src: addr(p.key.saddr, p.key.sport),
            dst: addr(p.key.daddr, p.key.dport),
            ttl: frame[ETH_HLEN + if p.v6 { 7 } else { 8 }],
            dmac,
            smac,
            tcp_flags: p.tcp_flags,
        })
    }
}

/// An ICMP or ICMPv6 error frame quoting a packet, as a router or the packet's destination
/// sends it: `IcmpErrorBuilder::frag_needed(router, client, &frame, 1400).build()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpErrorBuilder {
    dmac: [u8; 6],
    smac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    icmp_type: u8,
    code: u8,
    /// The ICMP header's second word (next-hop MTU, packet too big's MTU).
    rest: u32,
    /// The quoted packet: its IP header and what follows.
    quoted: Vec<u8>,
    /// How many of its bytes are quoted.
    quote_len: usize,
}

impl IcmpErrorBuilder {
    /// An error of this type and code from `src` to `dst` quoting the IP packet of `frame` (an
    /// Ethernet frame without VLAN tag): its IP header, options included, and 8 bytes after
    /// it, as RFC 792 asks (more with [`IcmpErrorBuilder::quote`]). ICMPv6 follows `src`.
    pub fn new(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, frame: &[u8]) -> Self {
        let quoted = frame[ETH_HLEN..].to_vec();
        let header = if quoted[0] >> 4 == 6 {
            40
        } else {
            usize::from(quoted[0] & 0x0f) * 4
        };
        IcmpErrorBuilder {
            dmac: [0x02, 0, 0, 0, 0, 0x01],
            smac: [0x02, 0, 0, 0, 0, 0x02],
            src,
            dst,
            ttl: 64,
            icmp_type,
            code,
            rest: 0,
            quote_len: (header + 8).min(quoted.len()),
            quoted,
        }
    }

    /// ICMP destination unreachable, fragmentation needed (type 3 code 4), with the next hop's
    /// MTU.
    pub fn frag_needed(src: IpAddr, dst: IpAddr, frame: &[u8], mtu: u16) -> Self {
        Self::new(src, dst, 3, 4, frame).rest(u32::from(mtu))
    }

    /// ICMPv6 packet too big (type 2), with the MTU.
    pub fn packet_too_big(src: IpAddr, dst: IpAddr, frame: &[u8], mtu: u32) -> Self {
        Self::new(src, dst, 2, 0, frame).rest(mtu)
    }

    /// ICMP time exceeded in transit (type 11), or ICMPv6's (type 3).
    pub fn time_exceeded(src: IpAddr, dst: IpAddr, frame: &[u8]) -> Self {
        let t = if src.is_ipv6() { 3 } else { 11 };
        Self::new(src, dst, t, 0, frame)
    }

    /// ICMP port unreachable (type 3 code 3), or ICMPv6's (type 1 code 4).
    pub fn port_unreachable(src: IpAddr, dst: IpAddr, frame: &[u8]) -> Self {
        if src.is_ipv6() {
            Self::new(src, dst, 1, 4, frame)
        } else {
            Self::new(src, dst, 3, 3, frame)
        }
    }

    /// The ICMP header's second word.
    pub fn rest(mut self, rest: u32) -> Self {
        self.rest = rest;
        self
    }

    /// Quote `len` bytes of the packet (at most all of it).
    pub fn quote(mut self, len: usize) -> Self {
        self.quote_len = len.min(self.quoted.len());
        self
    }

    /// Ethernet destination and source.
    pub fn macs(mut self, dmac: [u8; 6], smac: [u8; 6]) -> Self {
        self.dmac = dmac;
        self.smac = smac;
        self
    }

    /// IPv4 TTL or IPv6 hop limit (64 unless set).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// The frame's bytes, checksums computed.
    pub fn build(&self) -> Vec<u8> {
        let mut icmp = vec![self.icmp_type, self.code, 0, 0];
        icmp.extend_from_slice(&self.rest.to_be_bytes());
        icmp.extend_from_slice(&self.quoted[..self.quote_len]);
        let mut f = Vec::new();
        f.extend_from_slice(&self.dmac);
        f.extend_from_slice(&self.smac);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let c = packet::internet_checksum(&icmp);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[0, 0, 0, 0, self.ttl, 1, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let c = packet::internet_checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
            }
            (s, d) => {
                let (s, d) = (to_v6(s).octets(), to_v6(d).octets());
                let c = packet::transport_checksum(&s, &d, 58, &icmp);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
                f.extend_from_slice(&[58, self.ttl]);
                f.extend_from_slice(&s);
                f.extend_from_slice(&d);
            }
        }
        f.extend_from_slice(&icmp);
        f
    }
}

/// What a test reads back from an ICMP error frame the programs translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorView {
    /// Outer source and destination.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The quoted packet's source and destination.
    pub quoted_src: SocketAddr,
    pub quoted_dst: SocketAddr,
    /// Outer IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// ICMP type and code.
    pub icmp_type: u8,
    pub code: u8,
}

impl IcmpErrorView {
    /// The error's fields, `None` for a frame that is not an ICMP error the programs translate.
    pub fn of(frame: &[u8]) -> Option<Self> {
        let err = super::icmp::parse_error(frame)?;
        let sock = |a: ebpf::maps::LbAddr, port: u16| SocketAddr::new(a.into(), u16::from_be(port));
        let icmp = ETH_HLEN + if err.v6 { 40 } else { 20 };
        Some(IcmpErrorView {
            src: err.saddr.into(),
            dst: err.daddr.into(),
            quoted_src: sock(err.quoted.saddr, err.quoted.sport),
            quoted_dst: sock(err.quoted.daddr, err.quoted.dport),
            ttl: frame[ETH_HLEN + if err.v6 { 7 } else { 8 }],
            icmp_type: frame[icmp],
            code: frame[icmp + 1],
        })
    }
}

/// Whether an ICMP error frame's checksums are right: the outer IPv4 header's, the quoted
/// IPv4 header's, and the ICMP checksum over the message (ICMPv6: with its pseudo-header).
/// Frames that are not such errors have none to check.
pub fn icmp_error_checksums_valid(frame: &[u8]) -> bool {
    let Some(err) = super::icmp::parse_error(frame) else {
        return true;
    };
    let l3 = ETH_HLEN;
    if err.v6 {
        let end = l3 + 40 + usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
        packet::transport_checksum(
            &frame[l3 + 8..l3 + 24],
            &frame[l3 + 24..l3 + 40],
            58,
            &frame[l3 + 40..end],
        ) == 0
    } else {
        let end = l3 + usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        packet::internet_checksum(&frame[l3..l3 + 20]) == 0
            && packet::internet_checksum(&frame[l3 + 28..l3 + 48]) == 0
            && packet::internet_checksum(&frame[l3 + 20..end]) == 0
    }
}
