//! overlayfs, which containers run on, copies through the real files
//! beneath it: `cp` between two files of an overlay mount is the syscall on
//! overlay and, nested inside it on the same thread, overlay's own
//! `vfs_copy_file_range` on the upper layer's files. The service's fentry
//! probes report both, the nested one naming the syscall it ran inside.

use serde_json::Value;

use crate::check;
use crate::sys::sh;
use crate::tail_watch::{calls_during, summary};
use copytrace_guest::console::Kind;
use copytrace_guest::report;

const NESTED: &str = "overlayfs's own call on its real files is seen inside the syscall";
const REFUSED: &str = "a lower-to-upper copy on one overlay mount is explained";

/// The file copied.
const LEN: usize = 1_000_000;
/// The lower layer (a directory of the root filesystem, ext4), the tmpfs
/// holding the upper layer and its work directory, and the overlay.
const LOWER: &str = "/srv/ovl/lower";
const UPPER: &str = "/srv/ovl/upper";
const MERGED: &str = "/mnt/ovl";

/// Mounts the overlay with `a` on its lower layer; what went wrong.
fn mount() -> Result<(), String> {
    for d in [LOWER, UPPER, MERGED] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    let (code, out) = sh("mount", &["-t", "tmpfs", "tmpfs", UPPER]);
    if code != 0 {
        return Err(format!("mount tmpfs: exit {code}: {}", out.trim()));
    }
    for d in ["up", "work"] {
        std::fs::create_dir_all(format!("{UPPER}/{d}")).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    std::fs::write(format!("{LOWER}/a"), vec![5u8; LEN]).map_err(|e| format!("{LOWER}/a: {e}"))?;
    let data = format!("lowerdir={LOWER},upperdir={UPPER}/up,workdir={UPPER}/work");
    let (code, out) = sh("mount", &["-t", "overlay", "overlay", "-o", &data, MERGED]);
    if code != 0 {
        return Err(format!("mount overlay: exit {code}: {}", out.trim()));
    }
    Ok(())
}

/// The syscall from `from` to `to` on the overlay that returned `ret`.
fn syscall<'a>(calls: &'a [Value], from: &str, to: &str, ret: i64) -> Option<&'a Value> {
    calls.iter().find(|c| {
        c["origin"] == "syscall"
            && c["ret"] == ret
            && c["path_in"] == format!("{MERGED}/{from}")
            && c["path_out"] == format!("{MERGED}/{to}")
    })
}

/// Whether `side` of a nested call is the real file at `real`: its inode
/// (from stat), and its path: the real one, or (on older kernels such as 6.1, which open
/// the real files under the overlay file's path, and says so) the overlay's.
fn is_real(c: &Value, side: &str, real: &str, merged: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let path = if side == "file_in" {
        "path_in"
    } else {
        "path_out"
    };
    let shown = if c[side]["path_on_other_fs"] == true {
        merged
    } else {
        real
    };
    std::fs::metadata(real).is_ok_and(|m| c[side]["ino"] == m.ino()) && c[path] == shown
}

/// The call reported as running inside `outer`: same thread, `within`
/// naming its entry time and descriptors, and nested in time.
fn nested_in<'a>(calls: &'a [Value], outer: Option<&Value>) -> Option<&'a Value> {
    let outer = outer?;
    let span = |c: &Value| (c["start_ns"].as_u64(), c["end_ns"].as_u64());
    calls.iter().find(|c| {
        c["origin"] == "kernel"
            && c["tid"] == outer["tid"]
            && c["within"]["start_ns"] == outer["start_ns"]
            && c["within"]["fd_in"] == outer["fd_in"]
            && c["within"]["fd_out"] == outer["fd_out"]
            && span(outer).0 < span(c).0
            && span(c).1 < span(outer).1
    })
}

/// `cp` from a lower-layer file to a new file of the overlay (refused:
/// the real files sit on ext4 and tmpfs), then between two upper-layer
/// files (copied by overlay's own call on tmpfs).
pub fn overlay_copies() -> (bool, bool) {
    if let Err(e) = mount() {
        let detail = format!("overlay not set up: {e}");
        cleanup();
        return (
            check(NESTED, false, &detail),
            check(REFUSED, false, &detail),
        );
    }
    let (calls, ran) = calls_during(|| {
        let refused = sh("cp", &[&format!("{MERGED}/a"), &format!("{MERGED}/b")]);
        let copied = sh("cp", &[&format!("{MERGED}/b"), &format!("{MERGED}/c")]);
        format!(
            "cp lower → upper exit {}, cp upper → upper exit {}",
            refused.0, copied.0
        )
    });
    for c in &calls {
        report::line(Kind::Log, "overlay", &c.to_string());
    }
    let shown = |c: Option<&Value>| c.map_or("none".to_string(), summary);
    let exdev = -i64::from(libc::EXDEV);

    let outer = syscall(&calls, "b", "c", LEN as i64);
    let inner = nested_in(&calls, outer);
    let nested = check(
        NESTED,
        outer.is_some_and(|c| c["file_in"]["fs"] == "overlay")
            && inner.is_some_and(|c| {
                c["ret"] == LEN
                    && c["file_in"]["fs"] == "tmpfs"
                    && c["file_out"]["fs"] == "tmpfs"
                    && is_real(
                        c,
                        "file_in",
                        &format!("{UPPER}/up/b"),
                        &format!("{MERGED}/b"),
                    )
                    && is_real(
                        c,
                        "file_out",
                        &format!("{UPPER}/up/c"),
                        &format!("{MERGED}/c"),
                    )
                    && c["fd_in"] == -1
            }),
        &format!("{ran}; syscall: {}; nested: {}", shown(outer), shown(inner)),
    );

    let outer = syscall(&calls, "a", "b", exdev);
    let inner = nested_in(&calls, outer);
    let reason = |c: Option<&Value>| {
        c.and_then(|c| c["reason"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (outer_reason, inner_reason) = (reason(outer), reason(inner));
    let refused = check(
        REFUSED,
        outer.is_some_and(|c| {
            c["verdict"] == "cross_fs" && c["file_in"]["dev"] == c["file_out"]["dev"]
        }) && outer_reason.contains("one overlay mount")
            && !outer_reason.contains("from overlay to overlay")
            && inner.is_some_and(|c| {
                c["ret"] == exdev
                    && c["file_in"]["fs"] == "ext4"
                    && c["file_out"]["fs"] == "tmpfs"
                    && is_real(c, "file_in", &format!("{LOWER}/a"), &format!("{MERGED}/a"))
            })
            && inner_reason.contains("overlayfs"),
        &format!("syscall: {}; nested: {}", shown(outer), shown(inner)),
    );
    cleanup();
    (nested, refused)
}

/// Leaves the system as the package found it (the purge check compares).
fn cleanup() {
    let _ = sh("umount", &[MERGED]);
    let _ = sh("umount", &[UPPER]);
    for d in ["/srv/ovl", MERGED] {
        let _ = std::fs::remove_dir_all(d);
    }
}
