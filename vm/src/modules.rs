//! The kernel modules the scenarios need, taken from a kernel's modules directory: found by
//! name, decompressed (Debian's 6.x modules are `.ko.xz`), and ordered so each comes after the
//! modules its `.modinfo` says it depends on, for `insmod` in the guest. This needs no `depmod`
//! and no `modprobe` inside the guest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Modules the scenarios use: veth and bridges for netsim's topologies, tc's ingress qdisc and
/// BPF classifier, socket diagnostics (socket destroy), and the tunnel devices.
pub const WANTED: &[&str] = &[
    "veth",
    "bridge",
    "sch_ingress",
    "cls_bpf",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "tun",
    "vxlan",
    "geneve",
];

/// The modules to load, in load order, decompressed into `out`. Modules built into the kernel
/// (listed in `modules.builtin`) need nothing; a wanted module that is neither is reported in
/// the second list, so the run can say so.
pub fn prepare(modules_dir: &Path, out: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    std::fs::create_dir_all(out)?;
    let index = index(&modules_dir.join("kernel"))?;
    let builtin: BTreeSet<String> = std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|n| normalise(n.trim_end_matches(".ko")))
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let mut absent = Vec::new();
    for name in WANTED {
        let name = normalise(name);
        if builtin.contains(&name) {
            continue;
        }
        if !index.contains_key(&name) {
            absent.push(name);
            continue;
        }
        visit(&name, &index, out, &builtin, &mut seen, &mut order)?;
    }
    Ok((order, absent))
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    out: &Path,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<PathBuf>,
) -> Result<()> {
    if !seen.insert(name.to_owned()) || builtin.contains(name) {
        return Ok(());
    }
    let source = index
        .get(name)
        .with_context(|| format!("module {name} is needed by another module but not shipped"))?;
    let ko = decompress(source, &out.join(format!("{name}.ko")))?;
    for dep in depends(&ko)? {
        visit(&dep, index, out, builtin, seen, order)?;
    }
    order.push(ko);
    Ok(())
}

/// Module names treat `-` and `_` alike.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// Every module file under `dir`, by normalised name.
fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext));
            if let Some(stem) = stem {
                found.insert(normalise(stem), path.clone());
            }
        }
    }
    Ok(found)
}

/// `source` as a plain `.ko` at `dest` (kept from an earlier run when present).
fn decompress(source: &Path, dest: &Path) -> Result<PathBuf> {
    if dest.is_file() {
        return Ok(dest.to_owned());
    }
    let name = source.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let partial = dest.with_extension("ko.partial");
    match tool {
        None => {
            std::fs::copy(source, &partial)?;
        }
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(source)
                .output()
                .with_context(|| format!("cannot run {tool} to decompress {name}"))?;
            if !out.status.success() {
                bail!(
                    "{tool} -dc {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::fs::write(&partial, out.stdout)?;
        }
    }
    std::fs::rename(&partial, dest)?;
    Ok(dest.to_owned())
}

/// The `depends=` of a module's `.modinfo` section.
fn depends(ko: &Path) -> Result<Vec<String>> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(ko)?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{}: not an ELF module", ko.display()))?;
    let Some(section) = file.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let info = section.data()?;
    Ok(info
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .filter_map(|entry| entry.strip_prefix("depends="))
        .flat_map(|list| list.split(','))
        .filter(|d| !d.is_empty())
        .map(normalise)
        .collect())
}
