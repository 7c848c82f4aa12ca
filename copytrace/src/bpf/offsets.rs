//! Resolves every kernel struct offset the eBPF programs use, from the running
//! kernel's BTF and tracepoint formats, into one [`KernelOffsets`] global,
//! and the BTF ids their typed loads need into a [`KernelTypes`] one.

use std::path::Path;

use copytrace_common::{contiguous, KernelOffsets, KernelTypes, NO_REGISTER};

use super::arch;
use super::btf::{Btf, BtfError};
use super::tracefs::{self, TracefsError};

/// Fields of `sys_enter_copy_file_range`, in `KernelOffsets::tp_enter_args` order.
pub const ENTER_FIELDS: [&str; 6] = ["fd_in", "off_in", "fd_out", "off_out", "len", "flags"];

/// Whether six offsets are consecutive u64 slots (one read fetches them all).
fn consecutive(offs: &[u32; 6]) -> bool {
    offs.windows(2).all(|w| w[1] == w[0] + 8)
}

/// Struct member offsets from BTF; the tracepoint fields are left at 0.
/// The syscall-wrapper registers are resolved only on a known architecture
/// (see [`arch::CURRENT`]); without them only the fentry syscall side is lost.
pub fn from_btf(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let m = |s: &str, f: &str| btf.member_offset(s, f);
    let regs_args = match arch::CURRENT.map(|abi| abi.arg_offsets(btf)) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            log::debug!("syscall wrapper registers unavailable: {e}");
            [0; 6]
        }
        None => [0; 6],
    };
    // Optional: without them stacks are frame-pointer walks only.
    let regs_user = match arch::CURRENT.map(|abi| abi.user_offsets(btf)) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            log::debug!("user registers unavailable: {e}");
            [NO_REGISTER; 4]
        }
        None => [NO_REGISTER; 4],
    };
    // Optional: without it every name is read with the helper.
    let inline = ["d_shortname", "d_iname"]
        .iter()
        .find_map(|f| Some((m("dentry", f).ok()?, btf.member_size("dentry", f).ok()?)))
        .unwrap_or((0, 0));
    // Optional: a kernel without cgroups has none of them, and the
    // programs then ask the helper (which returns 0 there).
    let cgroups = (|| {
        Ok::<_, BtfError>([
            m("task_struct", "cgroups")?,
            m("css_set", "dfl_cgrp")?,
            m("cgroup", "kn")?,
            m("kernfs_node", "id")?,
        ])
    })()
    .unwrap_or([0; 4]);
    let mut o = KernelOffsets {
        task_files: m("task_struct", "files")?,
        task_pid: m("task_struct", "pid")?,
        task_tgid: m("task_struct", "tgid")?,
        task_real_parent: m("task_struct", "real_parent")?,
        task_comm: m("task_struct", "comm")?,
        task_mm: m("task_struct", "mm")?,
        task_nsproxy: m("task_struct", "nsproxy")?,
        task_cred: m("task_struct", "cred")?,
        cred_uid: m("cred", "uid")?,
        cred_gid: m("cred", "gid")?,
        task_cgroups: cgroups[0],
        css_set_dfl_cgrp: cgroups[1],
        cgroup_kn: cgroups[2],
        kernfs_node_id: cgroups[3],
        files_fdt: m("files_struct", "fdt")?,
        fdt_max_fds: m("fdtable", "max_fds")?,
        fdt_fd: m("fdtable", "fd")?,
        mm_exe_file: m("mm_struct", "exe_file")?,
        mm_start_code: m("mm_struct", "start_code")?,
        mm_end_code: m("mm_struct", "end_code")?,
        nsproxy_mnt_ns: m("nsproxy", "mnt_ns")?,
        mnt_ns_inum: m("mnt_namespace", "ns")? + m("ns_common", "inum")?,
        file_f_inode: m("file", "f_inode")?,
        file_f_pos: m("file", "f_pos")?,
        file_f_flags: m("file", "f_flags")?,
        file_f_op: m("file", "f_op")?,
        file_f_path_mnt: m("file", "f_path")? + m("path", "mnt")?,
        file_f_path_dentry: m("file", "f_path")? + m("path", "dentry")?,
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
        dentry_d_name_name: m("dentry", "d_name")? + m("qstr", "name")?,
        dentry_d_parent: m("dentry", "d_parent")?,
        dentry_d_hash_pprev: m("dentry", "d_hash")? + m("hlist_bl_node", "pprev")?,
        dentry_d_name_len: m("dentry", "d_name")? + m("qstr", "len")?,
        dentry_inline_name: inline.0,
        dentry_inline_len: inline.1,
        mount_mnt: m("mount", "mnt")?,
        mount_mnt_id: m("mount", "mnt_id")?,
        mount_mnt_ns: m("mount", "mnt_ns")?,
        mount_mnt_sb: m("mount", "mnt")? + m("vfsmount", "mnt_sb")?,
        vma_start: m("vm_area_struct", "vm_start")?,
        vma_end: m("vm_area_struct", "vm_end")?,
        vma_pgoff: m("vm_area_struct", "vm_pgoff")?,
        vma_flags: m("vm_area_struct", "vm_flags")?,
        vma_file: m("vm_area_struct", "vm_file")?,
        regs_args,
        regs_user,
        tp_enter_args: [0; 6],
        tp_exit_ret: 0,
        contiguous: 0,
    };
    if regs_args != [0; 6] && consecutive(&regs_args) {
        o.contiguous |= contiguous::REGS;
    }
    if o.fdt_fd == o.fdt_max_fds + 8 {
        o.contiguous |= contiguous::FDTABLE;
    }
    Ok(o)
}

/// The kfunc that lets programs load kernel memory directly (Linux 6.2+).
pub const RDONLY_CAST: &str = "bpf_rdonly_cast";

/// The BTF ids for typed loads, or `rdonly_cast: 0` (every read through
/// the helper) when the kernel lacks the kfunc or one of the structs.
pub fn types_from_btf(btf: &Btf) -> KernelTypes {
    let s = |name: &str| btf.struct_id(name);
    let found = (|| {
        Some(KernelTypes {
            rdonly_cast: btf.function_id(RDONLY_CAST)?,
            task_struct: s("task_struct")?,
            file: s("file")?,
            inode: s("inode")?,
            super_block: s("super_block")?,
            mount: s("mount")?,
            dentry: s("dentry")?,
            text: s("new_utsname")?,
            fd: s("fd")?,
            task_pt_regs: 0,
        })
    })();
    KernelTypes {
        task_pt_regs: u32::from(
            btf.has_function(TASK_PT_REGS) && btf.has_function(CURRENT_TASK_BTF),
        ),
        ..found.unwrap_or_default()
    }
}

/// Whether the kernel can place a stack's addresses in its mappings at the
/// call: `bpf_find_vma` and `bpf_loop` (both 5.17+).
pub fn mappings_supported(btf: &Btf) -> bool {
    [FIND_VMA, LOOP, CURRENT_TASK_BTF]
        .iter()
        .all(|f| btf.has_function(f))
}

/// The helper that finds the mapping an address falls in (5.17+).
pub const FIND_VMA: &str = "bpf_find_vma";
/// The helper that runs a callback a bounded number of times (5.17+).
pub const LOOP: &str = "bpf_loop";

/// The helpers the tracepoint back-end reads the user registers with (5.15+).
pub const TASK_PT_REGS: &str = "bpf_task_pt_regs";
/// The task its argument comes from (5.11+).
pub const CURRENT_TASK_BTF: &str = "bpf_get_current_task_btf";

/// Whether the fentry back-end's syscall side has its registers here.
pub fn regs_known(o: &KernelOffsets) -> bool {
    o.regs_args != [0; 6]
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
    if consecutive(&offsets.tp_enter_args) {
        offsets.contiguous |= contiguous::TRACEPOINT;
    }
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
        // Cross-check against independent facts about the layout rather
        // than one kernel's numbers: members that are not the first of their
        // struct cannot sit at 0, pt_regs args are 8-byte slots, and a
        // struct path holds mnt then dentry.
        assert_ne!(off.task_files, 0);
        assert_ne!(off.file_f_inode, 0);
        assert_ne!(off.sb_s_magic, 0);
        // pid_t pid, then pid_t tgid; kuid_t uid, then kgid_t gid.
        assert_eq!(off.task_pid + 4, off.task_tgid);
        assert_eq!(off.cred_uid + 4, off.cred_gid);
        assert_ne!(off.task_cgroups, 0, "this kernel has cgroups");
        assert_eq!(off.file_f_path_dentry, off.file_f_path_mnt + 8);
        assert!(regs_known(&off), "this architecture's syscall registers");
        assert!(off.regs_args.iter().all(|o| o % 8 == 0));
        // d_name holds the hash (4 bytes) and len before the name pointer;
        // short names live inside the dentry, 32 bytes (40 from 6.14) on
        // 64-bit kernels.
        assert_eq!(off.dentry_d_name_len + 4, off.dentry_d_name_name);
        assert!(
            [32, 40].contains(&off.dentry_inline_len),
            "inline name size {}",
            off.dentry_inline_len
        );
        assert!(off.dentry_inline_name > off.dentry_d_name_name);
    }

    #[test]
    fn consecutive_args_are_read_at_once() {
        assert!(consecutive(&[16, 24, 32, 40, 48, 56]));
        assert!(!consecutive(&[112, 104, 96, 56, 72, 64]));
    }
}
