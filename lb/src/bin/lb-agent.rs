//! `lb-agent`: programs the node's eBPF load balancer from Services and EndpointSlices.
//!
//! The source today is a directory of Kubernetes YAML (`--manifests`), followed with inotify;
//! the API-server watch comes later. Programs and maps are pinned, so they keep working after
//! the agent exits; `lbctl cleanup` removes them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use lb::agent::{Agent, ManifestSource, DEFAULT_STATE_DIR};
use lb::offline::OfflineView;
use lb::views::KprStatus;
use tracing::{error, info, warn};

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

/// How often the maps are checked against the source even without a change (node addresses
/// may change, and anything else that touched the maps is corrected).
const RESYNC: Duration = Duration::from_secs(10);

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
    let config = match lb::config::load(cli.values.as_deref(), &cli.sets) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("lb-agent: {errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in config.warnings() {
        warn!("{warning}");
    }
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
    // One agent per node: wait here, before anything touches the datapath, for another
    // agent with this state directory to exit.
    let _lock = lb::agent::AgentLock::acquire(&cli.state_dir)?;
    let source = ManifestSource::new(cli.values.clone(), cli.sets.clone(), dir, cli.node.clone())?;
    let view = source.load()?.context("cannot read the manifests")?;
    report_problems(&view);
    let status = KprStatus::new(&view.config, &view.selection);
    let mut agent = Agent::start(&view.config, status, &cli.state_dir)?;
    info!(
        pin_dir = %agent.record().pin_dir.display(),
        cgroup = %agent.record().cgroup.display(),
        "datapath attached"
    );
    reconcile(&mut agent, &view)?;
    if cli.once {
        return Ok(ExitCode::SUCCESS);
    }
    lb::stop::install_handlers().context("cannot install signal handlers")?;
    let mut last_sync = Instant::now();
    while !lb::stop::requested() {
        let changed = source.wait_for_change(Duration::from_millis(500))?;
        if !changed && last_sync.elapsed() < RESYNC {
            continue;
        }
        last_sync = Instant::now();
        match source.load()? {
            Ok(view) => {
                if changed {
                    report_problems(&view);
                }
                reconcile(&mut agent, &view)?;
            }
            Err(err) => error!("manifests not applied, keeping the current state: {err}"),
        }
    }
    info!("stopping; the datapath stays attached (lbctl cleanup removes it)");
    Ok(ExitCode::SUCCESS)
}

fn reconcile(agent: &mut Agent, view: &OfflineView) -> Result<()> {
    let report = agent.reconcile(&view.translation.state)?;
    if report.maps.written
        + report.maps.deleted
        + report.local_addrs_changed
        + report.udp_sockets_destroyed
        > 0
    {
        info!(
            frontends = report.frontends,
            written = report.maps.written,
            deleted = report.maps.deleted,
            local_addresses_changed = report.local_addrs_changed,
            udp_sockets_destroyed = report.udp_sockets_destroyed,
            "maps updated"
        );
    }
    Ok(())
}

fn report_problems(view: &OfflineView) {
    for line in view.problems() {
        warn!("{line}");
    }
}
