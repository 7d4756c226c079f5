//! `lbctl monitor -t trace-sock`: one line per socket translation event, as the documents'
//! `cilium-dbg monitor -v -t trace-sock` shows them:
//!
//! ```text
//! CPU 11: [pre-xlate-fwd] cgroup_id: 479586 sock_cookie: 7123674, dst [10.96.128.44]:80 tcp
//! ```

use std::net::{IpAddr, SocketAddr};

use ebpf::maps::LbTraceSock;

use crate::datapath::codec::{protocol_of, trace_kind_name};
use serde::Serialize;

/// A decoded trace-sock event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSockEvent {
    /// The CPU the hook ran on.
    pub cpu: u32,
    /// `pre-xlate-fwd`, `post-xlate-fwd`, `pre-xlate-rev` or `post-xlate-rev`.
    pub kind: &'static str,
    /// cgroup v2 id of the calling process.
    pub cgroup_id: u64,
    /// Socket cookie.
    pub sock_cookie: u64,
    /// The address at this point.
    pub dst: SocketAddr,
    /// `tcp`, `udp`, or the protocol number.
    pub protocol: String,
}

impl TraceSockEvent {
    /// Decodes a raw event; `None` for a kind this build does not know.
    pub fn decode(raw: &LbTraceSock) -> Option<Self> {
        let kind = trace_kind_name(raw.kind)?;
        let protocol = protocol_of(raw.proto)
            .map_or_else(|| raw.proto.to_string(), |p| p.to_string().to_lowercase());
        Some(TraceSockEvent {
            cpu: raw.cpu,
            kind,
            cgroup_id: raw.cgroup_id,
            sock_cookie: raw.sock_cookie,
            dst: SocketAddr::new(IpAddr::from(raw.address), u16::from_be(raw.port)),
            protocol,
        })
    }

    /// The monitor line.
    pub fn render(&self) -> String {
        format!(
            "CPU {}: [{}] cgroup_id: {} sock_cookie: {}, dst [{}]:{} {}",
            self.cpu,
            self.kind,
            self.cgroup_id,
            self.sock_cookie,
            self.dst.ip(),
            self.dst.port(),
            self.protocol
        )
    }
}

/// The event kinds, by their names in monitor lines.
const KINDS: [&str; 4] = [
    "pre-xlate-fwd",
    "post-xlate-fwd",
    "pre-xlate-rev",
    "post-xlate-rev",
];

impl TraceSockEvent {
    /// Reads back a line [`render`](Self::render) printed, for tools that follow `lbctl
    /// monitor`'s text output; `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("CPU ")?;
        let (cpu, rest) = rest.split_once(": [")?;
        let (kind, rest) = rest.split_once("] cgroup_id: ")?;
        let kind = KINDS.into_iter().find(|k| *k == kind)?;
        let (cgroup_id, rest) = rest.split_once(" sock_cookie: ")?;
        let (sock_cookie, rest) = rest.split_once(", dst [")?;
        let (ip, rest) = rest.split_once("]:")?;
        let (port, protocol) = rest.split_once(' ')?;
        Some(TraceSockEvent {
            cpu: cpu.parse().ok()?,
            kind,
            cgroup_id: cgroup_id.parse().ok()?,
            sock_cookie: sock_cookie.parse().ok()?,
            dst: SocketAddr::new(ip.parse().ok()?, port.parse().ok()?),
            protocol: protocol.trim_end().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebpf::maps::trace_kind;

    #[test]
    fn lines_match_the_documents_monitor_output() {
        let raw = LbTraceSock {
            cgroup_id: 479586,
            sock_cookie: 7123674,
            address: "10.96.128.44".parse::<IpAddr>().unwrap().into(),
            port: 80u16.to_be(),
            kind: trace_kind::PRE_XLATE_FWD,
            proto: 6,
            cpu: 11,
        };
        assert_eq!(
            TraceSockEvent::decode(&raw).unwrap().render(),
            "CPU 11: [pre-xlate-fwd] cgroup_id: 479586 sock_cookie: 7123674, dst [10.96.128.44]:80 tcp"
        );
        let v6 = LbTraceSock {
            address: "fd00::10".parse::<IpAddr>().unwrap().into(),
            kind: trace_kind::POST_XLATE_REV,
            proto: 17,
            ..raw
        };
        assert_eq!(
            TraceSockEvent::decode(&v6).unwrap().render(),
            "CPU 11: [post-xlate-rev] cgroup_id: 479586 sock_cookie: 7123674, dst [fd00::10]:80 udp"
        );
        assert_eq!(
            TraceSockEvent::decode(&LbTraceSock { kind: 9, ..raw }),
            None
        );
    }

    #[test]
    fn printed_lines_parse_back_to_the_same_event() {
        for (kind, address, proto) in [
            (trace_kind::PRE_XLATE_FWD, "10.96.128.44", 6),
            (trace_kind::POST_XLATE_FWD, "fd00::10", 17),
            (trace_kind::PRE_XLATE_REV, "10.244.1.246", 132),
            (trace_kind::POST_XLATE_REV, "::ffff:10.0.0.1", 6),
        ] {
            let event = TraceSockEvent::decode(&LbTraceSock {
                cgroup_id: 479586,
                sock_cookie: 7123674,
                address: address.parse::<IpAddr>().unwrap().into(),
                port: 8080u16.to_be(),
                kind,
                proto,
                cpu: 3,
            })
            .unwrap();
            assert_eq!(TraceSockEvent::parse(&event.render()), Some(event));
        }
        for line in [
            "",
            "Listening for trace-sock events",
            "CPU 1: [sideways] cgroup_id: 1 sock_cookie: 2, dst [10.0.0.1]:80 tcp",
            "CPU 1: [pre-xlate-fwd] cgroup_id: x sock_cookie: 2, dst [10.0.0.1]:80 tcp",
        ] {
            assert_eq!(TraceSockEvent::parse(line), None, "{line:?}");
        }
    }
}
