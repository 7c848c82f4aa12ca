//! `cargo xtask test`: formatting, lints, and every test (unit and kernel) as root.

use std::process::Command;

use anyhow::{bail, Result};

use crate::provision::run as sh;

/// Runs the whole suite. Kernel tests share global state (attached probes,
/// mounts), so they run one at a time.
pub fn test(filter: Option<&str>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the test suite loads real eBPF probes and mounts filesystems: run it as root");
    }
    sh(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    sh(Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--", "--test-threads=1"]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    sh(&mut cmd)
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
