//! The packet programs' view of a frame (`lb_pkt.h`): Ethernet, IPv4 or IPv6, TCP
//! or UDP, read and rewritten in place at fixed offsets, as the C does with `skb` loads and
//! stores. Checksums are recomputed from scratch after a rewrite (the C updates them
//! incrementally; on a frame whose checksums were right, both give the same bytes).
//!
//! A parser of our own rather than a crate's: what counts as "too short" or "not ours" must be
//! the C's rule byte for byte (a packet the C passes untouched must be passed here too), which
//! a general-purpose parser's errors do not promise.

use ebpf::maps::{LbAddr, LbCtEntry, LbCtKey};

/// `ETH_HLEN`.
pub(super) const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// IPv4's fixed header, IPv6's header.
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// The fixed TCP and UDP headers.
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// `IPPROTO_TCP`, `IPPROTO_UDP`.
pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
/// TCP flag bits of the flags byte.
pub(super) const TCP_FIN: u8 = 0x01;
pub(super) const TCP_SYN: u8 = 0x02;
pub(super) const TCP_RST: u8 = 0x04;

/// A frame the programs handle: where its headers are and its flow tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Parsed {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Length of the IP header, options included (IPv4: IHL * 4; IPv6: 40).
    pub l3_len: usize,
    /// Offset of the TCP or UDP header.
    pub l4: usize,
    /// The flow tuple as `struct lb_ct_key` (pad zero).
    pub key: LbCtKey,
    /// The TCP flags byte, 0 for UDP.
    pub tcp_flags: u8,
}

impl Parsed {
    /// The TCP or UDP protocol number.
    pub fn proto(&self) -> u8 {
        self.key.proto
    }
}

pub(super) fn be16(pkt: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([pkt[at], pkt[at + 1]])
}

/// An IPv4 address at `at`, mapped.
pub(super) fn v4_at(pkt: &[u8], at: usize) -> LbAddr {
    let mut a = LbAddr::default();
    a.bytes[10] = 0xff;
    a.bytes[11] = 0xff;
    a.bytes[12..].copy_from_slice(&pkt[at..at + 4]);
    a
}

/// An IPv6 address at `at`.
pub(super) fn v6_at(pkt: &[u8], at: usize) -> LbAddr {
    let mut a = LbAddr::default();
    a.bytes.copy_from_slice(&pkt[at..at + 16]);
    a
}

/// `lb_parse`: the frame's headers and tuple, or `None` when the programs pass it
/// untouched: not IPv4/IPv6 directly after Ethernet (VLAN tags included), an IPv4 fragment, an
/// IPv6 extension header, neither TCP nor UDP, or too short for the headers it claims.
pub(super) fn parse(pkt: &[u8]) -> Option<Parsed> {
    if pkt.len() < ETH_HLEN {
        return None;
    }
    let l3 = ETH_HLEN;
    let (v6, l3_len, proto, saddr, daddr) = match be16(pkt, 12) {
        ETH_P_IP => {
            if pkt.len() < l3 + IPV4_HLEN || pkt[l3] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(pkt[l3] & 0x0f) * 4;
            if ihl < IPV4_HLEN || pkt.len() < l3 + ihl {
                return None;
            }
            // MF set or a fragment offset: not the first fragment, or one of several.
            if be16(pkt, l3 + 6) & 0x3fff != 0 {
                return None;
            }
            // Cut short: the IP length claims more than the frame holds.
            if usize::from(be16(pkt, l3 + 2)) > pkt.len() - l3 {
                return None;
            }
            (
                false,
                ihl,
                pkt[l3 + 9],
                v4_at(pkt, l3 + 12),
                v4_at(pkt, l3 + 16),
            )
        }
        ETH_P_IPV6 => {
            if pkt.len() < l3 + IPV6_HLEN || pkt[l3] >> 4 != 6 {
                return None;
            }
            if IPV6_HLEN + usize::from(be16(pkt, l3 + 4)) > pkt.len() - l3 {
                return None;
            }
            (
                true,
                IPV6_HLEN,
                pkt[l3 + 6],
                v6_at(pkt, l3 + 8),
                v6_at(pkt, l3 + 24),
            )
        }
        _ => return None,
    };
    let l4 = l3 + l3_len;
    let l4_len = match proto {
        IPPROTO_TCP => TCP_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => return None,
    };
    if pkt.len() < l4 + l4_len {
        return None;
    }
    let tcp_flags = if proto == IPPROTO_TCP {
        pkt[l4 + 13]
    } else {
        0
    };
    Some(Parsed {
        v6,
        l3_len,
        l4,
        key: LbCtKey {
            saddr,
            daddr,
            sport: u16::from_ne_bytes([pkt[l4], pkt[l4 + 1]]),
            dport: u16::from_ne_bytes([pkt[l4 + 2], pkt[l4 + 3]]),
            proto,
            pad: [0; 3],
        },
        tcp_flags,
    })
}

/// `lb_rewrite`: the frame's addresses and ports become the entry's, with the IPv4
/// header checksum and the TCP/UDP checksum recomputed (an IPv4 UDP checksum of 0, "none",
/// stays 0).
pub(super) fn rewrite(pkt: &mut [u8], p: &Parsed, to: &LbCtEntry) {
    let l3 = ETH_HLEN;
    if p.v6 {
        pkt[l3 + 8..l3 + 24].copy_from_slice(&to.saddr.bytes);
        pkt[l3 + 24..l3 + 40].copy_from_slice(&to.daddr.bytes);
    } else {
        pkt[l3 + 12..l3 + 16].copy_from_slice(&to.saddr.bytes[12..]);
        pkt[l3 + 16..l3 + 20].copy_from_slice(&to.daddr.bytes[12..]);
    }
    pkt[p.l4..p.l4 + 2].copy_from_slice(&to.sport.to_ne_bytes());
    pkt[p.l4 + 2..p.l4 + 4].copy_from_slice(&to.dport.to_ne_bytes());
    if !p.v6 {
        fix_ipv4_checksum(pkt, p);
    }
    fix_l4_checksum(pkt, p);
}

/// `lb_dec_ttl`: decrements the IPv4 TTL (header of `l3_len` bytes) or IPv6 hop limit; `false`
/// (and nothing changed) when it is 1 or 0, where forwarding would make it 0.
pub(super) fn decrement_ttl(pkt: &mut [u8], v6: bool, l3_len: usize) -> bool {
    let at = ETH_HLEN + if v6 { 7 } else { 8 };
    if pkt[at] <= 1 {
        return false;
    }
    pkt[at] -= 1;
    if !v6 {
        fix_ipv4_header_checksum(pkt, ETH_HLEN, l3_len);
    }
    true
}

/// Ethernet destination and source, as a FIB lookup gave them.
pub(super) fn set_macs(pkt: &mut [u8], dmac: [u8; 6], smac: [u8; 6]) {
    pkt[..6].copy_from_slice(&dmac);
    pkt[6..12].copy_from_slice(&smac);
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words (an odd last byte padded
/// with zero), added to `sum`.
fn sum16(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a 32-bit sum to 16 bits and complements it.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum of `bytes` (RFC 1071).
pub(super) fn internet_checksum(bytes: &[u8]) -> u16 {
    fold(sum16(0, bytes))
}

/// The IPv4 header checksum, recomputed over the header and its options.
fn fix_ipv4_checksum(pkt: &mut [u8], p: &Parsed) {
    fix_ipv4_header_checksum(pkt, ETH_HLEN, p.l3_len);
}

/// The checksum of the IPv4 header of `len` bytes at `l3` (an outer or a quoted one),
/// recomputed.
pub(super) fn fix_ipv4_header_checksum(pkt: &mut [u8], l3: usize, len: usize) {
    pkt[l3 + 10..l3 + 12].fill(0);
    let c = fold(sum16(0, &pkt[l3..l3 + len]));
    pkt[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// The TCP or UDP segment's length: what the IP header says, within the frame.
fn l4_len(pkt: &[u8], p: &Parsed) -> usize {
    let l3 = ETH_HLEN;
    let claimed = if p.v6 {
        usize::from(be16(pkt, l3 + 4))
    } else {
        usize::from(be16(pkt, l3 + 2)).saturating_sub(p.l3_len)
    };
    claimed.min(pkt.len() - p.l4)
}

/// The TCP or UDP checksum, recomputed over the pseudo-header and the segment. UDP without a
/// checksum keeps none, in both families as the C's `BPF_F_MARK_MANGLED_0` has it (an IPv6
/// one is invalid, and its receiver drops it either way); a UDP checksum that computes to 0 is
/// sent as 0xffff.
fn fix_l4_checksum(pkt: &mut [u8], p: &Parsed) {
    let udp = p.proto() == IPPROTO_UDP;
    let at = p.l4 + if udp { 6 } else { 16 };
    if udp && pkt[at] == 0 && pkt[at + 1] == 0 {
        return;
    }
    let c = l4_checksum(pkt, p, at);
    let c = if udp && c == 0 { 0xffff } else { c };
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The TCP/UDP checksum the segment should carry, computed with its checksum field (at
/// `csum_at`) taken as zero.
fn l4_checksum(pkt: &[u8], p: &Parsed, csum_at: usize) -> u16 {
    let l3 = ETH_HLEN;
    let len = l4_len(pkt, p);
    let mut seg = pkt[p.l4..p.l4 + len].to_vec();
    for b in seg.iter_mut().skip(csum_at - p.l4).take(2) {
        *b = 0;
    }
    let (src, dst) = if p.v6 {
        (&pkt[l3 + 8..l3 + 24], &pkt[l3 + 24..l3 + 40])
    } else {
        (&pkt[l3 + 12..l3 + 16], &pkt[l3 + 16..l3 + 20])
    };
    transport_checksum(src, dst, p.proto(), &seg)
}

/// The checksum of a TCP or UDP segment (its checksum field zero) between `src` and `dst` (4
/// or 16 bytes each): the one's complement of the one's-complement sum of the pseudo-header
/// and the segment.
pub(super) fn transport_checksum(src: &[u8], dst: &[u8], proto: u8, seg: &[u8]) -> u16 {
    let len = seg.len() as u32;
    let mut sum = sum16(sum16(0, src), dst);
    sum += u32::from(proto) + (len >> 16) + (len & 0xffff);
    fold(sum16(sum, seg))
}

/// Whether a frame's IPv4 header checksum and TCP/UDP checksum are right (an IPv4 UDP
/// checksum of 0 counts as right). Frames the programs do not parse have none to check.
pub fn checksums_valid(pkt: &[u8]) -> bool {
    let Some(p) = parse(pkt) else {
        return true;
    };
    let l3 = ETH_HLEN;
    if !p.v6 && fold(sum16(0, &pkt[l3..l3 + p.l3_len])) != 0 {
        return false;
    }
    let udp = p.proto() == IPPROTO_UDP;
    let at = p.l4 + if udp { 6 } else { 16 };
    let have = be16(pkt, at);
    if udp && have == 0 && !p.v6 {
        return true;
    }
    let want = l4_checksum(pkt, &p, at);
    have == want || (udp && want == 0 && have == 0xffff)
}
