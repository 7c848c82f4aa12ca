//! The package itself: installing it, and purging it without a trace.

use crate::sys::sh;
use crate::{check, DATA};

pub fn install() -> bool {
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
pub fn snapshot() -> Vec<String> {
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

pub fn purge(before: &[String]) -> bool {
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
