//! The processes that make calls in tests: the test binary itself,
//! re-executed with [`ENV`] set. A constructor in each test binary calls
//! [`run_if_requested`] before libtest starts, runs the named program and
//! exits. So a test gets a child, a grandchild or an orphan without python,
//! in the minimal matrix guests too.
//!
//! Arguments travel as a JSON array in [`ENV`]; an argument written
//! `hex:…` is raw bytes (for hostile file names and `comm` values).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::fs::{cfr, open, raw};

/// Env var carrying the program and its arguments.
pub const ENV: &str = "COPYTRACE_CALLER";

/// Lengths of the calls [`command`]`("tree")` makes: parent, then child.
pub const TREE_LENS: [usize; 2] = [1111, 2222];
/// Exit code of the `tree` program.
pub const TREE_EXIT: i32 = 3;
/// Lengths of the `orphan` program's calls: the followed child, the orphan.
pub const ORPHAN_LENS: [usize; 2] = [4321, 9999];

/// Encodes raw bytes as a caller argument.
pub fn hex_arg(bytes: &[u8]) -> String {
    let mut s = String::from("hex:");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A command running `program args…` in a fresh copy of this test binary.
pub fn command(program: &str, args: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    command_at(&exe, program, args)
}

/// A command running `program args…` in `exe`, a copy of this test binary.
pub fn command_at(exe: &Path, program: &str, args: &[&str]) -> Command {
    let mut all = vec![program.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut cmd = Command::new(exe);
    cmd.env(ENV, serde_json::Value::from(all).to_string());
    cmd
}

fn decode(arg: &str) -> OsString {
    match arg.strip_prefix("hex:") {
        Some(h) => OsString::from_vec(
            (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(b'?'))
                .collect(),
        ),
        None => OsString::from(arg),
    }
}

fn copy(src: &Path, dst: &Path, len: usize) -> Result<usize, i32> {
    let a = open(src, libc::O_RDONLY);
    let b = open(dst, libc::O_WRONLY | libc::O_CREAT);
    cfr(raw(&a), None, raw(&b), None, len, 0)
}

/// `copy_file_range(-1, NULL, -1, NULL, 1, 0)` with the system call
/// instruction in this executable itself (not in libc), so the first frame
/// the kernel captures is in the executable.
#[inline(never)]
fn ebadf_from_here() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a system call with integer arguments and null pointers; it
    // fails with EBADF and touches no memory. rcx and r11 are clobbered.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_copy_file_range => _,
            in("rdi") -1i64,
            in("rsi") 0u64,
            in("rdx") -1i64,
            in("r10") 0u64,
            in("r8") 1u64,
            in("r9") 0u64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above; x0 holds the result.
    unsafe {
        std::arch::asm!(
            "svc 0",
            inlateout("x0") -1i64 => _,
            in("x1") 0u64,
            in("x2") -1i64,
            in("x3") 0u64,
            in("x4") 1u64,
            in("x5") 0u64,
            in("x8") libc::SYS_copy_file_range,
            options(nostack),
        );
    }
}

fn fork() -> i32 {
    // SAFETY: the caller programs are single-threaded when they fork
    // (the constructor runs before libtest starts any thread).
    unsafe { libc::fork() }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers,
    // which a forked child must not run twice.
    unsafe { libc::_exit(code) }
}

/// Moves this process into a mount namespace of its own, whose mounts do
/// not propagate back.
fn private_mount_namespace() {
    // SAFETY: unshare and mount with valid arguments; the caller programs
    // are single-threaded.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    let root = CString::new("/").expect("no NUL");
    // SAFETY: a valid path; MS_REC|MS_PRIVATE takes no source, type or data.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "make / private: {}", std::io::Error::last_os_error());
}

fn wait_all() {
    let mut status = 0;
    // SAFETY: waiting for any child with a valid status pointer.
    while unsafe { libc::wait(&mut status) } > 0 {}
}

/// A seccomp filter on this process: copy_file_range fails with EPERM
/// before the syscall runs; every other call is allowed.
fn refuse_copy_file_range() {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_if = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let mut prog = [
        // seccomp_data.nr is its first word.
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump_if(libc::SYS_copy_file_range as u32, 0, 1),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with a valid filter program that outlives the call.
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            0,
            "no_new_privs"
        );
        let rc = libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        );
        assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

#[allow(
    clippy::print_stdout,
    reason = "a caller program's stdout is its result"
)]
fn program(args: &[OsString]) -> i32 {
    let arg = |i: usize| -> &OsString {
        args.get(i)
            .unwrap_or_else(|| panic!("caller: argument {i} missing in {args:?}"))
    };
    let num = |i: usize| -> usize {
        arg(i)
            .to_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("caller: argument {i} is not a number"))
    };
    match arg(0).to_str().unwrap_or("") {
        // copy SRC DST LEN: one call, prints its result.
        "copy" => {
            let r = copy(Path::new(arg(1)), Path::new(arg(2)), num(3));
            println!("{r:?}");
            0
        }
        // std-copy SRC DST: Rust's std::fs::copy, which loops over
        // copy_file_range; prints the bytes copied.
        "std-copy" => match std::fs::copy(arg(1), arg(2)) {
            Ok(n) => {
                println!("{n}");
                0
            }
            Err(e) => {
                eprintln!("std::fs::copy: {e}");
                1
            }
        },
        // seccomp-copy SRC DST: installs a seccomp filter that refuses
        // copy_file_range with EPERM (as container profiles written before
        // the call existed did), then makes one call; prints its result.
        "seccomp-copy" => {
            refuse_copy_file_range();
            let r = copy(Path::new(arg(1)), Path::new(arg(2)), 100);
            println!("{r:?}");
            0
        }
        // copies SRC LEN DST…: one call from SRC to each DST, in order.
        "copies" => {
            for dst in &args[3..] {
                let r = copy(Path::new(arg(1)), Path::new(dst), num(2));
                println!("{r:?}");
            }
            0
        }
        // comm NAME PROGRAM…: sets this thread's comm, then runs PROGRAM.
        "comm" => {
            let name = CString::new(arg(1).as_bytes()).expect("comm without NUL");
            // SAFETY: PR_SET_NAME reads a NUL-terminated string (cut to 15 bytes).
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
            program(&args[2..])
        }
        // cgroup DIR PROGRAM…: moves this process into cgroup DIR, then runs PROGRAM.
        "cgroup" => {
            let procs = Path::new(arg(1)).join("cgroup.procs");
            if let Err(e) = std::fs::write(&procs, b"0") {
                panic!("caller: cannot join {}: {e}", procs.display());
            }
            program(&args[2..])
        }
        // exec PATH ARGS…: replaces this process with another program.
        "exec" => {
            use std::os::unix::process::CommandExt;
            let e = Command::new(arg(1)).args(&args[2..]).exec();
            panic!("caller: cannot exec {:?}: {e}", arg(1));
        }
        // overmount DIR NAME=HEX… -- PROGRAM…: in a private mount namespace,
        // hides DIR under a tmpfs holding the files given, then runs PROGRAM.
        "overmount" => {
            let split = args
                .iter()
                .position(|a| a == "--")
                .expect("caller: overmount needs -- before its program");
            let dir = Path::new(arg(1));
            private_mount_namespace();
            crate::fs::mount("tmpfs", dir, "tmpfs", "size=1m");
            for spec in &args[2..split] {
                let spec = spec.to_str().expect("NAME=HEX");
                let (name, hex) = spec.split_once('=').expect("NAME=HEX");
                let bytes = decode(&format!("hex:{hex}"));
                std::fs::write(dir.join(name), bytes.as_bytes()).expect("write overmount file");
            }
            program(&args[split + 1..])
        }
        // unshare-bind SRC DST PROGRAM…: in a new mount namespace, binds SRC
        // on DST, runs PROGRAM there and stays a second (for its mountinfo).
        "unshare-bind" => {
            private_mount_namespace();
            let _bound = crate::fs::bind_mount(Path::new(arg(1)), Path::new(arg(2)));
            let code = program(&args[3..]);
            std::thread::sleep(Duration::from_secs(1));
            code
        }
        // silent N: N procfs → procfs silent zero copies.
        // Unlinks its own executable and leaves something else at that name
        // (and at the name /proc/PID/maps then shows, "<name> (deleted)"):
        // a FIFO, or a symlink to /dev/zero. Then makes a failing call (a
        // suspicious one, whose stack is taken) and lingers `arg(2)` ms.
        "swap" => {
            let exe = std::fs::read_link("/proc/self/exe").expect("own executable");
            let mut deleted = exe.clone().into_os_string();
            deleted.push(" (deleted)");
            let _ = std::fs::remove_file(&exe);
            for name in [exe.as_os_str(), deleted.as_os_str()] {
                let c = CString::new(name.as_bytes()).expect("no NUL in a path");
                match arg(1).to_str() {
                    Some("fifo") => {
                        // SAFETY: a valid NUL-terminated path.
                        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o666) };
                        assert_eq!(rc, 0, "mkfifo");
                    }
                    Some("zero") => std::os::unix::fs::symlink("/dev/zero", name).expect("symlink"),
                    other => panic!("swap: unknown mode {other:?}"),
                }
            }
            ebadf_from_here();
            let ms: u64 = arg(2).to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            0
        }
        // `arg(1)` threads each make one failing call and then idle, alive,
        // until the process is killed; "ready" on stdout once all called.
        "idle-threads" => {
            let n: usize = arg(1).to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            for _ in 0..n {
                let tx = tx.clone();
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _ = cfr(-1, None, -1, None, 1, 0);
                        let _ = tx.send(());
                        loop {
                            std::thread::park();
                        }
                    })
                    .expect("spawn an idle thread");
            }
            for _ in 0..n {
                rx.recv().expect("each thread made its call");
            }
            println!("ready");
            loop {
                std::thread::park();
            }
        }
        // A failing call from this executable's own code, then `arg(1)` ms alive.
        "ebadf-linger" => {
            ebadf_from_here();
            std::thread::sleep(Duration::from_millis(num(1) as u64));
            0
        }
        "silent" => {
            crate::fs::silent_copies(num(1));
            0
        }
        // silent-for SECS: silent zero copies for SECS seconds (a load).
        "silent-for" => {
            let end = std::time::Instant::now() + Duration::from_secs(num(1) as u64);
            while std::time::Instant::now() < end {
                crate::fs::silent_copies(64);
            }
            0
        }
        // tree DIR: copies DIR/a → DIR/b, a child copies again, exits 3.
        "tree" => {
            let dir = PathBuf::from(arg(1));
            let a = open(&dir.join("a"), libc::O_RDONLY);
            let b = open(&dir.join("b"), libc::O_WRONLY | libc::O_CREAT);
            let _ = cfr(raw(&a), None, raw(&b), None, TREE_LENS[0], 0);
            if fork() == 0 {
                let _ = cfr(raw(&a), None, raw(&b), None, TREE_LENS[1], 0);
                exit(0);
            }
            wait_all();
            TREE_EXIT
        }
        // orphan DIR: a grandchild is orphaned (reparented away from the
        // traced tree) before it copies; then the child copies.
        "orphan" => {
            let dir = PathBuf::from(arg(1));
            if fork() == 0 {
                // SAFETY: setsid in the fresh child.
                unsafe { libc::setsid() };
                if fork() == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = copy(&dir.join("a"), &dir.join("c"), ORPHAN_LENS[1]);
                    let _ = std::fs::write(dir.join("orphan-done"), b"");
                    exit(0);
                }
                exit(0);
            }
            wait_all();
            let _ = copy(&dir.join("a"), &dir.join("c"), ORPHAN_LENS[0]);
            0
        }
        other => panic!("caller: unknown program {other:?}"),
    }
}

/// Runs the requested caller program and exits, when [`ENV`] is set.
pub fn run_if_requested() {
    let Some(spec) = std::env::var_os(ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_slice(spec.as_bytes())
        .unwrap_or_else(|e| panic!("caller: {ENV} is not a JSON array: {e}"));
    let args: Vec<OsString> = args.iter().map(|a| decode(a)).collect();
    let code = program(&args);
    std::process::exit(code);
}
