//! `cargo xtask test`: formatting, lints, and every test (unit and kernel) as root.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::provision::run as sh;

/// Adds up libtest's "test result:" lines.
#[derive(Default, Debug, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut w = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (w.next(), w.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs the whole suite. Kernel tests share global state (attached probes,
/// mounts), so they run one at a time.
pub fn test(filter: Option<&str>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        bail!("the test suite loads real eBPF probes and mounts filesystems: run it as root");
    }
    sh(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    sh(Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--", "--test-threads=1"]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            tally.add_line(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    // The kernel matrix: every scenario on every guest kernel and back-end
    // counts as one check. Skipped when a filter narrows the run.
    let matrix = if filter.is_none() {
        Some(crate::matrix::run(None))
    } else {
        None
    };
    if let Some(Ok(checks)) = &matrix {
        tally.passed += checks.passed;
        tally.failed += checks.failed;
    }
    // One closing line over every test binary, so CI sees the real total.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    if !status.success() || tally.failed > 0 {
        bail!("cargo test failed ({status})");
    }
    if let Some(Err(e)) = matrix {
        return Err(e.context("kernel matrix"));
    }
    if tally.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

extern "C" {
    fn geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_result_lines() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 6.42s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Tally {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }
}
