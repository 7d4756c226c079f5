//! `cargo xtask bench NAME`: runs a benchmark in release mode and prints its report.

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::cmd::{cargo, step};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Options {
    /// Which benchmark.
    #[arg(value_enum)]
    pub name: Bench,
}

/// The benchmarks there are.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Bench {
    /// Maglev table build time and peak memory, against the textbook M×N-matrix build.
    Maglev,
    /// How many entries of other backends move when one backend goes or comes.
    MaglevDisruption,
}

/// Runs the benchmark.
pub fn run(options: Options) -> Result<()> {
    let target = match options.name {
        Bench::Maglev => "maglev",
        Bench::MaglevDisruption => "maglev_disruption",
    };
    let mut cmd = cargo();
    cmd.args(["bench", "--package", "lb", "--bench", target]);
    step(&format!("bench {target}"), cmd)?;
    Ok(())
}
