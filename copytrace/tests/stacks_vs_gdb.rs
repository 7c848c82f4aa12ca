//! The frames of a suspicious call's stack, against gdb's backtrace of the
//! same program stopped at the same system call (`catch syscall`), return
//! address by return address, from the call site up to `main`. Both runs
//! disable address-space randomisation (gdb by default, the traced one
//! under `setarch -R`), so the code of every binary sits at the same
//! addresses in both.
//!
//! The programs are ones nobody here wrote (Debian's cp and python3, Go's
//! io.Copy, Rust's std::fs::copy) and a C program built with and without
//! frame pointers, whose libc wrapper hides its caller from a
//! frame-pointer walk. Where the kernel has `bpf_find_vma` (5.17+), the
//! frames must have been placed with the mappings the kernel recorded at
//! the call; elsewhere with `/proc/PID/maps`, which is why each program
//! stays alive a moment after its call.

mod support;

use std::path::Path;

use copytrace_testkit::gdb_stack::{self, backtrace_at_copy, stack_addrs, GdbFrame};
use copytrace_testkit::stack_programs::{build_bad_copier, build_rust_copy, BAD_COPIER_FUNCTION};
use serde_json::Value;
use support::{require_program, require_root, scratch, tmpfs};

/// Debian's own programs, not whatever PATH finds first (a pyenv shim is
/// a shell script).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";
const DEBIAN_CP: &str = "/usr/bin/cp";

/// The frame addresses copytrace shows for the one suspicious call of
/// `args` (run without address-space randomisation).
fn copytrace_frames(dir: &Path, args: &[&str]) -> (Vec<u64>, Value) {
    let mut cmd = vec!["setarch", "-R"];
    cmd.extend_from_slice(args);
    let t = support::trace(dir, &cmd);
    let call = t
        .calls
        .iter()
        .find(|c| c["stack"].is_object())
        .unwrap_or_else(|| panic!("no call with a stack: {:#?}", t.calls))
        .clone();
    // Where the kernel can record the stack's mappings, the frames are
    // placed with them, not with /proc/PID/maps (the kernel's own symbol
    // table says whether it has the helper).
    if kernel_has_find_vma() {
        assert_eq!(
            call["stack"]["mappings"], "kernel",
            "the frames were not placed with the kernel's mappings: {:#}",
            call["stack"]
        );
    }
    (stack_addrs(&call), call)
}

/// Whether the running kernel has `bpf_find_vma` (5.17+), from its symbol table.
fn kernel_has_find_vma() -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .expect("read /proc/kallsyms")
        .lines()
        .any(|l| l.ends_with(" bpf_find_vma"))
}

/// Asserts copytrace's frames begin with gdb's, up to `main`.
fn same_as_gdb(dir: &Path, args: &[&str]) -> Value {
    let gdb = gdb_frames(args);
    let (ours, call) = copytrace_frames(dir, args);
    assert_matches_gdb(&args.join(" "), &ours, &gdb, &call);
    call
}

fn gdb_frames(args: &[&str]) -> Vec<GdbFrame> {
    backtrace_at_copy(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts `ours` (the frames of `call`) begins with `gdb`'s, up to
/// `main`, and names every frame gdb names.
fn assert_matches_gdb(what: &str, ours: &[u64], gdb: &[GdbFrame], call: &Value) {
    let same = gdb_stack::begins_with_gdbs(ours, gdb)
        .and_then(|()| gdb_stack::named_where_gdb_names(call, gdb));
    if let Err(e) = same {
        panic!("{what}: {e}\n{:#}", call["stack"]);
    }
}

fn c_program(frame_pointers: bool) {
    require_root();
    if !require_program("gdb", "gdb") || !require_program("cc", "gcc") {
        return;
    }
    let work = scratch().join("badcopier");
    let bin = build_bad_copier(&work, frame_pointers).unwrap_or_else(|e| panic!("{e}"));
    let call = same_as_gdb(&work, &[bin.to_str().unwrap_or("")]);
    let names: Vec<&str> = call["stack"]["frames"]
        .as_array()
        .map(|fs| fs.iter().filter_map(|f| f["function"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&BAD_COPIER_FUNCTION), "{names:?}");
}

#[test]
fn c_with_frame_pointers_matches_gdb() {
    c_program(true);
}

#[test]
fn c_without_frame_pointers_matches_gdb() {
    c_program(false);
}

#[test]
fn python_os_copy_file_range_matches_gdb() {
    require_root();
    if !require_program("gdb", "gdb") || !require_program("python3", "python3") {
        return;
    }
    let fs = tmpfs("1m");
    let dst = fs.path("out");
    let script = format!(
        "import os, time\na = os.open('/proc/self/status', os.O_RDONLY)\nb = os.open('{}', os.O_WRONLY | os.O_CREAT)\ntry:\n    os.copy_file_range(a, b, 4096)\nexcept OSError:\n    pass\ntime.sleep(2)\n",
        dst.display()
    );
    same_as_gdb(&fs.dir, &[DEBIAN_PYTHON, "-c", &script]);
}

#[test]
fn coreutils_cp_matches_gdb() {
    require_root();
    if !require_program("gdb", "gdb")
        || !require_program("cp", "coreutils")
        || !require_program("strace", "strace")
    {
        return;
    }
    let fs = tmpfs("1m");
    let dst = fs.path("out");
    let cp = DEBIAN_CP;
    let gdb = gdb_frames(&[cp, "/proc/self/status", dst.to_str().unwrap_or("")]);
    let _ = std::fs::remove_file(&dst);
    // cp exits at once: strace holds its exit for two seconds, so that the
    // daemon reads its memory map.
    let (ours, call) = copytrace_frames(
        &fs.dir,
        &[
            "strace",
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "inject=exit_group:delay_enter=2000000",
            cp,
            "/proc/self/status",
            dst.to_str().unwrap_or(""),
        ],
    );
    assert_matches_gdb("cp", &ours, &gdb, &call);
}

/// A Rust release binary (no frame pointers in its own code) copying a
/// sysfs file with std::fs::copy.
#[test]
fn rust_release_std_fs_copy_matches_gdb() {
    require_root();
    if !require_program("gdb", "gdb") || !require_program("rustc", "the Rust toolchain") {
        return;
    }
    let bin =
        build_rust_copy(&scratch().join("rust-release-copy")).unwrap_or_else(|e| panic!("{e}"));
    let fs = tmpfs("1m");
    same_as_gdb(
        &fs.dir,
        &[
            bin.to_str().unwrap_or(""),
            "/sys/class/net/lo/address",
            fs.path("out").to_str().unwrap_or(""),
        ],
    );
}

#[test]
fn go_io_copy_matches_gdb() {
    require_root();
    if !require_program("gdb", "gdb") || !require_program("go", "golang-go") {
        return;
    }
    let bin = support::go_client();
    let fs = tmpfs("1m");
    same_as_gdb(
        &fs.dir,
        &[
            bin.to_str().unwrap_or(""),
            "/sys/kernel/tracing/trace",
            fs.path("out").to_str().unwrap_or(""),
        ],
    );
}
