//! Booting a guest under qemu with TCG (the paravirtual KVM of the CI
//! machines cannot run stock kernels) and reading its serial console.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use copytrace_guest::console::{ConsoleLine, Kind};

use crate::arch::Arch;

/// How one boot went.
pub struct Console {
    /// Every line the guest printed.
    pub lines: Vec<String>,
    /// Wall time from start to power-off (or timeout).
    pub elapsed: Duration,
    /// The guest did not finish in time and was killed.
    pub timed_out: bool,
}

/// The qemu command line common to every guest of `arch`.
pub fn base_command(arch: Arch, memory_mib: u32) -> Command {
    let mut cmd = Command::new(arch.qemu());
    if arch == Arch::Aarch64 {
        cmd.args(["-M", "virt"]);
    }
    cmd.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
    ])
    .args(["-m", &memory_mib.to_string()]);
    cmd
}

/// Boots `kernel` with `initrd` (no network, no disk); `on_line` sees every
/// console line as it arrives.
pub fn boot_initramfs(
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Console> {
    let mut cmd = base_command(arch, 2048);
    cmd.args(["-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 quiet rdinit=/init",
            arch.console()
        ));
    watch(cmd, timeout, |l| {
        on_line(l);
        ConsoleLine::parse(l).map(|c| c.kind) != Some(Kind::Done)
    })
}

/// Runs a qemu command, feeding console lines to `on_line` until it returns
/// false, qemu exits, or `timeout` passes.
pub fn watch(
    mut cmd: Command,
    timeout: Duration,
    mut on_line: impl FnMut(&str) -> bool,
) -> Result<Console> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start qemu (cargo xtask provision installs it)")?;
    let out = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut console = Console {
        lines: Vec::new(),
        elapsed: Duration::ZERO,
        timed_out: false,
    };
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let l = l.trim_end_matches('\r').to_string();
                let more = on_line(&l);
                console.lines.push(l);
                if !more {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                console.timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // The guest powers itself off after its last line; give it a moment.
    let grace = Instant::now() + Duration::from_secs(5);
    while Instant::now() < grace && child.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    console.elapsed = start.elapsed();
    Ok(console)
}

/// A running guest whose console can be read and written (the host answers
/// a guest that waits for it).
pub struct Live {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    started: Instant,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Live {
    /// Starts a qemu command with its console on pipes.
    pub fn start(mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start qemu (cargo xtask provision installs it)")?;
        let out = child.stdout.take().context("qemu stdout")?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l.trim_end_matches('\r').to_string());
            }
        });
        Ok(Live {
            child,
            stdin,
            lines: rx,
            started: Instant::now(),
            seen: Vec::new(),
        })
    }

    /// The next console line, or None after `timeout` or when qemu is gone.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let l = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }

    /// Types a line on the guest's console.
    pub fn send(&mut self, line: &str) -> Result<()> {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().context("qemu stdin closed")?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits up to `grace` for the guest to power off, then kills it.
    pub fn finish(mut self, grace: Duration) -> Vec<String> {
        let end = Instant::now() + grace;
        while Instant::now() < end && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen
    }
}
