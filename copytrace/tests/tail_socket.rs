//! The live tail: a real daemon, its real Unix socket, real calls, and both
//! the `copytrace tail` client and raw protocol clients.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    copytrace_bin, daemon, ebadf_calls, free_port, http_get, sample, silent_copies, suite, tmpfs,
    wait_for, Mount,
};

/// A daemon serving the tail socket and metrics, following this process.
struct Tailed {
    svc: support::Daemon,
    socket: PathBuf,
    metrics: String,
}

fn start_daemon(tag: &str, extra: &[&str]) -> Tailed {
    let dir = support::scratch_dir(&format!("tail-{tag}"));
    serve_on(&dir.join("copytrace.sock"), extra)
}

/// `copytrace run` following this process, serving its tail on `socket`.
fn serve_on(socket: &Path, extra: &[&str]) -> Tailed {
    let metrics = format!("127.0.0.1:{}", free_port());
    let svc = daemon()
        .arg("--socket")
        .arg(socket.to_str().unwrap_or(""))
        .args(["--metrics-listen", &metrics])
        .args(["--pid", &std::process::id().to_string(), "--print", "none"])
        .args(extra)
        .start();
    Tailed {
        svc,
        socket: socket.to_path_buf(),
        metrics,
    }
}

impl Tailed {
    fn metric(&self, series: &str) -> Option<f64> {
        http_get(&self.metrics, "/metrics").and_then(|(_, b)| sample(&b, series))
    }

    fn wait_clients(&self, n: usize) {
        wait_for(20, "tail clients to connect", || {
            (self.metric("copytrace_tail_clients")? as usize == n).then_some(())
        });
    }
}

/// A raw protocol client.
struct Raw {
    // Held so the connection stays open as long as the client lives.
    _stream: UnixStream,
    lines: BufReader<UnixStream>,
}

impl Raw {
    fn connect(socket: &Path, hello: &str) -> Self {
        let mut stream = UnixStream::connect(socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        writeln!(stream, "{hello}").expect("send hello");
        let lines = BufReader::new(stream.try_clone().expect("clone"));
        Raw {
            _stream: stream,
            lines,
        }
    }

    fn next(&mut self) -> Value {
        let mut line = String::new();
        let n = self.lines.read_line(&mut line).expect("read line");
        assert!(n > 0, "connection closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Reads past hello and history up to the `live` marker, returning the replayed calls.
    fn until_live(&mut self) -> Vec<Value> {
        let hello = self.next();
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["data"]["version"], 1);
        suite::assert_backend(hello["data"]["backend"].as_str().unwrap_or("?"));
        let mut replay = Vec::new();
        loop {
            let m = self.next();
            match m["type"].as_str() {
                Some("live") => return replay,
                Some("call") => replay.push(m["data"].clone()),
                _ => panic!("unexpected before live: {m}"),
            }
        }
    }
}

fn hello(filter: &str, history: usize) -> String {
    format!(
        r#"{{"type":"hello","data":{{"version":1,"filter":{{{filter}}},"history":{history}}}}}"#
    )
}

fn collect(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => out.push(l),
            Err(_) => panic!("got {} of {n} lines: {out:#?}", out.len()),
        }
    }
    out
}

fn quiet(rx: &mpsc::Receiver<String>) {
    if let Ok(extra) = rx.recv_timeout(Duration::from_millis(500)) {
        panic!("unexpected extra line: {extra}");
    }
}

fn ok_copies(fs: &Mount, n: usize) {
    support::write_file(&fs.path("src"), 100);
    let src = support::open(&fs.path("src"), libc::O_RDONLY);
    let dst = support::open(&fs.path("dst"), libc::O_WRONLY | libc::O_CREAT);
    for _ in 0..n {
        let mut off = 0i64;
        assert_eq!(
            support::cfr(
                support::raw(&src),
                Some(&mut off),
                support::raw(&dst),
                None,
                100,
                0
            ),
            Ok(100)
        );
    }
}

#[test]
fn tail_cli_streams_suspicious_calls_and_filters() {
    let d = start_daemon("filters", &[]);
    let fs = tmpfs("1m");
    let (_a, default) = support::tail_cli(&d.socket, &["--json"]);
    let (_b, all) = support::tail_cli(&d.socket, &["--json", "--all"]);
    let (_c, errors) = support::tail_cli(&d.socket, &["--json", "--verdict", "error"]);
    let (_d, tmpfs) = support::tail_cli(&d.socket, &["--json", "--all", "--fs", "tmpfs"]);
    let (_e, other_pid) = support::tail_cli(&d.socket, &["--json", "--all", "--pid", "1"]);
    let (_f, human) = support::tail_cli(
        &d.socket,
        &["--comm", "nobody-has-this", "--comm", "ct-human"],
    );
    d.wait_clients(6);

    silent_copies(3);
    ok_copies(&fs, 2);
    ebadf_calls(1);
    // A caller process named ct-human: the only call the human client wants.
    let named = support::caller::command("comm", &["ct-human", "silent", "1"])
        .status()
        .expect("caller");
    assert!(named.success());

    let verdicts = |lines: Vec<String>| -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert_eq!(v["type"], "call", "{l}");
                v["data"]["verdict"].as_str().unwrap_or("?").to_string()
            })
            .collect()
    };
    assert_eq!(
        verdicts(collect(&default, 5)),
        [
            "silent_zero_copy",
            "silent_zero_copy",
            "silent_zero_copy",
            "error",
            "silent_zero_copy"
        ]
    );
    quiet(&default);
    assert_eq!(
        verdicts(collect(&all, 7)),
        [
            "silent_zero_copy",
            "silent_zero_copy",
            "silent_zero_copy",
            "ok",
            "ok",
            "error",
            "silent_zero_copy"
        ]
    );
    assert_eq!(verdicts(collect(&errors, 1)), ["error"]);
    assert_eq!(verdicts(collect(&tmpfs, 2)), ["ok", "ok"]);
    quiet(&other_pid);
    // The human client shows exactly the named caller's call, as one text line.
    let line = collect(&human, 1).remove(0);
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.get(1), Some(&"ct-human"), "COMM column: {line}");
    assert_eq!(
        cols.get(3),
        Some(&"silent_zero_copy"),
        "VERDICT column: {line}"
    );
    assert_eq!(cols.get(4), Some(&"0/4096"), "RESULT column: {line}");
    assert!(line.contains("proc:/proc/"), "{line}");
    quiet(&human);
}

#[test]
fn human_output_is_plain_text_off_a_tty() {
    let d = start_daemon("human", &[]);
    let (_t, rx) = support::tail_cli(&d.socket, &[]);
    d.wait_clients(1);
    silent_copies(1);
    let line = collect(&rx, 1).remove(0);
    assert!(line.contains(" silent_zero_copy "), "{line}");
    assert!(line.contains("proc:/proc/"), "{line}");
    assert!(
        !line.contains('\u{1b}'),
        "no colour codes when stdout is not a TTY: {line:?}"
    );
}

#[test]
fn history_replays_the_last_suspicious_calls() {
    let d = start_daemon("history", &["--history", "3"]);
    let fs = tmpfs("1m");
    silent_copies(2);
    ok_copies(&fs, 2);
    ebadf_calls(2);
    // 4 suspicious calls happened, the daemon keeps 3.
    // Kernel-side counts are immediate; history fills as the reported
    // (suspicious) calls are read.
    // Their records are held until their stacks are named.
    wait_for(20, "the four suspicious calls delivered", || {
        let received = d.metric("copytrace_events_received_total")?;
        let held = d.metric("copytrace_records_held")?;
        (received >= 4.0 && held == 0.0).then_some(())
    });
    let mut c = Raw::connect(&d.socket, &hello("", 2));
    let replay = c.until_live();
    let v: Vec<&str> = replay
        .iter()
        .map(|r| r["verdict"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(v, ["error", "error"]);
    let mut c = Raw::connect(&d.socket, &hello("", usize::MAX));
    let replay = c.until_live();
    let v: Vec<&str> = replay
        .iter()
        .map(|r| r["verdict"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(v, ["silent_zero_copy", "error", "error"], "bounded to 3");
    let (_t, rx) = support::tail_cli(&d.socket, &["--json", "--since-start"]);
    assert_eq!(collect(&rx, 3).len(), 3);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

#[test]
fn stuck_client_is_told_what_it_missed_and_blocks_nobody() {
    let d = start_daemon("stuck", &[]);
    let daemon_pid = d.svc.child.id();
    // Subscribes to everything, then never reads while 100k calls happen.
    let mut stuck = Raw::connect(&d.socket, &hello(r#""all":true"#, 0));
    assert_eq!(stuck.next()["type"], "hello");
    let mut reader = Raw::connect(&d.socket, &hello(r#""verdict":["error"]"#, 0));
    reader.until_live();
    d.wait_clients(2);
    let rss_before = rss_kib(daemon_pid);

    let mut load = support::caller::command("silent", &["100000"])
        .stderr(Stdio::null())
        .spawn()
        .expect("load");
    let mut peak = 0;
    while load.try_wait().expect("wait").is_none() {
        peak = peak.max(rss_kib(daemon_pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let calls =
        d.metric(r#"copytrace_calls_total{fs_in="proc",fs_out="proc",origin="syscall",verdict="silent_zero_copy"}"#);
    assert_eq!(calls, Some(100_000.0), "counted exactly");
    // Every reported call was read or counted as lost: the ring buffer has
    // room again, so the next call is delivered.
    wait_for(120, "the backlog read", || {
        let seen = d.metric("copytrace_events_received_total")?
            + d.metric("copytrace_events_lost_total")?;
        (seen >= 100_000.0).then_some(())
    });
    // The reading client was not held up: it gets the next call, with no lag notice.
    ebadf_calls(1);
    let got = reader.next();
    assert_eq!(got["type"], "call", "{got}");
    assert_eq!(got["data"]["verdict"], "error");

    // Now the stuck client reads: a lagged notice comes before it catches up.
    let mut lagged = None;
    for _ in 0..200_000 {
        let m = stuck.next();
        if m["type"] == "lagged" {
            lagged = m["data"]["missed"].as_u64();
            break;
        }
    }
    let missed = lagged.expect("a lagged notice");
    assert!(missed > 0);
    let dropped = d.metric("copytrace_tail_dropped_total").unwrap_or(0.0);
    assert!(
        dropped >= missed as f64,
        "dropped metric {dropped} < {missed}"
    );
    eprintln!("stuck client: RSS {rss_before} KiB before, peak {peak} KiB, {missed} missed");
    assert!(
        peak < rss_before + 64 * 1024,
        "daemon memory grew from {rss_before} to {peak} KiB"
    );
}

#[test]
fn garbage_and_disconnects_are_dropped_cleanly() {
    let d = start_daemon("garbage", &[]);
    let mut bad = UnixStream::connect(&d.socket).expect("connect");
    writeln!(bad, "hello world").expect("send");
    let mut line = String::new();
    BufReader::new(bad.try_clone().expect("clone"))
        .read_line(&mut line)
        .expect("read");
    let v: Value = serde_json::from_str(&line).expect("json error line");
    assert_eq!(v["type"], "error");
    assert!(
        v["data"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("bad hello"),
        "{line}"
    );

    let mut old = Raw::connect(&d.socket, &hello("", 0));
    assert_eq!(old.next()["type"], "hello");
    let mut v2 = UnixStream::connect(&d.socket).expect("connect");
    writeln!(v2, r#"{{"type":"hello","data":{{"version":99}}}}"#).expect("send");
    let mut line = String::new();
    BufReader::new(v2).read_line(&mut line).expect("read");
    assert!(line.contains("protocol version 99 not supported"), "{line}");

    // Mid-stream disconnects, then a healthy client still works.
    for _ in 0..5 {
        let c = Raw::connect(&d.socket, &hello(r#""all":true"#, 0));
        drop(c);
    }
    drop(old);
    let mut good = Raw::connect(&d.socket, &hello("", 0));
    good.until_live();
    silent_copies(1);
    assert_eq!(good.next()["data"]["verdict"], "silent_zero_copy");
    d.wait_clients(1);
}

#[test]
fn fifty_clients_each_get_every_call() {
    let d = start_daemon("fifty", &[]);
    let mut clients: Vec<Raw> = (0..50)
        .map(|_| Raw::connect(&d.socket, &hello("", 0)))
        .collect();
    for c in &mut clients {
        c.until_live();
    }
    d.wait_clients(50);
    silent_copies(10);
    for c in &mut clients {
        for _ in 0..10 {
            assert_eq!(c.next()["data"]["verdict"], "silent_zero_copy");
        }
    }
}

#[test]
fn unauthorized_uid_is_refused() {
    let d = start_daemon("auth", &[]);
    // Open the file mode so only the SO_PEERCRED check stands in the way.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = Command::new(copytrace_bin())
        .args(["tail", "--socket"])
        .arg(&d.socket)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("tail as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}; stderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        err.trim(),
        "copytrace: error: daemon: permission denied: uid 65534 is neither root nor in group copytrace"
    );
}

#[test]
fn daemon_restart_ends_tail_or_is_followed() {
    let mut d = start_daemon("restart", &[]);
    let (mut plain, _) = support::tail_cli(&d.socket, &["--json"]);
    let (follow, follow_rx) = support::tail_cli(&d.socket, &["--json", "--follow"]);
    d.wait_clients(2);
    d.svc.signal(libc::SIGTERM);
    assert_eq!(d.svc.wait_exit(10), Some(0));
    let status = wait_for(10, "plain tail to exit", || {
        plain.0.try_wait().ok().flatten()
    });
    assert_eq!(
        status.code(),
        Some(2),
        "tail without --follow exits non-zero"
    );

    // Same socket path, new daemon: the --follow client reconnects.
    let again = serve_on(&d.socket, &[]);
    again.wait_clients(1);
    silent_copies(1);
    let line = collect(&follow_rx, 1).remove(0);
    assert!(line.contains("silent_zero_copy"), "{line}");
    drop(follow);
}

#[test]
fn a_file_at_the_socket_path_is_never_replaced() {
    support::require_root();
    let dir = support::scratch_dir("not-a-socket");
    let path = dir.join("copytrace.sock");
    std::fs::write(&path, b"precious").expect("write");
    let out = Command::new(copytrace_bin())
        .args(["run", "--no-metrics", "--socket"])
        .arg(&path)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).expect("still there"), b"precious");
}
