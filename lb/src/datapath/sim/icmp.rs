//! `lb_icmp.h`: rejecting a packet for a frontend without backends as kube-proxy's REJECT rule
//! does: the frame becomes an ICMP port unreachable (ICMPv6 type 1 code 4) from the address the
//! client used, quoting its IP header and the first 8 bytes after it, sent back out of the
//! device it came in on.

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
