//! The verdict: what happened in one `copy_file_range` call and why, in words
//! an operator understands. Pure: a decoded event in, a [`Diagnosis`] out.
//!
//! The table, with kernel references, is in docs/verdicts.md. In short, in
//! order of precedence:
//! - `error` / `cross_fs`: the call failed (EXDEV is `cross_fs`);
//! - `silent_zero_copy`: the source sits on a filesystem whose advertised size
//!   is not its content (procfs, tracefs, cgroupfs…) and the copy stopped at
//!   that size, reported as success;
//! - `size_mismatch`: the same for sysfs, whose files all advertise one page;
//! - `short_write`: fewer bytes than asked while the source had more;
//! - `cross_fs`: a copy between two filesystems that went through;
//! - `short_read`: fewer bytes than asked because the source ended;
//! - `ok`: everything requested was copied, or the source was already at its end.

use serde::{Deserialize, Serialize};

use crate::model::errno;
use crate::model::event::{CopyEvent, FileKind, FileSide};
use copytrace_common::{fact, ReportPolicy};

use crate::model::fs_magic::{self, SizeTruth};

/// What copytrace concludes about a call. Its snake_case name is the one
/// spelling used everywhere: JSON, metric labels, `--verdict`, filters.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Verdict {
    /// Copied what was asked, or legitimately nothing at end of file.
    Ok,
    /// Reported success but copied nothing (or stopped at a size that is not the content).
    SilentZeroCopy,
    /// sysfs-style file whose advertised size (one page) is not its content.
    SizeMismatch,
    /// Short because the source ended.
    ShortRead,
    /// Short while the source had more: the destination side stopped it.
    ShortWrite,
    /// Between two filesystems: refused with EXDEV, or copied on kernels that allow it.
    CrossFs,
    /// Any other failure.
    Error,
}

impl Verdict {
    /// Every verdict, for metric initialisation and docs.
    pub const ALL: [Verdict; 7] = [
        Verdict::Ok,
        Verdict::SilentZeroCopy,
        Verdict::SizeMismatch,
        Verdict::ShortRead,
        Verdict::ShortWrite,
        Verdict::CrossFs,
        Verdict::Error,
    ];

    /// Stable snake_case name (JSON, metric labels, filters).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::SilentZeroCopy => "silent_zero_copy",
            Verdict::SizeMismatch => "size_mismatch",
            Verdict::ShortRead => "short_read",
            Verdict::ShortWrite => "short_write",
            Verdict::CrossFs => "cross_fs",
            Verdict::Error => "error",
        }
    }

    /// Whether operators should look at it. A short read at the end of a source
    /// is how every copy loop ends, so it is not.
    pub fn is_suspicious(self) -> bool {
        self.severity() > Severity::Expected
    }

    /// How much this verdict needs an operator: the one ranking the journal's
    /// priority, the tail's colours and "suspicious" all follow.
    pub fn severity(self) -> Severity {
        match self {
            Verdict::Ok => Severity::Fine,
            Verdict::ShortRead => Severity::Expected,
            Verdict::CrossFs => Severity::Refused,
            Verdict::ShortWrite | Verdict::Error => Severity::Visible,
            Verdict::SilentZeroCopy | Verdict::SizeMismatch => Severity::Silent,
        }
    }
}

/// How much a call needs an operator, least first. A failure the caller
/// was told about ranks below one it was not: a program can handle an
/// errno or a short count, but nothing tells it that "success" copied
/// nothing, which is the failure copytrace exists to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Copied what was asked.
    Fine,
    /// Short because the source ended: what a copy loop expects.
    Expected,
    /// Refused between filesystems; callers fall back to read/write.
    Refused,
    /// Failed or stopped short, and the caller saw it (an errno, a short count).
    Visible,
    /// Reported success while the content was not copied.
    Silent,
}

impl Severity {
    /// The syslog priority (3 err … 7 debug) a journal entry carries.
    pub fn syslog_priority(self) -> u8 {
        let p = match self {
            Severity::Silent => libc::LOG_ERR,
            Severity::Visible => libc::LOG_WARNING,
            Severity::Refused => libc::LOG_NOTICE,
            Severity::Expected => libc::LOG_INFO,
            Severity::Fine => libc::LOG_DEBUG,
        };
        p as u8
    }
}

/// How the kernel would carry the copy out, predicted from the files'
/// `f_op` tables (the order `vfs_copy_file_range` tries them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// The filesystem's own `copy_file_range` op (server-side copy, offload).
    FsCopy,
    /// `remap_file_range`: a reflink/clone, falling back to splice if it declines.
    Remap,
    /// The generic page-cache splice (`do_splice_direct`).
    Splice,
    /// Rejected before any copy was attempted.
    None,
}

impl Mechanism {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::FsCopy => "fs_copy",
            Mechanism::Remap => "remap",
            Mechanism::Splice => "splice",
            Mechanism::None => "none",
        }
    }
}

/// A verdict with its one-line explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub verdict: Verdict,
    /// One line, for humans.
    pub reason: String,
    pub mechanism: Mechanism,
}

fn fs_name(f: Option<&FileSide>) -> &str {
    f.map_or("?", |f| f.fs.as_str())
}

fn mechanism(ev: &CopyEvent) -> Mechanism {
    let (Some(i), Some(o)) = (&ev.file_in, &ev.file_out) else {
        return Mechanism::None;
    };
    if i.kind != FileKind::Regular || o.kind != FileKind::Regular || ev.flags != 0 {
        return Mechanism::None;
    }
    if o.copy_op != 0 && o.copy_op == i.copy_op {
        Mechanism::FsCopy
    } else if i.remap_op != 0 && i.location.dev_raw == o.location.dev_raw {
        Mechanism::Remap
    } else {
        Mechanism::Splice
    }
}

fn side_problem(f: Option<&FileSide>, which: &str, fd: i32) -> Option<String> {
    match f {
        None => Some(format!("{which} fd {fd} is not an open file")),
        Some(f) if f.kind == FileKind::Directory => Some(format!("{which} is a directory")),
        Some(f) if f.kind != FileKind::Regular => Some(format!(
            "{which} is a {} on {}: copy_file_range needs regular files; fall back to read/write",
            f.kind.as_str(),
            f.fs
        )),
        _ => None,
    }
}

fn error_reason(ev: &CopyEvent, errno: i64) -> String {
    let name = errno::label(errno);
    if !ev.entry_seen {
        return format!(
            "{name}: refused before the syscall ran, so no file was looked at: a seccomp filter (container profiles written before copy_file_range existed return EPERM or ENOSYS) or an entry copytrace could not track; fall back to read/write"
        );
    }
    let fin = ev.file_in.as_ref();
    let fout = ev.file_out.as_ref();
    let acc = |f: &FileSide| f.open_flags as i32 & libc::O_ACCMODE;
    let detail = match errno {
        e if e == i64::from(libc::EBADF) => {
            if fin.is_none() {
                format!("fd_in {} is not open", ev.fd_in)
            } else if fout.is_none() {
                format!("fd_out {} is not open", ev.fd_out)
            } else if fout.is_some_and(|f| f.open_flags as i32 & libc::O_APPEND != 0) {
                "destination was opened with O_APPEND, which copy_file_range refuses".into()
            } else if fin.is_some_and(|f| acc(f) == libc::O_WRONLY) {
                "source is not open for reading".into()
            } else if fout.is_some_and(|f| acc(f) == libc::O_RDONLY) {
                "destination is not open for writing".into()
            } else {
                "bad file descriptor".into()
            }
        }
        e if e == i64::from(libc::EINVAL) => {
            if ev.flags != 0 {
                format!("flags must be 0 (got {:#x})", ev.flags)
            } else if let Some(p) = side_problem(fin, "source", ev.fd_in)
                .or_else(|| side_problem(fout, "destination", ev.fd_out))
            {
                p
            } else if fin.zip(fout).is_some_and(|(a, b)| {
                a.location.ino == b.location.ino && a.location.dev == b.location.dev
            }) {
                "source and destination are the same file with overlapping ranges".into()
            } else {
                "invalid argument (offsets or length out of range)".into()
            }
        }
        e if e == i64::from(libc::EISDIR) => side_problem(fin, "source", ev.fd_in)
            .or_else(|| side_problem(fout, "destination", ev.fd_out))
            .unwrap_or_else(|| "a directory was given".into()),
        e if e == i64::from(libc::ENOSPC) => {
            format!("destination filesystem {} is full", fs_name(fout))
        }
        e if e == i64::from(libc::EDQUOT) => "destination user's disk quota is exhausted".into(),
        e if e == i64::from(libc::EFBIG) => {
            "the copy would exceed the destination's maximum file size (or RLIMIT_FSIZE)".into()
        }
        e if e == i64::from(libc::EOVERFLOW) => {
            "offset plus length overflows the file offset type".into()
        }
        e if e == i64::from(libc::EFAULT) => "an offset pointer is not readable".into(),
        e if e == i64::from(libc::ETXTBSY) => "a file is an active swap file".into(),
        e if e == i64::from(libc::EPERM) => "a file is immutable or append-only".into(),
        e if e == i64::from(libc::EOPNOTSUPP) || e == errno::ENOTSUPP => {
            "the filesystem does not support this copy; fall back to read/write".into()
        }
        e if e == i64::from(libc::EINTR) || e == errno::ERESTARTSYS => {
            "interrupted by a signal".into()
        }
        e if e == i64::from(libc::EIO) => "I/O error on a device".into(),
        e if e == i64::from(libc::ENOMEM) => "kernel out of memory".into(),
        e if e == i64::from(libc::ENOSYS) => "copy_file_range is not supported here".into(),
        _ => "failed".into(),
    };
    format!("{name}: {detail}")
}

/// What decides a verdict: the facts word both sides compute with
/// [`copytrace_common::CallOutcome::facts`], the errno, and what the source's
/// advertised size means. Built from a full event, or from a kernel-side
/// count key when the event itself was lost, so both paths share [`verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Bits of [`copytrace_common::fact`].
    pub bits: u32,
    /// errno when the call failed.
    pub errno: Option<i64>,
    /// What the source's advertised size means (None: no source file).
    pub size_truth_in: Option<SizeTruth>,
}

impl Facts {
    /// Facts of a decoded event.
    pub fn of_event(ev: &CopyEvent) -> Self {
        Facts {
            bits: ev.outcome().facts(),
            errno: ev.errno(),
            size_truth_in: ev.file_in.as_ref().map(|s| s.size_truth),
        }
    }

    /// Facts of a kernel-side count key.
    pub fn of_count_key(key: &copytrace_common::CountKey) -> Self {
        Facts {
            bits: key.facts,
            errno: (key.errno != 0).then_some(i64::from(key.errno)),
            size_truth_in: (key.facts & fact::IN_PRESENT != 0)
                .then(|| fs_magic::size_truth(key.magic_in)),
        }
    }

    fn has(&self, bit: u32) -> bool {
        self.bits & bit != 0
    }
}

/// The kernel side's report table: a call is reported as suspicious exactly
/// when [`verdict`] calls it suspicious. Failures are reported whatever
/// their errno (cross_fs and error are both suspicious).
pub fn report_policy() -> ReportPolicy {
    ReportPolicy::from_rule(|truth, bits, failed| {
        let size_truth_in = (bits & fact::IN_PRESENT != 0).then_some(truth);
        let errnos: &[Option<i64>] = if failed {
            &[Some(i64::from(libc::EXDEV)), Some(i64::from(libc::EIO))]
        } else {
            &[None]
        };
        errnos.iter().any(|&errno| {
            verdict(&Facts {
                bits,
                errno,
                size_truth_in,
            })
            .is_suspicious()
        })
    })
}

/// The verdict rules (see the module docs and docs/verdicts.md).
pub fn verdict(f: &Facts) -> Verdict {
    if let Some(errno) = f.errno {
        return if errno == i64::from(libc::EXDEV) {
            Verdict::CrossFs
        } else {
            Verdict::Error
        };
    }
    if f.has(fact::LEN_ZERO) {
        return Verdict::Ok;
    }
    let Some(truth) = f.size_truth_in else {
        return Verdict::Ok;
    };
    // A call the kernel capped at its per-call maximum copied all it could.
    let copied_all = f.has(fact::COPIED_ALL) || f.has(fact::CAPPED);
    let at_size = f.has(fact::AT_SIZE);
    if !copied_all {
        match truth {
            SizeTruth::Generated if at_size => return Verdict::SilentZeroCopy,
            SizeTruth::FixedPage => return Verdict::SizeMismatch,
            _ => {}
        }
        if !at_size {
            return Verdict::ShortWrite;
        }
    }
    if f.has(fact::CROSS_DEV) {
        return Verdict::CrossFs;
    }
    if !copied_all && !f.has(fact::COPIED_ZERO) {
        return Verdict::ShortRead;
    }
    Verdict::Ok
}

fn reason(ev: &CopyEvent, facts: &Facts, v: Verdict, mech: Mechanism) -> String {
    let copied = ev.ret.max(0) as u64;
    let fs_in = fs_name(ev.file_in.as_ref());
    let fs_out = fs_name(ev.file_out.as_ref());
    let (size, pos) = ev
        .file_in
        .as_ref()
        .map_or((0, 0), |s| (s.size, ev.read_pos().unwrap_or(s.pos)));
    match v {
        Verdict::Error => error_reason(ev, ev.errno().unwrap_or(0)),
        Verdict::CrossFs if ev.ret < 0 => format!(
            "EXDEV: the kernel refused a copy from {fs_in} to {fs_out} (since 5.19 only same-type filesystems with their own copy support may cross); fall back to read/write"
        ),
        Verdict::CrossFs => {
            let dev = |f: Option<&FileSide>| f.map_or("?", |f| f.location.dev.as_str()).to_string();
            format!(
                "copied {copied} bytes across filesystems ({fs_in} {} → {fs_out} {}) by {}; kernels since 5.19 refuse such copies from user space with EXDEV",
                dev(ev.file_in.as_ref()),
                dev(ev.file_out.as_ref()),
                mech.as_str()
            )
        }
        Verdict::Ok if ev.len == 0 => "zero-length request".into(),
        Verdict::Ok if facts.has(fact::CAPPED) => format!(
            "copied {copied} of {} bytes, the most the kernel copies in one call (MAX_RW_COUNT: INT_MAX rounded down to a {}-byte page); a copy loop goes on with the next call",
            ev.len,
            crate::model::limits::page_size()
        ),
        Verdict::Ok if copied < ev.len && ev.file_in.is_some() => {
            format!("at end of file (position {pos}, size {size})")
        }
        Verdict::Ok => format!("copied {copied} bytes"),
        Verdict::SilentZeroCopy => format!(
            "copied {copied} of {} bytes and reported success: {fs_in} advertises size {size} but generates content on read, so the kernel stopped there; use read/write",
            ev.len
        ),
        Verdict::SizeMismatch => format!(
            "copied {copied} of {} bytes: {fs_in} files advertise {size} bytes whatever their content, so the result cannot be trusted; use read/write",
            ev.len
        ),
        Verdict::ShortWrite => format!(
            "copied {copied} of {} bytes while the source had {} more: the destination ({fs_out}) stopped the copy (full, quota, size limit or a signal)",
            ev.len,
            size.saturating_sub(pos.saturating_add(copied as i64))
        ),
        Verdict::ShortRead => format!(
            "copied {copied} of {} bytes: the source ended at {size} bytes",
            ev.len
        ),
    }
}

/// Classifies one call.
pub fn classify(ev: &CopyEvent) -> Diagnosis {
    let facts = Facts::of_event(ev);
    let verdict = verdict(&facts);
    let mechanism = if ev.ret < 0 {
        Mechanism::None
    } else {
        mechanism(ev)
    };
    Diagnosis {
        verdict,
        reason: reason(ev, &facts, verdict, mechanism),
        mechanism,
    }
}

#[cfg(test)]
mod tests {
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
}
