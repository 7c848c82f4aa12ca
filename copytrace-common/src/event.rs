//! The ring-buffer record of one reported call.
//!
//! Records are built at exit and copied into the ring buffer up to the
//! executable's last name byte ([`Event::record_len`]), and only for calls
//! someone asked to see (every call, or the suspicious ones; see
//! [`crate::ReportPolicy`]). Every call is counted either way
//! ([`crate::counts`]).

use core::mem::{align_of, offset_of, size_of};

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Bytes kept of a filesystem type's name (`file_system_type.name`).
pub const FSTYPE_LEN: usize = 16;
/// Path components a walk records, leaf first.
pub const PATH_DEPTH: usize = 16;
/// Longest component a walk reads: NAME_MAX and its NUL.
pub const NAME_READ: usize = 256;
/// Components start below this offset of [`NameBuf::bytes`].
pub const NAME_AREA: usize = 512;
/// Bytes of a [`NameBuf`]: a component may start just below [`NAME_AREA`]
/// and be [`NAME_READ`] long.
pub const NAME_BUF: usize = NAME_AREA + NAME_READ;
/// User-space return addresses kept per suspicious call.
pub const STACK_DEPTH: usize = 32;

/// Bits of [`Event::status`].
pub mod status {
    /// The caller passed an `off_in` pointer (and [`super::Event::off_in`] holds its value).
    pub const OFF_IN_GIVEN: u8 = 1 << 0;
    /// The caller passed an `off_out` pointer.
    pub const OFF_OUT_GIVEN: u8 = 1 << 1;
    /// An offset pointer was given but could not be read.
    pub const OFF_FAULT: u8 = 1 << 2;
    /// `vfs_copy_file_range` ran for this call (only the fentry back-end can tell).
    pub const VFS_REACHED: u8 = 1 << 3;
    /// The fentry back-end saw the call; the VFS_REACHED bit is meaningful.
    pub const VFS_KNOWN: u8 = 1 << 4;
    /// A kernel read failed while describing the call: some fields are missing.
    pub const READ_FAULT: u8 = 1 << 5;
    /// The report policy marked the call suspicious.
    pub const SUSPICIOUS: u8 = 1 << 6;
    /// The user stack was taken ([`super::Event::stack_bytes`] is meaningful):
    /// suspicious calls, unless stacks are switched off.
    pub const STACK: u8 = 1 << 7;
}

/// Bits of [`NameBuf::flags`].
pub mod name_flag {
    /// The walk reached the root of its filesystem (or cgroup hierarchy).
    pub const COMPLETE: u8 = 1 << 0;
    /// The leaf was unlinked while open (a deleted file).
    pub const DELETED: u8 = 1 << 1;
    /// The walk stopped early: depth or buffer ran out, or a read failed.
    pub const CUT: u8 = 1 << 2;
}

/// Names from a walk up a tree (dentries, or cgroups), leaf first, packed:
/// each component NUL-terminated, `used` bytes in all.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameBuf {
    /// Bytes of `bytes` in use.
    pub used: u16,
    /// Components recorded.
    pub count: u8,
    /// Bits of [`name_flag`].
    pub flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 4],
    /// The components.
    pub bytes: [u8; NAME_BUF],
}

/// Where a file lives: its inode, its mount, and its path inside its filesystem.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathInfo {
    /// `inode.i_ino`.
    pub ino: u64,
    /// `super_block.s_dev` (kernel encoding: major << 20 | minor).
    pub dev: u32,
    /// The id of the mount it was opened through (`mount.mnt_id`, as in mountinfo).
    pub mnt_id: u32,
    /// Inode number of that mount's namespace (as `/proc/PID/ns/mnt`).
    pub mnt_ns: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Dentry names from the file up to its filesystem's root.
    pub names: NameBuf,
}

/// One side of the copy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileInfo {
    /// `inode.i_size` at entry: the size the filesystem advertises.
    pub size: i64,
    /// File position at entry (`f_pos`, or `*off` when the caller gave an offset).
    pub pos: i64,
    /// `super_block.s_magic`.
    pub magic: u64,
    /// Address of `f_op->copy_file_range` (0 when the filesystem has none).
    pub copy_op: u64,
    /// Address of `f_op->remap_file_range` (0 when the filesystem has none).
    pub remap_op: u64,
    /// `file.f_flags` (O_APPEND, O_RDONLY…).
    pub f_flags: u32,
    /// `inode.i_mode`: file type and permission bits.
    pub mode: u16,
    /// 1 when the fd resolved to an open file.
    pub present: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// `super_block.s_type->name`, NUL-terminated.
    pub fstype: [u8; FSTYPE_LEN],
    /// Where it lives.
    pub path: PathInfo,
}

/// One reported `copy_file_range` call, from entry to exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    /// `bpf_ktime_get_ns()` at entry (CLOCK_MONOTONIC).
    pub start_ns: u64,
    /// `bpf_ktime_get_ns()` at exit.
    pub end_ns: u64,
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// Requested length.
    pub len: u64,
    /// `*off_in` at entry when given.
    pub off_in: i64,
    /// `*off_out` at entry when given.
    pub off_out: i64,
    /// Bytes copied, or `-errno`.
    pub ret: i64,
    /// Thread group id (the process id users see).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// The parent process's thread group id.
    pub ppid: u32,
    /// Source descriptor (-1 for in-kernel callers).
    pub fd_in: i32,
    /// Destination descriptor (-1 for in-kernel callers).
    pub fd_out: i32,
    /// `flags` argument.
    pub flags: u32,
    /// The facts word the kernel counted this call under ([`crate::fact`]).
    pub facts: u32,
    /// Inode number of the caller's mount namespace.
    pub mnt_ns: u32,
    /// Bytes of [`Event::stack`] filled, or a negative errno from bpf_get_stack.
    pub stack_bytes: i32,
    /// A [`crate::Backend`] discriminant.
    pub backend: u8,
    /// An [`crate::Origin`] discriminant.
    pub origin: u8,
    /// Bits of [`status`].
    pub status: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// `task_struct.comm`.
    pub comm: [u8; COMM_LEN],
    /// The parent's `comm`.
    pub parent_comm: [u8; COMM_LEN],
    /// Source, then destination.
    pub files: [FileInfo; 2],
    /// Where the executable's code is mapped (`mm->start_code`, `end_code`),
    /// to name stack frames in it after the process is gone.
    pub code_start: u64,
    pub code_end: u64,
    /// User-space return addresses, innermost first (suspicious calls only).
    pub stack: [u64; STACK_DEPTH],
    /// The caller's executable (`task->mm->exe_file`). Last, so that a
    /// record can end where its name bytes do ([`Event::record_len`]).
    pub exe: PathInfo,
}

/// The shortest record the kernel sends: all of an [`Event`] but the
/// executable's name bytes, which it sends only as far as they are used.
pub const RECORD_MIN: usize = size_of::<Event>() - NAME_BUF;

/// A mask above [`NAME_BUF`] (see [`Event::record_len`]).
const NAME_BUF_MASK: usize = NAME_BUF.next_power_of_two() - 1;

// Both sides read these bytes: a layout change must be deliberate.
const _: () = assert!(size_of::<NameBuf>() == 8 + NAME_BUF && align_of::<NameBuf>() == 2);
const _: () = assert!(size_of::<PathInfo>() == 24 + size_of::<NameBuf>());
const _: () = assert!(size_of::<FileInfo>() == 64 + size_of::<PathInfo>());
const _: () = assert!(
    size_of::<Event>()
        == 136 + 2 * size_of::<FileInfo>() + 16 + 8 * STACK_DEPTH + size_of::<PathInfo>()
);
const _: () = assert!(
    offset_of!(Event, exe) + offset_of!(PathInfo, names) + offset_of!(NameBuf, bytes) == RECORD_MIN
);
const _: () = assert!(align_of::<Event>() == 8 && size_of::<Event>().is_multiple_of(8));
// The kernel writes the names as two 8-byte words each.
const _: () = assert!(COMM_LEN == 16 && FSTYPE_LEN == 16);
const _: () = assert!(
    offset_of!(Event, comm).is_multiple_of(8)
        && offset_of!(Event, parent_comm).is_multiple_of(8)
        && offset_of!(Event, files).is_multiple_of(8)
        && offset_of!(FileInfo, fstype).is_multiple_of(8)
        && size_of::<FileInfo>().is_multiple_of(8)
);

impl Event {
    /// Bytes of this record that the kernel sends: up to the executable's
    /// last used name byte.
    #[inline(always)]
    pub fn record_len(&self) -> usize {
        // The mask and the min are what bound the length for the verifier.
        let used = crate::bound(usize::from(self.exe.names.used), NAME_BUF_MASK);
        RECORD_MIN + used.min(NAME_BUF)
    }

    /// All of the record's bytes (tests, benchmarks and fuzzing build
    /// records this way; the reader takes any length from
    /// [`RECORD_MIN`] up).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: Event is #[repr(C)] plain data with explicit padding (no
        // uninitialised bytes), and the slice borrows `self` for its lifetime.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }
}

impl NameBuf {
    /// The components, leaf first (bytes without their NULs).
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        let used = usize::from(self.used).min(NAME_BUF);
        self.bytes[..used]
            .split(|&b| b == 0)
            .take(usize::from(self.count))
    }
}
