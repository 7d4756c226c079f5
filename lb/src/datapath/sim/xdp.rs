//! The XDP program of `ebpf/src/bpf/nodeport_xdp.c` (`lb_nodeport_xdp`) and what the tc
//! ingress program does with a frame it handed over: [`PktSim::xdp`] and
//! [`PktSim::ingress_handed_over`].
//!
//! XDP runs the same decisions as tc ingress (one C source, compiled for each), so the model is
//! tc's verdict in XDP's terms: a frame forwarded out of the device it came in on is `XDP_TX`,
//! out of another `XDP_REDIRECT`; a frame that needs its neighbour resolved, or that XDP
//! decided to pass, goes on to tc with an [`LbXfer`] in its metadata saying what is left.

use ebpf::maps::{xfer, LbXfer};

use super::icmp;
use super::packet;
use super::pkt::{PktOutcome, PktSim, Verdict};

/// `XDP_DROP`, `XDP_PASS`, `XDP_TX`, `XDP_REDIRECT`.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// What the XDP program returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_PASS`: on to tc and the stack.
    Pass,
    /// `XDP_DROP`, counted in this `lb_counters` index.
    Drop(u8),
    /// `XDP_TX`: back out of the device it came in on.
    Tx,
    /// `XDP_REDIRECT` out of this device.
    Redirect(u32),
}

impl XdpAction {
    /// The program's return code.
    pub fn code(self) -> u32 {
        match self {
            XdpAction::Pass => XDP_PASS,
            XdpAction::Drop(_) => XDP_DROP,
            XdpAction::Tx => XDP_TX,
            XdpAction::Redirect(_) => XDP_REDIRECT,
        }
    }
}

/// A frame's fate at XDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpOutcome {
    /// What the program returned.
    pub action: XdpAction,
    /// The metadata it left for tc (only with [`XdpAction::Pass`]).
    pub xfer: Option<LbXfer>,
    /// The frame after the program.
    pub packet: Vec<u8>,
}

impl XdpOutcome {
    /// The metadata followed by the frame: what `BPF_PROG_TEST_RUN` returns for XDP.
    pub fn meta_and_frame(&self) -> Vec<u8> {
        let mut out = self.xfer.map(|x| x.to_bytes().to_vec()).unwrap_or_default();
        out.extend_from_slice(&self.packet);
        out
    }
}

impl PktSim {
    /// `lb_nodeport_xdp`: a frame arriving on NodePort device `ifindex`, at XDP.
    pub fn xdp(&mut self, ifindex: u32, frame: &[u8]) -> XdpOutcome {
        // A frame the program decided on: one it parses, or an ICMP error it translates.
        let parsed =
            packet::parse(frame).is_some() || self.icmp_error_entry(frame, false).is_some();
        let PktOutcome { verdict, packet } = self.ingress(ifindex, frame);
        let handed = |action, ifindex| {
            Some(LbXfer {
                magic: xfer::MAGIC | action,
                ifindex,
            })
        };
        let (action, xfer) = match verdict {
            // `ctx_pass_decided`: a frame it parsed is tc's to pass; one it did not parse, tc
            // parses again (and passes it).
            Verdict::Pass if parsed => (XdpAction::Pass, handed(xfer::DONE, 0)),
            Verdict::Pass => (XdpAction::Pass, None),
            Verdict::Drop(counter) => (XdpAction::Drop(counter), None),
            Verdict::Redirect {
                ifindex: out,
                neigh: true,
            } => (XdpAction::Pass, handed(xfer::REDIRECT_NEIGH, out)),
            Verdict::Redirect {
                ifindex: out,
                neigh: false,
            } if out == ifindex => (XdpAction::Tx, None),
            Verdict::Redirect {
                ifindex: out,
                neigh: false,
            } => (XdpAction::Redirect(out), None),
        };
        XdpOutcome {
            action,
            xfer,
            packet,
        }
    }

    /// `lb_finish_handed_over`: the tc ingress program of device `ifindex` meets a frame the
    /// XDP program passed with `xfer`: it does what XDP left, without a lookup.
    pub fn ingress_handed_over(&mut self, ifindex: u32, frame: &[u8], xfer: LbXfer) -> PktOutcome {
        let mut pkt = frame.to_vec();
        let verdict = match xfer.magic & !xfer::MAGIC {
            xfer::REDIRECT_NEIGH => Verdict::Redirect {
                ifindex: xfer.ifindex,
                neigh: true,
            },
            xfer::REJECT => match packet::parse(&pkt).and_then(|p| icmp::reject(&pkt, &p)) {
                Some(reply) => {
                    pkt = reply;
                    Verdict::Redirect {
                        ifindex,
                        neigh: false,
                    }
                }
                None => Verdict::Drop(ebpf::maps::counter::NO_BACKEND),
            },
            _ => Verdict::Pass,
        };
        PktOutcome {
            verdict,
            packet: pkt,
        }
    }
}
