//! Cargo builds the tasks need: the host binary, the static binaries for
//! guests and packages, and the test executables (found through cargo's
//! JSON messages rather than guessed paths).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::arch::Arch;
use crate::cmd::run;

/// A test executable cargo built.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// Cargo target name (`probe_syscalls`, `copytrace` for unit tests…).
    pub name: String,
    /// Cargo target kind: `lib`, `bin` or `test`.
    pub kind: String,
    /// Package it belongs to.
    pub package: String,
    /// The executable.
    pub path: PathBuf,
}

fn cargo_for(arch: Option<Arch>) -> Command {
    let mut cmd = Command::new("cargo");
    if let Some(a) = arch {
        if a == Arch::Aarch64 {
            // No cross gcc needed: rust-lld links the static aarch64 binaries.
            cmd.env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld");
        }
    }
    cmd
}

/// The host's release build of copytrace (build.rs builds the eBPF programs).
pub fn release() -> Result<PathBuf> {
    run(Command::new("cargo").args(["build", "--release", "-p", "copytrace"]))?;
    Ok(PathBuf::from("target/release/copytrace"))
}

/// Static (musl) release builds of `bins` (`package:bin` pairs) for `arch`.
pub fn static_bins(arch: Arch, packages: &[&str]) -> Result<PathBuf> {
    let target = arch.musl_target();
    let mut cmd = cargo_for(Some(arch));
    cmd.args(["build", "--release", "--target", target]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    run(&mut cmd)?;
    Ok(PathBuf::from("target").join(target).join("release"))
}

/// Builds test executables (without running them) and returns them.
/// `arch`: a static build for that architecture (guests), else the host's.
pub fn test_binaries(arch: Option<Arch>, packages: &[&str]) -> Result<Vec<TestBinary>> {
    let mut cmd = cargo_for(arch);
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    if let Some(a) = arch {
        cmd.args(["--release", "--target", a.musl_target()]);
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let package = v["package_id"]
            .as_str()
            .and_then(|id| id.rsplit('/').next())
            .and_then(|tail| tail.split(['#', '@']).next())
            .unwrap_or("?")
            .to_string();
        bins.push(TestBinary {
            name: v["target"]["name"].as_str().unwrap_or("?").to_string(),
            kind: v["target"]["kind"][0].as_str().unwrap_or("?").to_string(),
            package,
            path: PathBuf::from(exe),
        });
    }
    if bins.is_empty() {
        bail!("cargo built no test executables");
    }
    Ok(bins)
}
