//! The ring-buffer record of one call.

use core::mem::{align_of, size_of};

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Bytes kept of a filesystem type's name (`file_system_type.name`).
pub const FSTYPE_LEN: usize = 16;
/// Path components kept per file, leaf first.
pub const PATH_DEPTH: usize = 8;
/// Bytes kept per path component (NUL-terminated, truncated beyond).
pub const NAME_LEN: usize = 32;

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
}

/// What the kernel knew about one side of the copy when the call began.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileInfo {
    /// `inode.i_ino`.
    pub ino: u64,
    /// `inode.i_size`: the size the filesystem advertises.
    pub size: i64,
    /// `file.f_pos`.
    pub pos: i64,
    /// `super_block.s_magic`.
    pub magic: u64,
    /// Address of `f_op->copy_file_range` (0 when the filesystem has none).
    pub copy_op: u64,
    /// Address of `f_op->remap_file_range` (0 when the filesystem has none).
    pub remap_op: u64,
    /// `super_block.s_dev` (kernel encoding: major << 20 | minor).
    pub dev: u32,
    /// `file.f_flags` (O_APPEND, O_RDONLY…).
    pub f_flags: u32,
    /// `inode.i_mode`: file type and permission bits.
    pub mode: u16,
    /// 1 when the fd resolved to an open file.
    pub present: u8,
    /// Number of filled entries in [`FileInfo::path`].
    pub path_depth: u8,
    /// Explicit padding so both sides agree on the layout.
    pub _pad: [u8; 4],
    /// `super_block.s_type->name`, NUL-terminated.
    pub fstype: [u8; FSTYPE_LEN],
    /// Dentry names from the file up towards its filesystem's root, leaf first.
    pub path: [[u8; NAME_LEN]; PATH_DEPTH],
}

/// One `copy_file_range` call, from entry to exit.
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
    /// Source descriptor (-1 for in-kernel callers).
    pub fd_in: i32,
    /// Destination descriptor (-1 for in-kernel callers).
    pub fd_out: i32,
    /// `flags` argument.
    pub flags: u32,
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
    /// Source, then destination.
    pub files: [FileInfo; 2],
}

// Both sides read these bytes: a layout change must be deliberate.
const _: () = assert!(size_of::<FileInfo>() == 336 && align_of::<FileInfo>() == 8);
const _: () = assert!(size_of::<Event>() == 776 && align_of::<Event>() == 8);

impl Event {
    /// The record's bytes, as the kernel writes them into the ring buffer
    /// (tests, benchmarks and fuzzing build records this way).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: Event is #[repr(C)] plain data with explicit padding (no
        // uninitialised bytes), and the slice borrows `self` for its lifetime.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }
}
