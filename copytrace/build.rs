//! Compiles copytrace-ebpf for the BPF target (nightly + bpf-linker) and leaves
//! the object in OUT_DIR, where `bpf::EBPF_OBJECT` embeds it.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// First line of `cmd args…`'s output, or "unknown".
fn version_of(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The commit being built (12 hex digits), or "unknown" outside git.
fn git_commit() -> String {
    let commit = version_of("git", &["rev-parse", "--short=12", "HEAD"]);
    // Rebuild when HEAD moves (a commit, a checkout).
    for what in ["HEAD", "logs/HEAD"] {
        let path = version_of("git", &["rev-parse", "--git-path", what]);
        if path != "unknown" {
            let abs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&path);
            println!("cargo:rerun-if-changed={}", abs.display());
        }
    }
    if commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        commit
    } else {
        "unknown".into()
    }
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-env=COPYTRACE_GIT_COMMIT={}", git_commit());
    let toolchain = format!(
        "{}, {}",
        version_of("rustup", &["run", "nightly", "rustc", "--version"]),
        version_of("bpf-linker", &["--version"])
    );
    println!("cargo:rustc-env=COPYTRACE_BPF_TOOLCHAIN={toolchain}");
    let ebpf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("copytrace has no parent directory"))?
        .join("copytrace-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "copytrace-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs failed: run `cargo xtask provision` (nightly, rust-src, bpf-linker)")
}
