//! Taking the measurements: fixtures on real filesystems, the loop child,
//! and the daemon's resources; the tracers around the loop are in
//! [`super::tracers`], the kernel programs' own cost in [`super::costs`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use copytrace_common::metric_names::{CALLS_TOTAL, EVENTS_LOST_TOTAL, EVENTS_RECEIVED_TOTAL};
use copytrace_testkit::fs::Mount;
use copytrace_testkit::net::{http_get, sum_samples};

use super::tracers::{self, Daemon};
use crate::cmd::{output, run};

/// Measured runs per cell, after one warm-up run.
pub const RUNS: usize = 5;

/// Median, min and max of runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Median and range of `v` (which must not be empty).
pub fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    Stats {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// A tmpfs and an ext4 with 4 KiB and 1 MiB source files.
pub struct Fixture {
    pub tmpfs: Mount,
    pub ext4: Mount,
}

impl Fixture {
    /// Mounts both under `root`.
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let f = Fixture {
            tmpfs: Mount::tmpfs(root, "256m"),
            ext4: Mount::ext4(root, 256),
        };
        for m in [&f.tmpfs, &f.ext4] {
            for (name, len) in [("src4k", 4096usize), ("src1m", 1 << 20)] {
                copytrace_testkit::fs::write_file(&m.path(name), len);
            }
        }
        Ok(f)
    }
}

/// One measured workload: the loop child's arguments.
pub struct Workload {
    pub name: String,
    pub args: Vec<String>,
    pub iters: u64,
    /// Whether it makes copy_file_range calls (strace only traces those).
    pub copies: bool,
}

/// The per-call workloads.
pub fn workloads(fx: &Fixture) -> Vec<Workload> {
    let mut w = Vec::new();
    for (fs, m) in [("tmpfs", &fx.tmpfs), ("ext4", &fx.ext4)] {
        for (size, src, len, iters) in [
            ("4 KiB", "src4k", 4096, 100_000u64),
            ("1 MiB", "src1m", 1 << 20, 3_000),
        ] {
            w.push(Workload {
                name: format!("copy_file_range {size} {fs}"),
                args: vec![
                    "cfr".into(),
                    String::new(), // iterations, filled per run
                    "1".into(),
                    m.path(src).display().to_string(),
                    m.path("dst").display().to_string(),
                    len.to_string(),
                ],
                iters,
                copies: true,
            });
        }
    }
    w.push(Workload {
        name: "unrelated openat+read+write+close".into(),
        args: vec!["unrelated".into(), String::new(), "1".into()],
        iters: 200_000,
        copies: false,
    });
    w
}

/// `w` (a `cfr` loop) at the files' positions: NULL offsets, as cp and
/// Go's io.Copy pass them, so no offset is read from user memory.
pub fn at_file_positions(w: &Workload) -> Workload {
    let mut args = w.args.clone();
    args[0] = "cfr-fpos".into();
    Workload {
        name: format!("{} at the file positions", w.name),
        args,
        iters: w.iters,
        copies: true,
    }
}

/// Suspicious calls: procfs → procfs silent zero copies.
pub fn silent_workload() -> Workload {
    Workload {
        name: "silent zero copy (procfs → procfs)".into(),
        args: vec!["silent".into(), String::new(), "1".into()],
        iters: 50_000,
        copies: true,
    }
}

/// The release builds `bench` and `soak` run: copytrace, and the loop child
/// (in the guest crate, whose static build the benchmark guest runs too).
pub fn build_release() -> Result<()> {
    run(Command::new("cargo").args([
        "build",
        "--release",
        "-p",
        "copytrace",
        "-p",
        "copytrace-guest",
    ]))
}

/// The loop child's path, in the release build [`build_release`] makes.
pub fn loop_bin() -> Result<PathBuf> {
    let bin = PathBuf::from("target/release/bench-loop");
    anyhow::ensure!(bin.exists(), "{} is not built", bin.display());
    Ok(bin)
}

/// Runs the loop child once (under strace when asked); returns ns per operation.
pub fn run_loop(strace: bool, w: &Workload, iters: u64) -> Result<f64> {
    let mut args = w.args.clone();
    args[1] = iters.to_string();
    let mut cmd = if strace {
        tracers::strace(&loop_bin()?)
    } else {
        Command::new(loop_bin()?)
    };
    let out = output(cmd.args(&args))?;
    out.trim()
        .parse()
        .with_context(|| format!("bench-loop printed {out:?}"))
}

/// Median of [`RUNS`] runs after a warm-up.
pub fn measure(strace: bool, w: &Workload) -> Result<Stats> {
    let iters = if strace {
        (w.iters / 10).max(100)
    } else {
        w.iters
    };
    run_loop(strace, w, iters / 5)?;
    let runs = (0..RUNS)
        .map(|_| run_loop(strace, w, iters))
        .collect::<Result<Vec<_>>>()?;
    Ok(stats(runs))
}

/// One scrape of the daemon's metrics.
pub fn scrape(addr: &str) -> Result<String> {
    http_get(addr, "/metrics")
        .map(|(_, body)| body)
        .with_context(|| format!("scraping {addr}"))
}

/// A `/proc/PID/status` value in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / hz
}

/// Ingest under N threads of 4 KiB tmpfs copies.
pub struct Ingest {
    /// What the daemon was asked to show.
    pub daemon: &'static str,
    pub threads: u64,
    pub calls: f64,
    pub seconds: f64,
    pub received: f64,
    pub lost: f64,
    pub counted_exactly: bool,
    pub peak_rss_kib: u64,
    pub cpu_per_100k: f64,
}

/// Runs 400k calls per thread against a running daemon and checks its counts.
pub fn ingest(d: &Daemon, daemon: &'static str, fx: &Fixture, threads: u64) -> Result<Ingest> {
    // Let the previous run's last events arrive (the reader polls every 50 ms).
    std::thread::sleep(Duration::from_millis(500));
    let before = scrape(&d.metrics)?;
    let cpu0 = cpu_seconds(d.child.id());
    let iters = 400_000u64;
    let start = Instant::now();
    let mut child = Command::new(loop_bin()?)
        .args(["cfr", &iters.to_string(), &threads.to_string()])
        .arg(fx.tmpfs.path("src4k"))
        .arg(fx.tmpfs.path("ingest"))
        .arg("4096")
        .stdout(Stdio::null())
        .spawn()?;
    let mut peak = 0;
    while child.try_wait()?.is_none() {
        peak = peak.max(proc_status_kib(d.child.id(), "VmRSS:"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = start.elapsed().as_secs_f64();
    // Let the daemon finish what the ring buffer holds.
    std::thread::sleep(Duration::from_millis(500));
    let after = scrape(&d.metrics)?;
    let cpu = cpu_seconds(d.child.id()) - cpu0;
    let delta = |p: &str| sum_samples(&after, p) - sum_samples(&before, p);
    let calls = delta(&format!("{CALLS_TOTAL}{{"));
    let received = delta(EVENTS_RECEIVED_TOTAL);
    let lost = delta(EVENTS_LOST_TOTAL);
    let made = (iters * threads) as f64;
    Ok(Ingest {
        daemon,
        threads,
        calls,
        seconds,
        received,
        lost,
        // Counts come from the kernel, so they are exact whatever was read.
        counted_exactly: calls == made,
        peak_rss_kib: peak,
        cpu_per_100k: cpu / (made / 100_000.0),
    })
}

/// The criterion micro-benchmarks of the userspace hot path: (name, time).
pub fn criterion() -> Result<Vec<(String, String)>> {
    let out = output(Command::new("cargo").args([
        "bench",
        "-p",
        "copytrace-microbench",
        "--bench",
        "pipeline",
        "--",
        "--noplot",
        "--warm-up-time",
        "1",
        "--measurement-time",
        "3",
    ]))?;
    let mut rows = Vec::new();
    let mut name = String::new();
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.split_once("time:") {
            let n = if rest.0.trim().is_empty() {
                name.clone()
            } else {
                rest.0.trim().to_string()
            };
            rows.push((n, rest.1.trim().to_string()));
        } else if !t.is_empty()
            && !t.contains(':')
            && !t.starts_with("Found")
            && !t.starts_with("Benchmarking")
        {
            name = t.to_string();
        }
    }
    Ok(rows)
}
