//! The load-time globals: the kernel's layout, the probe's configuration
//! and the report table, which userspace writes when the object loads and
//! every layer of the programs reads. This module uses no other of the
//! crate.

use copytrace_common::{KernelOffsets, KernelTypes, ProbeConfig, ReportPolicy};

// The load-time globals are `static mut` so that they live in a writable
// data section: userspace sets them when the object loads, and the programs
// read them in place (aya's Global::load copies the whole struct onto the
// 512-byte stack; a read-only static would be folded to its zero initialiser).
// The kernel's layout lives in a `.rodata` section all the same: aya freezes
// it, and the verifier then knows each value, as typed loads need
// (kread::Typed adds offsets to pointers it checks against BTF).

/// Kernel struct offsets, from the running kernel's BTF.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".rodata.kernel")]
static mut OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_comm: 0,
    task_mm: 0,
    task_nsproxy: 0,
    task_cred: 0,
    cred_uid: 0,
    cred_gid: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    mm_exe_file: 0,
    mm_start_code: 0,
    mm_end_code: 0,
    vma_start: 0,
    vma_end: 0,
    vma_pgoff: 0,
    vma_flags: 0,
    vma_file: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    file_f_inode: 0,
    file_f_pos: 0,
    file_f_flags: 0,
    file_f_op: 0,
    file_f_path_mnt: 0,
    file_f_path_dentry: 0,
    fop_copy_file_range: 0,
    fop_remap_file_range: 0,
    inode_i_mode: 0,
    inode_i_ino: 0,
    inode_i_size: 0,
    inode_i_sb: 0,
    sb_s_magic: 0,
    sb_s_dev: 0,
    sb_s_type: 0,
    fstype_name: 0,
    dentry_d_name_name: 0,
    dentry_d_parent: 0,
    dentry_d_hash_pprev: 0,
    dentry_d_name_len: 0,
    dentry_inline_name: 0,
    dentry_inline_len: 0,
    mount_mnt: 0,
    mount_mnt_id: 0,
    mount_mnt_ns: 0,
    mount_mnt_sb: 0,
    regs_args: [0; 6],
    regs_user: [0; 4],
    tp_enter_args: [0; 6],
    tp_exit_ret: 0,
    contiguous: 0,
};

/// BTF ids for typed loads, from the running kernel's BTF.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".rodata.kernel")]
static mut TYPES: KernelTypes = KernelTypes {
    rdonly_cast: 0,
    task_struct: 0,
    file: 0,
    inode: 0,
    super_block: 0,
    mount: 0,
    dentry: 0,
    text: 0,
    fd: 0,
    task_pt_regs: 0,
};

/// Who to follow and which back-end this object is.
#[unsafe(no_mangle)]
static mut CONFIG: ProbeConfig = ProbeConfig {
    follow_tgid: 0,
    backend: 0,
    count_by_cgroup: 0,
    stacks: 1,
    _pad: 0,
    max_rw_count: 0,
};

/// Which calls are suspicious: userspace's verdict rules as a table.
#[unsafe(no_mangle)]
static mut POLICY: ReportPolicy = ReportPolicy::EMPTY;

/// The kernel offsets global, read in place.
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    // SAFETY: userspace writes the global before the programs load and
    // never after; programs only read it.
    unsafe { &*core::ptr::addr_of!(OFFSETS) }
}

/// The BTF ids global, read in place.
#[inline(always)]
pub fn types() -> &'static KernelTypes {
    // SAFETY: as for offsets().
    unsafe { &*core::ptr::addr_of!(TYPES) }
}

/// The load-time configuration, read in place.
#[inline(always)]
pub fn config() -> &'static ProbeConfig {
    // SAFETY: as for offsets().
    unsafe { &*core::ptr::addr_of!(CONFIG) }
}

/// The report table, read in place.
#[inline(always)]
pub fn policy() -> &'static ReportPolicy {
    // SAFETY: as for offsets().
    unsafe { &*core::ptr::addr_of!(POLICY) }
}
