//! Idempotent machine set-up: nightly + rust-src, LLVM dev files matching the
//! nightly's LLVM major, bpf-linker built against them, and Debian packages.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// bpf-linker release known to work with the aya 0.14 / aya-ebpf 0.2.1 set.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and benchmarks use (besides llvm-N-dev).
const DEB_PACKAGES: &[&str] = &["python3", "coreutils", "golang-go", "strace", "e2fsprogs"];

/// Runs a command, failing with its name when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
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
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        say("adding rust-src to nightly (eBPF builds need -Z build-std=core)");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn deb_installed(pkg: &str) -> bool {
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

fn ensure_bpf_linker(llvm: u32) -> Result<()> {
    let current = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    // The stamp records which LLVM the installed binary was built against.
    let stamp = home_cargo().join(".copytrace-bpf-linker-llvm");
    let stamped = std::fs::read_to_string(&stamp).ok();
    if current.as_deref() == Some(want.as_str())
        && stamped.as_deref().map(str::trim) == Some(&llvm.to_string())
    {
        return Ok(());
    }
    say(&format!(
        "building {want} against LLVM {llvm} (about a minute)"
    ));
    let path = format!(
        "/usr/lib/llvm-{llvm}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("cargo")
        .env("PATH", path)
        .args([
            "install",
            "--force",
            "--locked",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm}"),
        ]))
    .context("installing bpf-linker failed")?;
    std::fs::write(&stamp, llvm.to_string()).context("writing the bpf-linker stamp")?;
    Ok(())
}

fn home_cargo() -> std::path::PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(Into::into)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| "/root/.cargo".into())
}

/// Everything a build and the tests need.
pub fn provision() -> Result<()> {
    ensure_nightly()?;
    let llvm = nightly_llvm_major()?;
    let llvm_dev = format!("llvm-{llvm}-dev");
    let mut pkgs: Vec<&str> = vec![&llvm_dev];
    pkgs.extend_from_slice(DEB_PACKAGES);
    ensure_debs(&pkgs).with_context(|| {
        format!("the nightly uses LLVM {llvm}: bpf-linker must be built against {llvm_dev}")
    })?;
    ensure_bpf_linker(llvm)
}
