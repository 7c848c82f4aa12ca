//! Taking the measurements: fixtures on real filesystems, the loop child,
//! the tracers around it, the daemon's resources and the kernel programs'
//! own cost.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use copytrace_testkit::fs::Mount;
use copytrace_testkit::net::{free_port, http_get, sum_samples};
use copytrace_testkit::KillOnDrop;

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
        let mut c = Command::new("strace");
        c.args([
            "-f",
            "-qq",
            "-e",
            "trace=copy_file_range",
            "-o",
            "/dev/null",
        ])
        .arg(loop_bin()?);
        c
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

/// A running `copytrace run`, its metrics address and start-up time.
pub struct Daemon {
    pub child: Child,
    pub metrics: String,
    pub ready: Duration,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Which processes a benchmark's daemon watches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Every process: the daemon's default, whose cost the per-call
    /// figures report.
    Machine,
    /// Only this process and its children (`--pid`), so counts can be
    /// checked exactly; each entry then also checks the caller's parents.
    OnlyUs,
}

/// Starts `copytrace run` watching `watch` and waits for READY=1; the tail
/// socket is served at `tail` when given.
pub fn start_copytrace(
    root: &Path,
    watch: Watch,
    extra: &[&str],
    tail: Option<&Path>,
) -> Result<Daemon> {
    let sock = root.join("notify.sock");
    let _ = std::fs::remove_file(&sock);
    let notify = UnixDatagram::bind(&sock)?;
    notify.set_read_timeout(Some(Duration::from_secs(30)))?;
    let metrics = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let child = Command::new("target/release/copytrace")
        .args(["run", "--metrics-listen", &metrics])
        // The callers' own --print wins; by default the daemon only counts.
        .args(if extra.contains(&"--print") {
            &[][..]
        } else {
            &["--print", "none"][..]
        })
        .args(match tail {
            Some(socket) => vec!["--socket".into(), socket.as_os_str().to_owned()],
            None => vec!["--no-tail".into()],
        })
        .args(match watch {
            Watch::OnlyUs => vec!["--pid".to_string(), std::process::id().to_string()],
            Watch::Machine => Vec::new(),
        })
        .args(extra)
        .env("NOTIFY_SOCKET", &sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start copytrace")?;
    let mut buf = [0u8; 256];
    loop {
        let n = notify.recv(&mut buf).context("no READY=1 from copytrace")?;
        if buf[..n].starts_with(b"READY=1") {
            break;
        }
    }
    Ok(Daemon {
        child,
        metrics,
        ready: started.elapsed(),
    })
}

/// Starts bpftrace with a script doing the tracepoint back-end's work, and
/// waits until it attached.
pub fn start_bpftrace(root: &Path) -> Result<Child> {
    let script = root.join("copytrace.bt");
    std::fs::write(&script, include_str!("copytrace.bt"))?;
    attached_bpftrace(Command::new("bpftrace").arg(&script))
}

/// Starts bpftrace with empty programs on the two copy_file_range
/// tracepoints, and waits until it attached.
pub fn start_empty_tracepoints() -> Result<Child> {
    attached_bpftrace(Command::new("bpftrace").args([
        "-e",
        "tracepoint:syscalls:sys_enter_copy_file_range { } \
         tracepoint:syscalls:sys_exit_copy_file_range { }",
    ]))
}

/// Starts bpftrace and waits until it attached. It prints "Attaching N
/// probes..." where its output goes; read (and discard) that output on
/// stdout, as copytrace reads its events.
fn attached_bpftrace(cmd: &mut Command) -> Result<Child> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start bpftrace")?;
    let out = child.stdout.take().context("bpftrace stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("Attaching") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("bpftrace did not attach within 60 s");
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

/// What this machine charges a tracepoint program for its building blocks:
/// bpftrace one-liners on `sys_enter_getppid`, each timed by bpf_stats over
/// [`RUNS`] passes of getppid calls from this process. (bpftrace's own
/// prologue is in every figure: read them against the empty program.)
pub fn machine_floor() -> Result<Vec<(&'static str, Stats)>> {
    const CALLS: usize = 200_000;
    let cases: [(&str, &str); 6] = [
        ("empty program", "{ }"),
        (
            "clock read (bpf_ktime_get_ns)",
            "{ $t = nsecs; if ($t == 1) { exit(); } }",
        ),
        (
            "one kernel read (bpf_probe_read_kernel)",
            "{ $p = curtask->real_parent; if ($p == 0) { exit(); } }",
        ),
        ("hash lookup by tid", "{ if (@m[tid] == 7) { exit(); } }"),
        ("hash update by tid", "{ @m[tid] = 1; }"),
        (
            "hash update and delete by tid",
            "{ @m[tid] = 1; delete(@m[tid]); }",
        ),
    ];
    let mut out = Vec::new();
    for (what, body) in cases {
        let script = format!("BEGIN {{ @m[0] = 0; }} tracepoint:syscalls:sys_enter_getppid {body}");
        let _bpftrace = KillOnDrop(attached_bpftrace(
            Command::new("bpftrace").args(["-e", &script]),
        )?);
        let costs = costs_of("sys_enter_getp", || {
            for _ in 0..CALLS {
                // SAFETY: getppid has no preconditions.
                unsafe { libc::getppid() };
            }
            Ok(())
        })?;
        if let Some(p) = costs.into_iter().max_by(|a, b| a.runs.total_cmp(&b.runs)) {
            out.push((what, p.ns_per_run));
        }
    }
    Ok(out)
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

/// One copytrace program's runs while a case ran.
#[derive(Debug, Clone)]
pub struct ProgramCost {
    pub name: String,
    /// Average run time per run: median and range over [`RUNS`] passes.
    pub ns_per_run: Stats,
    /// Runs in one pass.
    pub runs: f64,
}

/// Average run time per run of each copytrace program while `f` runs.
pub fn program_costs(f: impl Fn() -> Result<()>) -> Result<Vec<ProgramCost>> {
    costs_of("cfr_", f)
}

/// Average run time per run of each program named `prefix…` while `f` runs
/// (kernel.bpf_stats_enabled; bpftool reads the totals), over [`RUNS`]
/// passes: the machine's neighbours move one pass's figures by a fifth.
fn costs_of(prefix: &str, f: impl Fn() -> Result<()>) -> Result<Vec<ProgramCost>> {
    let mut passes: Vec<Vec<(String, f64, f64)>> = Vec::new();
    for _ in 0..RUNS {
        let before = program_totals(prefix);
        run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
        let r = f();
        run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]))?;
        r?;
        let after = program_totals(prefix);
        passes.push(
            after
                .into_iter()
                .filter_map(|(name, (ns, cnt))| {
                    let (ns0, cnt0) = before
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or((0.0, 0.0), |(_, v)| *v);
                    let runs = cnt - cnt0;
                    (runs > 0.0).then(|| (name, (ns - ns0) / runs, runs))
                })
                .collect(),
        );
    }
    let mut names: Vec<String> = passes.iter().flatten().map(|(n, _, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|name| {
            let of = passes.iter().flatten().filter(|(n, _, _)| *n == name);
            let ns: Vec<f64> = of.clone().map(|(_, ns, _)| *ns).collect();
            let runs = of.map(|(_, _, r)| *r).fold(0.0, f64::max);
            ProgramCost {
                name,
                ns_per_run: stats(ns),
                runs,
            }
        })
        .collect())
}

/// (run_time_ns, run_cnt) of each loaded program whose name starts with `prefix`.
fn program_totals(prefix: &str) -> Vec<(String, (f64, f64))> {
    let Ok(text) = output(Command::new("bpftool").args(["prog", "show"])) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = |k: &str| w.iter().position(|x| *x == k).and_then(|i| w.get(i + 1));
            let name = at("name")?.to_string();
            let ns: f64 = at("run_time_ns")?.parse().ok()?;
            let cnt: f64 = at("run_cnt")?.parse().ok()?;
            name.starts_with(prefix).then_some((name, (ns, cnt)))
        })
        .collect()
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
    let calls = delta("copytrace_calls_total{");
    let received = delta("copytrace_events_received_total");
    let lost = delta("copytrace_events_lost_total");
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
