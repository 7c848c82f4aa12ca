//! Bringing the guest up: pseudo filesystems and kernel modules.

use std::ffi::CString;
use std::os::fd::AsRawFd;

use anyhow::{bail, Result};

use copytrace_guest::console::Kind;
use copytrace_guest::report;

fn mount(src: &str, target: &str, fstype: &str) -> Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        CString::new(src)?,
        CString::new(target)?,
        CString::new(fstype)?,
    );
    // SAFETY: valid C strings; no mount data.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Loads the modules listed, in dependency order, in /modules.order.
fn load_modules() {
    let Ok(list) = std::fs::read_to_string("/modules.order") else {
        return;
    };
    for name in list.lines().filter(|l| !l.is_empty()) {
        let path = format!("/modules/{name}");
        let Ok(f) = std::fs::File::open(&path) else {
            report::line(Kind::Log, "modules", &format!("cannot open {path}"));
            continue;
        };
        let params = CString::default();
        // SAFETY: valid fd and empty parameter string.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                report::line(Kind::Log, "modules", &format!("{name}: {e}"));
            }
        }
    }
}

/// Brings the loopback interface up: the daemon tests scrape metrics over
/// 127.0.0.1, and an initramfs without an init system leaves `lo` down.
fn loopback_up() -> Result<()> {
    // SAFETY: a plain datagram socket, used only for the ioctls below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is our socket; req names an interface and has room for flags.
    let mut rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) };
    if rc == 0 {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above; sets the flags just read plus IFF_UP.
        rc = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) };
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    if rc != 0 {
        bail!("bring lo up: {err}");
    }
    Ok(())
}

/// Mounts what the tests expect of a Linux system, then loads modules.
pub fn system() -> Result<()> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("devtmpfs", "/dev", "devtmpfs")?;
    mount("tmpfs", "/tmp", "tmpfs")?;
    mount("tmpfs", "/run", "tmpfs")?;
    mount("tracefs", "/sys/kernel/tracing", "tracefs")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2")?;
    load_modules();
    loopback_up()
}

/// Powers the guest off (PID 1 must not exit).
pub fn power_off() -> ! {
    // SAFETY: PID 1 flushing and powering the guest off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
