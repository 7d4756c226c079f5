//! `lbctl monitor -t trace-sock`: one line per socket translation event, as the documents'
//! `cilium-dbg monitor -v -t trace-sock` shows them:
//!
//! ```text
//! CPU 11: [pre-xlate-fwd] cgroup_id: 479586 sock_cookie: 7123674, dst [10.96.128.44]:80 tcp
//! ```

use std::net::{IpAddr, SocketAddr};

use ebpf::maps::{trace_kind, LbTraceSock};
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
        let kind = match raw.kind {
            trace_kind::PRE_XLATE_FWD => "pre-xlate-fwd",
            trace_kind::POST_XLATE_FWD => "post-xlate-fwd",
            trace_kind::PRE_XLATE_REV => "pre-xlate-rev",
            trace_kind::POST_XLATE_REV => "post-xlate-rev",
            _ => return None,
        };
        let protocol = match raw.proto {
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            other => other.to_string(),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
