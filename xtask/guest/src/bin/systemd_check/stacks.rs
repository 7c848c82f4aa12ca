//! Which code made a suspicious call, named under the shipped unit. The
//! daemon may not read another user's `/proc/PID/maps` there
//! (ProtectProc=invisible, no CAP_SYS_PTRACE), and the caller has exited
//! by the time the record is read: libc's frames can be named only from
//! the mappings the kernel recorded at the call (5.17+).

use serde_json::Value;

use crate::check;
use crate::sys::sh;
use crate::tail_watch::calls_during;

/// Debian's python3, run as `nobody`, copies /proc/self/status to /tmp
/// with `os.copy_file_range` (a suspicious call: a silent zero copy, or
/// EXDEV where the kernel refuses procfs to ext4): the tail's stack names
/// libc's wrapper in libc and python3's own frames above it, placed with
/// the mappings the kernel recorded.
pub fn python_stack_named() -> bool {
    let script = "import os\na = os.open('/proc/self/status', os.O_RDONLY)\nb = os.open('/tmp/ct-stack-out', os.O_WRONLY | os.O_CREAT)\ntry:\n    os.copy_file_range(a, b, 4096)\nexcept OSError:\n    pass\n";
    let (calls, note) = calls_during(|| {
        let (code, out) = sh(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                script,
            ],
        );
        format!("python3 as nobody: exit {code} {}", out.trim())
    });
    let _ = std::fs::remove_file("/tmp/ct-stack-out");
    let call = calls
        .iter()
        .find(|c| c["comm"].as_str().is_some_and(|s| s.starts_with("python3")));
    let frames: Vec<(String, String, String)> = call
        .and_then(|c| c["stack"]["frames"].as_array())
        .map(|fs| fs.iter().map(frame).collect())
        .unwrap_or_default();
    let libc_named = frames
        .first()
        .is_some_and(|(f, m, _)| f == "copy_file_range" && m.ends_with("libc.so.6"));
    let from_kernel = call.is_some_and(|c| c["stack"]["mappings"] == "kernel");
    let python_named = frames
        .iter()
        .skip(1)
        .any(|(f, m, _)| f != "?" && m.contains("python3"));
    let shown: Vec<String> = frames
        .iter()
        .map(|(f, m, how)| format!("{f} in {m} ({how})"))
        .collect();
    check(
        "under the unit, a python3 call's stack names libc's wrapper and python3's frames",
        libc_named && python_named && from_kernel,
        &format!(
            "{note}; mappings from {}; frames: {}; cut: {}",
            call.map(|c| c["stack"]["mappings"].to_string())
                .unwrap_or_default(),
            shown.join(" <- "),
            call.map(|c| c["stack"]["cut"].to_string())
                .unwrap_or_else(|| "no python3 call".into())
        ),
    )
}

/// (function, module, method) of one frame, "?" where not named.
fn frame(f: &Value) -> (String, String, String) {
    let s = |k: &str| f[k].as_str().unwrap_or("?").to_string();
    (s("function"), s("module"), s("method"))
}
