//! The checker's means: commands, the raw calls it makes as a client,
//! and what it reads back (the journal, the metrics, the daemon's fds).

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs a command; (exit code, stdout + stderr).
pub fn sh(program: &str, args: &[&str]) -> (i32, String) {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            (o.status.code().unwrap_or(-1), text)
        }
        Err(e) => (-1, format!("cannot run {program}: {e}")),
    }
}

pub fn systemctl_show(prop: &str) -> String {
    sh("systemctl", &["show", "-p", prop, "--value", "copytrace"])
        .1
        .trim()
        .to_string()
}

/// Polls `f` every 200 ms for up to `secs`.
pub fn wait<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn open(path: &str, flags: i32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.custom_flags(flags & !libc::O_ACCMODE);
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => o.read(true),
        _ => o.write(true).create(flags & libc::O_CREAT != 0),
    };
    o.open(path)
}

/// One copy_file_range call between two paths; the raw result.
pub fn copy(src: &str, dst: &str, len: usize) -> i64 {
    let (Ok(a), Ok(b)) = (
        open(src, libc::O_RDONLY),
        open(dst, libc::O_WRONLY | libc::O_CREAT),
    ) else {
        return -1;
    };
    // SAFETY: copy_file_range on two open descriptors with null offsets.
    unsafe {
        libc::syscall(
            libc::SYS_copy_file_range,
            a.as_raw_fd(),
            std::ptr::null_mut::<i64>(),
            b.as_raw_fd(),
            std::ptr::null_mut::<i64>(),
            len,
            0u32,
        )
    }
}

/// A silent zero copy: procfs to procfs.
pub fn silent_copy() -> i64 {
    copy("/proc/self/status", "/proc/self/comm", 4096)
}

/// `flood N`: N failing calls, as whoever runs it.
pub fn flood(n: u64) {
    for _ in 0..n {
        // SAFETY: copy_file_range on invalid descriptors with null offsets: EBADF.
        unsafe {
            libc::syscall(
                libc::SYS_copy_file_range,
                -1,
                0usize,
                -1,
                0usize,
                1usize,
                0u32,
            );
        }
    }
}

/// The body of a GET, whatever its status.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    copytrace_testkit::net::http_get(addr, path).map(|(_, body)| body)
}

pub use copytrace_testkit::net::sample;

/// The journal entries of the unit with `COPYTRACE_VERDICT=verdict`.
pub fn journal(verdict: &str) -> Vec<Value> {
    let filter = format!("COPYTRACE_VERDICT={verdict}");
    let (_, out) = sh(
        "journalctl",
        &["-u", "copytrace", &filter, "-o", "json", "--no-pager"],
    );
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// BPF programs and links the process holds (from /proc/PID/fdinfo).
pub fn bpf_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|t| t.contains("prog_id:") || t.contains("link_id:"))
                .count()
        })
        .unwrap_or(0)
}
