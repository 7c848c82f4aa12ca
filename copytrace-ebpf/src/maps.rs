//! The maps and load-time globals shared by every program.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use copytrace_common::{
    counter, latency, setting, CountKey, CountVal, Event, KernelOffsets, KernelTypes, ProbeConfig,
    ReportPolicy, INFLIGHT_OVERFLOW, THREAD_SLOT_COUNT,
};

use crate::inflight::Inflight;

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
    regs_args: [0; 6],
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

/// Bytes of the EVENTS ring buffer.
pub const RING_BYTES: u32 = 4 << 20;

/// Reported calls, read by the daemon.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Per-CPU slot where a reported call's record is built before it is
/// copied into the ring buffer (see report::report).
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// What exit knows of the ring's reader (see report::wake_flags): one slot,
/// shared by every CPU.
#[map]
pub static READER: Array<ReaderWatch> = Array::with_max_entries(1, 0);

/// The state behind report::wake_flags.
#[repr(C)]
pub struct ReaderWatch {
    /// Record bytes sent since the last look.
    pub sent: u64,
    /// Where the reader had read to at the last look, plus one.
    pub read_to: u64,
    /// Where it had read to when last woken, plus one (0: never).
    pub woken_at: u64,
    /// When a suspicious call last woke it (`bpf_ktime_get_ns`).
    pub suspicious_woken_ns: u64,
}

/// Per-CPU landing place of kread's span reads (one helper call for two fields).
#[map]
pub static SPAN: PerCpuArray<[u64; crate::kread::SPAN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Each thread's current or last call, at its thread id modulo
/// `THREAD_SLOT_COUNT`, in the slot it holds (see `inflight`).
#[map]
pub static THREAD_SLOTS: Array<Inflight> = Array::with_max_entries(THREAD_SLOT_COUNT, 0);

/// Which slots of [`THREAD_SLOTS`] are held, and by which thread id: the
/// insert that creates a key is what claims a slot.
#[map]
pub static SLOT_CLAIMS: HashMap<u32, u32> = HashMap::with_max_entries(THREAD_SLOT_COUNT, 0);

/// Each thread's current or last call, keyed by thread id, when it holds
/// no slot of [`THREAD_SLOTS`]: written at entry, consumed at exit,
/// removed when the thread exits.
#[map]
pub static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(INFLIGHT_OVERFLOW, 0);

/// Per-CPU copy of the call an exit program is finishing (see
/// `inflight::end_call`).
#[map]
pub static ENDING: PerCpuArray<Inflight> = PerCpuArray::with_max_entries(1, 0);

/// Run-time settings written by the daemon (see `copytrace_common::setting`).
#[map]
pub static SETTINGS: Array<u32> = Array::with_max_entries(setting::COUNT, 0);

/// `s_magic` → `SizeTruth` for filesystems whose sizes are not their
/// content; the others are taken at their word.
#[map]
pub static SIZE_TRUTH: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

/// Per-CPU loss and fault counters (see `copytrace_common::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Exact per-outcome call counts, independent of what is reported.
#[map]
pub static COUNTS: PerCpuHashMap<CountKey, CountVal> = PerCpuHashMap::with_max_entries(4096, 0);

/// Call durations, log2 buckets and their sum (see `copytrace_common::latency`).
#[map]
pub static LATENCY: PerCpuArray<u64> = PerCpuArray::with_max_entries(latency::SLOTS, 0);

/// Adds `n` to a per-CPU slot.
#[inline(always)]
pub fn add(map: &PerCpuArray<u64>, idx: u32, n: u64) {
    if let Some(p) = map.get_ptr_mut(idx) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and programs do
        // not preempt each other on one CPU.
        unsafe { *p += n };
    }
}

/// Whether anyone wants every call reported right now.
#[inline(always)]
pub fn want_all() -> bool {
    SETTINGS.get(setting::WANT_ALL).is_some_and(|v| *v != 0)
}

// A compile-time check that the record fits a ring-buffer reservation.
const _: () = assert!(core::mem::size_of::<Event>() < RING_BYTES as usize);
