//! The per-CPU slot where a reported call's record is built before it is
//! copied into the ring buffer: written by the description and the stack's
//! mappings, sent by report.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use copytrace_common::Event;

/// Per-CPU slot where a reported call's record is built (see
/// [`crate::report::report`]).
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's record slot. Programs on one CPU do not run at once (see
/// kread::read_span for fentry), so it is the record being built.
#[inline(always)]
pub fn record() -> Option<*mut Event> {
    SCRATCH.get_ptr_mut(0)
}
