//! Idempotent machine set-up. A fresh Debian 12 machine has only what this
//! installs: every program any test, benchmark or task runs is listed in
//! [`debs`], whose tests check that (the suite fails, rather than skips,
//! when one is missing on the host).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{output, run, say};

mod debs;

use self::debs::DEB_PACKAGES;

/// bpf-linker release known to work with the aya 0.14 / aya-ebpf 0.2.1 set.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-deb release `cargo xtask dist` uses.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Rust targets for the static binaries (x86_64 and arm64 builds, guests).
pub const MUSL_TARGETS: &[&str] = &["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

fn home_cargo() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(Into::into)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| "/root/.cargo".into())
}

/// An LLVM tool of the nightly's LLVM version (`llvm-strip-22`).
pub fn llvm_tool(name: &str) -> Result<String> {
    Ok(format!("{name}-{}", nightly_llvm_major()?))
}

/// The nightly's LLVM major version (`rustc +nightly -vV`).
fn nightly_llvm_major() -> Result<u32> {
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .context("the nightly toolchain is needed to build eBPF programs")?;
    let ver = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    ver.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot parse LLVM version {ver}"))
}

fn ensure_nightly() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        say("installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    for (comp, why) in [
        ("rust-src", "eBPF builds need -Z build-std=core"),
        ("clippy", "the eBPF crate is linted too"),
    ] {
        if !comps.lines().any(|l| l.starts_with(comp)) {
            say(&format!("adding {comp} to nightly ({why})"));
            run(Command::new("rustup").args(["component", "add", comp, "--toolchain", "nightly"]))?;
        }
    }
    Ok(())
}

fn ensure_targets() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    for t in MUSL_TARGETS {
        if !installed.lines().any(|l| l == *t) {
            say(&format!("adding the {t} target (static binaries)"));
            run(Command::new("rustup").args(["target", "add", t]))?;
        }
    }
    Ok(())
}

/// Whether Debian package `pkg` is installed here.
pub(crate) fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the Debian packages that are missing (one `apt-get update` first).
pub fn ensure_debs(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

/// Installs `krate` at `version` with `cargo install` unless that version is there.
fn ensure_cargo_tool(
    bin: &str,
    krate: &str,
    version: &str,
    extra: &[&str],
    env_path: Option<String>,
) -> Result<()> {
    let current = Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if current.is_some_and(|v| v.contains(version)) {
        return Ok(());
    }
    say(&format!("building {krate} {version} (about a minute)"));
    let mut cmd = Command::new("cargo");
    if let Some(p) = env_path {
        cmd.env("PATH", p);
    }
    run(cmd
        .args([
            "install",
            "--force",
            "--locked",
            krate,
            "--version",
            version,
        ])
        .args(extra))
    .with_context(|| format!("installing {krate} failed"))
}

fn ensure_bpf_linker(llvm: u32) -> Result<()> {
    // The stamp records which LLVM the installed binary was built against.
    let stamp = home_cargo().join(".copytrace-bpf-linker-llvm");
    let stamped = std::fs::read_to_string(&stamp).ok();
    if stamped.as_deref().map(str::trim) != Some(&llvm.to_string()) {
        let _ = std::fs::remove_file(home_cargo().join("bin/bpf-linker"));
    }
    let path = format!(
        "/usr/lib/llvm-{llvm}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    ensure_cargo_tool(
        "bpf-linker",
        "bpf-linker",
        BPF_LINKER_VERSION,
        &[
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm}"),
        ],
        Some(path),
    )?;
    std::fs::write(&stamp, llvm.to_string()).context("writing the bpf-linker stamp")
}

/// What building copytrace needs: nightly with rust-src, LLVM, bpf-linker.
pub fn provision_build() -> Result<()> {
    ensure_nightly()?;
    let llvm = nightly_llvm_major()?;
    let llvm_dev = format!("llvm-{llvm}-dev");
    ensure_debs(&[&llvm_dev]).with_context(|| {
        format!("the nightly uses LLVM {llvm}: bpf-linker must be built against {llvm_dev}")
    })?;
    ensure_bpf_linker(llvm)
}

/// Everything: the build, plus every program the tests, benchmarks, the
/// kernel matrix, the systemd guest and `dist` run.
pub fn provision() -> Result<()> {
    provision_build()?;
    ensure_targets()?;
    let pkgs: Vec<&str> = DEB_PACKAGES.iter().map(|d| d.package).collect();
    ensure_debs(&pkgs)?;
    ensure_cargo_tool("cargo-deb", "cargo-deb", CARGO_DEB_VERSION, &[], None)
}
