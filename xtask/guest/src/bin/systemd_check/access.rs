//! Who may see what: the tail socket's group, and the symbolizer's
//! confinement.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::check;
use crate::sys::{sh, silent_copy, wait};

/// `copytrace tail` as a user in `groups`; its exit code and output.
pub fn tail_as(uid: u32, groups: Vec<libc::gid_t>) -> (i32, String) {
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

pub fn tail_group() -> bool {
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

/// The process ids of the daemon's symbolizer.
pub fn symbolizer_pids() -> Vec<String> {
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

pub fn symbolizer_confined(silent_so_far: &mut u64) -> bool {
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
