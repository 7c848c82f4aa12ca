//! Project automation: `cargo xtask provision|build|run|test`.
//!
//! Every command provisions first (idempotent, quick when done), so the two
//! README commands work on a bare machine.

mod provision;
mod run;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "copytrace build, provisioning and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain, bpf-linker and Debian packages copytrace needs.
    Provision,
    /// Provision, then build copytrace (release) with its eBPF programs.
    Build,
    /// Provision, build, and run `copytrace run` with the given arguments.
    Run {
        /// Arguments for `copytrace` after `run` (e.g. --json).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Provision, build, then run fmt, clippy and the whole test suite as root.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Provision => provision::provision(),
        Cmd::Build => {
            provision::provision()?;
            run::build_release()
        }
        Cmd::Run { args } => {
            provision::provision()?;
            run::run(&args)
        }
        Cmd::Test { filter } => {
            provision::provision()?;
            test::test(filter.as_deref())
        }
    }
}
