//! The per-CPU loss and fault counters (see `copytrace_common::counter`),
//! which every layer bumps: the in-flight records, the exact counts, the
//! ring output and the description. This module uses no other of the crate.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use copytrace_common::counter;

/// Per-CPU loss and fault counters (see `copytrace_common::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Adds `n` to a per-CPU slot.
#[inline(always)]
pub fn add(map: &PerCpuArray<u64>, idx: u32, n: u64) {
    if let Some(p) = map.get_ptr_mut(idx) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and programs do
        // not preempt each other on one CPU.
        unsafe { *p += n };
    }
}
