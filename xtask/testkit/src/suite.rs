//! Conventions between the kernel tests and `cargo xtask test`, which runs
//! every kernel test binary once per probe back-end the machine allows, on
//! the host and inside the matrix guests.
//!
//! - [`PROBE_ENV`] names the back-end of the run; tests pass it to copytrace
//!   and assert it, so a suite never assumes the host's back-end.
//! - A test that cannot run where it is (a guest without a client's
//!   toolchain) calls [`skip`], which says so in the test's output and in the
//!   file [`SKIP_LOG_ENV`] names; the runner reports it as skipped, not passed.
//! - On the host a missing program is a provisioning bug: [`require_program`]
//!   fails the test instead of skipping it.

use std::io::Write as _;
use std::path::PathBuf;

/// Env var naming the back-end of this run (`fentry` or `tracepoint`).
pub const PROBE_ENV: &str = "COPYTRACE_TEST_PROBE";
/// Env var naming the file where skipped tests are recorded.
pub const SKIP_LOG_ENV: &str = "COPYTRACE_SKIP_LOG";
/// Env var set inside the matrix guests, whose userland is minimal.
pub const GUEST_ENV: &str = "COPYTRACE_TEST_GUEST";
/// Env var overriding the copytrace binary under test (the guests' static one).
pub const BIN_ENV: &str = "COPYTRACE_BIN";

/// The back-end this run tests, when the runner chose one.
pub fn probe() -> Option<String> {
    std::env::var(PROBE_ENV).ok().filter(|p| !p.is_empty())
}

/// Whether the tests run inside a matrix guest.
pub fn in_guest() -> bool {
    std::env::var_os(GUEST_ENV).is_some()
}

/// The copytrace binary: `$COPYTRACE_BIN`, else the one cargo built (`default`).
pub fn copytrace_bin(default: &str) -> PathBuf {
    std::env::var_os(BIN_ENV).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Asserts that an event or handshake names the back-end under test.
pub fn assert_backend(reported: &str) {
    match probe() {
        Some(p) => assert_eq!(reported, p, "the run is for the {p} back-end"),
        None => assert!(
            matches!(reported, "fentry" | "tracepoint"),
            "unknown back-end {reported:?}"
        ),
    }
}

/// Fails the test loudly unless it can load probes: these tests never pass by skipping.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "KERNEL TESTS NOT RUN: they load real eBPF probes and need root; run `cargo xtask test` as root"
        );
    }
}

/// The name of the running test (libtest names each test's thread after it).
fn current_test() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// Records that the current test did not run, and why; the caller returns next.
pub fn skip(reason: &str) {
    let test = current_test();
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let line = format!("{test}\t{reason}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file()))
    })
}

/// True when `program` can be run. In a guest a missing one skips the test
/// (the caller returns when this is false); on the host it fails it.
pub fn require_program(program: &str, package: &str) -> bool {
    if on_path(program) {
        return true;
    }
    if in_guest() {
        skip(&format!("this guest has no {program} ({package})"));
        return false;
    }
    panic!("{program} is missing: `cargo xtask provision` installs {package}");
}
