//! Facts about the machine a benchmark ran on, detected rather than written in.

use std::process::Command;

use crate::cmd::output;

/// What the report says about where it was measured.
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs available to us.
    pub cores: usize,
    /// UTC date and time of the run.
    pub date: String,
}

impl Machine {
    /// Reads the facts now.
    pub fn detect() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .unwrap_or_default()
            .trim()
            .to_string();
        Machine {
            kernel,
            cpu,
            cores,
            date,
        }
    }
}
