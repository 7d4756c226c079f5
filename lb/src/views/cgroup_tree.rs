//! `lbctl cgroup tree`: the BPF programs attached in a cgroup subtree, laid out as the
//! documents show `bpftool cgroup tree` ("Validate BPF cgroup programs attachment").

use std::path::PathBuf;

use crate::host::cgroup_query::AttachedProgram;

/// The cgroups of a subtree that have programs attached, parents first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CgroupTree {
    /// Each cgroup with its attached programs.
    pub cgroups: Vec<CgroupEntry>,
}

/// One cgroup and what is attached to it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CgroupEntry {
    /// The cgroup's directory.
    pub path: PathBuf,
    /// Its programs.
    pub programs: Vec<AttachedProgram>,
}

impl CgroupTree {
    /// The tree of `(cgroup, programs)` pairs.
    pub fn new(tree: Vec<(PathBuf, Vec<AttachedProgram>)>) -> Self {
        CgroupTree {
            cgroups: tree
                .into_iter()
                .map(|(path, programs)| CgroupEntry { path, programs })
                .collect(),
        }
    }

    /// The table, as bpftool prints it.
    pub fn render(&self) -> String {
        let mut out = String::from("CgroupPath\nID       AttachType      AttachFlags     Name\n");
        for cgroup in &self.cgroups {
            out.push_str(&format!("{}\n", cgroup.path.display()));
            for p in &cgroup.programs {
                let line = format!(
                    "{:<8} {:<15} {:<15} {}",
                    p.id, p.attach_type, p.attach_flags, p.name
                );
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_laid_out_as_bpftool_prints_it() {
        let tree = CgroupTree::new(vec![(
            PathBuf::from("/run/lb-agent/cgroupv2"),
            vec![
                AttachedProgram {
                    id: 10613,
                    attach_type: "device",
                    attach_flags: "multi",
                    name: String::new(),
                },
                AttachedProgram {
                    id: 48497,
                    attach_type: "connect4",
                    attach_flags: "",
                    name: "lb_sock4_connec".to_owned(),
                },
            ],
        )]);
        assert_eq!(
            tree.render(),
            "CgroupPath\n\
             ID       AttachType      AttachFlags     Name\n\
             /run/lb-agent/cgroupv2\n\
             10613    device          multi\n\
             48497    connect4                        lb_sock4_connec\n"
        );
    }
}
