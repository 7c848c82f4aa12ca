//! `cargo xtask test`: formatting, lints, then every test binary, run to the
//! end even after a failure: unit tests once, kernel tests once per probe
//! back-end on this machine, then the same kernel test binaries inside the
//! kernel-matrix guests, then the packaged service under systemd in a
//! Debian guest. One closing line adds everything up; tests that could not
//! run are reported as skipped (with why) or not run, never as passed.

mod disk;
pub mod host;
pub mod tally;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Result};

use self::tally::{failures, skip_reasons, Run, Totals};
use crate::cmd::{echo, euid, run, say};

/// What `cargo xtask test` runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only tests whose name contains this (guests are left out then).
    pub filter: Option<String>,
    /// Leave out the qemu guests (matrix and systemd).
    pub no_guests: bool,
}

/// The layering of imports, formatting and lints: the workspace on
/// stable, the eBPF crate on nightly.
pub fn lints() -> Result<()> {
    crate::layers::check(std::path::Path::new("."))?;
    say("layers: every import points down a stage; copytrace-ebpf has no module cycle");
    run(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    run(Command::new("cargo").current_dir("copytrace-ebpf").args([
        "+nightly",
        "clippy",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}

/// Every test binary on this machine.
fn host_runs(opts: &Options) -> Result<Vec<Run>> {
    let bins = crate::build::test_binaries(None, &[])?;
    let copytrace = PathBuf::from("target/debug/copytrace");
    let backends = host::backends(&copytrace)?;
    for (b, ok) in &backends {
        match ok {
            Ok(()) => say(&format!(
                "host: the {b} back-end attaches: kernel tests run on it"
            )),
            Err(why) => say(&format!("host: the {b} back-end is refused ({why})")),
        }
    }
    let skip_log = std::env::temp_dir().join(format!("copytrace-skips-{}", std::process::id()));
    let filter = opts.filter.as_deref();
    let mut runs = Vec::new();
    for bin in &bins {
        if bin.kind == "test"
            && !host::is_kernel(bin)
            && !host::PLAIN_TESTS.contains(&bin.name.as_str())
        {
            bail!(
                "test binary {} is in neither KERNEL_TESTS nor PLAIN_TESTS (xtask/src/suite/host.rs): say whether it loads probes",
                bin.name
            );
        }
        if !host::is_kernel(bin) {
            let name = format!("{}::{}", bin.package, bin.name);
            runs.push(host::run(name, &bin.path, filter, None, &skip_log)?);
            continue;
        }
        for (backend, allowed) in &backends {
            let name = format!("{} [{backend}]", bin.name);
            match allowed {
                Ok(()) => runs.push(host::run(
                    name,
                    &bin.path,
                    filter,
                    Some(backend),
                    &skip_log,
                )?),
                Err(why) => {
                    let tests = host::list(&bin.path, filter)?;
                    let reason = format!("this kernel refuses the {backend} back-end: {why}");
                    runs.push(Run::skipped(name, &tests, &reason));
                }
            }
        }
    }
    let _ = std::fs::remove_file(&skip_log);
    Ok(runs)
}

/// Runs the whole suite.
pub fn test(opts: &Options) -> Result<()> {
    if euid() != 0 {
        bail!("the test suite loads real eBPF probes and mounts filesystems: run it as root");
    }
    disk::check(std::path::Path::new("target"))?;
    let started = std::time::Instant::now();
    let phase = |name: &str, since: std::time::Instant| {
        say(&format!(
            "{name} took {:.0} s",
            since.elapsed().as_secs_f64()
        ))
    };
    lints()?;
    phase("lints", started);
    let at = std::time::Instant::now();
    let mut runs = host_runs(opts)?;
    phase("host tests (builds included)", at);
    if opts.filter.is_none() && !opts.no_guests {
        let at = std::time::Instant::now();
        runs.extend(crate::matrix::guest_runs(&crate::matrix::Selection::all())?);
        phase("kernel matrix (builds included)", at);
        let at = std::time::Instant::now();
        runs.extend(crate::systemd_guest::suite_runs()?);
        phase("systemd guests (package build included)", at);
    }
    phase("cargo xtask test", started);
    report(&runs)
}

/// Prints every run's summary, the skip reasons and one closing line;
/// fails unless everything that should run passed.
pub fn report(runs: &[Run]) -> Result<()> {
    echo("");
    for r in runs {
        echo(&r.summary());
    }
    for s in skip_reasons(runs) {
        echo(&s);
    }
    // Failures last, beside the closing line: CI shows only the end.
    for f in failures(runs) {
        echo(&f);
    }
    let totals = Totals::of(runs);
    // One closing line over every run, so CI sees the real total.
    echo(&totals.line());
    if !totals.green() {
        bail!("the test suite is not green: {}", totals.line());
    }
    Ok(())
}
