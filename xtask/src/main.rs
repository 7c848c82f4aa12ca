//! Project automation: `cargo xtask provision|build|run|test`.
//!
//! Every command provisions first (idempotent, quick when done), so the two
//! README commands work on a bare machine.

mod bench;
mod bench_loop;
mod guest;
mod matrix;
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
    /// Benchmarks: per-call cost next to bpftrace and strace, ingest, daemon
    /// resources; writes docs/benchmarks.md (root; not part of `test`).
    Bench,
    /// One measured loop (used by `bench`).
    #[command(hide = true)]
    BenchLoop {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels under qemu and run the
    /// scenarios with both probe back-ends in each.
    Matrix {
        /// Only this kernel line (5.10, 6.1, 6.12).
        #[arg(long)]
        kernel: Option<String>,
    },
    /// Scenario calls inside a matrix guest (run under copytrace trace).
    #[command(hide = true)]
    GuestScenarios,
    /// Provision, build, then run fmt, clippy and the whole test suite as root.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
}

fn main() -> Result<()> {
    // In a matrix guest the kernel starts this binary as /init, without arguments.
    if std::process::id() == 1 {
        return guest::init();
    }
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
        Cmd::Bench => {
            provision::provision()?;
            bench::bench()
        }
        Cmd::BenchLoop { args } => bench_loop::run(&args),
        Cmd::Matrix { kernel } => {
            provision::provision()?;
            let checks = matrix::run(kernel.as_deref())?;
            if checks.failed > 0 {
                anyhow::bail!("kernel matrix: {} check(s) failed", checks.failed);
            }
            Ok(())
        }
        Cmd::GuestScenarios => guest::scenarios(),
        Cmd::Test { filter } => {
            provision::provision()?;
            test::test(filter.as_deref())
        }
    }
}
