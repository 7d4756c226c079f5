//! `lb-agent`: programs the node's eBPF load balancer from Services and EndpointSlices.
//!
//! The source today is a directory of Kubernetes YAML (`--manifests`), followed with inotify;
//! the API-server watch comes later. The loop itself is [`lb::agent::run`]. Programs and maps are pinned, so they keep working after
//! the agent exits; `lbctl cleanup` removes them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use lb::agent::{RunOptions, DEFAULT_STATE_DIR};
use lb::source::ManifestDir;
use tracing::{error, warn};

/// The node agent of the eBPF service load balancer.
#[derive(Debug, Parser)]
#[command(name = "lb-agent", version)]
struct Cli {
    /// Agent options: a Helm-style values file with the documents' option names.
    #[arg(long, value_name = "FILE")]
    values: Option<PathBuf>,
    /// Option overrides, KEY=VALUE as Helm's --set (later wins over the file and earlier sets).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Validate the options, print the effective configuration and exit.
    #[arg(long)]
    dry_run: bool,
    /// Program the Kubernetes YAML (Service, EndpointSlice, Pod, Node) in this directory and
    /// follow changes to it.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// This node's name in the manifests (default: the only Node there).
    #[arg(long, env = "NODE_NAME")]
    node: Option<String>,
    /// Where the agent records what it installed, for lbctl.
    #[arg(long, value_name = "DIR", env = "LB_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Program once and exit (the datapath stays in place).
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let Some(config) = load_options(&cli) else {
        return Ok(ExitCode::FAILURE);
    };
    if cli.dry_run {
        let yaml = serde_yaml::to_string(&config.effective_values())
            .context("cannot print the configuration")?;
        print!("# effective configuration\n{yaml}");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(dir) = &cli.manifests else {
        bail!(
            "no source of services: give --manifests DIR (the Kubernetes API watch is not built \
             yet), or --dry-run to check the options"
        );
    };
    // One agent per node: wait here, before anything touches the datapath, for another agent
    // with this state directory to exit; then read the options again, so an agent that waited
    // takes over with the values file as it is now.
    let _lock = lb::agent::AgentLock::acquire(&cli.state_dir)?;
    let Some(config) = load_options(&cli) else {
        return Ok(ExitCode::FAILURE);
    };
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let mut source = ManifestDir::new(dir)?;
    lb::agent::run(
        &config,
        &mut source,
        &RunOptions {
            values: cli.values,
            sets: cli.sets,
            node: cli.node,
            state_dir: cli.state_dir,
            once: cli.once,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The options of the values file and `--set` flags, or `None` after printing why they are
/// not valid.
fn load_options(cli: &Cli) -> Option<lb::config::AgentConfig> {
    match lb::config::load(cli.values.as_deref(), &cli.sets) {
        Ok(config) => Some(config),
        Err(errors) => {
            eprint!("lb-agent: {errors}");
            None
        }
    }
}
