//! Reading kernel and user memory. Every read can fail (a bad pointer, a
//! page not present): the helpers say so instead of handing back a zero
//! that would look like a real value.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_user, generated};

use crate::maps::SPAN;

/// A kernel or user read failed.
pub struct Fault;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Result<T, Fault> {
    // SAFETY: bpf_probe_read_kernel copies through the fault-tolerant
    // copy_from_kernel_nofault: any address is safe, a bad one is an error.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.map_err(|_| Fault)
}

/// Reads a `T` at a user-space address of the current task.
#[inline(always)]
pub fn read_user<T>(addr: u64) -> Result<T, Fault> {
    // SAFETY: bpf_probe_read_user copies with copy_from_user_nofault: any
    // address is safe, a bad one is an error.
    unsafe { bpf_probe_read_user(addr as *const T) }.map_err(|_| Fault)
}

/// Words a [`read_two`] can span with one helper call.
pub const SPAN_WORDS: usize = 8;

/// Reads the two 8-byte fields at `base + a` and `base + b`: with one
/// helper call when they lie within [`SPAN_WORDS`] words of each other and
/// a whole number of words apart (a helper call costs far more than the
/// bytes it copies), else with two. The one call reads the whole span from
/// the lower field: bytes past the higher one are discarded, and a span
/// that runs into an unreadable page falls back to the two reads.
#[inline(always)]
pub fn read_two(base: u64, a: u32, b: u32) -> Result<(u64, u64), Fault> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let gap = hi - lo;
    if gap % 8 == 0 && (gap as usize) < SPAN_WORDS * 8 {
        if let Some(buf) = SPAN.get_ptr_mut(0) {
            // SAFETY: the helper writes SPAN_WORDS * 8 bytes into this
            // CPU's span slot, read back two lines below. Nothing else uses
            // it in between: tracepoint programs do not nest on a CPU. An
            // fentry program runs with migration disabled, and only a fully
            // preemptible kernel could run another on this CPU between the
            // two lines (the SCRATCH record slot carries the same assumption).
            let r = unsafe {
                generated::bpf_probe_read_kernel(
                    buf.cast(),
                    (SPAN_WORDS * 8) as u32,
                    (base + u64::from(lo)) as *const core::ffi::c_void,
                )
            };
            if r == 0 {
                let word = |off: u32| ((off - lo) / 8) as usize & (SPAN_WORDS - 1);
                // SAFETY: indices are masked into the slot.
                return Ok(unsafe { ((*buf)[word(a)], (*buf)[word(b)]) });
            }
        }
    }
    Ok((read(base, a)?, read(base, b)?))
}
