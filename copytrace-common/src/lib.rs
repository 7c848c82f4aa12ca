//! Types shared by copytrace's eBPF programs and its userspace daemon.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into
//! the ring buffer, userspace reads the same bytes back. Adding a field means
//! changing both sides at once, which is why they live in one crate.
#![no_std]

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Bytes kept of a filesystem type's name (`file_system_type.name`).
pub const FSTYPE_LEN: usize = 16;
/// Path components kept per file, leaf first.
pub const PATH_DEPTH: usize = 8;
/// Bytes kept per path component (NUL-terminated, truncated beyond).
pub const NAME_LEN: usize = 32;

/// Which probe back-end produced an event.
pub mod backend {
    /// `syscalls:sys_enter/exit_copy_file_range` tracepoints.
    pub const TRACEPOINT: u8 = 1;
    /// fentry/fexit on the syscall wrapper and `vfs_copy_file_range`.
    pub const FENTRY: u8 = 2;
}

/// Who called `copy_file_range`.
pub mod origin {
    /// A process, through the system call.
    pub const SYSCALL: u8 = 1;
    /// In-kernel caller of `vfs_copy_file_range` (nfsd, overlayfs, ksmbd…).
    pub const KERNEL: u8 = 2;
}

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
    /// One of [`backend`].
    pub backend: u8,
    /// One of [`origin`].
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

/// Kernel struct member offsets (bytes), read from the running kernel's BTF by
/// userspace and passed to the eBPF programs as a global: Rust eBPF code gets
/// no CO-RE relocations, so nothing here may be hard-coded.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_inode: u32,
    pub file_f_pos: u32,
    pub file_f_flags: u32,
    pub file_f_op: u32,
    pub file_f_path: u32,
    pub path_dentry: u32,
    pub fop_copy_file_range: u32,
    pub fop_remap_file_range: u32,
    pub inode_i_mode: u32,
    pub inode_i_ino: u32,
    pub inode_i_size: u32,
    pub inode_i_sb: u32,
    pub sb_s_magic: u32,
    pub sb_s_dev: u32,
    pub sb_s_type: u32,
    pub fstype_name: u32,
    pub dentry_d_name: u32,
    pub dentry_d_parent: u32,
    pub qstr_name: u32,
    /// `pt_regs` members holding syscall arguments 0..6 (x86-64: di, si, dx, r10, r8, r9).
    pub regs_args: [u32; 6],
    /// Offsets of fd_in, off_in, fd_out, off_out, len, flags in the
    /// `sys_enter_copy_file_range` tracepoint record (from its `format` file).
    pub tp_enter_args: [u32; 6],
    /// Offset of `ret` in the `sys_exit_copy_file_range` record.
    pub tp_exit_ret: u32,
}

/// Load-time settings for the eBPF programs.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Only report calls from this process and its descendants (0: everyone).
    pub follow_tgid: u32,
    /// Which back-end the loaded programs belong to (one of [`backend`]).
    pub backend: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
}

/// Index of the per-CPU counters in the `COUNTERS` map.
pub mod counter {
    /// Events the ring buffer had no room for.
    pub const LOST: u32 = 0;
    /// Calls not tracked because the in-flight map was full.
    pub const INFLIGHT_FULL: u32 = 1;
    /// Calls not counted in `COUNTS` because it was full.
    pub const COUNTS_FULL: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}

/// Bits of [`CountKey::facts`]: the mechanical facts about a finished call
/// that, with the two magics and the errno, decide its verdict. The kernel
/// side only records them; userspace's classifier turns them into verdicts.
pub mod fact {
    /// `len` was 0.
    pub const LEN_ZERO: u32 = 1 << 0;
    /// Returned exactly `len`.
    pub const COPIED_ALL: u32 = 1 << 1;
    /// Returned 0.
    pub const COPIED_ZERO: u32 = 1 << 2;
    /// Read position + returned reached the source's advertised size.
    pub const AT_SIZE: u32 = 1 << 3;
    /// Source and destination are on different superblocks.
    pub const CROSS_DEV: u32 = 1 << 4;
    /// fd_in resolved to an open file.
    pub const IN_PRESENT: u32 = 1 << 5;
    /// fd_out resolved to an open file.
    pub const OUT_PRESENT: u32 = 1 << 6;
}

/// Key of the kernel-side `COUNTS` map: every call is counted here, exactly,
/// even when its event is dropped from the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct CountKey {
    /// Source `s_magic` (0 when not open).
    pub magic_in: u64,
    /// Destination `s_magic` (0 when not open).
    pub magic_out: u64,
    /// errno when the call failed, else 0.
    pub errno: u32,
    /// Bits of [`fact`].
    pub facts: u32,
}

/// Value of the `COUNTS` map (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CountVal {
    /// Calls.
    pub calls: u64,
    /// Sum of requested lengths, saturating at `u64::MAX`.
    pub bytes_requested: u64,
    /// Sum of bytes copied.
    pub bytes_copied: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] structs of integers and byte arrays with
    // explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::CountKey {}
    unsafe impl aya::Pod for super::CountVal {}
}
