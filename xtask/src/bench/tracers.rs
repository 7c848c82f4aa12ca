//! The tracers the benchmarks run around the loop child: copytrace itself
//! (a `copytrace run` child, [`start_copytrace`]), bpftrace doing the
//! tracepoint back-end's work or nothing at all, and strace.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use copytrace_testkit::net::free_port;

/// A running `copytrace run`, its metrics address and start-up time.
///
/// Not copytrace-testkit's `Daemon`, which the tests share: that one is
/// ready when its log says the probes attached, panics on failure, and is
/// killed when dropped. The benchmarks measure start-up to READY=1 (what
/// systemd waits for, over NOTIFY_SOCKET), report failures as errors, and
/// stop each daemon with SIGTERM so it detaches before the next case runs.
pub struct Daemon {
    pub child: Child,
    pub metrics: String,
    pub ready: Duration,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Which processes a benchmark's daemon watches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Every process: the daemon's default, whose cost the per-call
    /// figures report.
    Machine,
    /// Only this process and its children (`--pid`), so counts can be
    /// checked exactly; each entry then also checks the caller's parents.
    OnlyUs,
}

/// Starts `copytrace run` watching `watch` and waits for READY=1; the tail
/// socket is served at `tail` when given.
pub fn start_copytrace(
    root: &Path,
    watch: Watch,
    extra: &[&str],
    tail: Option<&Path>,
) -> Result<Daemon> {
    let sock = root.join("notify.sock");
    let _ = std::fs::remove_file(&sock);
    let notify = UnixDatagram::bind(&sock)?;
    notify.set_read_timeout(Some(Duration::from_secs(30)))?;
    let metrics = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let child = Command::new("target/release/copytrace")
        .args(["run", "--metrics-listen", &metrics])
        // The callers' own --print wins; by default the daemon only counts.
        .args(if extra.contains(&"--print") {
            &[][..]
        } else {
            &["--print", "none"][..]
        })
        .args(match tail {
            Some(socket) => vec!["--socket".into(), socket.as_os_str().to_owned()],
            None => vec!["--no-tail".into()],
        })
        .args(match watch {
            Watch::OnlyUs => vec!["--pid".to_string(), std::process::id().to_string()],
            Watch::Machine => Vec::new(),
        })
        .args(extra)
        .env("NOTIFY_SOCKET", &sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start copytrace")?;
    let mut buf = [0u8; 256];
    loop {
        let n = notify.recv(&mut buf).context("no READY=1 from copytrace")?;
        if buf[..n].starts_with(b"READY=1") {
            break;
        }
    }
    Ok(Daemon {
        child,
        metrics,
        ready: started.elapsed(),
    })
}

/// Starts bpftrace with a script doing the tracepoint back-end's work, and
/// waits until it attached.
pub fn start_bpftrace(root: &Path) -> Result<Child> {
    let script = root.join("copytrace.bt");
    std::fs::write(&script, include_str!("copytrace.bt"))?;
    attached_bpftrace(Command::new("bpftrace").arg(&script))
}

/// Starts bpftrace with empty programs on the two copy_file_range
/// tracepoints, and waits until it attached.
pub fn start_empty_tracepoints() -> Result<Child> {
    attached_bpftrace(Command::new("bpftrace").args([
        "-e",
        "tracepoint:syscalls:sys_enter_copy_file_range { } \
         tracepoint:syscalls:sys_exit_copy_file_range { }",
    ]))
}

/// Starts bpftrace and waits until it attached. It prints "Attaching N
/// probes..." where its output goes; read (and discard) that output on
/// stdout, as copytrace reads its events.
pub(super) fn attached_bpftrace(cmd: &mut Command) -> Result<Child> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start bpftrace")?;
    let out = child.stdout.take().context("bpftrace stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("Attaching") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("bpftrace did not attach within 60 s");
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

/// `strace -f` around `program`, tracing only copy_file_range (the calls
/// copytrace sees), its output discarded.
pub fn strace(program: &Path) -> Command {
    let mut c = Command::new("strace");
    c.args([
        "-f",
        "-qq",
        "-e",
        "trace=copy_file_range",
        "-o",
        "/dev/null",
    ])
    .arg(program);
    c
}
