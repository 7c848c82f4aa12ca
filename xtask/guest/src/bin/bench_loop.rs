//! The loops `cargo xtask bench` measures, run as their own process so that
//! strace can wrap them and probes see a process of their own.
//!
//! `bench-loop WORKLOAD ITERS THREADS [SRC DST LEN]` prints ns per operation:
//! `cfr` copies LEN bytes from SRC to DST.<thread> at offset 0, passing
//! both offsets; `cfr-fpos` does the same at the files' positions (NULL
//! offsets, as cp and Go's io.Copy pass them), seeking both back to 0
//! before each call; `unrelated`
//! opens, reads, writes and closes /dev/null, `silent` copies
//! /proc/self/status to /proc/self/comm (nothing, successfully).
#![allow(
    clippy::print_stdout,
    reason = "the measurement is the program's output"
)]

use std::ffi::CString;
use std::time::Instant;

use anyhow::{bail, Context, Result};

fn open(path: &str, flags: i32) -> Result<i32> {
    let c = CString::new(path)?;
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        bail!("open {path}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Where a copy loop's calls take their positions from.
#[derive(Clone, Copy)]
enum Positions {
    /// Offsets passed by pointer, both 0.
    Offsets,
    /// NULL offsets: the files' positions, both seeked back to 0 first.
    FilePositions,
}

fn cfr_loop(src: &str, dst: &str, len: usize, iters: u64, at: Positions) -> Result<()> {
    let a = open(src, libc::O_RDONLY)?;
    let b = open(dst, libc::O_WRONLY | libc::O_CREAT)?;
    for _ in 0..iters {
        let mut off_in = 0i64;
        let mut off_out = 0i64;
        let (p_in, p_out) = match at {
            Positions::Offsets => (&raw mut off_in, &raw mut off_out),
            Positions::FilePositions => {
                // SAFETY: valid fds.
                unsafe {
                    libc::lseek(a, 0, libc::SEEK_SET);
                    libc::lseek(b, 0, libc::SEEK_SET);
                }
                (std::ptr::null_mut(), std::ptr::null_mut())
            }
        };
        // SAFETY: valid fds; offset pointers valid or NULL.
        let r = unsafe { libc::syscall(libc::SYS_copy_file_range, a, p_in, b, p_out, len, 0u32) };
        if r != len as i64 {
            bail!(
                "copy_file_range returned {r}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// procfs → procfs: copies nothing and succeeds, a suspicious call.
fn silent_loop(iters: u64) -> Result<()> {
    let a = open("/proc/self/status", libc::O_RDONLY)?;
    let b = open("/proc/self/comm", libc::O_WRONLY)?;
    for _ in 0..iters {
        // SAFETY: valid fds, no offset pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_copy_file_range,
                a,
                std::ptr::null_mut::<i64>(),
                b,
                std::ptr::null_mut::<i64>(),
                4096usize,
                0u32,
            )
        };
        if r != 0 {
            bail!("a silent copy returned {r}");
        }
    }
    Ok(())
}

fn unrelated_loop(iters: u64) -> Result<()> {
    let path = CString::new("/dev/null")?;
    let mut byte = [0u8; 1];
    for _ in 0..iters {
        // SAFETY: valid path and buffer; fd closed below.
        unsafe {
            let fd = libc::openat(
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC,
            );
            if fd < 0 {
                bail!("openat /dev/null: {}", std::io::Error::last_os_error());
            }
            libc::read(fd, byte.as_mut_ptr().cast(), 1);
            libc::write(fd, byte.as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().context("workload")?.clone();
    let iters: u64 = args.get(1).context("iterations")?.parse()?;
    let threads: u64 = args.get(2).context("threads")?.parse()?;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let w = workload.clone();
            let a: Vec<String> = args.clone();
            std::thread::spawn(move || -> Result<()> {
                match w.as_str() {
                    "cfr" | "cfr-fpos" => {
                        let len: usize = a.get(5).context("len")?.parse()?;
                        let dst = format!("{}.{t}", a.get(4).context("dst")?);
                        let at = if w == "cfr" {
                            Positions::Offsets
                        } else {
                            Positions::FilePositions
                        };
                        cfr_loop(a.get(3).context("src")?, &dst, len, iters, at)
                    }
                    "unrelated" => unrelated_loop(iters),
                    "silent" => silent_loop(iters),
                    other => bail!("unknown workload {other}"),
                }
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("loop thread panicked"))??;
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{ns:.1}");
    Ok(())
}
