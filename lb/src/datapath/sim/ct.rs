//! The conntrack rules of the packet programs (`lb_ct.h`'s `lb_ct_lifetime`,
//! `lb_ct_refresh`, `lb_ct_init`): how long an entry lives after a packet, and what a hit changes.

use std::collections::BTreeMap;

use ebpf::maps::{ct_flags, LbCtEntry, LbCtKey};

use super::packet::{Parsed, IPPROTO_TCP, TCP_FIN, TCP_RST, TCP_SYN};

/// `LB_CT_CLOSE_SECS`: an entry's life after a TCP FIN or RST.
pub const CT_CLOSE_SECS: u32 = 10;
/// A TCP flow's entries after a SYN (the handshake may not finish).
pub const CT_SYN_SECS: u32 = 60;
/// An established TCP flow's entries after any other segment.
pub const CT_TCP_SECS: u32 = 21600;
/// A UDP flow's entries after a datagram.
pub const CT_UDP_SECS: u32 = 60;

/// The table: `lb_ct_v2`.
pub type CtTable = BTreeMap<LbCtKey, LbCtEntry>;

/// `lb_ct_closes`: a TCP segment with FIN or RST.
pub(super) fn closes(p: &Parsed) -> bool {
    p.proto() == IPPROTO_TCP && p.tcp_flags & (TCP_FIN | TCP_RST) != 0
}

/// `lb_ct_lifetime`: seconds an entry lives after this packet (`closing`: the entry already has
/// `LB_CT_CLOSING`).
pub(super) fn lifetime(p: &Parsed, closing: bool) -> u32 {
    if closing || closes(p) {
        CT_CLOSE_SECS
    } else if p.proto() != IPPROTO_TCP {
        CT_UDP_SECS
    } else if p.tcp_flags & TCP_SYN != 0 {
        CT_SYN_SECS
    } else {
        CT_TCP_SECS
    }
}

/// `lb_ct_refresh`: a packet hit the entry at `key`: its expiry moves to now + its lifetime; a
/// packet that closes the flow marks it closing and, the first time, its twin too (which then
/// lives [`CT_CLOSE_SECS`] from now). Returns the entry as refreshed, `None` on a miss.
pub(super) fn refresh(
    table: &mut CtTable,
    key: &LbCtKey,
    p: &Parsed,
    now: u32,
) -> Option<LbCtEntry> {
    let entry = table.get_mut(key)?;
    let was_closing = entry.flags & ct_flags::CLOSING != 0;
    entry.expires = now.wrapping_add(lifetime(p, was_closing));
    let closing = closes(p);
    if closing {
        entry.flags |= ct_flags::CLOSING;
    }
    let refreshed = *entry;
    if closing && !was_closing {
        if let Some(twin) = table.get_mut(&refreshed.twin_key(key.proto)) {
            twin.flags |= ct_flags::CLOSING;
            twin.expires = now.wrapping_add(CT_CLOSE_SECS);
        }
    }
    Some(refreshed)
}

/// `lb_ct_init`: a new entry's expiry and closing flag for the packet that creates it.
pub(super) fn stamp(mut entry: LbCtEntry, p: &Parsed, now: u32) -> LbCtEntry {
    entry.expires = now.wrapping_add(lifetime(p, false));
    if closes(p) {
        entry.flags |= ct_flags::CLOSING;
    }
    entry
}
