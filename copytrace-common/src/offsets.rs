//! Load-time inputs of the eBPF programs, set by userspace as globals.

use core::mem::size_of;

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
    /// The [`crate::Backend`] discriminant the loaded programs belong to.
    pub backend: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
}

const _: () = assert!(size_of::<KernelOffsets>() == 38 * 4);
const _: () = assert!(size_of::<ProbeConfig>() == 8);
