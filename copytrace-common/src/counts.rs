//! The kernel-side exact counts: every call is counted by its facts, and its
//! latency recorded, even when no event is reported or the event is dropped.

use core::mem::size_of;

/// Index of the per-CPU counters in the `COUNTERS` map.
pub mod counter {
    /// Events the ring buffer had no room for.
    pub const LOST: u32 = 0;
    /// Calls not tracked because the in-flight map was full.
    pub const INFLIGHT_FULL: u32 = 1;
    /// Calls not counted in `COUNTS` because it was full.
    pub const COUNTS_FULL: u32 = 2;
    /// Reported calls whose description hit a failed kernel read.
    pub const READ_FAULTS: u32 = 3;
    /// Calls a filesystem made inside a call already nested on the same
    /// thread (only one level is tracked), or when the nested map was full.
    pub const NESTED_UNTRACKED: u32 = 4;
    /// Number of counters.
    pub const COUNT: u32 = 5;
}

/// Slots of the per-CPU `LATENCY` array: slot `i` counts calls that took
/// at most 2^i ns and more than 2^(i-1) (a Prometheus `le` bucket before
/// accumulation), then the sum of every duration.
pub mod latency {
    /// Buckets: one per power of two.
    pub const BUCKETS: u32 = 64;
    /// Slot holding the sum of every duration, in ns.
    pub const SUM: u32 = 64;
    /// Number of slots.
    pub const SLOTS: u32 = 65;

    /// The bucket of a duration: ceil(log2(ns)), 0 for 0 and 1 ns.
    #[inline(always)]
    pub fn bucket(ns: u64) -> u32 {
        if ns <= 1 {
            0
        } else {
            (64 - (ns - 1).leading_zeros()).min(BUCKETS - 1)
        }
    }
}

/// Entries of the kernel-side `COUNTS` map as the object declares it: room
/// for the outcomes when counts are not kept per cgroup (userspace sizes
/// the map at load, larger when they are).
pub const COUNTS_CAPACITY: u32 = 4096;

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
    /// The caller's cgroup v2 id when counts are kept per cgroup, else 0.
    pub cgroup_id: u64,
    /// Who called: a [`crate::Origin`] as its byte.
    pub origin: u8,
    /// Zero: keys are compared as bytes.
    pub _pad: [u8; 7],
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

const _: () = assert!(size_of::<CountKey>() == 40);
const _: () = assert!(size_of::<CountVal>() == 24);

#[cfg(test)]
mod tests {
    use super::latency::bucket;

    #[test]
    fn buckets_hold_durations_up_to_their_power_of_two() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(1024), 10, "le 1024 ns holds 1024 ns");
        assert_eq!(bucket(1025), 11);
        assert_eq!(bucket(u64::MAX), 63);
    }
}
