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
use crate::model::event::{CopyEvent, FileKind, FileSide, Origin};
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

/// `COPY_FILE_SPLICE` (include/linux/fs.h, not uapi): a flag only the
/// kernel's own callers (nfsd, ksmbd) pass, asking `vfs_copy_file_range`
/// to fall back to splice between filesystems where user space gets EXDEV.
pub const COPY_FILE_SPLICE: u32 = 1;

fn mechanism(ev: &CopyEvent) -> Mechanism {
    let (Some(i), Some(o)) = (&ev.file_in, &ev.file_out) else {
        return Mechanism::None;
    };
    let flags_ok = ev.flags == 0 || (ev.origin == Origin::Kernel && ev.flags == COPY_FILE_SPLICE);
    if i.kind != FileKind::Regular || o.kind != FileKind::Regular || !flags_ok {
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
        // Both files on one superblock: the refusal came from the
        // filesystem's own copy_file_range, which copies files it stands on.
        Verdict::CrossFs
            if ev.ret < 0
                && facts.has(fact::IN_PRESENT)
                && facts.has(fact::OUT_PRESENT)
                && !facts.has(fact::CROSS_DEV) =>
        {
            let stands_on = if fs_in == "overlay" {
                "overlayfs copies the real files beneath, and a lower layer's file and the upper layer's sit on different filesystems"
            } else {
                "it copies the files it stands on, and those sit on different filesystems"
            };
            format!(
                "EXDEV: both files are on one {fs_in} mount, but {fs_in} refused the copy: {stands_on}; fall back to read/write"
            )
        }
        Verdict::CrossFs if ev.ret < 0 && ev.within.is_some() => format!(
            "EXDEV: the kernel refused a copy from {fs_in} to {fs_out} that a filesystem (overlayfs) made between the real files beneath this thread's call (since 5.19 only same-type filesystems with their own copy support may cross); that call fails with the same EXDEV"
        ),
        Verdict::CrossFs if ev.ret < 0 && ev.origin == Origin::Kernel => format!(
            "EXDEV: the kernel refused its own caller a copy from {fs_in} to {fs_out} (since 5.19 only same-type filesystems with their own copy support may cross); nfsd then retries with a splice (COPY_FILE_SPLICE)"
        ),
        Verdict::CrossFs if ev.ret < 0 => format!(
            "EXDEV: the kernel refused a copy from {fs_in} to {fs_out} (since 5.19 only same-type filesystems with their own copy support may cross); fall back to read/write"
        ),
        Verdict::CrossFs => {
            let dev = |f: Option<&FileSide>| f.map_or("?", |f| f.location.dev.as_str()).to_string();
            if mech == Mechanism::FsCopy && fs_in == fs_out {
                return format!(
                    "copied {copied} bytes between two {fs_in} filesystems ({} → {}) by {fs_in}'s own copy (a server-side copy on NFS); kernels since 5.19 allow it because both sides are {fs_in}",
                    dev(ev.file_in.as_ref()),
                    dev(ev.file_out.as_ref()),
                );
            }
            if ev.origin == Origin::Kernel && ev.flags == COPY_FILE_SPLICE {
                return format!(
                    "copied {copied} bytes across filesystems ({fs_in} {} → {fs_out} {}) by splice: the kernel's own caller (nfsd, ksmbd) asked for it with COPY_FILE_SPLICE, which user space cannot (nfsd first tries without it and gets EXDEV)",
                    dev(ev.file_in.as_ref()),
                    dev(ev.file_out.as_ref()),
                );
            }
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
mod tests;
