//! Running test binaries on this machine: unit tests once, kernel tests once
//! per probe back-end the kernel allows (a refused back-end is reported as
//! skipped, with the kernel's reason).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use copytrace_common::doctor;

use super::tally::{parse_list, Run};
use crate::build::TestBinary;
use crate::cmd::output;

/// Integration test binaries that load probes: run once per back-end,
/// one test at a time (they attach probes and mount filesystems).
pub const KERNEL_TESTS: &[&str] = &[
    "probe_syscalls",
    "trace_command",
    "clients_real",
    "daemon_service",
    "tail_socket",
    "hostile_input",
    "diagnosis",
    "kernel_truth",
    "oracle",
    "xfstests_replay",
    "watcher_attacks",
    "stacks_vs_gdb",
];

/// Integration test binaries that need no probes.
pub const PLAIN_TESTS: &[&str] = &["cli_errors", "untrusted_input", "symbolizer_fuzz"];

/// The back-ends, by name, in the order runs are reported.
pub const BACKENDS: [&str; 2] = ["fentry", "tracepoint"];

/// Whether a binary holds kernel tests.
pub fn is_kernel(bin: &TestBinary) -> bool {
    bin.kind == "test" && KERNEL_TESTS.contains(&bin.name.as_str())
}

/// Which back-ends `copytrace doctor --json` says attach here, and why the
/// others do not.
pub fn backends(copytrace: &Path) -> Result<Vec<(String, Result<(), String>)>> {
    let text = output(Command::new(copytrace).args(["doctor", "--json"]))
        .or_else(|e| {
            // doctor exits 2 when no back-end attaches; its JSON still says why.
            let out = Command::new(copytrace)
                .args(["doctor", "--json"])
                .output()?;
            if out.stdout.is_empty() {
                Err(e)
            } else {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
        })
        .context("copytrace doctor --json")?;
    let report = doctor::Report::from_json(&text).context("doctor --json output")?;
    Ok(BACKENDS
        .iter()
        .map(|b| {
            let ok = match report.backend(b).map(doctor::BackendCheck::attached) {
                Some(Ok(_)) => Ok(()),
                Some(Err(why)) => Err(why.to_string()),
                None => Err("doctor does not know this back-end".to_string()),
            };
            (b.to_string(), ok)
        })
        .collect())
}

/// The tests a binary holds (narrowed by `filter`).
pub fn list(bin: &Path, filter: Option<&str>) -> Result<Vec<String>> {
    let mut cmd = Command::new(bin);
    cmd.args(["--list", "--format", "terse"]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    Ok(parse_list(&output(&mut cmd)?))
}

/// Runs one test binary to the end, echoing its output, and reads what each test did.
pub fn run(
    name: String,
    bin: &Path,
    filter: Option<&str>,
    backend: Option<&str>,
    skip_log: &Path,
) -> Result<Run> {
    let expected = list(bin, filter)?;
    let mut result = Run::new(name, &expected);
    let _ = std::fs::remove_file(skip_log);
    let mut cmd = Command::new(bin);
    if backend.is_some() {
        cmd.arg("--test-threads=1");
    }
    if let Some(f) = filter {
        cmd.arg(f);
    }
    cmd.env("COPYTRACE_SKIP_LOG", skip_log);
    if let Some(b) = backend {
        cmd.env("COPYTRACE_TEST_PROBE", b);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            crate::cmd::echo(&line);
            result.read_line(&line);
        }
    }
    let status = child.wait()?;
    if let Ok(skips) = std::fs::read_to_string(skip_log) {
        result.read_skips(&skips);
    }
    if !status.success() {
        result.trouble = Some(format!("exited with {status}"));
    }
    Ok(result)
}
