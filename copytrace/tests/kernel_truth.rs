//! The kernel judges copytrace's beliefs. Each expected value here comes
//! from outside copytrace: `statfs()` and `stat()` of real mounts, what
//! `read()` of a file returns, the libc crate, and what real clients'
//! calls return.

mod support;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use copytrace::model::fs_magic::{self, SizeTruth};
use copytrace_testkit::fs::{in_private_namespaces, try_open};
use serde_json::Value;
use support::{
    cfr, max_rw_count, open, page_size, raw, require_program, require_root, scratch_dir, suite,
    trace, watch, Mount,
};

/// `statfs(path).f_type`, as the kernel reports it.
fn statfs_type(path: &Path) -> u64 {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: a zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    st.f_type as u64
}

/// `fstatfs(fd).f_type`.
fn fstatfs_type(fd: i32) -> u64 {
    // SAFETY: a zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; fd is open.
    assert_eq!(unsafe { libc::fstatfs(fd, &mut st) }, 0, "fstatfs");
    st.f_type as u64
}

/// What `read()` of `path` from its start returns, in bytes (non-blocking,
/// at most 1 MiB).
fn content_len(path: &Path) -> usize {
    try_content_len(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// [`content_len`], or the error of `open` or `read`.
fn try_content_len(path: &Path) -> std::io::Result<usize> {
    let fd = try_open(path, libc::O_RDONLY | libc::O_NONBLOCK)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    while total < buf.len() {
        // SAFETY: reading into the unused tail of our buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[total..].as_mut_ptr().cast(),
                buf.len() - total,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        total += n as usize;
    }
    Ok(total)
}

/// How a test gets a filesystem and its sample files.
struct Case {
    /// The registry's name for it.
    name: &'static str,
    /// Mounted for the test, or None where the kernel lacks it.
    mount: Result<Mount, String>,
    /// Files whose advertised size and content the test compares.
    samples: fn(&Path) -> Vec<PathBuf>,
}

fn named(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.exists())
        .collect()
}

/// The first readable, non-empty regular files at the top of `dir`.
fn first_readable(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.sort();
    entries
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        // Some files open but refuse read() (debugfs's clear_warn_once).
        .filter(|p| try_content_len(p).is_ok_and(|n| n > 0))
        .take(2)
        .collect()
}

/// Writes files of known lengths, for the filesystems whose sizes are content.
fn written(dir: &Path) -> Vec<PathBuf> {
    [12_345usize, 70_001]
        .iter()
        .map(|&n| {
            let p = dir.join(format!("sample-{n}"));
            std::fs::write(&p, vec![7u8; n]).expect("write sample");
            p
        })
        .collect()
}

/// Creates two message queues (mqueue's files are queues).
fn queues(dir: &Path) -> Vec<PathBuf> {
    ["q1", "q2"]
        .iter()
        .map(|n| {
            let p = dir.join(n);
            drop(open(&p, libc::O_RDWR | libc::O_CREAT));
            p
        })
        .collect()
}

fn virtual_case(
    base: &Path,
    name: &'static str,
    fstype: &str,
    samples: fn(&Path) -> Vec<PathBuf>,
) -> Case {
    Case {
        name,
        mount: Mount::virtual_fs(base, fstype, "").map_err(|e| format!("mount -t {fstype}: {e}")),
        samples,
    }
}

fn loop_case(base: &Path, name: &'static str, mib: u64) -> Case {
    Case {
        name,
        mount: Mount::on_loop(base, name, mib).ok_or_else(|| format!("no mkfs.{name} here")),
        samples: written,
    }
}

/// An overlay of two tmpfs directories.
fn overlay_case(base: &Path) -> (Case, Mount) {
    let layers = Mount::tmpfs(base, "4m");
    for d in ["lower", "upper", "work"] {
        std::fs::create_dir(layers.path(d)).expect("mkdir layer");
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        layers.path("lower").display(),
        layers.path("upper").display(),
        layers.path("work").display()
    );
    let case = Case {
        name: "overlay",
        mount: Mount::virtual_fs(base, "overlay", &data)
            .map_err(|e| format!("mount -t overlay: {e}")),
        samples: written,
    };
    (case, layers)
}

/// Every registered filesystem this kernel can mount: `statfs().f_type` is
/// the registry's magic for that name, and `stat().st_size` of sample files
/// behaves as the registry's size truth says, against what `read()` returns.
#[test]
fn registry_matches_statfs_and_stat_of_real_mounts() {
    require_root();
    let base = scratch_dir("registry");
    let (overlay, _layers) = overlay_case(&base);
    let cases = vec![
        Case {
            name: "proc",
            mount: Ok(Mount::virtual_fs(&base, "proc", "").expect("mount proc")),
            samples: |d| named(d, &["version", "self/status", "meminfo"]),
        },
        Case {
            name: "sysfs",
            mount: Ok(Mount::virtual_fs(&base, "sysfs", "").expect("mount sysfs")),
            samples: |d| named(d, &["class/net/lo/address", "class/net/lo/mtu"]),
        },
        virtual_case(&base, "tracefs", "tracefs", |d| {
            named(d, &["README", "available_tracers"])
        }),
        virtual_case(&base, "debugfs", "debugfs", first_readable),
        virtual_case(&base, "securityfs", "securityfs", |d| named(d, &["lsm"])),
        virtual_case(&base, "cgroup2", "cgroup2", |d| {
            named(d, &["cgroup.procs", "cgroup.stat"])
        }),
        virtual_case(&base, "configfs", "configfs", first_readable),
        virtual_case(&base, "bpf", "bpf", first_readable),
        virtual_case(&base, "pstore", "pstore", first_readable),
        virtual_case(&base, "mqueue", "mqueue", queues),
        virtual_case(&base, "fusectl", "fusectl", first_readable),
        virtual_case(&base, "ramfs", "ramfs", written),
        virtual_case(&base, "tmpfs", "tmpfs", written),
        Case {
            name: "ext4",
            mount: Ok(Mount::ext4(&base, 32)),
            samples: written,
        },
        loop_case(&base, "xfs", 320),
        loop_case(&base, "btrfs", 128),
        overlay,
    ];
    let mut report = Vec::new();
    for case in cases {
        let m = match case.mount {
            Ok(m) => m,
            Err(why) if why.contains("No such device") || why.contains("no mkfs") => {
                report.push(format!("{}: not checked ({why})", case.name));
                continue;
            }
            Err(why) => panic!("{}: {why}", case.name),
        };
        let f_type = statfs_type(&m.dir);
        let entry = fs_magic::REGISTRY
            .iter()
            .find(|f| f.name == case.name)
            .unwrap_or_else(|| panic!("the registry has no {}", case.name));
        assert_eq!(
            entry.magic, f_type,
            "{}: registry magic {:#x}, statfs f_type {f_type:#x}",
            case.name, entry.magic
        );
        let samples = (case.samples)(&m.dir);
        let sizes: Vec<(u64, usize)> = samples
            .iter()
            .map(|p| {
                let st = std::fs::metadata(p).expect("stat sample");
                (std::os::unix::fs::MetadataExt::size(&st), content_len(p))
            })
            .collect();
        for (p, (size, len)) in samples.iter().zip(&sizes) {
            let (size, len) = (*size, *len as u64);
            let p = p.display();
            match entry.size_truth {
                SizeTruth::Content => assert_eq!(size, len, "{p}: stat size is content"),
                SizeTruth::Generated => assert!(
                    size < len,
                    "{p}: advertises {size} bytes but read() gives {len}: generated content is longer than its size"
                ),
                SizeTruth::FixedPage => assert_ne!(size, len, "{p}: the fixed size is not content"),
                SizeTruth::Stream => panic!("{p}: a mounted file is no stream"),
            }
        }
        if entry.size_truth == SizeTruth::FixedPage {
            assert!(
                sizes.windows(2).all(|w| w[0].0 == w[1].0),
                "{}: one size for every file: {sizes:?}",
                case.name
            );
        }
        if case.name == "sysfs" {
            assert!(
                sizes.iter().all(|(s, _)| *s == page_size()),
                "sysfs attributes advertise one page: {sizes:?}"
            );
        }
        report.push(format!(
            "{}: f_type {f_type:#x}, {:?}, samples (size, read) {sizes:?}",
            case.name, entry.size_truth
        ));
    }
    // Files that are not on a mount: a pipe, a socket, an eventfd, a
    // namespace and a pseudo-terminal.
    let mut fds = [0i32; 2];
    // SAFETY: valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: plain syscalls returning new fds (or -1).
    let (sock, efd, pty) = unsafe {
        (
            libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0),
            libc::eventfd(0, libc::EFD_CLOEXEC),
            libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC),
        )
    };
    let ns = open(Path::new("/proc/self/ns/net"), libc::O_RDONLY);
    let mut by_fd = vec![
        ("pipefs", fds[0]),
        ("sockfs", sock),
        ("anon_inode", efd),
        ("nsfs", ns.as_raw_fd()),
    ];
    let mut pts = None;
    // SAFETY: pty is our master fd; unlockpt and ptsname_r only read it.
    if pty >= 0 && unsafe { libc::unlockpt(pty) } == 0 {
        let mut name = [0 as libc::c_char; 64];
        // SAFETY: valid buffer of that length.
        if unsafe { libc::ptsname_r(pty, name.as_mut_ptr(), name.len()) } == 0 {
            // SAFETY: ptsname_r wrote a NUL-terminated string.
            let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
            let slave = open(
                Path::new(path.to_str().expect("pts path")),
                libc::O_RDWR | libc::O_NOCTTY,
            );
            by_fd.push(("devpts", slave.as_raw_fd()));
            pts = Some(slave);
        }
    }
    for (name, fd) in &by_fd {
        assert!(*fd >= 0, "{name}: {}", std::io::Error::last_os_error());
        let f_type = fstatfs_type(*fd);
        assert_eq!(
            fs_magic::lookup(f_type).map(|f| f.name),
            Some(*name),
            "fstatfs f_type {f_type:#x}"
        );
        report.push(format!("{name}: f_type {f_type:#x} (by fd)"));
    }
    drop(pts);
    for fd in [fds[0], fds[1], sock, efd, pty] {
        if fd >= 0 {
            // SAFETY: each is an fd this test opened and closes once.
            unsafe { libc::close(fd) };
        }
    }
    eprintln!(
        "registry checked against this kernel:\n  {}",
        report.join("\n  ")
    );
}

/// Runs `f` in private namespaces (see [`in_private_namespaces`]) with
/// sysfs mounted afresh at the directory it is given.
fn in_private_sysfs<T: Send>(f: impl FnOnce(&Path) -> T + Send) -> T {
    let dir = scratch_dir("private-sysfs");
    in_private_namespaces(|| {
        copytrace_testkit::fs::mount("sysfs", &dir, "sysfs", "");
        let out = f(&dir);
        copytrace_testkit::fs::unmount(&dir);
        out
    })
}

/// sysfs advertises one page for every attribute: a copy from `address`
/// (18 bytes) into `ifalias` of the same sysfs returns 18 of the 4096 asked,
/// and copytrace says the size could not be trusted, not that the
/// destination stopped the copy.
#[test]
fn a_sysfs_copy_is_a_size_mismatch() {
    require_root();
    let d = watch();
    let (src_fd, dst_fd, asked, got, advertised) = in_private_sysfs(|dir| {
        let src = open(&dir.join("class/net/lo/address"), libc::O_RDONLY);
        let dst = open(&dir.join("class/net/lo/ifalias"), libc::O_WRONLY);
        assert_eq!(fstatfs_type(src.as_raw_fd()), libc::SYSFS_MAGIC as u64);
        let advertised = std::fs::metadata(dir.join("class/net/lo/address"))
            .expect("stat address")
            .len();
        let content = content_len(&dir.join("class/net/lo/address"));
        let asked = advertised as usize;
        let got = cfr(raw(&src), None, raw(&dst), None, asked, 0).expect("sysfs to sysfs copies");
        assert_eq!(got, content, "the copy took what read() gives");
        (raw(&src), raw(&dst), asked, got, advertised)
    });
    let events = d.stop();
    assert!(got > 0 && got < asked, "{got} of {asked}");
    let ev = support::find(&events, src_fd, dst_fd, asked as u64);
    assert_eq!(ev["ret"], got);
    assert_eq!(ev["file_in"]["magic"], libc::SYSFS_MAGIC as u64);
    assert_eq!(ev["file_in"]["size"], advertised);
    assert_eq!(ev["verdict"], "size_mismatch", "{ev:#}");
}

/// The 3 GiB file the capped-copy tests copy, on `fs`.
fn three_gib(fs: &Mount) -> PathBuf {
    let src = fs.path("big.img");
    let f = std::fs::File::create(&src).expect("create");
    let chunk = vec![0x5au8; 1 << 24];
    let mut w = std::io::BufWriter::new(f);
    for _ in 0..(3u64 << 30) / chunk.len() as u64 {
        std::io::Write::write_all(&mut w, &chunk).expect("write 3 GiB");
    }
    std::io::Write::flush(&mut w).expect("flush");
    src
}

/// Copies `src` with each client under `copytrace trace`; every call must
/// be unsuspicious, the copy whole, and the first call capped at what the
/// kernel copies per call: `INT_MAX` rounded down to a page (libc).
fn capped_clients(fs: &Mount, clients: &[&str]) {
    let src = three_gib(fs);
    let cap = max_rw_count();
    let size = 3u64 << 30;
    for client in clients {
        let dst = fs.path("copy.img");
        let _ = std::fs::remove_file(&dst);
        let (s, d) = (src.to_str().expect("utf8"), dst.to_str().expect("utf8"));
        let loop_py = "import os,sys\nsrc=os.open(sys.argv[1],os.O_RDONLY)\ndst=os.open(sys.argv[2],os.O_WRONLY|os.O_CREAT,0o644)\nwhile os.copy_file_range(src,dst,1<<62):\n    pass\n";
        let go = support::go_client();
        let me = std::env::current_exe().expect("test binary");
        let command: Vec<&str> = match *client {
            "cp" => vec!["cp", s, d],
            "python" => vec!["python3", "-c", loop_py, s, d],
            "go" => vec![go.to_str().expect("utf8"), s, d],
            // This test binary, re-executed as a caller: std::fs::copy.
            "rust" => vec![me.to_str().expect("utf8"), s, d],
            other => panic!("unknown client {other}"),
        };
        let t = if *client == "rust" {
            let program = serde_json::json!(["std-copy", s, d]).to_string();
            support::trace_with_env(
                &fs.dir,
                &command,
                &[(copytrace_testkit::caller::ENV, program.as_str())],
            )
        } else if *client == "go" {
            // Go's runtime preempts a goroutine with SIGURG, which cuts a
            // 1 GiB copy short (a real short copy, with its verdict); this
            // test is about the per-call cap, so the client runs without
            // asynchronous preemption.
            support::trace_with_env(&fs.dir, &command, &[("GODEBUG", "asyncpreemptoff=1")])
        } else {
            trace(&fs.dir, &command)
        };
        assert_eq!(t.code, Some(0), "{client}");
        // A call is capped when it asked for more than the cap and got
        // exactly it. cp and the Python loop ask for everything at once;
        // Go and Rust's std copy in rounds of their own, which may stay
        // below the cap.
        let capped: Vec<&Value> = t
            .calls
            .iter()
            .filter(|c| c["ret"].as_u64() == Some(cap) && c["len"].as_u64() > Some(cap))
            .collect();
        if matches!(*client, "cp" | "python") {
            assert!(
                !capped.is_empty(),
                "{client}: no call was capped: {:?}",
                t.calls
            );
        }
        for c in &capped {
            assert_eq!(c["verdict"], "ok", "{client}: {c:#}");
            assert!(
                c["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("the most the kernel copies in one call"),
                "{client}: {c:#}"
            );
        }
        let suspicious: Vec<&Value> = t
            .calls
            .iter()
            .filter(|c| !matches!(c["verdict"].as_str(), Some("ok" | "short_read")))
            .collect();
        assert!(suspicious.is_empty(), "{client}: {suspicious:#?}");
        assert_eq!(t.summary["suspicious"], 0, "{client}");
        let copied: u64 = t.calls.iter().filter_map(|c| c["ret"].as_u64()).sum();
        assert_eq!(copied, size, "{client}");
        assert_eq!(
            std::fs::metadata(&dst).map(|m| m.len()).ok(),
            Some(size),
            "{client}"
        );
        std::fs::remove_file(&dst).expect("remove the copy");
    }
}

fn require_big_host() -> bool {
    if suite::in_guest() {
        suite::skip("3 GiB files need more memory and disk than a matrix guest has; the host runs this test");
        return false;
    }
    require_program("cp", "coreutils")
        && require_program("python3", "python3")
        && require_program("go", "golang-go")
}

/// `cp`, Go's io.Copy, Rust's std::fs::copy and a Python loop copy a 3 GiB
/// tmpfs file: the kernel caps each call at MAX_RW_COUNT, which is no
/// short copy, so nothing is suspicious.
#[test]
fn capped_copies_of_a_3_gib_tmpfs_file_are_not_suspicious() {
    require_root();
    if !require_big_host() {
        return;
    }
    let fs = Mount::tmpfs(&support::scratch(), "6200m");
    capped_clients(&fs, &["cp", "python", "go", "rust"]);
}

/// The same on ext4, with cp and Python (the other clients take the same
/// path through the kernel).
#[test]
fn capped_copies_of_a_3_gib_ext4_file_are_not_suspicious() {
    require_root();
    if !require_big_host() {
        return;
    }
    let fs = Mount::on_loop(&support::scratch(), "ext4", 6600).expect("mkfs.ext4");
    capped_clients(&fs, &["cp", "python"]);
}

/// Whether `filefrag -v` (e2fsprogs, FIEMAP) shows a shared extent in `path`.
fn has_shared_extent(path: &Path) -> bool {
    let out = std::process::Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .expect("filefrag (e2fsprogs)");
    assert!(
        out.status.success(),
        "filefrag: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).contains("shared")
}

/// Whether `name` is a function of the running kernel (/proc/kallsyms).
fn kernel_has_function(name: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .expect("kallsyms")
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(name))
}

/// On xfs (reflink on by default) and btrfs, a copy within one filesystem
/// is a clone: FIEMAP then shows the extents shared, and copytrace names
/// the mechanism `remap` and the kernel function behind it. Between two
/// filesystems of the same type, whatever the kernel does (EXDEV since
/// 5.19: neither has a `->copy_file_range`), copytrace says which.
#[test]
fn reflink_filesystems_remap_within_themselves() {
    require_root();
    if !require_program("mkfs.xfs", "xfsprogs")
        || !require_program("mkfs.btrfs", "btrfs-progs")
        || !require_program("filefrag", "e2fsprogs")
    {
        return;
    }
    let base = scratch_dir("remap");
    for (fs, mib) in [("xfs", 320), ("btrfs", 128)] {
        let a = Mount::on_loop(&base, fs, mib).expect("mkfs");
        let b = Mount::on_loop(&base, fs, mib).expect("mkfs");
        let len = 1usize << 20;
        support::write_file(&a.path("src"), len);
        let src = open(&a.path("src"), libc::O_RDONLY);
        let same = open(&a.path("clone"), libc::O_WRONLY | libc::O_CREAT);
        let other = open(&b.path("copy"), libc::O_WRONLY | libc::O_CREAT);
        let d = watch();
        let within = cfr(raw(&src), None, raw(&same), None, len, 0);
        let mut at = 0i64;
        let across = cfr(raw(&src), Some(&mut at), raw(&other), None, len, 0);
        let events = d.stop();
        assert_eq!(within, Ok(len), "{fs}: a clone within one filesystem");
        // SAFETY: fsync of our fd, so FIEMAP sees settled extents.
        unsafe { libc::fsync(raw(&same)) };
        assert!(
            has_shared_extent(&a.path("clone")),
            "{fs}: FIEMAP shows the clone's extents shared"
        );
        let ev = support::find(&events, raw(&src), raw(&same), len as u64);
        assert_eq!(ev["verdict"], "ok", "{ev:#}");
        assert_eq!(ev["mechanism"], "remap", "{fs}: {ev:#}");
        let op = ev["mechanism_op"].as_str().unwrap_or("");
        assert!(
            op.contains(fs) && op.contains("remap") && kernel_has_function(op),
            "{fs}: mechanism_op {op:?} is this kernel's {fs} remap function"
        );
        let ev = support::find(&events, raw(&src), raw(&other), len as u64);
        match across {
            Err(e) => {
                assert_eq!(e, libc::EXDEV, "{fs}: refused across two {fs} filesystems");
                assert_eq!(ev["verdict"], "cross_fs", "{ev:#}");
                assert_eq!(ev["ret"], -i64::from(libc::EXDEV));
            }
            Ok(n) => {
                assert_eq!(ev["ret"], n, "{ev:#}");
                assert_eq!(
                    ev["verdict"], "cross_fs",
                    "went through across two {fs}: {ev:#}"
                );
            }
        }
        eprintln!(
            "{fs}: within: {within:?}, mechanism remap ({op}); across two {fs}: {across:?}, verdict {}",
            ev["verdict"]
        );
    }
}

/// A seccomp filter that refuses copy_file_range (EPERM) stops the call
/// before the syscall runs: the syscall entry tracepoint does not fire, the
/// exit one does. Where copytrace's syscall side is on those tracepoints it
/// counts and shows the call as an `error` with EPERM and no files; the
/// fentry programs on the syscall wrapper and the VFS never run for it.
#[test]
fn a_call_seccomp_refuses_is_an_eperm_error_where_the_exit_is_seen() {
    require_root();
    let fs = Mount::tmpfs(&support::scratch(), "1m");
    std::fs::write(fs.path("src"), vec![1u8; 100]).expect("write");
    let (s, d) = (fs.path("src"), fs.path("dst"));
    let program = serde_json::json!(["seccomp-copy", s, d]).to_string();
    let me = std::env::current_exe().expect("test binary");
    let t = support::trace_with_env(
        &fs.dir,
        &[me.to_str().expect("utf8")],
        &[(copytrace_testkit::caller::ENV, program.as_str())],
    );
    assert_eq!(t.code, Some(0));
    assert_eq!(
        std::fs::metadata(&d).map(|m| m.len()).ok(),
        Some(0),
        "the filter refused the call: nothing was copied"
    );
    let backend = suite::probe().unwrap_or_default();
    match (backend.as_str(), t.calls.as_slice()) {
        // fentry on the syscall wrapper: the refused call never reaches it.
        ("fentry", []) => eprintln!("fentry: the refused call is not seen"),
        // The tracepoints, or fentry whose syscall side fell back to them.
        (_, [call]) => {
            assert_eq!(call["ret"], -i64::from(libc::EPERM), "{call:#}");
            assert_eq!(call["verdict"], "error", "{call:#}");
            assert_eq!(call["entry_seen"], false, "{call:#}");
            assert!(
                call["file_in"].is_null() && call["file_out"].is_null(),
                "{call:#}"
            );
            let reason = call["reason"].as_str().unwrap_or("");
            assert!(
                reason.starts_with("EPERM") && reason.contains("seccomp"),
                "{reason}"
            );
            assert_eq!(t.summary["suspicious"], 1);
        }
        (b, calls) => panic!(
            "{b}: the refused call was seen {} times: {calls:#?}",
            calls.len()
        ),
    }
}
