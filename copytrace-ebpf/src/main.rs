//! copytrace's kernel programs.
//!
//! Two back-ends fill the same [`Event`]:
//! - tracepoint: `syscalls:sys_enter/exit_copy_file_range` (works where fentry is refused);
//! - fentry: fentry/fexit on the syscall wrapper, plus `vfs_copy_file_range` for in-kernel callers.
//!
//! Both resolve the caller's fds through `current->files->fdt->fd[]` at entry,
//! keep the half-built event per thread in `INFLIGHT`, and emit it at exit.
//! Policy (what is suspicious) is userspace's job: this side only records.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
    },
    macros::{fentry, fexit, map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{FEntryContext, FExitContext, TracePointContext},
    EbpfContext, Global,
};
use aya_log_ebpf::warn;
use copytrace_common::{
    counter, status, Backend, CallOutcome, CountKey, CountVal, Event, FileInfo, KernelOffsets,
    Origin, ProbeConfig, NAME_LEN, PATH_DEPTH,
};

#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_files: 0,
    task_tgid: 0,
    task_real_parent: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_f_inode: 0,
    file_f_pos: 0,
    file_f_flags: 0,
    file_f_op: 0,
    file_f_path: 0,
    path_dentry: 0,
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
    dentry_d_name: 0,
    dentry_d_parent: 0,
    qstr_name: 0,
    regs_args: [0; 6],
    tp_enter_args: [0; 6],
    tp_exit_ret: 0,
});

#[unsafe(no_mangle)]
static CONFIG: Global<ProbeConfig> = Global::new(ProbeConfig {
    follow_tgid: 0,
    backend: 0,
    _pad: [0; 3],
});

/// Completed calls, read by the daemon.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Calls between entry and exit, keyed by thread id.
#[map]
static INFLIGHT: HashMap<u32, Event> = HashMap::with_max_entries(16384, 0);

/// Per-CPU staging area: an Event is too large for the 512-byte BPF stack.
#[map]
static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU loss counters (see `copytrace_common::counter`).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Exact per-outcome call counts, independent of ring-buffer loss.
#[map]
static COUNTS: PerCpuHashMap<CountKey, CountVal> = PerCpuHashMap::with_max_entries(4096, 0);

/// Pending ring-buffer bytes that trigger a reader wake-up (about 40 events).
const WAKEUP_BYTES: u64 = 32 * 1024;

/// Parent-chain depth searched for `follow_tgid`.
const FOLLOW_DEPTH: usize = 16;

#[inline(always)]
unsafe fn read<T>(base: u64, off: u32) -> T
where
    T: Default,
{
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.unwrap_or_default()
}

#[inline(always)]
fn bump(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

/// True when the current task is `follow_tgid` or one of its descendants.
#[inline(always)]
fn followed(cfg: &ProbeConfig, off: &KernelOffsets) -> bool {
    if cfg.follow_tgid == 0 {
        return true;
    }
    let mut task = unsafe { bpf_get_current_task() };
    for _ in 0..FOLLOW_DEPTH {
        if task == 0 {
            return false;
        }
        let tgid: i32 = unsafe { read(task, off.task_tgid) };
        if tgid as u32 == cfg.follow_tgid {
            return true;
        }
        let parent: u64 = unsafe { read(task, off.task_real_parent) };
        if parent == task {
            return false;
        }
        task = parent;
    }
    false
}

/// `current->files->fdt->fd[fd]`, or 0.
#[inline(always)]
fn file_of_fd(fd: i64, off: &KernelOffsets) -> u64 {
    if !(0..=i32::MAX as i64).contains(&fd) {
        return 0;
    }
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = read(task, off.task_files);
        if files == 0 {
            return 0;
        }
        let fdt: u64 = read(files, off.files_fdt);
        if fdt == 0 {
            return 0;
        }
        let max_fds: u32 = read(fdt, off.fdt_max_fds);
        if fd as u64 >= max_fds as u64 {
            return 0;
        }
        let fd_array: u64 = read(fdt, off.fdt_fd);
        if fd_array == 0 {
            return 0;
        }
        read(fd_array + (fd as u64) * 8, 0)
    }
}

/// Fills `fi` from a `struct file *`.
#[inline(always)]
fn describe_file(file: u64, fi: &mut FileInfo, off: &KernelOffsets) {
    if file == 0 {
        return;
    }
    fi.present = 1;
    unsafe {
        fi.pos = read(file, off.file_f_pos);
        fi.f_flags = read(file, off.file_f_flags);
        let fop: u64 = read(file, off.file_f_op);
        if fop != 0 {
            fi.copy_op = read(fop, off.fop_copy_file_range);
            fi.remap_op = read(fop, off.fop_remap_file_range);
        }
        let inode: u64 = read(file, off.file_f_inode);
        if inode != 0 {
            fi.mode = read(inode, off.inode_i_mode);
            fi.ino = read(inode, off.inode_i_ino);
            fi.size = read(inode, off.inode_i_size);
            let sb: u64 = read(inode, off.inode_i_sb);
            if sb != 0 {
                fi.magic = read(sb, off.sb_s_magic);
                fi.dev = read(sb, off.sb_s_dev);
                let fstype: u64 = read(sb, off.sb_s_type);
                if fstype != 0 {
                    let name: u64 = read(fstype, off.fstype_name);
                    if name != 0 {
                        let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut fi.fstype);
                    }
                }
            }
        }
        let mut dentry: u64 = read(file, off.file_f_path + off.path_dentry);
        let mut depth = 0u8;
        for i in 0..PATH_DEPTH {
            if dentry == 0 {
                break;
            }
            let name: u64 = read(dentry, off.dentry_d_name + off.qstr_name);
            if name == 0 {
                break;
            }
            let slot: &mut [u8; NAME_LEN] = &mut fi.path[i];
            if bpf_probe_read_kernel_str_bytes(name as *const u8, slot).is_err() {
                break;
            }
            depth += 1;
            let parent: u64 = read(dentry, off.dentry_d_parent);
            // The root dentry is its own parent.
            if parent == dentry {
                break;
            }
            dentry = parent;
        }
        fi.path_depth = depth;
    }
}

/// The six arguments of `copy_file_range(2)`.
struct SyscallArgs {
    fd_in: i64,
    off_in: u64,
    fd_out: i64,
    off_out: u64,
    len: u64,
    flags: u64,
}

/// Fills the current task's identity and clock into `ev`.
#[inline(always)]
fn stamp_task(ev: &mut Event, cfg: &ProbeConfig, orig: Origin) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    ev.start_ns = unsafe { bpf_ktime_get_ns() };
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.uid = uid_gid as u32;
    ev.gid = (uid_gid >> 32) as u32;
    ev.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    ev.backend = cfg.backend;
    ev.origin = orig as u8;
}

/// Returns the per-CPU staging event, zeroed.
#[inline(always)]
fn scratch() -> Option<&'static mut Event> {
    let ev = SCRATCH.get_ptr_mut(0)?;
    unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        Some(&mut *ev)
    }
}

/// Records a syscall entry; shared by both back-ends.
#[inline(always)]
fn begin_syscall<C: EbpfContext>(ctx: &C, args: &SyscallArgs) {
    let cfg = CONFIG.load();
    let off = OFFSETS.load();
    if !followed(&cfg, &off) {
        return;
    }
    let Some(ev) = scratch() else { return };
    stamp_task(ev, &cfg, Origin::Syscall);
    ev.fd_in = args.fd_in as i32;
    ev.fd_out = args.fd_out as i32;
    ev.len = args.len;
    ev.flags = args.flags as u32;
    if args.off_in != 0 {
        ev.status |= status::OFF_IN_GIVEN;
        match unsafe { bpf_probe_read_user(args.off_in as *const i64) } {
            Ok(v) => ev.off_in = v,
            Err(_) => ev.status |= status::OFF_FAULT,
        }
    }
    if args.off_out != 0 {
        ev.status |= status::OFF_OUT_GIVEN;
        match unsafe { bpf_probe_read_user(args.off_out as *const i64) } {
            Ok(v) => ev.off_out = v,
            Err(_) => ev.status |= status::OFF_FAULT,
        }
    }
    if cfg.backend == Backend::Fentry as u8 {
        ev.status |= status::VFS_KNOWN;
    }
    describe_file(file_of_fd(args.fd_in, &off), &mut ev.files[0], &off);
    describe_file(file_of_fd(args.fd_out, &off), &mut ev.files[1], &off);
    if INFLIGHT.insert(ev.tid, &*ev, 0).is_err() {
        bump(counter::INFLIGHT_FULL);
        warn!(
            ctx,
            "in-flight map full: call of tid {} not tracked", ev.tid
        );
    }
}

/// Adds a finished call to `COUNTS`.
#[inline(always)]
fn count(ev: &Event) {
    let (fin, fout) = (&ev.files[0], &ev.files[1]);
    let outcome = CallOutcome {
        len: ev.len,
        ret: ev.ret,
        read_pos: if ev.status & status::OFF_IN_GIVEN != 0 {
            ev.off_in
        } else {
            fin.pos
        },
        size_in: fin.size,
        in_present: fin.present != 0,
        out_present: fout.present != 0,
        same_fs: fin.dev == fout.dev,
    };
    let key = CountKey {
        magic_in: fin.magic,
        magic_out: fout.magic,
        errno: if ev.ret < 0 { (-ev.ret) as u32 } else { 0 },
        facts: outcome.facts(),
    };
    let copied = if ev.ret > 0 { ev.ret as u64 } else { 0 };
    if let Some(v) = COUNTS.get_ptr_mut(&key) {
        // Per-CPU value: no other CPU writes it.
        unsafe {
            (*v).calls += 1;
            // Saturate: "copy everything" requests (cp asks for ~2^63) would wrap.
            (*v).bytes_requested = (*v).bytes_requested.saturating_add(ev.len);
            (*v).bytes_copied += copied;
        }
    } else {
        let v = CountVal {
            calls: 1,
            bytes_requested: ev.len,
            bytes_copied: copied,
        };
        if COUNTS.insert(&key, &v, 0).is_err() {
            bump(counter::COUNTS_FULL);
        }
    }
}

/// Completes the current thread's in-flight call with `ret` and emits it.
#[inline(always)]
fn finish(ret: i64, only_origin: Origin) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(ev) = INFLIGHT.get_ptr_mut(tid) else {
        return;
    };
    let ev = unsafe { &mut *ev };
    if ev.origin != only_origin as u8 {
        return;
    }
    ev.end_ns = unsafe { bpf_ktime_get_ns() };
    ev.ret = ret;
    count(ev);
    // Wake the reader only once a batch has piled up: a wake-up per event
    // costs the traced task more than the rest of the probe. The daemon also
    // drains on a short timer, so a lone event is never stuck.
    let wake = if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<Event>(&*ev, wake as u64).is_err() {
        bump(counter::LOST);
    }
    let _ = INFLIGHT.remove(tid);
}

#[tracepoint]
pub fn cfr_sys_enter(ctx: TracePointContext) -> u32 {
    let a = OFFSETS.load().tp_enter_args;
    let field = |i: usize| unsafe { ctx.read_at::<u64>(a[i] as usize) }.unwrap_or(0);
    let args = SyscallArgs {
        fd_in: field(0) as i32 as i64,
        off_in: field(1),
        fd_out: field(2) as i32 as i64,
        off_out: field(3),
        len: field(4),
        flags: field(5),
    };
    begin_syscall(&ctx, &args);
    0
}

#[tracepoint]
pub fn cfr_sys_exit(ctx: TracePointContext) -> u32 {
    let off = OFFSETS.load().tp_exit_ret;
    let ret = unsafe { ctx.read_at::<i64>(off as usize) }.unwrap_or(0);
    finish(ret, Origin::Syscall);
    0
}

/// fentry on the arch syscall wrapper (`__x64_sys_copy_file_range(const struct pt_regs *)`).
#[fentry]
pub fn cfr_wrapper_entry(ctx: FEntryContext) -> u32 {
    let regs: u64 = ctx.arg(0);
    let r = OFFSETS.load().regs_args;
    let reg = |i: usize| -> u64 { unsafe { read(regs, r[i]) } };
    let args = SyscallArgs {
        fd_in: reg(0) as i32 as i64,
        off_in: reg(1),
        fd_out: reg(2) as i32 as i64,
        off_out: reg(3),
        len: reg(4),
        flags: reg(5),
    };
    begin_syscall(&ctx, &args);
    0
}

#[fexit]
pub fn cfr_wrapper_exit(ctx: FExitContext) -> u32 {
    // The return value follows the function's single argument in the fexit
    // context; reading it as arg 1 also works before bpf_get_func_ret (5.17).
    let ret: i64 = ctx.arg(1);
    finish(ret, Origin::Syscall);
    0
}

/// fentry on `vfs_copy_file_range(file_in, pos_in, file_out, pos_out, len, flags)`.
#[fentry]
pub fn cfr_vfs_entry(ctx: FEntryContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(ev) = INFLIGHT.get_ptr_mut(tid) {
        // A syscall we already track reached the VFS: note it, keep its fds.
        unsafe { (*ev).status |= status::VFS_REACHED };
        return 0;
    }
    let cfg = CONFIG.load();
    let off = OFFSETS.load();
    if !followed(&cfg, &off) {
        return 0;
    }
    let Some(ev) = scratch() else { return 0 };
    stamp_task(ev, &cfg, Origin::Kernel);
    let file_in: u64 = ctx.arg(0);
    let pos_in: i64 = ctx.arg(1);
    let file_out: u64 = ctx.arg(2);
    let pos_out: i64 = ctx.arg(3);
    ev.fd_in = -1;
    ev.fd_out = -1;
    ev.off_in = pos_in;
    ev.off_out = pos_out;
    ev.len = ctx.arg(4);
    ev.flags = ctx.arg(5);
    ev.status =
        status::OFF_IN_GIVEN | status::OFF_OUT_GIVEN | status::VFS_KNOWN | status::VFS_REACHED;
    describe_file(file_in, &mut ev.files[0], &off);
    describe_file(file_out, &mut ev.files[1], &off);
    if INFLIGHT.insert(tid, &*ev, 0).is_err() {
        bump(counter::INFLIGHT_FULL);
    }
    0
}

#[fexit]
pub fn cfr_vfs_exit(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.arg(6);
    finish(ret, Origin::Kernel);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
