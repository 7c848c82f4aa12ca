//! A traced user attacks the watcher: each test mounts one attack from
//! `../shared/attacks` (as user `nobody`, against a daemon with only the
//! shipped unit's capabilities) and checks that the daemon stays up,
//! keeps counting exactly, keeps answering `/metrics`, and that the attack
//! costs at most the attacker's own stacks.
//!
//! The attack executables are written byte by byte
//! ([`copytrace_testkit::elf`]), so the minimal matrix guests run them too;
//! expected values come from the files themselves (their size, their
//! symbol), from libc, and from the kernel's own counts.
//!
//! An attacker that exits at once leaves no memory map to read, so the
//! daemon places its frames in the executable the kernel recorded (as it
//! always must under the unit, whose ProtectProc hides other processes);
//! one that lingers has its map read. Both paths are attacked.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use copytrace_testkit::elf::{self, Spec, ENTRY_NAME};
use serde_json::Value;
use support::{daemon, free_port, http_get, require_root, sample, scratch_dir, suite, Daemon};

/// The user attacks run as.
const NOBODY: u32 = 65534;

/// Within this a scrape must answer while nothing holds the endpoint.
const SCRAPE_QUICKLY: Duration = Duration::from_secs(1);

/// Prometheus's default scrape timeout.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon as the unit runs it, following this test process's
/// descendants, printing every call as JSON and serving metrics.
struct Target {
    daemon: Daemon,
    addr: String,
}

impl Target {
    fn start() -> Self {
        Self::start_with(true)
    }

    fn start_with(mut unit_capabilities: bool) -> Self {
        // Debian's kernels refuse perf_event_open of a tracepoint without
        // CAP_SYS_ADMIN (their perf_event_paranoid 3; fentry needs no perf
        // event): in the guests the tracepoint back-end runs as full root.
        let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
            .ok()
            .and_then(|v| v.trim().parse::<i32>().ok());
        let tracepoint = suite::probe().as_deref() == Some("tracepoint");
        if unit_capabilities
            && tracepoint
            && (suite::in_guest() || paranoid.is_some_and(|p| p >= 3))
        {
            eprintln!(
                "perf_event_paranoid {paranoid:?}: the tracepoint back-end needs CAP_SYS_ADMIN on this kernel; the daemon runs as full root"
            );
            unit_capabilities = false;
        }
        let addr = format!("127.0.0.1:{}", free_port());
        let mut b = daemon()
            .events()
            .die_with_parent()
            .args(["--pid", &std::process::id().to_string()])
            .args(["--metrics-listen", &addr, "--no-tail"]);
        if unit_capabilities {
            b = b.unit_capabilities();
        }
        let daemon = b.start();
        if unit_capabilities {
            let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
                .expect("daemon status");
            let eff = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
                .expect("CapEff");
            let ptrace = 1u64 << 19; // CAP_SYS_PTRACE, linux/capability.h
            assert_eq!(
                eff & ptrace,
                0,
                "the daemon may not ptrace: CapEff {eff:#x}"
            );
        }
        Self { daemon, addr }
    }

    /// Scrapes `/metrics`, failing the test past `limit`.
    fn scrape_within(&self, limit: Duration) -> String {
        let t = Instant::now();
        let got = http_get(&self.addr, "/metrics");
        let took = t.elapsed();
        match got {
            Some((200, body)) if took <= limit => body,
            other => panic!(
                "/metrics: {:?} after {took:?} (limit {limit:?}); log: {}",
                other.map(|(c, _)| c),
                self.daemon.log()
            ),
        }
    }

    fn metric(&self, series: &str) -> f64 {
        sample(&self.scrape_within(SCRAPE_QUICKLY), series).unwrap_or(0.0)
    }

    /// Waits until no record is held for its stack (the daemon's gauge).
    fn wait_released(&self) {
        support::wait_for(120, "the held records released", || {
            (self.metric("copytrace_records_held") == 0.0).then_some(())
        });
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.daemon.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Stops the daemon; every call it printed.
    fn stop(self) -> Vec<Value> {
        self.daemon.stop()
    }
}

/// Calls counted with the `error` verdict, over every filesystem pair.
fn error_calls(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with("copytrace_calls_total{") && l.contains("verdict=\"error\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A directory `nobody` can write, under the test scratch space.
fn attack_dir(tag: &str) -> PathBuf {
    let dir = scratch_dir(tag);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    dir
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).expect("chown nobody");
}

/// Runs `cmd` as nobody, to its end.
fn run_as_nobody(cmd: &mut Command) -> std::process::ExitStatus {
    cmd.uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The attacker's failing calls (`copy_file_range(-1, …, -1, …)`), in order.
fn attack_calls(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["fd_in"] == -1 && e["fd_out"] == -1 && e["uid"] == NOBODY)
        .collect()
}

fn ebadf() -> i64 {
    -i64::from(libc::EBADF)
}

fn cut(e: &Value) -> &str {
    e["stack"]["cut"].as_str().unwrap_or("")
}

fn first_function(e: &Value) -> Option<&str> {
    e["stack"]["frames"][0]["function"].as_str()
}

/// Writes an attack executable owned by `owner`.
fn attack_exe(dir: &Path, name: &str, spec: &Spec, owner: u32) -> PathBuf {
    let exe = dir.join(name);
    elf::write(&exe, spec);
    std::os::unix::fs::chown(&exe, Some(owner), Some(owner)).expect("chown");
    exe
}

#[test]
fn a_binary_whose_debug_info_crashes_the_symbolizer_costs_only_its_stack() {
    require_root();
    let dir = attack_dir("crash");
    // ch_size 2^63 in a compressed .debug_abbrev: blazesym 0.2.7 asks for
    // that capacity and panics. Root-owned, so its debug info is read.
    let bomb = Spec {
        compressed_debug_claims: Some(1 << 63),
        ..Spec::default()
    };
    let crasher = attack_exe(&dir, "crasher", &bomb, 0);
    // The same bytes owned by the attacker: a user's binary never gets its
    // debug info parsed, so its symbol table names it.
    let users = attack_exe(&dir, "users", &bomb, NOBODY);
    let plain = attack_exe(&dir, "plain", &Spec::default(), NOBODY);
    let t = Target::start();
    let before = t.metric("copytrace_symbolizer_starts_total");
    for _ in 0..3 {
        assert!(run_as_nobody(&mut Command::new(&crasher)).success());
        // Each run is a fresh process with its own pid: no stack is reused.
        t.scrape_within(SCRAPE_QUICKLY);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(run_as_nobody(&mut Command::new(&users)).success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(run_as_nobody(&mut Command::new(&plain)).success());
    std::thread::sleep(Duration::from_secs(1));
    let restarts = t.metric("copytrace_symbolizer_starts_total") - before;
    let events = t.stop();
    let calls = attack_calls(&events);
    assert_eq!(
        calls.len(),
        5,
        "every call counted and reported: {events:#?}"
    );
    assert!(calls.iter().all(|c| c["ret"] == ebadf()), "{calls:#?}");
    for c in &calls[..3] {
        assert!(
            cut(c).starts_with("stack not available: the symbolizer"),
            "the crash costs this stack only: {c:#}"
        );
    }
    assert_eq!(first_function(calls[3]), Some(ENTRY_NAME), "{:#}", calls[3]);
    assert_eq!(first_function(calls[4]), Some(ENTRY_NAME), "{:#}", calls[4]);
    assert!(
        restarts >= 2.0,
        "a new symbolizer after each crash: {restarts}"
    );
}

/// `swap` leaves a FIFO or /dev/zero at its executable's name, makes a
/// suspicious call from its own code and lingers `linger_ms`.
fn swapped_executable_is_never_opened(mode: &str, linger_ms: u32, unit_capabilities: bool) {
    require_root();
    let dir = attack_dir(&format!("swap-{mode}-{linger_ms}"));
    let exe = dir.join("swapper");
    std::fs::copy(std::env::current_exe().expect("test binary"), &exe).expect("copy test binary");
    chown_nobody(&exe);
    let t = Target::start_with(unit_capabilities);
    let mut child = support::caller::command_at(&exe, "swap", &[mode, &linger_ms.to_string()]);
    child.uid(NOBODY).gid(NOBODY);
    let mut child = child.spawn().expect("swap");
    // While the attacker lingers, the daemon answers (it never waits on the FIFO).
    std::thread::sleep(Duration::from_millis(1000));
    for _ in 0..3 {
        t.scrape_within(SCRAPE_QUICKLY);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(child.wait().expect("wait").success());
    let rss = t.metric("process_resident_memory_bytes");
    let events = t.stop();
    let calls = attack_calls(&events);
    assert_eq!(calls.len(), 1, "{events:#?}");
    let c = calls[0];
    // The system call instruction is in the executable itself: the first
    // frame is there, and whatever now has its name is never read for it.
    let frame = &c["stack"]["frames"][0];
    assert!(frame["addr"].is_string(), "{c:#}");
    assert!(
        frame["function"].is_null(),
        "nothing at the swapped name is read as the executable: {c:#}"
    );
    assert!(
        !cut(c).is_empty(),
        "the stack says why it is unnamed: {c:#}"
    );
    eprintln!("{mode}: {}", cut(c));
    // /dev/zero was not read into memory.
    assert!(rss < 512.0 * 1024.0 * 1024.0, "resident {rss} bytes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_fifo_at_a_gone_caller_s_executable_name_is_never_opened() {
    swapped_executable_is_never_opened("fifo", 0, true);
}

#[test]
fn a_fifo_at_a_live_caller_s_mapped_name_is_never_opened() {
    swapped_executable_is_never_opened("fifo", 3000, false);
}

#[test]
fn dev_zero_at_the_executable_s_name_is_never_read() {
    swapped_executable_is_never_opened("zero", 0, true);
}

#[test]
fn a_thousand_versions_of_a_binary_do_not_exhaust_descriptors() {
    require_root();
    let dir = attack_dir("versions");
    // Position-independent: each run at other addresses, so no stack is
    // reused from memory and every version is symbolized.
    let pie = Spec {
        pie: true,
        ..Spec::default()
    };
    let exe = attack_exe(&dir, "versioned", &pie, NOBODY);
    let runs = 1100;
    let t = Target::start();
    let fds_before = t.open_fds();
    let mut mtime = std::fs::metadata(&exe).expect("stat").mtime();
    for _ in 0..runs {
        // A new version: what blazesym caches by, and kept one descriptor for.
        mtime += 1;
        // Read-only: opened for writing, a file just run may be "busy" (ETXTBSY).
        let file = std::fs::File::open(&exe).expect("open");
        let when = std::time::UNIX_EPOCH + Duration::from_secs(mtime as u64);
        file.set_modified(when).expect("set mtime");
        drop(file);
        assert!(run_as_nobody(&mut Command::new(&exe)).success());
    }
    t.scrape_within(SCRAPE_QUICKLY);
    // Once the backlog is out, one more version is named too.
    t.wait_released();
    assert!(run_as_nobody(&mut Command::new(&exe)).success());
    std::thread::sleep(Duration::from_millis(500));
    t.wait_released();
    let fds_after = t.open_fds();
    let calls_counted = error_calls(&t.scrape_within(SCRAPE_QUICKLY));
    let events = t.stop();
    let calls = attack_calls(&events);
    assert_eq!(calls.len(), runs + 1, "every call reported");
    assert!(
        calls_counted >= (runs + 1) as f64,
        "counted: {calls_counted}"
    );
    assert!(
        fds_after <= fds_before + 4,
        "descriptors: {fds_before} before, {fds_after} after {runs} versions"
    );
    assert_eq!(
        first_function(calls[runs]),
        Some(ENTRY_NAME),
        "{:#}",
        calls[runs]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sparse_2_gib_executable_is_never_read_whole() {
    require_root();
    let dir = attack_dir("bigexe");
    let exe = attack_exe(&dir, "big", &Spec::default(), NOBODY);
    let size = 2u64 << 30;
    std::fs::File::options()
        .write(true)
        .open(&exe)
        .and_then(|f| f.set_len(size))
        .expect("extend to 2 GiB, sparse");
    let t = Target::start();
    for _ in 0..4 {
        assert!(run_as_nobody(&mut Command::new(&exe)).success());
    }
    let took = Instant::now();
    t.scrape_within(SCRAPE_QUICKLY);
    std::thread::sleep(Duration::from_secs(1));
    let rss = t.metric("process_resident_memory_bytes");
    let events = t.stop();
    let calls = attack_calls(&events);
    assert_eq!(calls.len(), 4, "{events:#?}");
    for c in calls {
        assert!(
            cut(c).contains(&size.to_string()),
            "refused by its size ({size} bytes): {c:#}"
        );
    }
    assert!(rss < 256.0 * 1024.0 * 1024.0, "resident {rss} bytes");
    let _ = took;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_4_mib_symbol_name_is_cut_and_not_kept() {
    require_root();
    let dir = attack_dir("longname");
    let name = vec![b'n'; 4 << 20];
    let spec = Spec {
        symbol: Some(name.clone()),
        ..Spec::default()
    };
    let exe = attack_exe(&dir, "longname", &spec, NOBODY);
    let t = Target::start();
    let rss_before = t.metric("process_resident_memory_bytes");
    for _ in 0..20 {
        assert!(run_as_nobody(&mut Command::new(&exe)).success());
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = t.metric("process_resident_memory_bytes");
    let events = t.stop();
    let calls = attack_calls(&events);
    assert_eq!(calls.len(), 20, "{events:#?}");
    for c in calls {
        let f = first_function(c).unwrap_or_else(|| panic!("named: {c:#}"));
        let kept = f.trim_end_matches('…');
        assert!(
            !kept.is_empty() && kept.len() < 4096 && name.starts_with(kept.as_bytes()),
            "a prefix of the real name, cut: {} bytes",
            f.len()
        );
    }
    // 20 records of 4 MiB names would be 80 MiB and more.
    assert!(
        rss_after - rss_before < 32.0 * 1024.0 * 1024.0,
        "resident grew {} bytes",
        rss_after - rss_before
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Holds `n` idle connections to `addr`, opening new ones as the server
/// closes them, until dropped.
struct IdleConnections {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl IdleConnections {
    fn hold(addr: &str, n: usize) -> Self {
        let limit = libc::rlimit {
            rlim_cur: 8192,
            rlim_max: 8192,
        };
        // SAFETY: a valid rlimit; raising this test process's own limit.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(
            rc,
            0,
            "raise RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let addr: std::net::SocketAddr = addr.parse().expect("address");
        let thread = std::thread::spawn(move || {
            let mut held: Vec<std::net::TcpStream> = Vec::new();
            let mut opened = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                held.retain(|s| {
                    let mut b = [0u8; 1];
                    s.set_nonblocking(true).is_ok()
                        && matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while held.len() < n {
                    match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                        Ok(s) => {
                            held.push(s);
                            opened += 1;
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            opened
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn release(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

#[test]
fn idle_connections_cannot_keep_prometheus_out() {
    require_root();
    let t = Target::start();
    t.scrape_within(SCRAPE_QUICKLY);
    let idle = IdleConnections::hold(&t.addr, 1500);
    std::thread::sleep(Duration::from_secs(3));
    let mut took = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        t.scrape_within(SCRAPE_TIMEOUT);
        took.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
    let opened = idle.release();
    eprintln!("scrapes under {opened} idle connections took {took:?}");
    assert!(opened >= 1500, "the attack held its connections: {opened}");
    t.scrape_within(SCRAPE_QUICKLY);
    let _ = t.stop();
}

#[test]
fn a_scrape_queued_ahead_of_a_burst_of_connections_is_answered() {
    require_root();
    // The endpoint holds a bounded number of connections and closes one for
    // each newer: a burst queued behind a scraper must not close it before
    // its request is read. Stopping the daemon lets the burst queue up.
    let burst_size = 3 * copytrace::sink::metrics_http::MAX_CONNECTIONS;
    let t = Target::start();
    t.scrape_within(SCRAPE_QUICKLY);
    let pid = t.daemon.child.id() as libc::pid_t;
    let sockaddr: std::net::SocketAddr = t.addr.parse().expect("the metrics address");
    let signal = |sig| {
        // SAFETY: a signal to this test's own child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {sig}");
    };
    let mut answers = Vec::new();
    for _ in 0..10 {
        signal(libc::SIGSTOP);
        let mut scraper = std::net::TcpStream::connect(&t.addr).expect("connect");
        scraper
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .expect("send the request");
        // A full listen queue would hold a connect until the daemon runs.
        let burst: Vec<std::net::TcpStream> = (0..burst_size)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&sockaddr, Duration::from_secs(1)).ok()
            })
            .collect();
        signal(libc::SIGCONT);
        let _ = scraper.set_read_timeout(Some(SCRAPE_TIMEOUT));
        let mut reply = String::new();
        let status = match scraper.read_to_string(&mut reply) {
            Ok(_) => reply.lines().next().unwrap_or("(nothing)").to_string(),
            Err(e) => e.to_string(),
        };
        answers.push(format!("{status} (behind {})", burst.len()));
        drop(burst);
        // Answered only once the daemon has accepted every connection
        // queued before it: the next trial starts with an empty queue.
        t.scrape_within(SCRAPE_TIMEOUT);
    }
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("HTTP/1.0 200") || a.starts_with("HTTP/1.1 200")),
        "{answers:?}"
    );
    t.scrape_within(SCRAPE_QUICKLY);
    let _ = t.stop();
}

#[test]
fn the_attack_executables_are_what_they_claim() {
    // The truth about the hand-built executables, from tools no one here wrote.
    if suite::in_guest() {
        suite::skip("no binutils in the guests; the host checks the executables with readelf");
        return;
    }
    if !support::require_program("readelf", "binutils") {
        return;
    }
    let dir = attack_dir("readelf");
    let bomb = attack_exe(
        &dir,
        "bomb",
        &Spec {
            compressed_debug_claims: Some(1 << 63),
            ..Spec::default()
        },
        0,
    );
    let out = Command::new("readelf")
        .args(["-W", "-S", "-s"])
        .arg(&bomb)
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(ENTRY_NAME), "{text}");
    let abbrev = text
        .lines()
        .find(|l| l.contains(".debug_abbrev"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(abbrev.contains('C'), "SHF_COMPRESSED: {abbrev}");
    let size = std::fs::metadata(&bomb).map(|m| m.len()).unwrap_or(0);
    assert!(size < 4096, "{size} bytes");
}

#[test]
fn idle_threads_cannot_leave_new_threads_untracked() {
    require_root();
    // More threads than the in-flight slots and the overflow hash hold
    // together: that is the size of the attack, not an expected value.
    let threads =
        (copytrace_common::THREAD_SLOT_COUNT + copytrace_common::INFLIGHT_OVERFLOW) as usize + 500;
    if suite::in_guest() {
        suite::skip("21,000 threads take minutes under TCG; the host runs this test");
        return;
    }
    let t = Target::start();
    // Spread over processes: one process's thread stacks would pass the
    // kernel's limit on mappings (vm.max_map_count).
    let per_process = 7000;
    let mut holders = Vec::new();
    for i in 0..threads.div_ceil(per_process) {
        let n = per_process.min(threads - i * per_process);
        let mut child = support::caller::command("idle-threads", &[&n.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("idle threads");
        let mut line = String::new();
        let out = child.stdout.take().expect("piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready", "{n} idle threads");
        holders.push(support::KillOnDrop(child));
    }
    // The idle threads' calls came as a burst that can fill the ring
    // buffer (its losses are counted, not this test's subject): the new
    // thread calls once the daemon has taken or counted as lost every one.
    support::wait_for(60, "the idle threads' calls taken or counted lost", || {
        let taken =
            t.metric("copytrace_events_received_total") + t.metric("copytrace_events_lost_total");
        (taken >= threads as f64).then_some(())
    });
    // A new thread of anyone's: its call must be tracked and reported.
    let marker = 424_242usize;
    let _ebadf = std::thread::spawn(move || support::cfr(-1, None, -1, None, marker, 0))
        .join()
        .expect("the new thread");
    std::thread::sleep(Duration::from_secs(1));
    let untracked = t.metric("copytrace_calls_untracked_total");
    let scrape = t.scrape_within(SCRAPE_QUICKLY);
    drop(holders);
    let log = t.daemon.log();
    let events = t.stop();
    assert!(
        events.iter().any(|e| e["len"] == marker),
        "the new thread's call is reported ({untracked} untracked, {} calls printed); counts: {}; log: {log}",
        events.len(),
        scrape
            .lines()
            .filter(|l| l.starts_with("copytrace_") && !l.contains("_bucket"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert_eq!(untracked, 0.0, "no call went untracked");
}

/// Removes a cgroup and the (empty) cgroups directly in it, even if the test panicked.
struct RemoveCgroups(PathBuf);

impl Drop for RemoveCgroups {
    fn drop(&mut self) {
        if let Ok(dir) = std::fs::read_dir(&self.0) {
            for e in dir.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn minting_cgroups_does_not_stall_the_daemon() {
    require_root();
    let scratch = support::scratch();
    let (root, _mount) = support::cgroup2_root(&scratch);
    let base = root.join(format!("ct-churn-{}", std::process::id()));
    std::fs::create_dir(&base).expect("a cgroup of our own");
    let _cleanup = RemoveCgroups(base.clone());
    // Many cgroups make every walk of the hierarchy long.
    let many = if suite::in_guest() { 2_000 } else { 20_000 };
    for i in 0..many {
        std::fs::create_dir(base.join(format!("c{i}"))).expect("mkdir cgroup");
    }
    let t = Target::start();
    let rounds = 100;
    let mut slowest = Duration::ZERO;
    for i in 0..rounds {
        // A new cgroup, a call from it, gone: an id the daemon never saw.
        let cg = base.join(format!("x{i}"));
        std::fs::create_dir(&cg).expect("mkdir cgroup");
        let st = support::caller::command("cgroup", &[cg.to_str().unwrap_or(""), "silent", "1"])
            .status()
            .expect("caller");
        assert!(st.success());
        let _ = std::fs::remove_dir(&cg);
        if i % 10 == 0 {
            let start = Instant::now();
            t.scrape_within(SCRAPE_QUICKLY);
            slowest = slowest.max(start.elapsed());
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let events = t.stop();
    let silent = events
        .iter()
        .filter(|e| e["verdict"] == "silent_zero_copy")
        .count();
    eprintln!("{rounds} calls from new cgroups among {many}: slowest scrape {slowest:?}");
    assert_eq!(silent, rounds, "every call reported");
}

/// Runs an executable that only a private mount namespace sees, as
/// /dev/zero there: gone at once (hand-built) or alive for 3 s (a copy of
/// this test binary), so that its memory map and mount table are read.
fn name_inside_another_namespace(linger: bool) {
    require_root();
    let t = Target::start();
    let status = copytrace_testkit::fs::in_private_namespaces(|| {
        let dev = Path::new("/dev");
        copytrace_testkit::fs::mount("tmpfs", dev, "tmpfs", "size=1g,mode=0755");
        let exe = dev.join("zero");
        let st = if linger {
            std::fs::copy(std::env::current_exe().expect("test binary"), &exe)
                .expect("copy the test binary");
            let mut cmd = support::caller::command_at(&exe, "ebadf-linger", &["3000"]);
            run_as_nobody(&mut cmd)
        } else {
            elf::write(&exe, &Spec::default());
            run_as_nobody(&mut Command::new(&exe))
        };
        support::unmount(dev);
        st
    });
    assert!(status.success(), "{status}");
    std::thread::sleep(Duration::from_secs(1));
    let rss = t.metric("process_resident_memory_bytes");
    let events = t.stop();
    let calls = attack_calls(&events);
    assert_eq!(calls.len(), 1, "{events:#?}");
    let c = calls[0];
    assert!(
        first_function(c).is_none(),
        "the host's /dev/zero is not the executable: {c:#}"
    );
    assert!(
        !cut(c).is_empty(),
        "the stack says why it is unnamed: {c:#}"
    );
    eprintln!("{}", cut(c));
    assert!(rss < 512.0 * 1024.0 * 1024.0, "resident {rss} bytes");
}

#[test]
fn a_name_inside_another_mount_namespace_is_never_opened_on_the_host() {
    name_inside_another_namespace(false);
}

#[test]
fn a_live_caller_s_namespace_name_is_never_opened_on_the_host() {
    name_inside_another_namespace(true);
}

#[test]
fn frames_of_an_executable_with_unaligned_code_are_named_right() {
    require_root();
    // LLD (Rust's default linker now) does not page-align the first code
    // segment; the kernel's start_code is then unaligned too. The caller
    // exits at once, so the daemon places the frame from start_code.
    let dir = attack_dir("unaligned");
    let spec = Spec {
        unaligned_code: true,
        ..Spec::default()
    };
    let exe = attack_exe(&dir, "lld-like", &spec, NOBODY);
    let t = Target::start();
    assert!(run_as_nobody(&mut Command::new(&exe)).success());
    std::thread::sleep(Duration::from_secs(1));
    let events = t.stop();
    let calls = attack_calls(&events);
    assert_eq!(calls.len(), 1, "{events:#?}");
    assert_eq!(first_function(calls[0]), Some(ENTRY_NAME), "{:#}", calls[0]);
    let _ = std::fs::remove_dir_all(&dir);
}
