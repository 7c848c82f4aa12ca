//! Which files a whole stack copy points into (5.17+): every word of it
//! that may be a code address, and the registers and frame-pointer
//! addresses before it, is placed in the caller's mapping with
//! `bpf_find_vma`, and the executable file mappings found are written
//! after the copy as a [`MappingInfo`] table, each with its file's path.
//! The daemon places frames with them where it may not read
//! `/proc/PID/maps` (the shipped unit hides other processes), and where
//! the process has gone by the time it looks.
//!
//! Only the exit programs built for kernels with `bpf_find_vma` and
//! `bpf_loop` use this module: the callbacks they take are refused by
//! older verifiers even in code that never runs.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_find_vma, bpf_get_current_task_btf, bpf_loop},
    macros::map,
    maps::PerCpuArray,
};
use copytrace_common::{
    bound, unwind_flag, Event, MAPPING_LOOKUPS, STACK_BYTES, TAIL_START_MASK, UNWIND_BYTES,
    UNWIND_START_MASK,
};

use crate::globals::offsets;
use crate::kread::read;
use crate::mapping_table;
use crate::record_slot;

/// Ranges one scan remembers having looked up, code or not: a stack's
/// words point mostly into itself, the heap and a few libraries.
const RANGES: usize = 16;

/// `VM_EXEC` of `vm_area_struct.vm_flags` (include/linux/mm.h, the same
/// bit since the first Linux with an `mm.h`).
const VM_EXEC: u64 = 0x4;

/// The lowest address looked up: below it is `mmap_min_addr` (64 KiB at
/// most by default), where nothing is mapped and small integers live.
const LOWEST: u64 = 0x1_0000;

/// The lowest address looked up for a caller whose executable's code
/// starts at `code_start` (0: unknown): no lower than [`LOWEST`], and no
/// lower than that code. The loader and the kernel place libraries, the
/// heap and the stack above the executable, while a stack's integers
/// (sizes, inode numbers, times in seconds, hashes) fall below a PIE
/// executable's 0x55... and would each cost a lookup. A return address
/// into code mapped below the executable (MAP_32BIT JITs) goes unplaced.
fn lowest(code_start: u64) -> u64 {
    if code_start > LOWEST {
        code_start
    } else {
        LOWEST
    }
}

/// Above every user address of x86-64 and arm64 (48 bits; 57-bit user
/// space is opt-in per mapping and not placed here).
const HIGHEST: u64 = 1 << 48;

/// One scan's state, in a per-CPU slot (the BPF stack is too small).
#[repr(C)]
pub struct Scan {
    /// `[start, end)` of mappings looked up already, code or not.
    seen: [[u64; 2]; RANGES],
    /// What the last lookup's callback saw: start, end, pgoff, flags, file.
    last: [u64; 5],
    /// The stack's own mapping, and the range the last word fell in:
    /// checked before `seen`, they hold most of a stack's pointers.
    stack: [u64; 2],
    hot: [u64; 2],
    /// The lowest address looked up (see [`lowest`]).
    lowest: u64,
    /// Candidates in all, and how many frame-pointer addresses precede
    /// the copy's words (see [`candidate`]).
    n: u32,
    ips: u32,
    /// The next slot of `seen` to fill (round the ring once all are used).
    next_seen: u32,
    lookups: u32,
    /// Bits of [`unwind_flag`].
    flags: u32,
    _pad: u32,
}

/// This CPU's scan (see [`Scan`]).
#[map]
static SCAN: PerCpuArray<Scan> = PerCpuArray::with_max_entries(1, 0);

/// Candidates [`each_word`] looks at per call.
const WORDS_PER_CALL: u32 = 4;

/// Looks up the mappings of the described record's whole stack copy and
/// writes the table after the copy (nothing when the copy was not whole);
/// returns the table's entries.
///
/// A global function (not `static` in the object's BTF): the verifier
/// checks it once, on its own, rather than once for every state the exit
/// program reaches it in, which took 6.1 past its limits and minutes
/// under emulation.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn copytrace_stack_mappings() -> u32 {
    let (Some(ev), Some(scan)) = (record_slot::record(), SCAN.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: the record's slot and this CPU's scan slot, which nothing
    // else uses while this program runs.
    unsafe {
        let len = u32::from(core::ptr::read_volatile(core::ptr::addr_of!(
            (*ev).unwind_len
        )));
        if len == 0 || (*ev).unwind_flags & unwind_flag::SKIPPED != 0 {
            return 0;
        }
        // Volatile: a zeroed array would become a memset call, a byte
        // loop the verifier walks byte by byte.
        for k in 0..RANGES {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*scan).seen[k]), [0, 0]);
        }
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*scan).hot), [0, 0]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*scan).stack), [0, 0]);
        (*scan).next_seen = 0;
        (*scan).lookups = 0;
        (*scan).flags = 0;
        (*scan).lowest = lowest((*ev).code_start);
        (*scan).ips = if (*ev).stack_bytes > 0 {
            (*ev).stack_bytes as u32 / 8
        } else {
            0
        };
        // The stack pointer (its mapping first: most words of a stack that
        // look like addresses point into the stack itself), the instruction
        // pointer and link register, the frame-pointer walk's addresses,
        // then the copy's words, a few per call (a callback call costs more
        // than a word's checks).
        let n = 3 + (*scan).ips + len / 8;
        (*scan).n = n;
        mapping_table::clear();
        // No context: every callback finds its state in per-CPU slots, so
        // that their frames stay small (6.1 caps the exit program's,
        // this function's and the callbacks' stacks at 512 bytes in all).
        bpf_loop(
            n.div_ceil(WORDS_PER_CALL) as u32,
            each_word as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
        mapping_table::write((*scan).flags)
    }
}

/// `bpf_loop`'s callback: looks up candidates `WORDS_PER_CALL * i` on
/// (see [`copytrace_stack_mappings`]); returns 1 to stop the loop.
extern "C" fn each_word(i: u32, _ctx: *mut c_void) -> i64 {
    let (Some(ev), Some(scan)) = (record_slot::record(), SCAN.get_ptr_mut(0)) else {
        return 1;
    };
    for j in 0..WORDS_PER_CALL {
        let k = i * WORDS_PER_CALL + j;
        // SAFETY: this CPU's record and scan slots.
        unsafe {
            if k >= (*scan).n {
                return 1;
            }
            if consider(scan, candidate(ev, scan, k)) != 0 {
                return 1;
            }
            if k == 0 {
                (*scan).stack = (*scan).hot;
            }
        }
    }
    0
}

/// The `i`th candidate address (see [`copytrace_stack_mappings`]).
///
/// # Safety
///
/// `ev` and `scan` are this CPU's record and scan slots.
#[inline(always)]
unsafe fn candidate(ev: *mut Event, scan: *mut Scan, i: u32) -> u64 {
    // SAFETY: the slots (this function's contract); reads only, masked
    // inside the tail.
    unsafe {
        let ips = (*scan).ips;
        let tail = core::ptr::addr_of!((*ev).tail.bytes).cast::<u8>();
        if i == 0 {
            (*ev).user_regs[1]
        } else if i == 1 {
            (*ev).user_regs[0]
        } else if i == 2 {
            (*ev).user_regs[3]
        } else if i - 3 < ips {
            let at = bound(((i - 3) * 8) as usize, STACK_BYTES - 1);
            core::ptr::read_unaligned(tail.add(at).cast::<u64>())
        } else {
            let copy_at = usize::from((*ev).unwind_at);
            let at = bound(copy_at, UNWIND_START_MASK)
                + bound(((i - 3 - ips) * 8) as usize, UNWIND_BYTES - 1);
            core::ptr::read_unaligned(tail.add(at).cast::<u64>())
        }
    }
}

/// Looks `addr` up unless it cannot be user code or lies in a range seen
/// already; returns 1 when the lookups are spent.
///
/// # Safety
///
/// `scan` must be this CPU's [`SCAN`] slot.
#[inline(always)]
unsafe fn consider(scan: *mut Scan, addr: u64) -> i64 {
    // SAFETY: this CPU's scan slot (this function's contract).
    unsafe {
        if addr < (*scan).lowest || addr >= HIGHEST {
            return 0;
        }
        let [lo, hi] = (*scan).stack;
        if lo <= addr && addr < hi {
            return 0;
        }
        let [lo, hi] = (*scan).hot;
        if lo <= addr && addr < hi {
            return 0;
        }
        // Unused slots are [0, 0), which holds nothing.
        for k in 0..RANGES {
            let [lo, hi] = (*scan).seen[k];
            if lo <= addr && addr < hi {
                (*scan).hot = [lo, hi];
                return 0;
            }
        }
        if (*scan).lookups >= MAPPING_LOOKUPS {
            (*scan).flags |= u32::from(unwind_flag::MAPPINGS_CUT);
            return 1;
        }
        (*scan).lookups += 1;
        // Volatile, as above.
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*scan).last[1]), 0);
        let r = bpf_find_vma(
            bpf_get_current_task_btf(),
            addr,
            on_vma as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
        let [start, end, pgoff, flags, file] = (*scan).last;
        if r != 0 || end == 0 {
            // EBUSY: the map was locked for writing (nothing else fails
            // on a live task but an unmapped address, ENOENT).
            if r == -16 {
                (*scan).flags |= u32::from(unwind_flag::MAPPINGS_BUSY);
            }
            return 0;
        }
        let slot = bound((*scan).next_seen as usize, RANGES - 1);
        (*scan).seen[slot] = [start, end];
        (*scan).hot = [start, end];
        (*scan).next_seen = (*scan).next_seen.wrapping_add(1);
        if flags & VM_EXEC == 0 || file == 0 {
            return 0;
        }
        if !mapping_table::add([start, end, pgoff, file]) {
            (*scan).flags |= u32::from(unwind_flag::MAPPINGS_FULL);
        }
    }
    0
}

/// `bpf_find_vma`'s callback: copies what [`consider`] keeps of the
/// mapping, while the caller's memory map is locked.
extern "C" fn on_vma(_task: *mut c_void, vma: *mut c_void, _ctx: *mut c_void) -> i64 {
    let Some(scan) = SCAN.get_ptr_mut(0) else {
        return 0;
    };
    let off = offsets();
    let vma = vma as u64;
    let at = |o: u32| read::<u64>(vma, o).unwrap_or(0);
    // SAFETY: this CPU's scan slot, which consider() is waiting on.
    unsafe {
        (*scan).last = [
            at(off.vma_start),
            at(off.vma_end),
            at(off.vma_pgoff),
            at(off.vma_flags),
            at(off.vma_file),
        ];
    }
    0
}

// The copy's words are read at `copy_at + 8 * j`, both masked: the sum
// must stay inside the tail.
const _: () = assert!(UNWIND_START_MASK + UNWIND_BYTES <= copytrace_common::TAIL_BUF);
const _: () = assert!(STACK_BYTES <= TAIL_START_MASK);
