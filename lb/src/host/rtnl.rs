//! One route-netlink request and its answers (a dump, or a single reply), on a socket of the
//! calling thread's network namespace: what the node's link, route and neighbour queries share.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use std::net::IpAddr;

use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::HostError;

/// Sends `message` with `NLM_F_REQUEST | extra_flags` and collects the answers until the dump's
/// end or the kernel's error or acknowledgement; `what` names the query in errors.
pub(crate) fn request(
    message: RouteNetlinkMessage,
    extra_flags: u16,
    what: &str,
) -> Result<Vec<RouteNetlinkMessage>, HostError> {
    request_or_refusal(message, extra_flags, what).map_err(|(e, _)| e)
}

/// [`request`], with the errno the kernel refused it with (`None` when the failure was the
/// socket's, not the kernel's answer), for callers that expect some refusals.
pub(crate) fn request_or_refusal(
    message: RouteNetlinkMessage,
    extra_flags: u16,
    what: &str,
) -> Result<Vec<RouteNetlinkMessage>, (HostError, Option<i32>)> {
    let failed = |step: &str, detail: String| {
        (
            HostError::Unexpected {
                what: format!("{what} ({step})"),
                detail,
            },
            None,
        )
    };
    let mut socket =
        Socket::new(NETLINK_ROUTE).map_err(|e| failed("netlink socket", e.to_string()))?;
    socket
        .bind_auto()
        .map_err(|e| failed("netlink bind", e.to_string()))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| failed("netlink connect", e.to_string()))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | extra_flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|e| failed("send", e.to_string()))?;
    let dump = extra_flags & netlink_packet_core::NLM_F_DUMP != 0;
    let mut out = Vec::new();
    let mut recv = vec![0u8; 64 * 1024];
    loop {
        let n = socket
            .recv(&mut &mut recv[..], 0)
            .map_err(|e| failed("recv", e.to_string()))?;
        let mut offset = 0;
        while offset < n {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&recv[offset..n])
                .map_err(|e| failed("decode", e.to_string()))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(out),
                        Some(code) => {
                            let (error, _) = failed("answer", e.to_io().to_string());
                            Err((error, Some(code.get().abs())))
                        }
                    }
                }
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    if !dump {
                        return Ok(out);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// The netlink address family of `ip`.
pub(crate) fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// An `RTM_GETROUTE` question for the host route to `dst` (a /32 or /128), without flags or
/// an output interface: what the kernel would do with a packet to it.
pub(crate) fn route_query(dst: IpAddr) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = family(dst);
    message.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    message
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    message
}
