//! Real filesystems for one test, and the raw system calls made against them.
//!
//! Mounting goes through mount(2) and the loop device's ioctls rather than
//! the `mount` program, so the tests need no userland beyond themselves.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::suite;

/// Env var naming an empty ext4 image to copy when `mkfs.ext4` is absent (guests).
pub const EXT4_TEMPLATE_ENV: &str = "COPYTRACE_TEST_EXT4_TEMPLATE";

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| panic!("NUL in {}", p.display()))
}

fn last_error(what: &str) -> ! {
    panic!("{what}: {}", std::io::Error::last_os_error())
}

/// mount(2); panics on failure.
pub fn mount(source: &str, target: &Path, fstype: &str, data: &str) {
    if let Err(e) = try_mount(source, target, fstype, data) {
        panic!("mount {fstype} on {}: {e}", target.display());
    }
}

/// mount(2).
pub fn try_mount(source: &str, target: &Path, fstype: &str, data: &str) -> std::io::Result<()> {
    let (s, t, f, d) = (
        CString::new(source).expect("source"),
        cpath(target),
        CString::new(fstype).expect("fstype"),
        CString::new(data).expect("data"),
    );
    // SAFETY: every pointer is a valid NUL-terminated string for the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, d.as_ptr().cast()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A bind mount, unmounted when dropped: a test that fails half-way must
/// not leave its mounts behind for the next run (or a full disk).
#[must_use = "the bind mount is undone when this is dropped"]
#[derive(Debug)]
pub struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

/// A bind mount of `source` at `target` (also used by the path tests).
pub fn bind_mount(source: &Path, target: &Path) -> BindMount {
    let (s, t) = (cpath(source), cpath(target));
    // SAFETY: valid strings; MS_BIND ignores fstype and data.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        last_error(&format!(
            "bind {} on {}",
            source.display(),
            target.display()
        ));
    }
    BindMount(target.to_path_buf())
}

/// umount2(2) with MNT_DETACH; errors are ignored (cleanup).
pub fn unmount(target: &Path) {
    let t = cpath(target);
    // SAFETY: valid string.
    unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
}

/// A directory unique to this process and call, under `base`.
pub fn unique_dir(base: &Path, tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// A filesystem mounted for one test, unmounted (and its loop device
/// released) on drop.
pub struct Mount {
    /// Where it is mounted.
    pub dir: PathBuf,
    image: Option<PathBuf>,
    loop_fd: Option<OwnedFd>,
}

/// LOOP_* ioctls (linux/loop.h); `as _` fits glibc's and musl's request types.
const LOOP_CTL_GET_FREE: u32 = 0x4C82;
const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_CLR_FD: u32 = 0x4C01;

/// Attaches `image` to a free loop device; returns its path and an open fd.
fn attach_loop(image: &Path) -> (PathBuf, OwnedFd) {
    let ctl = open(Path::new("/dev/loop-control"), libc::O_RDWR);
    for _ in 0..8 {
        // SAFETY: ioctl on the loop control device, no argument.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            last_error("LOOP_CTL_GET_FREE");
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let lo = open(&dev, libc::O_RDWR);
        let img = open(image, libc::O_RDWR);
        // SAFETY: ioctl on a loop device with an open image fd.
        if unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_SET_FD as _, img.as_raw_fd()) } == 0 {
            return (dev, lo);
        }
        // Another process took it between GET_FREE and SET_FD: try again.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EBUSY) {
            last_error("LOOP_SET_FD");
        }
    }
    panic!("no free loop device for {}", image.display());
}

impl Mount {
    /// A tmpfs of `size` (e.g. "64k") under `base`.
    pub fn tmpfs(base: &Path, size: &str) -> Self {
        Self::virtual_fs(base, "tmpfs", &format!("size={size}"))
            .unwrap_or_else(|e| panic!("mount tmpfs under {}: {e}", base.display()))
    }

    /// A fresh ext4 filesystem of `mib` MiB on a loop device, under `base`:
    /// made by `mkfs.ext4`, or copied from the template a guest provides.
    pub fn ext4(base: &Path, mib: u64) -> Self {
        if !suite::on_path("mkfs.ext4") {
            let Some(t) = std::env::var_os(EXT4_TEMPLATE_ENV) else {
                panic!("no mkfs.ext4 and no ${EXT4_TEMPLATE_ENV}: `cargo xtask provision` installs e2fsprogs");
            };
            let dir = unique_dir(base, "ext4");
            let image = dir.with_extension("img");
            std::fs::copy(&t, &image).expect("copy the ext4 template");
            return Self::attach(dir, image, "ext4");
        }
        Self::on_loop(base, "ext4", mib).expect("mkfs.ext4 is on PATH")
    }

    /// A fresh filesystem of `fstype` ("ext4", "xfs", "btrfs") and `mib`
    /// MiB on a loop device, under `base`, made by `mkfs.FSTYPE` with its
    /// defaults (xfs: reflink on); None when that program is missing.
    pub fn on_loop(base: &Path, fstype: &str, mib: u64) -> Option<Self> {
        let mkfs = format!("mkfs.{fstype}");
        if !suite::on_path(&mkfs) {
            return None;
        }
        let dir = unique_dir(base, fstype);
        let image = dir.with_extension("img");
        let f = std::fs::File::create(&image).expect("image");
        f.set_len(mib << 20).expect("size image");
        let force = if fstype == "ext4" { "-F" } else { "-f" };
        let out = Command::new(&mkfs)
            .args(["-q", force])
            .arg(&image)
            .output()
            .unwrap_or_else(|e| panic!("{mkfs}: {e}"));
        assert!(
            out.status.success(),
            "{mkfs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Self::attach(dir, image, fstype))
    }

    /// Mounts `image` at `dir` through a loop device.
    fn attach(dir: PathBuf, image: PathBuf, fstype: &str) -> Self {
        let (dev, lo) = attach_loop(&image);
        mount(&dev.to_string_lossy(), &dir, fstype, "");
        Mount {
            dir,
            image: Some(image),
            loop_fd: Some(lo),
        }
    }

    /// A filesystem that needs no device (`mount -t FSTYPE FSTYPE DIR -o
    /// DATA`) under `base`, unmounted on drop; the error when this kernel
    /// cannot mount it.
    pub fn virtual_fs(base: &Path, fstype: &str, data: &str) -> std::io::Result<Self> {
        let dir = unique_dir(base, fstype);
        if let Err(e) = try_mount(fstype, &dir, fstype, data) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Mount {
            dir,
            image: None,
            loop_fd: None,
        })
    }

    /// A path inside the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        unmount(&self.dir);
        if let Some(lo) = self.loop_fd.take() {
            // SAFETY: ioctl on our loop device; detaching may fail harmlessly.
            unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_CLR_FD as _, 0) };
        }
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(img) = &self.image {
            let _ = std::fs::remove_file(img);
        }
    }
}

/// Opens a path with raw flags (O_CLOEXEC added), mode 0644 when creating;
/// panics on failure.
pub fn open(path: &Path, flags: i32) -> OwnedFd {
    try_open(path, flags).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// [`open`], or the error.
pub fn try_open(path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let c = cpath(path);
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Raw fd number of an owned fd.
pub fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}

/// Writes `len` bytes of a repeating pattern to `path`.
pub fn write_file(path: &Path, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `copy_file_range(2)` itself, so callers choose every argument.
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

/// Where tracefs is mounted, mounting it at /sys/kernel/tracing if needed.
pub fn tracefs_dir() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    if let Some(dir) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"tracefs")).then(|| PathBuf::from(f[1]))
    }) {
        return dir;
    }
    let dir = PathBuf::from("/sys/kernel/tracing");
    mount("tracefs", &dir, "tracefs", "");
    dir
}

/// A cgroup2 mount point, mounting one under `base` if none exists (the
/// returned guard unmounts it).
pub fn cgroup2_root(base: &Path) -> (PathBuf, Option<Mount>) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    if let Some(dir) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    }) {
        return (dir, None);
    }
    let dir = unique_dir(base, "cgroup2");
    mount("none", &dir, "cgroup2", "");
    (
        dir.clone(),
        Some(Mount {
            dir,
            image: None,
            loop_fd: None,
        }),
    )
}

/// Runs `f` on a thread of its own in new mount and network namespaces,
/// with every mount made private first, so what `f` mounts never reaches
/// the host and `lo` is its own to write. The namespaces live as long as
/// that thread: `f` does all its work there and unmounts what it mounted.
pub fn in_private_namespaces<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let root = CString::new("/").expect("root");
            // SAFETY: unshare and mount affect this thread only; valid strings.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
                    last_error("unshare");
                }
                let private = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    private,
                    std::ptr::null(),
                ) != 0
                {
                    last_error("make / private");
                }
            }
            f()
        })
        .join()
        .expect("the private-namespace thread")
    })
}
