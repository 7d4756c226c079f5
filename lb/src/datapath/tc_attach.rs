//! Attaching the NodePort programs to the NodePort devices so they outlive the agent, and
//! removing them again.
//!
//! With tcx (Linux 6.6) each program is a BPF link pinned as
//! `links/<program>_<device>-<generation>` beside the socket hooks' links: a new agent attaches
//! a new generation in front of the old one (so it takes over at once), then unpins the old,
//! which detaches it. Without tcx each is a netlink `cls_bpf` filter on the device's `clsact`
//! qdisc (added when missing) at a fixed priority and handle, so a restarted agent replaces
//! its own filter in place instead of stacking a second one; such filters stay attached
//! without pins, so the agent records them (and the qdiscs it created) for `lbctl cleanup`.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType, TcError};
use ebpf::{NODEPORT_EGRESS_PROGRAM, NODEPORT_INGRESS_PROGRAM, POD_INGRESS_PROGRAM};
use serde::{Deserialize, Serialize};

use super::nodeport::{DeviceAddrs, NodePortLb};
use super::sock_lb::{pinned_links, program, LINKS_DIR};
use super::tc_netlink;
use super::DatapathError;
use crate::host::PodInterface;

/// The netlink filters' priority: fixed, so a restarted agent finds and replaces its own.
pub const NETLINK_PRIORITY: u16 = 0x4c42;
/// The netlink filters' handle (`0:1`).
pub const NETLINK_HANDLE: u32 = 1;

/// How programs are attached to devices on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcMode {
    /// tcx BPF links, pinned (Linux 6.6).
    Tcx,
    /// netlink `cls_bpf` filters on a `clsact` qdisc.
    Netlink,
}

impl std::fmt::Display for TcMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcMode::Tcx => "tcx",
            TcMode::Netlink => "tc",
        })
    }
}

/// A device's ingress or egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcDirection {
    /// Packets arriving.
    Ingress,
    /// Packets leaving.
    Egress,
}

impl TcDirection {
    /// The program attached in this direction.
    pub fn program(self) -> &'static str {
        match self {
            TcDirection::Ingress => NODEPORT_INGRESS_PROGRAM,
            TcDirection::Egress => NODEPORT_EGRESS_PROGRAM,
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            TcDirection::Ingress => TcAttachType::Ingress,
            TcDirection::Egress => TcAttachType::Egress,
        }
    }

    fn parent_minor(self) -> u32 {
        match self {
            TcDirection::Ingress => tc_netlink::TC_H_MIN_INGRESS,
            TcDirection::Egress => tc_netlink::TC_H_MIN_EGRESS,
        }
    }
}

impl std::fmt::Display for TcDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcDirection::Ingress => "ingress",
            TcDirection::Egress => "egress",
        })
    }
}

/// One program attached to one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcAttachment {
    /// The device's name when attached.
    pub device: String,
    /// Its ifindex (what cleanup goes by: a name can change).
    pub ifindex: u32,
    /// Ingress or egress.
    pub direction: TcDirection,
    /// A pod's host-side interface (`socketLB.hostNamespaceOnly`): its ingress runs
    /// `lb_pod_ingress`, not the NodePort program.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod: bool,
    /// How.
    pub mode: TcMode,
    /// The pinned link (tcx only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<PathBuf>,
}

/// What the agent attached to devices, kept in its record for the next agent and `lbctl
/// cleanup`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcRecord {
    /// Every program on every device.
    pub attachments: Vec<TcAttachment>,
    /// Ifindexes of the devices whose `clsact` qdisc the agent added (removed on cleanup;
    /// one that was there before stays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clsact_created: Vec<u32>,
    /// The inode of the agent's network namespace (`/proc/self/ns/net`): the ifindexes above
    /// mean these devices only there.
    #[serde(default)]
    pub netns_inode: u64,
}

/// The inode of this thread's network namespace, 0 when it cannot be read.
pub fn current_netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

impl TcAttachment {
    /// The program attached.
    pub fn program(&self) -> &'static str {
        program_for(self.direction, self.pod)
    }
}

/// The program on a device's hook: the pod one at a pod interface's ingress, else the
/// direction's NodePort program.
fn program_for(direction: TcDirection, pod: bool) -> &'static str {
    if pod && direction == TcDirection::Ingress {
        POD_INGRESS_PROGRAM
    } else {
        direction.program()
    }
}

impl TcRecord {
    /// The devices with programs attached, in name order, each once.
    pub fn devices(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.attachments.iter().map(|a| a.device.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl NodePortLb {
    /// Attaches both programs to every device of `devices`, and the pod programs to every
    /// interface of `pods`, in `mode`. `previous` is what an earlier agent recorded: its
    /// netlink filters on devices no longer chosen are deleted, its clsact qdiscs stay recorded
    /// as created, and its tcx links are unpinned once the new ones are attached. A device that
    /// refuses is an error naming it.
    pub fn attach(
        &mut self,
        devices: &[DeviceAddrs],
        pods: &[PodInterface],
        mode: TcMode,
        previous: &TcRecord,
    ) -> Result<TcRecord, DatapathError> {
        let links_dir = self.pin_dir.join(LINKS_DIR);
        std::fs::create_dir_all(&links_dir).map_err(DatapathError::pin(&links_dir))?;
        // The replaced maps' entries go into the new maps now, not at the load (see
        // `SockLb::attach`); what the old programs write until detached follows in `finish`.
        if let Some(migration) = &self.migration {
            migration.copy_into(&mut self.ebpf)?;
        }
        let old_links = tc_links(&links_dir)?;
        self.generation = old_links.iter().map(|(_, g)| g + 1).max().unwrap_or(1);
        self.mode = Some(mode);
        let mut record = TcRecord {
            netns_inode: current_netns_inode(),
            ..TcRecord::default()
        };
        let targets = devices
            .iter()
            .map(|d| (d.name.as_str(), d.ifindex, false))
            .chain(pods.iter().map(|p| (p.name.as_str(), p.ifindex, true)));
        for (name, ifindex, pod) in targets {
            self.attach_device(name, ifindex, pod, previous, &mut record)?;
        }
        for (path, _) in old_links {
            super::detach_and_unpin(&path)?;
        }
        // An earlier agent's filters where this one attached nothing (a device no longer
        // chosen, or tcx now): they would keep running the old programs.
        for old in previous
            .attachments
            .iter()
            .filter(|a| a.mode == TcMode::Netlink)
        {
            let kept = record.attachments.iter().any(|a| {
                a.mode == TcMode::Netlink
                    && a.ifindex == old.ifindex
                    && a.direction == old.direction
            });
            if !kept {
                remove_filter(old)?;
            }
        }
        // Qdiscs an earlier agent added stay this agent's to remove, whatever it attached now.
        for &ifindex in &previous.clsact_created {
            if !record.clsact_created.contains(&ifindex) {
                record.clsact_created.push(ifindex);
            }
        }
        // The old programs are detached: what they wrote since the load moves over, and the
        // replaced maps go.
        if let Some(migration) = self.migration.take() {
            migration.finish(&mut self.ebpf)?;
        }
        Ok(record)
    }

    /// Keeps the pod programs on exactly the pod interfaces `pods` (pods come and go while
    /// the agent runs): attaches them to new interfaces, and forgets (unpins) those of
    /// interfaces gone. Returns how many interfaces changed.
    pub fn refresh_pods(
        &mut self,
        pods: &[PodInterface],
        record: &mut TcRecord,
    ) -> Result<usize, DatapathError> {
        let mut changed = 0;
        let gone: Vec<u32> = record
            .attachments
            .iter()
            .filter(|a| a.pod && !pods.iter().any(|p| p.ifindex == a.ifindex))
            .map(|a| a.ifindex)
            .collect();
        for a in record
            .attachments
            .iter()
            .filter(|a| gone.contains(&a.ifindex))
        {
            if let Some(link) = &a.link {
                super::detach_and_unpin(link)?;
            }
        }
        changed += gone.iter().collect::<std::collections::BTreeSet<_>>().len();
        record.attachments.retain(|a| !gone.contains(&a.ifindex));
        record.clsact_created.retain(|i| !gone.contains(i));
        for pod in pods {
            if record.attachments.iter().any(|a| a.ifindex == pod.ifindex) {
                continue;
            }
            let previous = TcRecord::default();
            self.attach_device(&pod.name, pod.ifindex, true, &previous, record)?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Attaches the ingress and egress programs of a NodePort device or (`pod`) a pod
    /// interface, recording them in `record`.
    fn attach_device(
        &mut self,
        name: &str,
        ifindex: u32,
        pod: bool,
        previous: &TcRecord,
        record: &mut TcRecord,
    ) -> Result<(), DatapathError> {
        let mode = self.mode.unwrap_or(TcMode::Netlink);
        let links_dir = self.pin_dir.join(LINKS_DIR);
        if mode == TcMode::Netlink {
            let created = add_clsact(name)?;
            if created || previous.clsact_created.contains(&ifindex) {
                record.clsact_created.push(ifindex);
            }
        }
        for direction in [TcDirection::Ingress, TcDirection::Egress] {
            let program_name = program_for(direction, pod);
            let prog: &mut SchedClassifier = program(&mut self.ebpf, program_name)?;
            let link = match mode {
                TcMode::Tcx => Some(attach_tcx(
                    prog,
                    program_name,
                    name,
                    direction,
                    &links_dir,
                    self.generation,
                )?),
                TcMode::Netlink => {
                    attach_netlink(prog, program_name, name, direction)?;
                    None
                }
            };
            record.attachments.push(TcAttachment {
                device: name.to_owned(),
                ifindex,
                direction,
                pod,
                mode,
                link,
            });
        }
        Ok(())
    }
}

/// Attaches `prog` (called `name`) through a tcx link in front of any other program (an
/// earlier agent's included) and pins it.
fn attach_tcx(
    prog: &mut SchedClassifier,
    name: &'static str,
    device: &str,
    direction: TcDirection,
    links_dir: &Path,
    generation: u64,
) -> Result<PathBuf, DatapathError> {
    let refused = |source| device_refused(device, name, source);
    let id = prog
        .attach_with_options(
            device,
            direction.attach_type(),
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )
        .map_err(refused)?;
    let link = FdLink::try_from(prog.take_link(id).map_err(refused)?).map_err(|e| {
        DatapathError::Unsupported {
            what: format!("a BPF link for program {name} on device {device} ({e})"),
            needs: "tcx, Linux 6.6",
        }
    })?;
    let path = links_dir.join(format!("{name}_{device}-{generation}"));
    link.pin(&path).map_err(|e| DatapathError::Pin {
        path: path.clone(),
        detail: format!("{e}{}", super::error::source_chain(&e)),
    })?;
    Ok(path)
}

/// Attaches `prog` (called `name`) as the netlink filter at
/// [`NETLINK_PRIORITY`]/[`NETLINK_HANDLE`], replacing the one there (an earlier agent's).
fn attach_netlink(
    prog: &mut SchedClassifier,
    name: &'static str,
    device: &str,
    direction: TcDirection,
) -> Result<(), DatapathError> {
    let refused = |source| device_refused(device, name, source);
    let options = || {
        TcAttachOptions::Netlink(NlOptions {
            priority: NETLINK_PRIORITY,
            handle: TcHandle::from(NETLINK_HANDLE),
            classid: None,
        })
    };
    let id = match prog.attach_with_options(device, direction.attach_type(), options()) {
        Err(e) if errno(&e) == Some(nix::libc::EEXIST) => {
            let existing = SchedClassifierLink::attached(
                device,
                direction.attach_type(),
                NETLINK_PRIORITY,
                TcHandle::from(NETLINK_HANDLE),
                None,
            )
            .map_err(|e| refused(ProgramError::TcError(TcError::IoError(e))))?;
            prog.attach_to_link(existing).map_err(refused)?
        }
        other => other.map_err(refused)?,
    };
    // The filter holds the program; dropping the link would delete the filter.
    std::mem::forget(prog.take_link(id).map_err(refused)?);
    Ok(())
}

/// Adds the clsact qdisc to `device`; `false` when it had one.
fn add_clsact(device: &str) -> Result<bool, DatapathError> {
    match aya::programs::tc::qdisc_add_clsact(device) {
        Ok(()) => Ok(true),
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(nix::libc::EEXIST) => Ok(false),
        Err(e) => Err(DatapathError::Device {
            device: device.to_owned(),
            what: "cannot add the clsact qdisc".to_owned(),
            detail: format!("{e}{}", super::error::source_chain(&e)),
        }),
    }
}

/// The errno behind a netlink attach failure.
fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::TcError(TcError::NetlinkError(n)) => n.raw_os_error(),
        _ => None,
    }
}

fn device_refused(device: &str, program: &'static str, e: ProgramError) -> DatapathError {
    DatapathError::Device {
        device: device.to_owned(),
        what: format!("cannot attach program {program}"),
        detail: format!("{e}{}", super::error::source_chain(&e)),
    }
}

/// Deletes a recorded netlink filter; `false` when it was gone already.
fn remove_filter(a: &TcAttachment) -> Result<bool, DatapathError> {
    tc_netlink::delete_filter(
        a.ifindex,
        a.direction.parent_minor(),
        NETLINK_PRIORITY,
        NETLINK_HANDLE,
    )
    .map_err(|e| DatapathError::Device {
        device: a.device.clone(),
        what: format!("cannot delete the {} tc filter", a.direction),
        detail: e.to_string(),
    })
}

/// The pinned tcx links of the NodePort programs in `links_dir`, with their generation.
pub fn tc_links(links_dir: &Path) -> Result<Vec<(PathBuf, u64)>, DatapathError> {
    Ok(pinned_links(links_dir)?
        .into_iter()
        .filter(|(path, _)| is_tc_link(path))
        .collect())
}

/// Whether a pinned link is one of the NodePort programs' (`<program>_<device>-<gen>`).
pub fn is_tc_link(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        [
            NODEPORT_INGRESS_PROGRAM,
            NODEPORT_EGRESS_PROGRAM,
            POD_INGRESS_PROGRAM,
        ]
        .iter()
        .any(|p| n.starts_with(&format!("{p}_")))
    })
}

/// What cleanup outside the agent's network namespace leaves of `record` (the netlink filters
/// and the clsact qdiscs the agent added), one line each with the `tc` command that removes it
/// in that namespace: cleanup deletes the record, so a second cleanup there would not know.
fn left_elsewhere(record: &TcRecord) -> Vec<String> {
    let netns = record.netns_inode;
    let device_of = |ifindex: u32| {
        record
            .attachments
            .iter()
            .find(|a| a.ifindex == ifindex)
            .map_or_else(|| format!("(ifindex {ifindex})"), |a| a.device.clone())
    };
    let filters = record
        .attachments
        .iter()
        .filter(|a| a.mode == TcMode::Netlink)
        .map(|a| {
            format!(
                "left tc filter {} on {} {}: it is in the agent's network namespace (inode \
                 {netns}), not this one; remove it there with `tc filter del dev {} {} pref {}`",
                a.program(),
                a.device,
                a.direction,
                a.device,
                a.direction,
                NETLINK_PRIORITY
            )
        });
    let qdiscs = record.clsact_created.iter().map(|&ifindex| {
        let device = device_of(ifindex);
        format!(
            "left the clsact qdisc on {device}: it is in the agent's network namespace (inode \
             {netns}), not this one; remove it there with `tc qdisc del dev {device} clsact`"
        )
    });
    filters.chain(qdiscs).collect()
}

/// Removes what `record` says was attached without pins: the netlink filters, then the clsact
/// qdiscs the agent added. (tcx links are pins under `links/`, removed with the others.)
/// Returns one line per thing removed or found gone, for the user.
/// Outside the agent's network namespace the ifindexes name other devices: then nothing is
/// touched, and the lines say what was left and where to run it.
pub fn remove_tc_attachments(record: &TcRecord) -> Result<Vec<String>, DatapathError> {
    let mut lines = Vec::new();
    let unpinned = record.attachments.iter().any(|a| a.mode == TcMode::Netlink)
        || !record.clsact_created.is_empty();
    if unpinned && record.netns_inode != current_netns_inode() {
        return Ok(left_elsewhere(record));
    }
    for a in record
        .attachments
        .iter()
        .filter(|a| a.mode == TcMode::Netlink)
    {
        lines.push(if remove_filter(a)? {
            format!(
                "deleted tc filter {} on {} {} (ifindex {})",
                a.program(),
                a.device,
                a.direction,
                a.ifindex
            )
        } else {
            format!(
                "tc filter {} on {} {} was gone already",
                a.program(),
                a.device,
                a.direction
            )
        });
    }
    for &ifindex in &record.clsact_created {
        let device = record
            .attachments
            .iter()
            .find(|a| a.ifindex == ifindex)
            .map_or_else(|| format!("ifindex {ifindex}"), |a| a.device.clone());
        let deleted = tc_netlink::delete_clsact(ifindex).map_err(|e| DatapathError::Device {
            device: device.clone(),
            what: "cannot delete the clsact qdisc".to_owned(),
            detail: e.to_string(),
        })?;
        if deleted {
            lines.push(format!(
                "deleted the clsact qdisc the agent added on {device}"
            ));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_in_another_namespace_names_the_tc_commands_that_remove_what_it_left() {
        let attachment = |direction| TcAttachment {
            device: "eth0".into(),
            ifindex: 7,
            direction,
            pod: false,
            mode: TcMode::Netlink,
            link: None,
        };
        let record = TcRecord {
            attachments: vec![
                attachment(TcDirection::Ingress),
                attachment(TcDirection::Egress),
            ],
            clsact_created: vec![7],
            netns_inode: current_netns_inode() + 1,
        };
        let lines = remove_tc_attachments(&record).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("`tc filter del dev eth0 ingress pref 19522`"));
        assert!(lines[1].contains("`tc filter del dev eth0 egress pref 19522`"));
        assert!(lines[2].contains("`tc qdisc del dev eth0 clsact`"));
    }
}
