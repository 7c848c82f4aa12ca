//! Which code made a suspicious call, under the shipped unit, held to
//! gdb's backtrace of the same program stopped at the same system call.
//! The daemon may not read other processes' `/proc/PID/maps` there
//! (ProtectProc=invisible, no CAP_SYS_PTRACE), and the caller may have
//! exited by the time the record is read: frames in libraries can be
//! placed only with the mappings the kernel recorded at the call (5.17+;
//! this guest runs 6.1).
//!
//! The programs are Debian's cp and python3, and a C (with and without
//! frame pointers), a Rust release and a Go program the host built from
//! `copytrace_testkit::stack_programs` (the guest runs the host's Debian
//! release, so they link against the same C library).

use std::path::Path;

use copytrace_testkit::gdb_stack::{
    backtrace_at_copy, begins_with_gdbs, named_where_gdb_names, stack_addrs,
};
use copytrace_testkit::stack_programs::{
    BAD_COPIER_FP_BIN, BAD_COPIER_NOFP_BIN, GO_COPY_BIN, RUST_COPY_BIN,
};
use serde_json::Value;

use crate::check;
use crate::sys::sh;
use crate::tail_watch::calls_during;

/// Where the data disk holds the programs the host built.
const PROGRAMS: &str = "/mnt/ct/programs";

/// Python's `os.copy_file_range` from procfs to `/tmp/ct-stack-py`.
const PYTHON_SCRIPT: &str = "import os\na = os.open('/proc/self/status', os.O_RDONLY)\nb = os.open('/tmp/ct-stack-py', os.O_WRONLY | os.O_CREAT)\ntry:\n    os.copy_file_range(a, b, 4096)\nexcept OSError:\n    pass\n";

/// One program whose suspicious call's stack is held to gdb's.
struct Program {
    /// The check's name (in `PLAN`).
    check: &'static str,
    /// The command line.
    args: Vec<String>,
    /// Its comm, which picks its call out of the tail.
    comm: &'static str,
    /// The file it writes, removed before each run.
    output: &'static str,
    /// Runs as `nobody` (else as root: tracefs is root's only).
    as_nobody: bool,
}

fn programs() -> Vec<Program> {
    let built = |name: &str| Path::new(PROGRAMS).join(name).display().to_string();
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let c = |check, bin: &'static str| Program {
        check,
        args: vec![built(bin)],
        comm: bin,
        output: "",
        as_nobody: true,
    };
    vec![
        c(
            "under the unit, the C program's stack (frame pointers) is gdb's",
            BAD_COPIER_FP_BIN,
        ),
        c(
            "under the unit, the C program's stack (no frame pointers) is gdb's",
            BAD_COPIER_NOFP_BIN,
        ),
        Program {
            check: "under the unit, Debian's cp's stack is gdb's",
            args: argv(&["/usr/bin/cp", "/proc/self/status", "/tmp/ct-stack-cp"]),
            comm: "cp",
            output: "/tmp/ct-stack-cp",
            as_nobody: true,
        },
        Program {
            check: "under the unit, Debian's python3's stack is gdb's",
            args: argv(&["/usr/bin/python3", "-c", PYTHON_SCRIPT]),
            comm: "python3",
            output: "/tmp/ct-stack-py",
            as_nobody: true,
        },
        Program {
            check: "under the unit, a Rust release std::fs::copy's stack is gdb's",
            args: vec![
                built(RUST_COPY_BIN),
                "/sys/class/net/lo/address".into(),
                "/tmp/ct-stack-rust".into(),
            ],
            comm: RUST_COPY_BIN,
            output: "/tmp/ct-stack-rust",
            as_nobody: true,
        },
        Program {
            check: "under the unit, Go's io.Copy stack is gdb's",
            args: vec![
                built(GO_COPY_BIN),
                "/sys/kernel/tracing/trace".into(),
                "/tmp/ct-stack-go".into(),
            ],
            comm: GO_COPY_BIN,
            output: "/tmp/ct-stack-go",
            as_nobody: false,
        },
    ]
}

/// Every program's check, in `PLAN`'s order.
pub fn stacks_match_gdb() {
    if !Path::new("/sys/kernel/tracing/trace").exists() {
        let _ = sh(
            "mount",
            &["-t", "tracefs", "tracefs", "/sys/kernel/tracing"],
        );
    }
    for p in programs() {
        held_to_gdb(&p);
    }
}

/// Runs `p` under gdb, then as the unit sees it, and compares the stacks.
fn held_to_gdb(p: &Program) -> bool {
    let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
    let remove_output = || {
        if !p.output.is_empty() {
            let _ = std::fs::remove_file(p.output);
        }
    };
    remove_output();
    let gdb = match backtrace_at_copy(&args) {
        Ok(frames) => frames,
        Err(e) => return check(p.check, false, &e),
    };
    remove_output();
    let (calls, note) = calls_during(|| {
        let mut cmd: Vec<&str> = Vec::new();
        if p.as_nobody {
            cmd.extend([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "setarch",
            ]);
        }
        cmd.push("-R");
        cmd.extend(&args);
        let program = if p.as_nobody { "setpriv" } else { "setarch" };
        let (code, out) = sh(program, &cmd);
        format!("exit {code} {}", out.trim())
    });
    remove_output();
    let call = calls
        .iter()
        .find(|c| c["comm"] == p.comm && c["stack"].is_object());
    let Some(call) = call else {
        return check(
            p.check,
            false,
            &format!("{note}; no call of {} with a stack in the tail", p.comm),
        );
    };
    let mappings = &call["stack"]["mappings"];
    let verdict = if mappings == "kernel" {
        begins_with_gdbs(&stack_addrs(call), &gdb).and_then(|()| named_where_gdb_names(call, &gdb))
    } else {
        Err(format!(
            "frames placed with {mappings} mappings, not the kernel's"
        ))
    };
    let shown = frames_shown(call);
    match verdict {
        Ok(()) => check(
            p.check,
            true,
            &format!("{shown} (mappings from the kernel)"),
        ),
        Err(e) => check(p.check, false, &format!("{note}; {e}; frames: {shown}")),
    }
}

/// The stack as an operator reads it: `function@address` from the call site.
fn frames_shown(call: &Value) -> String {
    call["stack"]["frames"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    format!(
                        "{}@{}",
                        f["function"].as_str().unwrap_or("?"),
                        f["addr"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(" <- ")
        })
        .unwrap_or_default()
}
