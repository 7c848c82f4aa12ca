//! What every kernel test file shares: the testkit (a real daemon child,
//! real mounts, raw calls, caller processes) bound to the copytrace binary
//! cargo built for these tests.
// Each test file uses a different subset.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub use copytrace_testkit::caller;
pub use copytrace_testkit::daemon::{Daemon, DaemonBuilder};
pub use copytrace_testkit::fs::{
    bind_mount, cfr, cgroup2_root, ebadf_calls, open, raw, silent_copies, tracefs_dir, unmount,
    write_file, Mount,
};
pub use copytrace_testkit::net::{free_port, http_get, sample};
pub use copytrace_testkit::suite::{self, require_program, require_root};
pub use copytrace_testkit::{wait_for, KillOnDrop};
use serde_json::Value;

// Re-executed with COPYTRACE_CALLER set, this test binary is a caller
// program (see copytrace_testkit::caller), not a test run.
#[ctor::ctor(unsafe)]
fn caller_mode() {
    caller::run_if_requested();
}

/// The copytrace binary under test.
pub fn copytrace_bin() -> PathBuf {
    suite::copytrace_bin(env!("CARGO_BIN_EXE_copytrace"))
}

/// This kernel's page size, as `sysconf(_SC_PAGESIZE)` reports it.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page size")
}

/// The most one copy_file_range call copies here (MAX_RW_COUNT), worked
/// out from libc's `INT_MAX` and [`page_size`], not from copytrace.
pub fn max_rw_count() -> u64 {
    (libc::c_int::MAX as u64) & !(page_size() - 1)
}

/// Where tests create mounts and files.
pub fn scratch() -> PathBuf {
    let dir = std::env::var_os("COPYTRACE_TEST_TMPDIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A fresh directory under [`scratch`].
pub fn scratch_dir(tag: &str) -> PathBuf {
    let d = scratch().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// A tmpfs of `size` for one test.
pub fn tmpfs(size: &str) -> Mount {
    Mount::tmpfs(&scratch(), size)
}

/// An ext4 filesystem for one test.
pub fn ext4() -> Mount {
    Mount::ext4(&scratch(), 32)
}

/// A `copytrace run` builder for the binary under test.
pub fn daemon() -> DaemonBuilder {
    Daemon::builder(copytrace_bin())
}

/// `copytrace tail --socket SOCKET ARGS`, its stdout lines on a channel.
pub fn tail_cli(socket: &Path, args: &[&str]) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(copytrace_bin())
        .arg("tail")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("copytrace tail");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (KillOnDrop(child), rx)
}

/// The daemon every [`watch`] of this test binary shares.
static SHARED: OnceLock<Mutex<Daemon>> = OnceLock::new();

/// Marker calls' lengths start here (EBADF calls no test makes).
const BARRIER_LEN: u64 = 0x00c0_ffee_0000;

/// The calls this process and its descendants make while the watch is held,
/// as one daemon printing every call as JSON (no metrics or tail) reported
/// them. The daemon is started once per test binary (loading the probes is
/// the slowest step of a test, and under qemu's TCG it takes seconds) and
/// shared; holding a watch serialises the tests that use it, so each sees
/// only its own calls.
pub struct Watch {
    daemon: MutexGuard<'static, Daemon>,
}

/// A daemon printing, as JSON, every call this test process makes (no
/// metrics, no tail), dying with it: the shared [`watch`] daemon, or one
/// of a test's own with more arguments.
pub fn watching() -> DaemonBuilder {
    daemon()
        .events()
        .die_with_parent()
        .args(["--pid", &std::process::id().to_string()])
        .args(["--no-metrics", "--no-tail"])
}

/// Starts watching (see [`Watch`]).
pub fn watch() -> Watch {
    let shared = SHARED.get_or_init(|| {
        // Spawned from a thread that lives as long as the process, so the
        // daemon dies with the test binary, not with the first test's thread.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let d = watching().start();
            let _ = tx.send(d);
            loop {
                std::thread::park();
            }
        });
        Mutex::new(rx.recv().expect("the shared daemon started"))
    });
    let mut daemon = shared.lock().unwrap_or_else(|p| p.into_inner());
    // Whatever an earlier test left (a panic mid-test) is read and dropped.
    let _ = barrier(&mut daemon);
    Watch { daemon }
}

impl Watch {
    /// Everything the shared daemon logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Every call made since [`watch`], once the daemon has reported them all.
    pub fn stop(mut self) -> Vec<Value> {
        barrier(&mut self.daemon)
    }

    /// Every call made since [`watch`] or the last call of this, once the
    /// daemon has reported them all; the watch goes on.
    pub fn reported(&mut self) -> Vec<Value> {
        barrier(&mut self.daemon)
    }
}

/// Makes a marker call and returns every call reported before it: events
/// arrive in order per CPU, so once the marker is read, what came earlier
/// on this thread's calls has been read too (the reader drains every CPU's
/// records before printing).
fn barrier(d: &mut Daemon) -> Vec<Value> {
    static MARKERS: AtomicU64 = AtomicU64::new(0);
    let len = BARRIER_LEN + MARKERS.fetch_add(1, Ordering::Relaxed);
    assert_eq!(cfr(900, None, 901, None, len as usize, 0), Err(libc::EBADF));
    // Generous: after a flood (21,000 calls) on a loaded 2-core host the
    // daemon may still be printing the calls before the marker.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut calls = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = d.next_line(left).unwrap_or_else(|| {
            panic!(
                "the shared daemon did not report a marker call within 120 s: {}",
                d.log()
            )
        });
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["type"] != "call" {
            continue;
        }
        let call = v["data"].clone();
        match call["len"].as_u64() {
            Some(l) if l == len => return calls,
            Some(l) if (BARRIER_LEN..BARRIER_LEN + (1 << 16)).contains(&l) => {}
            _ => calls.push(call),
        }
    }
}

/// The one event whose fds and length match; panics with all events otherwise.
pub fn find(events: &[Value], fd_in: i32, fd_out: i32, len: u64) -> &Value {
    let hits: Vec<&Value> = events
        .iter()
        .filter(|e| e["fd_in"] == fd_in && e["fd_out"] == fd_out && e["len"] == len)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one call fd {fd_in}->{fd_out} len {len}, got {}: {events:#?}",
        hits.len()
    );
    hits[0]
}

/// Result of `copytrace trace --json -- CMD`.
pub struct Traced {
    /// The command's exit code.
    pub code: Option<i32>,
    /// The `data` of every call line.
    pub calls: Vec<Value>,
    /// The summary line's `data`.
    pub summary: Value,
}

/// Runs `copytrace trace --json -- COMMAND` (output under `out_dir`) and
/// parses what it wrote; asserts that nothing was lost.
pub fn trace(out_dir: &Path, command: &[&str]) -> Traced {
    trace_with_env(out_dir, command, &[])
}

/// [`trace`] with more environment variables, which the command inherits.
pub fn trace_with_env(out_dir: &Path, command: &[&str], env: &[(&str, &str)]) -> Traced {
    require_root();
    let out = out_dir.join("trace.jsonl");
    let mut cmd = Command::new(copytrace_bin());
    cmd.arg("trace");
    if let Some(p) = suite::probe() {
        cmd.args(["--probe", &p]);
    }
    let status = cmd
        .args(["--json", "-o"])
        .arg(&out)
        .arg("--")
        .args(command)
        .envs(env.iter().copied())
        // The clients' own output would mix with the test harness's.
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run copytrace trace");
    let text = std::fs::read_to_string(&out).expect("trace output");
    std::fs::remove_file(&out).expect("remove trace output");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .map(|l| l["data"].clone())
        .unwrap_or_else(|| panic!("no summary in {text}"));
    assert_eq!(summary["lost"], 0, "no event may be lost in a test");
    Traced {
        code: status.code(),
        calls: lines
            .into_iter()
            .filter(|l| l["type"] == "call")
            .map(|l| l["data"].clone())
            .collect(),
        summary,
    }
}

/// Builds Go's `io.Copy` program (once per test binary) and returns its path.
pub fn go_client() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            copytrace_testkit::stack_programs::build_go_copy(&scratch().join("go-client"))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}

/// s_magic values the tests assert, from the libc crate, or (pipefs,
/// which libc lacks) from the kernel itself.
pub mod magic {
    pub const EXT4: u64 = libc::EXT4_SUPER_MAGIC as u64;
    pub const TMPFS: u64 = libc::TMPFS_MAGIC as u64;
    pub const PROC: u64 = libc::PROC_SUPER_MAGIC as u64;
    pub const TRACEFS: u64 = libc::TRACEFS_MAGIC as u64;
    pub const CGROUP2: u64 = libc::CGROUP2_SUPER_MAGIC as u64;

    /// What `fstatfs` of a fresh pipe says its filesystem is.
    pub fn pipefs() -> u64 {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: all-zero is a valid statfs, which fstatfs fills.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fds[0] is open; st is a valid statfs to write.
        let rc = unsafe { libc::fstatfs(fds[0], &mut st) };
        for fd in fds {
            // SAFETY: both were opened above and are closed once.
            unsafe { libc::close(fd) };
        }
        assert_eq!(rc, 0, "fstatfs of a pipe");
        st.f_type as u64
    }
}
