//! `cargo xtask soak`: copy_file_range at full speed from every core for
//! minutes, with tail clients that never read or keep reconnecting and a
//! scrape every 100 ms, against one daemon. It reports what a long run
//! reveals and a short benchmark hides: memory growth (the RSS slope),
//! counts against calls made (must be exact), failed scrapes (must be 0)
//! and the daemon's CPU per 100k calls.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use copytrace_common::metric_names::{CALLS_TOTAL, EVENTS_LOST_TOTAL, EVENTS_RECEIVED_TOTAL};
use copytrace_testkit::net::{http_get, sum_samples};

use super::measure::{build_release, cpu_seconds, loop_bin, proc_status_kib, Fixture};
use super::tracers::{start_copytrace, Watch};
use crate::cmd::{echo, say};

/// Tail clients that say hello and then never read.
const STUCK_CLIENTS: usize = 10;
/// Tail clients that connect, read for a moment and leave, in a loop; the
/// first two ask for every call, so the kernel side's switch flips with them.
const RECONNECTING_CLIENTS: usize = 10;
/// Calls per thread per loop child (one child per chunk, so every call
/// made is known when the chunk ends).
const CHUNK: u64 = 50_000;
/// Silent zero copies made between chunks, so the tail has calls to send.
const SILENT_PER_CHUNK: usize = 100;

/// What a soak measured.
struct Report {
    seconds: f64,
    calls_made: u64,
    calls_counted: f64,
    received: f64,
    lost: f64,
    scrapes: u64,
    failed_scrapes: u64,
    rss_start_kib: u64,
    rss_end_kib: u64,
    rss_slope_kib_per_min: f64,
    cpu_seconds: f64,
    reconnects: u64,
}

/// Runs the soak for `seconds` and prints its figures; fails when counts
/// are not exact or a scrape failed.
pub fn soak(seconds: u64) -> Result<()> {
    build_release()?;
    let root = PathBuf::from("target/soak");
    let fx = Fixture::new(&root)?;
    let socket = root.join("tail.sock");
    let daemon = start_copytrace(&root, Watch::OnlyUs, &[], Some(&socket))?;
    let pid = daemon.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    say(&format!(
        "soak: {seconds} s, {threads} copying thread(s), {STUCK_CLIENTS} stuck and {RECONNECTING_CLIENTS} reconnecting tail clients, a scrape every 100 ms"
    ));

    let stuck: Vec<UnixStream> = (0..STUCK_CLIENTS)
        .filter_map(|i| hello(&socket, i % 2 == 0).ok())
        .collect();
    if stuck.len() != STUCK_CLIENTS {
        bail!("soak: only {} stuck clients could connect", stuck.len());
    }
    let reconnects = Arc::new(AtomicU64::new(0));
    let mut helpers = Vec::new();
    for i in 0..RECONNECTING_CLIENTS {
        let (stop, reconnects, socket) = (stop.clone(), reconnects.clone(), socket.clone());
        helpers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = hello(&socket, i < 2) {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut lines = BufReader::new(s).lines();
                    for _ in 0..20 {
                        if lines.next().is_none() {
                            break;
                        }
                    }
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    let scrapes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    {
        let (stop, scrapes, failed) = (stop.clone(), scrapes.clone(), failed.clone());
        let addr = daemon.metrics.clone();
        helpers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                scrapes.fetch_add(1, Ordering::Relaxed);
                if !matches!(http_get(&addr, "/metrics"), Some((200, _))) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }

    let before = scrape_ok(&daemon.metrics)?;
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let mut rss = vec![(0.0, proc_status_kib(pid, "VmRSS:"))];
    let mut made = 0u64;
    let mut last_sample = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        let status = Command::new(loop_bin()?)
            .args(["cfr", &CHUNK.to_string(), &threads.to_string()])
            .arg(fx.tmpfs.path("src4k"))
            .arg(fx.tmpfs.path("soak"))
            .arg("4096")
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("soak: the copy loop failed ({status})");
        }
        made += CHUNK * threads;
        copytrace_testkit::fs::silent_copies(SILENT_PER_CHUNK);
        made += SILENT_PER_CHUNK as u64;
        if last_sample.elapsed() >= Duration::from_secs(5) {
            rss.push((
                start.elapsed().as_secs_f64(),
                proc_status_kib(pid, "VmRSS:"),
            ));
            last_sample = Instant::now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the ring buffer drain (the reader polls every 50 ms).
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_seconds(pid) - cpu0;
    let after = scrape_ok(&daemon.metrics)?;
    stop.store(true, Ordering::Relaxed);
    for h in helpers {
        let _ = h.join();
    }
    drop(stuck);
    let delta = |p: &str| sum_samples(&after, p) - sum_samples(&before, p);
    let report = Report {
        seconds: elapsed,
        calls_made: made,
        calls_counted: delta(&format!("{CALLS_TOTAL}{{")),
        received: delta(EVENTS_RECEIVED_TOTAL),
        lost: delta(EVENTS_LOST_TOTAL),
        scrapes: scrapes.load(Ordering::Relaxed),
        failed_scrapes: failed.load(Ordering::Relaxed),
        rss_start_kib: rss.first().map_or(0, |r| r.1),
        rss_end_kib: proc_status_kib(pid, "VmRSS:"),
        rss_slope_kib_per_min: slope(&rss[rss.len() / 10..]) * 60.0,
        cpu_seconds: cpu,
        reconnects: reconnects.load(Ordering::Relaxed),
    };
    drop(daemon);
    print(&report);
    if report.calls_counted != report.calls_made as f64 || report.failed_scrapes != 0 {
        bail!("soak: counts were not exact or a scrape failed");
    }
    Ok(())
}

/// Connects to the tail socket and says hello.
fn hello(socket: &Path, all: bool) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(socket)?;
    writeln!(
        s,
        r#"{{"type":"hello","data":{{"version":1,"filter":{{"all":{all}}}}}}}"#
    )?;
    Ok(s)
}

fn scrape_ok(addr: &str) -> Result<String> {
    match http_get(addr, "/metrics") {
        Some((200, body)) => Ok(body),
        other => bail!("soak: scrape of {addr} failed: {other:?}"),
    }
}

/// Least-squares slope of (seconds, KiB) samples, in KiB per second.
fn slope(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let sxx: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

fn print(r: &Report) {
    let per_100k = r.cpu_seconds / (r.calls_made.max(1) as f64 / 100_000.0);
    echo(&format!(
        "soak: {:.0} s\n\
         calls made        {}\n\
         calls counted     {} ({})\n\
         events received   {} (lost {}; suspicious calls, and every call while an --all client is connected)\n\
         scrapes           {} ({} failed)\n\
         tail reconnects   {}\n\
         RSS               {} KiB -> {} KiB; slope {:+.1} KiB/min (after the first tenth)\n\
         daemon CPU        {:.2} s; {:.3} s per 100k calls ({:.0} calls/s)",
        r.seconds,
        r.calls_made,
        r.calls_counted,
        if r.calls_counted == r.calls_made as f64 {
            "exact"
        } else {
            "NOT EXACT"
        },
        r.received,
        r.lost,
        r.scrapes,
        r.failed_scrapes,
        r.reconnects,
        r.rss_start_kib,
        r.rss_end_kib,
        r.rss_slope_kib_per_min,
        r.cpu_seconds,
        per_100k,
        r.calls_made as f64 / r.seconds,
    ));
}
