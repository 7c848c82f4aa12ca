//! Load-time inputs of the eBPF programs, set by userspace as globals.

use core::mem::size_of;

/// Kernel struct member offsets (bytes), read from the running kernel's BTF by
/// userspace and passed to the eBPF programs as a global: Rust eBPF code gets
/// no CO-RE relocations, so nothing here may be hard-coded.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    pub task_nsproxy: u32,
    /// `task_struct.cred`: the subjective credentials, as `current_cred()`.
    pub task_cred: u32,
    /// `cred.uid` (a `kuid_t`, whose value is its only member).
    pub cred_uid: u32,
    /// `cred.gid`.
    pub cred_gid: u32,
    /// `task_struct.cgroups` (0: no cgroups in this kernel, and so are
    /// the other cgroup offsets).
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp`: the task's cgroup v2 cgroup.
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`: the cgroup id (as `bpf_get_current_cgroup_id`).
    pub kernfs_node_id: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub mm_exe_file: u32,
    pub mm_start_code: u32,
    pub mm_end_code: u32,
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns` + `ns_common.inum`.
    pub mnt_ns_inum: u32,
    pub file_f_inode: u32,
    pub file_f_pos: u32,
    pub file_f_flags: u32,
    pub file_f_op: u32,
    /// `file.f_path` + `path.mnt`.
    pub file_f_path_mnt: u32,
    /// `file.f_path` + `path.dentry`.
    pub file_f_path_dentry: u32,
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
    /// `dentry.d_name` + `qstr.name`.
    pub dentry_d_name_name: u32,
    pub dentry_d_parent: u32,
    /// `dentry.d_hash` + `hlist_bl_node.pprev` (NULL once unhashed, e.g. unlinked).
    pub dentry_d_hash_pprev: u32,
    /// `dentry.d_name` + `qstr.len`.
    pub dentry_d_name_len: u32,
    /// The dentry's own name storage, which `d_name.name` points to for
    /// short names: `d_iname`, or `d_shortname` from Linux 6.14.
    pub dentry_inline_name: u32,
    /// Its size in bytes (0: not found, names are never read from it).
    pub dentry_inline_len: u32,
    /// Where `struct vfsmount mnt` sits inside `struct mount`.
    pub mount_mnt: u32,
    pub mount_mnt_id: u32,
    pub mount_mnt_ns: u32,
    /// `mount.mnt.mnt_sb`: the superblock of the mount's own filesystem.
    pub mount_mnt_sb: u32,
    /// `vm_area_struct` fields a stack's mappings are recorded from
    /// (`vm_start`, `vm_end`, `vm_pgoff`, `vm_flags`, `vm_file`).
    pub vma_start: u32,
    pub vma_end: u32,
    pub vma_pgoff: u32,
    pub vma_flags: u32,
    pub vma_file: u32,
    /// `pt_regs` offsets of syscall arguments 0..6 for this architecture
    /// (x86-64: di, si, dx, r10, r8, r9; arm64: regs[0..6]).
    pub regs_args: [u32; 6],
    /// `pt_regs` offsets of the user registers an unwinder starts from:
    /// instruction pointer, stack pointer, frame pointer, link register
    /// (x86-64: ip, sp, bp and [`NO_REGISTER`]; arm64: pc, sp, regs[29],
    /// regs[30]).
    pub regs_user: [u32; 4],
    /// Offsets of fd_in, off_in, fd_out, off_out, len, flags in the
    /// `sys_enter_copy_file_range` tracepoint record (from its `format` file).
    pub tp_enter_args: [u32; 6],
    /// Offset of `ret` in the `sys_exit_copy_file_range` record.
    pub tp_exit_ret: u32,
    /// Bits of [`contiguous`]: fields that sit side by side, read with one
    /// helper call.
    pub contiguous: u32,
}

/// Bits of [`KernelOffsets::contiguous`].
pub mod contiguous {
    /// `tp_enter_args` are consecutive.
    pub const TRACEPOINT: u32 = 1 << 0;
    /// `regs_args` are consecutive.
    pub const REGS: u32 = 1 << 1;
    /// `fdtable.fd` is the pointer right after the `u32` `max_fds`.
    pub const FDTABLE: u32 = 1 << 2;
}

/// What the programs need to load kernel memory directly instead of
/// through `bpf_probe_read_kernel` (Linux 6.2+): the BTF id of the
/// `bpf_rdonly_cast` kfunc and of the structs its results are viewed as,
/// all from the running kernel's BTF. `rdonly_cast == 0` means the kernel
/// lacks the kfunc and every read goes through the helper.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KernelTypes {
    /// BTF id of the `bpf_rdonly_cast` function (0: not available).
    pub rdonly_cast: u32,
    pub task_struct: u32,
    pub file: u32,
    pub inode: u32,
    pub super_block: u32,
    pub mount: u32,
    pub dentry: u32,
    /// A struct that starts with a char array of at least 16 bytes
    /// (`new_utsname`): what a kernel string's address is viewed as, to
    /// load its first 16 bytes.
    pub text: u32,
    /// `struct fd`, whose first 8 bytes hold a `struct file *` (its `file`
    /// before 6.12, its `word` since): what an fd-table slot is viewed as.
    pub fd: u32,
    /// Non-zero: the kernel has `bpf_get_current_task_btf` and
    /// `bpf_task_pt_regs` (5.15+), through which the tracepoint back-end
    /// reads the caller's user registers (fentry has them as the syscall
    /// wrapper's argument). Where it is zero the calls sit in code the
    /// verifier never reaches.
    pub task_pt_regs: u32,
}

/// A [`KernelOffsets::regs_user`] entry for a register the architecture
/// does not have.
pub const NO_REGISTER: u32 = u32::MAX;

/// The helper id the programs call where they mean `bpf_rdonly_cast`:
/// userspace rewrites each such call into a kfunc call before loading
/// (aya has no kfunc relocations), or leaves it where the kernel lacks the
/// kfunc, in code the verifier then never reaches. No helper has this id.
pub const RDONLY_CAST_PLACEHOLDER: u32 = 0x7ea5_0c57;

/// Slots of the programs' per-thread in-flight array: a power of two, so
/// that a thread id's slot is a mask away. Two threads share a slot only
/// when their ids differ by a multiple of it and both copy while both
/// live: the later one's calls then go to the in-flight hash.
pub const THREAD_SLOT_COUNT: u32 = 16384;

/// The in-flight array slot of thread `tid`.
pub const fn thread_slot(tid: u32) -> u32 {
    tid & (THREAD_SLOT_COUNT - 1)
}

/// Entries of the in-flight hash: the threads whose slot another thread
/// holds.
pub const INFLIGHT_OVERFLOW: u32 = 4096;

/// Load-time settings for the eBPF programs.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Only report calls from this process and its descendants (0: everyone).
    pub follow_tgid: u32,
    /// The [`crate::Backend`] discriminant the loaded programs belong to.
    pub backend: u8,
    /// Non-zero: key the exact counts by cgroup too (metrics with a unit label).
    pub count_by_cgroup: u8,
    /// Non-zero: take the user stack of suspicious calls.
    pub stacks: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// The running kernel's per-call cap ([`crate::max_rw_count`] of its page
    /// size), for the `CAPPED` fact.
    pub max_rw_count: u64,
}

/// Slots of the run-time `SETTINGS` array map, which userspace writes while
/// the programs run.
pub mod setting {
    /// Non-zero: report every call, not only the suspicious ones.
    pub const WANT_ALL: u32 = 0;
    /// Number of slots.
    pub const COUNT: u32 = 1;
}

const _: () = assert!(size_of::<KernelOffsets>() == (53 + 6 + 4 + 6 + 2) * 4);
const _: () = assert!(size_of::<ProbeConfig>() == 16);
const _: () = assert!(THREAD_SLOT_COUNT.is_power_of_two());
const _: () = assert!(size_of::<KernelTypes>() == 10 * 4);
