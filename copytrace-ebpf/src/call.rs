//! One call from entry to exit: a small in-flight record at entry, then at
//! exit the facts, the exact count, the latency, and (only when someone
//! asked to see the call) the full record, built in a per-CPU slot and
//! copied into the ring buffer.

use aya_ebpf::{
    bindings::{
        BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
    },
    helpers::{bpf_get_stack, bpf_ktime_get_ns},
    EbpfContext,
};
use copytrace_common::{
    bound, counter, latency, status, Backend, CallOutcome, CountKey, CountVal, Event, FileInfo,
    KernelOffsets, Origin, PathInfo, ReportPolicy, SizeTruth, Tail, STACK_BYTES,
    SUSPICIOUS_WAKE_GAP_NS, TAIL_START_MASK,
};

use crate::inflight::{begin, end_call, live_call, unseen_entry, Inflight};
use crate::kread::{read_user, read_user_two, Fault, Memory};
use crate::maps::{
    add, config, offsets, policy, types, want_all, COUNTERS, COUNTS, EVENTS, LATENCY, READER,
    RING_BYTES, SCRATCH, SIZE_TRUTH,
};
use crate::names;
use crate::task::{self, FileSide};

/// Record bytes between two looks at whether the reader is asleep (see
/// [`wake_flags`]): a few hundred records, so a look costs each record little.
const CHECK_BYTES: u64 = 128 * 1024;

/// Waiting bytes that make a sleeping reader worth waking: an eighth of
/// the ring, a batch worth the wake-up that leaves room for its latency.
const WAKE_BACKLOG: u64 = RING_BYTES as u64 / 8;

/// The six arguments of `copy_file_range(2)`.
pub struct SyscallArgs {
    pub fd_in: i64,
    pub off_in: u64,
    pub fd_out: i64,
    pub off_out: u64,
    pub len: u64,
    pub flags: u64,
}

impl SyscallArgs {
    /// From six raw argument words in syscall order.
    #[inline(always)]
    pub fn from_words(w: [u64; 6]) -> Self {
        SyscallArgs {
            fd_in: w[0] as i32 as i64,
            off_in: w[1],
            fd_out: w[2] as i32 as i64,
            off_out: w[3],
            len: w[4],
            flags: w[5],
        }
    }
}

fn now() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Zero, in a form the compiler cannot see through: it merges neighbouring
/// zero stores into a call to a byte-at-a-time memset subprogram (a
/// 16-byte one cost entry some 20 ns).
#[inline(always)]
fn unseen_zero() -> i64 {
    let zero = 0i64;
    // SAFETY: a volatile read of a local variable.
    unsafe { core::ptr::read_volatile(&zero) }
}

/// Entry of the system call (tracepoint or fentry on the syscall wrapper).
#[inline(always)]
pub fn enter_syscall<M: Memory>(args: &SyscallArgs) {
    let (cfg, off) = (config(), offsets());
    if !task::followed::<M>(cfg, off) {
        return;
    }
    let start_ns = now();
    let mut st = 0u8;
    if cfg.backend == Backend::Fentry as u8 {
        st |= status::VFS_KNOWN;
    }
    let sides = task::files_of::<M>(args.fd_in, args.fd_out, off).and_then(|(fi, fo)| {
        Ok((
            fi,
            fo,
            task::file_side::<M>(fi, off)?,
            task::file_side::<M>(fo, off)?,
        ))
    });
    let (file_in, file_out, side_in, side_out) = match sides {
        Ok(s) => s,
        Err(Fault) => {
            st |= status::READ_FAULT;
            (0, 0, FileSide::default(), FileSide::default())
        }
    };
    if args.off_in != 0 {
        st |= status::OFF_IN_GIVEN;
    }
    if args.off_out != 0 {
        st |= status::OFF_OUT_GIVEN;
    }
    begin(Inflight {
        start_ns,
        file_in,
        file_out,
        side_in,
        side_out,
        off_in_ptr: args.off_in,
        off_out_ptr: args.off_out,
        pos_in: unseen_zero(),
        pos_out: unseen_zero(),
        len: args.len,
        fd_in: args.fd_in as i32,
        fd_out: args.fd_out as i32,
        flags: args.flags as u32,
        owner: 0,
        origin: Origin::Syscall as u8,
        status: st,
        live: 1,
        gaps: 0,
        _pad_word: 0,
    });
}

/// Entry of `vfs_copy_file_range`: notes that a tracked syscall reached the
/// VFS, or records a call from an in-kernel caller (nfsd, overlayfs…).
#[inline(always)]
pub fn enter_vfs<M: Memory>(
    file_in: u64,
    pos_in: i64,
    file_out: u64,
    pos_out: i64,
    len: u64,
    flags: u32,
) {
    if let Some(rec) = live_call() {
        // The syscall passes the positions it read (`*off`, or `f_pos`) by
        // value: the record keeps them, and exit reads no user memory. Only
        // the first time: a filesystem may call in again for its own files
        // (overlayfs).
        // SAFETY: this thread's own record (see begin()).
        unsafe {
            if (*rec).status & status::VFS_REACHED == 0 {
                (*rec).pos_in = pos_in;
                (*rec).pos_out = pos_out;
                (*rec).status |= status::VFS_REACHED;
            }
        }
        return;
    }
    let (cfg, off) = (config(), offsets());
    if !task::followed::<M>(cfg, off) {
        return;
    }
    let start_ns = now();
    let mut st =
        status::OFF_IN_GIVEN | status::OFF_OUT_GIVEN | status::VFS_KNOWN | status::VFS_REACHED;
    let sides = task::file_side::<M>(file_in, off)
        .and_then(|i| Ok((i, task::file_side::<M>(file_out, off)?)));
    let (side_in, side_out) = match sides {
        Ok(s) => s,
        Err(Fault) => {
            st |= status::READ_FAULT;
            (FileSide::default(), FileSide::default())
        }
    };
    begin(Inflight {
        start_ns,
        file_in,
        file_out,
        side_in,
        side_out,
        off_in_ptr: 0,
        off_out_ptr: 0,
        pos_in,
        pos_out,
        len,
        fd_in: -1,
        fd_out: -1,
        flags,
        owner: 0,
        origin: Origin::Kernel as u8,
        status: st,
        live: 1,
        gaps: 0,
        _pad_word: 0,
    });
}

/// Whether the record holds the call's entry positions, as
/// `vfs_copy_file_range` was passed them: a call that reached the VFS
/// under the fentry back-end (an in-kernel caller's always has).
#[inline(always)]
fn positions_by_value(rec: &Inflight) -> bool {
    rec.status & status::VFS_REACHED != 0
}

/// A position at entry: as passed by value when the record has it, else
/// from its state at exit: the syscall advances `*off` (when given) or
/// `f_pos` by what it copied, and only then.
#[inline(always)]
fn entry_pos<M: Memory>(
    rec: &Inflight,
    ptr: u64,
    file: u64,
    by_value: i64,
    ret: i64,
    st: &mut u8,
    off: &KernelOffsets,
) -> i64 {
    if positions_by_value(rec) {
        return by_value;
    }
    let moved = moved(ret);
    let now = if ptr != 0 {
        read_user::<i64>(ptr).inspect_err(|_| *st |= status::OFF_FAULT)
    } else if file != 0 {
        M::read::<i64>(M::view(file, types().file), off.file_f_pos)
    } else {
        Ok(0)
    };
    match now {
        Ok(p) => p.saturating_sub(moved),
        Err(Fault) => 0,
    }
}

/// Both positions at entry, for a reported call (the facts need at most
/// the source's, passed as `known_in` when they did): with one user-memory
/// read when the caller keeps both offsets side by side.
#[inline(always)]
fn reported_positions<M: Memory>(
    rec: &Inflight,
    known_in: Option<i64>,
    ret: i64,
    st: &mut u8,
    off: &KernelOffsets,
) -> (i64, i64) {
    if positions_by_value(rec) {
        return (rec.pos_in, rec.pos_out);
    }
    if known_in.is_none() && rec.off_in_ptr != 0 && rec.off_out_ptr != 0 {
        if let Some((now_in, now_out)) = read_user_two(rec.off_in_ptr, rec.off_out_ptr) {
            let moved = moved(ret);
            return (now_in.saturating_sub(moved), now_out.saturating_sub(moved));
        }
    }
    let read_pos = match known_in {
        Some(p) => p,
        None => entry_pos::<M>(rec, rec.off_in_ptr, rec.file_in, rec.pos_in, ret, st, off),
    };
    let pos_out = entry_pos::<M>(
        rec,
        rec.off_out_ptr,
        rec.file_out,
        rec.pos_out,
        ret,
        st,
        off,
    );
    (read_pos, pos_out)
}

/// What a call moved its positions by.
#[inline(always)]
fn moved(ret: i64) -> i64 {
    if ret > 0 {
        ret
    } else {
        0
    }
}

/// A superblock's magic (0 for none).
#[inline(always)]
fn magic_of<M: Memory>(sb: u64, off: &KernelOffsets) -> Result<u64, Fault> {
    if sb == 0 {
        return Ok(0);
    }
    M::read(M::view(sb, types().super_block), off.sb_s_magic)
}

/// Adds a finished call to `COUNTS`.
#[inline(always)]
fn count(key: &CountKey, len: u64, ret: i64) {
    let copied = if ret > 0 { ret as u64 } else { 0 };
    if let Some(v) = COUNTS.get_ptr_mut(key) {
        // SAFETY: a per-CPU value: no other CPU writes it.
        unsafe {
            (*v).calls += 1;
            // Saturate: "copy everything" requests (cp asks for ~2^63) would wrap.
            (*v).bytes_requested = (*v).bytes_requested.saturating_add(len);
            (*v).bytes_copied += copied;
        }
    } else {
        let v = CountVal {
            calls: 1,
            bytes_requested: len,
            bytes_copied: copied,
        };
        if COUNTS.insert(key, v, 0).is_err() {
            add(&COUNTERS, counter::COUNTS_FULL, 1);
        }
    }
}

/// Completes the current thread's in-flight call of `origin` with `ret`.
#[inline(always)]
pub fn finish<C: EbpfContext, M: Memory>(ctx: &C, ret: i64, origin: Origin) {
    let rec = match end_call(origin) {
        Some(rec) => rec,
        // Refused before the syscall ran (seccomp): counted and shown as the
        // failure it is, with what exit alone knows.
        None if matches!(origin, Origin::Syscall) && ret < 0 => match unseen_entry(now()) {
            Some(rec) => rec,
            None => return,
        },
        None => return,
    };
    // SAFETY: this CPU's copy of the call (see end_call()), untouched until
    // this program returns.
    let rec = unsafe { &*rec };
    let end_ns = now();
    let off = offsets();
    let mut st = rec.status;
    let mut outcome = CallOutcome {
        len: rec.len,
        ret,
        read_pos: 0,
        size_in: rec.side_in.size,
        in_present: rec.file_in != 0,
        out_present: rec.file_out != 0,
        same_fs: rec.side_in.sb == rec.side_out.sb,
        max_per_call: config().max_rw_count,
    };
    // The source position costs a user-memory read when the caller passed
    // `off_in` and the VFS did not show it (see positions_by_value()): only
    // short copies need it for their facts, and only reported calls for
    // their record.
    let mut read_pos = None;
    if outcome.needs_read_pos() {
        outcome.read_pos = entry_pos::<M>(
            rec,
            rec.off_in_ptr,
            rec.file_in,
            rec.pos_in,
            ret,
            &mut st,
            off,
        );
        read_pos = Some(outcome.read_pos);
    }
    let (sb_in, sb_out) = (rec.side_in.sb, rec.side_out.sb);
    let magics = magic_of::<M>(sb_in, off).and_then(|i| Ok((i, magic_of::<M>(sb_out, off)?)));
    let (magic_in, magic_out) = match magics {
        Ok(m) => m,
        Err(Fault) => {
            st |= status::READ_FAULT;
            (0, 0)
        }
    };
    let facts = outcome.facts();
    let key = CountKey {
        magic_in,
        magic_out,
        errno: if ret < 0 { (-ret) as u32 } else { 0 },
        facts,
        cgroup_id: if config().count_by_cgroup != 0 {
            task::cgroup_id::<M>(task::current::<M>(), off)
        } else {
            0
        },
    };
    count(&key, rec.len, ret);
    let took = end_ns.saturating_sub(rec.start_ns);
    add(&LATENCY, latency::bucket(took), 1);
    add(&LATENCY, latency::SUM, took);

    let policy = policy();
    let idx = ReportPolicy::index(facts, ret < 0);
    let truth = if policy.is_uniform(idx) {
        SizeTruth::Content as u8
    } else {
        // SAFETY: a read-only lookup in a map userspace filled at load.
        unsafe { SIZE_TRUTH.get(magic_in) }
            .copied()
            .unwrap_or(SizeTruth::Content as u8)
    };
    let suspicious = policy.is_suspicious(truth, idx);
    if suspicious || want_all() {
        let (read_pos, pos_out) = reported_positions::<M>(rec, read_pos, ret, &mut st, off);
        let call = Finished {
            rec,
            ret,
            end_ns,
            read_pos,
            pos_out,
            magic: [magic_in, magic_out],
            sb: [sb_in, sb_out],
            facts,
            status: match (suspicious, config().stacks != 0) {
                (true, true) => st | status::SUSPICIOUS | status::STACK,
                (true, false) => st | status::SUSPICIOUS,
                (false, _) => st,
            },
        };
        report::<C, M>(ctx, &call, off);
    }
}

/// A finished call on its way to the ring buffer.
struct Finished<'a> {
    rec: &'a Inflight,
    ret: i64,
    end_ns: u64,
    read_pos: i64,
    pos_out: i64,
    magic: [u64; 2],
    sb: [u64; 2],
    facts: u32,
    status: u8,
}

/// Writes the full record of `call` and sends it to the ring buffer.
///
/// The record is built in a per-CPU slot and copied into the ring buffer
/// with bpf_ringbuf_output, not written into a bpf_ringbuf_reserve'd slot:
/// before 6.2 the verifier cannot prune states that hold a ring-buffer
/// reservation (each path gets its own reference id), and the description
/// has too many paths for 5.10 and 6.1 to verify that way. Where it could
/// (6.2+), writing in place measured no faster here: the cost is in
/// touching the ring's cold cache lines, which the copy does once either way.
/// The record ends where its tail does ([`Event::record_len`]): the ring
/// copy is paid per byte, in cache lines the reader has yet to read.
#[inline(always)]
fn report<C: EbpfContext, M: Memory>(ctx: &C, call: &Finished, off: &KernelOffsets) {
    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    describe::<C, M>(ctx, call, off, ev);
    // SAFETY: the slot is fully written and stays this CPU's.
    let len = unsafe { (*ev).record_len() };
    let wake = wake_flags(
        call.status & status::SUSPICIOUS != 0,
        len as u64,
        call.end_ns,
    );
    // SAFETY: `len` <= size_of::<Event>() bytes of the slot, all written.
    let record = unsafe { core::slice::from_raw_parts(ev.cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(record, u64::from(wake)).is_err() {
        add(&COUNTERS, counter::LOST, 1);
    }
}

/// How a record wakes the reader.
///
/// A suspicious call wakes it at once, unless another did less than
/// [`SUSPICIOUS_WAKE_GAP_NS`] before (1 ms: at most a thousand wake-ups
/// a second in a flood, and a lone call still shows at once): a reader that keeps up has read
/// everything by the next call, so the ring's adaptive wake-up (flags 0)
/// still woke it once per call, which made a flood of suspicious calls
/// cost some 3 µs more each here. The calls inside the gap are read with
/// the next wake-up or by the daemon's short look after one.
///
/// Other calls wake it only when it seems asleep with a batch waiting.
/// Each [`CHECK_BYTES`] of records, the record that completes them asks
/// the ring how far the reader has read and how much is waiting, and
/// wakes it when [`WAKE_BACKLOG`] or more is waiting, it read nothing
/// since the last look, and it was not woken at that point already. So a
/// sleeping reader is woken once the backlog passes the mark (by at most
/// one look), and a busy one, which is not asleep, at most once per pause.
///
/// A wake-up costs a self-IPI (a VM exit under virtualization), and asking
/// the ring costs a helper call: both are too dear to pay per record. The
/// daemon also drains on a timer.
#[inline(always)]
fn wake_flags(suspicious: bool, len: u64, now_ns: u64) -> u32 {
    let Some(w) = READER.get_ptr_mut(0) else {
        return if suspicious { 0 } else { BPF_RB_NO_WAKEUP };
    };
    // SAFETY: the one slot of READER. CPUs update it without atomics: a
    // lost update only delays a look or adds a wake-up, which the daemon's
    // timer bounds.
    unsafe {
        if suspicious {
            // Forced: records sent without a wake-up may be waiting ahead
            // of this one, which the adaptive wake-up would not wake for.
            if now_ns.wrapping_sub((*w).suspicious_woken_ns) < SUSPICIOUS_WAKE_GAP_NS {
                return BPF_RB_NO_WAKEUP;
            }
            (*w).suspicious_woken_ns = now_ns;
            return BPF_RB_FORCE_WAKEUP;
        }
        (*w).sent += len;
        if (*w).sent < CHECK_BYTES {
            return BPF_RB_NO_WAKEUP;
        }
        (*w).sent = 0;
        // Plus one, so that 0 can mean "never woken".
        let read_to = EVENTS.query(u64::from(BPF_RB_CONS_POS)) + 1;
        let stalled = read_to == (*w).read_to && read_to != (*w).woken_at;
        (*w).read_to = read_to;
        if stalled && EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKE_BACKLOG {
            (*w).woken_at = read_to;
            return BPF_RB_FORCE_WAKEUP;
        }
    }
    BPF_RB_NO_WAKEUP
}

/// Writes every field of the record at `ev` that userspace reads.
#[inline(always)]
fn describe<C: EbpfContext, M: Memory>(
    ctx: &C,
    call: &Finished,
    off: &KernelOffsets,
    ev: *mut Event,
) {
    let rec = call.rec;
    let task = task::current::<M>();
    let (pid_tgid, uid_gid) = task::ids::<M>(task, off);
    let stack = call.status & status::STACK != 0;
    // SAFETY: `ev` points to this CPU's slot of size_of::<Event>() bytes,
    // which no other program touches until it is sent; every field
    // userspace reads is written through raw pointers. The describing
    // subprograms mark read faults in the record's status, so their exits
    // all look alike to the verifier.
    unsafe {
        (*ev).start_ns = rec.start_ns;
        (*ev).end_ns = call.end_ns;
        (*ev).cgroup_id = task::cgroup_id::<M>(task, off);
        (*ev).len = rec.len;
        (*ev).off_in = call.read_pos;
        (*ev).off_out = call.pos_out;
        (*ev).ret = call.ret;
        (*ev).pid = (pid_tgid >> 32) as u32;
        (*ev).tid = pid_tgid as u32;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).fd_in = rec.fd_in;
        (*ev).fd_out = rec.fd_out;
        (*ev).flags = rec.flags;
        (*ev).facts = call.facts;
        (*ev).backend = config().backend;
        (*ev).origin = rec.origin;
        (*ev).status = call.status;
        (*ev).gaps = rec.gaps;
        let status = core::ptr::addr_of_mut!((*ev).status);
        // The stack, when taken, comes first in the tail; the walks follow.
        let tail = core::ptr::addr_of_mut!((*ev).tail);
        (*tail).used = if stack { STACK_BYTES as u16 } else { 0 };
        (*tail)._pad = 0;
        (*tail)._pad_word = 0;
        // Straight into the record, as two words (the field is 8-aligned):
        // a byte array has alignment 1, so a copy through the stack costs a
        // load and a store per byte.
        let comm = core::ptr::addr_of_mut!((*ev).comm).cast();
        if M::read_16(task, off.task_comm, comm).is_err() {
            mark_fault(status);
        }
        (*ev).mnt_ns = mnt_ns_of_task::<M>(task, off).unwrap_or(0);
        (*ev).ppid = parent::<M>(task, ev);
        let input = Side {
            file: rec.file_in,
            inode: rec.side_in.inode,
            sb: call.sb[0],
            magic: call.magic[0],
            size: rec.side_in.size,
            pos: call.read_pos,
        };
        (*ev).files[0].f_flags = describe_file::<M>(
            &input,
            core::ptr::addr_of_mut!((*ev).files[0]),
            status,
            tail,
        );
        let output = Side {
            file: rec.file_out,
            inode: rec.side_out.inode,
            sb: call.sb[1],
            magic: call.magic[1],
            size: rec.side_out.size,
            pos: call.pos_out,
        };
        (*ev).files[1].f_flags = describe_file::<M>(
            &output,
            core::ptr::addr_of_mut!((*ev).files[1]),
            status,
            tail,
        );
        exe::<M>(task, core::ptr::addr_of_mut!((*ev).exe), status, tail);
        let code = if stack {
            code_range::<M>(task, off)
        } else {
            (0, 0)
        };
        // Volatile: (0, 0) would otherwise become a memset call.
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).code_start), code.0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).code_end), code.1);
        (*ev).stack_bytes = if stack {
            bpf_get_stack(
                ctx.as_ptr(),
                core::ptr::addr_of_mut!((*tail).bytes).cast(),
                STACK_BYTES as u32,
                u64::from(BPF_F_USER_STACK),
            ) as i32
        } else {
            0
        };
        if *status & status::READ_FAULT != 0 {
            add(&COUNTERS, counter::READ_FAULTS, 1);
        }
    }
}

/// Where the task's executable code is mapped (zeros when unknown).
#[inline(always)]
fn code_range<M: Memory>(task: u64, off: &KernelOffsets) -> (u64, u64) {
    let Ok(mm) = M::read::<u64>(task, off.task_mm) else {
        return (0, 0);
    };
    if mm == 0 {
        return (0, 0);
    }
    let start = M::read::<u64>(mm, off.mm_start_code).unwrap_or(0);
    let end = M::read::<u64>(mm, off.mm_end_code).unwrap_or(0);
    (start, end)
}

/// Marks a read fault in the record's status byte.
#[inline(always)]
unsafe fn mark_fault(status: *mut u8) {
    // SAFETY: `status` points into the record's slot (see report()).
    unsafe { *status |= status::READ_FAULT };
}

/// Writes the parent's comm; returns its pid (for the caller to store: a
/// subprogram's result must be used, or the compiler drops it and the
/// return register may still point into the subprogram's stack, which the
/// verifier refuses).
#[inline(never)]
unsafe fn parent<M: Memory>(task: u64, ev: *mut Event) -> u32 {
    let off = offsets();
    // SAFETY: the record's slot (see report()).
    let comm = unsafe { core::ptr::addr_of_mut!((*ev).parent_comm) };
    let got = M::read::<u64>(task, off.task_real_parent).and_then(|p| {
        let ppid = M::read::<i32>(p, off.task_tgid)?;
        // Straight into the record (see describe() for why).
        M::read_16(p, off.task_comm, comm.cast())?;
        Ok(ppid)
    });
    match got {
        Ok(ppid) => ppid as u32,
        Err(Fault) => {
            // SAFETY: plain field writes into the record's slot (see report()).
            unsafe {
                *comm.cast::<u8>() = 0;
                mark_fault(core::ptr::addr_of_mut!((*ev).status));
            }
            0
        }
    }
}

/// Inode number of a task's mount namespace.
#[inline(always)]
fn mnt_ns_of_task<M: Memory>(task: u64, off: &KernelOffsets) -> Result<u32, Fault> {
    let nsproxy: u64 = M::read(task, off.task_nsproxy)?;
    if nsproxy == 0 {
        return Ok(0);
    }
    let ns: u64 = M::read(nsproxy, off.nsproxy_mnt_ns)?;
    if ns == 0 {
        return Ok(0);
    }
    M::read(ns, off.mnt_ns_inum)
}

/// Where a file lives: (ino, dev, mount id, mount namespace), and its dentry.
#[inline(always)]
fn location<M: Memory>(
    file: u64,
    inode: u64,
    sb: u64,
    off: &KernelOffsets,
) -> Result<([u64; 2], [u32; 2], u64), Fault> {
    let ty = types();
    let file = M::view(file, ty.file);
    let vfsmnt: u64 = M::read(file, off.file_f_path_mnt)?;
    let dentry: u64 = M::read(file, off.file_f_path_dentry)?;
    let ino: u64 = if inode != 0 {
        M::read(M::view(inode, ty.inode), off.inode_i_ino)?
    } else {
        0
    };
    let dev: u32 = if sb != 0 {
        M::read(M::view(sb, ty.super_block), off.sb_s_dev)?
    } else {
        0
    };
    let (mnt_id, mnt_ns) = if vfsmnt != 0 {
        // container_of: the vfsmount is a member of its struct mount.
        let mount = M::view(vfsmnt - u64::from(off.mount_mnt), ty.mount);
        let id: i32 = M::read(mount, off.mount_mnt_id)?;
        let ns: u64 = M::read(mount, off.mount_mnt_ns)?;
        let inum: u32 = if ns != 0 {
            M::read(ns, off.mnt_ns_inum)?
        } else {
            0
        };
        (id as u32, inum)
    } else {
        (0, 0)
    };
    Ok(([ino, u64::from(dev)], [mnt_id, mnt_ns], dentry))
}

/// Fills `out` with where `file` lives: inode, device, mount, namespace,
/// and the path, whose names go at the end of `tail`.
#[inline(always)]
unsafe fn describe_path<M: Memory>(
    file: u64,
    inode: u64,
    sb: u64,
    out: *mut PathInfo,
    status: *mut u8,
    tail: *mut Tail,
) {
    let names = core::ptr::addr_of_mut!((*out).names);
    let found = if file == 0 {
        Ok(([0, 0], [0, 0], 0))
    } else {
        location::<M>(file, inode, sb, offsets())
    };
    let ([ino, dev], [mnt_id, mnt_ns], dentry) = match found {
        Ok(l) => l,
        Err(Fault) => {
            // SAFETY: `status` points into the record's slot.
            unsafe { mark_fault(status) };
            ([0, 0], [0, 0], 0)
        }
    };
    // SAFETY: plain field writes into the record's slot (see report()).
    unsafe {
        (*out).ino = ino;
        (*out).dev = dev as u32;
        (*out).mnt_id = mnt_id;
        (*out).mnt_ns = mnt_ns;
        (*out)._pad = 0;
    }
    // SAFETY: field writes into the record's slot. The mask is a no-op on
    // what the kernel writes (see TAIL_START_MASK) and bounds the walk's
    // writes for the verifier; see walk() for why it returns the count.
    unsafe {
        let start = bound(
            usize::from(core::ptr::read_volatile(core::ptr::addr_of!((*tail).used))),
            TAIL_START_MASK,
        );
        (*names).start = start as u16;
        (*names)._pad = [0; 2];
        let bytes = core::ptr::addr_of_mut!((*tail).bytes)
            .cast::<u8>()
            .add(start);
        (*names).count = names::walk::<M>(dentry, names, bytes);
        (*tail).used = start as u16 + (*names).used;
    }
}

/// What the call already knows of one side of the copy.
#[derive(Clone, Copy)]
struct Side {
    file: u64,
    inode: u64,
    sb: u64,
    magic: u64,
    size: i64,
    pos: i64,
}

/// The file's open flags, ops, mode and filesystem type name.
#[inline(always)]
fn file_details<M: Memory>(
    side: &Side,
    fstype: *mut [u64; 2],
    off: &KernelOffsets,
) -> Result<(u32, u64, u64, u16), Fault> {
    let ty = types();
    let file = M::view(side.file, ty.file);
    let f_flags: u32 = M::read(file, off.file_f_flags)?;
    let fop: u64 = M::read(file, off.file_f_op)?;
    let (copy_op, remap_op) = if fop != 0 {
        (
            M::read(fop, off.fop_copy_file_range)?,
            M::read(fop, off.fop_remap_file_range)?,
        )
    } else {
        (0, 0)
    };
    let mode: u16 = if side.inode != 0 {
        M::read(M::view(side.inode, ty.inode), off.inode_i_mode)?
    } else {
        0
    };
    if side.sb != 0 {
        let fstype_ptr: u64 = M::read(M::view(side.sb, ty.super_block), off.sb_s_type)?;
        if fstype_ptr != 0 {
            let name: u64 = M::read(fstype_ptr, off.fstype_name)?;
            if name != 0 {
                M::read_str_16(name, fstype);
            }
        }
    }
    Ok((f_flags, copy_op, remap_op, mode))
}

/// Fills `fi` with one side of the copy but its open flags, which it
/// returns for the caller to store (see parent() for why). A subprogram:
/// BPF passes at most five arguments, hence `Side`.
#[inline(never)]
unsafe fn describe_file<M: Memory>(
    side: &Side,
    fi: *mut FileInfo,
    status: *mut u8,
    tail: *mut Tail,
) -> u32 {
    // SAFETY: plain field writes into the record's slot (see report()).
    unsafe {
        (*fi).present = u8::from(side.file != 0);
        (*fi).size = side.size;
        (*fi).pos = side.pos;
        (*fi).magic = side.magic;
        (*fi)._pad = 0;
        // Read up to its NUL; an empty name when there is none.
        (*fi).fstype[0] = 0;
    }
    let details = if side.file == 0 {
        Ok((0, 0, 0, 0))
    } else {
        file_details::<M>(
            side,
            core::ptr::addr_of_mut!((*fi).fstype).cast(),
            offsets(),
        )
    };
    let (f_flags, copy_op, remap_op, mode) = match details {
        Ok(d) => d,
        Err(Fault) => {
            // SAFETY: `status` points into the record's slot.
            unsafe { mark_fault(status) };
            (0, 0, 0, 0)
        }
    };
    // SAFETY: plain field writes into the record's slot (see report()).
    // Volatile: two zeros side by side would become a memset call.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*fi).copy_op), copy_op);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*fi).remap_op), remap_op);
        (*fi).mode = mode;
    }
    describe_path::<M>(
        side.file,
        side.inode,
        side.sb,
        core::ptr::addr_of_mut!((*fi).path),
        status,
        tail,
    );
    f_flags
}

/// Fills `out` with the task's executable (`mm->exe_file`).
#[inline(always)]
unsafe fn exe<M: Memory>(task: u64, out: *mut PathInfo, status: *mut u8, tail: *mut Tail) {
    let off = offsets();
    let found = M::read::<u64>(task, off.task_mm).and_then(|mm| {
        let file: u64 = if mm != 0 {
            M::read(mm, off.mm_exe_file)?
        } else {
            0
        };
        let side = task::file_side::<M>(file, off)?;
        Ok((file, side.inode, side.sb))
    });
    let (file, inode, sb) = match found {
        Ok(f) => f,
        Err(Fault) => {
            // SAFETY: `status` points into the record's slot.
            unsafe { mark_fault(status) };
            (0, 0, 0)
        }
    };
    describe_path::<M>(file, inode, sb, out, status, tail);
}
