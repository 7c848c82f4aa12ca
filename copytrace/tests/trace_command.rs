//! `copytrace trace -- CMD`: a real child process tree under real probes.

mod support;

use std::os::unix::process::CommandExt;
use std::process::Command;

use serde_json::Value;
use support::{caller, copytrace_bin, require_root, tmpfs, write_file};

fn read_json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("trace output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `copytrace trace --json -o OUT -- <this test binary as caller PROGRAM ARGS>`.
fn trace_caller(
    out: Option<&std::path::Path>,
    program: &str,
    args: &[&str],
) -> std::process::Output {
    let target = caller::command(program, args);
    let mut cmd = Command::new(copytrace_bin());
    cmd.arg("trace");
    if let Some(p) = support::suite::probe() {
        cmd.args(["--probe", &p]);
    }
    if let Some(o) = out {
        cmd.args(["--json", "-o"]).arg(o);
    }
    cmd.arg("--")
        .arg(target.get_program())
        .envs(target.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .expect("run copytrace trace")
}

#[test]
fn traces_child_and_grandchild_and_keeps_exit_code() {
    require_root();
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 3000);
    let out = fs.path("trace.jsonl");
    let run = trace_caller(Some(&out), "tree", &[fs.dir.to_str().expect("utf-8")]);
    assert_eq!(
        run.status.code(),
        Some(caller::TREE_EXIT),
        "trace exits with the command's code: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines = read_json_lines(&out);
    let calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "call")
        .map(|l| &l["data"])
        .collect();
    let [first, second] = caller::TREE_LENS;
    assert_eq!(calls.len(), 2, "{lines:#?}");
    assert_eq!(calls[0]["len"], first);
    assert_eq!(calls[0]["ret"], first);
    assert_eq!(calls[1]["len"], second);
    assert_eq!(calls[1]["ret"], 3000 - first, "the rest of the file");
    assert_ne!(
        calls[0]["pid"], calls[1]["pid"],
        "the child has its own pid"
    );
    for c in &calls {
        support::suite::assert_backend(c["backend"].as_str().unwrap_or("?"));
    }
    let summary = lines.last().expect("summary line");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["data"]["calls"], 2);
    assert_eq!(summary["data"]["bytes_copied"], 3000);
    assert_eq!(summary["data"]["lost"], 0);
}

#[test]
fn human_output_has_a_summary() {
    require_root();
    let run = trace_caller(
        None,
        "copy",
        &["/proc/self/status", "/proc/self/comm", "512"],
    );
    assert!(run.status.success());
    let text = String::from_utf8_lossy(&run.stderr);
    let call = text
        .lines()
        .find(|l| l.contains(" silent_zero_copy "))
        .unwrap_or_else(|| panic!("no silent_zero_copy line: {text}"));
    assert!(call.contains("0/512"), "{call}");
    assert!(
        text.contains("copytrace: 1 copy_file_range call(s), 1 suspicious"),
        "{text}"
    );
}

#[test]
fn missing_command_is_a_one_line_error() {
    require_root();
    let out = Command::new(copytrace_bin())
        .args(["trace", "--", "/nonexistent/program"])
        .output()
        .expect("run copytrace trace");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("copytrace: error: cannot run /nonexistent/program"),
        "{err}"
    );
}

#[test]
fn unprivileged_user_gets_a_clear_error() {
    require_root();
    let out = Command::new(copytrace_bin())
        .args(["run"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run copytrace as nobody");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("run as root"), "{err}");
}
