//! The caller's user stack for an unwinder: its registers at the syscall
//! and a copy of its stack from the stack pointer up, written into a
//! record's tail after the names.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_task_btf, bpf_probe_read_user, bpf_task_pt_regs},
    macros::map,
    maps::PerCpuArray,
};
use copytrace_common::{
    bound, KernelOffsets, Tail, NO_REGISTER, UNWIND_BURST, UNWIND_BYTES, UNWIND_CHUNK,
    UNWIND_CHUNKS, UNWIND_REFILL_NS, UNWIND_START_MASK,
};

use crate::globals::types;
use crate::kread::{read, Memory};

/// The caller's user registers an unwinder starts from (see
/// `KernelOffsets::regs_user`), zeros when unknown: from the `pt_regs`
/// entry saved (fentry), else from the task (tracepoint, 5.15+).
#[inline(always)]
pub fn user_regs(saved: u64, off: &KernelOffsets) -> [u64; 4] {
    let regs = if saved != 0 {
        saved
    } else if types().task_pt_regs != 0 {
        // SAFETY: both helpers take no pointer from us; the verifier
        // checks the task pointer's type.
        unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
    } else {
        0
    };
    if regs == 0 {
        return [0; 4];
    }
    let one = |i: usize| match off.regs_user[i] {
        NO_REGISTER => 0,
        at => read::<u64>(regs, at).unwrap_or(0),
    };
    [one(0), one(1), one(2), one(3)]
}

/// This CPU's budget of whole stack copies: tokens left, and when the
/// last was earned (a token bucket, see [`UNWIND_BURST`]).
#[map]
static UNWIND_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Whether this CPU may take a whole stack copy at `now`, spending a token.
#[inline(always)]
pub fn whole_copy_allowed(now: u64) -> bool {
    let Some(b) = UNWIND_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; programs on one CPU do not run at once
    // (see kread::read_span for fentry).
    unsafe {
        let (tokens, last) = ((*b)[0], (*b)[1]);
        let earned = now.saturating_sub(last) / UNWIND_REFILL_NS;
        let tokens = if tokens + earned > UNWIND_BURST {
            UNWIND_BURST
        } else {
            tokens + earned
        };
        if earned > 0 {
            (*b)[1] = last + earned * UNWIND_REFILL_NS;
        }
        if tokens == 0 {
            (*b)[0] = 0;
            return false;
        }
        (*b)[0] = tokens - 1;
        true
    }
}

/// Copies the user stack from `sp` up into the tail, after the names, a
/// page at a time up to `max` bytes (at most [`UNWIND_BYTES`]) or the
/// first page that cannot be read; returns where the copy starts and its
/// length, and moves the tail's end past it.
///
/// # Safety
///
/// `tail` must be valid for reads and writes of a whole [`Tail`] (the
/// record's), and nothing else may access it during the call.
#[inline(always)]
pub unsafe fn copy_stack(sp: u64, tail: *mut Tail, max: usize) -> (u16, u16) {
    // SAFETY: `tail` is the record's (this function's contract).
    let used = usize::from(unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*tail).used)) });
    let start = bound((used + 7) & !7, UNWIND_START_MASK);
    // SAFETY: as above.
    let base = unsafe {
        core::ptr::addr_of_mut!((*tail).bytes)
            .cast::<u8>()
            .add(start)
    };
    let mut copied = 0usize;
    let mut want = UNWIND_CHUNK - (sp as usize & (UNWIND_CHUNK - 1));
    for _ in 0..UNWIND_CHUNKS {
        let left = max.saturating_sub(bound(copied, UNWIND_BYTES - 1));
        let n = if want < left { want } else { left };
        if n == 0 || copied >= max {
            break;
        }
        // The masks prove the read inside the tail: start < UNWIND_START_MASK
        // + 1, at < UNWIND_BYTES and n <= UNWIND_CHUNK (see TAIL_BUF).
        let n = bound(n - 1, UNWIND_CHUNK - 1) + 1;
        let at = bound(copied, UNWIND_BYTES - 1);
        // SAFETY: `base + at` has `n` bytes of room in the tail (above);
        // the helper faults harmlessly on an unmapped user address.
        let r = unsafe {
            bpf_probe_read_user(
                base.add(at).cast(),
                n as u32,
                (sp + copied as u64) as *const core::ffi::c_void,
            )
        };
        if r < 0 {
            break;
        }
        copied += n;
        want = UNWIND_CHUNK;
    }
    // SAFETY: as above.
    unsafe { (*tail).used = (start + copied) as u16 };
    (start as u16, copied as u16)
}

/// Where the task's executable code is mapped (zeros when unknown).
#[inline(always)]
pub fn code_range<M: Memory>(task: u64, off: &KernelOffsets) -> (u64, u64) {
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
