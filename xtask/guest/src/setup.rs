//! Bringing the guest up: pseudo filesystems and kernel modules.

use std::ffi::CString;
use std::os::fd::AsRawFd;

use anyhow::{bail, Result};

use crate::report;

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
            report::line("CT-LOG", "modules", &format!("cannot open {path}"));
            continue;
        };
        let params = CString::default();
        // SAFETY: valid fd and empty parameter string.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                report::line("CT-LOG", "modules", &format!("{name}: {e}"));
            }
        }
    }
}

/// Mounts what the tests expect of a Linux system, then loads modules.
pub fn system() -> Result<()> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("devtmpfs", "/dev", "devtmpfs")?;
    mount("tmpfs", "/tmp", "tmpfs")?;
    mount("tracefs", "/sys/kernel/tracing", "tracefs")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2")?;
    load_modules();
    Ok(())
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
