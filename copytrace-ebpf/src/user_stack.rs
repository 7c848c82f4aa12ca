//! The caller's user stack for an unwinder: its registers at the syscall
//! and a copy of its stack from the stack pointer up, written into a
//! record's tail after the names.

use aya_ebpf::helpers::generated::{
    bpf_get_current_task_btf, bpf_probe_read_user, bpf_task_pt_regs,
};
use copytrace_common::{
    bound, KernelOffsets, Tail, NO_REGISTER, UNWIND_BYTES, UNWIND_CHUNK, UNWIND_CHUNKS,
    UNWIND_START_MASK,
};

use crate::globals::types;
use crate::kread::read;

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

/// Copies the user stack from `sp` up into the tail, after the names, a
/// page at a time up to [`UNWIND_BYTES`] or the first page that cannot be
/// read; returns where the copy starts and its length, and moves the
/// tail's end past it.
///
/// # Safety
///
/// `tail` must be valid for reads and writes of a whole [`Tail`] (the
/// record's), and nothing else may access it during the call.
#[inline(always)]
pub unsafe fn copy_stack(sp: u64, tail: *mut Tail) -> (u16, u16) {
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
        let left = UNWIND_BYTES - bound(copied, UNWIND_BYTES - 1);
        let n = if want < left { want } else { left };
        if n == 0 || copied >= UNWIND_BYTES {
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
