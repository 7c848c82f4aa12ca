//! Resolves every kernel struct offset the eBPF programs use, from the running
//! kernel's BTF and tracepoint formats, into one [`KernelOffsets`] global.

use std::path::Path;

use copytrace_common::KernelOffsets;

use super::btf::{Btf, BtfError};
use super::tracefs::{self, TracefsError};

/// Errors from resolving offsets.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    /// A struct member is missing from BTF.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// A tracepoint format could not be read.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
}

/// Fields of `sys_enter_copy_file_range`, in `KernelOffsets::tp_enter_args` order.
pub const ENTER_FIELDS: [&str; 6] = ["fd_in", "off_in", "fd_out", "off_out", "len", "flags"];

/// x86-64 `pt_regs` members carrying syscall arguments 0..6.
const X86_64_SYSCALL_REGS: [&str; 6] = ["di", "si", "dx", "r10", "r8", "r9"];

/// Struct member offsets from BTF; the tracepoint fields are left at 0.
pub fn from_btf(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let m = |s: &str, f: &str| btf.member_offset(s, f);
    let mut regs_args = [0u32; 6];
    for (slot, reg) in regs_args.iter_mut().zip(X86_64_SYSCALL_REGS) {
        *slot = m("pt_regs", reg)?;
    }
    Ok(KernelOffsets {
        task_files: m("task_struct", "files")?,
        task_tgid: m("task_struct", "tgid")?,
        task_real_parent: m("task_struct", "real_parent")?,
        files_fdt: m("files_struct", "fdt")?,
        fdt_max_fds: m("fdtable", "max_fds")?,
        fdt_fd: m("fdtable", "fd")?,
        file_f_inode: m("file", "f_inode")?,
        file_f_pos: m("file", "f_pos")?,
        file_f_flags: m("file", "f_flags")?,
        file_f_op: m("file", "f_op")?,
        file_f_path: m("file", "f_path")?,
        path_dentry: m("path", "dentry")?,
        fop_copy_file_range: m("file_operations", "copy_file_range")?,
        fop_remap_file_range: m("file_operations", "remap_file_range")?,
        inode_i_mode: m("inode", "i_mode")?,
        inode_i_ino: m("inode", "i_ino")?,
        inode_i_size: m("inode", "i_size")?,
        inode_i_sb: m("inode", "i_sb")?,
        sb_s_magic: m("super_block", "s_magic")?,
        sb_s_dev: m("super_block", "s_dev")?,
        sb_s_type: m("super_block", "s_type")?,
        fstype_name: m("file_system_type", "name")?,
        dentry_d_name: m("dentry", "d_name")?,
        dentry_d_parent: m("dentry", "d_parent")?,
        qstr_name: m("qstr", "name")?,
        regs_args,
        tp_enter_args: [0; 6],
        tp_exit_ret: 0,
    })
}

/// Fills the syscall tracepoint record offsets from tracefs.
pub fn add_tracepoint_fields(
    offsets: &mut KernelOffsets,
    tracefs_dir: &Path,
) -> Result<(), TracefsError> {
    let enter = tracefs::tracepoint_offsets(
        tracefs_dir,
        "syscalls",
        "sys_enter_copy_file_range",
        &ENTER_FIELDS,
    )?;
    offsets.tp_enter_args.copy_from_slice(&enter);
    let exit = tracefs::tracepoint_offsets(
        tracefs_dir,
        "syscalls",
        "sys_exit_copy_file_range",
        &["ret"],
    )?;
    offsets.tp_exit_ret = exit[0];
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_all_offsets_on_this_kernel() {
        let btf = Btf::from_sys_fs().expect("kernel BTF (CONFIG_DEBUG_INFO_BTF) is required");
        let off = from_btf(&btf).expect("every member copytrace reads exists");
        // Cross-check a few against independent facts about the layout rather
        // than one kernel's numbers: members that are not the first of their
        // struct cannot sit at 0, and pt_regs args are 8-byte slots.
        assert_ne!(off.task_files, 0);
        assert_ne!(off.file_f_inode, 0);
        assert_ne!(off.sb_s_magic, 0);
        assert!(off.regs_args.iter().all(|o| o % 8 == 0));
    }
}
