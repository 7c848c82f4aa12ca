//! What copytrace's eBPF programs and its userspace daemon share.
//!
//! Everything here is plain `#[repr(C)]` data or a pure function: the kernel
//! side writes records into the ring buffer and counts calls, userspace reads
//! the same bytes back. What both sides compute (the facts that decide a
//! verdict) is defined once, in [`facts`], and called by both; what is
//! suspicious is decided by userspace and handed to the kernel as a
//! [`ReportPolicy`] table. The names of the metrics the daemon exports,
//! which its readers look up, are in [`metric_names`]; with the `serde`
//! feature, `doctor` holds the report `copytrace doctor --json` prints.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "serde")]
extern crate alloc;

mod backend;
pub mod counts;
#[cfg(feature = "serde")]
pub mod doctor;
pub mod event;
pub mod facts;
pub mod metric_names;
mod offsets;
mod policy;

pub use backend::{Backend, Origin};
pub use counts::{counter, latency, CountKey, CountVal, COUNTS_CAPACITY};
pub use event::{
    gap, name_flag, status, unwind_flag, Event, FileInfo, MappingInfo, NameSpan, PathInfo, Tail,
    COMM_LEN, FSTYPE_LEN, MAPPINGS_MAX, MAPPINGS_NAMES_LIMIT, MAPPINGS_TABLE_LIMIT,
    MAPPING_LOOKUPS, NAME_AREA, NAME_READ, PATH_DEPTH, RECORD_MIN, RING_BYTES, STACK_BYTES,
    STACK_DEPTH, SUSPICIOUS_WAKE_GAP_NS, TAIL_BUF, TAIL_START_MASK, UNWIND_BURST, UNWIND_BYTES,
    UNWIND_CHUNK, UNWIND_CHUNKS, UNWIND_REFILL_NS, UNWIND_SKIPPED_BYTES, UNWIND_START_MASK,
    WALK_MAX,
};
pub use facts::{fact, max_rw_count, CallOutcome};
pub use offsets::{
    contiguous, setting, thread_slot, KernelOffsets, KernelTypes, ProbeConfig, INFLIGHT_OVERFLOW,
    NO_REGISTER, RDONLY_CAST_PLACEHOLDER, THREAD_SLOT_COUNT,
};
pub use policy::{ReportPolicy, SizeTruth};

/// `v & mask`, with `v` hidden from the optimiser so that the mask stays in
/// the compiled program. Older BPF verifiers (6.1) lose track of a value's
/// range through spills and ORs; the mask is what proves an index or offset
/// in bounds to them, even where the compiler already knows it is.
#[inline(always)]
pub fn bound(v: usize, mask: usize) -> usize {
    // SAFETY: a volatile read of a local variable.
    unsafe { core::ptr::read_volatile(&v) & mask }
}

/// `v`, or `max` if it is larger, with `v` hidden from the optimiser as in
/// [`bound`]: a bound the verifier follows where no mask fits.
#[inline(always)]
pub fn clamp(v: usize, max: usize) -> usize {
    // SAFETY: a volatile read of a local variable.
    let v = unsafe { core::ptr::read_volatile(&v) };
    if v > max {
        max
    } else {
        v
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] structs of integers and byte arrays with
    // explicit padding (checked by the size asserts beside each type), so
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProbeConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelTypes {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReportPolicy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CountKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CountVal {}
}
