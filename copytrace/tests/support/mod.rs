//! Shared pieces of the kernel tests: a real `copytrace` child process, real
//! mounts, and raw `copy_file_range(2)` calls. Nothing here is faked.
#![allow(dead_code)] // each test file uses a different subset

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the copytrace binary under test.
pub fn copytrace_bin() -> &'static str {
    env!("CARGO_BIN_EXE_copytrace")
}

/// Fails the test loudly unless it can load probes: these tests never pass by skipping.
pub fn require_root() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "KERNEL TESTS NOT RUN: they load real eBPF probes and need root; run `cargo xtask test` as root"
        );
    }
}

/// A running `copytrace run --json --pid <this test process>`.
pub struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon following this process, and waits until its probes are attached.
    pub fn start(extra: &[&str]) -> Self {
        require_root();
        let pid = std::process::id().to_string();
        let mut child = Command::new(copytrace_bin())
            .args(["run", "--json", "--pid", &pid, "--no-metrics", "--no-tail"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn copytrace");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = stderr_text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("attached") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "PROBES DID NOT LOAD: copytrace exited with {status}: {}",
                    stderr_text.lock().map(|s| s.clone()).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("copytrace did not attach its probes within 30 s");
            }
        }
        Daemon {
            child,
            lines: rx,
            stderr: stderr_text,
        }
    }

    /// Stops the daemon with SIGINT and returns every call it printed.
    pub fn stop(mut self) -> Vec<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait copytrace");
        assert!(
            status.success(),
            "copytrace exited with {status}: {}",
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        );
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert_eq!(v["type"], "call", "{line}");
            out.push(v["data"].clone());
        }
        out
    }
}

/// `copy_file_range(2)` itself, so tests choose every argument.
pub fn cfr(
    fd_in: i32,
    off_in: Option<&mut i64>,
    fd_out: i32,
    off_out: Option<&mut i64>,
    len: usize,
    flags: u32,
) -> Result<usize, i32> {
    let p = |o: Option<&mut i64>| o.map_or(std::ptr::null_mut(), |r| r as *mut i64);
    // SAFETY: offsets are null or valid pointers for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_copy_file_range,
            fd_in,
            p(off_in),
            fd_out,
            p(off_out),
            len,
            flags,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as usize)
    }
}

/// Opens a path with raw flags.
pub fn open(path: &Path, flags: i32) -> OwnedFd {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    assert!(
        fd >= 0,
        "open {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just opened and is ours.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A filesystem mounted for one test, unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
    image: Option<PathBuf>,
}

fn unique_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Mount {
    /// A tmpfs of `size` (e.g. "64k").
    pub fn tmpfs(size: &str) -> Self {
        let dir = unique_dir("tmpfs");
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir));
        Mount { dir, image: None }
    }

    /// A fresh ext4 filesystem on a loop-mounted image.
    pub fn ext4() -> Self {
        let dir = unique_dir("ext4");
        let image = dir.with_extension("img");
        let f = std::fs::File::create(&image).expect("image");
        f.set_len(32 << 20).expect("size image");
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&dir));
        Mount {
            dir,
            image: Some(image),
        }
    }

    /// A path inside the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(img) = &self.image {
            let _ = std::fs::remove_file(img);
        }
    }
}

/// Writes `len` bytes of a repeating pattern to `path`.
pub fn write_file(path: &Path, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(path, data).expect("write");
}

/// The one event whose fds and length match; panics with all events otherwise.
pub fn find(events: &[Value], fd_in: i32, fd_out: i32, len: u64) -> &Value {
    let hits: Vec<&Value> = events
        .iter()
        .filter(|e| e["fd_in"] == fd_in && e["fd_out"] == fd_out && e["len"] == len)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one call fd {fd_in}->{fd_out} len {len}, got {}: {events:#?}",
        hits.len()
    );
    hits[0]
}

/// Raw fd number of an owned fd.
pub fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}

/// s_magic values the tests assert (include/uapi/linux/magic.h).
pub mod magic {
    pub const EXT4: u64 = 0xef53;
    pub const TMPFS: u64 = 0x0102_1994;
    pub const PROC: u64 = 0x9fa0;
    pub const PIPEFS: u64 = 0x5049_5045;
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A plain HTTP/1.0 GET; returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Polls `f` every 100 ms until it returns Some, or panics after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `copytrace run` with arbitrary arguments, stderr collected.
pub struct Service {
    pub child: Child,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Service {
    /// Spawns `copytrace run ARGS` with extra environment, output to /dev/null except stderr.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        require_root();
        let mut cmd = Command::new(copytrace_bin());
        cmd.arg("run")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn copytrace run");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Service { child, stderr }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
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
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
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
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `n` procfs → procfs silent zero copies from this process.
pub fn silent_copies(n: usize) {
    let src = open(Path::new("/proc/self/status"), libc::O_RDONLY);
    let dst = open(Path::new("/proc/self/comm"), libc::O_WRONLY);
    for _ in 0..n {
        assert_eq!(cfr(raw(&src), None, raw(&dst), None, 4096, 0), Ok(0));
    }
}

/// Makes `n` EBADF calls (fd 900 is not open) from this process.
pub fn ebadf_calls(n: usize) {
    for _ in 0..n {
        assert_eq!(cfr(900, None, 901, None, 1, 0), Err(libc::EBADF));
    }
}

/// The value of one sample line `name{labels} value` in a scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Kills and reaps a helper process when dropped, even if the test panicked.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
