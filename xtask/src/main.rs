//! Project automation: `cargo xtask provision|build|run|test|matrix|bench`.
//!
//! Every command provisions first (idempotent, quick when done), so the two
//! README commands work on a bare machine.

mod arch;
mod bench;
mod build;
mod cmd;
mod dist;
mod layers;
mod matrix;
mod provision;
mod suite;
mod systemd_guest;

use std::process::Command;

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
    /// Install everything the build, tests, benchmarks and release need.
    Provision,
    /// Provision the build, then build copytrace (release) with its eBPF programs.
    Build,
    /// Provision the build, build, and run `copytrace run` with the given arguments.
    Run {
        /// Arguments for `copytrace` after `run` (e.g. --json).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Provision, then run formatting, lints and the whole test suite as root:
    /// unit tests, kernel tests on every back-end this kernel allows, the
    /// kernel matrix guests and the systemd guest.
    Test {
        /// Only tests whose name contains this (the guests are left out then).
        filter: Option<String>,
        /// Leave out the qemu guests.
        #[arg(long)]
        no_guests: bool,
    },
    /// Only the kernel matrix: Debian's kernels under qemu, the kernel tests
    /// on both back-ends in each.
    Matrix {
        /// Only this kernel line (5.10, 6.1, 6.12).
        #[arg(long)]
        kernel: Option<String>,
        /// Only this architecture.
        #[arg(long, value_enum)]
        arch: Option<arch::Arch>,
        /// Only load each back-end in each guest (no tests): a quick check
        /// of what each kernel's verifier accepts.
        #[arg(long)]
        load_only: bool,
    },
    /// Only the layering check `test` starts with: imports point down the
    /// stages of copytrace/src, and copytrace-ebpf has no module cycle.
    Layers {
        /// The workspace to check.
        #[arg(long, default_value = ".")]
        root: std::path::PathBuf,
    },
    /// Only the systemd guests: the package installed and checked as a
    /// service under systemd, and a two-guest fleet under one Prometheus.
    SystemdGuest,
    /// Release artifacts: the static binary and the Debian package (lintian-checked) under target/dist.
    Dist {
        /// Architecture to build for [default: this machine's].
        #[arg(long, alias = "target", value_enum)]
        arch: Option<arch::Arch>,
    },
    /// Benchmarks: per-call cost next to bpftrace and strace, ingest, daemon
    /// resources, and the per-call ratios of both back-ends in the 6.12
    /// guest; writes docs/benchmarks.md (root; not part of `test`).
    Bench {
        /// Skip the guest (its boot and runs take about 2 minutes under TCG).
        #[arg(long)]
        no_guest: bool,
    },
    /// Soak: copies at full speed from every core, 20 tail clients (stuck
    /// and reconnecting) and a scrape every 100 ms against one daemon;
    /// reports RSS slope, exact counts, failed scrapes, CPU per 100k calls.
    Soak {
        /// How long to run.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Provision => provision::provision(),
        Cmd::Layers { root } => layers::check(&root),
        Cmd::SystemdGuest => {
            provision::provision()?;
            let runs = systemd_guest::suite_runs()?;
            suite::report(&runs)
        }
        Cmd::Dist { arch } => {
            provision::provision()?;
            let a = dist::dist(arch.unwrap_or(if cfg!(target_arch = "aarch64") {
                arch::Arch::Aarch64
            } else {
                arch::Arch::X86_64
            }))?;
            cmd::echo(&dist::contents(&a.deb)?);
            cmd::echo(&format!("static binary: {}", a.binary.display()));
            cmd::echo(&format!(
                "lintian (tags left after overrides):\n{}",
                a.lintian.trim_end()
            ));
            Ok(())
        }
        Cmd::Build => {
            provision::provision_build()?;
            build::release().map(drop)
        }
        Cmd::Run { args } => {
            provision::provision_build()?;
            let bin = build::release()?;
            cmd::run(Command::new(bin).arg("run").args(args))
        }
        Cmd::Test { filter, no_guests } => {
            provision::provision()?;
            suite::test(&suite::Options { filter, no_guests })
        }
        Cmd::Matrix {
            kernel,
            arch,
            load_only,
        } => {
            provision::provision()?;
            let sel = matrix::Selection {
                line: kernel,
                arch,
                load_only,
            };
            if load_only {
                return matrix::load_check(&sel);
            }
            let runs = matrix::guest_runs(&sel)?;
            let totals = suite::tally::Totals::of(&runs);
            for r in &runs {
                cmd::echo(&r.summary());
            }
            cmd::echo(&totals.line());
            anyhow::ensure!(totals.green(), "kernel matrix: {}", totals.line());
            Ok(())
        }
        Cmd::Bench { no_guest } => {
            provision::provision()?;
            bench::bench(!no_guest)
        }
        Cmd::Soak { seconds } => {
            provision::provision()?;
            bench::soak(seconds)
        }
    }
}
