//! `lb_icmp.h`: rejecting a packet for a frontend without backends as kube-proxy's REJECT rule
//! does: the frame becomes an ICMP port unreachable (ICMPv6 type 1 code 4) from the address the
//! client used, quoting its IP header and the first 8 bytes after it, sent back out of the
//! device it came in on. And `lb_icmp_err.h`: the ICMP errors about TCP or UDP packets that
//! the datapath translates back for the flows it tracks (`lb_nodeport.h`), parsed and
//! rewritten.

use ebpf::maps::{LbAddr, LbCtKey};

use super::packet::{self, Parsed, ETH_HLEN};

/// The reply's TTL or hop limit (`LB_ICMP_TTL`).
const ICMP_TTL: u8 = 64;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// What is quoted: the IP header without options, and 8 bytes of what follows.
const QUOTE4: usize = 20 + 8;
const QUOTE6: usize = 40 + 8;

/// `lb_reject`: the reply frame, or `None` when the program drops the packet instead (an
/// IPv4 header with options, which the reply does not quote whole).
pub(super) fn reject(pkt: &[u8], p: &Parsed) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(ETH_HLEN + 40 + 8 + QUOTE6);
    // `lb_icmp_eth`: the frame's Ethernet header, addresses swapped.
    out.extend_from_slice(&pkt[6..12]);
    out.extend_from_slice(&pkt[..6]);
    out.extend_from_slice(&pkt[12..14]);
    let (src, dst) = (p.key.daddr.bytes, p.key.saddr.bytes);
    if p.v6 {
        let quote = &pkt[ETH_HLEN..ETH_HLEN + QUOTE6];
        let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quote);
        let c = packet::transport_checksum(&src, &dst, IPPROTO_ICMPV6, &icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        out.extend_from_slice(&[IPPROTO_ICMPV6, ICMP_TTL]);
        out.extend_from_slice(&src);
        out.extend_from_slice(&dst);
        out.extend_from_slice(&icmp);
    } else {
        if p.l3_len != 20 {
            return None;
        }
        let quote = &pkt[ETH_HLEN..ETH_HLEN + QUOTE4];
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quote);
        let c = packet::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, ICMP_TTL, IPPROTO_ICMP, 0, 0]);
        ip.extend_from_slice(&src[12..]);
        ip.extend_from_slice(&dst[12..]);
        let c = packet::internet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&icmp);
    }
    Some(out)
}

/// Where an ICMPv4 error's headers are (`LB_ICMP_ERR_*4`): ICMP header, quoted IPv4 header,
/// quoted ports.
const ERR_ICMP4: usize = ETH_HLEN + 20;
const ERR_INNER4: usize = ERR_ICMP4 + 8;
const ERR_PORTS4: usize = ERR_INNER4 + 20;
/// The same for ICMPv6.
const ERR_ICMP6: usize = ETH_HLEN + 40;
const ERR_INNER6: usize = ERR_ICMP6 + 8;
const ERR_PORTS6: usize = ERR_INNER6 + 40;
/// The shortest IP packet of an error to translate: outer header, ICMP header, quoted header
/// and 8 bytes (`LB_ICMP_ERR_MIN*`).
const ERR_MIN4: usize = 20 + 8 + 20 + 8;
const ERR_MIN6: usize = 40 + 8 + 40 + 8;
/// ICMP destination unreachable and time exceeded; ICMPv6 destination unreachable, packet too
/// big, time exceeded.
const ERR_TYPES4: [u8; 2] = [3, 11];
const ERR_TYPES6: [u8; 3] = [1, 2, 3];

/// `struct lb_icmp_err` as parsed: an ICMP error about a TCP or UDP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IcmpErr {
    /// ICMPv6 over IPv6 (else ICMP over IPv4).
    pub v6: bool,
    /// The quoted packet's tuple, as quoted.
    pub quoted: LbCtKey,
    /// Outer source and destination, as the error came.
    pub saddr: LbAddr,
    pub daddr: LbAddr,
}

/// What a translated error carries (`struct lb_icmp_err`'s new fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ErrRewrite {
    /// The quoted tuple after translation (addresses and ports; the protocol stays).
    pub inner: LbCtKey,
    /// Outer source and destination after translation.
    pub saddr: LbAddr,
    pub daddr: LbAddr,
}

fn is_tcp_or_udp(proto: u8) -> bool {
    proto == packet::IPPROTO_TCP || proto == packet::IPPROTO_UDP
}

fn ports(pkt: &[u8], at: usize) -> (u16, u16) {
    (
        u16::from_ne_bytes([pkt[at], pkt[at + 1]]),
        u16::from_ne_bytes([pkt[at + 2], pkt[at + 3]]),
    )
}

/// `lb_icmp_err_parse`: an ICMP error this datapath translates, or `None` (the packet passes
/// untouched): only an outer IPv4 header without options (IPv6 without extension headers),
/// an error type of [`ERR_TYPES4`] / [`ERR_TYPES6`], a quoted IPv4 header without options
/// and not a later fragment (IPv6: next header TCP or UDP), and its 8 bytes, all within the
/// IP length the outer header claims, which the frame holds.
pub(super) fn parse_error(pkt: &[u8]) -> Option<IcmpErr> {
    if pkt.len() < ETH_HLEN {
        return None;
    }
    let l3 = ETH_HLEN;
    let room = pkt.len() - l3;
    let (v6, proto, saddr, daddr, sport, dport) = match packet::be16(pkt, 12) {
        0x0800 => {
            if room < 20 || pkt[l3] != 0x45 || pkt[l3 + 9] != IPPROTO_ICMP {
                return None;
            }
            let tot_len = usize::from(packet::be16(pkt, l3 + 2));
            if packet::be16(pkt, l3 + 6) & 0x3fff != 0 || tot_len > room || tot_len < ERR_MIN4 {
                return None;
            }
            let inner = ERR_INNER4;
            if !ERR_TYPES4.contains(&pkt[ERR_ICMP4]) || pkt[inner] != 0x45 {
                return None;
            }
            if !is_tcp_or_udp(pkt[inner + 9]) || packet::be16(pkt, inner + 6) & 0x1fff != 0 {
                return None;
            }
            let (sport, dport) = ports(pkt, ERR_PORTS4);
            (
                false,
                pkt[inner + 9],
                (packet::v4_at(pkt, l3 + 12), packet::v4_at(pkt, inner + 12)),
                (packet::v4_at(pkt, l3 + 16), packet::v4_at(pkt, inner + 16)),
                sport,
                dport,
            )
        }
        0x86dd => {
            if room < 40 || pkt[l3] >> 4 != 6 || pkt[l3 + 6] != IPPROTO_ICMPV6 {
                return None;
            }
            let len = 40 + usize::from(packet::be16(pkt, l3 + 4));
            if len > room || len < ERR_MIN6 {
                return None;
            }
            let inner = ERR_INNER6;
            if !ERR_TYPES6.contains(&pkt[ERR_ICMP6]) || pkt[inner] >> 4 != 6 {
                return None;
            }
            if !is_tcp_or_udp(pkt[inner + 6]) {
                return None;
            }
            let (sport, dport) = ports(pkt, ERR_PORTS6);
            (
                true,
                pkt[inner + 6],
                (packet::v6_at(pkt, l3 + 8), packet::v6_at(pkt, inner + 8)),
                (packet::v6_at(pkt, l3 + 24), packet::v6_at(pkt, inner + 24)),
                sport,
                dport,
            )
        }
        _ => return None,
    };
    Some(IcmpErr {
        v6,
        quoted: LbCtKey {
            saddr: saddr.1,
            daddr: daddr.1,
            sport,
            dport,
            proto,
            pad: [0; 3],
        },
        saddr: saddr.0,
        daddr: daddr.0,
    })
}

/// `lb_icmp_err_rewrite4` / `lb_icmp_err_rewrite6`: the error's outer addresses, quoted
/// addresses and quoted ports become `to`'s, and the checksums are recomputed from scratch:
/// the outer IPv4 header's, the quoted IPv4 header's, and the ICMP checksum over the whole
/// message (ICMPv6: with its pseudo-header). The quoted TCP/UDP checksum stays as quoted.
pub(super) fn rewrite_error(pkt: &mut [u8], err: &IcmpErr, to: &ErrRewrite) {
    let l3 = ETH_HLEN;
    let (inner, ports_at, icmp_at) = if err.v6 {
        (ERR_INNER6, ERR_PORTS6, ERR_ICMP6)
    } else {
        (ERR_INNER4, ERR_PORTS4, ERR_ICMP4)
    };
    pkt[ports_at..ports_at + 2].copy_from_slice(&to.inner.sport.to_ne_bytes());
    pkt[ports_at + 2..ports_at + 4].copy_from_slice(&to.inner.dport.to_ne_bytes());
    if err.v6 {
        pkt[l3 + 8..l3 + 24].copy_from_slice(&to.saddr.bytes);
        pkt[l3 + 24..l3 + 40].copy_from_slice(&to.daddr.bytes);
        pkt[inner + 8..inner + 24].copy_from_slice(&to.inner.saddr.bytes);
        pkt[inner + 24..inner + 40].copy_from_slice(&to.inner.daddr.bytes);
        let end = l3 + 40 + usize::from(packet::be16(pkt, l3 + 4));
        pkt[icmp_at + 2..icmp_at + 4].fill(0);
        let c = packet::transport_checksum(
            &to.saddr.bytes,
            &to.daddr.bytes,
            IPPROTO_ICMPV6,
            &pkt[icmp_at..end],
        );
        pkt[icmp_at + 2..icmp_at + 4].copy_from_slice(&c.to_be_bytes());
    } else {
        pkt[l3 + 12..l3 + 16].copy_from_slice(&to.saddr.bytes[12..]);
        pkt[l3 + 16..l3 + 20].copy_from_slice(&to.daddr.bytes[12..]);
        pkt[inner + 12..inner + 16].copy_from_slice(&to.inner.saddr.bytes[12..]);
        pkt[inner + 16..inner + 20].copy_from_slice(&to.inner.daddr.bytes[12..]);
        packet::fix_ipv4_header_checksum(pkt, l3, 20);
        packet::fix_ipv4_header_checksum(pkt, inner, 20);
        let end = l3 + usize::from(packet::be16(pkt, l3 + 2));
        pkt[icmp_at + 2..icmp_at + 4].fill(0);
        let c = packet::internet_checksum(&pkt[icmp_at..end]);
        pkt[icmp_at + 2..icmp_at + 4].copy_from_slice(&c.to_be_bytes());
    }
}
