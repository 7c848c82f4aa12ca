//! Bad command-line input: one line on stderr, exit code 2, no probes needed.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_copytrace"))
        .args(args)
        .output()
        .expect("run copytrace");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_flag_exits_2() {
    let (code, err) = run(&["run", "--frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--frobnicate"), "{err}");
}

#[test]
fn bad_probe_value_exits_2() {
    let (code, err) = run(&["run", "--probe", "kprobe"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("auto, fentry, tracepoint"), "{err}");
}

#[test]
fn help_explains_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_copytrace"))
        .arg("--help")
        .output()
        .expect("run copytrace");
    assert_eq!(out.status.code(), Some(0), "--help succeeds");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "trace", "tail", "doctor", "silently"] {
        assert!(text.contains(word), "{word} missing from --help: {text}");
    }
}
