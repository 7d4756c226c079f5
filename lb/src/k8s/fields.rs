//! Parsers for the fields Kubernetes objects carry as strings and 32-bit integers.

use std::net::IpAddr;

use super::error::ErrorSink;
use crate::model::L4Protocol;

/// What a protocol field holds.
pub enum ParsedProtocol {
    /// TCP or UDP.
    Supported(L4Protocol),
    /// A protocol Kubernetes knows but this load balancer does not serve (SCTP).
    Unsupported(String),
}

/// `protocol` (default TCP). SCTP is valid Kubernetes but not served, as the documents say.
pub fn protocol(sink: &mut ErrorSink, field: &str, raw: Option<&str>) -> Option<ParsedProtocol> {
    match raw.unwrap_or("TCP") {
        "TCP" => Some(ParsedProtocol::Supported(L4Protocol::Tcp)),
        "UDP" => Some(ParsedProtocol::Supported(L4Protocol::Udp)),
        "SCTP" => Some(ParsedProtocol::Unsupported("SCTP".to_owned())),
        other => {
            sink.invalid(field, other, "expected TCP, UDP or SCTP");
            None
        }
    }
}

/// A port number, 1-65535.
pub fn port(sink: &mut ErrorSink, field: &str, raw: i32) -> Option<u16> {
    match u16::try_from(raw) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            sink.invalid(field, raw, "expected a port from 1 to 65535");
            None
        }
    }
}

/// An IP address in canonical or IPv4-mapped form; surrounding spaces are not accepted, as the
/// API server does not accept them either.
pub fn ip(sink: &mut ErrorSink, field: &str, raw: &str) -> Option<IpAddr> {
    match raw.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            sink.invalid(field, raw, "expected an IPv4 or IPv6 address");
            None
        }
    }
}
