//! The checks of the systemd guest: a Debian 12 system booted with systemd
//! as PID 1, where this program runs as a service once the system is up.
//! It installs the copytrace package, checks the service the way an
//! operator would, then (as a fleet member) waits for the host's
//! Prometheus, and purges the package.
//!
//! Its data disk (/mnt/ct) holds the package, this program and `role`:
//! `checks` (every check, then the fleet's bad host, then purge) or
//! `fleet-good` (install, serve, make only good copies). Each result is a
//! `CT-CHECK name: ok|FAIL detail` line on the serial console; the host
//! answers `CT-CONTINUE` on the console when the fleet checks are done.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use copytrace_guest::console::{ConsoleLine, Kind};
use copytrace_guest::report;
use serde_json::Value;

const DATA: &str = "/mnt/ct";
/// Silent zero copies this program makes while the service runs.
const SILENT_FLEET: usize = 7;

/// Every check of the `checks` role, in order (announced first, so the host
/// counts a check the guest never reached as not run).
const PLAN: &[&str] = &[
    "apt install ./copytrace.deb",
    "systemctl start: active only after READY=1 (probes attached)",
    "journalctl -u copytrace COPYTRACE_VERDICT=silent_zero_copy",
    "full paths under the unit",
    "destination path on the root filesystem",
    "STATUS= reflects the counts",
    "systemctl reload with a good config",
    "systemctl reload with a broken config keeps running",
    "systemd-run --unit caller is named by its unit",
    "group copytrace exists",
    "a member of group copytrace can tail",
    "another user cannot tail",
    "Prometheus in the guest scrapes exact counts",
    "systemd-analyze security copytrace.service <= 2.5",
    "the unit bounds memory, tasks and core dumps",
    "the symbolizer runs confined, without capabilities",
    "a user's flood of suspicious calls is rate-limited in the journal",
    "the watchdog restarts a hung daemon (SIGSTOP)",
    "apt purge leaves no file, group or unit",
];

/// Records one check; returns whether it passed.
fn check(name: &str, ok: bool, detail: &str) -> bool {
    debug_assert!(PLAN.contains(&name), "{name} is not in PLAN");
    report::emit(&ConsoleLine::check(name, ok, detail));
    ok
}

/// Runs a command; (exit code, stdout + stderr).
fn sh(program: &str, args: &[&str]) -> (i32, String) {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            (o.status.code().unwrap_or(-1), text)
        }
        Err(e) => (-1, format!("cannot run {program}: {e}")),
    }
}

fn systemctl_show(prop: &str) -> String {
    sh("systemctl", &["show", "-p", prop, "--value", "copytrace"])
        .1
        .trim()
        .to_string()
}

/// Polls `f` every 200 ms for up to `secs`.
fn wait<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn open(path: &str, flags: i32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.custom_flags(flags & !libc::O_ACCMODE);
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => o.read(true),
        _ => o.write(true).create(flags & libc::O_CREAT != 0),
    };
    o.open(path)
}

/// One copy_file_range call between two paths; the raw result.
fn copy(src: &str, dst: &str, len: usize) -> i64 {
    let (Ok(a), Ok(b)) = (
        open(src, libc::O_RDONLY),
        open(dst, libc::O_WRONLY | libc::O_CREAT),
    ) else {
        return -1;
    };
    // SAFETY: copy_file_range on two open descriptors with null offsets.
    unsafe {
        libc::syscall(
            libc::SYS_copy_file_range,
            a.as_raw_fd(),
            std::ptr::null_mut::<i64>(),
            b.as_raw_fd(),
            std::ptr::null_mut::<i64>(),
            len,
            0u32,
        )
    }
}

/// A silent zero copy: procfs to procfs.
fn silent_copy() -> i64 {
    copy("/proc/self/status", "/proc/self/comm", 4096)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

const SILENT_SERIES: &str =
    r#"copytrace_calls_total{fs_in="proc",fs_out="proc",verdict="silent_zero_copy"}"#;

/// The journal entries of the unit with `COPYTRACE_VERDICT=verdict`.
fn journal(verdict: &str) -> Vec<Value> {
    let filter = format!("COPYTRACE_VERDICT={verdict}");
    let (_, out) = sh(
        "journalctl",
        &["-u", "copytrace", &filter, "-o", "json", "--no-pager"],
    );
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn install() -> bool {
    let deb = std::fs::read_dir(DATA)
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
        })
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (code, out) = sh("apt-get", &["install", "-y", &deb]);
    let last = out.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    check("apt install ./copytrace.deb", code == 0, &last)
}

/// Notes the files on the root filesystem that a package could leave behind.
fn snapshot() -> Vec<String> {
    let (_, out) = sh(
        "find",
        &[
            "/",
            "-xdev",
            "(",
            "-path",
            "/var/log",
            "-o",
            "-path",
            "/var/lib/apt",
            "-o",
            "-path",
            "/var/cache",
            "-o",
            "-path",
            "/tmp",
            "-o",
            "-path",
            "/var/tmp",
            "-o",
            "-path",
            "/var/lib/dpkg",
            "-o",
            "-path",
            "/root",
            "-o",
            "-path",
            "/var/lib/prometheus",
            "-o",
            "-path",
            "/etc/prometheus",
            "-o",
            "-path",
            "/home",
            "-o",
            "-path",
            "/mnt",
            ")",
            "-prune",
            "-o",
            "-print",
        ],
    );
    let mut files: Vec<String> = out.lines().map(str::to_string).collect();
    // Rewritten by every group change, by design (shadow's backups).
    // Rewritten by every user or group change, by design (shadow's backups
    // and lock), not left by the package.
    files.retain(|f| {
        !matches!(
            f.as_str(),
            "/etc/group-"
                | "/etc/gshadow-"
                | "/etc/passwd-"
                | "/etc/shadow-"
                | "/etc/.pwd.lock"
                | "/etc/subuid-"
                | "/etc/subgid-"
        )
    });
    files.sort();
    files
}

/// BPF programs and links the process holds (from /proc/PID/fdinfo).
fn bpf_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|t| t.contains("prog_id:") || t.contains("link_id:"))
                .count()
        })
        .unwrap_or(0)
}

fn started_after_ready() -> bool {
    let (code, out) = sh("systemctl", &["restart", "copytrace"]);
    // systemctl returns once the unit is active: with Type=notify, after
    // READY=1. The probes must already be attached at that moment.
    let pid = systemctl_show("MainPID");
    let attached = bpf_fds(&pid);
    let active = systemctl_show("ActiveState");
    let status = systemctl_show("StatusText");
    check(
        "systemctl start: active only after READY=1 (probes attached)",
        code == 0 && active == "active" && attached >= 2 && status.contains("watching"),
        &format!("{out}active={active}, {attached} BPF program/link fds when systemctl returned, STATUS={status:?}"),
    )
}

fn status_counts(expected_silent: u64) -> bool {
    // STATUS= is refreshed every second once counts change.
    let status = wait(15, || {
        let s = systemctl_show("StatusText");
        let suspicious = s
            .split(", ")
            .find_map(|p| p.strip_suffix(" suspicious"))
            .and_then(|n| n.trim().parse::<u64>().ok())?;
        (suspicious >= expected_silent).then_some(s)
    });
    check(
        "STATUS= reflects the counts",
        status.is_some(),
        &format!(
            "{:?} after {expected_silent} suspicious calls",
            status.unwrap_or_else(|| systemctl_show("StatusText"))
        ),
    )
}

fn paths_and_journal(silent_so_far: &mut u64) -> bool {
    let pid = std::process::id();
    let r = silent_copy();
    *silent_so_far += 1;
    // A cross-filesystem call with a destination on the root filesystem.
    let _ = std::fs::create_dir_all("/root/ct");
    let _ = copy("/proc/self/status", "/root/ct/out", 4096);
    let entries = wait(20, || {
        let e = journal("silent_zero_copy");
        e.iter()
            .any(|v| v["COPYTRACE_PID"].as_str() == Some(&pid.to_string()))
            .then_some(e)
    })
    .unwrap_or_default();
    let mine = entries
        .iter()
        .rev()
        .find(|v| v["COPYTRACE_PID"].as_str() == Some(&pid.to_string()));
    let want_in = format!("/proc/{pid}/status");
    let path_in = mine
        .and_then(|v| v["COPYTRACE_PATH_IN"].as_str())
        .unwrap_or("");
    let exe = mine.and_then(|v| v["COPYTRACE_EXE"].as_str()).unwrap_or("");
    let message = mine.and_then(|v| v["MESSAGE"].as_str()).unwrap_or("");
    let a = check(
        "journalctl -u copytrace COPYTRACE_VERDICT=silent_zero_copy",
        mine.is_some() && r == 0,
        &format!("{} entries; MESSAGE={message:?}", entries.len()),
    );
    let b = check(
        "full paths under the unit",
        path_in == want_in && exe.ends_with("copytrace-systemd-check"),
        &format!("COPYTRACE_PATH_IN={path_in:?} COPYTRACE_EXE={exe:?}"),
    );
    let cross = wait(20, || {
        journal("cross_fs")
            .into_iter()
            .find(|v| v["COPYTRACE_PATH_OUT"].as_str() == Some("/root/ct/out"))
    });
    let c = check(
        "destination path on the root filesystem",
        cross.is_some(),
        &cross
            .map(|v| format!("{}", v["MESSAGE"]))
            .unwrap_or_else(|| "no cross_fs entry naming /root/ct/out".into()),
    );
    a && b && c
}

const CONFIG: &str = "/etc/copytrace/copytrace.toml";

fn reloads(silent_so_far: &mut u64) -> bool {
    let original = std::fs::read_to_string(CONFIG).unwrap_or_default();
    let pid_before = systemctl_show("MainPID");
    let good = original.replace("log_level = \"info\"", "log_level = \"debug\"");
    let _ = std::fs::write(CONFIG, &good);
    let (code, out) = sh("systemctl", &["reload", "copytrace"]);
    let applied = wait(20, || {
        let (_, log) = sh("journalctl", &["-u", "copytrace", "--no-pager", "-n", "30"]);
        log.contains("reload: configuration applied").then_some(())
    });
    let a = check(
        "systemctl reload with a good config",
        code == 0 && applied.is_some() && systemctl_show("MainPID") == pid_before,
        &format!("exit {code} {out}"),
    );
    let _ = std::fs::write(CONFIG, "pid = \"not a number\"\n");
    let (code, out) = sh("systemctl", &["reload", "copytrace"]);
    let kept = wait(20, || {
        let (_, log) = sh("journalctl", &["-u", "copytrace", "--no-pager", "-n", "30"]);
        log.contains("reload: keeping the running configuration")
            .then_some(())
    });
    silent_copy();
    *silent_so_far += 1;
    let b = check(
        "systemctl reload with a broken config keeps running",
        code == 0
            && kept.is_some()
            && systemctl_show("ActiveState") == "active"
            && systemctl_show("MainPID") == pid_before,
        &format!("exit {code} {out} state={}", systemctl_show("ActiveState")),
    );
    let _ = std::fs::write(CONFIG, &original);
    let _ = sh("systemctl", &["reload", "copytrace"]);
    a && b
}

/// `copytrace tail` as a user in `groups`; its exit code and output.
fn tail_as(uid: u32, groups: Vec<libc::gid_t>) -> (i32, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["10", "copytrace", "tail", "--json", "--since-start"]);
    // Groups, then gid, then uid, all in the child: std's uid()/gid() drop
    // root before pre_exec runs, after which setgroups is refused.
    // SAFETY: only async-signal-safe libc calls, with a list that outlives them.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            (o.status.code().unwrap_or(-1), t)
        }
        Err(e) => (-1, e.to_string()),
    }
}

fn tail_group() -> bool {
    let gid: u32 = sh("getent", &["group", "copytrace"])
        .1
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or(0);
    let a = check("group copytrace exists", gid != 0, &format!("gid {gid}"));
    let (_, _) = sh("useradd", &["-M", "-u", "2001", "-G", "copytrace", "alice"]);
    let (_, _) = sh("useradd", &["-M", "-u", "2002", "bob"]);
    let (code, out) = tail_as(2001, vec![2001, gid]);
    let calls = out
        .lines()
        .filter(|l| l.contains("\"type\":\"call\""))
        .count();
    let b = check(
        "a member of group copytrace can tail",
        calls > 0,
        &format!("timeout exit {code}, {calls} calls replayed"),
    );
    let (code, out) = tail_as(2002, vec![2002]);
    let c = check(
        "another user cannot tail",
        code != 0
            && code != 124
            && out.contains("ermission denied")
            && !out.contains("\"type\":\"call\""),
        &format!("exit {code}: {}", out.trim()),
    );
    a && b && c
}

fn prometheus_counts(silent: u64) -> bool {
    let cfg = "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: copytrace\n    static_configs:\n      - targets: ['127.0.0.1:9977']\n";
    let _ = std::fs::write("/etc/prometheus/prometheus.yml", cfg);
    let _ = sh("systemctl", &["restart", "prometheus"]);
    let own = http_get("127.0.0.1:9977", "/metrics")
        .and_then(|b| sample(&b, SILENT_SERIES))
        .unwrap_or(-1.0);
    let query = "/api/v1/query?query=copytrace_calls_total%7Bverdict%3D%22silent_zero_copy%22%2Cfs_in%3D%22proc%22%2Cfs_out%3D%22proc%22%7D";
    let seen = wait(90, || {
        let body = http_get("127.0.0.1:9090", query)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n >= silent as f64).then_some(n)
    });
    check(
        "Prometheus in the guest scrapes exact counts",
        seen == Some(silent as f64) && own == silent as f64,
        &format!("{silent} silent copies made; /metrics says {own}; Prometheus says {seen:?}"),
    )
}

fn security_score() -> bool {
    let (_, out) = sh(
        "systemd-analyze",
        &["security", "--no-pager", "copytrace.service"],
    );
    let overall = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("")
        .to_string();
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    check(
        "systemd-analyze security copytrace.service <= 2.5",
        score <= 2.5,
        overall.trim(),
    )
}

fn unit_limits() -> bool {
    let got: Vec<(String, String)> = ["MemoryMax", "TasksMax", "LimitCORE"]
        .iter()
        .map(|p| (p.to_string(), systemctl_show(p)))
        .collect();
    let bounded = |v: &str| !v.is_empty() && v != "infinity" && v != "18446744073709551615";
    let ok = bounded(&got[0].1) && bounded(&got[1].1) && got[2].1 == "0";
    check(
        "the unit bounds memory, tasks and core dumps",
        ok,
        &format!("{got:?}"),
    )
}

/// `flood N`: N failing calls, as whoever runs it.
fn flood(n: u64) {
    for _ in 0..n {
        // SAFETY: copy_file_range on invalid descriptors with null offsets: EBADF.
        unsafe {
            libc::syscall(
                libc::SYS_copy_file_range,
                -1,
                0usize,
                -1,
                0usize,
                1usize,
                0u32,
            );
        }
    }
}

/// The process ids of the daemon's symbolizer.
fn symbolizer_pids() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            (args.get(1) == Some(&&b"symbolize-worker"[..]))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

fn symbolizer_confined(silent_so_far: &mut u64) -> bool {
    // A suspicious call with a stack starts the symbolizer.
    silent_copy();
    *silent_so_far += 1;
    let pid = wait(30, || symbolizer_pids().into_iter().next());
    let status = pid
        .as_ref()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let caps = ["CapEff:", "CapPrm:", "CapAmb:"].map(field);
    let ok = pid.is_some()
        && caps
            .iter()
            .all(|c| c.trim_start_matches('0').is_empty() && !c.is_empty())
        && field("NoNewPrivs:") == "1"
        && field("Seccomp:") == "2";
    check(
        "the symbolizer runs confined, without capabilities",
        ok,
        &format!(
            "pid {pid:?} Uid {} CapEff/Prm/Amb {caps:?} NoNewPrivs {} Seccomp {}",
            field("Uid:"),
            field("NoNewPrivs:"),
            field("Seccomp:")
        ),
    )
}

fn journal_flood() -> bool {
    const CALLS: u64 = 30_000;
    let me = std::env::current_exe().unwrap_or_default();
    let since = sh("date", &["+%Y-%m-%d %H:%M:%S"]).1.trim().to_string();
    let st = Command::new(&me)
        .args(["flood", &CALLS.to_string()])
        .uid(65534)
        .gid(65534)
        .status();
    let ran = st.as_ref().is_ok_and(|s| s.success());
    // The summary comes within 30 s of the first held-back entry.
    let summary = wait(60, || {
        // `-o verbose` prints every field as `    NAME=value`.
        let (_, out) = sh(
            "journalctl",
            &[
                "-u",
                "copytrace",
                "--since",
                &since,
                "-o",
                "verbose",
                "--no-pager",
            ],
        );
        out.lines()
            .find_map(|l| l.trim().strip_prefix("COPYTRACE_HELD_BACK="))
            .and_then(|n| n.parse::<u64>().ok())
    });
    let (_, all) = sh(
        "journalctl",
        &["--since", &since, "--no-pager", "-o", "cat"],
    );
    let suppressed = all
        .lines()
        .find(|l| l.contains("Suppressed") && l.contains("copytrace"))
        .map(str::to_string);
    let (_, errors) = sh(
        "journalctl",
        &[
            "-u",
            "copytrace",
            "--since",
            &since,
            "--no-pager",
            "-o",
            "cat",
            "COPYTRACE_VERDICT=error",
        ],
    );
    let metric = http_get("127.0.0.1:9977", "/metrics")
        .and_then(|m| sample(&m, "copytrace_journal_held_back_total"));
    let (_, last) = sh(
        "journalctl",
        &["-u", "copytrace", "--no-pager", "-n", "3", "-o", "cat"],
    );
    check(
        "a user's flood of suspicious calls is rate-limited in the journal",
        ran && summary.is_some_and(|n| n > 0 && n <= CALLS) && suppressed.is_none(),
        &format!(
            "{CALLS} calls as nobody ({st:?}): held back {summary:?} (metric {metric:?}); {} entries written; journald: {suppressed:?}; last: {}",
            errors.lines().count(),
            last.replace('\n', " | ")
        ),
    )
}

fn unit_naming(silent_so_far: &mut u64) -> bool {
    let me = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (code, out) = sh(
        "systemd-run",
        &["--unit=ct-demo-copier", "--wait", "--quiet", &me, "silent"],
    );
    *silent_so_far += 1;
    let found = wait(20, || {
        journal("silent_zero_copy")
            .into_iter()
            .find(|v| v["COPYTRACE_UNIT"].as_str() == Some("ct-demo-copier.service"))
    });
    check(
        "systemd-run --unit caller is named by its unit",
        code == 0 && found.is_some(),
        &found
            .map(|v| {
                format!(
                    "COPYTRACE_UNIT={} COPYTRACE_CGROUP={}",
                    v["COPYTRACE_UNIT"], v["COPYTRACE_CGROUP"]
                )
            })
            .unwrap_or(out),
    )
}

fn watchdog() -> bool {
    let pid = systemctl_show("MainPID");
    let restarts: u32 = systemctl_show("NRestarts").parse().unwrap_or(0);
    if let Ok(p) = pid.parse::<i32>() {
        // SAFETY: stopping the daemon's main process, as a hang would.
        unsafe { libc::kill(p, libc::SIGSTOP) };
    }
    let restarted = wait(120, || {
        let now = systemctl_show("MainPID");
        (now != pid && now != "0" && systemctl_show("ActiveState") == "active").then_some(now)
    });
    let after: u32 = systemctl_show("NRestarts").parse().unwrap_or(0);
    let (_, log) = sh("journalctl", &["-u", "copytrace", "--no-pager", "-n", "40"]);
    let said = log.lines().any(|l| l.to_lowercase().contains("watchdog"));
    check(
        "the watchdog restarts a hung daemon (SIGSTOP)",
        restarted.is_some() && after == restarts + 1 && said,
        &format!("MainPID {pid} -> {restarted:?}, NRestarts {restarts} -> {after}"),
    )
}

/// Serves the fleet: listen for the host's Prometheus, make `silent` silent
/// and `good` good copies, say so, and wait for the host.
fn fleet(silent: usize, good: usize) {
    let cfg = std::fs::read_to_string(CONFIG).unwrap_or_default();
    let _ = std::fs::write(CONFIG, cfg.replace("127.0.0.1:9977", "0.0.0.0:9977"));
    // The unit allows only localhost; a fleet allows its Prometheus.
    let _ = std::fs::create_dir_all("/etc/systemd/system/copytrace.service.d");
    let _ = std::fs::write(
        "/etc/systemd/system/copytrace.service.d/fleet.conf",
        "[Service]\nIPAddressAllow=10.0.2.2\n",
    );
    let _ = sh("systemctl", &["daemon-reload"]);
    let _ = sh("systemctl", &["restart", "copytrace"]);
    for _ in 0..silent {
        silent_copy();
    }
    let _ = std::fs::write("/root/ct-src", vec![1u8; 1000]);
    for _ in 0..good {
        let _ = copy("/root/ct-src", "/root/ct-dst", 1000);
    }
    report::line(
        Kind::FleetReady,
        "",
        &format!("{silent} silent, {good} good"),
    );
    // The host writes a continue line on the console once it has checked.
    let mut tty = std::io::BufReader::new(std::io::stdin());
    let mut l = String::new();
    let end = Instant::now() + Duration::from_secs(600);
    while Instant::now() < end {
        l.clear();
        match tty.read_line(&mut l) {
            Ok(0) => std::thread::sleep(Duration::from_millis(200)),
            Ok(_) if ConsoleLine::parse(&l).is_some_and(|c| c.kind == Kind::Continue) => return,
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    report::line(
        Kind::Log,
        "fleet",
        &format!("no {} from the host in 600 s", Kind::Continue),
    );
}

fn purge(before: &[String]) -> bool {
    let _ = std::fs::remove_dir_all("/etc/systemd/system/copytrace.service.d");
    let (code, out) = sh("apt-get", &["purge", "-y", "copytrace"]);
    let _ = sh("userdel", &["alice"]);
    let _ = sh("userdel", &["bob"]);
    let after = snapshot();
    let added: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
    let group = sh("getent", &["group", "copytrace"]).0 == 0;
    let unit = sh("systemctl", &["cat", "copytrace"]).0 == 0;
    check(
        "apt purge leaves no file, group or unit",
        code == 0 && added.is_empty() && !group && !unit,
        &format!(
            "exit {code}; new files {added:?}; group left: {group}; unit left: {unit}; {}",
            out.lines().last().unwrap_or("")
        ),
    )
}

fn run_checks() {
    report::line(Kind::Plan, "", &PLAN.join("|"));
    let before = snapshot();
    if !install() {
        return;
    }
    let mut silent: u64 = 0;
    started_after_ready();
    paths_and_journal(&mut silent);
    status_counts(silent);
    reloads(&mut silent);
    unit_naming(&mut silent);
    tail_group();
    prometheus_counts(silent);
    security_score();
    unit_limits();
    symbolizer_confined(&mut silent);
    journal_flood();
    watchdog();
    fleet(SILENT_FLEET, 3);
    purge(&before);
}

fn main() {
    // `silent`: one silent zero copy (the systemd-run caller).
    if std::env::args().nth(1).as_deref() == Some("silent") {
        silent_copy();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("flood") {
        flood(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        );
        return;
    }
    let role = std::fs::read_to_string(Path::new(DATA).join("role")).unwrap_or_default();
    let release = sh("uname", &["-r"]).1;
    report::line(Kind::Kernel, "", release.trim());
    match role.trim() {
        "checks" => run_checks(),
        "fleet-good" => {
            report::line(Kind::Plan, "", PLAN[0]);
            if install() {
                fleet(0, 5);
            }
        }
        other => report::line(Kind::Log, "role", &format!("unknown role {other:?}")),
    }
    report::emit(&ConsoleLine::bare(Kind::Done));
    let _ = sh("systemctl", &["poweroff", "--no-block"]);
}
