//! The kernel-side exact counts: every call is counted by its facts, even
//! when its event is dropped from the ring buffer.

use core::mem::size_of;

/// Index of the per-CPU counters in the `COUNTERS` map.
pub mod counter {
    /// Events the ring buffer had no room for.
    pub const LOST: u32 = 0;
    /// Calls not tracked because the in-flight map was full.
    pub const INFLIGHT_FULL: u32 = 1;
    /// Calls not counted in `COUNTS` because it was full.
    pub const COUNTS_FULL: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}

/// Key of the kernel-side `COUNTS` map.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct CountKey {
    /// Source `s_magic` (0 when not open).
    pub magic_in: u64,
    /// Destination `s_magic` (0 when not open).
    pub magic_out: u64,
    /// errno when the call failed, else 0.
    pub errno: u32,
    /// Bits of [`crate::fact`].
    pub facts: u32,
}

/// Value of the `COUNTS` map (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CountVal {
    /// Calls.
    pub calls: u64,
    /// Sum of requested lengths, saturating at `u64::MAX`.
    pub bytes_requested: u64,
    /// Sum of bytes copied.
    pub bytes_copied: u64,
}

const _: () = assert!(size_of::<CountKey>() == 24);
const _: () = assert!(size_of::<CountVal>() == 24);
