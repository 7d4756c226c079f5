//! `lb-agent`: programs the node's eBPF load balancer from Services and EndpointSlices.
//!
//! The objects come from the Kubernetes API server (watched; `--kubeconfig`, `KUBECONFIG` or
//! the pod's service account, with `k8sServiceHost`/`k8sServicePort` for the address), or from a
//! directory of Kubernetes YAML (`--manifests`, followed with inotify). The loop itself is
//! [`lb::agent::run`]. Programs and maps are pinned, so they keep working after the agent exits;
//! `lbctl cleanup` removes them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use lb::agent::{RunOptions, DEFAULT_STATE_DIR};
use lb::source::{ApiConnection, ApiSource, ManifestDir, Source};
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
    /// follow changes to it, instead of watching the API server.
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    manifests: Option<PathBuf>,
    /// The kubeconfig file to reach the API server with (default: KUBECONFIG, then the pod's
    /// service account, then ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// This node's name: required with the API server; with --manifests, the only Node there
    /// by default.
    #[arg(long, env = "NODE_NAME")]
    node: Option<String>,
    /// Where the agent records what it installed, for lbctl.
    #[arg(long, value_name = "DIR", env = "LB_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Program once and exit (the datapath stays in place).
    #[arg(long)]
    once: bool,
}

/// Where the objects come from.
enum SourceWanted {
    /// `--manifests DIR`.
    Manifests(PathBuf),
    /// The API server, for this node.
    Api { node: String },
}

fn main() -> ExitCode {
    lb::host::free_memory::keep_large_blocks_mapped();
    lb::logging::init_stderr();
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
    let wanted = match (&cli.manifests, &cli.node) {
        (Some(dir), _) => SourceWanted::Manifests(dir.clone()),
        (None, Some(node)) => SourceWanted::Api { node: node.clone() },
        (None, None) => bail!(
            "watching the Kubernetes API needs this node's name: give --node NAME or set \
             NODE_NAME (a DaemonSet sets it from spec.nodeName), or use --manifests DIR, or \
             --dry-run to check the options"
        ),
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
    let mut source: Box<dyn Source> = match wanted {
        SourceWanted::Manifests(dir) => Box::new(ManifestDir::new(&dir)?),
        SourceWanted::Api { node } => {
            let values = config.values();
            let connection = ApiConnection {
                kubeconfig: cli.kubeconfig.clone(),
                service_host: values.k8s_service_host.clone(),
                service_port: values.k8s_service_port,
            };
            Box::new(ApiSource::connect(connection, &node)?)
        }
    };
    lb::agent::run(
        &config,
        source.as_mut(),
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
