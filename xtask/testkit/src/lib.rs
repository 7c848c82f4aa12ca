//! What copytrace's kernel tests and its benchmarks share. Nothing here is
//! faked: [`daemon::Daemon`] is a real `copytrace run` child process,
//! [`fs::Mount`] a real tmpfs or loop-mounted ext4, [`fs::cfr`] the raw
//! system call, and [`caller`] re-executes the test binary itself as the
//! process that makes calls, so tests need no interpreter (they also run in
//! the minimal qemu guests of the kernel matrix).

pub mod caller;
pub mod daemon;
pub mod elf;
pub mod fs;
pub mod gdb_stack;
pub mod net;
pub mod stack_programs;
pub mod suite;

/// The most `systemd-analyze security` may score deploy/copytrace.service,
/// offline on the host and live in the systemd guest: the score README
/// states (a host test holds the two together).
pub const UNIT_EXPOSURE_MAX: f64 = 2.2;

use std::process::Child;
use std::time::{Duration, Instant};

/// Kills and reaps a helper process when dropped, even if the test panicked.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 100 ms until it returns Some, or panics after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
