//! A real `copytrace run` child process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::suite;

/// The capabilities deploy/copytrace.service grants (names as in its
/// CapabilityBoundingSet, numbers from linux/capability.h).
pub const UNIT_CAPABILITIES: [(&str, u32); 4] = [
    ("CAP_BPF", 39),
    ("CAP_PERFMON", 38),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_CHOWN", 0),
];

/// The highest capability number any kernel here knows (dropping an
/// unknown one fails with EINVAL and is skipped).
const CAP_LAST: u32 = 63;

/// How to start a daemon.
pub struct DaemonBuilder {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    output: Output,
    nofile: Option<u64>,
    die_with_parent: bool,
    unit_capabilities: bool,
}

/// What the daemon prints on stdout, and whether it is collected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Discarded,
    Json,
    Human,
}

/// A running `copytrace run`: its log (stderr) is collected as it comes,
/// and with [`DaemonBuilder::events`] so are its JSON lines (stdout).
pub struct Daemon {
    /// The child process.
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    events: Option<mpsc::Receiver<String>>,
}

impl DaemonBuilder {
    /// One argument after `copytrace run`.
    pub fn arg(mut self, a: impl AsRef<str>) -> Self {
        self.args.push(a.as_ref().to_string());
        self
    }

    /// Several arguments after `copytrace run`.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// An environment variable for the daemon.
    pub fn env(mut self, k: &str, v: impl AsRef<str>) -> Self {
        self.env.push((k.to_string(), v.as_ref().to_string()));
        self
    }

    /// Prints every call as JSON (`--json --print all`) and collects stdout.
    pub fn events(mut self) -> Self {
        self.output = Output::Json;
        self
    }

    /// Prints suspicious calls as human lines and collects stdout.
    pub fn human(mut self) -> Self {
        self.output = Output::Human;
        self
    }

    /// Starts the daemon with RLIMIT_NOFILE set to `n`.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Has the kernel stop the daemon (SIGTERM) when the thread that
    /// spawns it exits: for a daemon a whole test binary shares, spawned
    /// from a thread that lives as long as the process.
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// Starts the daemon without waiting for anything.
    pub fn spawn(self) -> Daemon {
        suite::require_root();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run");
        match self.output {
            Output::Json => {
                cmd.args(["--json", "--print", "all"]);
            }
            Output::Human => {
                cmd.args(["--print", "suspicious"]);
            }
            Output::Discarded => {}
        }
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and the closure touches
            // nothing but the copied limit.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        if self.unit_capabilities {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; no memory is touched.
            unsafe {
                cmd.pre_exec(|| {
                    for cap in 0..=CAP_LAST {
                        if UNIT_CAPABILITIES.iter().any(|(_, c)| *c == cap) {
                            continue;
                        }
                        if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                            && *libc::__errno_location() != libc::EINVAL
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        if self.die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; no memory is touched.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.args(&self.args);
        // The run's back-end, unless the test chose one itself.
        if let Some(p) = suite::probe() {
            if !self.args.iter().any(|a| a == "--probe") {
                cmd.args(["--probe", &p]);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(if self.output != Output::Discarded {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let events = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            rx
        });
        Daemon {
            child,
            stderr,
            events,
        }
    }

    /// Runs the daemon as root with only the capabilities the shipped unit
    /// grants ([`UNIT_CAPABILITIES`]): no CAP_SETUID or CAP_SETGID, so its
    /// symbolizer stays uid 0 as under the unit, and no CAP_SYS_PTRACE.
    pub fn unit_capabilities(mut self) -> Self {
        self.unit_capabilities = true;
        self
    }

    /// Starts the daemon and waits until its probes are attached; a daemon
    /// that exits first fails the test with its log ("PROBES DID NOT LOAD").
    pub fn start(self) -> Daemon {
        let mut d = self.spawn();
        // Under TCG the verifier alone takes tens of seconds per load (more
        // on arm64, and more again at --log-level debug).
        d.wait_attached(if suite::in_guest() { 180 } else { 60 });
        d
    }
}

impl Daemon {
    /// A daemon of `bin` (see [`suite::copytrace_bin`]).
    pub fn builder(bin: impl AsRef<Path>) -> DaemonBuilder {
        DaemonBuilder {
            bin: bin.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            output: Output::Discarded,
            nofile: None,
            die_with_parent: false,
            unit_capabilities: false,
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The back-end the daemon said it attached.
    pub fn backend(&self) -> Option<String> {
        let log = self.log();
        let at = log.find("attached ")? + "attached ".len();
        log[at..].split_whitespace().next().map(str::to_string)
    }

    fn wait_attached(&mut self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        // Looked at in place: a copy of the whole log every 20 ms competes
        // with the loading daemon for CPU in a slow guest.
        let attached = |log: &Mutex<String>| {
            log.lock()
                .is_ok_and(|s| s.contains(" back-end") && s.contains("attached "))
        };
        while !attached(&self.stderr) {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "PROBES DID NOT LOAD: copytrace exited with {status}: {}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "copytrace did not attach its probes within {secs} s: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let backend = self.backend().unwrap_or_default();
        suite::assert_backend(&backend);
    }

    /// The next line the daemon printed on stdout, waiting up to `timeout`
    /// (needs [`DaemonBuilder::events`] or [`DaemonBuilder::human`]).
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.events.as_ref()?.recv_timeout(timeout).ok()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log().contains(needle) {
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "copytrace exited ({st}) before logging {needle:?}: {}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit (up to `secs`), returning the exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("copytrace did not exit within {secs} s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGINT, asserts a clean exit, and returns
    /// every line it printed (needs [`DaemonBuilder::events`] or
    /// [`DaemonBuilder::human`]).
    pub fn stop_lines(mut self) -> Vec<String> {
        self.signal(libc::SIGINT);
        let code = self.wait_exit(30);
        assert_eq!(code, Some(0), "copytrace exited badly: {}", self.log());
        let rx = self
            .events
            .take()
            .expect("started with events() or human()");
        let mut out = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
            out.push(line);
        }
        out
    }

    /// Stops the daemon like [`Daemon::stop_lines`] and returns the `data`
    /// of every call it printed (needs [`DaemonBuilder::events`]).
    pub fn stop(self) -> Vec<Value> {
        self.stop_lines()
            .iter()
            .map(|line| {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .filter(|v| v["type"] == "call")
            .map(|v| v["data"].clone())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
