//! Each thread's call between entry and exit.
//!
//! A thread keeps its record in a slot of the `THREAD_SLOTS` array, at its
//! thread id modulo the array's size, once it holds that slot. An array
//! lookup is a few inlined instructions, where a hash lookup by thread id
//! measured some 75 ns, paid at entry and again at exit. A thread claims a
//! free slot at its first call by creating the slot's key in `SLOT_CLAIMS`
//! (an insert that fails when the key exists, so one thread wins), and
//! frees it when it exits: one insert and one delete per thread that ever
//! copies, none per call. A thread whose slot another thread holds keeps its
//! record in the `INFLIGHT` hash for the length of one call: the hash is
//! then full only while 4096 such threads are inside copy_file_range at once.
//! A call a filesystem makes for its own files while the thread's call is
//! in flight (overlayfs) has a record of its own in `NESTED`.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use copytrace_common::{counter, gap, thread_slot, Origin, INFLIGHT_OVERFLOW, THREAD_SLOT_COUNT};

use crate::counters::{add, COUNTERS};
use crate::task::FileSide;

/// What entry leaves for exit: what only entry can know, and nothing more.
#[repr(C)]
pub struct Inflight {
    pub start_ns: u64,
    pub file_in: u64,
    pub file_out: u64,
    /// Inodes, superblocks and advertised sizes at entry (a copy can grow
    /// its own source).
    pub side_in: FileSide,
    pub side_out: FileSide,
    /// User pointers of a syscall's offsets (their values are read at exit).
    pub off_in_ptr: u64,
    pub off_out_ptr: u64,
    /// The caller's user registers (`struct pt_regs *`) when entry had
    /// them (the fentry syscall wrapper's argument), else 0.
    pub regs: u64,
    /// Positions `vfs_copy_file_range` was passed by value (see
    /// `call::positions_by_value`); zero until then.
    pub pos_in: i64,
    pub pos_out: i64,
    pub len: u64,
    pub fd_in: i32,
    pub fd_out: i32,
    pub flags: u32,
    /// The thread id that holds this array slot (0: free); unused in the
    /// hash.
    pub owner: u32,
    pub origin: u8,
    pub status: u8,
    /// Non-zero from entry until exit. A thread's record stays where it is
    /// between its calls (an update in place costs far less than an insert
    /// and a delete per call) and goes when the thread exits.
    pub live: u8,
    /// Bits of [`copytrace_common::gap`]: what copytrace did not see.
    pub gaps: u8,
    /// Non-zero while a call nested in this one has its record in
    /// [`NESTED`]: only then does exit look there, so calls without one
    /// (all but overlayfs's) pay no hash lookup. A scalar, not padding
    /// bytes: the compiler turns a zeroed byte array into a call to a
    /// byte-at-a-time memset subprogram.
    pub nested: u32,
    /// A nested call's link to the call it runs inside (see [`Within`]).
    pub within: Within,
}

/// The call a nested one runs inside: its entry time and descriptors,
/// which with the thread id name it (none: zero time, descriptors -1).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Within {
    pub start_ns: u64,
    pub fd_in: i32,
    pub fd_out: i32,
}

impl Within {
    /// A call that runs inside no other.
    #[inline(always)]
    pub fn none() -> Self {
        Within {
            start_ns: 0,
            fd_in: -1,
            fd_out: -1,
        }
    }
}

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

/// Each thread's nested call, keyed by thread id: a filesystem's own
/// `vfs_copy_file_range` made while the thread's call is in flight
/// (overlayfs copying the real files under an overlay). Written at the
/// nested entry, removed at its exit: only overlay copies pay for it.
#[map]
pub static NESTED: HashMap<u32, Inflight> = HashMap::with_max_entries(INFLIGHT_OVERFLOW, 0);

/// Per-CPU copy of the call an exit program is finishing (see
/// `inflight::end_call`).
#[map]
pub static ENDING: PerCpuArray<Inflight> = PerCpuArray::with_max_entries(1, 0);

fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// The current thread's array slot: the one it holds, or (with `take`) a
/// free one it claims now.
#[inline(always)]
fn own_slot(tid: u32, take: bool) -> Option<*mut Inflight> {
    if tid == 0 {
        return None;
    }
    let idx = thread_slot(tid);
    let slot = THREAD_SLOTS.get_ptr_mut(idx)?;
    // SAFETY: a map value; its owner word is only ever written whole.
    let owner = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*slot).owner)) };
    if owner == tid {
        return Some(slot);
    }
    if !take
        || owner != 0
        || SLOT_CLAIMS
            .insert(idx, tid, u64::from(BPF_NOEXIST))
            .is_err()
    {
        return None;
    }
    // SAFETY: this thread won the slot's claim; no other thread writes it
    // until this one frees it.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).owner), tid) };
    Some(slot)
}

/// Records a call's entry (every entry path ends here): in place in the
/// thread's record when it has one, else in a new one.
#[inline(always)]
pub fn begin(mut rec: Inflight) {
    let tid = tid();
    // The copy rewrites the owner word with the value it holds.
    rec.owner = tid;
    if let Some(slot) = own_slot(tid, true).or_else(|| INFLIGHT.get_ptr_mut(tid)) {
        // SAFETY: this thread's own record: only this thread writes it,
        // and the thread-exit program frees it only after its last call.
        unsafe {
            // A nested record whose exit was never seen (probes attached
            // mid-call) goes now, or it would hold its place for good.
            if (*slot).nested != 0 {
                let _ = NESTED.remove(tid);
            }
            core::ptr::copy_nonoverlapping(&rec, slot, 1);
        }
        return;
    }
    if INFLIGHT.insert(tid, &rec, 0).is_err() {
        // Counted, not logged: a log line per call would let whoever fills
        // the map flood the journal (the alert on the counter speaks instead).
        add(&COUNTERS, counter::INFLIGHT_FULL, 1);
    }
}

/// Records the entry of a call nested in the thread's live one, `outer`.
/// One level is followed: a call nested deeper, or one the map has no room
/// for, is counted as untracked.
#[inline(always)]
pub fn begin_nested(outer: *mut Inflight, rec: &Inflight) {
    if NESTED.insert(tid(), rec, u64::from(BPF_NOEXIST)).is_err() {
        add(&COUNTERS, counter::NESTED_UNTRACKED, 1);
        return;
    }
    // SAFETY: this thread's own record (see begin()).
    unsafe { (*outer).nested = 1 };
}

/// The current thread's call between entry and exit, if it is in one.
#[inline(always)]
pub fn live_call() -> Option<*mut Inflight> {
    let tid = tid();
    // A thread that holds a slot keeps its newest record there (begin()
    // prefers it), whatever the hash still holds from before.
    let rec = own_slot(tid, false).or_else(|| INFLIGHT.get_ptr_mut(tid))?;
    // SAFETY: this thread's own record (see begin()).
    (unsafe { (*rec).live } != 0).then_some(rec)
}

/// Ends the current thread's call of `origin`, if it is in one: marks the
/// record done and returns this CPU's copy of it.
///
/// Exit reads the copy, not the record: the record is in the array or in
/// the hash, and the verifier follows a pointer into each map as its own
/// state, so reading the record in place would verify the whole exit
/// program twice (loads took twice as long, and minutes under TCG). After
/// the copy both states hold the same pointer and merge.
///
/// A nested call ends before the call it runs inside: while the thread's
/// record says it has one, the exit of `vfs_copy_file_range` is its exit.
#[inline(always)]
pub fn end_call(origin: Origin) -> Option<*const Inflight> {
    let tid = tid();
    let rec = live_call()?;
    let copy = ENDING.get_ptr_mut(0)?;
    // SAFETY: this thread's own record (see begin()) and its nested record,
    // and this CPU's slot of ENDING, which only the running exit program
    // uses.
    unsafe {
        if matches!(origin, Origin::Kernel) && (*rec).nested != 0 {
            (*rec).nested = 0;
            let nested = NESTED.get_ptr(tid)?;
            core::ptr::copy_nonoverlapping(nested, copy, 1);
            let _ = NESTED.remove(tid);
            return Some(copy);
        }
        if (*rec).origin != origin as u8 {
            return None;
        }
        core::ptr::copy_nonoverlapping(rec, copy, 1);
        (*rec).live = 0;
    }
    // A record in the overflow hash goes with its call: threads that
    // copied once and then idle must not hold the hash, or a user's idle
    // threads would leave every new thread on the machine untracked.
    if own_slot(tid, false).is_none() {
        let _ = INFLIGHT.remove(tid);
    }
    Some(copy)
}

/// A stand-in for the record of a syscall whose exit came without its
/// entry: this CPU's `ENDING` slot, holding only what exit can know (no
/// files, length or offsets). A seccomp filter that refuses
/// copy_file_range stops the call before the syscall entry tracepoint, and
/// the exit tracepoint still fires.
#[inline(always)]
pub fn unseen_entry(start_ns: u64) -> Option<*const Inflight> {
    let copy = ENDING.get_ptr_mut(0)?;
    let rec = Inflight {
        start_ns,
        file_in: 0,
        file_out: 0,
        side_in: FileSide::default(),
        side_out: FileSide::default(),
        off_in_ptr: 0,
        off_out_ptr: 0,
        regs: 0,
        pos_in: 0,
        pos_out: 0,
        len: 0,
        fd_in: -1,
        fd_out: -1,
        flags: 0,
        owner: 0,
        origin: Origin::Syscall as u8,
        status: 0,
        live: 0,
        gaps: gap::NO_ENTRY,
        nested: 0,
        within: Within::none(),
    };
    // SAFETY: this CPU's slot of ENDING, which only the running exit
    // program uses.
    unsafe { core::ptr::write(copy, rec) };
    Some(copy)
}

/// Frees an exiting thread's slot and forgets its hash record. Most
/// exiting threads never copied: a lookup, which takes no lock, spares
/// them the delete.
#[inline(always)]
pub fn thread_exit() {
    let tid = tid();
    if let Some(slot) = own_slot(tid, false) {
        // SAFETY: this thread's own slot, and this thread makes no more
        // calls. The owner word is cleared before the claim goes: a thread
        // that sees the slot free between the two fails to claim it, while
        // the other order would let a new owner's word be overwritten.
        unsafe {
            if (*slot).nested != 0 {
                let _ = NESTED.remove(tid);
            }
            (*slot).live = 0;
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).owner), 0);
        }
        let _ = SLOT_CLAIMS.remove(thread_slot(tid));
    }
    if let Some(rec) = INFLIGHT.get_ptr(tid) {
        // SAFETY: this thread's own record, as above.
        if unsafe { (*rec).nested } != 0 {
            let _ = NESTED.remove(tid);
        }
        let _ = INFLIGHT.remove(tid);
    }
}

// Every byte of the record is a named field: no implicit padding to copy.
const _: () = assert!(core::mem::size_of::<Inflight>() == 20 * 8);
