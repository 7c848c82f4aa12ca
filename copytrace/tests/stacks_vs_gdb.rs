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
use std::process::Command;

use serde_json::Value;
use support::{require_program, require_root, scratch, tmpfs};

/// Debian's own programs, not whatever PATH finds first (a pyenv shim is
/// a shell script).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";
const DEBIAN_CP: &str = "/usr/bin/cp";

/// gdb's frames at the program's first copy_file_range: (pc, function).
fn gdb_frames(args: &[&str]) -> Vec<(u64, String)> {
    let out = Command::new("gdb")
        .args([
            "-q",
            "-batch",
            "-nx",
            "-ex",
            "set debuginfod enabled off",
            "-ex",
            "set backtrace past-main off",
            "-ex",
            "catch syscall copy_file_range",
            "-ex",
            "run",
            "-ex",
            // Every frame with its address, the innermost one too.
            "bt -frame-info location-and-address",
            "-ex",
            "kill",
            "--args",
        ])
        .args(args)
        .output()
        .expect("run gdb");
    let text = String::from_utf8_lossy(&out.stdout);
    let frames: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix('#')?;
            let mut words = l.split_whitespace().skip(1);
            let addr = u64::from_str_radix(words.next()?.strip_prefix("0x")?, 16).ok()?;
            (words.next()? == "in").then_some(())?;
            Some((addr, words.next()?.to_string()))
        })
        .collect();
    // gdb lists a function inlined at an address as a frame of its own at
    // the same address; copytrace lists it inside that frame.
    let mut frames = frames;
    frames.dedup_by_key(|(addr, _)| *addr);
    assert!(
        !frames.is_empty(),
        "gdb gave no frames: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    frames
}

/// The frames gdb shows from the call site up to `main` (the one before
/// libc's start-up code when the program's symbols are stripped).
fn up_to_main(gdb: &[(u64, String)]) -> &[(u64, String)] {
    // C's main, Go's main.main, Rust's crate::main (with or without its
    // symbol hash).
    let is_main = |f: &str| {
        let f = match f.rsplit_once("::h") {
            Some((head, hash))
                if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                head
            }
            _ => f,
        };
        f == "main" || f == "main.main" || f.ends_with("::main")
    };
    if let Some(i) = gdb.iter().position(|(_, f)| is_main(f)) {
        return &gdb[..=i];
    }
    let start = gdb
        .iter()
        .position(|(_, f)| f.starts_with("__libc_start"))
        .unwrap_or(gdb.len());
    &gdb[..start]
}

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
    let frames = call["stack"]["frames"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| {
                    u64::from_str_radix(f["addr"].as_str()?.strip_prefix("0x")?, 16).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    (frames, call)
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
    begins_with_gdbs(&args.join(" "), &ours, &gdb, &call);
    call
}

/// Asserts `ours` (the frames of `call`) begins with `gdb`'s, up to `main`.
fn begins_with_gdbs(what: &str, ours: &[u64], gdb: &[(u64, String)], call: &Value) {
    let want = up_to_main(gdb);
    let shown = |fs: &[u64]| {
        fs.iter()
            .map(|a| format!("{a:#x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let want_addrs: Vec<u64> = want.iter().map(|(a, _)| *a).collect();
    assert!(
        ours.len() >= want_addrs.len() && ours[..want_addrs.len()] == want_addrs[..],
        "{what}: copytrace's frames\n  {}\nare not gdb's\n  {}\n  ({want:?})\n{:#}",
        shown(ours),
        shown(&want_addrs),
        call["stack"]
    );
}

/// The C program of the issue: main calls ctbar_bad_copier, which calls
/// libc's copy_file_range from /proc to /proc.
const BAD_COPIER: &str = r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) ssize_t ctbar_bad_copier(int in, int out) {
    return copy_file_range(in, NULL, out, NULL, 4096, 0);
}

int main(void) {
    int in = open("/proc/self/status", O_RDONLY);
    int out = open("/proc/self/comm", O_WRONLY);
    ssize_t n = ctbar_bad_copier(in, out);
    printf("%zd\n", n);
    sleep(2);
    return 0;
}
"#;

/// Builds the C program of the issue, with or without frame pointers.
fn build_bad_copier(frame_pointers: bool) -> std::path::PathBuf {
    let work = scratch().join(format!("badcopier-{frame_pointers}"));
    std::fs::create_dir_all(&work).expect("mkdir");
    let src = work.join("badcopier.c");
    std::fs::write(&src, BAD_COPIER).expect("write C source");
    let bin = work.join("badcopier");
    let fp = if frame_pointers {
        "-fno-omit-frame-pointer"
    } else {
        "-fomit-frame-pointer"
    };
    let st = Command::new("cc")
        .args(["-O1", "-g", fp, "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "cc failed");
    bin
}

fn c_program(frame_pointers: bool) {
    require_root();
    if !require_program("gdb", "gdb") || !require_program("cc", "gcc") {
        return;
    }
    let bin = build_bad_copier(frame_pointers);
    let work = bin.parent().expect("the program's directory").to_path_buf();
    let call = same_as_gdb(&work, &[bin.to_str().unwrap_or("")]);
    let names: Vec<&str> = call["stack"]["frames"]
        .as_array()
        .map(|fs| fs.iter().filter_map(|f| f["function"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"ctbar_bad_copier"), "{names:?}");
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
    begins_with_gdbs("cp", &ours, &gdb, &call);
}

/// A Rust release binary (no frame pointers in its own code) copying a
/// sysfs file with std::fs::copy.
const RUST_COPY: &str = r#"
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let _ = std::fs::copy(&a[1], &a[2]);
    std::thread::sleep(std::time::Duration::from_secs(2));
}
"#;

#[test]
fn rust_release_std_fs_copy_matches_gdb() {
    require_root();
    if !require_program("gdb", "gdb") || !require_program("rustc", "the Rust toolchain") {
        return;
    }
    let work = scratch().join("rust-release-copy");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("copy.rs"), RUST_COPY).expect("write");
    let bin = work.join("copy");
    let st = Command::new("rustc")
        .args(["-O", "-o"])
        .arg(&bin)
        .arg(work.join("copy.rs"))
        .status()
        .expect("rustc");
    assert!(st.success(), "rustc failed");
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
