use super::*;

/// A worse verdict never gets a milder journal priority (syslog counts
/// down: LOG_ERR is 3), and "suspicious" is a cut through the same order.
#[test]
fn one_ranking_orders_priority_and_suspicion() {
    for a in Verdict::ALL {
        for b in Verdict::ALL {
            let (pa, pb) = (
                a.severity().syslog_priority(),
                b.severity().syslog_priority(),
            );
            assert_eq!(a.severity() < b.severity(), pa > pb, "{a:?} {b:?}");
            if a.is_suspicious() && !b.is_suspicious() {
                assert!(a.severity() > b.severity(), "{a:?} {b:?}");
            }
        }
    }
    // The failures nobody is told about rank first.
    let worst = Verdict::ALL.iter().map(|v| v.severity()).max();
    assert_eq!(worst, Some(Verdict::SilentZeroCopy.severity()));
}
use crate::model::event::{from_raw, tests::blank};
use copytrace_common::{Event, FileInfo};

// Magics from the libc crate, never from the registry under test.
const EXT4: u64 = libc::EXT4_SUPER_MAGIC as u64;
const TMPFS: u64 = libc::TMPFS_MAGIC as u64;
const PROC: u64 = libc::PROC_SUPER_MAGIC as u64;
const SYSFS: u64 = libc::SYSFS_MAGIC as u64;
const TRACEFS: u64 = libc::TRACEFS_MAGIC as u64;
const CGROUP2: u64 = libc::CGROUP2_SUPER_MAGIC as u64;
const XFS: u64 = libc::XFS_SUPER_MAGIC as u64;
const NFS: u64 = libc::NFS_SUPER_MAGIC as u64;
/// MAX_RW_COUNT on this machine, from libc: INT_MAX rounded down to
/// `sysconf(_SC_PAGESIZE)`.
fn cap() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    (libc::c_int::MAX as u64) & !(page - 1)
}
// PIPEFS_MAGIC: libc lacks it (include/uapi/linux/magic.h).
const PIPEFS: u64 = 0x5049_5045;
const REG: u16 = 0o100644;

fn file(magic: u64, dev: u32, mode: u16, size: i64, pos: i64) -> FileInfo {
    let mut f = blank().files[0];
    f.present = 1;
    f.magic = magic;
    f.path.dev = dev;
    f.mode = mode;
    f.size = size;
    f.pos = pos;
    f.f_flags = libc::O_RDWR as u32;
    f
}

fn call(ret: i64, len: u64, src: Option<FileInfo>, dst: Option<FileInfo>) -> Box<Event> {
    let mut e = blank();
    e.ret = ret;
    e.len = len;
    e.fd_in = 3;
    e.fd_out = 4;
    if let Some(s) = src {
        e.files[0] = s;
    }
    if let Some(d) = dst {
        e.files[1] = d;
    }
    e
}

fn verdict_of(e: &Event) -> Diagnosis {
    classify(&from_raw(e).expect("valid event"))
}

#[test]
fn verdict_table() {
    let ext4 = |size, pos| file(EXT4, 1, REG, size, pos);
    let tmpfs = |size, pos| file(TMPFS, 2, REG, size, pos);
    let small_tmpfs = |size, pos| file(TMPFS, 3, REG, size, pos);
    let proc = file(PROC, 4, 0o100444, 0, 0);
    let tracefs = file(TRACEFS, 5, REG, 0, 0);
    let cgroup = file(CGROUP2, 6, REG, 0, 0);
    let sysfs = file(SYSFS, 7, REG, 4096, 0);
    let pipe = file(PIPEFS, 8, 0o010600, 0, 0);
    let cases: Vec<(&str, Box<Event>, Verdict, &str)> = vec![
        (
            "full copy",
            call(100, 100, Some(ext4(100, 0)), Some(ext4(0, 0))),
            Verdict::Ok,
            "copied 100 bytes",
        ),
        (
            "empty ext4 file is no silent copy",
            call(0, 4096, Some(ext4(0, 0)), Some(ext4(0, 0))),
            Verdict::Ok,
            "at end of file",
        ),
        (
            "zero length",
            call(0, 0, Some(proc), Some(proc)),
            Verdict::Ok,
            "zero-length",
        ),
        (
            "proc to proc",
            call(0, 4096, Some(proc), Some(proc)),
            Verdict::SilentZeroCopy,
            "proc advertises size 0",
        ),
        (
            "tracefs trace to trace_marker",
            call(0, 1 << 30, Some(tracefs), Some(tracefs)),
            Verdict::SilentZeroCopy,
            "tracefs advertises size 0",
        ),
        (
            "cgroup file to cgroup file",
            call(0, 512, Some(cgroup), Some(cgroup)),
            Verdict::SilentZeroCopy,
            "cgroup2",
        ),
        // Recorded on a pre-5.19 kernel (the seed's case): cross-fs splice
        // from procfs copies nothing and succeeds.
        (
            "pre-5.19 proc to ext4",
            call(0, 65536, Some(proc), Some(ext4(0, 0))),
            Verdict::SilentZeroCopy,
            "reported success",
        ),
        (
            "sysfs one page",
            call(3, 4096, Some(sysfs), Some(sysfs)),
            Verdict::SizeMismatch,
            "advertise 4096 bytes",
        ),
        // A 64 KiB-page kernel (arm64 CONFIG_ARM64_64K_PAGES): sysfs
        // advertises 65536; the verdict rests on the filesystem, not
        // on the number, and the reason shows the page it advertised.
        (
            "sysfs one 64 KiB page",
            call(3, 65536, Some(file(SYSFS, 9, REG, 65536, 0)), Some(sysfs)),
            Verdict::SizeMismatch,
            "advertise 65536 bytes",
        ),
        (
            "source ended",
            call(100, 1000, Some(ext4(100, 0)), Some(ext4(0, 0))),
            Verdict::ShortRead,
            "source ended at 100",
        ),
        (
            "capped at MAX_RW_COUNT",
            call(
                cap() as i64,
                3 << 30,
                Some(tmpfs(3 << 30, 0)),
                Some(tmpfs(0, 0)),
            ),
            Verdict::Ok,
            "the most the kernel copies in one call",
        ),
        (
            "one byte short of the cap is a short write",
            call(
                cap() as i64 - 1,
                3 << 30,
                Some(tmpfs(3 << 30, 0)),
                Some(tmpfs(0, 0)),
            ),
            Verdict::ShortWrite,
            "the destination (tmpfs) stopped the copy",
        ),
        (
            "destination full",
            call(
                24576,
                40960,
                Some(small_tmpfs(40960, 0)),
                Some(small_tmpfs(0, 0)),
            ),
            Verdict::ShortWrite,
            "16384 more",
        ),
        (
            "pre-5.19 cross-fs copy went through",
            call(100, 100, Some(ext4(100, 0)), Some(tmpfs(0, 0))),
            Verdict::CrossFs,
            "across filesystems (ext4",
        ),
        (
            "EXDEV",
            call(-18, 100, Some(proc), Some(tmpfs(0, 0))),
            Verdict::CrossFs,
            "EXDEV: the kernel refused a copy from proc to tmpfs",
        ),
        (
            "ENOSPC",
            call(-28, 100, Some(tmpfs(100, 0)), Some(small_tmpfs(0, 0))),
            Verdict::Error,
            "ENOSPC: destination filesystem tmpfs is full",
        ),
        (
            "pipe",
            call(-22, 5, Some(pipe), Some(tmpfs(0, 0))),
            Verdict::Error,
            "EINVAL: source is a fifo",
        ),
        (
            "closed fd",
            call(-9, 5, None, Some(tmpfs(0, 0))),
            Verdict::Error,
            "EBADF: fd_in 3 is not open",
        ),
        (
            "directory",
            call(
                -21,
                5,
                Some(file(TMPFS, 2, 0o040755, 60, 0)),
                Some(tmpfs(0, 0)),
            ),
            Verdict::Error,
            "EISDIR: source is a directory",
        ),
        (
            "unknown errno",
            call(-4000, 5, Some(tmpfs(9, 0)), Some(tmpfs(0, 0))),
            Verdict::Error,
            "E4000",
        ),
    ];
    for (name, ev, want, reason) in cases {
        let d = verdict_of(&ev);
        assert_eq!(d.verdict, want, "{name}: {d:?}");
        assert!(
            d.reason.contains(reason),
            "{name}: reason {:?} lacks {reason:?}",
            d.reason
        );
    }
}

/// An exit seen without its entry (a seccomp filter refused the call)
/// has no files: the reason says the call never ran, not why a file
/// refused it.
#[test]
fn a_refused_call_seen_only_at_exit_says_so() {
    let mut e = call(-i64::from(libc::EPERM), 0, None, None);
    e.fd_in = -1;
    e.fd_out = -1;
    e.gaps = copytrace_common::gap::NO_ENTRY;
    let d = verdict_of(&e);
    assert_eq!(d.verdict, Verdict::Error);
    assert!(
        d.reason
            .starts_with("EPERM: refused before the syscall ran"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("seccomp"), "{}", d.reason);
}

/// A call overlayfs made on its real files inside a syscall (fentry) is
/// the kernel's, refused between the layers' filesystems: its reason names
/// the filesystem that made it and the call it ran inside, not nfsd.
#[test]
fn a_nested_refusal_names_the_call_it_ran_inside() {
    let exdev = -i64::from(libc::EXDEV);
    let mut e = call(
        exdev,
        4096,
        Some(file(EXT4, 1, REG, 4096, 0)),
        Some(file(TMPFS, 2, REG, 0, 0)),
    );
    e.origin = Origin::Kernel as u8;
    e.fd_in = -1;
    e.fd_out = -1;
    let nfsd = verdict_of(&e);
    e.within_start_ns = 1_000;
    e.within_fd_in = 3;
    e.within_fd_out = 4;
    let ev = from_raw(&e).expect("valid event");
    let within = ev.within.expect("the enclosing call");
    assert_eq!(
        (within.start_ns, within.fd_in, within.fd_out),
        (1_000, 3, 4)
    );
    let nested = classify(&ev);
    assert_eq!(nested.verdict, Verdict::CrossFs);
    assert_eq!(nfsd.verdict, Verdict::CrossFs);
    assert!(nested.reason.contains("overlayfs"), "{}", nested.reason);
    assert!(!nested.reason.contains("nfsd"), "{}", nested.reason);
    assert!(nfsd.reason.contains("nfsd"), "{}", nfsd.reason);
    e.within_start_ns = 0;
    assert_eq!(from_raw(&e).expect("valid event").within, None);
}

#[test]
fn error_reasons_name_the_cause() {
    let mut append = file(TMPFS, 2, REG, 0, 0);
    append.f_flags = (libc::O_WRONLY | libc::O_APPEND) as u32;
    let src = file(TMPFS, 2, REG, 10, 0);
    assert!(verdict_of(&call(-9, 5, Some(src), Some(append)))
        .reason
        .contains("O_APPEND"));
    let mut flagged = call(-22, 5, Some(src), Some(src));
    flagged.flags = 1;
    assert_eq!(
        verdict_of(&flagged).reason,
        "EINVAL: flags must be 0 (got 0x1)"
    );
}

#[test]
fn the_kernel_reports_exactly_the_suspicious_calls() {
    let table = report_policy();
    for idx in ReportPolicy::indexes() {
        let bits = idx & ((1 << fact::COUNT) - 1);
        let failed = idx >> fact::COUNT != 0;
        for truth in SizeTruth::ALL {
            let facts = Facts {
                bits,
                errno: failed.then_some(i64::from(libc::EBADF)),
                size_truth_in: (bits & fact::IN_PRESENT != 0).then_some(truth),
            };
            assert_eq!(
                table.is_suspicious(truth as u8, idx),
                verdict(&facts).is_suspicious(),
                "{facts:?}"
            );
            if table.is_uniform(idx) {
                assert_eq!(
                    table.is_suspicious(truth as u8, idx),
                    table.is_suspicious(SizeTruth::Content as u8, idx),
                    "a uniform index answers alike for every source"
                );
            }
        }
    }
    // A plain full copy needs no lookup of the source's kind.
    let full = fact::COPIED_ALL | fact::IN_PRESENT | fact::OUT_PRESENT;
    assert!(table.is_uniform(ReportPolicy::index(full, false)));
}

#[test]
fn suspicious_verdicts() {
    let quiet: Vec<Verdict> = Verdict::ALL
        .into_iter()
        .filter(|v| !v.is_suspicious())
        .collect();
    assert_eq!(quiet, vec![Verdict::Ok, Verdict::ShortRead]);
    for v in Verdict::ALL {
        let json = serde_json::to_string(&v).expect("serialise");
        assert_eq!(json, format!("\"{}\"", v.as_str()), "one spelling");
        let value = clap::ValueEnum::to_possible_value(&v).expect("a value");
        assert_eq!(value.get_name(), v.as_str(), "one spelling");
    }
}

#[test]
fn mechanism_from_f_op() {
    let mut a = file(NFS, 9, REG, 100, 0);
    let mut b = file(NFS, 10, REG, 0, 0);
    a.copy_op = 0xffff_1000;
    b.copy_op = 0xffff_1000;
    assert_eq!(
        verdict_of(&call(100, 100, Some(a), Some(b))).mechanism,
        Mechanism::FsCopy
    );
    let mut x = file(XFS, 1, REG, 100, 0);
    x.remap_op = 0xffff_2000;
    let y = file(XFS, 1, REG, 0, 0);
    assert_eq!(
        verdict_of(&call(100, 100, Some(x), Some(y))).mechanism,
        Mechanism::Remap
    );
    let e = file(EXT4, 1, REG, 100, 0);
    assert_eq!(
        verdict_of(&call(100, 100, Some(e), Some(e))).mechanism,
        Mechanism::Splice
    );
    assert_eq!(
        verdict_of(&call(-9, 100, None, Some(e))).mechanism,
        Mechanism::None
    );
}
