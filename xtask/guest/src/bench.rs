//! The per-call benchmark inside a guest: the same loops as the host's
//! `cargo xtask bench` (`/bin/bench-loop`), untraced and under copytrace on
//! each back-end the guest's kernel allows. TCG stretches every absolute
//! time, so the host reports each back-end as a ratio to the untraced
//! blocks measured just before and after it.
//!
//! Each result is one `CT-BENCH mode workload: median min max prog` line:
//! nanoseconds per operation over [`PASSES`] passes after a warm-up, and
//! the daemon's BPF programs' run time per operation (0 untraced).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use copytrace_testkit::daemon::Daemon;
use copytrace_testkit::fs::{write_file, Mount};

use copytrace_guest::console::Kind;
use copytrace_guest::report;

/// Measured passes per workload and mode.
const PASSES: usize = 7;

/// One loop: its key in the report and its bench-loop arguments.
struct Workload {
    key: &'static str,
    /// Arguments after `bench-loop WORKLOAD ITERS THREADS`.
    args: Vec<String>,
    kind: &'static str,
    /// Iterations per pass: a pass takes a second or two under TCG.
    iters: u64,
}

fn workloads(tmpfs: &Mount, ext4: &Mount) -> Vec<Workload> {
    let copies = [
        ("4k-tmpfs", tmpfs, "src4k", 4096, 20_000),
        ("1m-tmpfs", tmpfs, "src1m", 1 << 20, 300),
        ("4k-ext4", ext4, "src4k", 4096, 20_000),
        ("1m-ext4", ext4, "src1m", 1 << 20, 300),
    ];
    let mut w: Vec<Workload> = copies
        .into_iter()
        .map(|(key, m, src, len, iters)| {
            write_file(&m.path(src), len);
            Workload {
                key,
                args: vec![
                    m.path(src).display().to_string(),
                    m.path("dst").display().to_string(),
                    len.to_string(),
                ],
                kind: "cfr",
                iters,
            }
        })
        .collect();
    w.push(Workload {
        key: "unrelated",
        args: Vec::new(),
        kind: "unrelated",
        iters: 30_000,
    });
    w
}

/// One pass of a loop: nanoseconds per operation.
fn pass(w: &Workload) -> Result<f64> {
    let out = Command::new("/bin/bench-loop")
        .arg(w.kind)
        .arg(w.iters.to_string())
        .arg("1")
        .args(&w.args)
        .output()
        .context("run /bin/bench-loop")?;
    if !out.status.success() {
        bail!(
            "bench-loop {}: {}",
            w.key,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("bench-loop printed {text:?}"))
}

/// Total run time, in ns, of every BPF program process `pid` holds, from
/// its fds' fdinfo (kernel.bpf_stats_enabled must be on).
fn program_run_time(pid: u32) -> f64 {
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return total;
    };
    for e in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if !info.contains("prog_tag:") {
            continue;
        }
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("run_time_ns:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    total
}

fn bpf_stats(on: bool) -> Result<()> {
    std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if on { "1" } else { "0" },
    )
    .context("set kernel.bpf_stats_enabled")
}

/// Measures every workload under one mode (`daemon`: copytrace's pid).
fn measure(mode: &str, ws: &[Workload], daemon: Option<u32>) -> Result<()> {
    for w in ws {
        pass(w)?;
        let mut ns: Vec<f64> = (0..PASSES).map(|_| pass(w)).collect::<Result<_>>()?;
        ns.sort_by(f64::total_cmp);
        // Program time, in a pass of its own: bpf_stats adds two clock
        // reads per program run, which the timed passes above must not pay.
        let prog = match daemon {
            Some(pid) => {
                let before = program_run_time(pid);
                bpf_stats(true)?;
                let r = pass(w);
                bpf_stats(false)?;
                r?;
                let after = program_run_time(pid);
                (after - before) / w.iters as f64
            }
            None => 0.0,
        };
        report::line(
            Kind::Bench,
            &format!("{mode} {}", w.key),
            &format!(
                "{:.1} {:.1} {:.1} {prog:.1}",
                ns[PASSES / 2],
                ns[0],
                ns[PASSES - 1]
            ),
        );
    }
    Ok(())
}

/// Runs the benchmark: untraced, then each back-end that attaches, with an
/// untraced block again after each (`untraced-0`, `fentry`, `untraced-1`,
/// `tracepoint`, `untraced-2`): a guest under TCG drifts by tens of per
/// cent within a minute, so each back-end is compared with the untraced
/// blocks on either side of it.
pub fn run(backends: &[String], refusal: impl Fn(&str) -> Option<String>) -> Result<()> {
    let base = Path::new("/tmp/bench");
    std::fs::create_dir_all(base)?;
    let tmpfs = Mount::tmpfs(base, "64m");
    let ext4 = Mount::ext4(base, 32);
    let ws = workloads(&tmpfs, &ext4);
    measure("untraced-0", &ws, None)?;
    for (i, b) in backends.iter().enumerate() {
        if let Some(why) = refusal(b) {
            report::line(Kind::Refused, b, &why);
            continue;
        }
        let mut d = Daemon::builder("/bin/copytrace")
            .args([
                "--probe",
                b,
                "--print",
                "none",
                "--no-tail",
                "--metrics-listen",
                "127.0.0.1:9977",
                // Only the loops, as on the host (init is their parent).
                "--pid",
                "1",
            ])
            .start();
        measure(b, &ws, Some(d.child.id()))?;
        d.signal(libc::SIGTERM);
        if d.wait_exit(60) != Some(0) {
            bail!("copytrace --probe {b} exited badly: {}", d.log());
        }
        measure(&format!("untraced-{}", i + 1), &ws, None)?;
    }
    Ok(())
}
