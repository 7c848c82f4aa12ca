//! PID 1 of a kernel-matrix guest (an initramfs booted by `cargo xtask
//! matrix` under qemu). It mounts the pseudo filesystems, loads the modules
//! the tests need, then runs the same kernel test binaries as the host, once
//! per probe back-end, and reports on the serial console in console lines
//! that the host parses (see [`copytrace_guest::console`]). Then it powers
//! the guest off.
//!
//! The plan comes from `/plan.json` ([`Plan`]), written by the host. A
//! plan may ask for the per-call benchmark ([`bench`]) instead of tests.

mod bench;
mod setup;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use copytrace_common::doctor;
use copytrace_guest::console::Kind;
use copytrace_guest::report;
use serde::Deserialize;

/// What the host asks the guest to run.
#[derive(Debug, Deserialize)]
struct Plan {
    /// Test binaries under /tests, by file name.
    tests: Vec<String>,
    /// Back-ends to run them on.
    backends: Vec<String>,
    /// Extra environment for every test run.
    env: Vec<(String, String)>,
    /// Run the per-call benchmark instead of the tests.
    #[serde(default)]
    bench: bool,
}

/// `copytrace doctor --json`, run once per boot: it loads every back-end,
/// which takes seconds under TCG.
fn doctor_report() -> Result<doctor::Report, String> {
    let out = Command::new("/bin/copytrace")
        .args(["doctor", "--json"])
        .output()
        .map_err(|e| format!("cannot run copytrace doctor: {e}"))?;
    doctor::Report::from_json(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("copytrace doctor --json printed no report: {e}"))
}

/// How copytrace attaches `backend` here ("typed kernel reads"…), or why
/// it cannot, from the doctor's report.
fn backend_check(report: &Result<doctor::Report, String>, backend: &str) -> Result<String, String> {
    let report = report.as_ref().map_err(Clone::clone)?;
    let check = report.backend(backend);
    let mappings = match check {
        Some(c) if c.stack_mappings => ", stack mappings in the kernel".to_string(),
        Some(c) => match &c.stack_mappings_why_not {
            Some(why) => format!(", no stack mappings: {why}"),
            None => String::new(),
        },
        None => String::new(),
    };
    match check.map(doctor::BackendCheck::attached) {
        Some(Ok(reads)) => Ok(format!("{reads}{mappings}")),
        Some(Err(why)) => Err(why.to_string()),
        None => Err(format!("copytrace doctor does not know {backend}")),
    }
}

/// Runs one test binary on one back-end, streaming its output.
fn run_tests(plan: &Plan, binary: &str, backend: &str) -> Result<()> {
    let skip_log = format!("/tmp/skips-{backend}-{binary}");
    let mut cmd = Command::new(format!("/tests/{binary}"));
    cmd.arg("--test-threads=1")
        .env("COPYTRACE_TEST_PROBE", backend)
        .env("COPYTRACE_SKIP_LOG", &skip_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &plan.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("run /tests/{binary}"))?;
    let err = child.stderr.take().context("stderr")?;
    let tag = format!("{backend} {binary}");
    let err_tag = tag.clone();
    let errs = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            report::line(Kind::Err, &err_tag, &line);
        }
    });
    let out = child.stdout.take().context("stdout")?;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        report::line(Kind::Out, &tag, &line);
    }
    let _ = errs.join();
    let status = child.wait()?;
    if let Ok(skips) = std::fs::read_to_string(&skip_log) {
        for l in skips.lines() {
            report::line(Kind::Skip, &tag, l);
        }
    }
    report::line(Kind::Exit, &tag, &status.code().unwrap_or(-1).to_string());
    Ok(())
}

fn run() -> Result<()> {
    setup::system()?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    report::line(Kind::Kernel, "", release.trim());
    let plan: Plan = serde_json::from_slice(&std::fs::read("/plan.json")?)?;
    let doctor = doctor_report();
    if plan.bench {
        for (k, v) in &plan.env {
            std::env::set_var(k, v);
        }
        // The loops and mounts panic on what they cannot do; PID 1 must
        // report that and power off, not take the kernel down with it.
        return std::panic::catch_unwind(|| {
            bench::run(&plan.backends, |b| backend_check(&doctor, b).err())
        })
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            Err(anyhow::anyhow!("benchmark panicked: {what}"))
        });
    }
    for backend in &plan.backends {
        match backend_check(&doctor, backend) {
            Err(why) => {
                report::line(Kind::Refused, backend, &why);
                continue;
            }
            Ok(reads) => {
                report::line(
                    Kind::Loaded,
                    backend,
                    &format!("loads and attaches, {reads}"),
                );
            }
        }
        for binary in &plan.tests {
            if let Err(e) = run_tests(&plan, binary, backend) {
                report::line(
                    Kind::Error,
                    &format!("{backend} {binary}"),
                    &format!("{e:#}"),
                );
            }
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        report::line(Kind::Error, "setup", &format!("{e:#}"));
    }
    report::line(Kind::Done, "", "");
    setup::power_off();
}
