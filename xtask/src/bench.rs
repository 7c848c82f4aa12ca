//! `cargo xtask bench`: copytrace's cost next to the real alternatives, in
//! one run, on real filesystems. Prints a table and writes docs/benchmarks.md.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::provision::{ensure_debs, output, run as sh};

/// Measured runs per cell, after one warm-up run.
const RUNS: usize = 5;

/// bpftrace doing the tracepoint back-end's work: resolve both fds through
/// the task's fd table at entry, read inode/superblock fields, emit at exit.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_copy_file_range
{
  @start[tid] = nsecs;
  $fdt = curtask->files->fdt;
  $fi = *($fdt->fd + args->fd_in);
  $fo = *($fdt->fd + args->fd_out);
  @ino_in[tid] = $fi->f_inode->i_ino;
  @size_in[tid] = $fi->f_inode->i_size;
  @magic_in[tid] = $fi->f_inode->i_sb->s_magic;
  @pos_in[tid] = $fi->f_pos;
  @ino_out[tid] = $fo->f_inode->i_ino;
  @magic_out[tid] = $fo->f_inode->i_sb->s_magic;
  @len[tid] = args->len;
}
tracepoint:syscalls:sys_exit_copy_file_range
/@start[tid]/
{
  printf("%d %d %s %d %d %d %d %d %d %d %d %d\n", pid, tid, comm, args->ret, @len[tid],
    nsecs - @start[tid], @ino_in[tid], @size_in[tid], @magic_in[tid], @pos_in[tid],
    @ino_out[tid], @magic_out[tid]);
  delete(@start[tid]); delete(@ino_in[tid]); delete(@size_in[tid]); delete(@magic_in[tid]);
  delete(@pos_in[tid]); delete(@ino_out[tid]); delete(@magic_out[tid]); delete(@len[tid]);
}
"#;

/// Kills and reaps a helper process when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Median, min and max of runs.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    Stats {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Mounted filesystems with source files, unmounted on drop.
struct Fixture {
    root: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Fixture {
    fn new(root: &Path) -> Result<Self> {
        let _ = std::fs::create_dir_all(root);
        let mut f = Fixture {
            root: root.to_path_buf(),
            mounts: Vec::new(),
        };
        let tmpfs = root.join("tmpfs");
        std::fs::create_dir_all(&tmpfs)?;
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
            .arg(&tmpfs))?;
        f.mounts.push(tmpfs);
        let ext4 = root.join("ext4");
        std::fs::create_dir_all(&ext4)?;
        let img = root.join("ext4.img");
        std::fs::File::create(&img)?.set_len(256 << 20)?;
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&ext4))?;
        f.mounts.push(ext4);
        for m in &f.mounts {
            for (name, len) in [("src4k", 4096usize), ("src1m", 1 << 20)] {
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                std::fs::write(m.join(name), data)?;
            }
        }
        Ok(f)
    }

    fn dir(&self, fs: &str) -> PathBuf {
        self.root.join(fs)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = std::fs::remove_file(self.root.join("ext4.img"));
    }
}

/// One measured workload.
struct Workload {
    name: String,
    args: Vec<String>,
    iters: u64,
}

fn workloads(fx: &Fixture) -> Vec<Workload> {
    let mut w = Vec::new();
    for fs in ["tmpfs", "ext4"] {
        for (size, src, len, iters) in [
            ("4 KiB", "src4k", 4096, 100_000u64),
            ("1 MiB", "src1m", 1 << 20, 3_000),
        ] {
            let d = fx.dir(fs);
            w.push(Workload {
                name: format!("copy_file_range {size} {fs}"),
                args: vec![
                    "cfr".into(),
                    String::new(), // iterations, filled per run
                    "1".into(),
                    d.join(src).display().to_string(),
                    d.join("dst").display().to_string(),
                    len.to_string(),
                ],
                iters,
            });
        }
    }
    w.push(Workload {
        name: "unrelated openat+read+write+close".into(),
        args: vec!["unrelated".into(), String::new(), "1".into()],
        iters: 200_000,
    });
    w
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Untraced,
    Copytrace,
    Bpftrace,
    Strace,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Copytrace => "copytrace",
            Mode::Bpftrace => "bpftrace",
            Mode::Strace => "strace -f",
        }
    }
}

/// Runs the loop child once; returns ns per operation.
fn run_loop(mode: Mode, w: &Workload, iters: u64) -> Result<f64> {
    let me = std::env::current_exe()?;
    let mut args = w.args.clone();
    args[1] = iters.to_string();
    let mut cmd = if mode == Mode::Strace {
        let mut c = Command::new("strace");
        c.args([
            "-f",
            "-qq",
            "-e",
            "trace=copy_file_range",
            "-o",
            "/dev/null",
        ])
        .arg(&me);
        c
    } else {
        Command::new(&me)
    };
    let out = output(cmd.arg("bench-loop").args(&args))?;
    out.trim()
        .parse()
        .with_context(|| format!("bench-loop printed {out:?}"))
}

fn measure(mode: Mode, w: &Workload) -> Result<Stats> {
    let iters = if mode == Mode::Strace {
        (w.iters / 10).max(100)
    } else {
        w.iters
    };
    run_loop(mode, w, iters / 5)?; // warm-up
    let runs = (0..RUNS)
        .map(|_| run_loop(mode, w, iters))
        .collect::<Result<Vec<_>>>()?;
    Ok(stats(runs))
}

/// A running `copytrace run`, its metrics address and start-up time.
struct Daemon {
    child: Child,
    metrics: String,
    ready: Duration,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_copytrace(root: &Path) -> Result<Daemon> {
    let sock = root.join("notify.sock");
    let _ = std::fs::remove_file(&sock);
    let notify = UnixDatagram::bind(&sock)?;
    notify.set_read_timeout(Some(Duration::from_secs(30)))?;
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let started = Instant::now();
    let child = Command::new("target/release/copytrace")
        .args([
            "run",
            "--print",
            "none",
            "--no-tail",
            "--metrics-listen",
            &metrics,
        ])
        // Only this process's children (the loops): counts can be checked exactly.
        .args(["--pid", &std::process::id().to_string()])
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

fn start_bpftrace(root: &Path) -> Result<Child> {
    let script = root.join("copytrace.bt");
    std::fs::write(&script, BPFTRACE_SCRIPT)?;
    // bpftrace prints "Attaching N probes..." where its output goes; read
    // (and discard) that output on stdout, as copytrace reads its events.
    let mut child = Command::new("bpftrace")
        .arg(&script)
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
    rx.recv_timeout(Duration::from_secs(60))
        .context("bpftrace did not attach within 60 s")?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

fn scrape(addr: &str) -> Result<String> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / hz
}

/// Average run time per call of each copytrace program (kernel.bpf_stats_enabled).
fn program_costs() -> Vec<(String, f64)> {
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
            (name.starts_with("cfr_") && cnt > 0.0).then(|| (name, ns / cnt))
        })
        .collect()
}

/// Ingest under N threads of 4 KiB tmpfs copies.
struct Ingest {
    threads: u64,
    calls: f64,
    seconds: f64,
    received: f64,
    lost: f64,
    counted_exactly: bool,
    peak_rss_kib: u64,
    cpu_per_100k: f64,
}

fn ingest(d: &Daemon, fx: &Fixture, threads: u64) -> Result<Ingest> {
    let me = std::env::current_exe()?;
    let dir = fx.dir("tmpfs");
    // Let the previous run's last events arrive (the reader polls every 50 ms).
    std::thread::sleep(Duration::from_millis(500));
    let before = scrape(&d.metrics)?;
    let cpu0 = cpu_seconds(d.child.id());
    let iters = 400_000u64;
    let start = Instant::now();
    let mut child = Command::new(&me)
        .arg("bench-loop")
        .args(["cfr", &iters.to_string(), &threads.to_string()])
        .arg(dir.join("src4k"))
        .arg(dir.join("ingest"))
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
    let delta = |p: &str| metric(&after, p) - metric(&before, p);
    let calls = delta("copytrace_calls_total{");
    let received = delta("copytrace_events_received_total");
    let lost = delta("copytrace_events_lost_total");
    let made = (iters * threads) as f64;
    Ok(Ingest {
        threads,
        calls,
        seconds,
        received,
        lost,
        counted_exactly: calls == made && received + lost == made,
        peak_rss_kib: peak,
        cpu_per_100k: cpu / (received.max(1.0) / 100_000.0),
    })
}

fn criterion() -> Result<Vec<(String, String)>> {
    let out = output(Command::new("cargo").args([
        "bench",
        "-p",
        "copytrace",
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

fn machine() -> (String, String, String) {
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
        .unwrap_or_default();
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    (kernel, cpu, date.trim().to_string())
}

/// Runs every benchmark and writes docs/benchmarks.md.
pub fn bench() -> Result<()> {
    ensure_debs(&["bpftrace", "bpftool", "strace"])?;
    sh(Command::new("cargo").args(["build", "--release", "-p", "copytrace", "-p", "xtask"]))?;
    let root = PathBuf::from("target/bench");
    let fx = Fixture::new(&root)?;
    let ws = workloads(&fx);
    let modes = [
        Mode::Untraced,
        Mode::Copytrace,
        Mode::Bpftrace,
        Mode::Strace,
    ];
    let mut table: Vec<Vec<Option<Stats>>> = vec![vec![None; modes.len()]; ws.len()];

    let mut ready = Vec::new();
    let mut idle_rss = 0;
    let mut ingests = Vec::new();
    let mut costs = Vec::new();
    for (mi, mode) in modes.iter().enumerate() {
        eprintln!("xtask: bench: {}", mode.name());
        let mut daemon = None;
        let mut _bpftrace = None;
        match mode {
            Mode::Copytrace => {
                let d = start_copytrace(&root)?;
                std::thread::sleep(Duration::from_secs(2));
                idle_rss = proc_status_kib(d.child.id(), "VmRSS:");
                daemon = Some(d);
            }
            Mode::Bpftrace => _bpftrace = Some(KillOnDrop(start_bpftrace(&root)?)),
            _ => {}
        }
        for (wi, w) in ws.iter().enumerate() {
            if *mode == Mode::Strace && w.args[0] == "unrelated" {
                continue;
            }
            table[wi][mi] = Some(measure(*mode, w)?);
        }
        if *mode == Mode::Copytrace {
            if let Some(d) = &daemon {
                // Per-program cost over one more 4 KiB run, with kernel stats on.
                sh(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
                let r = run_loop(*mode, &ws[0], ws[0].iters);
                sh(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]))?;
                r?;
                costs = program_costs();
                for threads in [1, 2] {
                    ingests.push(ingest(d, &fx, threads)?);
                }
            }
        }
    }
    for _ in 0..RUNS {
        let d = start_copytrace(&root)?;
        ready.push(d.ready.as_secs_f64() * 1000.0);
    }
    let ready = stats(ready);
    let micro = criterion().unwrap_or_else(|e| {
        eprintln!("xtask: criterion benchmarks failed: {e:#}");
        Vec::new()
    });

    let (kernel, cpu, date) = machine();
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n\nMeasured by `cargo xtask bench` on {date}: Linux {kernel}, {cpu}, 2 cores.");
    let _ = writeln!(md, "copytrace used the **tracepoint** back-end (this kernel refuses fentry). Median of {RUNS} runs after a warm-up; range in brackets.\n");
    let _ = writeln!(
        md,
        "## Per-call cost\n\n| workload | {} |\n|---|---|---|---|---|",
        modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for (wi, w) in ws.iter().enumerate() {
        let base = table[wi][0].map(|s| s.median).unwrap_or(f64::NAN);
        let cells: Vec<String> = table[wi]
            .iter()
            .map(|c| match c {
                Some(s) => format!(
                    "{:.0} ns [{:.0}–{:.0}] ({:.2}×)",
                    s.median,
                    s.min,
                    s.max,
                    s.median / base
                ),
                None => "—".into(),
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", w.name, cells.join(" | "));
    }
    let _ = writeln!(md, "\n## Ingest (copytrace daemon, 4 KiB tmpfs copies)\n\n| threads | calls | calls/s | events delivered | events lost | counted exactly | peak RSS | CPU s per 100k events |\n|---|---|---|---|---|---|---|---|");
    for i in &ingests {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} ({:.1} %) | {} | {:.1} MiB | {:.3} |",
            i.threads,
            i.calls,
            i.calls / i.seconds,
            i.received,
            i.lost,
            100.0 * i.lost / i.calls.max(1.0),
            if i.counted_exactly { "yes" } else { "NO" },
            i.peak_rss_kib as f64 / 1024.0,
            i.cpu_per_100k
        );
    }
    if !costs.is_empty() {
        let _ = writeln!(
            md,
            "\n## Kernel programs (bpf_stats, 4 KiB tmpfs copies)\n\n| program | ns per run |\n|---|---|"
        );
        for (name, ns) in &costs {
            let _ = writeln!(md, "| {name} | {ns:.0} |");
        }
    }
    let _ = writeln!(md, "\n## Daemon\n\n| measure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| start to READY=1 | {:.0} ms [{:.0}–{:.0}] |",
        ready.median, ready.min, ready.max
    );
    let _ = writeln!(md, "| RSS idle | {:.1} MiB |", idle_rss as f64 / 1024.0);
    if !micro.is_empty() {
        let _ = writeln!(md, "\n## Decode and classify (criterion)\n\n| benchmark | time [low est high] |\n|---|---|");
        for (n, t) in &micro {
            let _ = writeln!(md, "| {n} | {t} |");
        }
    }
    print!("{md}");
    std::fs::write("docs/benchmarks.md", &md).context("writing docs/benchmarks.md")?;
    eprintln!("xtask: wrote docs/benchmarks.md");
    Ok(())
}
