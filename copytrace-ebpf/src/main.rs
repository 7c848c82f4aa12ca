//! copytrace's kernel programs.
//!
//! Two back-ends feed the same calls into [`call`]:
//! - tracepoint: `syscalls:sys_enter/exit_copy_file_range` (works where
//!   fentry is refused);
//! - fentry: fentry/fexit on the syscall wrapper, plus `vfs_copy_file_range`
//!   for in-kernel callers.
//!
//! The syscall exits come twice, `_mappings` adding the stack's mappings
//! ([`mappings`]): userspace loads that one where the kernel has
//! `bpf_find_vma` and `bpf_loop` (5.17+).
//!
//! Entry records a small in-flight record; exit counts every call exactly
//! and reports the full record only when userspace asked for it (every call,
//! or the suspicious ones, by the table userspace loaded). Policy (what is
//! suspicious) is userspace's: this side only records.
//!
//! Each map lives with the code that owns it, and modules use only those
//! listed below them (the `use crate::…` graph has no cycle):
//! - [`call`]: entry, exit and the exact counts (`COUNTS`, `LATENCY`,
//!   `SETTINGS`, `SIZE_TRUTH`); uses report, describe, inflight, task,
//!   kread, globals, counters;
//! - [`report`]: the ring buffer (`EVENTS`) and the reader's wake-up
//!   (`READER`); uses mappings, describe, record_slot, kread, counters;
//! - [`mappings`]: the files a stack copy points into (`SCAN`; 5.17+
//!   programs only); uses mapping_table, record_slot, kread, globals;
//! - [`mapping_table`]: their table and paths after the copy (`TABLE`);
//!   uses describe, record_slot, kread, globals;
//! - [`record_slot`]: the per-CPU slot a reported call's record is built
//!   in (`SCRATCH`); uses nothing of the crate;
//! - [`describe`]: a reported call's full record; uses inflight, names,
//!   task, user_stack, kread, globals, counters;
//! - [`user_stack`]: the caller's registers and a copy of its stack
//!   (`UNWIND_BUDGET`); uses kread, globals;
//! - [`inflight`]: each thread's call between entry and exit
//!   (`THREAD_SLOTS`, `SLOT_CLAIMS`, `INFLIGHT`, `ENDING`); uses task,
//!   counters;
//! - [`names`]: the dentry walk; uses kread, globals;
//! - [`task`]: the calling task and its files; uses kread, globals;
//! - [`kread`]: kernel and user memory reads (`SPAN`); uses globals;
//! - [`globals`]: the load-time globals every layer reads (`OFFSETS`,
//!   `TYPES`, `CONFIG`, `POLICY`), and [`counters`]: the loss and fault
//!   counters every layer bumps (`COUNTERS`); they use nothing of the crate.
//!
//! The programs below use call, inflight, kread and globals.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

mod call;
mod counters;
mod describe;
mod globals;
mod inflight;
mod kread;
mod mapping_table;
mod mappings;
mod names;
mod record_slot;
mod report;
mod task;
mod user_stack;

use aya_ebpf::{
    macros::{fentry, fexit, raw_tracepoint, tracepoint},
    programs::{FEntryContext, FExitContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use copytrace_common::{contiguous, Origin};

use crate::call::SyscallArgs;
use crate::globals::offsets;
use crate::kread::{read, typed, Helper, Memory, Typed};

/// The six argument words at `offs` of `base` (one read when they are consecutive).
#[inline(always)]
fn args_at(base: u64, offs: [u32; 6], consecutive: bool) -> [u64; 6] {
    if consecutive {
        if let Ok(w) = read::<[u64; 6]>(base, offs[0]) {
            return w;
        }
    }
    let one = |i: usize| read::<u64>(base, offs[i]).unwrap_or(0);
    [one(0), one(1), one(2), one(3), one(4), one(5)]
}

/// Where syscall tracepoint records have always kept their six arguments
/// and their return value (after the 8-byte common header and the syscall
/// number).
const TP_STANDARD_ARGS: u32 = 16;
/// [`TP_STANDARD_ARGS`] in u64 words.
const TP_STANDARD_WORD: usize = TP_STANDARD_ARGS as usize / 8;

#[tracepoint]
pub fn cfr_sys_enter(ctx: TracePointContext) -> u32 {
    let off = offsets();
    let consecutive = off.contiguous & contiguous::TRACEPOINT != 0;
    let w = if consecutive && off.tp_enter_args[0] == TP_STANDARD_ARGS {
        // The usual layout: plain loads from the record, which the verifier
        // allows at constant offsets, instead of a helper call.
        let at = |i: usize| {
            // SAFETY: a tracepoint record holds the six u64 arguments from
            // byte 16 (its format file said so when the program loaded).
            unsafe {
                core::ptr::read_volatile((ctx.as_ptr() as *const u64).add(TP_STANDARD_WORD + i))
            }
        };
        [at(0), at(1), at(2), at(3), at(4), at(5)]
    } else {
        args_at(ctx.as_ptr() as u64, off.tp_enter_args, consecutive)
    };
    enter_syscall(&SyscallArgs::from_words(w));
    0
}

/// A syscall's entry, read the way this kernel allows.
#[inline(always)]
fn enter_syscall(args: &SyscallArgs) {
    if typed() {
        call::enter_syscall::<Typed>(args);
    } else {
        call::enter_syscall::<Helper>(args);
    }
}

/// A call's exit, read the way this kernel allows; with the stack's
/// mappings when `MAPPINGS` (the `_mappings` programs).
#[inline(always)]
fn finish<C: EbpfContext, const MAPPINGS: bool>(ctx: &C, ret: i64, origin: Origin) {
    if typed() {
        call::finish::<C, Typed, MAPPINGS>(ctx, ret, origin);
    } else {
        call::finish::<C, Helper, MAPPINGS>(ctx, ret, origin);
    }
}

/// The syscall's return value in its exit tracepoint's record.
#[inline(always)]
fn tracepoint_ret(ctx: &TracePointContext) -> i64 {
    let off = offsets().tp_exit_ret;
    if off == TP_STANDARD_ARGS {
        // SAFETY: the record holds `ret` at byte 16 (its format file said so).
        unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const i64).add(TP_STANDARD_WORD)) }
    } else {
        read(ctx.as_ptr() as u64, off).unwrap_or(0)
    }
}

#[tracepoint]
pub fn cfr_sys_exit(ctx: TracePointContext) -> u32 {
    finish::<_, false>(&ctx, tracepoint_ret(&ctx), Origin::Syscall);
    0
}

/// `cfr_sys_exit` with the stack's mappings (5.17+: `bpf_find_vma`).
#[tracepoint]
pub fn cfr_sys_exit_mappings(ctx: TracePointContext) -> u32 {
    finish::<_, true>(&ctx, tracepoint_ret(&ctx), Origin::Syscall);
    0
}

/// fentry on the arch syscall wrapper (`__x64_sys_copy_file_range(const struct pt_regs *)`).
#[fentry]
pub fn cfr_wrapper_entry(ctx: FEntryContext) -> u32 {
    let regs: u64 = ctx.arg(0);
    let off = offsets();
    let w = if typed() {
        // The verifier knows the traced function's argument as a `struct
        // pt_regs *`: six loads instead of helper calls, six of them on
        // x86-64, which keeps the arguments apart (di, si, dx, r10, r8, r9).
        let at = |i: usize| Typed::read::<u64>(regs, off.regs_args[i]).unwrap_or(0);
        [at(0), at(1), at(2), at(3), at(4), at(5)]
    } else {
        args_at(regs, off.regs_args, off.contiguous & contiguous::REGS != 0)
    };
    enter_syscall(&SyscallArgs {
        regs,
        ..SyscallArgs::from_words(w)
    });
    0
}

#[fexit]
pub fn cfr_wrapper_exit(ctx: FExitContext) -> u32 {
    // The return value follows the function's single argument in the fexit
    // context; reading it as arg 1 also works before bpf_get_func_ret (5.17).
    let ret: i64 = ctx.arg(1);
    finish::<_, false>(&ctx, ret, Origin::Syscall);
    0
}

/// `cfr_wrapper_exit` with the stack's mappings (5.17+: `bpf_find_vma`).
#[fexit]
pub fn cfr_wrapper_exit_mappings(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.arg(1);
    finish::<_, true>(&ctx, ret, Origin::Syscall);
    0
}

/// fentry on `vfs_copy_file_range(file_in, pos_in, file_out, pos_out, len, flags)`.
#[fentry]
pub fn cfr_vfs_entry(ctx: FEntryContext) -> u32 {
    let (file_in, pos_in, file_out) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    let (pos_out, len, flags) = (ctx.arg(3), ctx.arg(4), ctx.arg(5));
    if typed() {
        call::enter_vfs::<Typed>(file_in, pos_in, file_out, pos_out, len, flags);
    } else {
        call::enter_vfs::<Helper>(file_in, pos_in, file_out, pos_out, len, flags);
    }
    0
}

#[fexit]
pub fn cfr_vfs_exit(ctx: FExitContext) -> u32 {
    let ret: i64 = ctx.arg(6);
    // In-kernel callers have no user stack to place.
    finish::<_, false>(&ctx, ret, Origin::Kernel);
    0
}

/// `sched_process_exit` (every back-end): an exiting thread's in-flight
/// record goes with it. A raw tracepoint: it needs no tracefs.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn cfr_thread_exit(_ctx: RawTracePointContext) -> u32 {
    inflight::thread_exit();
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
