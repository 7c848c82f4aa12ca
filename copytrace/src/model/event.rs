//! Turns the raw bytes of a ring-buffer record into a typed [`CopyEvent`].
//!
//! Pure: no syscalls, no lookups beyond the static fs registry, so it can be
//! unit-tested, fuzzed and benchmarked without a kernel. Every field a
//! traced process chose (names, paths, comm) stays bytes ([`Untrusted`]).

use std::mem::size_of;

use copytrace_common::{
    gap, name_flag, status, unwind_flag, CallOutcome, Event, FileInfo, NameSpan, PathInfo,
    RECORD_MIN, STACK_DEPTH, TAIL_BUF,
};
use serde::{Deserialize, Serialize};

pub use copytrace_common::{Backend, Origin};

use crate::model::fs_magic::{self, SizeTruth};
use crate::model::text::Untrusted;

/// Errors from decoding a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is smaller than an [`Event`]: the eBPF object and daemon disagree.
    #[error("ring buffer record of {got} bytes, expected {want} (eBPF object and daemon from different builds?)")]
    Short { got: usize, want: usize },
    /// A one-byte code this build does not know (eBPF object and daemon disagree).
    #[error("ring buffer record with unknown {field} code {value} (eBPF object and daemon from different builds?)")]
    Code { field: &'static str, value: u8 },
}

/// File type from `i_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Regular,
    Directory,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Symlink,
    /// Mode 0: anonymous inodes (eventfd, memfd-less anon files…).
    Anonymous,
}

impl FileKind {
    /// Decodes the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u16) -> Self {
        match u32::from(mode) & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFLNK => FileKind::Symlink,
            _ => FileKind::Anonymous,
        }
    }

    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Regular => "regular",
            FileKind::Directory => "directory",
            FileKind::CharDevice => "char_device",
            FileKind::BlockDevice => "block_device",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::Symlink => "symlink",
            FileKind::Anonymous => "anonymous",
        }
    }
}

/// Where a file lives, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Inode number.
    pub ino: u64,
    /// Device as "major:minor".
    pub dev: String,
    /// Kernel device number (major << 20 | minor).
    #[serde(skip)]
    pub dev_raw: u32,
    /// The id of the mount the file was opened through (mountinfo's first field).
    pub mnt_id: u32,
    /// Inode number of that mount's namespace.
    pub mnt_ns: u32,
    /// Path inside its filesystem: `/a/b`, or `…/a/b` when the kernel's walk
    /// was cut short (deeper than it walks).
    pub fs_path: Untrusted,
    /// The walk reached the filesystem's root: `fs_path` is whole.
    pub path_complete: bool,
    /// The file was unlinked while open.
    pub deleted: bool,
    /// `fs_path` is the path the file was opened under, on another
    /// filesystem than its data (`dev`, `ino`): overlayfs on older kernels (6.1; not 6.12)
    /// opens the real files beneath it with the overlay file's path.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_on_other_fs: bool,
}

/// One side of a copy as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSide {
    /// File type.
    pub kind: FileKind,
    /// Filesystem name from the registry, else the kernel's `s_type->name`.
    pub fs: String,
    /// `s_magic`.
    pub magic: u64,
    /// Whether the advertised size is the content length on this filesystem.
    pub size_truth: SizeTruth,
    /// Advertised size (`i_size`) at entry.
    pub size: i64,
    /// Where the call started in this file: `*off` when given, else `f_pos` at entry.
    pub pos: i64,
    /// `f_flags` (open flags).
    pub open_flags: u32,
    /// Permission and type bits.
    pub mode: u16,
    /// Where it lives.
    #[serde(flatten)]
    pub location: Location,
    /// Address of the filesystem's `copy_file_range` op, 0 if none.
    #[serde(skip)]
    pub copy_op: u64,
    /// Address of the filesystem's `remap_file_range` op, 0 if none.
    #[serde(skip)]
    pub remap_op: u64,
}

/// The call a nested one ran inside, by the thread's id (the nested
/// call's own `tid`), its entry time and its descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Within {
    /// The enclosing call's `start_ns`.
    pub start_ns: u64,
    /// Its source descriptor (-1 for an in-kernel caller's).
    pub fd_in: i32,
    /// Its destination descriptor.
    pub fd_out: i32,
}

/// One decoded `copy_file_range` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyEvent {
    /// Monotonic ns at entry.
    pub start_ns: u64,
    /// Monotonic ns at exit.
    pub end_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// `task_struct.comm`: set by the program itself, 15 bytes at most.
    pub comm: Untrusted,
    /// The parent process.
    pub ppid: u32,
    /// The parent's `comm`.
    pub parent_comm: Untrusted,
    /// Inode number of the caller's mount namespace.
    pub mnt_ns: u32,
    pub fd_in: i32,
    pub fd_out: i32,
    /// `*off_in` when a pointer was given.
    pub off_in: Option<i64>,
    /// `*off_out` when a pointer was given.
    pub off_out: Option<i64>,
    /// An offset pointer could not be read (the call likely fails with EFAULT).
    pub off_fault: bool,
    /// Requested length.
    pub len: u64,
    pub flags: u32,
    /// Bytes copied, or -errno.
    pub ret: i64,
    pub backend: Backend,
    pub origin: Origin,
    /// Whether `vfs_copy_file_range` ran (known only with fentry).
    pub vfs_reached: Option<bool>,
    /// The facts word the kernel counted this call under.
    pub facts: u32,
    /// A kernel read failed while describing the call: some fields are missing.
    pub read_fault: bool,
    /// Whether copytrace saw the call enter. A call a seccomp filter refused
    /// shows only its exit (on the tracepoint back-end): no files, length
    /// or offsets, just the error.
    #[serde(default = "seen")]
    pub entry_seen: bool,
    /// The call this one ran inside on the same thread, when a filesystem
    /// made it for its own files (overlayfs copying the real files of a
    /// syscall on the overlay). That call has this `tid` and its `start_ns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Within>,
    /// Source file, when `fd_in` named an open file.
    pub file_in: Option<FileSide>,
    /// Destination file, when `fd_out` named an open file.
    pub file_out: Option<FileSide>,
    /// The caller's executable, when it has one.
    pub exe: Option<Location>,
    /// The user-space stack of a suspicious call (shown named, in the record).
    #[serde(skip)]
    pub stack: Option<RawStack>,
}

impl CopyEvent {
    /// Call duration in nanoseconds.
    pub fn latency_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// The errno when the call failed.
    pub fn errno(&self) -> Option<i64> {
        (self.ret < 0).then_some(-self.ret)
    }

    /// Where the source read started: `*off_in`, else the file position.
    pub fn read_pos(&self) -> Option<i64> {
        self.off_in.or_else(|| self.file_in.as_ref().map(|f| f.pos))
    }

    /// The inputs of the facts word, from this event's own fields.
    pub fn outcome(&self) -> CallOutcome {
        let (fin, fout) = (self.file_in.as_ref(), self.file_out.as_ref());
        CallOutcome {
            len: self.len,
            ret: self.ret,
            read_pos: self.read_pos().unwrap_or(0),
            size_in: fin.map_or(0, |f| f.size),
            in_present: fin.is_some(),
            out_present: fout.is_some(),
            same_fs: fin
                .zip(fout)
                .is_some_and(|(i, o)| i.location.dev_raw == o.location.dev_raw),
            max_per_call: crate::model::limits::max_per_call(),
        }
    }
}

/// Records from before the field was sent saw every entry.
fn seen() -> bool {
    true
}

/// The bytes of a NUL-terminated field.
fn cstr(c: &[u8]) -> &[u8] {
    &c[..c.iter().position(|&b| b == 0).unwrap_or(c.len())]
}

/// One walk's names, as the record holds them: its components, leaf
/// first, and its [`name_flag`] bits.
struct Names<'a> {
    components: Vec<&'a [u8]>,
    flags: u8,
}

impl<'a> Names<'a> {
    /// The components `span` points at in `tail` (the tail bytes the record
    /// holds). A span reaching past them keeps only its whole components
    /// there, and is marked cut: a kernel never sends one, a fuzzer does.
    fn of(span: &NameSpan, tail: &'a [u8]) -> Self {
        let start = usize::from(span.start).min(tail.len());
        let end = start + usize::from(span.used);
        let mut flags = span.flags;
        let held = if end <= tail.len() {
            &tail[start..end]
        } else {
            flags = (flags & !name_flag::COMPLETE) | name_flag::CUT;
            let held = &tail[start..];
            &held[..held.iter().rposition(|&b| b == 0).map_or(0, |nul| nul + 1)]
        };
        let whole = held.iter().filter(|&&b| b == 0).count();
        let components = held
            .split(|&b| b == 0)
            .take(usize::from(span.count).min(whole))
            .collect();
        Names { components, flags }
    }

    /// `/a/b` (`…/a/b` when the walk was cut short).
    fn join(&self) -> Untrusted {
        let mut path = Vec::with_capacity(64);
        if self.flags & name_flag::COMPLETE != 0 {
            path.push(b'/');
        } else {
            path.extend_from_slice("…/".as_bytes());
        }
        for (i, c) in self.components.iter().rev().enumerate() {
            if i > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(c);
        }
        Untrusted::new(path)
    }
}

pub(super) fn location(p: &PathInfo, tail: &[u8]) -> Location {
    let names = Names::of(&p.names, tail);
    Location {
        ino: p.ino,
        dev: format!("{}:{}", p.dev >> 20, p.dev & 0xf_ffff),
        dev_raw: p.dev,
        mnt_id: p.mnt_id,
        mnt_ns: p.mnt_ns,
        fs_path: names.join(),
        path_complete: names.flags & name_flag::COMPLETE != 0,
        deleted: names.flags & name_flag::DELETED != 0,
        path_on_other_fs: names.flags & name_flag::OTHER_FS != 0,
    }
}

fn side(fi: &FileInfo, tail: &[u8]) -> Option<FileSide> {
    if fi.present == 0 {
        return None;
    }
    // A module may register any name; show it only when it is plain.
    let fs = fs_magic::lookup(fi.magic).map_or_else(
        || Untrusted::new(cstr(&fi.fstype)).human(),
        |k| k.name.to_string(),
    );
    Some(FileSide {
        kind: FileKind::from_mode(fi.mode),
        fs,
        magic: fi.magic,
        size_truth: fs_magic::size_truth(fi.magic),
        size: fi.size,
        pos: fi.pos,
        open_flags: fi.f_flags,
        mode: fi.mode,
        location: location(&fi.path, tail),
        copy_op: fi.copy_op,
        remap_op: fi.remap_op,
    })
}

/// Decodes one ring-buffer record: at least [`RECORD_MIN`] bytes, ending
/// anywhere in its tail (bytes past an [`Event`] are ignored).
pub fn decode(bytes: &[u8]) -> Result<CopyEvent, DecodeError> {
    if bytes.len() < RECORD_MIN {
        return Err(DecodeError::Short {
            got: bytes.len(),
            want: RECORD_MIN,
        });
    }
    let n = bytes.len().min(size_of::<Event>());
    // SAFETY: Event is plain data: all-zero is valid.
    let mut e: Event = unsafe { std::mem::zeroed() };
    // SAFETY: writes n <= size_of::<Event>() bytes into plain data, valid
    // for any bits, from a slice of at least n bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut e).cast::<u8>(), n);
    }
    convert(&e, n - RECORD_MIN)
}

/// Whether a record is marked suspicious by the kernel's table, read
/// without decoding the rest (records nobody will show are skipped).
pub fn peek_suspicious(bytes: &[u8]) -> bool {
    bytes
        .get(std::mem::offset_of!(Event, status))
        .is_some_and(|s| s & status::SUSPICIOUS != 0)
}

/// Converts an [`Event`] already in memory, all of its tail included.
pub fn from_raw(e: &Event) -> Result<CopyEvent, DecodeError> {
    convert(e, TAIL_BUF)
}

/// Converts an [`Event`] whose first `held` tail bytes came from the kernel.
fn convert(e: &Event, held: usize) -> Result<CopyEvent, DecodeError> {
    let tail = &e.tail.bytes[..held.min(TAIL_BUF)];
    let given = |bit: u8, v: i64| (e.status & bit != 0).then_some(v);
    let code = |field, value| DecodeError::Code { field, value };
    let unwind = (e.user_regs[1] != 0).then(|| {
        let at = usize::from(e.unwind_at);
        let len = usize::from(e.unwind_len);
        UnwindState {
            regs: e.user_regs,
            stack: tail.get(at..at + len).unwrap_or_default().to_vec(),
            skipped: e.unwind_flags & unwind_flag::SKIPPED != 0,
            mappings: (e.unwind_flags & unwind_flag::MAPPINGS != 0)
                .then(|| stack::mappings(e, tail)),
        }
    });
    let stack = (e.status & status::STACK != 0).then(|| {
        if e.stack_bytes < 0 {
            RawStack {
                addrs: Vec::new(),
                error: Some(-e.stack_bytes),
                code: (e.code_start, e.code_end),
                unwind,
            }
        } else {
            let n = (e.stack_bytes as usize / 8).min(STACK_DEPTH);
            RawStack {
                addrs: tail
                    .chunks_exact(8)
                    .take(n)
                    .map(|w| u64::from_ne_bytes(std::array::from_fn(|i| w[i])))
                    .collect(),
                error: None,
                code: (e.code_start, e.code_end),
                unwind,
            }
        }
    });
    Ok(CopyEvent {
        start_ns: e.start_ns,
        end_ns: e.end_ns,
        pid: e.pid,
        tid: e.tid,
        uid: e.uid,
        gid: e.gid,
        cgroup_id: e.cgroup_id,
        comm: Untrusted::new(cstr(&e.comm)),
        ppid: e.ppid,
        parent_comm: Untrusted::new(cstr(&e.parent_comm)),
        mnt_ns: e.mnt_ns,
        fd_in: e.fd_in,
        fd_out: e.fd_out,
        off_in: given(status::OFF_IN_GIVEN, e.off_in),
        off_out: given(status::OFF_OUT_GIVEN, e.off_out),
        off_fault: e.status & status::OFF_FAULT != 0,
        len: e.len,
        flags: e.flags,
        ret: e.ret,
        backend: Backend::from_raw(e.backend).ok_or(code("backend", e.backend))?,
        origin: Origin::from_raw(e.origin).ok_or(code("origin", e.origin))?,
        vfs_reached: (e.status & status::VFS_KNOWN != 0)
            .then_some(e.status & status::VFS_REACHED != 0),
        facts: e.facts,
        read_fault: e.status & status::READ_FAULT != 0,
        entry_seen: e.gaps & gap::NO_ENTRY == 0,
        within: (e.within_start_ns != 0).then_some(Within {
            start_ns: e.within_start_ns,
            fd_in: e.within_fd_in,
            fd_out: e.within_fd_out,
        }),
        file_in: side(&e.files[0], tail),
        file_out: side(&e.files[1], tail),
        exe: (e.exe.ino != 0).then(|| location(&e.exe, tail)),
        stack,
    })
}

mod stack;
pub use stack::{RawStack, StackMapping, StackMappings, UnwindState};

#[cfg(test)]
pub(crate) mod tests;
