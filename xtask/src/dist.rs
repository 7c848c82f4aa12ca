//! Release artifacts: the static binary (eBPF object embedded) and the
//! Debian package, per architecture, checked with lintian.
//!
//! Man pages and completions come from the binary itself
//! (`copytrace generate-assets`), so they always match its flags.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::arch::Arch;
use crate::build;
use crate::cmd::{output, run, say};

/// Where `dist` leaves its artifacts.
pub const DIR: &str = "target/dist";

/// What `dist` built for one architecture.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The stripped static binary.
    pub binary: PathBuf,
    /// The Debian package.
    pub deb: PathBuf,
    /// lintian's output (tags not overridden), empty when clean.
    pub lintian: String,
}

fn host_arch() -> Arch {
    if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    }
}

/// Man pages (gzipped reproducibly) and completions from `copytrace`.
fn assets(copytrace: &Path, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    run(Command::new(copytrace).arg("generate-assets").arg(dir))?;
    for page in std::fs::read_dir(dir.join("man"))? {
        let page = page?.path();
        // -n: no name or time stamp, so the package is reproducible.
        run(Command::new("gzip").args(["-9nf"]).arg(&page))?;
    }
    Ok(())
}

/// Builds the static binary and the package for `arch`.
pub fn dist(arch: Arch) -> Result<Artifacts> {
    let out = PathBuf::from(DIR);
    std::fs::create_dir_all(&out)?;
    let built = build::static_bins(arch, &["copytrace"])?.join("copytrace");
    // The generator runs here, so it is the host's build (same CLI).
    let generator = if arch == host_arch() {
        built.clone()
    } else {
        build::static_bins(host_arch(), &["copytrace"])?.join("copytrace")
    };
    assets(&generator, &out.join("assets"))?;

    // cargo-deb packages target/dist/bin/copytrace (see copytrace/Cargo.toml):
    // this architecture's binary, stripped with LLVM's strip (any target).
    let staged = out.join("bin").join("copytrace");
    std::fs::create_dir_all(out.join("bin"))?;
    std::fs::copy(&built, &staged).with_context(|| format!("copy {}", built.display()))?;
    // llvm-strip knows every architecture; it comes with the llvm-N-dev
    // provisioning installs for the nightly's LLVM.
    run(Command::new(crate::provision::llvm_tool("llvm-strip")?).arg(&staged))?;
    let version = env!("CARGO_PKG_VERSION");
    let binary = out.join(format!("copytrace-{version}-{arch}"));
    std::fs::copy(&staged, &binary)?;

    let before: Vec<PathBuf> = debs(&out)?;
    run(Command::new("cargo").args([
        "deb",
        "-p",
        "copytrace",
        "--no-build",
        "--no-strip",
        "--target",
        arch.musl_target(),
        "-o",
        DIR,
    ]))?;
    let deb = debs(&out)?
        .into_iter()
        .find(|d| {
            d.to_string_lossy()
                .ends_with(&format!("_{}.deb", arch.debian()))
        })
        .or_else(|| before.into_iter().next())
        .context("cargo deb wrote no package")?;
    let lintian = lint(&deb)?;
    say(&format!(
        "dist: {} and {} ({})",
        binary.display(),
        deb.display(),
        if lintian.is_empty() {
            "lintian clean".to_string()
        } else {
            format!("lintian: {}", lintian.trim())
        }
    ));
    Ok(Artifacts {
        binary,
        deb,
        lintian,
    })
}

fn debs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect())
}

/// lintian's tags for `deb`; errors fail the build, the rest are returned.
fn lint(deb: &Path) -> Result<String> {
    // lintian exits non-zero when it finds errors; read its output either way.
    let text = Command::new("lintian")
        .args(["--pedantic", "--display-info", "--no-tag-display-limit"])
        .arg(deb)
        .output()
        .context("lintian (cargo xtask provision installs it)")?;
    let tags = String::from_utf8_lossy(&text.stdout).into_owned();
    if tags.lines().any(|l| l.starts_with("E:")) {
        bail!("lintian errors in {}:\n{tags}", deb.display());
    }
    Ok(tags)
}

/// The package's file list (`dpkg-deb -c`), for the closing note and tests.
pub fn contents(deb: &Path) -> Result<String> {
    output(Command::new("dpkg-deb").arg("-c").arg(deb))
}
