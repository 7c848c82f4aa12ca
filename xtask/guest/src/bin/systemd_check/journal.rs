//! What reaches the journal: suspicious calls with their full paths, and
//! a user's flood held back by the rate limit.

use std::os::unix::process::CommandExt;
use std::process::Command;

use copytrace_common::metric_names::JOURNAL_HELD_BACK_TOTAL;

use crate::check;
use crate::sys::{copy, http_get, journal, sample, sh, silent_copy, wait};

pub fn paths_and_journal(silent_so_far: &mut u64) -> bool {
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

pub fn journal_flood() -> bool {
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
    let metric =
        http_get("127.0.0.1:9977", "/metrics").and_then(|m| sample(&m, JOURNAL_HELD_BACK_TOTAL));
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
