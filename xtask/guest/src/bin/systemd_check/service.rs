//! The service as systemd runs it: start-up, reloads, naming callers by
//! unit, the watchdog, and the unit's confinement and limits.

use crate::check;
use crate::sys::{bpf_fds, journal, sh, silent_copy, systemctl_show, wait};

pub const CONFIG: &str = "/etc/copytrace/copytrace.toml";

pub fn started_after_ready() -> bool {
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

pub fn status_counts(expected_silent: u64) -> bool {
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

pub fn reloads(silent_so_far: &mut u64) -> bool {
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

pub fn unit_naming(silent_so_far: &mut u64) -> bool {
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

pub fn watchdog() -> bool {
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

pub fn security_score() -> bool {
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
    let max = copytrace_testkit::UNIT_EXPOSURE_MAX;
    check(
        "systemd-analyze security copytrace.service within the stated exposure",
        score <= max,
        &format!("{} (at most {max})", overall.trim()),
    )
}

pub fn unit_limits() -> bool {
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
