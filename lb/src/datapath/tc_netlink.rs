//! The two tc deletions aya does not offer by ifindex: a `cls_bpf` filter at a fixed priority
//! and handle, and the `clsact` qdisc. Each is one `RTM_DEL*` request on a route netlink
//! socket, answered by an ack carrying the errno.

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

/// `RTM_DELQDISC` (linux/rtnetlink.h).
const RTM_DELQDISC: u16 = 37;
/// `RTM_DELTFILTER`.
const RTM_DELTFILTER: u16 = 45;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the clsact qdisc's parent.
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// The clsact qdisc's handle, `ffff:`.
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
/// `TC_H_MIN_INGRESS` / `TC_H_MIN_EGRESS`: the minor of a clsact filter's parent.
pub(super) const TC_H_MIN_INGRESS: u32 = 0xFFF2;
/// See [`TC_H_MIN_INGRESS`].
pub(super) const TC_H_MIN_EGRESS: u32 = 0xFFF3;
/// `ETH_P_ALL`, the protocol aya's filters match.
const ETH_P_ALL: u16 = 0x0003;

/// Deletes the filter at `priority`/`handle` on the clsact hook `parent_minor` of `ifindex`.
/// `Ok(false)`: there was none.
pub(super) fn delete_filter(
    ifindex: u32,
    parent_minor: u32,
    priority: u16,
    handle: u32,
) -> std::io::Result<bool> {
    let info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be());
    let parent = (TC_H_CLSACT & 0xFFFF_0000) | parent_minor;
    gone_is_false(request(RTM_DELTFILTER, ifindex, handle, parent, info))
}

/// Deletes the clsact qdisc of `ifindex` (and every filter on it). `Ok(false)`: there was none.
pub(super) fn delete_clsact(ifindex: u32) -> std::io::Result<bool> {
    gone_is_false(request(
        RTM_DELQDISC,
        ifindex,
        CLSACT_HANDLE,
        TC_H_CLSACT,
        0,
    ))
}

/// `ENOENT`/`ENODEV` (nothing there, device gone) and `EINVAL` (no clsact qdisc to hold the
/// filter) mean there is nothing to delete.
fn gone_is_false(r: std::io::Result<()>) -> std::io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::ENOENT | nix::libc::ENODEV | nix::libc::EINVAL)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Sends one `nlmsghdr` + `tcmsg` request and reads its ack.
fn request(kind: u16, ifindex: u32, handle: u32, parent: u32, info: u32) -> std::io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut msg = Vec::with_capacity(36);
    msg.extend_from_slice(&36u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    msg.extend_from_slice(&[nix::libc::AF_UNSPEC as u8, 0, 0, 0]); // family, padding
    msg.extend_from_slice(&ifindex.to_ne_bytes());
    msg.extend_from_slice(&handle.to_ne_bytes());
    msg.extend_from_slice(&parent.to_ne_bytes());
    msg.extend_from_slice(&info.to_ne_bytes());
    socket.send(&msg, 0)?;
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut &mut buf[..], 0)?;
    let reply = &buf[..n];
    let field = |at: usize| -> Option<[u8; 4]> { reply.get(at..at + 4)?.try_into().ok() };
    let kind = reply.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    match (kind, field(16)) {
        (Some(NLMSG_ERROR), Some(code)) => match i32::from_ne_bytes(code) {
            0 => Ok(()),
            errno => Err(std::io::Error::from_raw_os_error(-errno)),
        },
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the kernel's netlink answer is not an ack",
        )),
    }
}
