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
//!
//! Checks are grouped by what they look at: the [`package`], the
//! [`service`] under systemd, the [`journal`], [`access`] to the tail and
//! the symbolizer's confinement, [`stacks`] held to gdb's, [`prometheus`]
//! scrapes, the [`nfs`] server's own copies and [`overlay`]'s;
//! [`tail_watch`] collects what the tail shows of them, and [`sys`] holds
//! the commands and raw calls they share.

mod access;
mod journal;
mod nfs;
mod overlay;
mod package;
mod prometheus;
mod service;
mod stacks;
mod sys;
mod tail_watch;

use std::path::Path;

use copytrace_guest::console::{ConsoleLine, Kind};
use copytrace_guest::report;

use crate::access::{symbolizer_confined, tail_group};
use crate::journal::{journal_flood, paths_and_journal};
use crate::package::{install, purge, snapshot};
use crate::prometheus::{fleet, prometheus_counts};
use crate::service::{
    reloads, security_score, started_after_ready, status_counts, unit_limits, unit_naming, watchdog,
};
use crate::sys::{flood, sh, silent_copy};

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
    "systemd-analyze security copytrace.service within the stated exposure",
    "the unit bounds memory, tasks and core dumps",
    "the symbolizer runs confined, without capabilities",
    "under the unit, the C program's stack (frame pointers) is gdb's",
    "under the unit, the C program's stack (no frame pointers) is gdb's",
    "under the unit, Debian's cp's stack is gdb's",
    "under the unit, Debian's python3's stack is gdb's",
    "under the unit, a Rust release std::fs::copy's stack is gdb's",
    "under the unit, Go's io.Copy stack is gdb's",
    "a user's flood of suspicious calls is rate-limited in the journal",
    "the watchdog restarts a hung daemon (SIGSTOP)",
    "nfsd's server-side copy is seen and counted beside the client's call",
    "nfsd's copy between an ext4 and a tmpfs export is seen",
    "the tracepoint back-end classifies the NFS client's copy as fentry does",
    "overlayfs's own call on its real files is seen inside the syscall",
    "a lower-to-upper copy on one overlay mount is explained",
    "apt purge leaves no file, group or unit",
];

/// Records one check; returns whether it passed.
fn check(name: &str, ok: bool, detail: &str) -> bool {
    debug_assert!(PLAN.contains(&name), "{name} is not in PLAN");
    report::emit(&ConsoleLine::check(name, ok, detail));
    ok
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
    stacks::stacks_match_gdb();
    journal_flood();
    watchdog();
    fleet(SILENT_FLEET, 3);
    nfs::nfs_server_copy();
    overlay::overlay_copies();
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
