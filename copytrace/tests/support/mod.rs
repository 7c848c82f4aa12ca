//! What every kernel test file shares: the testkit (a real daemon child,
//! real mounts, raw calls, caller processes) bound to the copytrace binary
//! cargo built for these tests.
// Each test file uses a different subset.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

pub use copytrace_testkit::caller;
pub use copytrace_testkit::daemon::{Daemon, DaemonBuilder};
pub use copytrace_testkit::fs::{
    cfr, cgroup2_root, ebadf_calls, open, raw, silent_copies, tracefs_dir, write_file, Mount,
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

/// A daemon printing every call of this process and its descendants as
/// JSON, with no metrics or tail: started, probes attached.
pub fn watch() -> Daemon {
    daemon()
        .events()
        .args(["--pid", &std::process::id().to_string()])
        .args(["--no-metrics", "--no-tail"])
        .start()
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

/// s_magic values the tests assert (include/uapi/linux/magic.h).
pub mod magic {
    pub const EXT4: u64 = 0xef53;
    pub const TMPFS: u64 = 0x0102_1994;
    pub const PROC: u64 = 0x9fa0;
    pub const PIPEFS: u64 = 0x5049_5045;
    pub const TRACEFS: u64 = 0x7472_6163;
}
