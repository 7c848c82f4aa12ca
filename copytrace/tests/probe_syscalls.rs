//! Real probes, real calls: each test starts `copytrace run`, makes
//! copy_file_range calls against real filesystems and asserts what the
//! kernel-side capture recorded (fields, sizes, magics, errno) and the verdict.

mod support;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use serde_json::Value;
use support::{cfr, ext4, find, magic, open, raw, suite, tmpfs, watch, write_file};

const O_RDONLY: i32 = libc::O_RDONLY;
const O_WRONLY_CREAT: i32 = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn common_fields(ev: &Value, comm_pid: u32) {
    assert_eq!(ev["pid"], comm_pid, "{ev:#}");
    assert!(ev["tid"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(ev["uid"], 0);
    assert!(ev["cgroup_id"].as_u64().is_some(), "{ev:#}");
    assert!(!ev["comm"].as_str().unwrap_or("").is_empty());
    let (s, e) = (
        ev["start_ns"].as_u64().unwrap_or(0),
        ev["end_ns"].as_u64().unwrap_or(0),
    );
    assert!(s > 0 && e >= s, "timestamps {s} {e}");
    assert_eq!(ev["latency_ns"].as_u64(), Some(e - s));
    suite::assert_backend(ev["backend"].as_str().unwrap_or("?"));
    assert_eq!(ev["origin"], "syscall");
    // Only the fentry back-end sees whether vfs_copy_file_range ran.
    let vfs_known = ev["backend"] == "fentry";
    assert_eq!(ev["vfs_reached"].is_boolean(), vfs_known, "{ev:#}");
}

#[test]
fn ext4_to_ext4_full_copy() {
    let fs = ext4();
    write_file(&fs.path("src"), 100_000);
    let src = open(&fs.path("src"), O_RDONLY);
    let dst = open(&fs.path("dst"), O_WRONLY_CREAT);
    let d = watch();
    let mut off = 1000i64;
    assert_eq!(
        cfr(raw(&src), Some(&mut off), raw(&dst), None, 50_000, 0),
        Ok(50_000)
    );
    let events = d.stop();
    let ev = find(&events, raw(&src), raw(&dst), 50_000);
    common_fields(ev, std::process::id());
    assert_eq!(ev["ret"], 50_000);
    assert_eq!(ev["verdict"], "ok");
    assert_eq!(ev["off_in"], 1000, "off_in pointer value at entry");
    assert_eq!(ev["off_out"], Value::Null, "no off_out pointer");
    assert_eq!(ev["flags"], 0);
    let (fi, fo) = (&ev["file_in"], &ev["file_out"]);
    assert_eq!(fi["magic"], magic::EXT4);
    assert_eq!(fi["fs"], "ext4");
    assert_eq!(fi["kind"], "regular");
    assert_eq!(fi["size"], 100_000);
    assert_eq!(fo["size"], 0, "destination size at entry");
    assert_eq!(fo["magic"], magic::EXT4);
    assert_eq!(fi["dev"], fo["dev"]);
    let meta = std::fs::metadata(fs.path("src")).expect("stat");
    assert_eq!(fi["ino"], std::os::unix::fs::MetadataExt::ino(&meta));
    assert_eq!(fi["fs_path"], "/src");
    assert_eq!(ev["path_in"], fs.path("src").to_str().expect("utf8"));
    assert_eq!(ev["path_out"], fs.path("dst").to_str().expect("utf8"));
}

/// Where the kernel has the `bpf_rdonly_cast` kfunc (Linux 6.2+), the
/// programs read kernel structs with typed loads instead of one helper
/// call per read, and the daemon says which it uses. The kernel's BTF names
/// the kfunc among its strings when it has it.
#[test]
fn typed_kernel_reads_where_the_kernel_has_rdonly_cast() {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let name = b"\0bpf_rdonly_cast\0";
    let has_kfunc = btf.windows(name.len()).any(|w| w == name);
    // A daemon of its own at debug level: when this kernel's verifier
    // refuses the typed programs, the failure below shows its whole log.
    let d = support::watching().args(["--log-level", "debug"]).start();
    let log = d.log();
    drop(d.stop());
    let want = if has_kfunc {
        "typed kernel reads"
    } else {
        "helper kernel reads"
    };
    assert!(log.contains(want), "expected {want:?}: {log}");
}

#[test]
fn tmpfs_to_tmpfs_uses_file_position() {
    let fs = tmpfs("4m");
    write_file(&fs.path("a"), 8192);
    let src = open(&fs.path("a"), O_RDONLY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT);
    // SAFETY: lseek on a valid fd.
    let moved = unsafe { libc::lseek(raw(&src), 4096, libc::SEEK_SET) };
    assert_eq!(moved, 4096);
    let d = watch();
    assert_eq!(cfr(raw(&src), None, raw(&dst), None, 4096, 0), Ok(4096));
    let events = d.stop();
    let ev = find(&events, raw(&src), raw(&dst), 4096);
    common_fields(ev, std::process::id());
    assert_eq!(ev["verdict"], "ok");
    assert_eq!(ev["file_in"]["magic"], magic::TMPFS);
    assert_eq!(ev["file_in"]["pos"], 4096, "f_pos at entry");
    assert_eq!(ev["file_in"]["size"], 8192);
    assert_eq!(ev["file_out"]["fs"], "tmpfs");
}

#[test]
fn proc_to_tmpfs_is_exdev_and_records_proc() {
    let fs = tmpfs("1m");
    let src = open(std::path::Path::new("/proc/self/status"), O_RDONLY);
    let dst = open(&fs.path("out"), O_WRONLY_CREAT);
    let d = watch();
    assert_eq!(
        cfr(raw(&src), None, raw(&dst), None, 65536, 0),
        Err(libc::EXDEV)
    );
    let events = d.stop();
    let ev = find(&events, raw(&src), raw(&dst), 65536);
    common_fields(ev, std::process::id());
    assert_eq!(ev["ret"], -i64::from(libc::EXDEV));
    assert_eq!(ev["verdict"], "cross_fs");
    assert_eq!(ev["file_in"]["magic"], magic::PROC);
    assert_eq!(ev["file_in"]["size"], 0, "procfs advertises size 0");
    assert_eq!(ev["file_in"]["size_truth"], "generated");
    assert_eq!(ev["file_out"]["magic"], magic::TMPFS);
    let path = ev["path_in"].as_str().unwrap_or_default();
    assert!(
        path.starts_with("/proc/") && path.ends_with("/status"),
        "{path}"
    );
}

/// The mount id the kernel gives an open file (`/proc/self/fdinfo`).
fn mnt_id(fd: &OwnedFd) -> u64 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", raw(fd))).expect("fdinfo");
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no mnt_id in {info}"))
}

/// An overlay mount whose layers are two tmpfs instances. Fields drop in
/// order: the overlay is unmounted before its layers.
struct Overlay {
    mount: copytrace_testkit::fs::Mount,
    lower: copytrace_testkit::fs::Mount,
    upper: copytrace_testkit::fs::Mount,
}

impl Overlay {
    /// The overlay, with `a` (4096 bytes) on its lower layer; None (said
    /// loudly) when this kernel cannot mount overlay.
    fn mount() -> Option<Self> {
        let lower = tmpfs("1m");
        let upper = tmpfs("1m");
        write_file(&lower.path("a"), 4096);
        for d in ["up", "work"] {
            std::fs::create_dir(upper.path(d)).expect("mkdir");
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.dir.display(),
            upper.path("up").display(),
            upper.path("work").display()
        );
        match copytrace_testkit::fs::Mount::virtual_fs(&support::scratch(), "overlay", &data) {
            Ok(mount) => Some(Overlay {
                mount,
                lower,
                upper,
            }),
            Err(e) => {
                suite::skip(&format!("this kernel cannot mount overlay ({e})"));
                None
            }
        }
    }
}

/// `major:minor` of the filesystem holding `path`, from stat(2).
fn dev_of(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).expect("stat").dev();
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// Inode number of `path`, from stat(2).
fn ino_of(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("stat"))
}

/// The calls the kernel made for itself among `events`: on the fentry
/// back-end, overlay's own call on the real files beneath the syscall, and
/// nothing on the tracepoint back-end, which sees only syscalls.
fn nested_in<'a>(events: &'a [Value], outer: &Value) -> Option<&'a Value> {
    let kernel: Vec<&Value> = events.iter().filter(|e| e["origin"] == "kernel").collect();
    if outer["backend"] == "tracepoint" {
        assert!(
            kernel.is_empty(),
            "the tracepoint back-end sees syscalls only: {kernel:#?}"
        );
        return None;
    }
    assert_eq!(kernel.len(), 1, "one nested call: {events:#?}");
    let n = kernel[0];
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    assert_eq!(n["tid"], tid, "the syscall's own thread: {n:#}");
    assert_eq!(outer["tid"], tid);
    assert_eq!(n["within"]["start_ns"], outer["start_ns"], "{n:#}");
    assert_eq!(n["within"]["fd_in"], outer["fd_in"]);
    assert_eq!(n["within"]["fd_out"], outer["fd_out"]);
    let span = |e: &Value| (e["start_ns"].as_u64(), e["end_ns"].as_u64());
    let ((os, oe), (ns, ne)) = (span(outer), span(n));
    assert!(os < ns && ne < oe, "nested in time: {outer:#} {n:#}");
    assert_eq!(
        (n["fd_in"].as_i64(), n["fd_out"].as_i64()),
        (Some(-1), Some(-1))
    );
    assert!(outer["within"].is_null(), "{outer:#}");
    Some(n)
}

/// A copy between two files of an overlay mount, both on its upper layer:
/// the syscall on overlay, and (fentry) overlay's own call on the real
/// upper files, on the same thread while the syscall is in flight: neither
/// lost nor merged, and the nested one names the syscall.
#[test]
fn overlays_own_call_on_its_real_files_is_seen_inside_the_syscall() {
    let Some(ov) = Overlay::mount() else { return };
    // Written through the overlay: created on the upper layer.
    write_file(&ov.mount.path("c"), 4096);
    let src = open(&ov.mount.path("c"), O_RDONLY);
    let dst = open(&ov.mount.path("d"), O_WRONLY_CREAT);
    let d = watch();
    let got = cfr(raw(&src), None, raw(&dst), None, 4096, 0);
    let events = d.stop();
    assert_eq!(got, Ok(4096));
    let outer = find(&events, raw(&src), raw(&dst), 4096);
    common_fields(outer, std::process::id());
    assert_eq!(outer["ret"], 4096);
    assert_eq!(outer["file_in"]["fs"], "overlay");
    assert_eq!(outer["file_in"]["dev"], dev_of(&ov.mount.dir));
    let Some(n) = nested_in(&events, outer) else {
        return;
    };
    let (real_in, real_out) = (ov.upper.path("up/c"), ov.upper.path("up/d"));
    assert_eq!(n["ret"], 4096, "{n:#}");
    assert_eq!(n["len"], 4096);
    assert_eq!(n["verdict"], "ok", "{n:#}");
    for (side, real) in [("file_in", &real_in), ("file_out", &real_out)] {
        assert_eq!(n[side]["fs"], "tmpfs", "{n:#}");
        assert_eq!(n[side]["magic"], magic::TMPFS);
        assert_eq!(n[side]["dev"], dev_of(real), "{n:#}");
        assert_eq!(n[side]["ino"], ino_of(real), "{n:#}");
    }
    // Older kernels (6.1) open overlay's real files under the overlay
    // file's path (the overlay's mount, as fdinfo shows for the caller's
    // fd); newer ones (6.12) under their own.
    for (side, path, real, fd) in [
        ("file_in", "path_in", &real_in, &src),
        ("file_out", "path_out", &real_out, &dst),
    ] {
        if n[side]["path_on_other_fs"] == true {
            assert_eq!(n[side]["mnt_id"], mnt_id(fd), "{n:#}");
            assert_eq!(n[path], outer[path], "{n:#}");
        } else {
            assert_eq!(n[path], real.to_str().expect("utf8"), "{n:#}");
        }
    }
}

/// Two files of one overlay mount, a lower-layer source and a new upper
/// file, on layers that are two tmpfs instances: overlay copies the real
/// files, which sit on different filesystems, and the call is refused.
/// The reason says so, not "from overlay to overlay"; overlay's own call
/// (fentry) is refused between the two layers' filesystems.
#[test]
fn an_overlay_refusal_between_its_own_files_is_explained() {
    let Some(ov) = Overlay::mount() else { return };
    let src = open(&ov.mount.path("a"), O_RDONLY);
    let dst = open(&ov.mount.path("b"), O_WRONLY_CREAT);
    assert_eq!(
        mnt_id(&src),
        mnt_id(&dst),
        "both files are on the one overlay mount"
    );
    let d = watch();
    let got = cfr(raw(&src), None, raw(&dst), None, 4096, 0);
    let events = d.stop();
    if got != Err(libc::EXDEV) {
        suite::skip(&format!(
            "this kernel's overlayfs did not refuse a lower-to-upper copy ({got:?})"
        ));
        return;
    }
    let ev = find(&events, raw(&src), raw(&dst), 4096);
    assert_eq!(ev["ret"], -i64::from(libc::EXDEV));
    assert_eq!(ev["verdict"], "cross_fs");
    assert_eq!(
        (ev["file_in"]["fs"].as_str(), ev["file_out"]["fs"].as_str()),
        (Some("overlay"), Some("overlay"))
    );
    assert_eq!(
        ev["file_in"]["dev"], ev["file_out"]["dev"],
        "one superblock"
    );
    assert_eq!(ev["file_in"]["mnt_id"], mnt_id(&src));
    assert_eq!(ev["file_out"]["mnt_id"], mnt_id(&dst));
    let reason = ev["reason"].as_str().unwrap_or_default();
    assert!(!reason.contains("from overlay to overlay"), "{reason}");
    assert!(
        reason.contains("one overlay mount") && reason.contains("different filesystems"),
        "{reason}"
    );
    let Some(n) = nested_in(&events, ev) else {
        return;
    };
    assert_eq!(n["ret"], -i64::from(libc::EXDEV), "{n:#}");
    assert_eq!(n["verdict"], "cross_fs");
    assert_eq!(n["file_in"]["dev"], dev_of(&ov.lower.dir), "{n:#}");
    assert_eq!(n["file_in"]["ino"], ino_of(&ov.lower.path("a")));
    assert_eq!(n["file_out"]["dev"], dev_of(&ov.upper.dir), "{n:#}");
    assert_eq!(n["file_out"]["ino"], ino_of(&ov.upper.path("up/b")));
    let reason = n["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("overlayfs"), "{reason}");
}

/// The seed's failure, on each kernel-generated filesystem the guests
/// mount: a copy between two of its files returns 0 and succeeds, because
/// the source advertises size 0 whatever it would produce on read.
fn assert_silent_zero_copy(src: &std::path::Path, dst: &std::path::Path, magic: u64, fs: &str) {
    let src = open(src, O_RDONLY);
    let dst = open(dst, libc::O_WRONLY);
    let d = watch();
    assert_eq!(cfr(raw(&src), None, raw(&dst), None, 4096, 0), Ok(0));
    let events = d.stop();
    let ev = find(&events, raw(&src), raw(&dst), 4096);
    common_fields(ev, std::process::id());
    assert_eq!(ev["ret"], 0);
    assert_eq!(ev["verdict"], "silent_zero_copy", "{ev:#}");
    assert_eq!(ev["file_in"]["magic"], magic);
    assert_eq!(ev["file_in"]["fs"], fs);
    assert_eq!(ev["file_in"]["size"], 0, "{fs} advertises size 0");
    assert_eq!(ev["file_in"]["size_truth"], "generated");
    assert_eq!(ev["file_out"]["magic"], magic);
    assert!(
        ev["reason"]
            .as_str()
            .is_some_and(|r| r.contains("reported success")),
        "{ev:#}"
    );
}

#[test]
fn proc_to_proc_is_a_silent_zero_copy() {
    assert_silent_zero_copy(
        std::path::Path::new("/proc/self/status"),
        std::path::Path::new("/proc/self/comm"),
        magic::PROC,
        "proc",
    );
}

#[test]
fn tracefs_trace_to_trace_marker_is_a_silent_zero_copy() {
    let dir = support::tracefs_dir();
    assert_silent_zero_copy(
        &dir.join("trace"),
        &dir.join("trace_marker"),
        magic::TRACEFS,
        "tracefs",
    );
}

#[test]
fn cgroup2_file_to_cgroup2_file_is_a_silent_zero_copy() {
    let (root, _own) = support::cgroup2_root(&support::scratch());
    // cgroup.procs holds this process's pid; nothing is written back.
    assert_silent_zero_copy(
        &root.join("cgroup.procs"),
        &root.join("cgroup.procs"),
        magic::CGROUP2,
        "cgroup2",
    );
}

#[test]
fn pipe_source_is_einval() {
    let fs = tmpfs("1m");
    let (r, w) = pipe();
    let dst = open(&fs.path("out"), O_WRONLY_CREAT);
    assert_eq!(
        // SAFETY: valid fd and buffer.
        unsafe { libc::write(raw(&w), b"hello".as_ptr().cast(), 5) },
        5
    );
    let d = watch();
    assert_eq!(cfr(raw(&r), None, raw(&dst), None, 5, 0), Err(libc::EINVAL));
    let events = d.stop();
    let ev = find(&events, raw(&r), raw(&dst), 5);
    assert_eq!(ev["verdict"], "error");
    assert_eq!(ev["file_in"]["kind"], "fifo");
    assert_eq!(ev["file_in"]["magic"], magic::pipefs());
    let reason = ev["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("EINVAL") && reason.contains("fifo"),
        "{reason}"
    );
}

#[test]
fn closed_fd_is_ebadf() {
    let fs = tmpfs("1m");
    let dst = open(&fs.path("out"), O_WRONLY_CREAT);
    let d = watch();
    // A high fd nobody opened (a freshly closed low one would be reused by
    // the daemon's pipes).
    let closed = 900;
    // SAFETY: F_GETFD only queries.
    let flags = unsafe { libc::fcntl(closed, libc::F_GETFD) };
    assert_eq!(flags, -1, "fd 900 must be closed");
    assert_eq!(cfr(closed, None, raw(&dst), None, 10, 0), Err(libc::EBADF));
    let events = d.stop();
    let ev = find(&events, closed, raw(&dst), 10);
    assert_eq!(
        ev["file_in"],
        Value::Null,
        "a closed fd resolves to no file"
    );
    assert_eq!(ev["verdict"], "error");
    assert_eq!(ev["reason"], format!("EBADF: fd_in {closed} is not open"));
}

#[test]
fn copy_at_eof_returns_zero_and_is_ok() {
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 100);
    let src = open(&fs.path("a"), O_RDONLY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT);
    let d = watch();
    let mut off = 100i64;
    assert_eq!(
        cfr(raw(&src), Some(&mut off), raw(&dst), None, 777, 0),
        Ok(0)
    );
    let events = d.stop();
    let ev = find(&events, raw(&src), raw(&dst), 777);
    assert_eq!(ev["ret"], 0);
    assert_eq!(ev["off_in"], 100);
    assert_eq!(ev["verdict"], "ok", "{ev:#}");
}

#[test]
fn zero_length_request() {
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 100);
    let src = open(&fs.path("a"), O_RDONLY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT);
    let d = watch();
    assert_eq!(cfr(raw(&src), None, raw(&dst), None, 0, 0), Ok(0));
    let events = d.stop();
    let ev = find(&events, raw(&src), raw(&dst), 0);
    assert_eq!(ev["ret"], 0);
    assert_eq!(ev["verdict"], "ok");
    assert_eq!(ev["reason"], "zero-length request");
}

#[test]
fn nonzero_flags_are_einval() {
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 100);
    let src = open(&fs.path("a"), O_RDONLY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT);
    let d = watch();
    // Offsets too: where the syscall refuses the flags itself, the call
    // never reaches vfs_copy_file_range, so even the fentry back-end, which
    // otherwise takes the positions from that call, reads them from user
    // memory (older kernels refuse them inside it: by value there).
    let (mut off_in, mut off_out) = (7i64, 9i64);
    assert_eq!(
        cfr(
            raw(&src),
            Some(&mut off_in),
            raw(&dst),
            Some(&mut off_out),
            55,
            1
        ),
        Err(libc::EINVAL)
    );
    let events = d.stop();
    let ev = find(&events, raw(&src), raw(&dst), 55);
    assert_eq!(ev["flags"], 1);
    assert_eq!(ev["off_in"], 7, "{ev:#}");
    assert_eq!(ev["off_out"], 9, "{ev:#}");
    assert_eq!(ev["verdict"], "error");
    assert_eq!(ev["reason"], "EINVAL: flags must be 0 (got 0x1)");
}

#[test]
fn append_destination_is_ebadf() {
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 100);
    let src = open(&fs.path("a"), O_RDONLY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT | libc::O_APPEND);
    let d = watch();
    assert_eq!(
        cfr(raw(&src), None, raw(&dst), None, 66, 0),
        Err(libc::EBADF)
    );
    let events = d.stop();
    let ev = find(&events, raw(&src), raw(&dst), 66);
    let flags = ev["file_out"]["open_flags"].as_i64().unwrap_or(0) as i32;
    assert_ne!(flags & libc::O_APPEND, 0, "O_APPEND captured in f_flags");
    assert!(
        ev["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("O_APPEND"),
        "{ev:#}"
    );
}

#[test]
fn small_tmpfs_gives_short_write_then_enospc() {
    let big = tmpfs("1m");
    let small = tmpfs("64k");
    write_file(&big.path("src"), 40960);
    // Fill the small fs so only part of the copy fits.
    write_file(&small.path("filler"), 40960);
    let src = open(&big.path("src"), O_RDONLY);
    let dst = open(&small.path("dst"), O_WRONLY_CREAT);
    let d = watch();
    // Cross-superblock tmpfs copies are EXDEV on >= 5.19, so copy within the
    // small fs from its own file: filler -> dst.
    let src2 = open(&small.path("filler"), O_RDONLY);
    let first = cfr(raw(&src2), None, raw(&dst), None, 40960, 0);
    let second = cfr(raw(&src2), None, raw(&dst), None, 40960, 0);
    let cross = cfr(raw(&src), None, raw(&dst), None, 123, 0);
    let events = d.stop();
    let copied = first.expect("first copy is short, not an error");
    assert!(copied > 0 && copied < 40960, "short copy, got {copied}");
    assert_eq!(second, Err(libc::ENOSPC));
    assert_eq!(cross, Err(libc::EXDEV));
    let evs: Vec<&Value> = events
        .iter()
        .filter(|e| e["fd_in"] == raw(&src2) && e["fd_out"] == raw(&dst))
        .collect();
    assert_eq!(evs.len(), 2, "{events:#?}");
    assert_eq!(evs[0]["ret"], copied as u64);
    assert_eq!(evs[0]["verdict"], "short_write", "{:#}", evs[0]);
    assert_eq!(evs[0]["file_in"]["size"], 40960);
    assert_eq!(evs[1]["ret"], -i64::from(libc::ENOSPC));
    assert_eq!(evs[1]["verdict"], "error");
    assert!(evs[1]["reason"]
        .as_str()
        .unwrap_or_default()
        .starts_with("ENOSPC"));
    assert_eq!(
        find(&events, raw(&src), raw(&dst), 123)["verdict"],
        "cross_fs"
    );
}

#[test]
fn directory_source_is_eisdir() {
    let fs = tmpfs("1m");
    let dir = open(&fs.dir, O_RDONLY | libc::O_DIRECTORY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT);
    let d = watch();
    assert_eq!(
        cfr(raw(&dir), None, raw(&dst), None, 88, 0),
        Err(libc::EISDIR)
    );
    let events = d.stop();
    let ev = find(&events, raw(&dir), raw(&dst), 88);
    assert_eq!(ev["file_in"]["kind"], "directory");
    assert_eq!(ev["verdict"], "error");
    assert_eq!(ev["reason"], "EISDIR: source is a directory");
}

/// A caller's ids are its own: pid, thread, parent and name, and uid and
/// gid told apart (typed kernels load them from the task and its cred, the
/// others ask helpers; a swap or a stale task would show here).
#[test]
fn a_callers_ids_are_its_own() {
    let fs = tmpfs("1m");
    write_file(&fs.path("src"), 3000);
    let (src, dst) = (fs.path("src"), fs.path("dst"));
    let d = watch();
    // tmpfs's root is world-writable: the caller may create dst there.
    let mut child = support::caller::command(
        "copy",
        &[
            src.to_str().expect("utf-8 path"),
            dst.to_str().expect("utf-8 path"),
            "2999",
        ],
    )
    .uid(65534)
    .gid(65533)
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("caller");
    let pid = child.id();
    assert!(child.wait().expect("caller").success());
    let events = d.stop();
    let ev = events
        .iter()
        .find(|e| e["len"] == 2999)
        .unwrap_or_else(|| panic!("the caller's call not seen: {events:#?}"));
    assert_eq!(ev["ret"], 2999, "{ev:#}");
    assert_eq!(ev["pid"], pid, "{ev:#}");
    assert_eq!(ev["tid"], pid, "its main thread copied: {ev:#}");
    assert_eq!(ev["ppid"], std::process::id(), "{ev:#}");
    assert_eq!(ev["uid"], 65534, "{ev:#}");
    assert_eq!(ev["gid"], 65533, "{ev:#}");
    // The caller is this test binary: its comm is the file name's first
    // 15 bytes.
    let exe = std::env::current_exe().expect("test binary path");
    let name = exe
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name");
    assert_eq!(ev["comm"], name[..name.len().min(15)], "{ev:#}");
}

#[test]
fn descendants_are_followed_and_orphans_are_not() {
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 10);
    let d = watch();
    // The child copies (followed: we are its ancestor). Its grandchild is
    // orphaned first, reparented away from us, then copies: not followed.
    let [followed, orphan] = support::caller::ORPHAN_LENS;
    let status = support::caller::command("orphan", &[fs.dir.to_str().expect("utf-8 dir")])
        .status()
        .expect("caller");
    assert!(status.success());
    support::wait_for(10, "the orphan's copy", || {
        fs.path("orphan-done").exists().then_some(())
    });
    let events = d.stop();
    let ev = events
        .iter()
        .find(|e| e["len"] == followed)
        .unwrap_or_else(|| panic!("child's call not seen: {events:#?}"));
    assert_ne!(ev["pid"], std::process::id());
    assert_eq!(ev["ret"], 10);
    assert!(
        events.iter().all(|e| e["len"] != orphan),
        "a process outside the followed tree was reported: {events:#?}"
    );
}

#[test]
fn every_event_carries_the_facts_its_count_used() {
    // The kernel keys its exact counts by the facts word it computes; the
    // event carries that word, and userspace recomputes it from the event's
    // own fields with the same function. They must agree on every call.
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 100);
    let src = open(&fs.path("a"), O_RDONLY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT);
    let proc_status = open(std::path::Path::new("/proc/self/status"), O_RDONLY);
    let d = watch();
    let _ = cfr(raw(&src), None, raw(&dst), None, 40, 0);
    let _ = cfr(raw(&src), None, raw(&dst), None, 400, 0);
    let _ = cfr(raw(&src), None, raw(&dst), None, 400, 0);
    let _ = cfr(raw(&src), None, raw(&dst), None, 0, 0);
    let _ = cfr(raw(&proc_status), None, raw(&dst), None, 4096, 0);
    let _ = cfr(900, None, raw(&dst), None, 5, 0);
    let events = d.stop();
    assert_eq!(events.len(), 6, "{events:#?}");
    for ev in &events {
        let (fin, fout) = (&ev["file_in"], &ev["file_out"]);
        let num = |v: &Value| v.as_i64().unwrap_or(0);
        let outcome = copytrace_common::CallOutcome {
            len: ev["len"].as_u64().unwrap_or(0),
            ret: num(&ev["ret"]),
            read_pos: if ev["off_in"].is_null() {
                num(&fin["pos"])
            } else {
                num(&ev["off_in"])
            },
            size_in: num(&fin["size"]),
            in_present: !fin.is_null(),
            out_present: !fout.is_null(),
            same_fs: !fin.is_null() && fin["dev"] == fout["dev"],
            max_per_call: support::max_rw_count(),
        };
        let kernel = ev["facts"].as_u64();
        assert!(kernel.is_some(), "no kernel facts: {ev:#}");
        assert_eq!(kernel, Some(u64::from(outcome.facts())), "{ev:#}");
    }
}

#[test]
fn more_threads_than_the_in_flight_map_holds_are_all_tracked() {
    // A thread keeps its in-flight record between calls, in its slot of
    // the slot array (16384) or in the overflow hash (4096), and the kernel
    // side frees both when the thread exits. Were records kept past their
    // thread, more threads than both hold would fill them, and later
    // threads' calls would go untracked and unreported.
    const THREADS: usize = 21_000;
    const _: () = assert!(
        THREADS
            > (copytrace_common::THREAD_SLOT_COUNT + copytrace_common::INFLIGHT_OVERFLOW) as usize
    );
    if suite::in_guest() {
        suite::skip("21,000 thread lifetimes take minutes under TCG; the host runs this test");
        return;
    }
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 10);
    let src = open(&fs.path("a"), O_RDONLY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT);
    let (s, t) = (raw(&src), raw(&dst));
    let len = 777_013usize;
    let mut d = watch();
    let mut events = Vec::new();
    for round in 0..THREADS.div_ceil(1000) {
        for _ in round * 1000..THREADS.min((round + 1) * 1000) {
            std::thread::spawn(move || cfr(s, Some(&mut 0), t, Some(&mut 0), len, 0))
                .join()
                .expect("copying thread")
                .expect("copy");
        }
        // The ring holds a few thousand records and an idle host makes
        // calls faster than a debug daemon prints them: each round is read
        // before the next, so what is measured is tracking, not pace.
        events.extend(d.reported());
    }
    let mine: Vec<_> = events.iter().filter(|e| e["len"] == len).collect();
    let tids: std::collections::HashSet<u64> =
        mine.iter().filter_map(|e| e["tid"].as_u64()).collect();
    assert_eq!(mine.len(), THREADS, "every thread's call is reported");
    let held = (copytrace_common::THREAD_SLOT_COUNT + copytrace_common::INFLIGHT_OVERFLOW) as usize;
    assert!(tids.len() > held, "only {} distinct threads", tids.len());
}

#[test]
fn a_thread_whose_slot_is_held_is_tracked_through_the_hash() {
    // Thread ids that differ by a multiple of the slot count share a slot
    // of the in-flight array: while one thread holds it, the other's calls
    // go through the overflow hash. Both threads' calls must be tracked
    // and told apart, interleaved.
    if suite::in_guest() {
        suite::skip("waiting for a thread id to come round takes minutes under TCG; the host runs this test");
        return;
    }
    use copytrace_common::{thread_slot, THREAD_SLOT_COUNT};
    let fs = tmpfs("1m");
    write_file(&fs.path("a"), 10);
    let src = open(&fs.path("a"), O_RDONLY);
    let dst = open(&fs.path("b"), O_WRONLY_CREAT);
    let (s, t) = (raw(&src), raw(&dst));
    let (holder_len, sharer_len) = (555_011usize, 555_013usize);
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("pid_max is a number");
    // With Linux's default pid_max (32768) a slot has two thread ids, and
    // the other one may never come round: ids below RESERVED_PIDS are not
    // handed out again once ids have wrapped, and a long-lived task may
    // hold it. So a holder is kept only when some other id on its slot can
    // still be handed out (and has no /proc entry: /proc/<id> finds any
    // thread).
    const RESERVED_PIDS: u32 = 300;
    let shareable = |tid: u32| {
        (thread_slot(tid)..pid_max)
            .step_by(THREAD_SLOT_COUNT as usize)
            .any(|id| {
                id != tid
                    && id >= RESERVED_PIDS
                    && !std::path::Path::new(&format!("/proc/{id}")).exists()
            })
    };
    let d = watch();
    let (holder, holder_tid, go_tx) = loop {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<bool>();
        let holder = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            let _ = ready_tx.send(tid);
            if go_rx.recv() != Ok(true) {
                return None;
            }
            cfr(s, Some(&mut 0), t, Some(&mut 0), holder_len, 0).expect("holder's first copy");
            let _ = ready_tx.send(tid);
            let _ = go_rx.recv();
            cfr(s, Some(&mut 0), t, Some(&mut 0), holder_len, 0).expect("holder's second copy");
            Some(tid)
        });
        let tid = ready_rx.recv().expect("the holder's thread id");
        if !shareable(tid) {
            let _ = go_tx.send(false);
            assert_eq!(holder.join().expect("holder thread"), None);
            continue;
        }
        let _ = go_tx.send(true);
        ready_rx.recv().expect("the holder's first copy");
        break (holder, tid, go_tx);
    };
    // Thread ids are handed out in turn: one in every slot-count threads
    // lands on the holder's slot (other processes take ids too).
    let mut spawned = 0u32;
    let sharer_tid = loop {
        let shared = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            if thread_slot(tid) != thread_slot(holder_tid) {
                return None;
            }
            for _ in 0..3 {
                cfr(s, Some(&mut 0), t, Some(&mut 0), sharer_len, 0).expect("sharer's copy");
            }
            Some(tid)
        })
        .join()
        .expect("thread");
        if let Some(tid) = shared {
            break tid;
        }
        spawned += 1;
        assert!(
            spawned < 40 * THREAD_SLOT_COUNT,
            "no thread id came round to slot {} in {spawned} threads",
            thread_slot(holder_tid)
        );
    };
    let _ = go_tx.send(true);
    assert_eq!(holder.join().expect("holder thread"), Some(holder_tid));
    let events = d.stop();
    let tids_of = |len: usize| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["len"] == len)
            .filter_map(|e| e["tid"].as_u64())
            .collect()
    };
    assert_eq!(
        tids_of(holder_len),
        vec![u64::from(holder_tid); 2],
        "the holder's calls"
    );
    assert_eq!(
        tids_of(sharer_len),
        vec![u64::from(sharer_tid); 3],
        "the sharer's calls"
    );
    assert_ne!(holder_tid, sharer_tid);
}
