//! gdb's backtrace of a program stopped at its first `copy_file_range`
//! (`catch syscall`): the truth a suspicious call's stack is held to,
//! return address by return address, from the call site up to `main`.
//! gdb disables address-space randomisation; the traced run must too
//! (`setarch -R`), so every binary's code sits at the same addresses.

use std::process::Command;

use serde_json::Value;

/// One frame of gdb's backtrace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GdbFrame {
    /// The frame's pc (for the frames above the innermost, a return address).
    pub pc: u64,
    /// The function gdb names there, `??` where it cannot.
    pub function: String,
}

/// Longest gdb may take to run a program to its call (a TCG guest included).
const GDB_LIMIT_SECS: &str = "300";

/// gdb's frames at the first copy_file_range `args` makes.
pub fn backtrace_at_copy(args: &[&str]) -> Result<Vec<GdbFrame>, String> {
    let out = Command::new("timeout")
        .args(["--kill-after=5", GDB_LIMIT_SECS, "gdb"])
        // gdb's own Python would leave __pycache__ under /usr/share/gdb
        // (a system the tests must leave as they found it); the program
        // keeps the environment it would have had.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args([
            "-q",
            "-batch",
            "-nx",
            "-iex",
            "unset environment PYTHONDONTWRITEBYTECODE",
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
        .map_err(|e| format!("cannot run gdb: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut frames: Vec<GdbFrame> = text.lines().filter_map(frame_line).collect();
    // gdb lists a function inlined at an address as a frame of its own at
    // the same address; copytrace lists it inside that frame.
    frames.dedup_by_key(|f| f.pc);
    if frames.is_empty() {
        let limit = if out.status.code() == Some(124) {
            format!(" (stopped after {GDB_LIMIT_SECS} s)")
        } else {
            String::new()
        };
        return Err(format!(
            "gdb gave no frames{limit}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(frames)
}

/// One `#N  0xADDR in FUNCTION (...)` line of `bt`.
fn frame_line(line: &str) -> Option<GdbFrame> {
    let mut words = line.strip_prefix('#')?.split_whitespace().skip(1);
    let pc = u64::from_str_radix(words.next()?.strip_prefix("0x")?, 16).ok()?;
    (words.next()? == "in").then_some(())?;
    Some(GdbFrame {
        pc,
        function: words.next()?.to_string(),
    })
}

/// Whether gdb's name is a program's `main`: C's main, Go's main.main,
/// Rust's crate::main (with or without its symbol hash).
fn is_main(function: &str) -> bool {
    let f = match function.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => function,
    };
    f == "main" || f == "main.main" || f.ends_with("::main")
}

/// The frames from the call site up to `main` (up to the one before
/// libc's start-up code when the program's symbols are stripped).
pub fn up_to_main(gdb: &[GdbFrame]) -> &[GdbFrame] {
    if let Some(i) = gdb.iter().position(|f| is_main(&f.function)) {
        return &gdb[..=i];
    }
    let start = gdb
        .iter()
        .position(|f| f.function.starts_with("__libc_start"))
        .unwrap_or(gdb.len());
    &gdb[..start]
}

/// The frame addresses of a call record's stack (copytrace's JSON).
pub fn stack_addrs(call: &Value) -> Vec<u64> {
    call["stack"]["frames"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| {
                    u64::from_str_radix(f["addr"].as_str()?.strip_prefix("0x")?, 16).ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `ours` begins with gdb's frames up to `main`; the error shows both.
pub fn begins_with_gdbs(ours: &[u64], gdb: &[GdbFrame]) -> Result<(), String> {
    let want: Vec<u64> = up_to_main(gdb).iter().map(|f| f.pc).collect();
    if ours.len() >= want.len() && ours[..want.len()] == want[..] {
        return Ok(());
    }
    let shown = |fs: &[u64]| {
        fs.iter()
            .map(|a| format!("{a:#x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Err(format!(
        "copytrace's frames {} are not gdb's {} ({:?})",
        shown(ours),
        shown(&want),
        up_to_main(gdb)
    ))
}

/// Whether the call's stack names every frame up to `main` that gdb names
/// (the names may differ where gdb shows an inlined function and copytrace
/// the one it was inlined into).
pub fn named_where_gdb_names(call: &Value, gdb: &[GdbFrame]) -> Result<(), String> {
    let frames = call["stack"]["frames"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let unnamed: Vec<String> = up_to_main(gdb)
        .iter()
        .zip(frames.iter())
        .filter(|(g, ours)| {
            g.function != "??" && ours["function"].as_str().is_none_or(|f| f == "?")
        })
        .map(|(g, _)| format!("{:#x} ({})", g.pc, g.function))
        .collect();
    if unnamed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "gdb names frames copytrace does not: {}",
            unnamed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bt_lines_are_read_with_their_address_and_function() {
        let f = frame_line("#1  0x00005555555551ae in main () at badcopier.c:13");
        assert_eq!(
            f,
            Some(GdbFrame {
                pc: 0x5555_5555_51ae,
                function: "main".into()
            })
        );
        assert_eq!(
            frame_line("Catchpoint 1 (call to syscall copy_file_range)"),
            None
        );
    }

    #[test]
    fn main_is_found_in_c_go_and_rust_and_stripped_programs_stop_before_start_up() {
        let f = |pc, name: &str| GdbFrame {
            pc,
            function: name.into(),
        };
        let rust = [
            f(1, "copy"),
            f(2, "copy::main::h0123456789abcdef"),
            f(3, "std::rt::lang_start"),
        ];
        assert_eq!(up_to_main(&rust).len(), 2);
        let go = [
            f(1, "syscall.Syscall6"),
            f(2, "main.main"),
            f(3, "runtime.main"),
        ];
        assert_eq!(up_to_main(&go).len(), 2);
        let stripped = [
            f(1, "copy_file_range"),
            f(2, "??"),
            f(3, "__libc_start_call_main"),
        ];
        assert_eq!(up_to_main(&stripped).len(), 2);
    }
}
