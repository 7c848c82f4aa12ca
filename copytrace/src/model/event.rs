//! Turns the raw bytes of a ring-buffer record into a typed [`CopyEvent`].
//!
//! Pure: no syscalls, no lookups beyond the static fs registry, so it can be
//! unit-tested and benchmarked without a kernel.

use std::mem::size_of;

use copytrace_common::{status, CallOutcome, Event, FileInfo, NAME_LEN, PATH_DEPTH};
use serde::{Deserialize, Serialize};

use crate::model::fs_magic;

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

pub use copytrace_common::{Backend, Origin};

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

/// One side of a copy as the kernel saw it at entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSide {
    /// File type.
    pub kind: FileKind,
    /// Filesystem name from the registry, else the kernel's `s_type->name`.
    pub fs: String,
    /// `s_magic`.
    pub magic: u64,
    /// Whether the advertised size is the content length on this filesystem.
    pub size_truth: fs_magic::SizeTruth,
    /// Inode number.
    pub ino: u64,
    /// Device as "major:minor".
    pub dev: String,
    /// Kernel device number (major << 20 | minor).
    #[serde(skip)]
    pub dev_raw: u32,
    /// Advertised size (`i_size`) at entry.
    pub size: i64,
    /// File position (`f_pos`) at entry.
    pub pos: i64,
    /// `f_flags` (open flags).
    pub open_flags: u32,
    /// Permission and type bits.
    pub mode: u16,
    /// Path inside its filesystem, from the dentry walk (`…/` when cut short).
    pub fs_path: String,
    /// Address of the filesystem's `copy_file_range` op, 0 if none.
    #[serde(skip)]
    pub copy_op: u64,
    /// Address of the filesystem's `remap_file_range` op, 0 if none.
    #[serde(skip)]
    pub remap_op: u64,
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
    pub comm: String,
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
    /// Source file, when `fd_in` named an open file.
    pub file_in: Option<FileSide>,
    /// Destination file, when `fd_out` named an open file.
    pub file_out: Option<FileSide>,
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

    /// The inputs of the facts word, as the kernel side sees them.
    pub fn outcome(&self) -> CallOutcome {
        let (fin, fout) = (self.file_in.as_ref(), self.file_out.as_ref());
        CallOutcome {
            len: self.len,
            ret: self.ret,
            read_pos: self.read_pos().unwrap_or(0),
            size_in: fin.map_or(0, |f| f.size),
            in_present: fin.is_some(),
            out_present: fout.is_some(),
            same_fs: fin.zip(fout).is_some_and(|(i, o)| i.dev_raw == o.dev_raw),
        }
    }
}

fn cstr(bytes: &[u8]) -> String {
    String::from_utf8_lossy(component(bytes)).into_owned()
}

/// The bytes of a NUL-terminated component.
fn component(c: &[u8]) -> &[u8] {
    &c[..c.iter().position(|&b| b == 0).unwrap_or(c.len())]
}

fn fs_path(fi: &FileInfo) -> String {
    let depth = usize::from(fi.path_depth).min(PATH_DEPTH);
    let comps = &fi.path[..depth];
    let Some(last) = comps.last() else {
        return String::new();
    };
    let reached_root = component(last) == b"/";
    let mut path = String::with_capacity(64);
    path.push_str(if reached_root { "/" } else { "…/" });
    let mut first = true;
    for c in comps
        .iter()
        .rev()
        .map(|c| component(c))
        .filter(|c| *c != b"/")
    {
        if !first {
            path.push('/');
        }
        first = false;
        path.push_str(&String::from_utf8_lossy(c));
    }
    // A component that filled its slot was cut by the eBPF side.
    if comps.iter().any(|c| component(c).len() >= NAME_LEN - 1) {
        path.push('…');
    }
    path
}

fn side(fi: &FileInfo) -> Option<FileSide> {
    if fi.present == 0 {
        return None;
    }
    let known = fs_magic::lookup(fi.magic);
    let kernel_name = cstr(&fi.fstype);
    Some(FileSide {
        kind: FileKind::from_mode(fi.mode),
        fs: known.map_or(kernel_name, |k| k.name.to_string()),
        magic: fi.magic,
        size_truth: known.map_or(fs_magic::SizeTruth::Content, |k| k.size_truth),
        ino: fi.ino,
        dev: format!("{}:{}", fi.dev >> 20, fi.dev & 0xf_ffff),
        dev_raw: fi.dev,
        size: fi.size,
        pos: fi.pos,
        open_flags: fi.f_flags,
        mode: fi.mode,
        fs_path: fs_path(fi),
        copy_op: fi.copy_op,
        remap_op: fi.remap_op,
    })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<CopyEvent, DecodeError> {
    if bytes.len() < size_of::<Event>() {
        return Err(DecodeError::Short {
            got: bytes.len(),
            want: size_of::<Event>(),
        });
    }
    // SAFETY: the length was checked; Event is plain data valid for any bits,
    // and read_unaligned copes with the ring buffer's 8-byte alignment.
    let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    from_raw(&e)
}

/// Converts an [`Event`] already in memory.
pub fn from_raw(e: &Event) -> Result<CopyEvent, DecodeError> {
    let given = |bit: u8, v: i64| (e.status & bit != 0).then_some(v);
    let code = |field, value| DecodeError::Code { field, value };
    Ok(CopyEvent {
        start_ns: e.start_ns,
        end_ns: e.end_ns,
        pid: e.pid,
        tid: e.tid,
        uid: e.uid,
        gid: e.gid,
        cgroup_id: e.cgroup_id,
        comm: cstr(&e.comm),
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
        file_in: side(&e.files[0]),
        file_out: side(&e.files[1]),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A zeroed raw event, for tests to fill in.
    pub(crate) fn blank() -> Event {
        // SAFETY: Event is plain data; all-zero is valid.
        let mut e: Event = unsafe { std::mem::zeroed() };
        e.backend = Backend::Tracepoint as u8;
        e.origin = Origin::Syscall as u8;
        e
    }

    pub(crate) fn name<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        out[..s.len()].copy_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn rejects_short_records() {
        assert_eq!(
            decode(&[0u8; 10]),
            Err(DecodeError::Short {
                got: 10,
                want: size_of::<Event>()
            })
        );
    }

    #[test]
    fn decodes_fields_and_paths() {
        let mut e = blank();
        e.pid = 42;
        e.ret = -18;
        e.status = status::OFF_IN_GIVEN;
        e.off_in = 7;
        e.comm = name("cp");
        e.files[0].present = 1;
        e.files[0].magic = 0x9fa0;
        e.files[0].mode = 0o100444;
        e.files[0].dev = (8 << 20) | 3;
        e.files[0].path_depth = 4;
        for (i, c) in ["status", "self", "…", "/"].iter().enumerate() {
            e.files[0].path[i] = name(c);
        }
        let ev = decode(e.as_bytes()).expect("decodes");
        assert_eq!(ev.pid, 42);
        assert_eq!(ev.errno(), Some(18));
        assert_eq!(ev.off_in, Some(7));
        assert_eq!(ev.off_out, None);
        assert_eq!(ev.comm, "cp");
        assert_eq!(ev.backend, Backend::Tracepoint);
        assert_eq!(ev.vfs_reached, None);
        let f = ev.file_in.expect("source present");
        assert_eq!(f.fs, "proc");
        assert_eq!(f.kind, FileKind::Regular);
        assert_eq!(f.dev, "8:3");
        assert_eq!(f.fs_path, "/…/self/status");
        assert!(ev.file_out.is_none());
    }

    #[test]
    fn marks_paths_cut_short() {
        let mut fi = blank().files[0];
        fi.path_depth = 2;
        fi.path[0] = name("leaf");
        fi.path[1] = name("dir");
        assert_eq!(fs_path(&fi), "…/dir/leaf");
    }

    #[test]
    fn file_kinds_from_mode() {
        assert_eq!(FileKind::from_mode(0o010600), FileKind::Fifo);
        assert_eq!(FileKind::from_mode(0o020666), FileKind::CharDevice);
        assert_eq!(FileKind::from_mode(0o040755), FileKind::Directory);
        assert_eq!(FileKind::from_mode(0), FileKind::Anonymous);
    }
}
