//! `cargo xtask build` and `cargo xtask run`.

use std::process::Command;

use anyhow::Result;

use crate::provision::run as sh;

/// Builds the release binary (build.rs builds the eBPF programs).
pub fn build_release() -> Result<()> {
    sh(Command::new("cargo").args(["build", "--release", "-p", "copytrace"]))
}

/// Builds and runs `copytrace run ARGS…` in the foreground.
pub fn run(args: &[String]) -> Result<()> {
    build_release()?;
    sh(Command::new("target/release/copytrace")
        .arg("run")
        .args(args))
}
