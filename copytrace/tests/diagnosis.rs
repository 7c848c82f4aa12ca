//! Which service, program and code made a call: the cgroup path, unit and
//! container; the executable and the parent; and the named user-space stack
//! of suspicious calls, from real programs built here (Go, C, Rust).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{caller, cgroup2_root, find, require_program, require_root, scratch, tmpfs, trace};

/// The function names of a call's stack, innermost first.
fn functions(call: &Value) -> Vec<String> {
    call["stack"]["frames"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .map(|f| f["function"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The suspicious calls of a trace (the ones whose stacks are taken).
fn suspicious(calls: &[Value]) -> Vec<&Value> {
    calls
        .iter()
        .filter(|c| !matches!(c["verdict"].as_str(), Some("ok" | "short_read")))
        .collect()
}

/// The one suspicious call of a trace; panics with every call otherwise.
fn the_suspicious_call(calls: &[Value]) -> &Value {
    let found = suspicious(calls);
    assert_eq!(found.len(), 1, "one suspicious call expected: {calls:#?}");
    found[0]
}

/// Runs a caller program inside cgroup `dir`; asserts it succeeded.
fn copy_in_cgroup(dir: &Path, src: &Path, dst: &Path, len: usize) {
    let st = caller::command(
        "cgroup",
        &[
            dir.to_str().unwrap_or(""),
            "copy",
            src.to_str().unwrap_or(""),
            dst.to_str().unwrap_or(""),
            &len.to_string(),
        ],
    )
    .stdout(std::process::Stdio::null())
    .status()
    .expect("run the caller");
    assert!(st.success(), "caller in {} failed", dir.display());
}

/// Removes the cgroups a test made, deepest first, once their processes are gone.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn calls_name_their_cgroup_unit_container_exe_and_parent() {
    require_root();
    let (root, _own) = cgroup2_root(&scratch());
    let me = std::process::id();
    let slice = root.join(format!("copytrace-test-{me}.slice"));
    let service = slice.join("billing-export.service");
    let id = "c0ffee".repeat(10) + "abcd";
    let scope = slice.join(format!("docker-{id}.scope"));
    let _cleanup = Cgroups(vec![slice.clone(), service.clone(), scope.clone()]);
    for d in [&slice, &service, &scope] {
        std::fs::create_dir_all(d).expect("create cgroup");
    }
    let fs = tmpfs("1m");
    std::fs::write(fs.path("a"), vec![7u8; 4096]).expect("write");

    let mut d = support::watch();
    copy_in_cgroup(&service, &fs.path("a"), &fs.path("b"), 1001);
    let mut events = d.reported();
    // The caller has exited when its call is described, so the daemon
    // finds a new cgroup by walking the hierarchy, and walks are spaced
    // out: the call is made again, once it is seen, until one is named
    // (the first almost always is).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for len in 1002.. {
        copy_in_cgroup(&scope, &fs.path("a"), &fs.path("c"), len);
        let seen = d.reported();
        let named = seen
            .iter()
            .any(|e| e["len"] == len && e["unit"].is_string());
        events.extend(seen);
        if named || std::time::Instant::now() > deadline {
            break;
        }
    }

    let exe = std::env::current_exe().expect("test binary path");
    let from_service = events
        .iter()
        .find(|e| e["len"] == 1001)
        .unwrap_or_else(|| panic!("no call from the service cgroup: {events:#?}"));
    assert_eq!(
        from_service["cgroup"],
        format!("/copytrace-test-{me}.slice/billing-export.service")
    );
    assert_eq!(from_service["unit"], "billing-export.service");
    assert!(from_service.get("container_id").is_none());
    assert_eq!(from_service["exe_path"], exe.to_str().unwrap_or("?"));
    assert_eq!(from_service["ppid"], me, "the caller's parent is this test");

    let from_container = events
        .iter()
        .find(|e| e["len"].as_u64().is_some_and(|l| l >= 1002) && e["unit"].is_string())
        .unwrap_or_else(|| panic!("no named call from the container scope: {events:#?}"));
    assert_eq!(from_container["unit"], format!("docker-{id}.scope"));
    assert_eq!(from_container["container_id"], id);
    assert_ne!(
        from_service["cgroup_id"], from_container["cgroup_id"],
        "two cgroups, two ids"
    );
}

#[test]
fn comm_is_what_the_program_chose_and_exe_is_what_ran() {
    require_root();
    let fs = tmpfs("1m");
    std::fs::write(fs.path("a"), vec![1u8; 100]).expect("write");
    let d = support::watch();
    let (a, b) = (fs.path("a"), fs.path("b"));
    let st = caller::command(
        "comm",
        &[
            "sshd",
            "copy",
            a.to_str().unwrap_or(""),
            b.to_str().unwrap_or(""),
            "77",
        ],
    )
    .stdout(std::process::Stdio::null())
    .status()
    .expect("run the caller");
    assert!(st.success());
    let events = d.stop();
    let e = events
        .iter()
        .find(|e| e["len"] == 77)
        .unwrap_or_else(|| panic!("no call: {events:#?}"));
    assert_eq!(e["comm"], "sshd", "comm is whatever the program set");
    let exe = std::env::current_exe().expect("test binary path");
    assert_eq!(
        e["exe_path"],
        exe.to_str().unwrap_or("?"),
        "exe is not fooled"
    );
}

#[test]
fn go_io_copy_on_tracefs_names_the_go_frames() {
    require_root();
    if !require_program("go", "golang-go") {
        return;
    }
    let bin = support::go_client();
    let tracefs = support::tracefs_dir();
    let fs = tmpfs("1m");
    let t = trace(
        &fs.dir,
        &[
            bin.to_str().unwrap_or(""),
            tracefs.join("trace").to_str().unwrap_or(""),
            tracefs.join("trace_marker").to_str().unwrap_or(""),
        ],
    );
    let call = the_suspicious_call(&t.calls);
    assert_eq!(call["verdict"], "silent_zero_copy");
    let names = functions(call);
    assert!(
        names
            .iter()
            .any(|f| f == "internal/poll.CopyFileRange" || f == "os.(*File).ReadFrom"),
        "Go's copy path is named: {names:?}"
    );
    // io.Copy is inlined into main.main; its body io.copyBuffer is a frame.
    assert!(names.iter().any(|f| f.starts_with("io.")), "{names:?}");
    assert!(names.iter().any(|f| f == "main.main"), "{names:?}");
    assert_eq!(
        call["stack"]["frames"][0]["module"],
        bin.to_str().unwrap_or("?")
    );
}

/// A C program that makes the same silent copy twice: once through the raw
/// system call instruction in a function of its own (`copy_direct`, the
/// line marked `SYSCALL`), once through libc's wrapper (`copy_via_libc`).
const C_CLIENT: &str = r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((noinline)) long copy_direct(int in, int out, long len) {
    long ret;
#if defined(__x86_64__)
    register long r10 __asm__("r10") = 0;
    register long r8 __asm__("r8") = len;
    register long r9 __asm__("r9") = 0;
    __asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_copy_file_range), "D"((long)in), "S"(0L), "d"((long)out), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory"); /* SYSCALL */
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_copy_file_range;
    register long x0 __asm__("x0") = in;
    register long x1 __asm__("x1") = 0;
    register long x2 __asm__("x2") = out;
    register long x3 __asm__("x3") = 0;
    register long x4 __asm__("x4") = len;
    register long x5 __asm__("x5") = 0;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory"); /* SYSCALL */
    ret = x0;
#endif
    return ret;
}

__attribute__((noinline)) long copy_via_libc(int in, int out, long len) {
    return copy_file_range(in, NULL, out, NULL, len, 0);
}

int main(int argc, char **argv) {
    int in = open(argv[1], O_RDONLY);
    int out = open(argv[2], O_WRONLY);
    if (in < 0 || out < 0) return 2;
    printf("%ld\n", copy_direct(in, out, 65536));
    printf("%ld\n", copy_via_libc(in, out, 65536));
    /* Stay alive while the daemon reads our memory map. */
    sleep(2);
    return 0;
}
"#;

#[test]
fn c_program_stack_names_function_and_line() {
    require_root();
    if !require_program("cc", "gcc") {
        return;
    }
    let work = scratch().join("c-client");
    std::fs::create_dir_all(&work).expect("mkdir");
    let src = work.join("client.c");
    std::fs::write(&src, C_CLIENT).expect("write C source");
    let bin = work.join("cclient");
    let st = Command::new("cc")
        .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success(), "cc failed");
    let arch_marker = if cfg!(target_arch = "aarch64") {
        "svc 0"
    } else {
        "\"syscall\""
    };
    let line = C_CLIENT
        .lines()
        .position(|l| l.contains("/* SYSCALL */") && l.contains(arch_marker))
        .map(|i| i as u64 + 1)
        .expect("marked line");

    let fs = tmpfs("1m");
    let t = trace(
        &fs.dir,
        &[
            bin.to_str().unwrap_or(""),
            "/proc/self/status",
            "/proc/self/comm",
        ],
    );
    assert_eq!(t.code, Some(0));
    let silent = suspicious(&t.calls);
    assert_eq!(silent.len(), 2, "{:#?}", t.calls);

    // Raw system call: the function, the exact line, then main.
    let direct = &silent[0]["stack"]["frames"];
    assert_eq!(direct[0]["function"], "copy_direct", "{direct:#}");
    assert_eq!(direct[0]["line"], line, "{direct:#}");
    assert!(
        direct[0]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("client.c")),
        "{direct:#}"
    );
    assert_eq!(direct[1]["function"], "main", "{direct:#}");

    // Through libc: its wrapper has no frame pointer, so its caller
    // (copy_via_libc) cannot be found; the frames shown must still be true.
    let via = functions(silent[1]);
    assert_eq!(via[0], "copy_file_range", "{via:?}");
    assert!(via.iter().any(|f| f == "main"), "{via:?}");
    assert!(
        !via.iter().any(|f| f == "copy_direct"),
        "no frame from elsewhere: {via:?}"
    );
}

/// std::fs::copy skips copy_file_range for a source of size 0 (procfs), so
/// the Rust client copies a sysfs file (advertised 4096 bytes) to tmpfs:
/// refused with EXDEV, a suspicious call whose stack is taken.
const RUST_CLIENT: &str = r#"
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n = std::fs::copy(&a[1], &a[2]).expect("fs::copy");
    println!("{n}");
    std::thread::sleep(std::time::Duration::from_secs(2));
}
"#;

#[test]
fn rust_std_fs_copy_stack_reaches_main() {
    require_root();
    if !require_program("rustc", "the Rust toolchain") {
        return;
    }
    let work = scratch().join("rust-stack-client");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("client.rs"), RUST_CLIENT).expect("write rust source");
    let bin = work.join("ruststack");
    let st = Command::new("rustc")
        .args([
            "-g",
            "-C",
            "force-frame-pointers=yes",
            "--edition",
            "2021",
            "-o",
        ])
        .arg(&bin)
        .arg(work.join("client.rs"))
        .status()
        .expect("rustc");
    assert!(st.success(), "rustc failed");
    let fs = tmpfs("1m");
    let t = trace(
        &fs.dir,
        &[
            bin.to_str().unwrap_or(""),
            "/sys/class/net/lo/address",
            fs.path("out").to_str().unwrap_or(""),
        ],
    );
    assert_eq!(t.code, Some(0));
    let call = the_suspicious_call(&t.calls);
    // std is built with frame pointers (Rust 1.79 on), so the chain is
    // whole from libc's wrapper up to the program's main.
    let names = functions(call);
    assert_eq!(
        names.first().map(String::as_str),
        Some("copy_file_range"),
        "{names:?}"
    );
    let copy = names.iter().position(|f| f == "std::fs::copy");
    let main = names.iter().position(|f| f == "client::main");
    assert!(
        copy.is_some() && main > copy,
        "std::fs::copy called from client::main: {names:?}"
    );
    assert!(call["stack"]["cut"].is_null(), "{call:#}");
}

#[test]
fn stacks_are_taken_only_for_suspicious_calls() {
    require_root();
    let fs = tmpfs("1m");
    std::fs::write(fs.path("a"), vec![1u8; 100]).expect("write");
    let d = support::watch();
    let a = support::open(&fs.path("a"), libc::O_RDONLY);
    let b = support::open(&fs.path("b"), libc::O_WRONLY | libc::O_CREAT);
    let ok = support::cfr(support::raw(&a), None, support::raw(&b), None, 100, 0);
    assert_eq!(ok, Ok(100));
    support::silent_copies(1);
    let events = d.stop();
    let good = find(&events, support::raw(&a), support::raw(&b), 100);
    assert!(good.get("stack").is_none(), "{good:#}");
    let silent = events
        .iter()
        .find(|e| e["verdict"] == "silent_zero_copy")
        .unwrap_or_else(|| panic!("{events:#?}"));
    // This test binary is built without frame pointers: at least the
    // frame of the system call itself is there, named.
    let names = functions(silent);
    assert!(!names.is_empty() && names[0] != "?", "{silent:#}");
    assert!(silent["stack"]["note"].is_string());
}

#[test]
fn no_stacks_switches_stacks_off() {
    // Held so that no test sharing the watch daemon sees these calls.
    let _serial = support::watch();
    let d = support::watching().arg("--no-stacks").start();
    support::silent_copies(2);
    let events = d.stop();
    let silent: Vec<_> = events
        .iter()
        .filter(|e| e["verdict"] == "silent_zero_copy")
        .collect();
    assert_eq!(silent.len(), 2, "{events:#?}");
    for e in silent {
        assert!(e.get("stack").is_none(), "{e:#}");
        assert!(!e["path_in"].is_null(), "still described: {e:#}");
    }
}
