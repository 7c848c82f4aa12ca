//! Each guest's data disk: the package, the in-guest checker, the guest's
//! role and the programs whose stacks are held to gdb's.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::ROOT;
use crate::cmd::run;

/// A data disk with the package, the checker, the guest's role and the
/// programs whose stacks are held to gdb's.
pub fn data_disk(
    name: &str,
    deb: &Path,
    checker: &Path,
    role: &str,
    programs: &[PathBuf],
) -> Result<PathBuf> {
    let root = PathBuf::from(ROOT);
    let stage = root.join(format!("data-{name}"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let deb_name = deb.file_name().context("package file name")?;
    std::fs::copy(deb, stage.join(deb_name))?;
    std::fs::copy(checker, stage.join("copytrace-systemd-check"))?;
    std::fs::write(stage.join("role"), role)?;
    let dir = stage.join(GUEST_PROGRAMS);
    std::fs::create_dir_all(&dir)?;
    for p in programs {
        std::fs::copy(p, dir.join(p.file_name().context("program file name")?))?;
    }
    let image = root.join(format!("data-{name}.img"));
    let _ = std::fs::remove_file(&image);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&stage)
        .arg(&image)
        .arg("64M"))?;
    std::fs::remove_dir_all(&stage)?;
    Ok(image)
}

/// Where the data disk keeps the stack programs (the checker's
/// `stacks::PROGRAMS` under /mnt/ct).
const GUEST_PROGRAMS: &str = "programs";

/// Builds the programs of `copytrace_testkit::stack_programs` for the guest:
/// it runs the host's Debian release, so they link against its C library.
pub fn stack_programs() -> Result<Vec<PathBuf>> {
    use copytrace_testkit::stack_programs::{build_bad_copier, build_go_copy, build_rust_copy};
    let dir = PathBuf::from(ROOT).join("stack-programs");
    let built = [
        build_bad_copier(&dir, true),
        build_bad_copier(&dir, false),
        build_rust_copy(&dir),
        build_go_copy(&dir),
    ];
    built
        .into_iter()
        .map(|b| b.map_err(|e| anyhow::anyhow!("building the guest's stack programs: {e}")))
        .collect()
}
