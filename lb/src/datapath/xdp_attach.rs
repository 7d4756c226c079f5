//! Attaching the NodePort XDP program (`loadBalancer.acceleration`) to the NodePort devices,
//! in the driver (native XDP), as a BPF link pinned as `links/lb_nodeport_xdp_<device>`.
//!
//! A device holds one XDP program at a time, so a new agent cannot attach its program in front
//! of the old one as it does at tc: it unpins the old link (detaching the old program), then
//! attaches its own. Meanwhile the tc ingress program, attached first, serves every packet
//! itself (it does all XDP does), so no packet goes untranslated.

use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use aya::programs::{ProgramError, Xdp, XdpMode};
use ebpf::NODEPORT_XDP_PROGRAM;
use serde::{Deserialize, Serialize};

use super::nodeport::{DeviceAddrs, NodePortLb};
use super::sock_lb::{pinned_links, program, LINKS_DIR};
use super::DatapathError;

/// What to do with a device whose driver refuses native XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpPolicy {
    /// `native`: refuse to start, naming the device.
    Native,
    /// `best-effort`: leave the device to tc, with a warning naming it.
    BestEffort,
}

/// How a NodePort device's packets meet the XDP program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum XdpState {
    /// Attached in the driver, its link pinned ([`xdp_link_path`]).
    Native,
    /// Not attached (best-effort): the device is served at tc only.
    Skipped {
        /// Why, in a few words ([`refusal`]).
        reason: String,
    },
}

/// One device's XDP state, kept in the agent's record for `lbctl status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct XdpDevice {
    /// The device's name.
    pub device: String,
    /// Its state.
    #[serde(flatten)]
    pub state: XdpState,
}

impl NodePortLb {
    /// Attaches the XDP program to every device of `devices`, replacing an earlier agent's,
    /// and detaches it from devices no longer chosen. A device that refuses is an error naming
    /// it with [`XdpPolicy::Native`]; with [`XdpPolicy::BestEffort`] it is skipped, and the
    /// returned state says why.
    pub fn attach_xdp(
        &mut self,
        devices: &[DeviceAddrs],
        policy: XdpPolicy,
    ) -> Result<Vec<XdpDevice>, DatapathError> {
        let links_dir = self.pin_dir.join(LINKS_DIR);
        std::fs::create_dir_all(&links_dir).map_err(DatapathError::pin(&links_dir))?;
        // The old programs go first: a device takes one XDP program.
        detach_xdp(&links_dir)?;
        let Some(ebpf) = self.xdp.as_mut() else {
            return Err(DatapathError::Unsupported {
                what: "XDP acceleration without the XDP program loaded".to_owned(),
                needs: "NodePortConfig::xdp",
            });
        };
        let prog: &mut Xdp = program(ebpf, NODEPORT_XDP_PROGRAM)?;
        let mut out = Vec::new();
        for device in devices {
            let state = match attach_native(prog, device, &links_dir) {
                Ok(()) => XdpState::Native,
                Err(refused) if policy == XdpPolicy::BestEffort => {
                    tracing::warn!(
                        device = %device.name,
                        "XDP acceleration skipped on this device, which is served at tc: {} ({})",
                        refused.reason,
                        refused.detail
                    );
                    XdpState::Skipped {
                        reason: refused.reason,
                    }
                }
                Err(refused) => {
                    // Nothing half-applied: the devices attached so far are let go too.
                    detach_xdp(&links_dir)?;
                    return Err(DatapathError::Device {
                        device: device.name.clone(),
                        what: format!(
                            "refuses native XDP: {} (loadBalancer.acceleration=native; \
                             best-effort leaves such devices to tc)",
                            refused.reason
                        ),
                        detail: refused.detail,
                    });
                }
            };
            out.push(XdpDevice {
                device: device.name.clone(),
                state,
            });
        }
        Ok(out)
    }
}

/// Why a device has no XDP program: in a few words for `lbctl status`, and in full for the log.
#[derive(Debug)]
pub struct Refusal {
    /// What the kernel's answer usually means.
    pub reason: String,
    /// The error itself.
    pub detail: String,
}

/// Attaches `prog` to `device` in its driver and pins the link.
fn attach_native(prog: &mut Xdp, device: &DeviceAddrs, links_dir: &Path) -> Result<(), Refusal> {
    let id = prog
        .attach_to_if_index(device.ifindex, XdpMode::Driver)
        .map_err(|e| refusal(&e))?;
    let link = prog.take_link(id).map_err(|e| refusal(&e))?;
    let link = FdLink::try_from(link).map_err(|e| Refusal {
        reason: "no XDP link (Linux 5.9)".to_owned(),
        detail: format!("the kernel attached it without a BPF link: {e}"),
    })?;
    let path = xdp_link_path(links_dir, &device.name);
    link.pin(&path).map_err(|e| Refusal {
        reason: "its link cannot be pinned".to_owned(),
        detail: format!("{}: {e}", path.display()),
    })?;
    Ok(())
}

/// The kernel's refusal, with what it usually means.
pub fn refusal(e: &ProgramError) -> Refusal {
    let io = match e {
        ProgramError::SyscallError(s) => Some(&s.io_error),
        _ => None,
    };
    let reason = match io.and_then(std::io::Error::raw_os_error) {
        Some(nix::libc::EOPNOTSUPP) => "no native XDP in its driver".to_owned(),
        Some(nix::libc::ERANGE) => REASON_MTU.to_owned(),
        Some(nix::libc::EBUSY) | Some(nix::libc::EEXIST) => {
            "another XDP program is attached".to_owned()
        }
        _ => io.map_or_else(|| e.to_string(), ToString::to_string),
    };
    Refusal {
        reason,
        detail: format!("{e}{}", super::error::source_chain(e)),
    }
}

/// The reason a veth gives when its peer's MTU leaves no room for XDP's headroom in a page
/// ([`VETH_XDP_MAX_MTU`]).
pub const REASON_MTU: &str = "MTU too large for XDP";

/// The largest peer MTU a veth takes native XDP with, on 4 KiB pages: a page less XDP's
/// headroom (256), the Ethernet header (14) and `struct skb_shared_info` (320).
pub const VETH_XDP_MAX_MTU: u32 = 4096 - 256 - 14 - 320;

/// Where the XDP link of `device` is pinned.
pub fn xdp_link_path(links_dir: &Path, device: &str) -> PathBuf {
    links_dir.join(format!("{NODEPORT_XDP_PROGRAM}_{device}"))
}

/// Whether a pinned link is the XDP program's.
pub fn is_xdp_link(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(&format!("{NODEPORT_XDP_PROGRAM}_")))
}

/// Unpins every XDP link in `links_dir`, which detaches the program from its device; returns
/// the pins removed.
pub fn detach_xdp(links_dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    let mut removed = Vec::new();
    for (path, _) in pinned_links(links_dir)? {
        if is_xdp_link(&path) && super::detach_and_unpin(&path)? == super::Unpinned::Removed {
            removed.push(path);
        }
    }
    Ok(removed)
}
