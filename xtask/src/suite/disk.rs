//! Whether the disk can hold a test run, asked before it starts: a build
//! that runs out of space fails minutes in, with a compiler's I/O error
//! that does not say what filled the disk.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// What `target/` grows to in a whole run from a fresh clone (measured:
/// 7.5 GiB with the debug build, cross builds and guest images), with room.
const WHOLE_RUN: u64 = 9 << 30;

/// Fails with what to do when the disk holding `target` has less room than
/// the rest of a whole run needs.
pub fn check(target: &Path) -> Result<()> {
    let (used, on) = if target.exists() {
        (size_of_tree(target), target)
    } else {
        (0, Path::new("."))
    };
    let need = WHOLE_RUN.saturating_sub(used);
    let free = free_bytes(on)?;
    if free < need {
        bail!(
            "only {:.1} GiB free on the disk holding {}, and a whole test run needs about {:.1} GiB more: \
             free some space (old clones' target/ directories are the usual cause)",
            gib(free),
            target.display(),
            gib(need)
        );
    }
    Ok(())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    // SAFETY: a plain C struct, for which all zero bytes are valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct; the path is NUL-terminated.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        bail!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    // The fields' widths differ between targets.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// Disk space the files under `dir` take (not following symlinks, not
/// crossing into test mounts left behind).
fn size_of_tree(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += m.blocks() * 512;
            if m.is_dir() && m.dev() == top.dev() {
                todo.push(e.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_tree_has_a_size_and_its_disk_free_space() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        assert!(free_bytes(&src).is_ok_and(|b| b > 0));
        assert!(size_of_tree(&src) > 0);
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
    }
}
