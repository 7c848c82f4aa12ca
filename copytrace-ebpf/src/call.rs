//! One call from entry to exit: a small in-flight record at entry, then at
//! exit the facts, the exact count, the latency, and (only when someone
//! asked to see the call) the full record, described in a per-CPU slot
//! ([`crate::describe`]) and copied into the ring buffer ([`crate::report`]).

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    EbpfContext,
};
use copytrace_common::{
    counter, latency, setting, status, Backend, CallOutcome, CountKey, CountVal, KernelOffsets,
    Origin, ReportPolicy, SizeTruth, COUNTS_CAPACITY,
};

use crate::counters::{add, COUNTERS};
use crate::describe::Finished;
use crate::globals::{config, offsets, policy, types};
use crate::inflight::{begin, begin_nested, end_call, live_call, unseen_entry, Inflight, Within};
use crate::kread::{read_user, read_user_two, Fault, Memory};
use crate::report::report;
use crate::task::{self, FileSide};

/// Run-time settings written by the daemon (see `copytrace_common::setting`).
#[map]
pub static SETTINGS: Array<u32> = Array::with_max_entries(setting::COUNT, 0);

/// `s_magic` → `SizeTruth` for filesystems whose sizes are not their
/// content; the others are taken at their word.
#[map]
pub static SIZE_TRUTH: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

/// Exact per-outcome call counts, independent of what is reported.
#[map]
pub static COUNTS: PerCpuHashMap<CountKey, CountVal> =
    PerCpuHashMap::with_max_entries(COUNTS_CAPACITY, 0);

/// Call durations, log2 buckets and their sum (see `copytrace_common::latency`).
#[map]
pub static LATENCY: PerCpuArray<u64> = PerCpuArray::with_max_entries(latency::SLOTS, 0);

/// Whether anyone wants every call reported right now.
#[inline(always)]
pub fn want_all() -> bool {
    SETTINGS.get(setting::WANT_ALL).is_some_and(|v| *v != 0)
}

/// The six arguments of `copy_file_range(2)`.
pub struct SyscallArgs {
    pub fd_in: i64,
    pub off_in: u64,
    pub fd_out: i64,
    pub off_out: u64,
    pub len: u64,
    pub flags: u64,
    /// The caller's user registers (`struct pt_regs *`), when the entry
    /// program has them (0 on the tracepoint).
    pub regs: u64,
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
            regs: 0,
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
        regs: args.regs,
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
        nested: 0,
        within: Within::none(),
    });
}

/// Entry of `vfs_copy_file_range`: notes that a tracked syscall reached the
/// VFS, or records a call from an in-kernel caller (nfsd), or one a
/// filesystem makes for its own files inside the thread's call (overlayfs
/// copying the real files under an overlay).
#[inline(always)]
pub fn enter_vfs<M: Memory>(
    file_in: u64,
    pos_in: i64,
    file_out: u64,
    pos_out: i64,
    len: u64,
    flags: u32,
) {
    let mut within = Within::none();
    let live = live_call();
    if let Some(rec) = live {
        // SAFETY: this thread's own record (see begin()).
        unsafe {
            // The syscall passes the positions it read (`*off`, or `f_pos`)
            // by value: the record keeps them, and exit reads no user memory.
            if (*rec).status & status::VFS_REACHED == 0 {
                (*rec).pos_in = pos_in;
                (*rec).pos_out = pos_out;
                (*rec).status |= status::VFS_REACHED;
                return;
            }
            within = Within {
                start_ns: (*rec).start_ns,
                fd_in: (*rec).fd_in,
                fd_out: (*rec).fd_out,
            };
        }
    } else if !task::followed::<M>(config(), offsets()) {
        return;
    }
    let off = offsets();
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
    let rec = Inflight {
        start_ns,
        file_in,
        file_out,
        side_in,
        side_out,
        off_in_ptr: 0,
        off_out_ptr: 0,
        regs: 0,
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
        nested: 0,
        within,
    };
    if let Some(outer) = live {
        begin_nested(outer, &rec);
    } else {
        begin(rec);
    }
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

/// Completes the current thread's in-flight call of `origin` with `ret`;
/// a reported call's stack gets its mappings when `MAPPINGS` (see
/// [`crate::mappings`]).
#[inline(always)]
pub fn finish<C: EbpfContext, M: Memory, const MAPPINGS: bool>(ctx: &C, ret: i64, origin: Origin) {
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
        origin: rec.origin,
        _pad: [0; 7],
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
        report::<C, M, MAPPINGS>(ctx, &call, off);
    }
}
