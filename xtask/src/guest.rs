//! What runs inside a kernel-matrix guest. The same static xtask binary is
//! the guest's `/init` (`guest-init`) and the scenario program that
//! `copytrace trace` runs (`guest-scenarios`). Results go to the serial
//! console as `CT-…` lines, which `matrix` reads on the host.

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// One scenario: a unique requested length identifies its call in the output.
pub struct Scenario {
    pub name: &'static str,
    pub len: usize,
    /// Verdict expected on every kernel and back-end.
    pub verdict: &'static str,
}

/// Every scenario, in the order `guest-scenarios` runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "ext4 -> ext4",
        len: 11111,
        verdict: "ok",
    },
    Scenario {
        name: "tmpfs -> tmpfs",
        len: 2222,
        verdict: "ok",
    },
    Scenario {
        name: "/proc/self/status -> /proc/self/comm",
        len: 33333,
        verdict: "silent_zero_copy",
    },
    Scenario {
        name: "cgroup2 cgroup.procs -> cgroup.procs",
        len: 44444,
        verdict: "silent_zero_copy",
    },
    Scenario {
        name: "tracefs trace -> trace_marker",
        len: 55555,
        verdict: "silent_zero_copy",
    },
    Scenario {
        name: "/proc/self/status -> tmpfs",
        len: 66666,
        verdict: "cross_fs",
    },
    Scenario {
        name: "tmpfs at EOF",
        len: 77777,
        verdict: "ok",
    },
    Scenario {
        name: "pipe source",
        len: 88888,
        verdict: "error",
    },
    Scenario {
        name: "closed fd",
        len: 99999,
        verdict: "error",
    },
    Scenario {
        name: "full 64k tmpfs",
        len: 40960,
        verdict: "short_write",
    },
];

fn cstr(s: &str) -> Result<CString> {
    Ok(CString::new(s)?)
}

fn mount(src: &str, target: &str, fstype: &str, data: &str) -> Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f, d) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: valid C strings.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, d.as_ptr().cast()) };
    if rc != 0 {
        bail!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn open(path: &str, flags: i32) -> Result<i32> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    if fd < 0 {
        bail!("open {path}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn cfr(a: i32, off_in: Option<i64>, b: i32, len: usize) -> i64 {
    let mut off = off_in.unwrap_or(0);
    let p: *mut i64 = if off_in.is_some() {
        &mut off
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: valid or null pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_copy_file_range,
            a,
            p,
            b,
            std::ptr::null_mut::<i64>(),
            len,
            0u32,
        )
    };
    if r < 0 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        r
    }
}

/// Makes every scenario's call (run under `copytrace trace`).
pub fn scenarios() -> Result<()> {
    let rw = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let len = |name: &str| {
        SCENARIOS
            .iter()
            .find(|s| s.name == name)
            .map_or(1, |s| s.len)
    };
    let (a, b) = (
        open("/mnt/ext4/src", libc::O_RDONLY)?,
        open("/mnt/ext4/dst", rw)?,
    );
    println!("ext4: {}", cfr(a, Some(0), b, len("ext4 -> ext4")));
    std::fs::write("/tmp/a", vec![7u8; 8192])?;
    let (a, b) = (open("/tmp/a", libc::O_RDONLY)?, open("/tmp/b", rw)?);
    println!("tmpfs: {}", cfr(a, Some(0), b, len("tmpfs -> tmpfs")));
    let (p, c) = (
        open("/proc/self/status", libc::O_RDONLY)?,
        open("/proc/self/comm", libc::O_WRONLY)?,
    );
    println!(
        "proc: {}",
        cfr(p, None, c, len("/proc/self/status -> /proc/self/comm"))
    );
    let _ = std::fs::create_dir_all("/sys/fs/cgroup/ct");
    let (g, h) = (
        open("/sys/fs/cgroup/cgroup.procs", libc::O_RDONLY)?,
        open("/sys/fs/cgroup/ct/cgroup.procs", libc::O_WRONLY)?,
    );
    println!(
        "cgroup: {}",
        cfr(g, None, h, len("cgroup2 cgroup.procs -> cgroup.procs"))
    );
    let (t, m) = (
        open("/sys/kernel/tracing/trace", libc::O_RDONLY)?,
        open("/sys/kernel/tracing/trace_marker", libc::O_WRONLY)?,
    );
    println!(
        "tracefs: {}",
        cfr(t, None, m, len("tracefs trace -> trace_marker"))
    );
    let x = open("/tmp/x", rw)?;
    println!(
        "exdev: {}",
        cfr(p, None, x, len("/proc/self/status -> tmpfs"))
    );
    println!("eof: {}", cfr(a, Some(8192), b, len("tmpfs at EOF")));
    let mut fds = [0i32; 2];
    // SAFETY: valid array.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    println!("pipe: {}", cfr(fds[0], None, b, len("pipe source")));
    println!("ebadf: {}", cfr(900, None, b, len("closed fd")));
    mount("tmpfs", "/small", "tmpfs", "size=64k")?;
    std::fs::write("/small/filler", vec![1u8; 40960])?;
    let (f, d) = (
        open("/small/filler", libc::O_RDONLY)?,
        open("/small/dst", rw)?,
    );
    println!("short: {}", cfr(f, Some(0), d, len("full 64k tmpfs")));
    Ok(())
}

/// Loads kernel modules listed, in dependency order, in /modules.order.
fn load_modules() {
    let Ok(list) = std::fs::read_to_string("/modules.order") else {
        return;
    };
    for name in list.lines().filter(|l| !l.is_empty()) {
        let path = format!("/modules/{name}");
        let Ok(f) = std::fs::File::open(&path) else {
            println!("CT-LOG cannot open {path}");
            continue;
        };
        let params = CString::default();
        // SAFETY: valid fd and empty parameter string.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                println!("CT-LOG module {name}: {e}");
            }
        }
    }
}

/// Attaches /ext4.img to a loop device and mounts it at /mnt/ext4.
fn mount_ext4() -> Result<()> {
    // ioctl's request type differs between glibc and musl; `as _` fits both.
    const LOOP_CTL_GET_FREE: u32 = 0x4C82;
    const LOOP_SET_FD: u32 = 0x4C00;
    let ctl = open("/dev/loop-control", libc::O_RDWR)?;
    // SAFETY: ioctl on the loop control device.
    let n = unsafe { libc::ioctl(ctl, LOOP_CTL_GET_FREE as _) };
    if n < 0 {
        bail!("LOOP_CTL_GET_FREE: {}", std::io::Error::last_os_error());
    }
    let dev = format!("/dev/loop{n}");
    let img = open("/ext4.img", libc::O_RDWR)?;
    let lo = open(&dev, libc::O_RDWR)?;
    // SAFETY: ioctl on a loop device with an open image fd.
    if unsafe { libc::ioctl(lo, LOOP_SET_FD as _, img) } != 0 {
        bail!("LOOP_SET_FD: {}", std::io::Error::last_os_error());
    }
    mount(&dev, "/mnt/ext4", "ext4", "")
}

fn run_backend(backend: &str) -> Result<()> {
    let out = format!("/tmp/out-{backend}.jsonl");
    let status = Command::new("/bin/copytrace")
        .args([
            "trace",
            "--probe",
            backend,
            "--json",
            "-o",
            &out,
            "--",
            "/init",
            "guest-scenarios",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run copytrace")?;
    println!("CT-STATUS {backend} {}", status.code().unwrap_or(-1));
    let f = std::fs::File::open(&out)
        .with_context(|| format!("no output from the {backend} back-end"))?;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.contains(r#""type":"call""#) {
            println!("CT-CALL {backend} {line}");
        }
    }
    Ok(())
}

/// The guest's PID 1: set up, run both back-ends, report, power off.
pub fn init() -> Result<()> {
    let setup = || -> Result<()> {
        mount("proc", "/proc", "proc", "")?;
        mount("sysfs", "/sys", "sysfs", "")?;
        mount("devtmpfs", "/dev", "devtmpfs", "")?;
        mount("tmpfs", "/tmp", "tmpfs", "")?;
        mount("tracefs", "/sys/kernel/tracing", "tracefs", "")?;
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2", "")?;
        load_modules();
        mount_ext4()
    };
    let result = setup().and_then(|()| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!("CT-KERNEL {}", release.trim());
        let doctor = Command::new("/bin/copytrace").arg("doctor").output()?;
        for l in String::from_utf8_lossy(&doctor.stdout).lines() {
            println!("CT-DOCTOR {l}");
        }
        for backend in ["fentry", "tracepoint"] {
            if let Err(e) = run_backend(backend) {
                println!("CT-ERROR {backend}: {e:#}");
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => println!("CT-DONE"),
        Err(e) => println!("CT-ERROR setup: {e:#}\nCT-DONE"),
    }
    // SAFETY: PID 1 powering the guest off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    Ok(())
}
