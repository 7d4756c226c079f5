//! `cargo xtask …`: the project's developer and CI tasks.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod apiserver;
mod bench;
mod ci;
mod cmd;
mod demo;
mod deps;
mod vm_test;

/// Developer and CI tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The end-to-end tests' API server (built from Debian's packaged k8s.io/apiserver
    /// source) and kubectl, fetched and built into a cache outside the clone.
    Apiserver(apiserver::Options),
    /// The README's test command: format check, clippy, and every test tier that exists.
    Ci(ci::Options),
    /// Benchmarks, reported as figures and ratios against a reference run side by side.
    Bench(bench::Options),
    /// The documents' nginx example on a two-node topology, with traffic through it (root).
    Demo(demo::Options),
    /// The scenario suite's kernel backend in a VM on Debian kernels (or the matrix with
    /// `--kernel all`).
    VmTest(vm_test::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Apiserver(options) => apiserver::run(options),
        Command::Ci(options) => ci::run(options),
        Command::Bench(options) => bench::run(options),
        Command::Demo(options) => demo::run(options),
        Command::VmTest(options) => vm_test::run(options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
