//! `lb-agent`: programs the node's eBPF load balancer from Services and EndpointSlices.
//!
//! Today it validates and prints its configuration (`--dry-run`); the datapath arrives with
//! the east-west work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match lb::config::load(cli.values.as_deref(), &cli.sets) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("lb-agent: {errors}");
            return ExitCode::FAILURE;
        }
    };
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    if !cli.dry_run {
        eprintln!(
            "lb-agent: this build has no datapath yet; only --dry-run is available (the socket \
             hooks and maps arrive with the east-west issue)"
        );
        return ExitCode::FAILURE;
    }
    match serde_yaml::to_string(&config.effective_values()) {
        Ok(yaml) => {
            print!("# effective configuration\n{yaml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("lb-agent: cannot print the configuration: {err}");
            ExitCode::FAILURE
        }
    }
}
