//! `lbctl`: inspect the load balancer on this node.
//!
//! Until the datapath lands, views render offline from files: `--manifests DIR` and
//! `--values FILE` show what the agent would program.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lb::maglev::{HashSeed, MaglevBackend, TableDump};
use lb::offline::{self, DeviceArg, OfflineInputs, OfflineView};
use lb::views::{KprStatus, ServiceList};

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

/// Where the state comes from.
#[derive(Debug, Args)]
struct Inputs {
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
        } => {
            let view = offline_view(&inputs, false)?;
            let status = KprStatus::new(&view.config, &view.selection);
            print(output.format, &status, || {
                if verbose {
                    status.render_verbose()
                } else {
                    status.render_short()
                }
            })?;
            Ok(finish(&view))
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

fn offline_view(inputs: &Inputs, needs_manifests: bool) -> Result<OfflineView> {
    let given = inputs.manifests.is_some() || inputs.values.is_some() || !inputs.sets.is_empty();
    if !given || (needs_manifests && inputs.manifests.is_none()) {
        bail!(
            "no agent state to read on this node yet (reading the pinned BPF maps arrives with the \
             datapath); render offline with --manifests DIR [--values FILE] [--set KEY=VALUE]"
        );
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
