//! Names, paths and resources controlled by someone else: real files with
//! hostile names on real filesystems, a real `comm` set with prctl, real
//! bind mounts, a second mount namespace, deleted files, a daemon whose file
//! descriptors run out, and a machine whose BTF or tracefs is not what
//! copytrace expects.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use support::caller::{self, hex_arg};
use support::{
    copytrace_bin, daemon, ext4, free_port, http_get, require_root, sample, silent_copies, tmpfs,
    wait_for, KillOnDrop,
};

/// File names an attacker picks: terminal escapes (title, clear screen),
/// a newline that fakes a second output line, a bidi override, bytes that
/// are not UTF-8, DEL and a C1 control. Each with the escaped form people
/// must see (the end of the quoted path).
const NAMES: [(&[u8], &str); 6] = [
    (b"\x1b]0;owned\x07title", r#"\x1b]0;owned\x07title""#),
    (b"\x1b[2J\x1b[Hclear", r#"\x1b[2J\x1b[Hclear""#),
    (
        b"two\n12:00:00.000000 cp 1 ok lines",
        r#"two\n12:00:00.000000 cp 1 ok lines""#,
    ),
    ("rtl\u{202e}txt.exe".as_bytes(), r#"rtl\u{202e}txt.exe""#),
    (b"\xff\xfenot-utf8", r#"\xff\xfenot-utf8""#),
    (b"del\x7fc1\xc2\x9bcsi", r#"del\x7fc1\u{9b}csi""#),
];

/// A `comm` that would colour the terminal and break the line.
const COMM: &[u8] = b"\x1b[31m\nsilent";
const COMM_SHOWN: &str = r#""\x1b[31m\nsilent""#;

fn join(dir: &Path, name: &[u8]) -> Vec<u8> {
    let mut p = dir.as_os_str().as_encoded_bytes().to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Runs the caller program that, under [`COMM`], copies procfs → `dst`: a
/// suspicious call on every kernel (EXDEV from 5.19 on, a silent zero copy
/// before), so every output shows it.
fn hostile_copy(dst: &[u8]) -> Command {
    caller::command(
        "comm",
        &[
            &hex_arg(COMM),
            "copy",
            "/proc/self/status",
            &hex_arg(dst),
            "4096",
        ],
    )
}

/// Asserts a human line holds nothing a terminal would act on.
fn assert_inert(line: &str) {
    for c in line.chars() {
        assert!(
            !c.is_control() && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'),
            "raw {c:?} in human output: {line:?}"
        );
    }
}

/// The exact bytes of a JSON text field: a string, or `{"bytes": base64}`.
fn bytes_of(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) => base64::engine::general_purpose::STANDARD
            .decode(o["bytes"].as_str().expect("bytes is a string"))
            .expect("valid base64"),
        other => panic!("not a text field: {other}"),
    }
}

/// Lines from `rx` until `n` of them satisfy `is_call`; all lines read.
fn until_calls(
    rx: &mpsc::Receiver<String>,
    n: usize,
    is_call: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out: Vec<String> = Vec::new();
    while out.iter().filter(|l| is_call(l.as_str())).count() < n {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => out.push(l),
            Err(_) => panic!("{n} calls never came: {out:#?}"),
        }
    }
    out
}

fn lines(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    until_calls(rx, n, |_| true)
}

/// Checks every human line of `what`: all inert, one line per call (none
/// forged by a newline in a name), each showing its name and the comm escaped.
fn check_human(what: &str, all: &[String]) {
    for line in all {
        assert_inert(line);
        assert!(
            !line.starts_with("12:00:00"),
            "{what}: a forged line: {all:#?}"
        );
    }
    let calls: Vec<&String> = all.iter().filter(|l| l.contains(COMM_SHOWN)).collect();
    assert_eq!(
        calls.len(),
        NAMES.len(),
        "{what}: one line per call: {all:#?}"
    );
    for (line, (_, shown)) in calls.iter().zip(NAMES) {
        assert!(line.contains(shown), "{what}: {shown} in {line}");
    }
}

/// Checks JSON call objects: the exact bytes of every name and of comm.
fn check_json(what: &str, calls: &[Value]) {
    assert_eq!(calls.len(), NAMES.len(), "{what}: {calls:#?}");
    for (call, (name, _)) in calls.iter().zip(NAMES) {
        let path = bytes_of(&call["path_out"]);
        assert!(path.ends_with(name), "{what}: {path:?} ends with {name:?}");
        assert_eq!(bytes_of(&call["comm"]), COMM, "{what}");
    }
}

#[test]
fn hostile_names_and_comm_are_inert_for_people_and_exact_in_json() {
    require_root();
    let fs = ext4();
    let dir = support::scratch_dir("hostile-sock");
    let socket = dir.join("copytrace.sock");
    let metrics = format!("127.0.0.1:{}", free_port());
    let d = daemon()
        .human()
        .args(["--pid", &std::process::id().to_string()])
        .arg("--socket")
        .arg(socket.to_str().unwrap_or(""))
        .args(["--metrics-listen", &metrics])
        .start();
    let (_h, human_rx) = support::tail_cli(&socket, &[]);
    let (_j, json_rx) = support::tail_cli(&socket, &["--json"]);
    wait_for(20, "two tail clients", || {
        let (_, body) = http_get(&metrics, "/metrics")?;
        (sample(&body, "copytrace_tail_clients")? == 2.0).then_some(())
    });

    for (name, _) in NAMES {
        let st = hostile_copy(&join(&fs.dir, name))
            .stdout(Stdio::null())
            .status()
            .expect("caller");
        assert!(st.success());
        let file = join(&fs.dir, name);
        assert!(
            std::fs::metadata(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&file))
                .is_ok(),
            "the file with the hostile name exists on ext4"
        );
    }

    let tail_human = until_calls(&human_rx, NAMES.len(), |l| l.contains(COMM_SHOWN));
    check_human("tail", &tail_human);
    let tail_json: Vec<Value> =
        until_calls(&json_rx, NAMES.len(), |l| l.contains(r#""type":"call""#))
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|v| v["type"] == "call")
            .map(|v| v["data"].clone())
            .collect();
    check_json("tail --json", &tail_json);
    check_human("daemon stdout", &d.stop_lines());

    // copytrace trace, both forms, on the same names: one traced program
    // makes every copy (each trace loads the probes, seconds under TCG).
    let out = dir.join("trace.txt");
    let jout = dir.join("trace.jsonl");
    let targets: Vec<String> = NAMES
        .iter()
        .map(|(name, _)| hex_arg(&join(&fs.dir, name)))
        .collect();
    let mut copies = vec![
        hex_arg(COMM),
        "copies".into(),
        "/proc/self/status".into(),
        "4096".into(),
    ];
    copies.extend(targets);
    let copies: Vec<&str> = copies.iter().map(String::as_str).collect();
    for (target, json) in [(&out, false), (&jout, true)] {
        let inner = caller::command("comm", &copies);
        let mut cmd = Command::new(copytrace_bin());
        cmd.arg("trace");
        if let Some(p) = support::suite::probe() {
            cmd.args(["--probe", &p]);
        }
        if json {
            cmd.arg("--json");
        }
        let st = cmd
            .arg("-o")
            .arg(target)
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args())
            .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdout(Stdio::null())
            .status()
            .expect("copytrace trace");
        assert!(st.success());
        let text = std::fs::read_to_string(target).expect("trace output is UTF-8");
        if json {
            let calls: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
                .filter(|v| v["type"] == "call")
                .map(|v| v["data"].clone())
                .collect();
            assert_eq!(calls.len(), NAMES.len(), "{text}");
            for ((name, _), call) in NAMES.iter().zip(&calls) {
                assert!(bytes_of(&call["path_out"]).ends_with(name), "{call:#}");
                assert_eq!(bytes_of(&call["comm"]), COMM);
            }
        } else {
            let calls: Vec<&str> = text.lines().filter(|l| l.contains(COMM_SHOWN)).collect();
            assert_eq!(calls.len(), NAMES.len(), "one line per call: {text}");
            for l in text.lines() {
                assert_inert(l);
            }
        }
    }
}

/// The call from `fd_in` the daemon reported.
fn copy_from(fd_in: &std::os::fd::OwnedFd, to: &Path) -> i32 {
    let out = support::open(to, libc::O_WRONLY | libc::O_CREAT);
    let r = support::cfr(support::raw(fd_in), None, support::raw(&out), None, 10, 0);
    assert_eq!(r, Ok(10));
    support::raw(fd_in)
}

fn event_for(events: &[Value], fd_in: i32, len: u64) -> &Value {
    let hits: Vec<&Value> = events
        .iter()
        .filter(|e| e["fd_in"] == fd_in && e["len"] == len)
        .collect();
    assert!(!hits.is_empty(), "no call from fd {fd_in}: {events:#?}");
    hits[hits.len() - 1]
}

fn path_str(v: &Value) -> Option<&str> {
    v.as_str()
}

#[test]
fn paths_follow_components_mounts_and_say_when_they_are_not_sure() {
    require_root();
    let d = support::watch();
    // A filesystem mounted after the daemon started, seen through a bind
    // mount of its /data only; /database is a sibling sharing the prefix.
    let fs = tmpfs("4m");
    for sub in ["data", "database"] {
        std::fs::create_dir(fs.path(sub)).expect("mkdir");
        std::fs::write(fs.path(sub).join("x"), vec![1u8; 100]).expect("write");
    }
    let bind = support::scratch_dir("bind-data");
    let _bind = support::bind_mount(&fs.path("data"), &bind);
    let through_bind = support::open(&bind.join("x"), libc::O_RDONLY);
    let a = copy_from(&through_bind, &bind.join("copy"));
    // Opened through the filesystem's own mount, which then goes away:
    // only the bind of /data remains, which does not hold /database.
    let detached = support::open(&fs.path("database").join("x"), libc::O_RDONLY);
    support::unmount(&fs.dir);
    let b = copy_from(&detached, &bind.join("copy2"));

    // One device mounted twice more (binds of a root), opened through a
    // mount that then goes away: both remaining places are named.
    let twice = tmpfs("4m");
    std::fs::write(twice.path("y"), vec![2u8; 100]).expect("write");
    let (m1, m2) = (
        support::scratch_dir("bind-1"),
        support::scratch_dir("bind-2"),
    );
    let _binds = [
        support::bind_mount(&twice.dir, &m1),
        support::bind_mount(&twice.dir, &m2),
    ];
    let via_first = support::open(&twice.path("y"), libc::O_RDONLY);
    support::unmount(&twice.dir);
    let c = copy_from(&via_first, &m1.join("copy"));

    // Deleted, and deeper than the kernel walks.
    let other = tmpfs("4m");
    std::fs::write(other.path("gone"), vec![3u8; 100]).expect("write");
    let gone = support::open(&other.path("gone"), libc::O_RDONLY);
    std::fs::remove_file(other.path("gone")).expect("unlink");
    let e = copy_from(&gone, &other.path("copy"));
    let mut deep = other.dir.clone();
    for i in 0..copytrace_common::PATH_DEPTH + 4 {
        deep = deep.join(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).expect("mkdir -p");
    std::fs::write(deep.join("z"), vec![4u8; 100]).expect("write");
    let deep_fd = support::open(&deep.join("z"), libc::O_RDONLY);
    let f = copy_from(&deep_fd, &other.path("copy-deep"));

    let events = d.stop();
    let ev = event_for(&events, a, 10);
    assert_eq!(
        path_str(&ev["path_in"]),
        bind.join("x").to_str(),
        "through the bind: {ev:#}"
    );
    let ev = event_for(&events, b, 10);
    assert_eq!(
        ev["path_in"],
        Value::Null,
        "/database/x is reachable through no mount: no guessed path: {ev:#}"
    );
    assert_eq!(ev["file_in"]["fs_path"], "/database/x");
    let ev = event_for(&events, c, 10);
    let mut seen = vec![ev["path_in"].as_str().unwrap_or("?").to_string()];
    seen.extend(
        ev["path_in_alternatives"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p.as_str().unwrap_or("?").to_string()),
    );
    seen.sort();
    let mut want = vec![
        m1.join("y").to_string_lossy().into_owned(),
        m2.join("y").to_string_lossy().into_owned(),
    ];
    want.sort();
    assert_eq!(seen, want, "both mount points named: {ev:#}");
    let ev = event_for(&events, e, 10);
    assert_eq!(ev["file_in"]["deleted"], true, "{ev:#}");
    let ev = event_for(&events, f, 10);
    assert_eq!(ev["file_in"]["path_complete"], false, "{ev:#}");
    assert_eq!(
        ev["path_in"],
        Value::Null,
        "a cut path is not joined: {ev:#}"
    );
    assert!(
        ev["file_in"]["fs_path"]
            .as_str()
            .is_some_and(|p| p.starts_with("…/") && p.ends_with("/z")),
        "{ev:#}"
    );
}

#[test]
fn a_second_mount_namespace_is_reported_as_the_host_sees_it() {
    require_root();
    let fs = tmpfs("4m");
    std::fs::write(fs.path("x"), vec![5u8; 100]).expect("write");
    let inside = support::scratch_dir("ns-view");
    let d = support::watch();
    let st = caller::command(
        "unshare-bind",
        &[
            fs.dir.to_str().unwrap_or(""),
            inside.to_str().unwrap_or(""),
            "copy",
            inside.join("x").to_str().unwrap_or(""),
            inside.join("y").to_str().unwrap_or(""),
            "55",
        ],
    )
    .stdout(Stdio::null())
    .status()
    .expect("caller");
    assert!(st.success());
    let events = d.stop();
    let ev = events
        .iter()
        .find(|e| e["len"] == 55)
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(
        path_str(&ev["path_in"]),
        fs.path("x").to_str(),
        "host view: {ev:#}"
    );
    assert_eq!(
        path_str(&ev["path_in_ns"]),
        inside.join("x").to_str(),
        "{ev:#}"
    );
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").expect("own mount ns");
    assert_ne!(
        format!("mnt:[{}]", ev["mnt_ns"]),
        own_ns.to_string_lossy(),
        "another namespace"
    );
    assert!(
        std::fs::read_dir(&inside)
            .expect("readdir")
            .next()
            .is_none(),
        "the bind existed only in the caller's namespace"
    );
}

/// CPU ticks (user + system) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm end") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

#[test]
fn running_out_of_file_descriptors_costs_no_cpu_no_log_and_no_counts() {
    require_root();
    let dir = support::scratch_dir("nofile");
    let socket = dir.join("copytrace.sock");
    let metrics = format!("127.0.0.1:{}", free_port());
    let d = daemon()
        .nofile(64)
        .args(["--pid", &std::process::id().to_string(), "--print", "none"])
        .arg("--socket")
        .arg(socket.to_str().unwrap_or(""))
        .args(["--metrics-listen", &metrics])
        .start();
    let series = r#"copytrace_calls_total{fs_in="proc",fs_out="proc",origin="syscall",verdict="silent_zero_copy"}"#;
    silent_copies(10);
    assert_eq!(
        http_get(&metrics, "/metrics").and_then(|(_, b)| sample(&b, series)),
        Some(10.0)
    );

    // More idle clients than the daemon has descriptors, on both doors.
    let mut held_tcp: Vec<TcpStream> = Vec::new();
    let mut held_unix: Vec<UnixStream> = Vec::new();
    for _ in 0..120 {
        if let Ok(s) = TcpStream::connect(&metrics) {
            held_tcp.push(s);
        }
        if let Ok(s) = UnixStream::connect(&socket) {
            held_unix.push(s);
        }
    }
    assert!(
        held_tcp.len() >= 64 && held_unix.len() >= 64,
        "clients connected"
    );
    let pid = d.child.id();
    let before = cpu_ticks(pid);
    let window = Instant::now();
    silent_copies(25);
    std::thread::sleep(Duration::from_secs(3));
    let ticks = cpu_ticks(pid) - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let busy = ticks as f64 / hz as f64 / window.elapsed().as_secs_f64();
    assert!(
        busy < 0.2,
        "the daemon used {:.0} % CPU while out of fds",
        busy * 100.0
    );
    let log = d.log();
    let complaints = log.lines().filter(|l| l.contains("failed accept")).count();
    assert!(
        (1..=4).contains(&complaints),
        "out of fds is said, once per interval: {complaints} lines: {log}"
    );

    // Descriptors come back: scraping and counting resume, nothing lost.
    drop(held_tcp);
    drop(held_unix);
    silent_copies(5);
    let count = wait_for(20, "a scrape after the flood", || {
        http_get(&metrics, "/metrics").and_then(|(_, b)| sample(&b, series))
    });
    assert_eq!(count, 40.0, "every call counted, during the flood too");
    let (mut h, rx) = support::tail_cli(&socket, &[]);
    wait_for(20, "a tail client after the flood", || {
        let (_, body) = http_get(&metrics, "/metrics")?;
        (sample(&body, "copytrace_tail_clients")? >= 1.0).then_some(())
    });
    silent_copies(1);
    let line = lines(&rx, 1);
    assert!(line[0].contains("silent_zero_copy"), "{line:?}");
    let _ = h.0.kill();
}

/// Runs `copytrace ARGS` inside a private mount namespace where `dir` is an
/// empty tmpfs (or holds `files`); returns exit code and stderr.
fn with_hidden(dir: &Path, files: &[(&str, &[u8])], args: &[&str]) -> (Option<i32>, String) {
    let bin = copytrace_bin();
    let mut spec: Vec<String> = vec![dir.to_string_lossy().into_owned()];
    for (name, content) in files {
        let hex: String = content.iter().map(|b| format!("{b:02x}")).collect();
        spec.push(format!("{name}={hex}"));
    }
    spec.push("--".into());
    spec.push("exec".into());
    spec.push(bin.to_string_lossy().into_owned());
    spec.extend(args.iter().map(|a| a.to_string()));
    let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
    let out = caller::command("overmount", &spec)
        .output()
        .expect("caller");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(code: Option<i32>, err: &str, needle: &str) {
    assert!(
        code.is_some_and(|c| c != 0),
        "non-zero exit: {code:?} {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].contains(needle), "{needle:?} in {err}");
}

#[test]
fn missing_btf_is_one_line_that_says_what_to_do() {
    require_root();
    let (code, err) = with_hidden(
        Path::new("/sys/kernel/btf"),
        &[],
        &["run", "--no-metrics", "--no-tail"],
    );
    assert_one_line_error(code, &err, "/sys/kernel/btf/vmlinux");
    assert!(
        err.contains("CONFIG_DEBUG_INFO_BTF"),
        "says what to do: {err}"
    );
}

#[test]
fn a_tracefs_format_that_does_not_match_is_one_line() {
    require_root();
    let events = support::tracefs_dir().join("events/syscalls/sys_enter_copy_file_range");
    let id = std::fs::read(events.join("id")).expect("tracepoint id");
    let format = b"name: sys_enter_copy_file_range\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:long surprise;\toffset:8;\tsize:8;\tsigned:1;\n";
    let (code, err) = with_hidden(
        &events,
        &[("id", &id), ("format", format)],
        &["run", "--probe", "tracepoint", "--no-metrics", "--no-tail"],
    );
    assert_one_line_error(code, &err, "format");
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// Runs `copytrace run` inside cgroup `cg` until it attached (then stops
/// it) or exited; returns the exit status and stderr.
fn run_in_cgroup(cg: &Path) -> (std::process::ExitStatus, String) {
    let bin = copytrace_bin();
    let mut args = vec![
        cg.to_str().unwrap_or(""),
        "exec",
        bin.to_str().unwrap_or(""),
        "run",
    ];
    args.extend(["--no-metrics", "--no-tail", "--print", "none"]);
    let probe = support::suite::probe();
    if let Some(p) = probe.as_deref() {
        args.extend(["--probe", p]);
    }
    let child = caller::command("cgroup", &args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("caller");
    let mut child = KillOnDrop(child);
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = err.clone();
    let pipe = child.0.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Ok(mut e) = sink.lock() {
                e.push_str(&l);
                e.push('\n');
            }
        }
    });
    let status = wait_for(60, "copytrace to attach or give up", || {
        if err.lock().is_ok_and(|e| e.contains("attached ")) {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
        }
        child.0.try_wait().ok().flatten()
    });
    let _ = reader.join();
    let text = err.lock().map(|e| e.clone()).unwrap_or_default();
    (status, text)
}

#[test]
fn a_map_that_cannot_be_created_is_one_line() {
    require_root();
    let (root, _own) = support::cgroup2_root(&support::scratch());
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        support::suite::skip(
            "no cgroup2 memory controller here (cgroup v1 owns it) to limit map memory with",
        );
        return;
    }
    if !kernel_at_least(5, 19) {
        support::suite::skip(
            "BPF map memory is charged to cgroups from 5.11, and memory.peak exists from 5.19",
        );
        return;
    }
    let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
    let cg = root.join(format!("copytrace-test-maps-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("create cgroup");
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Remove(cg.clone());
    // How much the daemon needs, maps included (the 4 MiB ring buffer is
    // charged to its cgroup)...
    let (status, err) = run_in_cgroup(&cg);
    assert!(err.contains("attached "), "{status}: {err}");
    let peak: u64 = std::fs::read_to_string(cg.join("memory.peak"))
        .expect("memory.peak")
        .trim()
        .parse()
        .expect("a number");
    // ...then less and less, until a limit lands where the maps are made.
    // Above that the limit binds only later, where the kernel verifies the
    // programs with memory charged to the cgroup, and it OOM-kills the
    // process rather than fail the load (the kernel's choice); or it does
    // not bind at all, the run's own peak being lower than the first's.
    // The 4 MiB event ring buffer makes the window where a map is refused
    // at least 4 MiB wide, so 2 MiB steps cannot jump over it.
    let cg2 = cg.join("limited");
    std::fs::create_dir_all(&cg2).expect("create cgroup");
    let _rm2 = Remove(cg2.clone());
    let _ = std::fs::write(cg.join("cgroup.subtree_control"), "+memory");
    let mut tried = Vec::new();
    for below_mib in (1u64..=47).step_by(2) {
        let below = below_mib << 20;
        if below >= peak {
            break;
        }
        std::fs::write(cg2.join("memory.max"), (peak - below).to_string()).expect("memory.max");
        let (status, err) = run_in_cgroup(&cg2);
        match status.code() {
            Some(0) if err.contains("attached ") => {
                tried.push(format!("{below_mib} MiB below the peak: ran (not binding)"));
            }
            Some(code) => {
                assert_one_line_error(Some(code), &err, "map");
                return;
            }
            None => tried.push(format!("{below_mib} MiB below the peak: {status}: {err}")),
        }
    }
    panic!("never a map error: {tried:#?}");
}
