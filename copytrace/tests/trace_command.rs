//! `copytrace trace -- CMD`: a real child process tree under real probes.

mod support;

use std::os::unix::process::CommandExt;
use std::process::Command;

use serde_json::Value;
use support::{copytrace_bin, require_root, write_file, Mount};

fn read_json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("trace output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn traces_child_and_grandchild_and_keeps_exit_code() {
    require_root();
    let fs = Mount::tmpfs("1m");
    write_file(&fs.path("a"), 3000);
    let out = fs.path("trace.jsonl");
    let script = format!(
        r#"
import os, sys
a = os.open('{0}/a', os.O_RDONLY); b = os.open('{0}/b', os.O_WRONLY | os.O_CREAT)
os.copy_file_range(a, b, 1111)
pid = os.fork()
if pid == 0:
    os.copy_file_range(a, b, 2222)
    os._exit(0)
os.waitpid(pid, 0)
sys.exit(3)
"#,
        fs.dir.display()
    );
    let status = Command::new(copytrace_bin())
        .args(["trace", "--json", "-o"])
        .arg(&out)
        .args(["--", "python3", "-c", &script])
        .status()
        .expect("run copytrace trace");
    assert_eq!(
        status.code(),
        Some(3),
        "trace exits with the command's code"
    );
    let lines = read_json_lines(&out);
    let calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "call")
        .map(|l| &l["data"])
        .collect();
    assert_eq!(calls.len(), 2, "{lines:#?}");
    assert_eq!(calls[0]["len"], 1111);
    assert_eq!(calls[0]["ret"], 1111);
    assert_eq!(calls[1]["len"], 2222);
    assert_eq!(calls[1]["ret"], 3000 - 1111, "the rest of the file");
    assert_ne!(
        calls[0]["pid"], calls[1]["pid"],
        "grandchild has its own pid"
    );
    let summary = lines.last().expect("summary line");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["data"]["calls"], 2);
    assert_eq!(summary["data"]["bytes_copied"], 3000);
    assert_eq!(summary["data"]["lost"], 0);
}

#[test]
fn human_output_has_a_summary() {
    require_root();
    let out = Command::new(copytrace_bin())
        .args(["trace", "--", "python3", "-c"])
        .arg("import os; a=os.open('/proc/self/status', os.O_RDONLY); b=os.open('/proc/self/comm', os.O_WRONLY); os.copy_file_range(a, b, 512)")
        .output()
        .expect("run copytrace trace");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("silent_zero_copy"), "{text}");
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
