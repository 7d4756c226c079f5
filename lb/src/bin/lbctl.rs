//! `lbctl`: inspect the load balancer on this node.
//!
//! Views read what the agent installed: its record in the state directory and the pinned BPF
//! maps, so what they print is what the kernel does. With `--manifests DIR` (and `--values
//! FILE`) they render offline what an agent would program from those files instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lb::agent::{AgentRecord, DEFAULT_STATE_DIR};
use lb::datapath::{ServiceMaps, TraceMonitor};
use lb::maglev::{HashSeed, MaglevBackend, TableDump};
use lb::offline::{self, DeviceArg, OfflineInputs, OfflineView};
use lb::views::{CgroupTree, KprStatus, ServiceList, TraceSockEvent};

/// Inspect the eBPF service load balancer.
#[derive(Debug, Parser)]
#[command(name = "lbctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Services and their backends.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// The kube-proxy replacement's state.
    Status {
        /// Show the details block.
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        inputs: Inputs,
        #[command(flatten)]
        output: Output,
    },
    /// Follow datapath events.
    Monitor {
        /// Event type.
        #[arg(short = 't', long = "type", value_enum)]
        kind: MonitorType,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        output: Output,
    },
    /// BPF programs attached to cgroups, as `bpftool cgroup tree` shows them.
    #[command(subcommand)]
    Cgroup(CgroupCommand),
    /// Remove everything the agent installed on this node (programs, links, pinned maps,
    /// reserved ports), so the node can go back to kube-proxy.
    Cleanup {
        #[command(flatten)]
        state: StateDir,
    },
    /// What the packet datapath will do with a flow entering this node: the frontend, the
    /// backend and why, the translation and the verdict, from the simulator run over the
    /// node's live maps and FIB (run it in the agent's network namespace).
    Explain {
        /// The client, ADDRESS:PORT.
        #[arg(long)]
        from: std::net::SocketAddr,
        /// Where the client sends to, ADDRESS:PORT.
        #[arg(long)]
        to: std::net::SocketAddr,
        /// A UDP flow (TCP without).
        #[arg(long)]
        udp: bool,
        /// The device the flow enters through: a NodePort device, or a pod's interface.
        #[arg(long)]
        device: String,
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        output: Output,
    },
    /// Print a Maglev lookup table as JSON: {"table":[index…],"backends":[addr…]}.
    Maglev {
        /// Table size M: one of the maglev.tableSize primes.
        #[arg(long, default_value_t = lb::maglev::DEFAULT_TABLE_SIZE)]
        table_size: u32,
        /// maglev.hashSeed: base64 of 12 bytes.
        #[arg(long, default_value = lb::maglev::DEFAULT_HASH_SEED)]
        seed: HashSeed,
        /// Backends as IP:PORT[/PROTO][@WEIGHT].
        #[arg(required = true)]
        backends: Vec<MaglevBackend>,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// One row per frontend with its backends.
    List {
        #[command(flatten)]
        inputs: Inputs,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum CgroupCommand {
    /// The programs attached in a cgroup subtree (default: the one the agent attached to),
    /// to validate the socket hooks' attachment.
    Tree {
        /// The cgroup v2 directory to start from.
        path: Option<PathBuf>,
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MonitorType {
    /// Socket-level translations (pre/post xlate, forward and reverse).
    TraceSock,
}

/// The agent's state directory.
#[derive(Debug, Args)]
struct StateDir {
    /// Where the agent recorded what it installed (lb-agent --state-dir).
    #[arg(long = "state-dir", value_name = "DIR", env = "LB_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    dir: PathBuf,
}

/// Where the state comes from.
#[derive(Debug, Args)]
struct Inputs {
    #[command(flatten)]
    state: StateDir,
    /// Render offline from the Kubernetes YAML in this directory.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// Agent options (Helm-style values file).
    #[arg(long, value_name = "FILE")]
    values: Option<PathBuf>,
    /// Agent option overrides, KEY=VALUE (later wins).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The local Node (default: the only Node in the manifests).
    #[arg(long)]
    node: Option<String>,
    /// A device of the local node: NAME=IP[,IP…]; repeat for each device.
    #[arg(long = "device", value_name = "NAME=IP[,IP]")]
    devices: Vec<DeviceArg>,
}

#[derive(Debug, Args)]
struct Output {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Exit status when the view was printed but some inputs were rejected.
const EXIT_REJECTED_INPUTS: u8 = 3;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lbctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Service(ServiceCommand::List { inputs, output }) if !inputs.offline() => {
            let record = read_record(&inputs.state.dir)?;
            let contents = ServiceMaps::open_pinned(&record.pin_dir)?.read()?;
            let list = ServiceList::from_listed(&contents.frontends(), &record.services);
            print(output.format, &list, || list.render())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Service(ServiceCommand::List { inputs, output }) => {
            let view = offline_view(&inputs, true)?;
            let list = ServiceList::from_desired(&view.translation.state);
            print(output.format, &list, || list.render())?;
            Ok(finish(&view))
        }
        Command::Status {
            verbose,
            inputs,
            output,
        } if !inputs.offline() => {
            let record = read_record(&inputs.state.dir)?;
            let mut status = record.status.clone();
            status.socket_lb = socket_hooks_attached(&record)?;
            if record.nodeport.is_some() {
                // The counters are extra detail: without them the status is still right.
                match lb::datapath::read_drop_counters(&record.pin_dir) {
                    Ok(sums) => status.drops = lb::datapath::nonzero_drops(&sums),
                    Err(e) => eprintln!("warning: the drop counters cannot be read: {e}"),
                }
            }
            print_status(&status, verbose, output.format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            verbose,
            inputs,
            output,
        } => {
            let view = offline_view(&inputs, false)?;
            let status = KprStatus::new(&view.config, &view.selection);
            print_status(&status, verbose, output.format)?;
            Ok(finish(&view))
        }
        Command::Monitor {
            kind: MonitorType::TraceSock,
            count,
            state,
            output,
        } => monitor_trace_sock(&state.dir, count, output.format),
        Command::Cgroup(CgroupCommand::Tree {
            path,
            state,
            output,
        }) => {
            let root = match path {
                Some(path) => path,
                None => read_record(&state.dir)?.cgroup,
            };
            let tree =
                CgroupTree::new(lb::host::cgroup_query::cgroup_tree(&root).with_context(|| {
                    format!("cannot list the programs under {}", root.display())
                })?);
            print(output.format, &tree, || tree.render())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cleanup { state } => {
            let report = lb::agent::cleanup(&state.dir)?;
            for line in report.lines() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            from,
            to,
            udp,
            device,
            state,
            output,
        } => {
            let explanation = explain_flow(&state.dir, from, to, udp, &device)?;
            print(output.format, &explanation, || explanation.render())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Maglev {
            table_size,
            seed,
            backends,
        } => {
            let dump = TableDump::build(table_size, &seed, &backends)?;
            println!("{}", dump.to_json());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lbctl explain`: the node's pinned state, the entry point named `device`, the simulator.
fn explain_flow(
    state_dir: &Path,
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
    udp: bool,
    device: &str,
) -> Result<lb::views::Explanation> {
    use lb::views::{EntryPoint, FlowSpec, NodeState};
    let record = read_record(state_dir)?;
    let Some(settings) = record.nodeport else {
        anyhow::bail!(
            "the agent did not load the packet programs (nodePort.enabled is off): no packet \
             entering this node is balanced, so there is nothing to explain"
        );
    };
    if from.is_ipv4() != to.is_ipv4() {
        anyhow::bail!("--from {from} and --to {to} are of different families");
    }
    let attached = record.tc.attachments.iter().find(|a| a.device == device);
    let entry = match attached {
        Some(a) if a.pod => EntryPoint::Pod {
            name: device.to_owned(),
            ifindex: a.ifindex,
        },
        Some(a) => EntryPoint::Device {
            name: device.to_owned(),
            ifindex: a.ifindex,
            xdp: record
                .status
                .xdp_devices
                .iter()
                .any(|d| d.device == device && d.state == lb::datapath::XdpState::Native),
        },
        None => {
            let known = record.tc.devices();
            anyhow::bail!(
                "--device {device} is not a device the agent attached its programs to; those \
                 are: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
        }
    };
    let pinned =
        lb::datapath::PinnedState::read(&record.pin_dir, settings.maglev_m, settings.map_max)?;
    let now = lb::agent::ct_gc::monotonic_now();
    let node = NodeState {
        settings: lb::datapath::sim::PktConfig::from(&settings),
        maps: pinned.maps,
        local_addrs: pinned.local_addrs,
        devices: pinned.devices,
        conntrack: pinned.conntrack,
        names: record.services.clone(),
        now,
    };
    let flow = FlowSpec {
        proto: if udp {
            lb::model::L4Protocol::Udp
        } else {
            lb::model::L4Protocol::Tcp
        },
        src: from,
        dst: to,
    };
    Ok(lb::views::explain(
        &node,
        Box::new(lb::host::HostFib),
        &entry,
        flow,
    ))
}

/// Whether the socket hooks the agent recorded (its pinned links) are attached to its cgroup:
/// what the kernel runs, not what the agent was configured with. With no hooks recorded, it
/// is whether a connect hook of ours is attached anyway. A partial attachment is reported on
/// stderr.
fn socket_hooks_attached(record: &AgentRecord) -> Result<bool> {
    let all: Vec<(&str, &str)> = ebpf::SOCK_LB_PROGRAMS
        .iter()
        .copied()
        .chain([ebpf::SOCK_LB_RELEASE_PROGRAM])
        .collect();
    let recorded = |name: &str| {
        record.links.iter().any(|link| {
            link.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('-'))
                .is_some_and(|(program, _)| program == name)
        })
    };
    let mut expected: Vec<(&str, &str)> = all
        .iter()
        .copied()
        .filter(|(name, _)| recorded(name))
        .collect();
    if expected.is_empty() {
        expected = all.into_iter().take(1).collect();
    }
    let cgroup = &record.cgroup;
    let missing = lb::host::cgroup_query::missing_programs(cgroup, &expected)
        .with_context(|| format!("cannot query the programs attached to {}", cgroup.display()))?;
    if !missing.is_empty() && missing.len() < expected.len() {
        eprintln!(
            "lbctl: socket hooks missing at {}: {} (lbctl cgroup tree shows what is attached)",
            cgroup.display(),
            missing.join(", ")
        );
    }
    Ok(missing.is_empty())
}

/// The running agent's record, or an error that also says how to render offline.
fn read_record(state_dir: &Path) -> Result<AgentRecord> {
    AgentRecord::read(state_dir).context(
        "cannot read the agent's state; to render offline instead, give --manifests DIR \
         [--values FILE] [--set KEY=VALUE]",
    )
}

impl Inputs {
    /// Whether files were given to render from, instead of the running agent's state.
    fn offline(&self) -> bool {
        self.manifests.is_some() || self.values.is_some() || !self.sets.is_empty()
    }
}

fn print_status(status: &KprStatus, verbose: bool, format: Format) -> Result<()> {
    print(format, status, || {
        if verbose {
            status.render_verbose()
        } else {
            status.render_short()
        }
    })
}

/// Prints trace-sock events until interrupted or `count` events were printed.
fn monitor_trace_sock(state_dir: &Path, count: Option<usize>, format: Format) -> Result<ExitCode> {
    let record = AgentRecord::read(state_dir)?;
    let mut monitor = TraceMonitor::open(&record.pin_dir)?;
    lb::stop::install_handlers().context("cannot install signal handlers")?;
    // Tracing is on from here: say so, so a person (or a test) knows calls from now on show.
    eprintln!(
        "Listening for trace-sock events on {} (monitor slot {} of {}). Press Ctrl-C to quit",
        record.pin_dir.display(),
        monitor.slot() + 1,
        ebpf::maps::MONITOR_SLOTS
    );
    let mut printed = 0;
    let mut stdout = std::io::stdout().lock();
    let mut stopping = false;
    while !stopping && count.is_none_or(|n| printed < n) {
        // Once asked to stop, print what the programs had already queued, then quit: every
        // call made before Ctrl-C shows.
        stopping = lb::stop::requested();
        let wait = if stopping {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        };
        for raw in monitor.next_events(wait)? {
            let Some(event) = TraceSockEvent::decode(&raw) else {
                continue;
            };
            match format {
                Format::Text => writeln!(stdout, "{}", event.render())?,
                Format::Json => writeln!(stdout, "{}", serde_json::to_string(&event)?)?,
            }
            stdout.flush()?;
            printed += 1;
            if count.is_some_and(|n| printed >= n) {
                break;
            }
        }
    }
    if monitor.lost() > 0 {
        eprintln!(
            "{} events were lost: the monitor did not keep up",
            monitor.lost()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn offline_view(inputs: &Inputs, needs_manifests: bool) -> Result<OfflineView> {
    if needs_manifests && inputs.manifests.is_none() {
        bail!("an offline service list needs --manifests DIR (and optionally --values FILE)");
    }
    let view = offline::render(&OfflineInputs {
        values: inputs.values.clone(),
        sets: inputs.sets.clone(),
        manifests: inputs.manifests.clone(),
        node: inputs.node.clone(),
        devices: inputs.devices.clone(),
    })
    .context("cannot render offline")?;
    Ok(view)
}

fn print<T: serde::Serialize>(
    format: Format,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<()> {
    match format {
        Format::Text => print!("{}", text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

fn finish(view: &OfflineView) -> ExitCode {
    for line in view.problems() {
        eprintln!("{line}");
    }
    if view.has_errors() {
        ExitCode::from(EXIT_REJECTED_INPUTS)
    } else {
        ExitCode::SUCCESS
    }
}
