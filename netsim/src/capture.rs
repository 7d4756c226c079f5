//! Packet capture on one interface inside a namespace (an AF_PACKET socket through pnet's
//! datalink channel), with frames parsed enough to assert addresses, protocol and ports.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pnet::datalink::{self, Channel, DataLinkReceiver};
use pnet::packet::ethernet::{EtherTypes, EthernetPacket};
use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::ipv6::Ipv6Packet;
use pnet::packet::tcp::{TcpFlags, TcpPacket};
use pnet::packet::udp::UdpPacket;
use pnet::packet::Packet;

use crate::error::{Error, Result};
use crate::netns::run_in;

/// How often the capture thread looks at its stop flag while the link is idle.
const POLL: Duration = Duration::from_millis(20);
/// After a stop request, frames still arriving are taken for at most this long.
const DRAIN: Duration = Duration::from_millis(200);

/// One captured Ethernet frame, with its IP and transport headers parsed where present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The whole frame as captured.
    pub data: Vec<u8>,
    /// EtherType (0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP, …).
    pub ethertype: u16,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: Option<u8>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// TCP flags (SYN = 0x02, ACK = 0x10, …).
    pub tcp_flags: Option<u8>,
}

impl Frame {
    /// Parses a captured Ethernet frame.
    pub fn parse(data: &[u8]) -> Frame {
        let mut frame = Frame {
            data: data.to_vec(),
            ethertype: 0,
            src_ip: None,
            dst_ip: None,
            protocol: None,
            src_port: None,
            dst_port: None,
            tcp_flags: None,
        };
        let Some(eth) = EthernetPacket::new(data) else {
            return frame;
        };
        frame.ethertype = eth.get_ethertype().0;
        let (proto, l4) = match eth.get_ethertype() {
            EtherTypes::Ipv4 => match Ipv4Packet::new(eth.payload()) {
                Some(ip) => {
                    frame.src_ip = Some(ip.get_source().into());
                    frame.dst_ip = Some(ip.get_destination().into());
                    (ip.get_next_level_protocol(), ip.payload().to_vec())
                }
                None => return frame,
            },
            EtherTypes::Ipv6 => match Ipv6Packet::new(eth.payload()) {
                Some(ip) => {
                    frame.src_ip = Some(ip.get_source().into());
                    frame.dst_ip = Some(ip.get_destination().into());
                    (ip.get_next_header(), ip.payload().to_vec())
                }
                None => return frame,
            },
            _ => return frame,
        };
        frame.protocol = Some(proto.0);
        frame.parse_l4(proto, &l4);
        frame
    }

    fn parse_l4(&mut self, proto: IpNextHeaderProtocol, l4: &[u8]) {
        if proto == IpNextHeaderProtocols::Tcp {
            if let Some(tcp) = TcpPacket::new(l4) {
                self.src_port = Some(tcp.get_source());
                self.dst_port = Some(tcp.get_destination());
                self.tcp_flags = Some(tcp.get_flags());
            }
        } else if proto == IpNextHeaderProtocols::Udp {
            if let Some(udp) = UdpPacket::new(l4) {
                self.src_port = Some(udp.get_source());
                self.dst_port = Some(udp.get_destination());
            }
        }
    }

    /// A TCP segment with SYN set and ACK clear: the first packet of a connection.
    pub fn is_tcp_syn(&self) -> bool {
        self.tcp_flags
            .is_some_and(|f| f & TcpFlags::SYN != 0 && f & TcpFlags::ACK == 0)
    }

    /// A UDP datagram.
    pub fn is_udp(&self) -> bool {
        self.protocol == Some(IpNextHeaderProtocols::Udp.0)
    }
}

/// A running capture; [`Capture::stop`] returns the frames, dropping it discards them.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Frame>>>,
}

impl Capture {
    /// Starts capturing every frame sent or received on `ifname` inside the namespace pinned at
    /// `netns`. Frames on the link after this returns are captured.
    pub(crate) fn start(ns: &str, netns: &Path, ifname: &str) -> Result<Capture> {
        let err = |source| Error::Socket {
            ns: ns.to_owned(),
            op: format!("open a capture on {ifname}"),
            source,
        };
        let rx = run_in(
            ns,
            netns,
            || -> std::io::Result<Box<dyn DataLinkReceiver>> {
                let iface = datalink::interfaces()
                    .into_iter()
                    .find(|i| i.name == ifname)
                    .ok_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no such interface")
                    })?;
                let config = datalink::Config {
                    read_timeout: Some(POLL),
                    // veth hands over GSO super-packets of up to 64 KiB.
                    read_buffer_size: 65_600,
                    promiscuous: false,
                    ..Default::default()
                };
                match datalink::channel(&iface, config)? {
                    Channel::Ethernet(_, rx) => Ok(rx),
                    _ => Err(std::io::Error::other("not an Ethernet channel")),
                }
            },
        )?
        .map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("netsim-capture-{ifname}"))
            .spawn(move || read_until_stopped(rx, &thread_stop))
            .map_err(err)?;
        Ok(Capture {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the capture and returns the frames seen, in order.
    pub fn stop(mut self) -> Vec<Frame> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_until_stopped(mut rx: Box<dyn DataLinkReceiver>, stop: &AtomicBool) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut stopping_since = None;
    loop {
        if stop.load(Ordering::Acquire) {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() > DRAIN {
                return frames;
            }
        }
        match rx.next() {
            Ok(data) => frames.push(Frame::parse(data)),
            // Idle: once stopping, everything queued before the stop has been read.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if stopping_since.is_some() {
                    return frames;
                }
            }
            Err(e) => {
                eprintln!("netsim: capture read failed: {e}");
                return frames;
            }
        }
    }
}
